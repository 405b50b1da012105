"""ROS 2 bags with the pure-Python ``rosbags`` library: writing, reading, and the topics the
project's bags hold.

Bags are written as rosbag2 version 9 (mcap storage by default, sqlite3 on request), which
``ros2 bag play`` replays on a ROS machine and :mod:`anyseg_ros.tools.play` replays here. Messages
are built with :mod:`anyseg_ros.conversions` using the rosbags typestore classes, and read
back as rosbags objects that the same conversions parse.

Topic layout (absolute names, as ``ros2 bag record`` stores them; the node's relative
topics resolve to them in the root namespace):

- ``/camera/image`` sensor_msgs/Image rgb8, stamped at mid-exposure
- ``/camera/image/compressed`` sensor_msgs/CompressedImage (jpeg or png, as
  image_transport's compressed plugin writes them) where a bag holds the camera compressed;
  :func:`compressed_image_msg` builds them
- ``/camera/camera_info`` sensor_msgs/CameraInfo
- ``/lidar/points`` sensor_msgs/PointCloud2 x, y, z, intensity (float32), t (float64 s)
- ``/events`` event_camera_msgs/EventPacket evt3, as metavision_driver publishes a Prophesee
  camera's (:class:`EventPacketWriter`); or, written with ``events_format="pointcloud"``,
  sensor_msgs/PointCloud2 x, y (uint16), t (float64 s), p (uint8), this project's layout
- ``/depth/image`` sensor_msgs/Image 32FC1 metres (when the source has depth)
- ``/tf_static`` tf2_msgs/TFMessage: the LiDAR and event camera in the camera frame
- ``/gt/labels`` sensor_msgs/Image mono8 train ids (255 = ignore), for scoring
"""
from __future__ import annotations

import contextlib
import functools
import sqlite3
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import yaml

from .. import conversions as conv

STORAGES = ("mcap", "sqlite3")
#: rosbag2 metadata versions written: 9 (Jazzy on) and 8 (what Humble's rosbag2 reads).
BAG_VERSIONS = (9, 8)
TOPICS = {
    "camera": "/camera/image",
    "camera_compressed": "/camera/image/compressed",
    "camera_info": "/camera/camera_info",
    "lidar": "/lidar/points",
    "events": "/events",
    "depth": "/depth/image",
    "tf_static": "/tf_static",
    "gt": "/gt/labels",
}
MSGTYPES = {
    TOPICS["camera"]: "sensor_msgs/msg/Image",
    TOPICS["camera_compressed"]: "sensor_msgs/msg/CompressedImage",
    TOPICS["camera_info"]: "sensor_msgs/msg/CameraInfo",
    TOPICS["lidar"]: "sensor_msgs/msg/PointCloud2",
    TOPICS["events"]: "event_camera_msgs/msg/EventPacket",
    TOPICS["depth"]: "sensor_msgs/msg/Image",
    TOPICS["tf_static"]: "tf2_msgs/msg/TFMessage",
    TOPICS["gt"]: "sensor_msgs/msg/Image",
}
# Which sensor a topic belongs to (a silenced camera also stops its CameraInfo).
TOPIC_SENSOR = {TOPICS["camera"]: "camera", TOPICS["camera_compressed"]: "camera",
                TOPICS["camera_info"]: "camera",
                TOPICS["lidar"]: "lidar", TOPICS["events"]: "events",
                TOPICS["depth"]: "depth"}
FRAME_IDS = {"camera": "camera_optical", "lidar": "lidar", "events": "event_camera_optical"}


#: ``event_camera_msgs/msg/EventPacket`` (what event-camera drivers publish), which rosbags
#: does not ship: the released definition (its type hash is EVENT_PACKET_HASH; tested).
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
EVENT_PACKET_DEFINITION = """std_msgs/Header header
uint32 height
uint32 width
uint64 seq
uint64 time_base
string encoding
bool is_bigendian
uint8[] events
"""
EVENT_PACKET_HASH = "RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa"


@functools.lru_cache(maxsize=1)
def typestore():
    """The rosbags typestore used for every bag (Jazzy definitions: the sensor_msgs,
    std_msgs, tf2_msgs and rosgraph_msgs types used here are identical in Kilted), with
    event_camera_msgs/EventPacket added."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(EVENT_PACKET_DEFINITION, EVENT_PACKET))
    return store


def msg_class(msgtype: str):
    """The rosbags class of ``msgtype`` (e.g. ``sensor_msgs/msg/Image``)."""
    return typestore().types[msgtype]


def _qos(reliable: bool, transient_local: bool = False):
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    never = QosTime(0, 0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1 if transient_local else 5,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=(QosDurability.TRANSIENT_LOCAL if transient_local
                           else QosDurability.VOLATILE),
               deadline=never, lifespan=never, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=never, avoid_ros_namespace_conventions=False)


class BagError(ValueError):
    """A bag that cannot be read: truncated (a recording cut off), corrupt, or of a format
    rosbags does not read. The message names the bag."""


def _read_errors() -> tuple:
    """What rosbags (and the storage libraries under it) raise for a damaged bag: a truncated
    mcap ("File end magic is invalid"), a truncated sqlite3 file ("database disk image is
    malformed"), overwritten bytes (a record length read as garbage)."""
    from rosbags.rosbag2 import ReaderError

    errors: tuple = (ReaderError, sqlite3.DatabaseError, struct.error, OverflowError, EOFError)
    try:  # rosbags reads sqlite3 files through apsw: a damaged page raises apsw.CorruptError
        import apsw
    except ImportError:
        return errors
    return (*errors, apsw.Error)


def _check_bag_dir(path: Path) -> None:
    """FileNotFoundError with what to do when ``path`` is not a readable bag directory."""
    if (path / "metadata.yaml").is_file():
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    if path.is_file():
        hint = (" (a bag is the directory that holds it: pass "
                f"{path.parent})" if (path.parent / "metadata.yaml").is_file() else "")
        raise FileNotFoundError(f"{path} is a file, not a rosbag2 bag directory{hint}")
    storage = sorted(p.name for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    if storage:
        raise FileNotFoundError(
            f"{path} has no metadata.yaml but holds {', '.join(storage)}: a recording that "
            f"was stopped before it finished? `ros2 bag reindex {path}` (on a ROS machine) "
            "writes the metadata again")
    raise FileNotFoundError(f"{path} is not a rosbag2 bag (no metadata.yaml in it)")


@contextlib.contextmanager
def _storage_identified(path: Path):
    """``path``, or, when its metadata.yaml names no storage (``storage_identifier: ""``, as
    some recorders write it, which rosbags refuses), a temporary copy of the bag folder made
    of links to its files and the metadata with the storage its files' suffix says."""
    info = yaml.safe_load((path / "metadata.yaml").read_text()) or {}
    info = info.get("rosbag2_bagfile_information", {})
    if info.get("storage_identifier") or not info:
        yield path
        return
    files = info.get("relative_file_paths") or []
    storages = {{".mcap": "mcap", ".db3": "sqlite3"}.get(Path(f).suffix) for f in files}
    if len(storages) != 1 or None in storages:
        raise BagError(f"{path}: metadata.yaml names no storage and its files {files} do not "
                       "say it (.mcap or .db3)")
    with tempfile.TemporaryDirectory(prefix="anyseg-bag-") as tmp:
        for f in files:
            (Path(tmp) / f).symlink_to((path / f).resolve())
        text = (path / "metadata.yaml").read_text()
        meta = yaml.safe_load(text)
        meta["rosbag2_bagfile_information"]["storage_identifier"] = storages.pop()
        (Path(tmp) / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        yield Path(tmp)


@contextlib.contextmanager
def _reader(path: str | Path):
    """An open rosbags Reader; a bag that cannot be read raises :class:`BagError` naming it
    (also for errors while its messages are read inside the ``with``)."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    _check_bag_dir(path)
    try:
        with _storage_identified(path) as readable, Reader(readable) as reader:
            yield reader
    except _read_errors() as e:
        raise BagError(f"{path}: cannot read the bag ({type(e).__name__}: {e}); is it complete? "
                       "a recording cut off or a partly copied bag is unreadable") from e


def offered_qos(topic: str):
    """The QoS a driver offers on ``topic`` (REP-2003): sensors reliable (SystemDefaultsQoS;
    consumers subscribe best effort, which matches), /tf_static reliable + transient local."""
    return _qos(True, transient_local=topic.endswith("tf_static"))


class BagWriter:
    """Write messages into a new bag directory ``path`` (must not exist).

        with BagWriter(out, storage="mcap") as bag:
            bag.write("/camera/image", msg, t_ns)
    """

    def __init__(self, path: str | Path, storage: str = "mcap", version: int = 9) -> None:
        """``version``: rosbag2's metadata version, 9 (Jazzy and later) or 8 (also read by
        Humble's rosbag2, which cannot parse 9)."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if version not in BAG_VERSIONS:
            raise ValueError(f"bag version must be one of {BAG_VERSIONS}, got {version!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; rosbag2 writes a new directory "
                                  "(remove it or choose another name)")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, time_ns: int, msgtype: Optional[str] = None) -> None:
        """Serialise ``msg`` (a rosbags object) at receive time ``time_ns``. Its type is
        ``msgtype`` when given, else the message's own (``__msgtype__``), else the type the
        project's bags have on ``topic``."""
        msgtype = msgtype or getattr(msg, "__msgtype__", None) or MSGTYPES.get(topic)
        if msgtype is None:
            raise ValueError(f"{topic}: the message's type is unknown; pass msgtype")
        self.write_raw(topic, typestore().serialize_cdr(msg, msgtype), time_ns, msgtype)

    def write_raw(self, topic: str, data: bytes | memoryview, time_ns: int,
                  msgtype: str) -> None:
        """Write already serialised CDR bytes."""
        conn = self._connections.get(topic)
        if conn is not None and conn.msgtype != msgtype:
            raise ValueError(f"{topic} is {conn.msgtype} in {self.path}; cannot write a "
                             f"{msgtype} on it")
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                               offered_qos_profiles=[offered_qos(topic)])
            self._connections[topic] = conn
        self._writer.write(conn, int(time_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


@dataclass
class BagMessage:
    """One message of a bag: topic, type, receive time (ns) and the CDR bytes."""

    topic: str
    msgtype: str
    time_ns: int
    data: bytes

    def decode(self) -> Any:
        return typestore().deserialize_cdr(self.data, self.msgtype)


def read_bag(path: str | Path, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
    """The messages of a bag in receive-time order (optionally only ``topics``)."""
    wanted = set(topics) if topics is not None else None
    with _reader(path) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:  # rosbags reads every connection when given none
            return
        for conn, time_ns, data in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(time_ns), bytes(data))


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (msgtype, message count)."""
    with _reader(path) as reader:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}


def bag_offered_qos(path: str | Path) -> dict[str, list]:
    """topic -> the QoS profiles its publishers offered when it was recorded (rosbags ``Qos``
    objects; empty when the bag has none, as bags from before rosbag2 version 4)."""
    out: dict[str, list] = {}
    with _reader(path) as reader:
        for c in reader.connections:
            out.setdefault(c.topic, []).extend(
                getattr(c.ext, "offered_qos_profiles", None) or [])
    return out


def bag_start_ns(path: str | Path) -> int:
    """Receive time (ns) of the bag's first message, on any topic: the origin of the
    seconds of ``--faults`` / ``--drop``."""
    with _reader(path) as reader:
        return int(reader.start_time)


# -- building the project's messages ------------------------------------------------------
def image_msg(array: np.ndarray, encoding: str, stamp, frame_id: str):
    return conv.array_to_image(array, encoding, stamp, frame_id,
                               cls=msg_class("sensor_msgs/msg/Image"))


def compressed_image_msg(array: np.ndarray, encoding: str, stamp, frame_id: str,
                         codec: str = "jpeg", quality: int = 95):
    """A sensor_msgs/CompressedImage (rosbags class) of ``array``: see
    :func:`anyseg_ros.conversions.array_to_compressed` (needs OpenCV)."""
    return conv.array_to_compressed(array, encoding, stamp, frame_id, codec=codec,
                                    quality=quality,
                                    cls=msg_class("sensor_msgs/msg/CompressedImage"))


def camera_info_msg(K, size_hw, stamp, frame_id: str):
    return conv.camera_info_msg(K, size_hw, stamp, frame_id,
                                cls=msg_class("sensor_msgs/msg/CameraInfo"))


def lidar_msg(points: np.ndarray, stamp, frame_id: str = FRAME_IDS["lidar"],
              point_times: Optional[np.ndarray] = None):
    """x, y, z, intensity (float32) and, when given, per-point absolute times t (float64)."""
    cols = {name: np.ascontiguousarray(points[:, i], dtype=np.float32)
            for i, name in enumerate(("x", "y", "z", "intensity"))}
    if point_times is not None:
        cols["t"] = np.asarray(point_times, dtype=np.float64)
    return conv.points_to_cloud(cols, stamp, frame_id,
                                cls=msg_class("sensor_msgs/msg/PointCloud2"))


#: How a bag holds its events: EventPackets (evt3, the default) or our PointCloud2 layout.
EVENT_FORMATS = ("packet", "pointcloud")
#: The msgtype of /events for each EVENT_FORMATS entry.
EVENTS_MSGTYPE = {"packet": "event_camera_msgs/msg/EventPacket",
                  "pointcloud": "sensor_msgs/msg/PointCloud2"}


class EventPacketWriter:
    """One event camera's stream as metavision_driver publishes a Prophesee's: EventPacket,
    encoding evt3, ``time_base`` 0, times on the camera's own microsecond clock (which
    started ``uptime`` seconds before the first event), ``header.stamp`` the ROS time of the
    packet's first event (when its first buffer would arrive, with no delay), ``seq``
    counting packets. Decoded statefully as a camera's stream is (the microsecond counter
    wraps every 16.77 s). ``size_hw``: the sensor's size."""

    def __init__(self, size_hw: Sequence[int], frame_id: str = FRAME_IDS["events"],
                 uptime: float = 7.0) -> None:
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.frame_id = frame_id
        self.uptime = float(uptime)
        self.seq = 0
        self._origin_ns: Optional[int] = None  # ROS time of the camera clock's zero

    def msg(self, x, y, t, p, stamp):
        """The packet of events ``x, y, t`` (absolute seconds), ``p``; ``stamp``: the header
        stamp of a packet without events (else the first event's time, to the ns)."""
        from ..conversions.event_packets import encode_evt3

        t = np.asarray(t, np.float64)
        order = np.argsort(t, kind="stable")
        t = t[order]
        if self._origin_ns is None:
            first = float(t[0]) if t.size else conv.stamp_to_sec(
                SimpleNamespace(sec=stamp[0], nanosec=stamp[1])) if isinstance(stamp, tuple) \
                else float(stamp)
            self._origin_ns = round((first - self.uptime) * 1e9)
        t_us = np.round((t - self._origin_ns * 1e-9) * 1e6).astype(np.int64)
        data = encode_evt3(t_us, np.asarray(x)[order], np.asarray(y)[order],
                           np.asarray(p)[order])
        if t.size:
            stamp = divmod(self._origin_ns + int(t_us[0]) * 1000, 1_000_000_000)
        msg = conv.event_packet_msg(data, "evt3", self.size_hw, stamp, self.frame_id,
                                    seq=self.seq, cls=msg_class(EVENT_PACKET))
        self.seq += 1
        return msg


def events_msg(x, y, t, p, stamp, frame_id: str = FRAME_IDS["events"]):
    cols = {"x": np.asarray(x, np.uint16), "y": np.asarray(y, np.uint16),
            "t": np.asarray(t, np.float64), "p": np.asarray(p, np.uint8)}
    return conv.points_to_cloud(cols, stamp, frame_id,
                                cls=msg_class("sensor_msgs/msg/PointCloud2"))


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (Shepperd's method, numerically stable)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4)
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        v = [0.0, 0.0, 0.0]
        v[i] = s / 4
        v[j] = (R[j, i] + R[i, j]) / s
        v[k] = (R[k, i] + R[i, k]) / s
        q = (*v, (R[k, j] - R[j, k]) / s)
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return tuple(float(v) for v in (q if q[3] >= 0 else -q))


def tf_static_msg(transforms: Mapping[str, np.ndarray], stamp, parent: str):
    """tf2_msgs/TFMessage: each child frame -> 4x4 ``T_parent_child`` (maps child points into
    the parent frame, as T_cam_lidar does)."""
    ts = typestore()
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    Vector3 = ts.types["geometry_msgs/msg/Vector3"]
    Quaternion = ts.types["geometry_msgs/msg/Quaternion"]
    Transform = ts.types["geometry_msgs/msg/Transform"]
    TransformStamped = ts.types["geometry_msgs/msg/TransformStamped"]
    sec, nanosec = stamp if isinstance(stamp, tuple) else conv.sec_to_stamp(stamp)
    out = []
    for child, T in transforms.items():
        T = np.asarray(T, dtype=np.float64)
        x, y, z, w = rotation_to_quaternion(T[:3, :3])
        out.append(TransformStamped(
            header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=parent),
            child_frame_id=child,
            transform=Transform(translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]),
                                                    z=float(T[2, 3])),
                                rotation=Quaternion(x=x, y=y, z=z, w=w))))
    return ts.types["tf2_msgs/msg/TFMessage"](transforms=out)


def node_params(calibration: Mapping[str, Any], extrinsics: bool = False,
                events_format: Optional[str] = "packet") -> dict:
    """The node's calibration parameters for a bag (a params file tree, ``/**`` section):
    what TF cannot carry, the event camera's intrinsics and size, and how the bag holds its
    events (``events.type``; None: the bag has none). The extrinsics travel in the bag's
    ``/tf_static``, which the node and process_bag read; ``extrinsics`` also writes them as
    parameters (``lidar.T_cam_lidar``, ``events.T_cam_events``), which then override TF."""
    def flat(m):
        return [float(v) for v in np.asarray(m, dtype=np.float64).reshape(-1)]

    params: dict[str, Any] = {}
    if extrinsics:
        params["lidar"] = {"T_cam_lidar": flat(calibration["T_cam_lidar"])}
    events: dict[str, Any] = {}
    if events_format is not None:
        if events_format not in EVENT_FORMATS:
            raise ValueError(f"events_format must be one of {EVENT_FORMATS}, got "
                             f"{events_format!r}")
        events["type"] = events_format
    if calibration.get("events_K") is not None:
        events["K"] = flat(calibration["events_K"])
        if calibration.get("events_hw") is not None:
            events["height"], events["width"] = (int(v) for v in calibration["events_hw"])
    if extrinsics and calibration.get("T_cam_events") is not None:
        events["T_cam_events"] = flat(calibration["T_cam_events"])
    if events:
        params["events"] = events
    return {"/**": {"ros__parameters": params}}


def params_path(bag: str | Path) -> Path:
    """Where the params file of a bag lives: beside it, ``<bag>.params.yaml``."""
    bag = Path(bag)
    return bag.with_name(bag.name + ".params.yaml")


def write_params(bag: str | Path, calibration: Mapping[str, Any], comment: str,
                 events_format: Optional[str] = "packet") -> Path:
    path = params_path(bag)
    text = yaml.safe_dump(node_params(calibration, events_format=events_format),
                          sort_keys=False, default_flow_style=None)
    path.write_text(f"# {comment}\n# Pass with: --ros-args --params-file {path.name}\n{text}")
    return path


def parse_windows(text: Optional[str], what: str = "--faults") -> dict[str, list[tuple[float,
                                                                                        float]]]:
    """``"lidar:10-15,camera:20-22"`` -> {"lidar": [(10.0, 15.0)], "camera": [(20.0, 22.0)]}.
    Keys are sensor names or topics; times are seconds from the start."""
    out: dict[str, list[tuple[float, float]]] = {}
    for part in filter(None, (text or "").split(",")):
        try:
            key, span = part.rsplit(":", 1)
            start, end = (float(v) for v in span.split("-"))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not NAME:START-END (seconds)") from None
        if not end > start >= 0:
            raise ValueError(f"{what}: {part!r} needs 0 <= START < END")
        out.setdefault(key.strip(), []).append((start, end))
    return out


def in_windows(windows: Mapping[str, Sequence[tuple[float, float]]], key: str,
               t: float) -> bool:
    """START <= t < END for a window of ``key``. ``t`` is rounded to the microsecond first:
    a difference of float stamps near 1.7e9 s is off by up to ~0.2 us, which would move a
    sensor tick on a window's edge (0.3 s read as 0.29999995 s) to the wrong side."""
    t = round(t, 6)
    return any(a <= t < b for a, b in windows.get(key, ()))
