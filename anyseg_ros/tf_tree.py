"""A transform tree fed from ``/tf_static`` and ``/tf``, without ROS (numpy only).

The node and the offline bag processor both resolve a sensor message's ``header.frame_id``
into the camera's frame with it: the node feeds it from its TFMessage subscriptions where
``tf2_ros`` is missing (the pip install), ``process_bag`` from a bag's ``/tf_static`` and
``/tf``. Messages are duck-typed: rclpy's ``tf2_msgs/msg/TFMessage``, the ``rosbags``
library's, or anything with the same attribute names::

    msg.transforms[i].header.frame_id              parent frame
    msg.transforms[i].header.stamp.sec / .nanosec
    msg.transforms[i].child_frame_id               child frame
    msg.transforms[i].transform.translation.x / .y / .z
    msg.transforms[i].transform.rotation.x / .y / .z / .w

A TransformStamped gives ``T_parent_child``: it maps points given in the child frame into
the parent frame (``p_parent = T_parent_child @ p_child``), as in tf2 and as the node's
``lidar.T_cam_lidar`` does.

    tree = TfTree()
    tree.add_message(tf_static_msg, static=True)
    tree.add_message(tf_msg, static=False)
    T_cam_lidar = tree.lookup("camera_optical", "velodyne", stamp_ns)   # 4x4 float64

What follows tf2, and where this differs (tf2: ``tf2::BufferCore``):

- **Static** transforms (``/tf_static``) hold at any time; for each child frame the last one
  received wins, as in tf2 (a late-joining subscriber gets each static broadcaster's last
  message, which carries all of that broadcaster's transforms).
- **Dynamic** transforms (``/tf``) keep a bounded history per child frame (``history``
  samples, default 1000: 10 s at 100 Hz; tf2 keeps 10 s). A lookup at ``stamp_ns`` uses the
  sample at that stamp or, failing that, the **nearest one before it**, if it is at most
  ``max_age_ns`` older than the stamp. **No interpolation**: tf2 interpolates between the
  samples around the stamp and refuses stamps after the newest sample (extrapolation, the
  caller waits); here the newest sample serves a later stamp within ``max_age_ns``. For
  static rigs (sensor -> base_link, what the node needs) both give the same result; on a
  moving chain this one lags by up to the publishing period of ``/tf``.
- ``stamp_ns=None`` asks for the latest: each dynamic edge's newest sample, with no age
  limit (tf2's time 0 uses the latest time common to the chain instead).
- **One parent per frame.** A frame whose transforms name two parents follows the last
  transform received for it: a new parent, or a static transform replacing a dynamic one or
  the reverse, drops the earlier edge and its history (tf2 keeps one cache per child frame
  and also takes the parent from the latest data). ``TfTree.reparented`` counts the
  changes of parent (a rig whose TF is published twice, inconsistently, shows up there).
- Chains of any length, in either direction, through the lowest common ancestor: edges above
  it are never consulted, so a missing or stale ``odom -> base_link`` does not stop a
  ``velodyne -> camera_optical`` lookup whose frames both hang below ``base_link``.
- Quaternions are **normalised** on insertion (tf2 rejects one whose squared norm is more
  than 0.01 from 1); a zero, NaN or infinite quaternion or translation is rejected with
  :class:`InvalidTransform` naming the transform, as are an empty frame id and a frame that
  is its own parent. A leading ``/`` on a frame id is stripped (ROS 1 names), in transforms
  and lookups alike.
- ``lookup(f, f, ...)`` is the identity for any frame, known or not (tf2 requires the frame
  to exist): a cloud already in the camera's frame needs no transform.

Failure is an exception: :meth:`TfTree.lookup` raises :class:`NoTransform` (a
``LookupError``) whose ``reason`` is one of :data:`NO_TRANSFORM_REASONS` and whose message
names the missing link (the frame nobody publishes, the two trees that no transform joins,
or the edge with no recent enough sample). The node counts these as ``no_transform``.

:func:`transform_values` goes the other way, for the bag writers: a 4x4 + frames + stamp
into the plain values of a TransformStamped.

Thread safety: every method may be called from any thread (one lock).
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np

#: Every ``NoTransform.reason``, e.g. to create counters up front.
NO_TRANSFORM_REASONS = ("unknown_frame", "not_connected", "no_sample_before", "too_old",
                        "loop", "extrapolation", "tf2_error")  # the last two: Tf2Lookup

DEFAULT_HISTORY = 1000
DEFAULT_MAX_AGE_NS = 500_000_000
#: Longest chain walked up from a frame before the tree is taken for a loop.
MAX_CHAIN = 10_000
#: Rotation matrices further than this from orthonormal are refused by transform_values.
ROTATION_TOLERANCE = 1e-6


class InvalidTransform(ValueError):
    """A transform that cannot be stored (zero/NaN quaternion, NaN translation, empty or
    self-referencing frame ids); the message names it."""


class NoTransform(LookupError):
    """No transform between two frames at a stamp.

    ``reason``: one of :data:`NO_TRANSFORM_REASONS` (a counter label):
    ``unknown_frame`` (no transform names the frame), ``not_connected`` (both frames are
    known but no chain joins them), ``no_sample_before`` (a dynamic edge on the chain has no
    sample at or before the stamp), ``too_old`` (its nearest sample before the stamp is older
    than ``max_age_ns``), ``loop`` (the parents form a cycle).
    ``link``: the missing link as (parent side, child side): for ``unknown_frame``
    ``(None, frame)``; for ``not_connected`` the roots of the two trees (target's, source's);
    for ``no_sample_before`` / ``too_old`` the edge (parent, child); for ``loop`` the frame
    where the cycle was found, twice.
    """

    def __init__(self, reason: str, message: str, target_frame: str, source_frame: str,
                 stamp_ns: int | None, link: tuple[str | None, str]):
        super().__init__(message)
        self.reason = reason
        self.target_frame = target_frame
        self.source_frame = source_frame
        self.stamp_ns = stamp_ns
        self.link = link

    def __reduce__(self):  # keep every attribute when pickled
        return (type(self), (self.reason, str(self), self.target_frame, self.source_frame,
                             self.stamp_ns, self.link))


class TransformValues(NamedTuple):
    """The plain values of a geometry_msgs/TransformStamped (see :func:`transform_values`)."""

    frame_id: str
    child_frame_id: str
    sec: int
    nanosec: int
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # x, y, z, w; normalised, w >= 0


# --------------------------------------------------------------------------- math helpers

def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time-like object (``.sec``, ``.nanosec``)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a time in nanoseconds (nanosec in [0, 1e9), also when negative)."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return sec, nanosec


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a quaternion, normalised first; :class:`InvalidTransform` for a zero,
    NaN or infinite one."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.all(np.isfinite(q)) or not norm > 1e-12 or not math.isfinite(norm):
        raise InvalidTransform(f"rotation (x, y, z, w) = ({x}, {y}, {z}, {w}) is not a "
                               "rotation: a quaternion must be finite and non-zero")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: Any) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix, normalised, with w >= 0 (Shepperd's method:
    divides by the largest of the four candidate magnitudes, stable for every angle)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > max(R[0, 0], R[1, 1], R[2, 2]):
        s = 2.0 * math.sqrt(max(trace + 1.0, 0.0))
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s,
                      (R[1, 0] - R[0, 1]) / s, s / 4])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 0.0))
        q = np.zeros(4)
        q[i] = s / 4
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)


def make_transform(translation: Iterable[float], rotation: Iterable[float]) -> np.ndarray:
    """4x4 float64 from a translation (x, y, z) and a quaternion (x, y, z, w)."""
    t = np.asarray(tuple(translation), dtype=np.float64)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise InvalidTransform(f"translation {tuple(t.tolist())} is not three finite numbers")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(*rotation)
    T[:3, 3] = t
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 (R^T, -R^T t)."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def transform_values(T_parent_child: Any, parent_frame: str, child_frame: str,
                     stamp: int | tuple[int, int]) -> TransformValues:
    """The values of a TransformStamped for ``T_parent_child`` (maps child-frame points into
    the parent frame): ``header.frame_id = parent_frame``, ``child_frame_id = child_frame``,
    ``header.stamp`` from ``stamp`` (nanoseconds, or (sec, nanosec)), translation and a
    normalised quaternion with w >= 0. Raises ``ValueError`` if T is not a rigid transform
    (a 4x4 with an orthonormal, right-handed rotation and a last row 0 0 0 1)."""
    T = np.asarray(T_parent_child, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_{parent_frame}_{child_frame} must be a finite 4x4, got shape "
                         f"{T.shape}")
    R = T[:3, :3]
    if (not np.allclose(T[3], (0, 0, 0, 1), atol=ROTATION_TOLERANCE)
            or not np.allclose(R.T @ R, np.eye(3), atol=ROTATION_TOLERANCE)
            or np.linalg.det(R) < 0):
        raise ValueError(f"T_{parent_frame}_{child_frame} is not a rigid transform (its 3x3 "
                         "block must be a rotation and its last row 0 0 0 1):\n"
                         f"{np.array2string(T, precision=6)}")
    for name, frame in (("parent_frame", parent_frame), ("child_frame", child_frame)):
        if not frame:
            raise ValueError(f"{name} is empty")
    if isinstance(stamp, tuple):
        sec, nanosec = (int(v) for v in stamp)
    else:
        sec, nanosec = ns_to_stamp(stamp)
    return TransformValues(parent_frame, child_frame, sec, nanosec,
                           tuple(float(v) for v in T[:3, 3]), matrix_to_quaternion(R))


# --------------------------------------------------------------------------- the tree

@dataclass
class _Edge:
    """The transform of one child frame: its parent, static or a history of samples."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)       # ascending; one entry if static
    matrices: list[np.ndarray] = field(default_factory=list)


def _frame(name: Any) -> str:
    return str(name).lstrip("/")


class TfTree:
    """Transforms from TFMessages; :meth:`lookup` chains them (module docstring: rules)."""

    def __init__(self, history: int = DEFAULT_HISTORY,
                 max_age_ns: int | None = DEFAULT_MAX_AGE_NS):
        """``history``: samples kept per dynamic edge (the oldest go first); ``max_age_ns``:
        how much older than the lookup stamp a dynamic sample may be (None: any age)."""
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        if max_age_ns is not None and max_age_ns < 0:
            raise ValueError(f"max_age_ns must be >= 0 or None, got {max_age_ns}")
        self.history = int(history)
        self.max_age_ns = None if max_age_ns is None else int(max_age_ns)
        self.reparented = 0
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- input

    def add_message(self, msg: Any, static: bool) -> list[InvalidTransform]:
        """Store every transform of a TFMessage-like ``msg`` (``static``: it came from
        /tf_static). Returns the transforms refused, as exceptions naming them (the others
        are stored all the same)."""
        refused = []
        for t in msg.transforms:
            try:
                self.add_transform(t, static)
            except InvalidTransform as err:
                refused.append(err)
        return refused

    def add_transform(self, t: Any, static: bool) -> None:
        """Store one TransformStamped-like ``t``; :class:`InvalidTransform` if it is not one
        (nothing is stored then)."""
        parent = _frame(t.header.frame_id)
        child = _frame(t.child_frame_id)
        where = f"transform {parent!r} -> {child!r}"
        if not parent or not child:
            raise InvalidTransform(f"{where}: frame_id and child_frame_id must be non-empty")
        if parent == child:
            raise InvalidTransform(f"{where}: a frame cannot be its own parent")
        tr, rot = t.transform.translation, t.transform.rotation
        try:
            T = make_transform((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
        except InvalidTransform as err:
            raise InvalidTransform(f"{where}: {err}") from None
        self.set_transform(T, parent, child, stamp_to_ns(t.header.stamp), static)

    def set_transform(self, T_parent_child: np.ndarray, parent: str, child: str,
                      stamp_ns: int, static: bool) -> None:
        """Store a 4x4 ``T_parent_child`` (taken as rigid, not checked) directly."""
        parent, child = _frame(parent), _frame(child)
        T = np.array(T_parent_child, dtype=np.float64)
        stamp_ns = int(stamp_ns)
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if edge is not None and edge.parent != parent:
                    self.reparented += 1
                edge = self._edges[child] = _Edge(parent, static)
            if static:
                edge.stamps[:] = [stamp_ns]
                edge.matrices[:] = [T]
                return
            i = bisect.bisect_right(edge.stamps, stamp_ns)
            if i > 0 and edge.stamps[i - 1] == stamp_ns:  # same stamp again: replace
                edge.matrices[i - 1] = T
                return
            edge.stamps.insert(i, stamp_ns)
            edge.matrices.insert(i, T)
            if len(edge.stamps) > self.history:
                del edge.stamps[0], edge.matrices[0]

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    # ---------------------------------------------------------------- queries

    def frames(self) -> set[str]:
        """Every frame named by a stored transform."""
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def edges(self) -> list[tuple[str, str, bool, int, int]]:
        """(parent, child, static, samples, newest stamp ns) of every stored edge, sorted."""
        with self._lock:
            return sorted((e.parent, child, e.static, len(e.stamps), e.stamps[-1])
                          for child, e in self._edges.items())

    def can_transform(self, target_frame: str, source_frame: str,
                      stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except NoTransform:
            return False
        return True

    def lookup(self, target_frame: str, source_frame: str,
               stamp_ns: int | None = None) -> np.ndarray:
        """4x4 float64 ``T_target_source``: maps points given in ``source_frame`` into
        ``target_frame`` (``p_target = T @ p_source``), at ``stamp_ns`` (None: the latest).

        Raises :class:`NoTransform` naming the missing link."""
        target, source = _frame(target_frame), _frame(source_frame)
        if target == source:
            return np.eye(4)
        with self._lock:
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for frame in (source, target):
                if frame not in known:
                    raise NoTransform(
                        "unknown_frame",
                        f"no transform from {source!r} to {target!r}: frame {frame!r} is "
                        "unknown (no transform on /tf or /tf_static names it)",
                        target, source, stamp_ns, (None, frame))
            up_source = self._chain(source, target, source, stamp_ns)
            up_target = self._chain(target, target, source, stamp_ns)
            in_target = {frame: i for i, (frame, _) in enumerate(up_target)}
            for i, (frame, _) in enumerate(up_source):
                if frame in in_target:
                    ancestor_from_source = i
                    ancestor_from_target = in_target[frame]
                    break
            else:
                root_s, root_t = up_source[-1][0], up_target[-1][0]
                raise NoTransform(
                    "not_connected",
                    f"no transform from {source!r} to {target!r}: their frames are not "
                    f"connected; the chain up from {source!r} ends at {root_s!r}, the one "
                    f"from {target!r} at {root_t!r}, and no transform has one of them as "
                    "child_frame_id to join the two",
                    target, source, stamp_ns, (root_t, root_s))
            # Only now the edges below the common ancestor are evaluated at the stamp.
            T_anc_source = self._compose(up_source[:ancestor_from_source + 1], stamp_ns,
                                         target, source)
            T_anc_target = self._compose(up_target[:ancestor_from_target + 1], stamp_ns,
                                         target, source)
        return invert(T_anc_target) @ T_anc_source

    # ---------------------------------------------------------------- internals

    def _chain(self, frame: str, target: str, source: str,
               stamp_ns: int | None) -> list[tuple[str, _Edge | None]]:
        """[(frame, edge to its parent), (parent, edge to its parent), ..., (root, None)]."""
        chain, seen = [], set()
        while True:
            if frame in seen or len(chain) > MAX_CHAIN:
                raise NoTransform("loop", f"no transform from {source!r} to {target!r}: the "
                                  f"parents of frame {frame!r} form a loop", target, source,
                                  stamp_ns, (frame, frame))
            seen.add(frame)
            edge = self._edges.get(frame)
            chain.append((frame, edge))
            if edge is None:
                return chain
            frame = edge.parent

    def _compose(self, chain: list[tuple[str, _Edge | None]], stamp_ns: int | None,
                 target: str, source: str) -> np.ndarray:
        """T_ancestor_first of chain[0] up to chain[-1] (the common ancestor)."""
        T = np.eye(4)
        for child, edge in chain[:-1]:
            T = self._sample(edge, child, stamp_ns, target, source) @ T
        return T

    def _sample(self, edge: _Edge, child: str, stamp_ns: int | None, target: str,
                source: str) -> np.ndarray:
        if edge.static or stamp_ns is None:
            return edge.matrices[-1]
        i = bisect.bisect_right(edge.stamps, stamp_ns) - 1
        link = f"{edge.parent!r} -> {child!r}"
        if i < 0:
            raise NoTransform(
                "no_sample_before",
                f"no transform from {source!r} to {target!r} at {_sec(stamp_ns)}: the "
                f"transform {link} (/tf) has no sample at or before that stamp (earliest "
                f"{_sec(edge.stamps[0])}, {(edge.stamps[0] - stamp_ns) / 1e6:.1f} ms later)",
                target, source, stamp_ns, (edge.parent, child))
        age = stamp_ns - edge.stamps[i]
        if self.max_age_ns is not None and age > self.max_age_ns:
            raise NoTransform(
                "too_old",
                f"no transform from {source!r} to {target!r} at {_sec(stamp_ns)}: the "
                f"newest sample of {link} (/tf) at or before it is {age / 1e6:.1f} ms older "
                f"(limit {self.max_age_ns / 1e6:.1f} ms)",
                target, source, stamp_ns, (edge.parent, child))
        return edge.matrices[i]


def _sec(stamp_ns: int) -> str:
    sec, nanosec = ns_to_stamp(stamp_ns)
    return f"t={sec}.{nanosec:09d} s"


class Tf2Lookup:
    """:meth:`TfTree.lookup`'s interface on a ``tf2_ros.Buffer`` (a ROS install): the node
    uses it when ``tf.listener`` is ``tf2_ros`` (or ``auto`` and tf2_ros imports), with a
    ``tf2_ros.TransformListener`` filling the buffer from /tf_static and /tf.

    tf2's own semantics then hold: dynamic transforms are interpolated between the samples
    around the stamp, and a stamp after the newest sample is an extrapolation (the message
    is counted ``no_transform``; ``tf.max_age`` does not apply). Failures are raised as
    :class:`NoTransform` with reason ``unknown_frame`` (tf2's LookupException),
    ``not_connected`` (ConnectivityException), ``extrapolation`` (ExtrapolationException) or
    ``tf2_error`` (any other TransformException), tf2's message kept."""

    def __init__(self, buffer: Any):
        import tf2_ros  # only where it exists: the caller checked

        self._buffer = buffer
        self._reasons = ((tf2_ros.LookupException, "unknown_frame"),
                         (tf2_ros.ConnectivityException, "not_connected"),
                         (tf2_ros.ExtrapolationException, "extrapolation"),
                         (tf2_ros.TransformException, "tf2_error"))

    def lookup(self, target_frame: str, source_frame: str,
               stamp_ns: int | None = None) -> np.ndarray:
        """4x4 float64 ``T_target_source`` at ``stamp_ns`` (None: tf2's latest common time)."""
        from rclpy.time import Time

        target, source = _frame(target_frame), _frame(source_frame)
        if target == source:
            return np.eye(4)
        when = Time() if stamp_ns is None else Time(nanoseconds=int(stamp_ns))
        try:
            t = self._buffer.lookup_transform(target, source, when)
        except Exception as err:  # noqa: BLE001 - mapped below, the rest re-raised
            for kind, reason in self._reasons:
                if isinstance(err, kind):
                    raise NoTransform(reason, f"no transform from {source!r} to {target!r} "
                                      f"(tf2: {err})", target, source, stamp_ns,
                                      (None, source)) from None
            raise
        tr, rot = t.transform.translation, t.transform.rotation
        return make_transform((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
