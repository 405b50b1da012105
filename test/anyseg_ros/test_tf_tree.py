"""anyseg_ros.tf_tree against computations made independently here: rotations from
axis-angle (Rodrigues' formula, written out), points moved one hop at a time, and the
conventions every ROS user knows (a yaw of 90 degrees turns x into y; an optical frame looks
along the z axis, which is its body frame's x)."""
import math
import pickle
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from anyseg_ros import tf_tree
from anyseg_ros.tf_tree import (InvalidTransform, NoTransform, TfTree, transform_values)

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


# ------------------------------------------------------------------ independent helpers

def rodrigues(axis, angle):
    """3x3 rotation by ``angle`` radians about ``axis``: I + sin K + (1 - cos) K^2."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def axis_angle_quaternion(axis, angle):
    """(x, y, z, w) = (axis sin(angle/2), cos(angle/2))."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    s = math.sin(angle / 2)
    return (a[0] * s, a[1] * s, a[2] * s, math.cos(angle / 2))


def ts(parent, child, xyz, xyzw, stamp_ns=T0):
    """A TransformStamped-like object (duck-typed, as tf_tree reads it)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent,
                               stamp=SimpleNamespace(sec=sec, nanosec=nanosec)),
        child_frame_id=child,
        transform=SimpleNamespace(
            translation=SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=SimpleNamespace(x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3])))


def tf_msg(*transforms):
    return SimpleNamespace(transforms=list(transforms))


def apply(T, points):
    points = np.atleast_2d(points)
    return points @ T[:3, :3].T + T[:3, 3]


# A rig: velodyne on the roof turned by 90 degrees of yaw and tilted, a camera body frame
# pitched down by 10 degrees, and the optical frame (z forward, x right, y down).
R_BV = rodrigues((0, 0, 1), math.pi / 2) @ rodrigues((1, 0, 0), math.radians(3))
t_BV = np.array([1.2, 0.0, 1.9])
AXIS_BL, ANGLE_BL = (0, 1, 0), math.radians(10)    # pitch down: +y rotation in ROS (REP 103)
R_BL = rodrigues(AXIS_BL, ANGLE_BL)
t_BL = np.array([1.5, 0.1, 1.4])
# Optical from body: x_opt = -y_body, y_opt = -z_body, z_opt = x_body (REP 103 suffix _optical).
R_LO = np.array([[0.0, 0.0, 1.0],     # columns: optical x, y, z axes in camera_link
                 [-1.0, 0.0, 0.0],
                 [0.0, -1.0, 0.0]])
t_LO = np.array([0.0, 0.02, 0.0])


def rig_tree(**kwargs):
    tree = TfTree(**kwargs)
    refused = tree.add_message(tf_msg(
        ts('base_link', 'velodyne', t_BV, tf_tree.matrix_to_quaternion(R_BV)),
        ts('base_link', 'camera_link', t_BL, axis_angle_quaternion(AXIS_BL, ANGLE_BL)),
        ts('camera_link', 'camera_optical', t_LO, tf_tree.matrix_to_quaternion(R_LO)),
    ), static=True)
    assert refused == []
    return tree


POINTS = np.array([[10.0, 0.0, 0.0], [3.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-4.0, 7.0, -1.0]])


def velodyne_to_optical_by_hops(p):
    """Velodyne points into the optical frame, one hop at a time, with no 4x4 anywhere."""
    p_base = p @ R_BV.T + t_BV                       # child -> parent: R p + t
    p_link = (p_base - t_BL) @ R_BL                  # parent -> child: R^T (p - t)
    return (p_link - t_LO) @ R_LO


# ------------------------------------------------------------------ rotations

@pytest.mark.parametrize('axis,angle', [((0, 0, 1), math.pi / 2), ((1, 0, 0), 0.3),
                                        ((0, 1, 0), -1.2), ((1, 2, 3), 2.5),
                                        ((-1, 0.5, 0.2), math.pi), ((0, 0, 1), 0.0)])
def test_quaternion_to_matrix_matches_rodrigues(axis, angle):
    np.testing.assert_allclose(tf_tree.quaternion_to_matrix(*axis_angle_quaternion(axis, angle)),
                               rodrigues(axis, angle), atol=1e-12)


def test_yaw_of_90_degrees_turns_x_into_y():
    T = tf_tree.make_transform((1, 2, 3), axis_angle_quaternion((0, 0, 1), math.pi / 2))
    np.testing.assert_allclose(apply(T, [1, 0, 0]), [[1, 3, 3]], atol=1e-12)


@pytest.mark.parametrize('axis,angle', [((1, 0, 0), math.pi), ((0, 1, 0), math.pi),
                                        ((0, 0, 1), math.pi), ((1, 1, 0), math.pi),
                                        ((1, -2, 0.5), 3.1), ((0.3, 0.1, -1), 0.01),
                                        ((1, 1, 1), 2 * math.pi / 3), ((0, 0, 1), 0.0)])
def test_matrix_to_quaternion_round_trips_every_angle(axis, angle):
    """Shepperd's branches: trace large, and each diagonal element largest (180 degrees)."""
    q = tf_tree.matrix_to_quaternion(rodrigues(axis, angle))
    assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    np.testing.assert_allclose(tf_tree.quaternion_to_matrix(*q), rodrigues(axis, angle),
                               atol=1e-12)
    expected = np.array(axis_angle_quaternion(axis, angle))
    expected = expected if expected[3] >= 0 else -expected
    if abs(expected[3]) > 1e-9:  # at exactly 180 degrees q and -q both have w = 0
        np.testing.assert_allclose(q, expected, atol=1e-12)


# ------------------------------------------------------------------ chains

def test_chain_of_three_static_transforms_moves_points_like_the_hops():
    tree = rig_tree()
    T = tree.lookup('camera_optical', 'velodyne', T0)
    assert T.dtype == np.float64 and T.shape == (4, 4)
    np.testing.assert_allclose(apply(T, POINTS), velodyne_to_optical_by_hops(POINTS),
                               atol=1e-12)


def test_inverse_direction_maps_points_back():
    tree = rig_tree()
    T_ov = tree.lookup('camera_optical', 'velodyne', T0)
    T_vo = tree.lookup('velodyne', 'camera_optical', T0)
    np.testing.assert_allclose(T_vo @ T_ov, np.eye(4), atol=1e-12)
    optical = velodyne_to_optical_by_hops(POINTS)
    np.testing.assert_allclose(apply(T_vo, optical), POINTS, atol=1e-12)


def test_optical_frame_looks_along_its_z_axis():
    """A point 1 m ahead of the optical frame (its +z) is 1 m along camera_link's +x."""
    tree = rig_tree()
    T_lo = tree.lookup('camera_link', 'camera_optical')
    np.testing.assert_allclose(apply(T_lo, [0, 0, 1]), [t_LO + [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(apply(T_lo, [1, 0, 0]), [t_LO + [0, -1, 0]], atol=1e-12)


def test_every_pair_of_the_rig_is_consistent():
    tree = rig_tree()
    frames = ['base_link', 'velodyne', 'camera_link', 'camera_optical']
    for a in frames:
        for b in frames:
            for c in frames:
                np.testing.assert_allclose(tree.lookup(a, b) @ tree.lookup(b, c),
                                           tree.lookup(a, c), atol=1e-12)


def test_random_long_chains_against_point_by_point_hops():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 8))
        tree, hops = TfTree(), []
        for i in range(n):
            axis, angle = rng.normal(size=3), float(rng.uniform(-math.pi, math.pi))
            t = rng.normal(size=3) * 5
            hops.append((rodrigues(axis, angle), t))
            tree.add_transform(ts(f'f{i + 1}', f'f{i}', t, axis_angle_quaternion(axis, angle)),
                               static=bool(rng.integers(2)))
        p = rng.normal(size=(5, 3)) * 10
        q = p.copy()
        for R, t in hops:   # f0 -> f1 -> ... -> fn
            q = q @ R.T + t
        np.testing.assert_allclose(apply(tree.lookup(f'f{n}', 'f0', T0), p), q, atol=1e-9)
        np.testing.assert_allclose(apply(tree.lookup('f0', f'f{n}', T0), q), p, atol=1e-9)


def test_siblings_meet_at_their_common_ancestor_only():
    """velodyne and camera hang below base_link; base_link's own /tf parent (odom) has no
    sample near the stamp, and is never consulted for them."""
    tree = rig_tree()
    tree.add_message(tf_msg(ts('odom', 'base_link', (5, 0, 0), (0, 0, 0, 1), T0 + 60_000 * MS)),
                     static=False)
    tree.lookup('camera_optical', 'velodyne', T0)  # no error
    with pytest.raises(NoTransform) as err:
        tree.lookup('odom', 'velodyne', T0)
    assert err.value.reason == 'no_sample_before' and err.value.link == ('odom', 'base_link')


def test_same_frame_is_the_identity_even_when_unknown():
    assert np.array_equal(TfTree().lookup('camera', 'camera', T0), np.eye(4))


def test_leading_slash_is_stripped():
    tree = TfTree()
    tree.add_transform(ts('/base_link', '/velodyne', (1, 0, 0), (0, 0, 0, 1)), static=True)
    np.testing.assert_allclose(tree.lookup('base_link', '/velodyne')[:3, 3], [1, 0, 0])


# ------------------------------------------------------------------ time

def dynamic_tree(**kwargs):
    """odom -> base_link at 0, 100 and 200 ms with x = 0, 1, 2 (inserted out of order)."""
    tree = TfTree(**kwargs)
    for i in (2, 0, 1):
        tree.add_transform(ts('odom', 'base_link', (float(i), 0, 0), (0, 0, 0, 1),
                              T0 + 100 * MS * i), static=False)
    return tree


def x_at(tree, stamp_ns):
    return tree.lookup('odom', 'base_link', stamp_ns)[0, 3]


def test_dynamic_lookup_takes_the_sample_at_or_nearest_before_the_stamp():
    tree = dynamic_tree()
    assert x_at(tree, T0) == 0
    assert x_at(tree, T0 + 100 * MS - 1) == 0      # just before a sample: the one before
    assert x_at(tree, T0 + 100 * MS) == 1          # exactly at a sample: that one
    assert x_at(tree, T0 + 150 * MS) == 1          # no interpolation
    assert x_at(tree, T0 + 250 * MS) == 2          # after the newest, within max_age
    assert x_at(tree, None) == 2                   # the latest


def test_a_stamp_before_every_sample_names_the_edge():
    with pytest.raises(NoTransform) as err:
        x_at(dynamic_tree(), T0 - 1)
    assert err.value.reason == 'no_sample_before'
    assert err.value.link == ('odom', 'base_link')
    assert "'odom' -> 'base_link'" in str(err.value) and 'before' in str(err.value)


def test_max_age():
    tree = dynamic_tree(max_age_ns=50 * MS)
    assert x_at(tree, T0 + 250 * MS) == 2                   # exactly max_age: accepted
    with pytest.raises(NoTransform) as err:
        x_at(tree, T0 + 250 * MS + 1)
    assert err.value.reason == 'too_old' and err.value.link == ('odom', 'base_link')
    assert '50.0 ms' in str(err.value)
    with pytest.raises(NoTransform):
        x_at(tree, T0 + 60 * MS)                            # 60 ms after the sample at 0
    assert x_at(dynamic_tree(max_age_ns=None), T0 + 3600 * 1000 * MS) == 2


def test_history_is_bounded_per_edge():
    tree = TfTree(history=3, max_age_ns=None)
    for i in range(5):
        tree.add_transform(ts('odom', 'base_link', (float(i), 0, 0), (0, 0, 0, 1),
                              T0 + 100 * MS * i), static=False)
    assert tree.edges() == [('odom', 'base_link', False, 3, T0 + 400 * MS)]
    assert x_at(tree, T0 + 200 * MS) == 2
    with pytest.raises(NoTransform, match='no sample'):
        x_at(tree, T0 + 100 * MS)                           # dropped


def test_same_stamp_twice_replaces_the_sample():
    tree = dynamic_tree()
    tree.add_transform(ts('odom', 'base_link', (9.0, 0, 0), (0, 0, 0, 1), T0 + 100 * MS),
                       static=False)
    assert x_at(tree, T0 + 100 * MS) == 9
    assert tree.edges()[0][3] == 3


def test_static_transforms_hold_at_any_time_and_the_latest_wins():
    tree = TfTree()
    tree.add_transform(ts('base_link', 'velodyne', (1, 0, 0), (0, 0, 0, 1), T0), static=True)
    for stamp in (0, T0 - 10**15, T0 + 10**15, None):
        assert tree.lookup('base_link', 'velodyne', stamp)[0, 3] == 1
    tree.add_transform(ts('base_link', 'velodyne', (2, 0, 0), (0, 0, 0, 1), T0 - 10**12),
                       static=True)      # received later, stamped earlier: still wins
    assert tree.lookup('base_link', 'velodyne', T0)[0, 3] == 2


def test_static_and_dynamic_chain_mixed():
    tree = rig_tree()
    tree.add_message(tf_msg(ts('odom', 'base_link', (10, 0, 0), (0, 0, 0, 1), T0)), static=False)
    tree.add_message(tf_msg(ts('odom', 'base_link', (11, 0, 0), (0, 0, 0, 1), T0 + 100 * MS)),
                     static=False)
    p = np.array([[0.0, 0.0, 0.0]])
    at0 = apply(tree.lookup('odom', 'velodyne', T0 + 50 * MS), p)
    at1 = apply(tree.lookup('odom', 'velodyne', T0 + 120 * MS), p)
    np.testing.assert_allclose(at0, [t_BV + [10, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(at1, [t_BV + [11, 0, 0]], atol=1e-12)


# ------------------------------------------------------------------ missing links

def test_unknown_frame_is_named():
    tree = rig_tree()
    with pytest.raises(NoTransform) as err:
        tree.lookup('camera_optical', 'lidar', T0)
    assert err.value.reason == 'unknown_frame' and err.value.link == (None, 'lidar')
    assert "'lidar' is unknown" in str(err.value)
    assert (err.value.target_frame, err.value.source_frame, err.value.stamp_ns) == (
        'camera_optical', 'lidar', T0)
    assert not tree.can_transform('camera_optical', 'lidar', T0)


def test_two_trees_not_joined_name_their_roots():
    """The camera's static TF is there but base_link -> camera_link is not."""
    tree = TfTree()
    tree.add_message(tf_msg(ts('base_link', 'velodyne', t_BV, (0, 0, 0, 1)),
                            ts('camera_link', 'camera_optical', t_LO, (-.5, .5, -.5, .5))),
                     static=True)
    with pytest.raises(NoTransform) as err:
        tree.lookup('camera_optical', 'velodyne', T0)
    assert err.value.reason == 'not_connected'
    assert err.value.link == ('camera_link', 'base_link')
    message = str(err.value)
    assert "ends at 'base_link'" in message and "at 'camera_link'" in message
    assert tree.can_transform('base_link', 'velodyne', T0)


def test_loop_is_reported_not_followed_forever():
    tree = TfTree()
    tree.add_transform(ts('a', 'b', (1, 0, 0), (0, 0, 0, 1)), static=True)
    tree.add_transform(ts('b', 'a', (1, 0, 0), (0, 0, 0, 1)), static=True)
    tree.add_transform(ts('c', 'd', (1, 0, 0), (0, 0, 0, 1)), static=True)
    with pytest.raises(NoTransform) as err:
        tree.lookup('d', 'a', T0)
    assert err.value.reason == 'loop'


def test_every_reason_is_listed():
    assert set(tf_tree.NO_TRANSFORM_REASONS) == {'unknown_frame', 'not_connected',
                                                 'no_sample_before', 'too_old', 'loop',
                                                 'extrapolation', 'tf2_error'}


def test_no_transform_pickles_with_its_attributes():
    with pytest.raises(NoTransform) as err:
        rig_tree().lookup('camera_optical', 'lidar', T0)
    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.reason, copy.link, str(copy)) == (err.value.reason, err.value.link,
                                                   str(err.value))


# ------------------------------------------------------------------ two parents

def test_latest_parent_wins():
    tree = TfTree()
    tree.add_transform(ts('base_link', 'velodyne', (1, 0, 0), (0, 0, 0, 1)), static=True)
    tree.add_transform(ts('lidar_mount', 'velodyne', (0, 0, 1), (0, 0, 0, 1)), static=True)
    assert tree.reparented == 1
    np.testing.assert_allclose(tree.lookup('lidar_mount', 'velodyne')[:3, 3], [0, 0, 1])
    with pytest.raises(NoTransform) as err:   # base_link was named by that edge only
        tree.lookup('base_link', 'velodyne')
    assert err.value.reason == 'unknown_frame' and err.value.link == (None, 'base_link')
    assert tree.edges() == [('lidar_mount', 'velodyne', True, 1, T0)]


def test_dynamic_after_static_replaces_it():
    tree = TfTree()
    tree.add_transform(ts('odom', 'base_link', (1, 0, 0), (0, 0, 0, 1), T0), static=True)
    tree.add_transform(ts('odom', 'base_link', (2, 0, 0), (0, 0, 0, 1), T0 + 100 * MS),
                       static=False)
    assert tree.reparented == 0
    assert x_at(tree, T0 + 100 * MS) == 2
    with pytest.raises(NoTransform):
        x_at(tree, T0)          # the static one is gone: no dynamic sample before


# ------------------------------------------------------------------ quaternions

def test_quaternion_sign_does_not_matter():
    q = axis_angle_quaternion((1, 2, 3), 1.1)
    a, b = TfTree(), TfTree()
    a.add_transform(ts('p', 'c', (1, 2, 3), q), static=True)
    b.add_transform(ts('p', 'c', (1, 2, 3), tuple(-v for v in q)), static=True)
    np.testing.assert_allclose(a.lookup('p', 'c'), b.lookup('p', 'c'), atol=1e-15)


def test_quaternions_are_normalised():
    q = axis_angle_quaternion((0, 1, 0), 0.7)
    tree = TfTree()
    tree.add_transform(ts('p', 'c', (0, 0, 0), tuple(3 * v for v in q)), static=True)
    R = tree.lookup('p', 'c')[:3, :3]
    np.testing.assert_allclose(R, rodrigues((0, 1, 0), 0.7), atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize('rotation,translation', [
    ((0, 0, 0, 0), (0, 0, 0)), ((math.nan, 0, 0, 1), (0, 0, 0)),
    ((0, math.inf, 0, 1), (0, 0, 0)), ((0, 0, 0, 1), (math.nan, 0, 0)),
    ((0, 0, 0, 1), (0, -math.inf, 0))])
def test_bad_quaternion_or_translation_is_refused_naming_the_transform(rotation, translation):
    tree = TfTree()
    with pytest.raises(InvalidTransform) as err:
        tree.add_transform(ts('base_link', 'velodyne', translation, rotation), static=True)
    assert "'base_link' -> 'velodyne'" in str(err.value)
    assert tree.frames() == set()


def test_a_bad_transform_does_not_stop_the_others_of_its_message():
    tree = TfTree()
    refused = tree.add_message(tf_msg(ts('base_link', 'velodyne', (0, 0, 0), (0, 0, 0, 0)),
                                      ts('base_link', 'camera', (1, 0, 0), (0, 0, 0, 1)),
                                      ts('camera', 'camera', (1, 0, 0), (0, 0, 0, 1)),
                                      ts('', 'x', (1, 0, 0), (0, 0, 0, 1))), static=True)
    assert len(refused) == 3 and all(isinstance(e, InvalidTransform) for e in refused)
    assert 'quaternion' in str(refused[0]) and 'own parent' in str(refused[1])
    assert 'non-empty' in str(refused[2])
    assert tree.frames() == {'base_link', 'camera'}


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError):
        TfTree(history=0)
    with pytest.raises(ValueError):
        TfTree(max_age_ns=-1)


# ------------------------------------------------------------------ to a TransformStamped

def test_transform_values_round_trip_through_the_tree():
    T = np.eye(4)
    T[:3, :3] = rodrigues((0.2, -1, 0.4), 2.9)
    T[:3, 3] = (0.5, -1.5, 2.0)
    v = transform_values(T, 'camera_optical', 'velodyne', T0 + 123)
    assert (v.frame_id, v.child_frame_id, v.sec, v.nanosec) == (
        'camera_optical', 'velodyne', 1_700_000_000, 123)
    assert v.translation == (0.5, -1.5, 2.0) and v.rotation[3] >= 0
    assert all(isinstance(x, float) for x in (*v.translation, *v.rotation))
    tree = TfTree()
    tree.add_transform(ts(v.frame_id, v.child_frame_id, v.translation, v.rotation,
                          v.sec * 1_000_000_000 + v.nanosec), static=True)
    np.testing.assert_allclose(tree.lookup('camera_optical', 'velodyne'), T, atol=1e-12)


def test_transform_values_stamps():
    assert transform_values(np.eye(4), 'a', 'b', (12, 34))[2:4] == (12, 34)
    assert transform_values(np.eye(4), 'a', 'b', -1)[2:4] == (-1, 999_999_999)
    assert transform_values(np.eye(4), 'a', 'b', 0).rotation == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize('bad', [np.diag([2.0, 1, 1, 1]), np.diag([-1.0, 1, 1, 1]),
                                 np.eye(3), np.full((4, 4), np.nan)])
def test_transform_values_refuses_a_non_rigid_matrix(bad):
    with pytest.raises(ValueError):
        transform_values(bad, 'a', 'b', 0)


def test_transform_values_refuses_empty_frames():
    with pytest.raises(ValueError, match='child_frame'):
        transform_values(np.eye(4), 'a', '', 0)


# ------------------------------------------------------------------ real message classes

def test_rosbags_tf_messages_are_read_as_they_come():
    """The bag path: rosbags' tf2_msgs/msg/TFMessage, as process_bag gets it."""
    typesys = pytest.importorskip('rosbags.typesys')
    store = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    t = store.types
    q = axis_angle_quaternion(AXIS_BL, ANGLE_BL)
    msg = t['tf2_msgs/msg/TFMessage'](transforms=[t['geometry_msgs/msg/TransformStamped'](
        header=t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=5, nanosec=7),
                                        frame_id='base_link'),
        child_frame_id='camera_link',
        transform=t['geometry_msgs/msg/Transform'](
            translation=t['geometry_msgs/msg/Vector3'](x=t_BL[0], y=t_BL[1], z=t_BL[2]),
            rotation=t['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])))])
    tree = TfTree()
    assert tree.add_message(msg, static=True) == []
    T = tree.lookup('base_link', 'camera_link', 5_000_000_007)
    np.testing.assert_allclose(T[:3, :3], R_BL, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], t_BL)
    assert tree.edges() == [('base_link', 'camera_link', True, 1, 5_000_000_007)]


def test_module_imports_without_ros():
    code = ("import sys, anyseg_ros.tf_tree; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'tf2_msgs', 'geometry_msgs', 'tf2_ros', 'torch')]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
