"""A continuous drive through the synthetic world as a ROS 2 bag, with sensor outages.

    python -m anyseg_ros.tools.synthetic_bag OUT --seconds 30 [--condition rain-night]
        [--faults lidar:10-15,camera:20-22] [--seed 0] [--size 288 512] [--depth]
        [--storage mcap|sqlite3] [--bag-version 9|8] [--events packet|pointcloud]

Writes the topics of :mod:`anyseg_ros.tools.bag` (camera, CameraInfo, LiDAR with per-point times,
events, /tf_static, ground-truth labels; depth with ``--depth``) with the drive's own stamps,
events as a Prophesee's metavision_driver publishes them (EventPacket, evt3; ``--events
pointcloud``: this project's PointCloud2 layout),
each message received as a driver would deliver it (camera after read-out, LiDAR at the end
of its sweep, event packets at their end). A sensor named in ``--faults`` is silent over
those seconds of the drive (the camera with its CameraInfo); ground truth is always written,
so outages can be scored. Beside the bag, ``OUT.params.yaml`` holds the node's calibration
parameters for it.
"""
from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path
from typing import Optional, Sequence

from anyseg_core.data.synthetic.conditions import Condition
from anyseg_core.data.synthetic.rig import RigConfig
from anyseg_core.data.synthetic.sequence import drive, drive_calibration

from . import bag as bags
from .. import conversions as conv

# Receive time after the stamp: camera read-out, half a LiDAR sweep (stamped at its centre).
RECEIVE_DELAY = {"camera": 0.01, "lidar": 0.05, "events": 0.0}
SENSORS = ("camera", "lidar", "events")


def write_synthetic_bag(out: str | Path, seconds: float, condition: str = "clear-day",
                        faults: Optional[dict] = None, seed: int = 0,
                        size_hw: Sequence[int] = (288, 512), depth: bool = False,
                        storage: str = "mcap", progress: bool = True,
                        bag_version: int = 9, events_format: str = "packet") -> dict:
    """Write the bag; returns a summary (messages per topic, dropped per sensor, params
    file, calibration, first stamp)."""
    faults = faults or {}
    unknown = [k for k in faults if k not in (*SENSORS, *(["depth"] if depth else []))]
    if unknown:
        raise ValueError(f"--faults names {unknown}; the bag's sensors are "
                         f"{list(SENSORS) + (['depth'] if depth else [])}")
    Condition.parse(condition)  # fail before rendering anything
    if events_format not in bags.EVENT_FORMATS:
        raise ValueError(f"events_format must be one of {bags.EVENT_FORMATS}, got "
                         f"{events_format!r}")
    rig = RigConfig(image_hw=(int(size_hw[0]), int(size_hw[1])))
    calib = drive_calibration(rig)
    frames = bags.FRAME_IDS
    event_camera = bags.EventPacketWriter(calib["events_hw"]) if events_format == "packet" \
        else None
    pending: list = []  # (receive ns, order, topic, msg): written in receive order
    silenced = {s: 0 for s in (*SENSORS, "depth")}
    order = 0
    t_start = None
    bar = _bar(int(round(seconds * 10)), progress)

    with bags.BagWriter(out, storage, bag_version) as writer:
        def push(topic, msg, receive_s):
            nonlocal order
            heapq.heappush(pending, (int(round(receive_s * 1e9)), order, topic, msg))
            order += 1

        def flush(until_s):
            while pending and pending[0][0] <= until_s * 1e9:
                t_ns, _, topic, msg = heapq.heappop(pending)
                writer.write(topic, msg, t_ns)

        for m in drive(seed, seconds, condition, rig):
            if t_start is None:
                t_start = m.stamp
                writer.write(bags.TOPICS["tf_static"], bags.tf_static_msg(
                    {frames["lidar"]: calib["T_cam_lidar"],
                     frames["events"]: calib["T_cam_events"]}, m.stamp, frames["camera"]),
                    int(round(m.stamp * 1e9)))
            flush(m.stamp)
            t_drive = m.stamp - t_start
            stamp = conv.sec_to_stamp(m.stamp)
            receive = m.stamp + RECEIVE_DELAY[m.sensor]
            if m.sensor == "camera":
                bar.update(1)
                push(bags.TOPICS["gt"], bags.image_msg(m.data["label"], "mono8", stamp,
                                                       frames["camera"]), receive)
                if depth:
                    if bags.in_windows(faults, "depth", t_drive):
                        silenced["depth"] += 1
                    else:
                        push(bags.TOPICS["depth"], bags.image_msg(
                            m.data["depth"], "32FC1", stamp, frames["camera"]), receive)
            if bags.in_windows(faults, m.sensor, t_drive):
                silenced[m.sensor] += 1
                continue
            if m.sensor == "camera":
                push(bags.TOPICS["camera"], bags.image_msg(m.data["image"], "rgb8", stamp,
                                                           frames["camera"]), receive)
                push(bags.TOPICS["camera_info"], bags.camera_info_msg(
                    calib["K"], calib["image_hw"], stamp, frames["camera"]), receive)
            elif m.sensor == "lidar":
                push(bags.TOPICS["lidar"], bags.lidar_msg(m.data[:, :4], stamp,
                                                          point_times=m.data[:, 5]), receive)
            else:
                ev = m.data
                push(bags.TOPICS["events"],
                     event_camera.msg(ev.x, ev.y, ev.t, ev.p, stamp) if event_camera
                     else bags.events_msg(ev.x, ev.y, ev.t, ev.p, stamp), receive)
        flush(float("inf"))
        counts = dict(writer.counts)
    bar.close()
    params = bags.write_params(out, calib, f"calibration of the synthetic rig of {Path(out).name} "
                                           f"(seed {seed}, {size_hw[0]}x{size_hw[1]})",
                               events_format)
    return {"bag": str(out), "params": str(params), "messages": counts, "silenced": silenced,
            "t_start": t_start, "seconds": seconds, "condition": condition,
            "faults": faults, "calibration": calib}


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="camera frames", unit="frame", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_ros.tools.synthetic_bag",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="bag directory to create")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--condition", default="clear-day",
                    help="weather-time, e.g. clear-day, rain-night, fog-day, snow-night")
    ap.add_argument("--faults", default="",
                    help="silent sensors: SENSOR:START-END[,...] in seconds of the drive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=(288, 512), metavar=("H", "W"))
    ap.add_argument("--depth", action="store_true", help="also write /depth/image")
    ap.add_argument("--storage", choices=bags.STORAGES, default="mcap")
    ap.add_argument("--bag-version", type=int, choices=bags.BAG_VERSIONS, default=9,
                    help="rosbag2 metadata version: 8 for ros2 bag on Humble")
    ap.add_argument("--events", choices=bags.EVENT_FORMATS, default="packet",
                    help="packet: event_camera_msgs/EventPacket evt3, as a Prophesee driver "
                    "publishes (default); pointcloud: this project's PointCloud2 layout")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        faults = bags.parse_windows(args.faults)
        summary = write_synthetic_bag(args.out, args.seconds, args.condition, faults,
                                      args.seed, args.size, args.depth, args.storage,
                                      progress=not args.quiet, bag_version=args.bag_version,
                                      events_format=args.events)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['bag']} ({args.storage}), {args.seconds:g} s of "
          f"{args.condition}, params {summary['params']}")
    for topic, n in sorted(summary["messages"].items()):
        print(f"  {topic}: {n} messages")
    for sensor, n in summary["silenced"].items():
        if n:
            print(f"  {sensor}: {n} messages left out ({args.faults})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

