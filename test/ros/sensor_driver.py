"""A fake sensor rig for the node's end-to-end tests: a synthetic drive published live.

    python sensor_driver.py NAMESPACE --seconds 14 --silence lidar:4-7,camera:9-12 \\
        --malformed 1000 --info info.json

Renders a drive of the synthetic world (small images, so it is quick), then publishes it at
the recorded pace as a real driver would: reliable (REP-2003; ``--best-effort`` otherwise)
camera/image (rgb8),
camera/camera_info, lidar/points (x, y, z, intensity, ring, t) and events (x, y, t, p), with
stamps re-based to the wall clock at start. ``--silence`` keeps a sensor quiet over windows
of drive time (a silenced camera also stops its CameraInfo); ``--malformed N`` mixes N
broken messages of every kind into the streams, spread over the drive. ``--info`` receives
the offset added to the drive's stamps, the calibration, and how many broken messages of
each kind were sent. The test re-renders the same drive to compare against offline results.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from anyseg_core.data.synthetic.rig import RigConfig  # noqa: E402
from anyseg_core.data.synthetic.sequence import drive, drive_calibration  # noqa: E402
from anyseg_ros import conversions as conv  # noqa: E402

SEED = 11
RIG = RigConfig(image_hw=(96, 160), lidar_columns=240)
CAMERA_FRAME = "test_camera_optical"


def render(seconds: float) -> list:
    """The drive's messages (deterministic for SEED, RIG and ``seconds``)."""
    return list(drive(SEED, seconds, rig=RIG, t0=0.0))


def parse_windows(text: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for part in filter(None, text.split(",")):
        sensor, span = part.split(":")
        start, end = (float(v) for v in span.split("-"))
        out.setdefault(sensor, []).append((start, end))
    return out


def silenced(windows, sensor: str, t: float) -> bool:
    return any(a <= t < b for a, b in windows.get(sensor, ()))


def camera_image(msg, stamp):
    return conv.array_to_image(msg.data["image"], "rgb8", stamp, CAMERA_FRAME, cls=Image)


def lidar_cloud(msg, stamp, offset):
    pts = msg.data
    return conv.points_to_cloud({"x": pts[:, 0].astype(np.float32),
                                 "y": pts[:, 1].astype(np.float32),
                                 "z": pts[:, 2].astype(np.float32),
                                 "intensity": pts[:, 3].astype(np.float32),
                                 "ring": pts[:, 4].astype(np.uint16),
                                 "t": pts[:, 5] + offset},  # per-point times, absolute
                                stamp, "test_lidar", cls=PointCloud2)


def events_cloud(events, stamp, offset):
    return conv.points_to_cloud({"x": np.asarray(events.x, np.uint16),
                                 "y": np.asarray(events.y, np.uint16),
                                 "t": np.asarray(events.t, np.float64) + offset,
                                 "p": np.asarray(events.p, np.uint8)},
                                stamp, "test_events", cls=PointCloud2)


def broken_messages(calib, stamp_of):
    """(topic, kind, message factory(stamp)) for every kind of malformed input."""
    H, W = RIG.image_hw
    good = np.zeros((H, W, 3), np.uint8)

    def image(**changes):
        def make(stamp):
            m = conv.array_to_image(good, "rgb8", stamp, CAMERA_FRAME, cls=Image)
            for k, v in changes.items():
                setattr(m, k, v)
            return m
        return make

    def cloud(columns, frame="test_lidar", **changes):
        def make(stamp):
            m = conv.points_to_cloud(columns, stamp, frame, cls=PointCloud2)
            for k, v in changes.items():
                setattr(m, k, v)
            return m
        return make

    xyz = {c: np.ones(100, np.float32) for c in ("x", "y", "z", "intensity")}
    ev = {"x": np.ones(50, np.uint16), "y": np.ones(50, np.uint16),
          "t": np.full(50, 1.0), "p": np.ones(50, np.uint8)}

    def info_singular(stamp):
        return conv.camera_info_msg(np.zeros((3, 3)), RIG.image_hw, stamp, CAMERA_FRAME,
                                    cls=CameraInfo)

    def with_stamp(factory, fixed):
        return lambda stamp: factory(fixed(stamp))

    return [
        ("camera/image", "unknown_encoding", image(encoding="yuv_what")),
        ("camera/image", "data_length", image(data=bytes(W * 3 * (H - 1)))),
        ("camera/image", "step_too_small", image(step=W * 3 - 1)),
        ("camera/image", "bad_size", image(height=0, data=b"")),
        ("camera/image", "bad_stamp", with_stamp(image(), lambda s: (0, 0))),
        ("camera/image", "bad_stamp", with_stamp(image(), lambda s: (s[0] + 3600, s[1]))),
        ("lidar/points", "missing_field", cloud({"x": xyz["x"], "y": xyz["y"]})),
        ("lidar/points", "bad_point_step", cloud(xyz, point_step=8)),
        ("lidar/points", "non_finite", cloud({c: np.full(100, np.nan, np.float32)
                                              for c in xyz})),
        ("events", "out_of_image", cloud({**ev, "x": np.full(50, 5000, np.uint16)}, "ev")),
        ("events", "missing_field", cloud({k: v for k, v in ev.items() if k != "t"}, "ev")),
        ("events", "non_finite", cloud({**ev, "t": np.full(50, np.nan)}, "ev")),
        ("camera/camera_info", "singular_K", info_singular),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("namespace")
    ap.add_argument("--seconds", type=float, default=14.0)
    ap.add_argument("--silence", default="")
    ap.add_argument("--malformed", type=int, default=0)
    ap.add_argument("--wait-subscribers", type=float, default=60.0,
                    help="seconds to wait, at most, until every topic has a subscriber (the "
                         "node's) before the first message; the drive fails if one is missing")
    ap.add_argument("--best-effort", action="store_true",
                    help="publish best effort (default reliable, as drivers do)")
    ap.add_argument("--depth", type=int, default=1000, help="publishers' history depth")
    ap.add_argument("--info", type=Path, required=True)
    args = ap.parse_args()

    messages = render(args.seconds)
    windows = parse_windows(args.silence)
    calib = drive_calibration(RIG)
    ns = args.namespace.rstrip("/")

    rclpy.init()
    node = rclpy.create_node("anyseg_test_driver")
    qos = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.BEST_EFFORT
                     if args.best_effort else ReliabilityPolicy.RELIABLE)
    pubs = {topic: node.create_publisher(kind, f"{ns}/{topic}", qos) for topic, kind in (
        ("camera/image", Image), ("camera/camera_info", CameraInfo),
        ("lidar/points", PointCloud2), ("events", PointCloud2))}
    # Discovery: start once every topic is matched (a condition, not a fixed delay).
    deadline = time.monotonic() + args.wait_subscribers
    while not all(p.get_subscription_count() for p in pubs.values()):
        if time.monotonic() > deadline:
            missing = [t for t, p in pubs.items() if not p.get_subscription_count()]
            sys.exit(f"no subscriber on {missing} after {args.wait_subscribers} s")
        time.sleep(0.05)
    offset = math.floor(time.time()) + 1.0  # drive time 0 = this wall time
    broken = broken_messages(calib, None)
    n_broken = args.malformed
    broken_times = np.linspace(0.3, args.seconds - 0.3, n_broken) if n_broken else []
    sent_broken: dict[str, int] = {}
    info = {"offset": offset, "seconds": args.seconds, "silence": windows,
            "calibration": {k: np.asarray(v).tolist() for k, v in calib.items()},
            "camera_frame": CAMERA_FRAME, "sent": {}, "broken": sent_broken}
    args.info.write_text(json.dumps(info))

    def wait_until(t_drive):
        delay = offset + t_drive - time.time()
        if delay > 0:
            time.sleep(delay)

    sent = {topic: 0 for topic in pubs}
    b = 0
    try:
        for msg in messages:
            # Broken messages due before this one go first, stamped like a neighbour.
            while b < n_broken and broken_times[b] <= msg.stamp:
                topic, kind, make = broken[b % len(broken)]
                stamp = conv.sec_to_stamp(offset + broken_times[b])
                wait_until(broken_times[b])
                pubs[topic].publish(make(stamp))
                sent_broken[f"{topic}:{kind}"] = sent_broken.get(f"{topic}:{kind}", 0) + 1
                b += 1
            if silenced(windows, msg.sensor, msg.stamp):
                continue
            stamp = conv.sec_to_stamp(offset + msg.stamp)
            wait_until(msg.stamp)
            if msg.sensor == "camera":
                pubs["camera/image"].publish(camera_image(msg, stamp))
                pubs["camera/camera_info"].publish(conv.camera_info_msg(
                    calib["K"], calib["image_hw"], stamp, CAMERA_FRAME, cls=CameraInfo))
                sent["camera/image"] += 1
                sent["camera/camera_info"] += 1
            elif msg.sensor == "lidar":
                pubs["lidar/points"].publish(lidar_cloud(msg, stamp, offset))
                sent["lidar/points"] += 1
            else:
                pubs["events"].publish(events_cloud(msg.data, stamp, offset))
                sent["events"] += 1
        info["sent"] = sent
        if not args.best_effort:  # everything delivered before the publishers go
            for topic, pub in pubs.items():
                if not pub.wait_for_all_acked(Duration(seconds=30)):
                    sys.exit(f"{topic}: messages not acknowledged after 30 s")
        args.info.write_text(json.dumps(info))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
