"""Replay a ROS 2 bag on its topics, with sensor faults on demand.

    python -m anyseg_ros.tools.play BAG [--rate R] [--loop] [--topics T ...] [--clock]
        [--drop TOPIC:START-END ...] [--corrupt TOPIC:FRACTION ...] [--namespace NS]

This machine's ``ros2 bag play`` (it works on a ROS machine too): messages go out at the
recorded pace (scaled by ``--rate``), as the recorded bytes, with the QoS their publishers
offered when the bag was recorded (reliable only when every recorded publisher was, transient
local only when every one was); a topic the bag has no QoS for gets what a driver would use
(REP-2003: sensors reliable, /tf_static reliable and transient local). ``--best-effort``
publishes every topic but the latched ones best effort instead; ``--depth`` sets the history
depth. At the end, play waits (``--ack-timeout``) until reliable subscribers acknowledged
the last messages. ``--clock`` also publishes
/clock for nodes with ``use_sim_time`` (at the bag's start time while ``--wait-for`` and
``--start-delay`` hold the first message). ``--namespace`` prefixes every topic but /tf and
/tf_static (tf2 listens on those absolute names). Faults:

- ``--drop lidar:10-15`` silences a sensor (or a topic) over those seconds from the bag's
  start (``camera`` also silences its CameraInfo);
- ``--corrupt events:0.2`` damages that fraction of a sensor's (or topic's) messages, in
  turn: truncated data, a wrong size, non-finite values (NaN points in clouds); a
  CompressedImage gets its payload cut in half, its header's size made 65535 x 65535, or
  garbage bytes instead of its payload (counted as ``garbage``); an EventPacket gets an odd
  number of bytes, a zero sensor width, or words of no known kind (``garbage``); only
  sensor_msgs Image, CompressedImage, PointCloud2, CameraInfo and event_camera_msgs
  EventPacket topics can be corrupted.

With ``--loop`` the bag starts again when it ends (stamps jump back, as with
``ros2 bag play --loop``). ``--wait-for TOPIC`` holds the first message until that topic
has a subscriber (then ``--start-delay``), so a freshly started consumer misses nothing.
Topics whose message package is not installed here are skipped with a warning (tf2_msgs is
not among the PyPI ROS wheels). Like the node under the launch file, the player runs with the
package's large-frames Fast DDS profile unless the environment names one
(``--fastdds-profile none|PATH`` to choose): without it, full-size frames are lost silently on
the way to a best-effort subscriber.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import conversions as conv
from . import bag as bags
from .fastdds import PROFILE_VARIABLES, profile_in_use, with_profile
from .shipped import LARGE_FRAMES_PROFILE, shipped_config

CLOCK_HZ = 40.0  # as ros2 bag play --clock
LINGER_S = 0.5  # after the last message, before the publishers go
CORRUPTIONS = ("truncated", "wrong_size", "non_finite")
# The message types corrupt() knows how to damage.
CORRUPTIBLE = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
               "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/CameraInfo", bags.EVENT_PACKET)
# What each kind is called in the counts, by message type where it differs.
CORRUPTION_LABELS = {("sensor_msgs/msg/CompressedImage", "non_finite"): "garbage",
                     (bags.EVENT_PACKET, "non_finite"): "garbage"}
# Topics that keep their name under --namespace (tf2 listens on these absolute names).
GLOBAL_TOPICS = ("/tf", "/tf_static")


def _message_class(msgtype: str):
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _expand(spec: dict, topics: Sequence[str], what: str) -> dict:
    """Keys that are sensor names become their topics; unknown keys are an error."""
    out: dict = {}
    for key, value in spec.items():
        matches = [t for t in topics if t == key or t == "/" + key.lstrip("/")
                   or bags.TOPIC_SENSOR.get(t) == key]
        if not matches:
            raise ValueError(f"{what}: {key!r} is neither a topic of the bag nor a sensor "
                             f"of it; topics: {sorted(topics)}")
        for t in matches:
            out[t] = value
    return out


def parse_corrupt(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, _, frac = item.rpartition(":")
        try:
            fraction = float(frac)
        except ValueError:
            fraction = -1.0
        if not key or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"--corrupt {item!r}: expected TOPIC:FRACTION with FRACTION in "
                             "[0, 1]")
        out[key] = fraction
    return out


def corrupt(msg, kind: str, rng: Optional[np.random.Generator] = None):
    """Damage a decoded rosbags Image / CompressedImage / PointCloud2 / CameraInfo in place;
    returns it.

    Every kind makes a message the node rejects: images and clouds get truncated data, a
    width that does not fit the data, or NaN coordinates (an image gets an extra row
    instead); a CameraInfo gets an all-zero K, a zero size, or a NaN K; a CompressedImage
    (one with a ``format``) gets the first half of its payload (no end marker:
    bad_compressed), a header that says 65535 x 65535 pixels (bad_size, refused before
    decoding), or random bytes from ``rng`` instead of its payload (bad_compressed)."""
    data = getattr(msg, "data", None)
    if hasattr(msg, "time_base"):  # EventPacket
        return _corrupt_event_packet(msg, kind)
    if hasattr(msg, "format"):  # CompressedImage
        return _corrupt_compressed(msg, kind, rng or np.random.default_rng())
    if hasattr(msg, "k"):  # CameraInfo: resized is still valid, so break K or the size
        if kind == "wrong_size":
            msg.height, msg.width = 0, 0
        else:
            msg.k = np.full(9, np.nan if kind == "non_finite" else 0.0)
    elif kind == "truncated" and data is not None and len(data):
        msg.data = np.ascontiguousarray(data[: len(data) // 2])
    elif kind == "wrong_size" and hasattr(msg, "width"):
        msg.width = int(msg.width) + 7
        if hasattr(msg, "step"):
            msg.step = int(msg.step) + 7
    elif kind == "non_finite" and hasattr(msg, "fields"):
        arr = np.array(data, dtype=np.uint8)
        order = ">" if msg.is_bigendian else "<"
        for f in msg.fields:
            if f.name in ("x", "y", "z", "t") and f.datatype in (7, 8):
                dtype = np.dtype(order + ("f4" if f.datatype == 7 else "f8"))
                n = len(arr) // msg.point_step
                view = np.ndarray((n,), dtype=dtype, buffer=arr, offset=f.offset,
                                  strides=(msg.point_step,))
                view[:] = np.nan
        msg.data = arr
        msg.is_dense = False
    else:  # an image: NaN is not an image fault; give it a size that does not add up
        msg.height = int(msg.height) + 1
    return msg


def _corrupt_event_packet(msg, kind: str):
    """An odd number of bytes (data_length), a sensor 0 pixels wide (bad_size), or words of
    kind 9, which no encoding has (bad_event_data): each refused before the decoder's state
    moves, so the stream goes on decoding."""
    events = np.array(msg.events, dtype=np.uint8)
    if kind == "truncated":
        msg.events = events[: max(1, len(events) // 2) | 1]
    elif kind == "wrong_size":
        msg.width = 0
    else:
        msg.events = np.full(max(2, len(events) & ~1), 0x90, dtype=np.uint8)
    return msg


def _corrupt_compressed(msg, kind: str, rng: np.random.Generator):
    data = np.array(msg.data, dtype=np.uint8)  # a copy
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "wrong_size":
        try:
            header = conv.compressed_header(data)
        except conv.InvalidMessage:  # not a JPEG or PNG: it is garbage already
            header = None
        if header is not None:  # JPEG: 16-bit height, width; PNG: 32-bit width, height
            size = b"\xff" * 4 if header.codec == "jpeg" else b"\0\0\xff\xff" * 2
            at = header.size_offset
            data[at:at + len(size)] = np.frombuffer(size, np.uint8)
    else:  # garbage; its first byte 0 is neither JPEG's (0xff) nor PNG's (0x89) magic
        data = rng.integers(0, 256, max(len(data), 1), dtype=np.uint8)
        data[0] = 0
    msg.data = data
    return msg


def publisher_qos(recorded: Sequence, topic: str, best_effort: bool = False,
                  depth: Optional[int] = None):
    """The rclpy QoS to replay ``topic`` with: from the profiles its publishers offered when
    it was recorded (``recorded``, rosbags ``Qos``), else the name-based
    :func:`anyseg_ros.tools.bag.offered_qos` (reliable, as drivers publish). With several
    recorded publishers the profile is one every recorded subscriber could match: reliable
    only when all offered reliable, transient local only when all offered it.
    ``best_effort`` makes a topic that is not latched best effort whatever was recorded;
    ``depth`` sets the history depth of those topics (default: the recorded one, at least
    5; a deep history lets a reliable subscriber that falls behind catch up)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    profiles = list(recorded) or [bags.offered_qos(topic)]
    reliable = all(q.reliability.name == "RELIABLE" for q in profiles)
    latched = all(q.durability.name == "TRANSIENT_LOCAL" for q in profiles)
    keep_all = all(q.history.name == "KEEP_ALL" for q in profiles)
    reliable = reliable and not (best_effort and not latched)
    # A latched topic keeps for late subscribers what its recorded publishers together kept
    # (each its own last `depth`: several /tf_static publishers); others a few for slow readers.
    depth = (sum(max(int(q.depth), 1) for q in profiles) if latched
             else depth if depth is not None
             else max(5, *(int(q.depth) for q in profiles)))
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                    else DurabilityPolicy.VOLATILE))


def published_name(topic: str, namespace: str) -> str:
    """``topic`` under ``namespace`` (``/ns/camera/image``); /tf and /tf_static keep their
    names, so that tf2 (which listens on those absolute names) still finds them."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return topic if topic in GLOBAL_TOPICS else ns + topic


class Player:
    """Publishes a bag. ``namespace`` prefixes every topic (``/camera/image`` becomes
    ``/ns/camera/image``) but /tf and /tf_static."""

    def __init__(self, node, bag: Path, topics: Optional[Sequence[str]] = None,
                 namespace: str = "", drop: Optional[dict] = None,
                 corrupt_fraction: Optional[dict] = None, clock: bool = False,
                 seed: int = 0, best_effort: bool = False,
                 depth: Optional[int] = None) -> None:
        self.node, self.bag = node, Path(bag)
        available = bags.bag_topics(self.bag)
        self.start_ns = bags.bag_start_ns(self.bag)  # --drop seconds count from here
        chosen = list(available) if not topics else [
            t if t in available else "/" + t.lstrip("/") for t in topics]
        missing = [t for t in chosen if t not in available]
        if missing:
            raise ValueError(f"topics {missing} are not in {bag}; it has {sorted(available)}")
        self.drop = _expand(bags.parse_windows(",".join(drop or ()), "--drop"), chosen,
                            "--drop") if drop else {}
        self.corrupt_fraction = _expand(parse_corrupt(corrupt_fraction or ()), chosen,
                                        "--corrupt") if corrupt_fraction else {}
        for topic in sorted(self.corrupt_fraction):
            if available[topic][0] not in CORRUPTIBLE:
                raise ValueError(
                    f"--corrupt {topic}: it is {available[topic][0]}; play can damage only "
                    f"{', '.join(CORRUPTIBLE)} messages")
        recorded_qos = bags.bag_offered_qos(self.bag)
        self.publishers = {}
        self.skipped_types: dict[str, str] = {}
        for topic in chosen:
            msgtype = available[topic][0]
            cls = _message_class(msgtype)
            if cls is None:
                self.skipped_types[topic] = msgtype
                continue
            qos = publisher_qos(recorded_qos.get(topic, ()), topic, best_effort, depth)
            self.publishers[topic] = node.create_publisher(
                cls, published_name(topic, namespace), qos)
        if not self.publishers:
            raise ValueError(f"nothing to play: the message packages of {self.skipped_types} "
                             "are not installed here")
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.rng = np.random.default_rng(seed)
        self.stats = {"published": Counter(), "dropped": Counter(), "corrupted": Counter()}
        self._turn = Counter()
        self.stop = False

    def wait_for_acks(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s in all) until every reliable subscriber has
        acknowledged what was published, so that stopping right after the last message does
        not lose it; False (with a warning) when some did not in time."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout
        pubs = dict(self.publishers)
        if self.clock_pub is not None:
            pubs["/clock"] = self.clock_pub
        late = [t for t, pub in pubs.items()
                if not pub.wait_for_all_acked(Duration(seconds=max(
                    0.0, deadline - time.monotonic())))]
        if late:
            print(f"warning: {late}: not acknowledged by every subscriber within {timeout} s",
                  file=sys.stderr)
        return not late

    def wait_for_subscribers(self, topics: Sequence[str], timeout: float) -> bool:
        """Wait until each of ``topics`` (bag names) has a subscriber, so that nothing is
        published before discovery is done; False (and a warning) after ``timeout`` s."""
        pubs = []
        for t in topics:
            name = t if t in self.publishers else "/" + t.lstrip("/")
            if name not in self.publishers:
                raise ValueError(f"--wait-for {t}: not a topic being played "
                                 f"({sorted(self.publishers)})")
            pubs.append(self.publishers[name])
        deadline = time.monotonic() + timeout
        while not self.stop and any(p.get_subscription_count() == 0 for p in pubs):
            if time.monotonic() > deadline:
                print(f"warning: no subscriber on {list(topics)} after {timeout:g} s; playing "
                      "anyway", file=sys.stderr)
                return False
            self.hold(0.05)
        return True

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` (or until stopped) before playing, publishing /clock at the bag's
        start time meanwhile (with ``clock``), so that nodes on sim time start there."""
        end = time.monotonic() + seconds
        while not self.stop:
            if self.clock_pub is not None:
                self._publish_clock(self.start_ns)
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 1.0 / CLOCK_HZ))

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)))

    def play_once(self, rate: float = 1.0) -> None:
        """One pass over the bag at ``rate`` times the recorded pace."""
        start_wall, t0 = None, None
        next_clock = 0.0
        for m in bags.read_bag(self.bag, self.publishers):
            if self.stop:
                return
            if t0 is None:  # the bag's start, also when its first topics are not played
                t0, start_wall = min(self.start_ns, m.time_ns), time.monotonic()
            t_rel = (m.time_ns - t0) * 1e-9
            due = start_wall + t_rel / rate
            while True:  # sleep until due, publishing /clock meanwhile
                now = time.monotonic()
                if self.clock_pub is not None and now >= next_clock:
                    sim_ns = t0 + int(max(0.0, (now - start_wall) * rate) * 1e9)
                    self._publish_clock(min(sim_ns, m.time_ns))
                    next_clock = now + 1.0 / CLOCK_HZ
                if now >= due or self.stop:
                    break
                time.sleep(min(due - now, 1.0 / CLOCK_HZ))
            if bags.in_windows(self.drop, m.topic, t_rel):
                self.stats["dropped"][m.topic] += 1
                continue
            data = m.data
            fraction = self.corrupt_fraction.get(m.topic, 0.0)
            if fraction and self.rng.random() < fraction:
                kind = CORRUPTIONS[self._turn[m.topic] % len(CORRUPTIONS)]
                self._turn[m.topic] += 1
                data = bags.typestore().serialize_cdr(corrupt(m.decode(), kind, self.rng),
                                                      m.msgtype)
                label = CORRUPTION_LABELS.get((m.msgtype, kind), kind)
                self.stats["corrupted"][f"{m.topic}:{label}"] += 1
            if self.clock_pub is not None:
                self._publish_clock(m.time_ns)
            self.publishers[m.topic].publish(bytes(data))
            self.stats["published"][m.topic] += 1


def apply_fastdds_profile(environment, choice: str) -> Optional[str]:
    """Give this process the Fast DDS profile ``choice`` (before rclpy starts): ``auto`` the
    package's large-frames profile unless ``environment`` names one (then that one), ``none``
    nothing, else the file at that path. Returns the profile in force (None: Fast DDS's
    defaults). Without it, full-size images over UDP are lost under load, silently on a
    best-effort subscription (docs/ros.md, "Transport")."""
    choice = choice.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        if profile_in_use(environment):
            return next(environment[n] for n in PROFILE_VARIABLES if environment.get(n))
        path = str(shipped_config(LARGE_FRAMES_PROFILE))
        with_profile(environment, path)
        return path
    path = os.path.abspath(os.path.expanduser(choice))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--fastdds-profile {choice}: no such file {path}")
    with_profile(environment, path, keep_users=False)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_ros.tools.play",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--topics", nargs="+", help="only these topics")
    ap.add_argument("--drop", action="append", default=[], metavar="TOPIC:START-END",
                    help="silence a sensor or topic over seconds from the bag start")
    ap.add_argument("--corrupt", action="append", default=[], metavar="TOPIC:FRACTION",
                    help="damage this fraction of a sensor's or topic's messages")
    ap.add_argument("--clock", action="store_true", help="publish /clock (use_sim_time)")
    ap.add_argument("--namespace", default="",
                    help="prefix for every topic but /tf and /tf_static")
    ap.add_argument("--start-delay", type=float, default=1.0,
                    help="seconds between creating the publishers and the first message "
                         "(DDS discovery)")
    ap.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                    help="before playing, wait (up to --wait-timeout s) until these topics of "
                         "the bag have a subscriber, then --start-delay")
    ap.add_argument("--wait-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of --corrupt")
    ap.add_argument("--best-effort", action="store_true",
                    help="publish every topic but the latched ones best effort (default: the "
                         "QoS recorded in the bag; reliable, as drivers publish, when none is)")
    ap.add_argument("--depth", type=int, default=None,
                    help="history depth of the publishers (default: the recorded one, at "
                         "least 5)")
    ap.add_argument("--ack-timeout", type=float, default=10.0,
                    help="at the end, seconds to wait at most for reliable subscribers to "
                         "acknowledge the last messages")
    ap.add_argument("--fastdds-profile", default="auto", metavar="auto|none|PATH",
                    help="Fast DDS profile of the player: auto (default) = the package's "
                    "large-frames profile (shared memory), as the launch file gives the node, "
                    "unless the environment names one; none = Fast DDS's defaults; a path")
    args = ap.parse_args(argv)
    if not args.rate > 0:
        ap.error("--rate must be positive")
    if args.depth is not None and args.depth < 1:
        ap.error("--depth must be at least 1")

    try:
        profile = apply_fastdds_profile(os.environ, args.fastdds_profile)
    except FileNotFoundError as e:
        ap.error(str(e))
    if profile:  # stdout: stderr is kept for one-line errors
        print(f"Fast DDS profile: {profile}", flush=True)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("anyseg_play")
    player = None
    stopped = False  # a signal may come before the Player exists

    def stop(*_):
        nonlocal stopped
        stopped = True
        if player is not None:
            player.stop = True
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    passes = 0
    try:
        player = Player(node, args.bag, args.topics, args.namespace, args.drop, args.corrupt,
                        args.clock, args.seed, args.best_effort, args.depth)
        player.stop = stopped
        for topic, msgtype in player.skipped_types.items():
            print(f"warning: {topic} ({msgtype}) skipped: its Python message package is not "
                  "installed here", file=sys.stderr)
        player.wait_for_subscribers(args.wait_for, args.wait_timeout)
        player.hold(args.start_delay)
        while not player.stop:
            player.play_once(args.rate)
            passes += 1
            if not args.loop:
                break
        if not player.stop:
            player.wait_for_acks(args.ack_timeout)
            # Best-effort subscribers acknowledge nothing: a moment for the last samples to be
            # taken from the shared-memory segment, which goes with this process.
            time.sleep(LINGER_S)
    except (ValueError, FileNotFoundError, bags.BagError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    s = player.stats
    print(f"played {args.bag} {passes} time(s): "
          + ", ".join(f"{t} {n}" for t, n in sorted(s["published"].items())))
    if s["dropped"]:
        print("  dropped: " + ", ".join(f"{t} {n}" for t, n in sorted(s["dropped"].items())))
    if s["corrupted"]:
        print("  corrupted: " + ", ".join(f"{t} {n}"
                                           for t, n in sorted(s["corrupted"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
