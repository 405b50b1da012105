"""MUSES scenes as one ROS 2 bag, with the real time offsets between their sensors.

    python -m anyseg_ros.tools.muses_to_bag MUSES_ROOT OUT --split val [--weather fog,snow]
        [--time-of-day night] [--limit N] [--interval 1.0] [--storage mcap|sqlite3]
        [--bag-version 9|8] [--event-anchor last|camera] [--events packet|pointcloud]

Each scene keeps its own timing: the camera image stamped at mid-exposure, the LiDAR sweep
stamped at its centre with every point's time in a ``t`` field, the events in 10 ms packets
as metavision_driver publishes a Prophesee's (MUSES' event camera is one): EventPacket,
evt3, on a camera clock, stamped at the packet's first event (``--events pointcloud``: this
project's PointCloud2 layout, stamped at the packet's end), ground truth at the camera's
stamp (none for the test split, whose labels MUSES withholds). The node renders the events
of the ``events.window`` seconds up to a frame's stamp; so that it renders the window the
MUSES reader trains on by default (the file's last 30 ms, the MUSES SDK's rule),
``--event-anchor last`` (the default) shifts each scene's events so that its last event
falls on the camera's stamp; ``--event-anchor camera`` keeps the recorded event times (the
node then takes the 30 ms up to the camera's time, like ``event_anchor="camera"``). Scenes
are then shifted in time to follow each other every ``--interval`` seconds, so
that a bag of scenes recorded months apart replays in minutes. Topics are those of
:mod:`anyseg_ros.tools.bag` plus ``/tf_static``; beside the bag, ``OUT.params.yaml`` holds the
node's calibration for this data (LiDAR and event camera extrinsics, event camera K and size)
and synchroniser settings for scenes that come one at a time: ``sync.slop`` and
``sync.max_wait`` wide enough for the LiDAR-to-camera offsets found in these scenes, and
``sync.stale_after`` longer than the interval, so that the camera stays the frames' pivot
between scenes (the very first scene's event packets, which arrive before any camera image,
still make event-only frames, and that scene's camera frame comes too late to be used).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from anyseg_core.data import muses

from . import bag as bags
from .. import conversions as conv

PACKET_S = 0.01
# How long after its stamp each message is received (camera read-out; the LiDAR at the end of
# its sweep is handled from the points' own times).
CAMERA_DELAY_S = 0.01


#: EVT 3.0 time is 24 bits of microseconds: a longer gap without events is ambiguous.
MAX_EVT3_GAP_S = 16.0


def _packets(events, period: float = PACKET_S):
    """Split an event stream (sorted or not) into packets ``(end stamp, Events)``."""
    if not len(events):
        return []
    order = np.argsort(events.t, kind="stable")
    t = np.asarray(events.t, np.float64)[order]
    x, y, p = (np.asarray(a)[order] for a in (events.x, events.y, events.p))
    first = np.floor(t[0] / period) * period
    index = np.floor((t - first) / period).astype(np.int64)
    bounds = np.flatnonzero(np.diff(index)) + 1
    out = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(t)]):
        end = first + (index[lo] + 1) * period
        out.append((end, x[lo:hi], y[lo:hi], t[lo:hi], p[lo:hi]))
    return out


def convert(root: str | Path, out: str | Path, split: str = "val",
            weather: Optional[str | Sequence[str]] = None,
            time_of_day: Optional[str | Sequence[str]] = None,
            limit: Optional[int] = None, interval: float = 1.0, storage: str = "mcap",
            progress: bool = True, event_anchor: str = "last", bag_version: int = 9,
            events_format: str = "packet") -> dict:
    """Write the bag and its params file; returns a summary. weather / time_of_day: a name
    or a list of names (None = all). event_anchor, events_format: see the module's
    docstring."""
    if not interval > 0:
        raise ValueError(f"--interval must be positive, got {interval}")
    if events_format not in bags.EVENT_FORMATS:
        raise ValueError(f"events_format must be one of {bags.EVENT_FORMATS}, got "
                         f"{events_format!r}")
    if events_format == "packet" and interval >= MAX_EVT3_GAP_S:
        raise ValueError(f"--interval {interval} s: EVT 3.0's 24-bit microsecond clock cannot "
                         f"span a gap of {MAX_EVT3_GAP_S} s without events between scenes; "
                         "use a shorter --interval or --events pointcloud")
    muses.check_event_anchor(event_anchor)
    scenes = muses.list_scenes(root, split=split, weather=weather, time_of_day=time_of_day)
    if limit is not None:
        scenes = scenes[:limit]
    if not scenes:
        raise ValueError(f"no MUSES scene in {root} for split={split} weather={weather} "
                         f"time_of_day={time_of_day}")
    calib = muses.load_calibration(root)
    frames = bags.FRAME_IDS
    t0: Optional[float] = None
    lidar_offsets: list[float] = []
    lidar_waits: list[float] = []  # LiDAR arrival after the camera's, seconds
    spans: list[float] = []
    event_shifts: list[float] = []  # event time shifts of --event-anchor last, seconds
    prev_last: Optional[float] = None
    first_calib: Optional[dict] = None
    event_camera: Optional[bags.EventPacketWriter] = None
    bar = _bar(len(scenes), progress)
    with bags.BagWriter(out, storage, bag_version) as writer:
        for k, scene in enumerate(scenes):
            raw = muses.read_frame(scene, calib)
            st = raw.meta["stamps"]
            anchor = st["camera"] or st["lidar"] or st["events_last"]
            if anchor is None:
                raise muses.MusesError(scene.path("camera"), "has no time stamp at all "
                                       "(no exposure stamps in meta.json, no LiDAR or event "
                                       "times)")
            if t0 is None:
                t0, first_calib = anchor, raw.meta["calib"]
                writer.write(bags.TOPICS["tf_static"], bags.tf_static_msg(
                    {frames["lidar"]: calib.T_cam_lidar if calib.T_cam_lidar is not None
                     else np.eye(4),
                     frames["events"]: calib.T_cam_events if calib.T_cam_events is not None
                     else np.eye(4)}, t0, frames["camera"]), int(round(t0 * 1e9)))
            shift = t0 + k * interval - anchor
            if raw.lidar is not None and st["lidar"] is not None and st["camera"] is not None:
                lidar_offsets.append(abs(st["lidar"] - st["camera"]))
                lidar_waits.append(st["lidar_last"] - st["camera"] - CAMERA_DELAY_S)
            ev_shift = 0.0
            if (raw.events is not None and event_anchor == "last" and len(raw.events)
                    and st["camera"] is not None):
                ev_shift = st["camera"] - st["events_last"]
                event_shifts.append(ev_shift)
            if events_format == "packet" and event_camera is None and raw.events is not None:
                event_camera = bags.EventPacketWriter(raw.meta["calib"]["events_hw"])
            messages = _scene_messages(raw, anchor + shift, shift, ev_shift, event_camera)
            if messages:
                spans.append(messages[-1][0] - messages[0][0])
                if prev_last is not None and messages[0][0] <= prev_last:
                    raise ValueError(f"scene {scene.name} ({spans[-1]:.2f} s of data) overlaps "
                                     f"the previous scene at --interval {interval}; use a "
                                     "longer --interval")
                prev_last = messages[-1][0]
            for receive, topic, msg in messages:
                writer.write(topic, msg, int(round(receive * 1e9)))
            bar.update(1)
        counts = dict(writer.counts)
    bar.close()
    # Synchroniser settings for scenes that come one at a time: the LiDAR pairs with the camera
    # although its sweep centre may be tens of ms away and it arrives at the sweep's end, and
    # the camera stays "live" between scenes (else event packets would lead the frames).
    slop = max(0.05, round(max(lidar_offsets, default=0.0) + 0.01, 3))
    max_wait = max(0.1, round(max(lidar_waits, default=0.0) + 0.05, 3))
    # The first scene's calibration as read (sizes filled in where calib.json has none).
    tree = bags.node_params(first_calib or calib.as_dict(), events_format=events_format)
    tree["/**"]["ros__parameters"]["sync"] = {"slop": float(slop), "max_wait": float(max_wait),
                                              "stale_after": float(1.5 * interval)}
    import yaml

    params = bags.params_path(out)
    params.write_text(
        f"# calibration of the MUSES scenes in {Path(out).name} ({len(scenes)} scenes, "
        f"split {split}; event anchor {event_anchor})\n"
        f"# Pass with: --ros-args --params-file {params.name}\n"
        + yaml.safe_dump(tree, sort_keys=False, default_flow_style=None))
    return {"bag": str(out), "params": str(params), "scenes": len(scenes), "messages": counts,
            "sync_slop": slop, "sync_max_wait": max_wait,
            "max_lidar_offset_s": max(lidar_offsets, default=None),
            "longest_scene_s": max(spans, default=0.0), "event_anchor": event_anchor,
            "max_event_shift_s": max(event_shifts, key=abs, default=None),
            "labels": counts.get(bags.TOPICS["gt"], 0)}


def _scene_messages(raw, t_cam: float, shift: float, ev_shift: float,
                    event_camera: Optional[bags.EventPacketWriter]) -> list:
    """One scene's messages ``(receive s, topic, msg)`` in receive order, its times moved by
    ``shift`` (the events by ``ev_shift`` more): the camera image, its CameraInfo and the
    labels at ``t_cam``, the LiDAR sweep at its centre (received at its end), the events in
    10 ms packets (EventPackets from ``event_camera``, else our PointCloud2 layout)."""
    frames, st = bags.FRAME_IDS, raw.meta["stamps"]
    messages = []
    stamp = conv.sec_to_stamp(t_cam)
    if raw.camera is not None:
        messages.append((t_cam + CAMERA_DELAY_S, bags.TOPICS["camera"],
                         bags.image_msg(raw.camera, "rgb8", stamp, frames["camera"])))
        messages.append((t_cam + CAMERA_DELAY_S, bags.TOPICS["camera_info"],
                         bags.camera_info_msg(raw.K, raw.image_hw, stamp, frames["camera"])))
    if raw.label is not None:
        messages.append((t_cam + CAMERA_DELAY_S, bags.TOPICS["gt"],
                         bags.image_msg(raw.label, "mono8", stamp, frames["camera"])))
    if raw.lidar is not None and st["lidar"] is not None:
        messages.append((st["lidar_last"] + shift, bags.TOPICS["lidar"], bags.lidar_msg(
            raw.lidar[:, :4], conv.sec_to_stamp(st["lidar"] + shift),
            point_times=raw.lidar[:, 5] + shift)))
    if raw.events is not None:
        ev = raw.events
        shifted = type(ev)(ev.x, ev.y, np.asarray(ev.t, np.float64) + ev_shift + shift, ev.p)
        for end, x, y, t, p in _packets(shifted):
            stamp = conv.sec_to_stamp(end)
            messages.append((end, bags.TOPICS["events"],
                             event_camera.msg(x, y, t, p, stamp) if event_camera
                             else bags.events_msg(x, y, t, p, stamp)))
    messages.sort(key=lambda m: m[0])
    return messages


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="scenes", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


def _names(text: str) -> list[str]:
    """A comma list of names (``fog,snow``; spaces around names ignored), none empty."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty name in the comma list {text!r}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_ros.tools.muses_to_bag",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="MUSES root (with meta.json and calib.json)")
    ap.add_argument("out", type=Path, help="bag directory to create")
    ap.add_argument("--split", default="val", choices=muses.SPLITS)
    ap.add_argument("--weather", type=_names, help=f"comma list of {list(muses.WEATHERS)}")
    ap.add_argument("--time-of-day", type=_names,
                    help=f"comma list of {list(muses.TIMES_OF_DAY)}")
    ap.add_argument("--limit", type=int, help="at most this many scenes")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between consecutive scenes in the bag")
    ap.add_argument("--storage", choices=bags.STORAGES, default="mcap")
    ap.add_argument("--bag-version", type=int, choices=bags.BAG_VERSIONS, default=9,
                    help="rosbag2 metadata version: 8 for ros2 bag on Humble")
    ap.add_argument("--event-anchor", choices=muses.EVENT_ANCHORS, default="last",
                    help="last: shift each scene's events so that the last one falls on the "
                         "camera's stamp (the node then renders the MUSES SDK's window, the "
                         "reader's default); camera: keep the recorded event times")
    ap.add_argument("--events", choices=bags.EVENT_FORMATS, default="packet",
                    help="packet: event_camera_msgs/EventPacket evt3, as a Prophesee driver "
                    "publishes (default); pointcloud: this project's PointCloud2 layout")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        s = convert(args.root, args.out, args.split, args.weather, args.time_of_day,
                    args.limit, args.interval, args.storage, progress=not args.quiet,
                    event_anchor=args.event_anchor, bag_version=args.bag_version,
                    events_format=args.events)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {s['bag']}: {s['scenes']} scenes, "
          + ", ".join(f"{t} {n}" for t, n in sorted(s["messages"].items())))
    print(f"params for the node: {s['params']} (sync.slop {s['sync_slop']} s, sync.max_wait "
          f"{s['sync_max_wait']} s; largest LiDAR to camera offset {s['max_lidar_offset_s']} s)")
    if s["max_event_shift_s"] is not None:
        print(f"events shifted to end at the camera's stamp (--event-anchor last): by up to "
              f"{s['max_event_shift_s']:+.6f} s")
    if not s["labels"]:
        print("no ground truth written (the test split has none)" if args.split == "test"
              else "no ground truth written (no label files found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
