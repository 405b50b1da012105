"""anyseg_ros.conversions: ROS 2 messages <-> numpy, with real sensor_msgs classes where
installed, rosbags' classes where installed, and SimpleNamespace messages whose data is a
numpy array (as rosbags gives) everywhere."""
from __future__ import annotations

import array
import math
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anyseg_ros import conversions as conv
from anyseg_ros.conversions import InvalidMessage
from anyseg_ros.events import EventDecoder

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIX_T = 1_700_000_000.0  # absolute times: float32 would lose everything below 2 minutes
XYZI = ("x", "y", "z", "intensity")


@pytest.fixture(scope="module")
def msg():
    """The real sensor_msgs.msg module (rclpy's message classes)."""
    return pytest.importorskip("sensor_msgs.msg",
                               reason="sensor_msgs is not installed (no ROS 2 here)")


@pytest.fixture(scope="module")
def classes():
    """sensor_msgs.msg where installed, else SimpleNamespace for every message class."""
    try:
        import sensor_msgs.msg
    except ImportError:
        return SimpleNamespace(Image=SimpleNamespace, PointCloud2=SimpleNamespace,
                               CameraInfo=SimpleNamespace)
    return sensor_msgs.msg


@pytest.fixture(scope="module")
def typestore():
    rosbags_typesys = pytest.importorskip("rosbags.typesys",
                                          reason="rosbags is not installed (setup.py extra data)")
    return rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)


# ----------------------------------------------------------------- duck-typed messages


def stamp_ns(t: float = UNIX_T) -> SimpleNamespace:
    sec, nanosec = conv.sec_to_stamp(t)
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id="f")


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False,
              ) -> SimpleNamespace:
    """An Image as rosbags gives it (data a numpy uint8 array), rows padded by ``pad``
    garbage bytes, pixels stored in the requested byte order."""
    height, width = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = stored.reshape(height, -1).view(np.uint8).reshape(height, -1)
    garbage = np.random.default_rng(1).integers(0, 256, (height, pad), dtype=np.uint8)
    data = np.concatenate([rows, garbage], axis=1).reshape(-1)
    return SimpleNamespace(header=stamp_ns(), height=height, width=width, encoding=encoding,
                           is_bigendian=int(bigendian), step=rows.shape[1] + pad, data=data)


def raw_cloud(records: np.ndarray, height: int = 1, bigendian: bool = False,
              declared: dict | None = None) -> SimpleNamespace:
    """A PointCloud2 over a structured array (any offsets, padding, byte order): its fields
    are the structured dtype's; ``declared`` overrides PointField attributes by name."""
    dtype = records.dtype
    fields = []
    for name, (field_dtype, offset) in dtype.fields.items():
        datatype = conv.builders._DTYPE_TO_POINTFIELD[field_dtype.newbyteorder("=")]
        attrs = {"name": name, "offset": offset, "datatype": datatype, "count": 1}
        attrs.update((declared or {}).get(name, {}))
        fields.append(SimpleNamespace(**attrs))
    width = len(records) // height
    return SimpleNamespace(header=stamp_ns(), height=height, width=width, fields=fields,
                           is_bigendian=bigendian, point_step=dtype.itemsize,
                           row_step=dtype.itemsize * width,
                           data=np.ascontiguousarray(records).view(np.uint8).reshape(-1),
                           is_dense=False)


def structured(columns: dict[str, np.ndarray], offsets: dict[str, int], itemsize: int,
               byteorder: str = "<") -> np.ndarray:
    dtype = np.dtype({"names": list(columns),
                      "formats": [c.dtype.newbyteorder(byteorder) for c in columns.values()],
                      "offsets": [offsets[n] for n in columns], "itemsize": itemsize})
    # Garbage everywhere first, so padding bytes are not zeros.
    n = len(next(iter(columns.values())))
    out = np.random.default_rng(2).integers(0, 256, n * itemsize, dtype=np.uint8).view(dtype)
    for name, values in columns.items():
        out[name] = values
    return out


def random_pixels(encoding: str, hw=(5, 7)) -> np.ndarray:
    channel_dtype, channels = conv.IMAGE_LAYOUTS[encoding]
    shape = (*hw, channels) if channels > 1 else hw
    rng = np.random.default_rng(0)
    if channel_dtype.kind == "f":
        return rng.normal(size=shape).astype(channel_dtype)
    return rng.integers(0, np.iinfo(channel_dtype).max, shape, endpoint=True).astype(
        channel_dtype)


def random_points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=20.0, size=(n, 4)).astype(np.float32)


# ----------------------------------------------------------------- stamps


def test_stamps_round_to_the_exact_nearest_nanosecond():
    assert conv.sec_to_stamp(12.5) == (12, 500_000_000)
    assert conv.sec_to_stamp(-0.25) == (-1, 750_000_000)
    assert conv.sec_to_stamp(0.9999999999) == (1, 0)  # rounds up into the next second
    # 1.7e9 + 0.123456 is stored as 1700000000.12345600128...: the nearest ns is ...001.
    assert conv.sec_to_stamp(UNIX_T + 0.123456) == (1_700_000_000, 123_456_001)
    for sec, nanosec in [(0, 1), (3, 999_999_999), (1_700_000_000, 123_456_000)]:
        t = conv.stamp_to_sec(SimpleNamespace(sec=sec, nanosec=nanosec))
        back_sec, back_ns = conv.sec_to_stamp(t)
        assert back_sec == sec and abs(back_ns - nanosec) <= 1000  # float64 at 1.7e9 s: 238 ns
    with pytest.raises(ValueError):
        conv.sec_to_stamp(math.nan)


def test_check_stamp():
    conv.check_stamp(UNIX_T)
    conv.check_stamp(UNIX_T + 0.5, now=UNIX_T)
    for bad, now in [(0.0, None), (-1.0, None), (math.nan, None), (UNIX_T + 2.0, UNIX_T)]:
        with pytest.raises(InvalidMessage) as err:
            conv.check_stamp(bad, now=now)
        assert err.value.reason == "bad_stamp"


def test_invalid_message_reads_and_pickles():
    err = InvalidMessage("bad_size", "image of 0 x 5 pixels")
    assert isinstance(err, ValueError) and str(err) == "bad_size: image of 0 x 5 pixels"
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.detail) == ("bad_size", "image of 0 x 5 pixels")


# ----------------------------------------------------------------- images


def test_encodings_agree_with_anyseg_core():
    """Every camera encoding accepted here, under the name returned, is one camera_to_tensor
    reads; depth likewise."""
    from anyseg_core.sensors import CAMERA_ENCODINGS, DEPTH_ENCODINGS, camera_to_tensor
    assert set(conv.CAMERA_ENCODINGS) == set(CAMERA_ENCODINGS)
    assert set(conv.DEPTH_ENCODINGS) == set(DEPTH_ENCODINGS)
    for encoding in conv.CAMERA_ENCODINGS:
        pixels = random_pixels(encoding)
        got, name = conv.image_to_array(raw_image(pixels, encoding), conv.CAMERA_ENCODINGS)
        assert name == {"8UC3": "bgr8", "8UC1": "mono8"}.get(encoding, encoding)
        assert camera_to_tensor(got, name).shape == (3, 5, 7)


@pytest.mark.parametrize("encoding", conv.IMAGE_ENCODINGS)
def test_image_round_trip_with_sensor_msgs(msg, encoding):
    pixels = random_pixels(encoding)
    image = conv.array_to_image(pixels, encoding, UNIX_T + 0.25, "cam")
    assert isinstance(image, msg.Image)
    assert image.is_bigendian == 0 and image.step == pixels[0].nbytes
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (1_700_000_000, 250_000_000)
    assert image.header.frame_id == "cam"
    got, _ = conv.image_to_array(image)
    assert got.dtype == pixels.dtype and got.shape == pixels.shape
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("encoding", conv.IMAGE_ENCODINGS)
@pytest.mark.parametrize("pad", [0, 3, 8])
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_padding_and_byte_order(encoding, pad, bigendian):
    pixels = random_pixels(encoding)
    got, _ = conv.image_to_array(raw_image(pixels, encoding, pad, bigendian))
    assert got.dtype == pixels.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, pixels)
    assert got.flags.aligned  # torch can wrap it


def test_image_is_a_view_of_the_rclpy_message_data(msg):
    pixels = random_pixels("rgb8", (48, 64))
    image = conv.array_to_image(pixels, "rgb8", UNIX_T, "cam")
    assert isinstance(image.data, array.array)
    view, _ = conv.image_to_array(image)
    assert np.shares_memory(view, np.frombuffer(image.data, np.uint8))
    assert view.flags.writeable  # so torch wraps it without a copy (anyseg_core as_tensor)


def test_image_is_a_view_of_numpy_and_bytes_data():
    pixels = random_pixels("rgb8", (48, 64))
    # rosbags-style numpy data, with and without row padding; bytes (read-only) too.
    for raw in (raw_image(pixels, "rgb8"), raw_image(pixels, "rgb8", pad=16)):
        got, _ = conv.image_to_array(raw)
        assert np.shares_memory(got, raw.data)
        np.testing.assert_array_equal(got, pixels)
    raw = raw_image(pixels, "rgb8")
    raw.data = raw.data.tobytes()
    got, _ = conv.image_to_array(raw)
    assert got.base is not None and np.shares_memory(got, np.frombuffer(raw.data, np.uint8))


def test_image_data_as_a_list_is_read_too():
    pixels = random_pixels("mono8")
    raw = raw_image(pixels, "mono8")
    raw.data = raw.data.tolist()
    np.testing.assert_array_equal(conv.image_to_array(raw)[0], pixels)


def test_array_to_image_checks_the_array(msg):
    with pytest.raises(ValueError, match="rgb8"):
        conv.array_to_image(np.zeros((4, 4), np.uint8), "rgb8", UNIX_T, "cam")
    with pytest.raises(ValueError, match="float32"):
        conv.array_to_image(np.zeros((4, 4), np.float64), "32FC1", UNIX_T, "cam")
    with pytest.raises(ValueError, match="yuv422"):
        conv.array_to_image(np.zeros((4, 4), np.uint8), "yuv422", UNIX_T, "cam")
    # H x W x 1 is fine for one channel; a big-endian array is written little-endian.
    single = conv.array_to_image(np.zeros((4, 4, 1), np.uint8), "mono8", UNIX_T, "cam")
    assert (single.height, single.width, single.step) == (4, 4, 4)
    depth = np.arange(12, dtype=">u2").reshape(3, 4)
    image = conv.array_to_image(depth, "16UC1", UNIX_T, "cam")
    assert image.is_bigendian == 0 and bytes(image.data[:4]) == b"\x00\x00\x01\x00"
    np.testing.assert_array_equal(conv.image_to_array(image)[0], depth)


# ----------------------------------------------------------------- point clouds


def test_cloud_round_trip_with_sensor_msgs(msg):
    points = random_points(300)
    columns = {name: points[:, i] for i, name in enumerate(XYZI)}
    columns["ring"] = np.arange(300, dtype=np.uint16)
    columns["t"] = np.linspace(0, 0.1, 300)
    cloud = conv.points_to_cloud(columns, UNIX_T, "lidar")
    assert isinstance(cloud, msg.PointCloud2)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (1, 300, 26, True)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7), ("ring", 16, 4),
        ("t", 18, 8)]
    np.testing.assert_array_equal(conv.lidar_points(cloud)[0], points)
    back = conv.cloud_to_array(cloud, ["t", "ring", "x"], np.float64)
    np.testing.assert_array_equal(back[:, 0], columns["t"])
    np.testing.assert_array_equal(back[:, 1], columns["ring"])
    np.testing.assert_array_equal(back[:, 2], points[:, 0])
    points[5, 1] = np.nan
    assert not conv.points_to_cloud({"x": points[:, 0], "y": points[:, 1]}, 0.5, "l").is_dense


@pytest.mark.parametrize("bigendian", [False, True])
def test_cloud_layouts(bigendian):
    """Shuffled field order, extra fields, padding bytes, FLOAT64 x, y, z, organised."""
    points = random_points(24)
    order = ">" if bigendian else "<"
    columns = {"ring": np.arange(24, dtype=np.uint16), "intensity": points[:, 3],
               "z": points[:, 2].astype(np.float64), "x": points[:, 0].astype(np.float64),
               "y": points[:, 1].astype(np.float64), "t": np.arange(24, dtype=np.uint32)}
    offsets = {"ring": 0, "intensity": 4, "z": 8, "x": 24, "y": 32, "t": 44}
    records = structured(columns, offsets, itemsize=52, byteorder=order)
    for height in (1, 4):  # organised 4 x 6: read row by row
        cloud = raw_cloud(records, height=height, bigendian=bigendian)
        xyzi, removed = conv.lidar_points(cloud)
        assert xyzi.dtype == np.float32 and removed == 0
        np.testing.assert_array_equal(xyzi, points)
        exact = conv.cloud_to_array(cloud, ["x", "ring"], np.float64)
        np.testing.assert_array_equal(exact[:, 0], columns["x"])
        np.testing.assert_array_equal(exact[:, 1], np.arange(24))


def test_every_pointfield_datatype_is_read():
    values = np.array([0, 1, 100, 127])
    columns = {f"c{datatype}": values.astype(dtype)
               for datatype, dtype in conv.POINTFIELD_DTYPES.items()}
    cloud = raw_cloud(structured(columns, {n: 8 * i for i, n in enumerate(columns)}, 64))
    assert [f.datatype for f in cloud.fields] == list(range(1, 9))
    out = conv.cloud_to_array(cloud, list(columns), np.int64)
    np.testing.assert_array_equal(out, np.repeat(values[:, None], 8, axis=1))


def test_lidar_points_drop_non_finite_and_default_intensity():
    points = random_points(10)
    points[2, 0] = np.nan
    points[7, 3] = np.inf
    xyzi, removed = conv.lidar_points(raw_cloud(structured(
        {n: points[:, i] for i, n in enumerate(XYZI)}, {"x": 0, "y": 4, "z": 8, "intensity": 16},
        itemsize=20)))
    assert removed == 2
    np.testing.assert_array_equal(xyzi, np.delete(points, [2, 7], axis=0))
    xyz = conv.points_to_cloud({n: points[:, i] for i, n in enumerate("xyz")}, UNIX_T, "l",
                               cls=SimpleNamespace)
    xyzi, removed = conv.lidar_points(xyz)
    assert removed == 1 and (xyzi[:, 3] == 0).all()
    np.testing.assert_array_equal(xyzi[:, :3], np.delete(points[:, :3], 2, axis=0))


def test_rows_padded_beyond_the_points_are_read():
    """row_step may exceed point_step * width (rows padded for alignment): the padding,
    filled here with 0xFF (NaN as float32), is skipped."""
    points = random_points(12)
    records = structured({n: points[:, i] for i, n in enumerate(XYZI)},
                         {"x": 0, "y": 4, "z": 8, "intensity": 12}, 16)
    rows = np.full((3, 16 * 4 + 8), 0xFF, np.uint8)
    rows[:, :64] = np.ascontiguousarray(records).view(np.uint8).reshape(3, 64)
    cloud = raw_cloud(records, height=3)
    cloud.row_step, cloud.data = 72, rows.reshape(-1)
    xyzi, removed = conv.lidar_points(cloud)
    assert removed == 0
    np.testing.assert_array_equal(xyzi, points)


def test_intensity_field_and_scale():
    """lidar.intensity_field names the field read as the intensity; a cloud without it gets
    zeros, counted once per message; lidar.intensity_scale multiplies it."""
    from collections import Counter

    from anyseg_ros.inputs import payload_function

    points = random_points(8)
    names = ("x", "y", "z", "reflectivity")
    cloud = raw_cloud(structured({n: points[:, i] for i, n in enumerate(names)},
                                 {"x": 0, "y": 4, "z": 8, "reflectivity": 12}, 16))
    np.testing.assert_array_equal(conv.lidar_points(cloud, "reflectivity")[0], points)
    notes = Counter()
    default = payload_function("lidar")(cloud, None, notes)
    assert (default[:, 3] == 0).all() and notes == {"intensity_field_missing": 1}
    notes.clear()
    read = payload_function("lidar", intensity_field="reflectivity", intensity_scale=255.0)
    got = read(cloud, None, notes)
    np.testing.assert_allclose(got[:, 3], points[:, 3] * 255.0, rtol=1e-6)
    np.testing.assert_array_equal(got[:, :3], points[:, :3])
    assert notes == {}


def test_empty_cloud_is_valid():
    empty = conv.points_to_cloud({n: np.zeros(0, np.float32) for n in XYZI}, UNIX_T, "lidar",
                                 cls=SimpleNamespace)
    points, removed = conv.lidar_points(empty)
    assert points.shape == (0, 4) and removed == 0
    assert conv.cloud_to_array(empty, ["x", "z"]).shape == (0, 2)
    events = conv.events_from_cloud(conv.points_to_cloud(
        {"x": np.zeros(0, np.uint16), "y": np.zeros(0, np.uint16), "t": np.zeros(0),
         "p": np.zeros(0, np.uint8)}, UNIX_T, "events", cls=SimpleNamespace), (480, 640))
    assert len(events) == 0 and events.t.dtype == np.float64


def test_points_to_cloud_checks_columns():
    with pytest.raises(ValueError, match="int64"):
        conv.points_to_cloud({"x": np.zeros(3, np.int64)}, UNIX_T, "l", cls=SimpleNamespace)
    with pytest.raises(ValueError, match="one length"):
        conv.points_to_cloud({"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)},
                             UNIX_T, "l", cls=SimpleNamespace)


# ----------------------------------------------------------------- events


def test_events_round_trip_keeps_microseconds(msg):
    rng = np.random.default_rng(3)
    n = 1000
    x = rng.integers(0, 640, n).astype(np.uint16)
    y = rng.integers(0, 480, n).astype(np.uint16)
    micros = np.sort(rng.integers(0, 30_000, n))
    t = UNIX_T + micros * 1e-6  # float64 resolves 0.24 us at 1.7e9 s
    p = rng.integers(0, 2, n).astype(np.uint8)
    cloud = conv.points_to_cloud({"x": x, "y": y, "t": t, "p": p}, UNIX_T, "events")
    assert [f.datatype for f in cloud.fields] == [4, 4, 8, 2] and cloud.point_step == 13
    events = conv.events_from_cloud(cloud, (480, 640))
    for got, want in ((events.x, x), (events.y, y), (events.t, t), (events.p, p)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.round((events.t - UNIX_T) * 1e6), micros)
    assert conv.events_from_cloud(cloud, None).x.max() == x.max()


def test_events_accept_other_integer_and_float_types():
    x = np.array([0, 5, 639], np.int32)
    y = np.array([479, 3, 0], np.int16)
    t = np.array([0.5, 0.25, 0.125], np.float32)
    p = np.array([-1, 1, 7], np.int8)
    records = structured({"p": p, "t": t, "y": y, "x": x}, {"p": 0, "t": 4, "y": 8, "x": 12}, 16,
                         byteorder=">")
    cloud = raw_cloud(records, bigendian=True)
    cloud.header = stamp_ns(0.5)  # FLOAT32 holds these times: a clock started at 0 (sim time)
    events = conv.events_from_cloud(cloud, (480, 640))
    assert events.x.dtype == np.uint16 and events.y.dtype == np.uint16
    assert events.t.dtype == np.float64 and events.p.dtype == np.uint8
    assert events.x.tolist() == [0, 5, 639] and events.y.tolist() == [479, 3, 0]
    assert events.t.tolist() == [0.5, 0.25, 0.125] and events.p.tolist() == [0, 1, 1]


def test_float32_event_times_at_unix_times_are_refused():
    # float32 steps by 128 s at 1.7e9 s: these times round to 40 s before the stamp, which
    # would leave every event outside the frame's window without a word.
    x, y, p = np.ones(3, np.uint16), np.ones(3, np.uint16), np.ones(3, np.uint8)
    stamp = UNIX_T + 40.0
    t = stamp - np.array([0.02, 0.01, 0.0])
    assert abs(float(t.astype(np.float32)[-1]) - stamp) > conv.EVENT_TIME_TOLERANCE_S
    as32 = conv.points_to_cloud({"x": x, "y": y, "t": t.astype(np.float32), "p": p}, stamp,
                                "events", cls=SimpleNamespace)
    with pytest.raises(conv.InvalidMessage, match="FLOAT32 cannot hold UNIX times") as err:
        conv.events_from_cloud(as32, (480, 640))
    assert err.value.reason == "bad_event_time"
    as64 = conv.points_to_cloud({"x": x, "y": y, "t": t, "p": p}, stamp, "events",
                                cls=SimpleNamespace)
    np.testing.assert_array_equal(conv.events_from_cloud(as64, (480, 640)).t, t)


# ----------------------------------------------------------------- camera info


def test_camera_info_round_trip(msg):
    K = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
    info = conv.camera_info_msg(K, (375, 1242), UNIX_T, "cam", D=[0.1, -0.2, 0.0, 0.0, 0.01])
    assert isinstance(info, msg.CameraInfo) and info.distortion_model == "plumb_bob"
    assert list(info.d) == [0.1, -0.2, 0.0, 0.0, 0.01]
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4), np.hstack([K, [[0], [0], [0]]]))
    np.testing.assert_array_equal(np.asarray(info.r), np.eye(3).reshape(-1))
    K_back, size, distortion, R = conv.camera_info(info)
    assert size == (375, 1242) and K_back.dtype == np.float64
    assert distortion == ("plumb_bob", (0.1, -0.2, 0.0, 0.0, 0.01))
    assert R is None
    np.testing.assert_array_equal(K_back, K)
    assert list(conv.camera_info_msg(K, (2, 3), UNIX_T, "cam").d) == [0.0] * 5
    plain = SimpleNamespace(height=375, width=1242, k=K.reshape(-1).tolist())
    np.testing.assert_array_equal(conv.camera_info(plain)[0], K)


def test_camera_info_distortion_rectified_and_roi(msg):
    """D and its model come with K; unknown models or counts with a non-zero D are refused
    (an all-zero D is no distortion, whatever the model); ``rectified`` takes P instead and
    no distortion; an ROI moves the principal point and gives the image size."""
    K = np.array([[500.0, 0.0, 320.0], [0.0, 505.0, 240.0], [0.0, 0.0, 1.0]])
    info = conv.camera_info_msg(K, (480, 640), UNIX_T, "cam", D=[-0.3, 0.1, 0.0, 0.0, 0.0])
    assert conv.camera_info(info).distortion == ("plumb_bob", (-0.3, 0.1, 0.0, 0.0, 0.0))
    info.distortion_model = "equidistant"
    with pytest.raises(InvalidMessage, match="equidistant takes 4 coefficients, got 5"):
        conv.camera_info(info)
    info.d = [0.05, -0.01, 0.0, 0.001]
    assert conv.camera_info(info).distortion == ("equidistant", (0.05, -0.01, 0.0, 0.001))
    info.distortion_model, info.d = "anything", [0.0] * 4
    assert conv.camera_info(info).distortion is None
    # rectified: K from P (here a rectified camera of other focal length), distortion ignored
    P = np.array([[450.0, 0.0, 300.0, 0.0], [0.0, 450.0, 250.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    info.p, info.distortion_model, info.d = P.reshape(-1).tolist(), "plumb_bob", [0.2] * 5
    rect = conv.camera_info(info, rectified=True)
    np.testing.assert_array_equal(rect.K, P[:, :3])
    assert rect.distortion is None and rect.image_hw == (480, 640)
    assert rect.R is None  # identity: nothing to rotate
    c, s_ = np.cos(0.02), np.sin(0.02)  # a stereo rectification rotation of 1.1 degrees
    R = np.array([[c, 0.0, s_], [0.0, 1.0, 0.0], [-s_, 0.0, c]])
    info.r = R.reshape(-1).tolist()
    np.testing.assert_array_equal(conv.camera_info(info, rectified=True).R, R)
    assert conv.camera_info(info).R is None  # raw images: R does not apply
    info.r = (2 * R).reshape(-1).tolist()
    with pytest.raises(InvalidMessage, match="is not a rotation"):
        conv.camera_info(info, rectified=True)
    info.r = np.eye(3).reshape(-1).tolist()
    # ROI: a 200 x 100 window at (40, 30) of the 640 x 480 sensor
    info.d = [0.0] * 5
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 40, 30, 200, 100
    roi = conv.camera_info(info)
    assert roi.image_hw == (100, 200)
    np.testing.assert_array_equal(roi.K, [[500.0, 0.0, 280.0], [0.0, 505.0, 210.0],
                                          [0.0, 0.0, 1.0]])
    info.roi.width, info.roi.height = 640, 480  # the full image: no ROI
    info.roi.x_offset = info.roi.y_offset = 0
    assert conv.camera_info(info).image_hw == (480, 640)


# ----------------------------------------------------------------- serialisation


def test_built_messages_serialise_with_rclpy(msg):
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy is not installed")
    pixels = random_pixels("bgra8", (6, 9))
    image = serialization.deserialize_message(serialization.serialize_message(
        conv.array_to_image(pixels, "bgra8", UNIX_T, "cam")), msg.Image)
    np.testing.assert_array_equal(conv.image_to_array(image)[0], pixels)
    points = random_points(50)
    cloud = serialization.deserialize_message(serialization.serialize_message(
        conv.points_to_cloud({n: points[:, i] for i, n in enumerate(XYZI)}, UNIX_T, "l")),
        msg.PointCloud2)
    np.testing.assert_array_equal(conv.lidar_points(cloud)[0], points)
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    info = serialization.deserialize_message(serialization.serialize_message(
        conv.camera_info_msg(K, (480, 640), UNIX_T, "cam")), msg.CameraInfo)
    np.testing.assert_array_equal(conv.camera_info(info)[0], K)


def test_rosbags_classes_build_serialise_and_parse(typestore):
    """The bag-tool path: messages built with rosbags' classes survive CDR and parse."""
    def cdr_round_trip(message):
        kind = message.__msgtype__
        return typestore.deserialize_cdr(typestore.serialize_cdr(message, kind), kind)

    types = typestore.types
    depth = random_pixels("32FC1", (4, 6))
    image = cdr_round_trip(conv.array_to_image(depth, "32FC1", UNIX_T + 0.5, "cam",
                                               cls=types["sensor_msgs/msg/Image"]))
    assert isinstance(image.data, np.ndarray)
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (1_700_000_000, 500_000_000)
    np.testing.assert_array_equal(conv.image_to_array(image, conv.DEPTH_ENCODINGS)[0], depth)
    points = random_points(40)
    cloud = cdr_round_trip(conv.points_to_cloud(
        {n: points[:, i] for i, n in enumerate(XYZI)}, UNIX_T, "lidar",
        cls=types["sensor_msgs/msg/PointCloud2"]))
    np.testing.assert_array_equal(conv.lidar_points(cloud)[0], points)
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    info = cdr_round_trip(conv.camera_info_msg(K, (480, 640), UNIX_T, "cam",
                                               cls=types["sensor_msgs/msg/CameraInfo"]))
    np.testing.assert_array_equal(conv.camera_info(info)[0], K)


# ----------------------------------------------------------------- rejections


def _good_image() -> SimpleNamespace:
    return raw_image(random_pixels("rgb8"), "rgb8")


def _good_cloud() -> SimpleNamespace:
    points = random_points(6)
    return raw_cloud(structured({n: points[:, i] for i, n in enumerate(XYZI)},
                                {"x": 0, "y": 4, "z": 8, "intensity": 12}, 16))


def _good_events(x=(1, 2), y=(1, 2), t=(UNIX_T - 0.02, UNIX_T - 0.01)) -> SimpleNamespace:
    return raw_cloud(structured({"x": np.array(x, np.uint16), "y": np.array(y, np.uint16),
                                 "t": np.array(t, np.float64), "p": np.array([0, 1], np.uint8)},
                                {"x": 0, "y": 2, "t": 4, "p": 12}, 13))


def _with(message: SimpleNamespace, **changes) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(message), **changes})


def _declared(cloud: SimpleNamespace, name: str, **changes) -> SimpleNamespace:
    fields = [_with(f, **changes) if f.name == name else f for f in cloud.fields]
    return _with(cloud, fields=fields)


MAX_POINTS_PLUS = conv.MAX_POINTS + 1
K_GOOD = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
read_image = conv.image_to_array
read_lidar = conv.lidar_points


def read_events(message):
    return conv.events_from_cloud(message, (480, 640))


def read_stamp(message, now=None):
    conv.check_stamp(conv.stamp_to_sec(message.header.stamp), now=now)


# Compressed images: payloads made here with OpenCV directly (cv2.imencode of a BGR array,
# as image_transport's compressed plugin gives it), independent of array_to_compressed.


def encoded(image: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """``image`` (BGR or grey, as OpenCV takes it) as JPEG or PNG bytes."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (setup.py extra cv)")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, payload = cv2.imencode(ext, image, params)
    assert ok
    return payload.tobytes()


def compressed(payload: bytes, fmt: str = "rgb8; jpeg compressed bgr8") -> SimpleNamespace:
    """A CompressedImage as rosbags gives it (data a numpy uint8 array)."""
    return SimpleNamespace(header=stamp_ns(), format=fmt,
                           data=np.frombuffer(payload, np.uint8).copy())


def smooth_rgb(hw=(96, 128)) -> np.ndarray:
    """Gradients and a slow wave: what JPEG keeps well."""
    y, x = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    return np.stack([x * 2.0, y * 2.5, 128 + 60 * np.sin(x / 15) * np.cos(y / 11)],
                    axis=-1).clip(0, 255).astype(np.uint8)


def _good_jpeg() -> SimpleNamespace:
    return compressed(encoded(smooth_rgb()[:, :, ::-1]))


def _jpeg_of_size(height: int, width: int) -> SimpleNamespace:
    """A valid small JPEG whose frame header (SOF0) then says ``height`` x ``width``."""
    message = _good_jpeg()
    data = bytes(message.data)
    at = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1): height, width
    message.data = np.frombuffer(data[:at] + struct.pack(">HH", height, width)
                                 + data[at + 4:], np.uint8).copy()
    return message


def read_compressed(message):
    return conv.compressed_to_array(message)


REJECTIONS = {
    "unknown encoding": ("unknown_encoding", read_image,
                         lambda: _with(_good_image(), encoding="yuv422")),
    "not for this use": ("unknown_encoding",
                         lambda m: conv.image_to_array(m, conv.DEPTH_ENCODINGS), _good_image),
    "zero height": ("bad_size", read_image, lambda: _with(_good_image(), height=0, data=b"")),
    "absurd image": ("bad_size", read_image, lambda: _with(_good_image(), height=100_000,
                                                       width=100_000)),
    "absurd cloud": ("bad_size", read_lidar, lambda: _with(_good_cloud(), width=MAX_POINTS_PLUS)),
    "step too small": ("step_too_small", read_image, lambda: _with(_good_image(), step=20)),
    "short image": ("data_length", read_image, lambda: _with(_good_image(),
                                                         data=_good_image().data[:-1])),
    "short cloud": ("data_length", read_lidar, lambda: _with(_good_cloud(),
                                                         data=_good_cloud().data[:-16])),
    # longer than step x height: a header that lies about the size, not data to ignore
    "long image": ("data_length", read_image, lambda: _with(
        _good_image(), data=bytes(_good_image().data) + b"\0")),
    "long cloud": ("data_length", read_lidar, lambda: _with(
        _good_cloud(), data=bytes(_good_cloud().data) + bytes(16))),
    "no z": ("missing_field", read_lidar, lambda: _with(_good_cloud(),
                                                     fields=_good_cloud().fields[:2])),
    "z of count 3": ("missing_field", read_lidar, lambda: _declared(_good_cloud(), "z", count=3)),
    "z of datatype 9": ("missing_field", read_lidar, lambda: _declared(_good_cloud(), "z",
                                                                   datatype=9)),
    "float t as int": ("missing_field", read_events, lambda: _declared(_good_events(), "t",
                                                                   datatype=6)),
    "field beyond point_step": ("bad_point_step", read_lidar,
                                lambda: _declared(_good_cloud(), "intensity", offset=14)),
    "row_step": ("bad_point_step", read_lidar, lambda: _with(_good_cloud(), row_step=95)),
    "all NaN": ("non_finite", read_lidar, lambda: raw_cloud(structured(
        {n: np.full(3, np.nan, np.float32) for n in "xyz"}, {"x": 0, "y": 4, "z": 8}, 12))),
    "NaN event time": ("non_finite", read_events, lambda: _good_events(t=(0.1, np.nan))),
    "event x >= W": ("out_of_image", read_events, lambda: _good_events(x=(3, 640))),
    "event times since the packet start": ("bad_event_time", read_events,
                                           lambda: _good_events(t=(0.0, 0.01))),
    "event y >= H": ("out_of_image", read_events, lambda: _good_events(y=(480, 0))),
    "event x < 0": ("out_of_image", read_events, lambda: raw_cloud(structured(
        {"x": np.array([-1], np.int16), "y": np.array([0], np.int16),
         "t": np.array([0.1]), "p": np.array([1], np.uint8)}, {"x": 0, "y": 2, "t": 4, "p": 12},
        13))),
    "unset stamp": ("bad_stamp", read_stamp, lambda: _with(_good_image(), header=stamp_ns(0.0))),
    "stamp 5 s ahead": ("bad_stamp", lambda m: read_stamp(m, now=UNIX_T - 5.0), _good_image),
    "K zero": ("singular_K", conv.camera_info,
               lambda: SimpleNamespace(height=480, width=640, k=[0.0] * 9)),
    "K NaN": ("singular_K", conv.camera_info,
              lambda: SimpleNamespace(height=480, width=640, k=[math.nan] + K_GOOD[1:])),
    "K negative focal": ("singular_K", conv.camera_info,
                         lambda: SimpleNamespace(height=480, width=640,
                                                 k=[-500.0] + K_GOOD[1:])),
    "K of 4": ("singular_K", conv.camera_info,
               lambda: SimpleNamespace(height=480, width=640, k=[1.0, 0.0, 0.0, 1.0])),
    "camera of size 0": ("bad_size", conv.camera_info,
                         lambda: SimpleNamespace(height=0, width=640, k=K_GOOD)),
    "unknown distortion model": ("bad_distortion", conv.camera_info, lambda: SimpleNamespace(
        height=480, width=640, k=K_GOOD, distortion_model="fov", d=[0.9])),
    "plumb_bob of 3": ("bad_distortion", conv.camera_info, lambda: SimpleNamespace(
        height=480, width=640, k=K_GOOD, distortion_model="plumb_bob", d=[0.1, 0.0, 0.0])),
    "D NaN": ("bad_distortion", conv.camera_info, lambda: SimpleNamespace(
        height=480, width=640, k=K_GOOD, distortion_model="plumb_bob",
        d=[math.nan, 0.0, 0.0, 0.0, 0.0])),
    "P zero (rectified)": ("singular_K", lambda m: conv.camera_info(m, rectified=True),
                           lambda: SimpleNamespace(height=480, width=640, k=K_GOOD, p=[0.0] * 12)),
    "ROI outside": ("bad_roi", conv.camera_info, lambda: SimpleNamespace(
        height=480, width=640, k=K_GOOD,
        roi=SimpleNamespace(x_offset=600, y_offset=0, width=100, height=480))),
    "ROI rectified": ("bad_roi", lambda m: conv.camera_info(m, rectified=True),
                      lambda: SimpleNamespace(
        height=480, width=640, k=K_GOOD, p=K_GOOD[:3] + [0.0] + K_GOOD[3:6] + [0.0] + [0, 0, 1, 0],
        roi=SimpleNamespace(x_offset=10, y_offset=0, width=100, height=480))),
    "compressed: jpeg cut in half": ("bad_compressed", read_compressed, lambda: _with(
        _good_jpeg(), data=_good_jpeg().data[:len(_good_jpeg().data) // 2])),
    "compressed: png cut short": ("bad_compressed", read_compressed, lambda: compressed(
        encoded(smooth_rgb(), ".png")[:-20], "rgb8; png compressed bgr8")),
    "compressed: jpeg header cut": ("bad_compressed", read_compressed, lambda: _with(
        _good_jpeg(), data=_good_jpeg().data[:40])),
    "compressed: garbage": ("bad_compressed", read_compressed, lambda: _with(
        _good_jpeg(), data=np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8))),
    "compressed: png said, jpeg given": ("bad_compressed", read_compressed, lambda: _with(
        _good_jpeg(), format="rgb8; png compressed bgr8")),
    "compressed: empty": ("data_length", read_compressed, lambda: _with(
        _good_jpeg(), data=np.zeros(0, np.uint8))),
    "compressed: tiff": ("unknown_encoding", read_compressed, lambda: compressed(
        encoded(smooth_rgb(), ".tiff"), "rgb8; tiff compressed bgr8")),
    "compressed: h264": ("unknown_encoding", read_compressed, lambda: _with(
        _good_jpeg(), format="h264")),
    "compressed: depth": ("unknown_encoding", read_compressed, lambda: _with(
        _good_jpeg(), format="16UC1; compressedDepth png")),
    "compressed: bayer": ("unknown_encoding", read_compressed, lambda: _with(
        _good_jpeg(), format="bayer_rggb8; jpeg compressed mono8")),
    "compressed: 16-bit colour png": ("unknown_encoding", read_compressed, lambda: compressed(
        encoded(np.zeros((4, 6, 3), np.uint16), ".png"), "png")),
    "compressed: absurd size": ("bad_size", read_compressed,
                                lambda: _jpeg_of_size(20_000, 20_000)),
    "compressed: zero height": ("bad_size", read_compressed, lambda: _jpeg_of_size(0, 128)),
    # event packets: every reason of theirs in test_event_packets.py; here the one only they have
    "event packet: a word of no known kind": (
        "bad_event_data", lambda m: EventDecoder().decode(m),
        lambda: SimpleNamespace(encoding="evt3", width=640, height=480, time_base=0,
                                is_bigendian=False, events=b"\x01\x90")),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejections(case):
    reason, parse, make = REJECTIONS[case]
    message = make()
    with pytest.raises(InvalidMessage) as err:
        parse(message)
    assert err.value.reason == reason, str(err.value)
    assert err.value.detail


def test_every_reason_has_a_rejection_test_and_good_messages_pass():
    assert {reason for reason, _, _ in REJECTIONS.values()} == set(conv.REASONS)
    conv.image_to_array(_good_image())
    conv.lidar_points(_good_cloud())
    read_events(_good_events())
    read_stamp(_good_image(), now=UNIX_T)
    conv.camera_info(SimpleNamespace(height=480, width=640, k=K_GOOD))


# ----------------------------------------------------------------- real data


def test_kitti_velodyne_points_round_trip(classes, real_data_dir):
    points = np.fromfile(real_data_dir / "kitti_000008" / "000008.bin", np.float32)
    points = points.reshape(-1, 4)
    assert len(points) == 17_238
    cloud = conv.points_to_cloud({n: points[:, i] for i, n in enumerate(XYZI)}, UNIX_T,
                                 "velodyne", cls=classes.PointCloud2)
    back, removed = conv.lidar_points(cloud)
    assert removed == 0
    np.testing.assert_array_equal(back, points)


def test_nyu_depth_png_round_trips_as_16uc1(classes, real_data_dir):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    with image_module.open(real_data_dir / "nyu_pseudo" / "bookstore_0001d_00001.png") as png:
        depth_mm = np.array(png)
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (120, 160) and depth_mm.max() > 0
    image = conv.array_to_image(depth_mm, "16UC1", UNIX_T, "depth", cls=classes.Image)
    back, encoding = conv.image_to_array(image, conv.DEPTH_ENCODINGS)
    assert encoding == "16UC1"
    np.testing.assert_array_equal(back, depth_mm)


# ----------------------------------------------------------------- no ROS needed


def test_module_imports_and_parses_without_ros():
    script = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces'):\n"
        "    sys.modules[name] = None  # importing them now fails\n"
        "from types import SimpleNamespace as NS\n"
        "import numpy as np\n"
        "from anyseg_ros import conversions as conv\n"
        "m = NS(height=2, width=3, encoding='mono8', is_bigendian=0, step=3,\n"
        "       data=np.arange(6, dtype=np.uint8))\n"
        "assert conv.image_to_array(m)[0].tolist() == [[0, 1, 2], [3, 4, 5]]\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------- payloads (inputs.py)


def test_depth_and_event_images_of_another_aspect_or_non_finite_are_rejected():
    """A depth or event image must be registered to the camera: its size or another
    resolution of the same view. Another aspect would be stretched out of alignment; an
    event frame with NaN or inf would reach the network."""
    from anyseg_ros.inputs import depth_payload, event_image_payload
    from anyseg_ros.payloads import Geometry

    geometry = Geometry(image_hw=(480, 640))
    depth = raw_image(np.full((480, 848), 1000, np.uint16), "16UC1")
    with pytest.raises(InvalidMessage, match="480 x 848 pixels and the camera 480 x 640") as err:
        depth_payload(depth, geometry)
    assert err.value.reason == "bad_size"
    half = raw_image(np.full((240, 320), 1000, np.uint16), "16UC1")
    assert depth_payload(half, geometry).array.shape == (240, 320)
    assert depth_payload(depth, Geometry()).array.shape == (480, 848)  # size not known yet
    frame = np.zeros((240, 320, 3), np.float32)
    assert event_image_payload(raw_image(frame, "32FC3"), geometry).array.shape == (240, 320, 3)
    frame[5, 7, 0], frame[9, 9, 2] = np.nan, np.inf
    with pytest.raises(InvalidMessage, match="2 NaN or inf") as err:
        event_image_payload(raw_image(frame, "32FC3"), geometry)
    assert err.value.reason == "non_finite"
    with pytest.raises(InvalidMessage, match="another aspect ratio") as err:
        event_image_payload(raw_image(np.zeros((260, 400, 3), np.float32), "32FC3"), geometry)
    assert err.value.reason == "bad_size"


# ----------------------------------------------------------------- compressed images


def test_png_round_trip_is_exact(typestore):
    """array_to_compressed -> CDR (rosbags) -> compressed_to_array gives the pixels back;
    a PNG written by OpenCV from the BGR array reads the same."""
    rgb = random_pixels("rgb8", (37, 53))
    message = conv.array_to_compressed(rgb, "rgb8", UNIX_T, "cam", codec="png",
                                       cls=typestore.types["sensor_msgs/msg/CompressedImage"])
    assert message.format == "rgb8; png compressed bgr8"
    kind = message.__msgtype__
    message = typestore.deserialize_cdr(typestore.serialize_cdr(message, kind), kind)
    assert (message.header.stamp.sec, message.header.frame_id) == (1_700_000_000, "cam")
    image, encoding = conv.compressed_to_array(message)
    assert encoding == "rgb8" and image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, rgb)
    image, _ = conv.compressed_to_array(compressed(encoded(rgb[:, :, ::-1], ".png"), "png"))
    np.testing.assert_array_equal(image, rgb)
    # Grey: mono8, and mono16 (PNG holds 16 bits), as image_to_array gives them.
    for encoding in ("mono8", "mono16"):
        grey = random_pixels(encoding, (9, 11))
        message = conv.array_to_compressed(grey, encoding, UNIX_T, "cam", codec="png",
                                           cls=SimpleNamespace)
        assert message.format == f"{encoding}; png compressed "  # as the plugin writes it
        image, got = conv.compressed_to_array(message)
        assert got == encoding and image.dtype == grey.dtype
        np.testing.assert_array_equal(image, grey)


def test_jpeg_of_a_smooth_image_is_close():
    rgb = smooth_rgb()
    message = conv.array_to_compressed(rgb, "rgb8", UNIX_T, "cam", quality=90,
                                       cls=SimpleNamespace)
    assert message.format == "rgb8; jpeg compressed bgr8"
    assert bytes(message.data[:3]) == b"\xff\xd8\xff" and len(message.data) < rgb.size / 10
    image, encoding = conv.compressed_to_array(message)
    assert encoding == "rgb8" and image.shape == rgb.shape
    error = np.abs(image.astype(np.int16) - rgb)
    assert error.mean() < 1.5 and error.max() <= 12, (error.mean(), error.max())
    # The camera's network input differs by about a JPEG step, not more.
    from anyseg_core.sensors import camera_to_tensor
    difference = camera_to_tensor(image, encoding) - camera_to_tensor(rgb, "rgb8")
    assert float(difference.abs().mean()) < 1.5 / 255


def test_pure_red_decodes_as_red_whatever_the_format_says():
    """Channel order: OpenCV encodes and decodes BGR; the format says what the encoder was
    given (image_transport's subscriber: BGR when it says "compressed bgr", else RGB for a
    colour original; bare codecs are OpenCV's BGR)."""
    red_bgr = np.zeros((16, 24, 3), np.uint8)
    red_bgr[:, :, 2] = 255
    for fmt in ("rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8",
                "bgra8; jpeg compressed bgr8", "8UC3; jpeg compressed bgr8", "jpeg", "JPEG",
                "jpg", "", "  rgb8 ;  jpeg compressed bgr8 "):
        image, encoding = conv.compressed_to_array(compressed(encoded(red_bgr), fmt))
        assert encoding == "rgb8", fmt
        assert (image[:, :, 0] > 250).all() and (image[:, :, 1:] < 5).all(), (fmt, image[0, 0])
    for fmt in ("rgb8; png compressed bgr8", "png", ""):
        image, _ = conv.compressed_to_array(compressed(encoded(red_bgr, ".png"), fmt))
        assert image[0, 0].tolist() == [255, 0, 0], fmt
    # An encoder given RGB bytes (a publisher that skipped the conversion) says so.
    red_rgb = red_bgr[:, :, ::-1]
    for ext, codec in ((".jpg", "jpeg"), (".png", "png")):
        image, _ = conv.compressed_to_array(compressed(encoded(red_rgb, ext),
                                                       f"rgb8; {codec} compressed rgb8"))
        assert (image[:, :, 0] > 250).all() and (image[:, :, 1:] < 5).all(), codec
    # PNG with alpha (not what the plugin writes; some tools do): alpha dropped.
    bgra = np.dstack([red_bgr, np.full((16, 24), 77, np.uint8)])
    image, encoding = conv.compressed_to_array(compressed(encoded(bgra, ".png"), "png"))
    assert encoding == "rgb8" and image.shape == (16, 24, 3)
    assert image[0, 0].tolist() == [255, 0, 0]
    # Trailing zero bytes after JPEG's end marker (some MJPEG cameras pad their buffers).
    padded = compressed(encoded(red_bgr) + bytes(100), "jpeg")
    assert conv.compressed_to_array(padded)[0].shape == (16, 24, 3)


def test_mono_jpeg_is_read_as_mono8(real_data_dir):
    """A grey JPEG (one component) reads as H x W mono8, as a raw mono8 image does; the
    KITTI camera image in grey, against Pillow's decoding of the same bytes."""
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    bgr = cv2.imread(str(real_data_dir / "kitti_000008" / "000008.png"), cv2.IMREAD_COLOR)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    payload = encoded(grey, quality=90)
    assert conv.compressed_header(payload)[:4] == ("jpeg", 375, 1242, 1)
    import io
    with image_module.open(io.BytesIO(payload)) as pil:
        assert pil.mode == "L"
        expected = np.array(pil)
    for fmt in ("mono8; jpeg compressed mono8", "8UC1; jpeg compressed mono8", "jpeg",
                "rgb8; jpeg compressed bgr8"):  # a colour original sent grey: still mono8
        image, encoding = conv.compressed_to_array(compressed(payload, fmt))
        assert encoding == "mono8" and image.shape == (375, 1242) and image.dtype == np.uint8
        assert np.abs(image.astype(np.int16) - expected).max() <= 1, fmt
    raw = conv.image_to_array(raw_image(image, "mono8"), conv.CAMERA_ENCODINGS)
    assert raw[1] == "mono8" and raw[0].shape == image.shape
    # Built by array_to_compressed: the plugin's format for mono.
    message = conv.array_to_compressed(grey, "mono8", UNIX_T, "cam", cls=SimpleNamespace)
    assert message.format == "mono8; jpeg compressed mono8"
    assert conv.compressed_to_array(message)[1] == "mono8"


def test_a_real_camera_jpeg_reads_as_pillow_reads_it(real_data_dir):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    path = real_data_dir / "nyu_pseudo" / "bookstore_0001d_00001.jpg"
    with image_module.open(path) as pil:
        expected = np.array(pil.convert("RGB"))
    image, encoding = conv.compressed_to_array(compressed(path.read_bytes(), "jpeg"))
    assert encoding == "rgb8" and image.shape == (120, 160, 3)
    assert np.abs(image.astype(np.int16) - expected).max() <= 1


def test_encodings_narrow_what_is_accepted():
    grey = compressed(encoded(np.full((8, 8), 99, np.uint8)), "mono8; jpeg compressed mono8")
    with pytest.raises(InvalidMessage) as err:
        conv.compressed_to_array(grey, encodings=("rgb8", "bgr8"))
    assert err.value.reason == "unknown_encoding" and "mono8" in err.value.detail
    assert conv.compressed_to_array(_good_jpeg(), encodings=("rgb8",))[1] == "rgb8"


def test_oversized_images_are_refused_before_decoding(monkeypatch):
    """The size comes from the header: a 20000 x 20000 JPEG (400 Mpixel, more than
    MAX_PIXELS) is refused without calling OpenCV."""
    def no_decoding():
        raise AssertionError("decoded")
    monkeypatch.setattr(conv, "require_opencv", no_decoding)
    for message in (_jpeg_of_size(20_000, 20_000), _with(_good_jpeg(), data=b""),
                    _with(_good_jpeg(), data=_good_jpeg().data[:-100])):
        with pytest.raises(InvalidMessage):
            conv.compressed_to_array(message)
    header = conv.compressed_header(_jpeg_of_size(20_000, 20_000).data)
    assert (header.height, header.width) == (20_000, 20_000)
    png = encoded(np.zeros((5, 7), np.uint16), ".png")
    assert conv.compressed_header(png) == ("png", 5, 7, 1, 16, 16)


def test_array_to_compressed_checks_its_arguments():
    rgb = random_pixels("rgb8")
    for args, kwargs in (((rgb, "rgb8"), {"codec": "tiff"}),
                         ((rgb, "rgba8"), {}),
                         ((random_pixels("mono16"), "mono16"), {"codec": "jpeg"}),
                         ((rgb[:, :, 0], "rgb8"), {}),
                         ((rgb.astype(np.uint16), "rgb8"), {}),
                         ((np.zeros((0, 4, 3), np.uint8), "rgb8"), {}),
                         ((rgb, "rgb8"), {"quality": 101})):
        with pytest.raises(ValueError):
            conv.array_to_compressed(*args, UNIX_T, "cam", cls=SimpleNamespace, **kwargs)
    # bgr8 in, the same picture out (as rgb8), from a non-contiguous array too.
    bgr = rgb[:, ::-1, ::-1]
    message = conv.array_to_compressed(bgr, "bgr8", UNIX_T, "cam", codec="png",
                                       cls=SimpleNamespace)
    assert message.format == "bgr8; png compressed bgr8"
    np.testing.assert_array_equal(conv.compressed_to_array(message)[0], rgb[:, ::-1])


def test_compressed_messages_serialise_with_rclpy(msg):
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy is not installed")
    rgb = smooth_rgb((24, 40))
    sent = conv.array_to_compressed(rgb, "rgb8", UNIX_T, "cam", codec="png")
    assert isinstance(sent, msg.CompressedImage)
    received = serialization.deserialize_message(serialization.serialize_message(sent),
                                                 msg.CompressedImage)
    assert received.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(conv.compressed_to_array(received)[0], rgb)


def test_module_imports_without_opencv_and_says_what_is_missing():
    script = (
        "import sys\n"
        "sys.modules['cv2'] = None  # importing it now fails\n"
        "from types import SimpleNamespace as NS\n"
        "import numpy as np\n"
        "from anyseg_ros import conversions as conv\n"
        "m = NS(height=1, width=2, encoding='mono8', is_bigendian=0, step=2,\n"
        "       data=np.arange(2, dtype=np.uint8))\n"
        "assert conv.image_to_array(m)[0].tolist() == [[0, 1]]\n"
        "try:\n"
        "    conv.compressed_to_array(NS(format='jpeg', data=np.frombuffer(\n"
        "        bytes.fromhex('ffd8ffc0000b080002000301011100ffd9'), np.uint8)))\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "needs OpenCV" in done.stdout and "anyseg_ros[cv]" in done.stdout, done.stdout
