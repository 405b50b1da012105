"""The node's session applied to a bag offline: deterministic, no DDS.

    python -m anyseg_ros.tools.process_bag IN OUT [--checkpoint CKPT] [--params-file P]
        [--faults lidar:10-15,camera:20-22] [--device cpu] [--network H W]
        [--topic camera=/front/image_raw ...]

Reads IN in receive-time order and hands every message to a
:class:`~anyseg_ros.session.Session`, the same object the node runs, with the bag's receive
time as its clock: messages are converted, validated and counted exactly as the node does, and
every frame the synchroniser emits is segmented (offline nothing is dropped for being late:
the next message waits until the frame is done). OUT is a new bag with ``/anyseg/labels``,
``/anyseg/color`` and ``/anyseg/status`` (the node's status record), written beside OUT under
a temporary name and renamed when done, so a failed run leaves no OUT. ``--faults`` silences
sensors over seconds of receive time from the bag's start, as :mod:`anyseg_ros.tools.play`
``--drop`` does live. Without ``--checkpoint`` (and no ``checkpoint`` in the params file) it
runs the bundled demo checkpoint, as the node does; like the node, it refuses ``modalities``
the checkpoint does not have (set ``modalities`` in the params file for one trained on fewer).
A frame that fails in inference is counted, logged and skipped, as the node does; when every
frame failed the command exits with code 3.

The topics are those of :mod:`anyseg_ros.tools.bag` (``--topic ROLE=NAME`` names others, ROLE one
of camera, camera_info, lidar, events, depth, gt); their types are checked against
:data:`anyseg_ros.tools.bag.MSGTYPES` before anything runs (events: an Image with
``events.type: image``; the camera may be a ``sensor_msgs/CompressedImage`` stream, jpeg or
png, taken from ``/camera/image/compressed`` when the bag has no ``/camera/image``). The LiDAR
and a separate event camera are brought into the camera's frame through the bag's
``/tf_static`` and ``/tf`` unless the parameters give their extrinsics.

Parameters come from the node's defaults, then ``--params-file`` (default: the
``IN.params.yaml`` the bag tools write beside a bag), then the flags. When IN has
``/gt/labels``, each output is scored against the ground truth and mIoU is printed per phase
(the ``--faults`` windows) and per set of modalities used; the same figures go to
``OUT.summary.json``. Phases and the matching of outputs to the ground truth are
:mod:`anyseg_ros.scoring`'s, the rules the demo scores with: a phase is named on the stamp
clock by the stamps of the messages a window silenced, widened by what the synchroniser
matches; an output is scored against the ground truth nearest its stamp within
``sync.slop``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from anyseg_core.checkpoint import CheckpointError

from . import bag as bags
from .. import conversions as conv
from ..outputs import MessageClasses, frame_messages, status_message
from ..params import RUNTIME_BACKENDS, ConfigError, load_params_file
from ..pipeline import Segmentation
from ..scoring import GroundTruth, PhaseScorer, PhaseSpans, modality_key  # noqa: F401
from ..session import CAMERA_INFO, Session

# What process_bag reads: a role -> its topic in the project's bags (see --topic).
ROLES = ("camera", "camera_info", "lidar", "events", "depth", "gt")


def expected_types(events_type: str = "pointcloud") -> dict[str, str]:
    """role -> the message type process_bag reads on it."""
    types = {role: bags.MSGTYPES[bags.TOPICS[role]] for role in ROLES}  # camera: or compressed
    if events_type == "image":
        types["events"] = "sensor_msgs/msg/Image"
    elif events_type == "packet":
        types["events"] = bags.EVENT_PACKET
    return types


def parse_topics(items: Sequence[str]) -> dict[str, str]:
    """``["camera=/front/image_raw"]`` -> {"camera": "/front/image_raw"}."""
    out: dict[str, str] = {}
    for item in items:
        role, sep, name = item.partition("=")
        role, name = role.strip(), name.strip()
        if not sep or role not in ROLES or not name.strip("/"):
            raise ValueError(f"--topic {item!r}: expected ROLE=TOPIC with ROLE one of "
                             f"{', '.join(ROLES)}")
        out[role] = "/" + name.lstrip("/")
    return out


def check_topics(bag: str | Path, present: dict, roles: dict[str, str],
                 modalities: Sequence[str], events_type: str) -> None:
    """ValueError when a topic of ``roles`` (role -> topic) that process_bag reads has
    another type in the bag than the one it reads, or when the bag has no topic of any of
    ``modalities``."""
    expected = expected_types(events_type)
    for role, topic in roles.items():
        if topic not in present or present[topic][0] == expected[role] or (
                role == "camera" and present[topic][0] == "sensor_msgs/msg/CompressedImage"):
            continue
        got = present[topic][0]
        hint = ""
        if role not in ("camera_info", "gt"):
            hint = f" (name the {role} topic of this bag with --topic {role}=TOPIC)"
        raise ValueError(f"{bag}: {topic} ({role}) is {got}; process_bag reads "
                         f"{expected[role]} there{hint}")
    if not any(roles[m] in present for m in modalities):
        mine = ", ".join(f"{m}={roles[m]}" for m in modalities)
        theirs = ", ".join(f"{t} ({present[t][0]})" for t in sorted(present)) or "none"
        raise ValueError(f"{bag} has none of the sensor topics process_bag reads ({mine}); "
                         f"its topics: {theirs}. Name yours with --topic ROLE=TOPIC, e.g. "
                         "--topic camera=/front/image_raw")


def process_bag(bag_in: str | Path, bag_out: str | Path,
                checkpoint: Optional[str | Path] = None, values: Optional[dict] = None,
                faults: Optional[dict] = None, storage: str = "mcap", progress: bool = True,
                topics: Optional[dict[str, str]] = None, bag_version: int = 9) -> dict:
    """Process ``bag_in`` into ``bag_out``; returns the summary (also in OUT.summary.json).

    ``checkpoint``: the model (None: the ``checkpoint`` of ``values``, else the bundled demo
    checkpoint, as the node); ``values``: node parameter values (see :mod:`anyseg_ros.params`)
    over the defaults; ``topics``: role -> topic for topics named otherwise than in the
    project's bags."""
    values = dict(values or {})
    if checkpoint is not None:
        values["checkpoint"] = str(checkpoint)
    faults = faults or {}
    sensors = sorted(set(bags.TOPIC_SENSOR.values()))
    unknown = [k for k in faults if k not in sensors]
    if unknown:
        raise ValueError(f"--faults names {unknown}; the sensors are {sensors}")
    roles = {role: bags.TOPICS[role] for role in ROLES}
    unknown = [k for k in (topics or {}) if k not in ROLES]
    if unknown:
        raise ValueError(f"--topic names {unknown}; the roles are {list(ROLES)}")
    roles.update(topics or {})
    bag_out = Path(bag_out)
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists; process_bag writes a new bag (remove it or "
                              "choose another name)")
    present = bags.bag_topics(bag_in)
    compressed = bags.TOPICS["camera_compressed"]
    if "camera" not in (topics or {}) and roles["camera"] not in present and compressed in present:
        roles["camera"] = compressed  # image_transport's compressed stream, decoded here
    session = Session(values, logger=logging.getLogger("anyseg.process_bag"), warmup=False)
    check_topics(bag_in, present, {r: t for r, t in roles.items()
                                   if r in session.modalities or r in ("camera_info", "gt")},
                 session.modalities, session.values["events.type"])
    bag_out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{bag_out.name}.", suffix=".partial",
                                 dir=bag_out.parent))
    try:
        summary = _process(bag_in, work / bag_out.name, session, faults, storage, progress,
                           present, roles, bag_version)
        (work / bag_out.name).rename(bag_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["out"] = str(bag_out)
    Path(str(bag_out) + ".summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _process(bag_in, bag_out: Path, session: Session, faults: dict, storage: str,
             progress: bool, topics: dict, roles: dict, bag_version: int = 9) -> dict:
    """The node's session fed with the bag's messages in receive order, the receive time as
    both of its clocks; every frame it makes is written (offline nothing is late)."""
    v = session.values
    topic_of = {roles[m]: m for m in session.modalities}
    info_topic, gt_topic = roles["camera_info"], roles["gt"]
    tf_topics = {"/tf_static": True, "/tf": False}  # the rig's frames: topic -> static
    wanted = [t for t in (*topic_of, info_topic, gt_topic, *tf_topics) if t in topics]
    spans = PhaseSpans.for_params(faults, v, session.modalities)
    classes = MessageClasses(Image=bags.msg_class("sensor_msgs/msg/Image"),
                             CameraInfo=bags.msg_class("sensor_msgs/msg/CameraInfo"),
                             String=bags.msg_class("std_msgs/msg/String"))

    gt = GroundTruth()
    results: list[Segmentation] = []
    silenced, gt_rejected = Counter(), Counter()
    t_first: Optional[float] = None  # the bag's start: --faults seconds count from it
    n_total = sum(topics[t][1] for t in wanted)
    bar = _bar(n_total, progress)
    started = time.perf_counter()
    with bags.BagWriter(bag_out, storage, bag_version) as out:
        def run_ready(now: float) -> None:
            while True:
                frame, _ = session.poll(now)
                if frame is None:
                    return
                result = session.segment(frame, confidence=False)  # not written offline
                if result is None:
                    continue  # skipped or failed: counted by the session
                t_ns = int(round(now * 1e9))
                for topic, msg in frame_messages(session, result, classes).items():
                    out.write("/" + topic, msg, t_ns)
                out.write("/anyseg/status", status_message(session, result, classes, now=now,
                                                            ros_now=now), t_ns)
                results.append(result)

        def decoded(m):
            """The message and its stamp; (None, None) for a message too damaged to say."""
            try:
                msg = m.decode()
                return msg, conv.stamp_to_sec(msg.header.stamp)
            except Exception:  # noqa: BLE001 - the session counts it below
                return None, None

        for m in bags.read_bag(bag_in, wanted):
            bar.update(1)
            now = m.time_ns * 1e-9
            if t_first is None:
                t_first = min(now, bags.bag_start_ns(bag_in) * 1e-9)
            t_rel = now - t_first
            if m.topic in tf_topics:
                try:
                    msg = m.decode()
                except Exception:  # noqa: BLE001 - counted as a rejected transform
                    msg = None
                session.transforms(msg, static=tf_topics[m.topic])
                continue
            if m.topic == gt_topic:
                reason = gt.add_bag_message(m)
                if reason is not None:
                    gt_rejected[reason] += 1
                continue
            sensor = topic_of.get(m.topic) or ("camera" if m.topic == info_topic else None)
            msg, stamp = decoded(m)
            # the scorer's phases, from what the faults silenced (anyseg_ros.scoring.scan_bag
            # observes a bag the same way for the demo)
            if sensor is not None and spans.observe(sensor, t_rel, stamp,
                                                    back=m.topic != info_topic):
                silenced[sensor] += 1
                continue
            if m.topic == info_topic:
                if msg is None:
                    session.reject(CAMERA_INFO, conv.InvalidMessage(
                        "conversion_error", "the message cannot be decoded"), received=True)
                else:
                    session.camera_info(msg, now=now)
                continue
            if msg is None:
                session.reject(sensor, conv.InvalidMessage(
                    "conversion_error", "the message cannot be decoded"), received=True)
                continue
            if session.receive(sensor, msg, now=now, ros_now=now):
                run_ready(now)
        if t_first is not None:  # frames still waiting for partners that never came
            run_ready(now + v["sync.max_wait"] + 1e-6)
    bar.close()
    elapsed = time.perf_counter() - started
    return _summary(session, results, spans, gt, silenced, gt_rejected, t_first, elapsed,
                    bag_in, bag_out, roles)


def _summary(session: Session, results: list, spans: PhaseSpans, gt: GroundTruth,
             silenced: Counter, gt_rejected: Counter, t_first: Optional[float],
             elapsed: float, bag_in, bag_out: Path, roles: dict) -> dict:
    """The run's summary: what came in and was left out, and the outputs scored against the
    ground truth per phase and per set of modalities used (see the module's docstring)."""
    v = session.values
    # Scoring, per phase and per set of modalities used (anyseg_ros.scoring).
    scorer = PhaseScorer(spans, gt, v["sync.slop"], len(session.runtime.class_names))
    for result in results:
        scorer.add(result.stamp, result.modalities, result.labels)
    latencies = [r.inference_ms for r in results]
    origin = t_first or 0.0
    counts = session.counts()
    inputs = counts["inputs"]
    rejected = {(s, r): n for s, c in inputs.items() for r, n in c["rejected"].items()}
    rejected.update({("gt", r): n for r, n in gt_rejected.items()})
    notes: Counter = Counter()
    for c in inputs.values():
        notes.update(c["notes"])
    summary: dict[str, Any] = {
        "bag": str(bag_in), "out": str(bag_out), "checkpoint": session.checkpoint,
        "frames_out": len(results), "frames_failed": counts["frames_failed"],
        "frames_skipped": counts["frames_skipped"], "scored": scorer.scored,
        "received": {s: c["received"] for s, c in inputs.items()
                     if s != CAMERA_INFO and c["received"]},
        "silenced": dict(silenced),
        "rejected": {f"{s}:{r}": n for (s, r), n in sorted(rejected.items())},
        "notes": dict(notes), "camera_info_seen": session.camera_info_seen,
        "phases": {name: {"frames": n, "modalities": scorer.modalities(name),
                          "miou": _miou(scorer.miou(name))}
                   for name, n in scorer.frames.items()},
        # the stamps each window silenced, in seconds from the bag's start
        "fault_stamps": {spans.name(*w): [round(lo - origin, 6), round(hi - origin, 6)]
                         for w, (lo, hi) in sorted(spans.spans.items())},
        "modality_sets": {key: {"frames": n, "miou": _miou(scorer.miou(key=key))}
                          for key, n in sorted(scorer.set_frames.items())},
        "inference_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "inference_ms_p95": float(np.percentile(latencies, 95)) if latencies else None,
        "seconds": round(elapsed, 2), "parameters": {k: v[k] for k in sorted(v)},
        "topics": {role: roles[role] for role in ROLES},
    }
    return summary


def _miou(miou: Optional[float]) -> Optional[float]:
    return None if miou is None else round(miou, 2)


def format_summary(s: dict) -> str:
    lines = [f"{s['frames_out']} frames out of {s['bag']} in {s['seconds']} s "
             f"({s['scored']} scored against /gt/labels); inputs: "
             + ", ".join(f"{k} {n}" for k, n in sorted(s["received"].items()))]
    if s["silenced"]:
        lines.append("silenced by --faults: " + ", ".join(
            f"{k} {n}" for k, n in sorted(s["silenced"].items())))
    if s["rejected"]:
        lines.append("rejected: " + ", ".join(f"{k} {n}" for k, n in s["rejected"].items()))
    if s.get("frames_failed"):
        lines.append(f"frames that failed in inference (skipped): {s['frames_failed']}")
    lines += ["", "| phase | frames | modalities used | mIoU |", "|---|---|---|---|"]
    for name, row in s["phases"].items():
        miou = "-" if row["miou"] is None else f"{row['miou']:.2f}"
        used = ", ".join(f"{k} x{n}" for k, n in row["modalities"].items())
        lines.append(f"| {name} | {row['frames']} | {used} | {miou} |")
    lines += ["", "| modalities used | frames | mIoU |", "|---|---|---|"]
    for name, row in s["modality_sets"].items():
        miou = "-" if row["miou"] is None else f"{row['miou']:.2f}"
        lines.append(f"| {name} | {row['frames']} | {miou} |")
    return "\n".join(lines)


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="messages", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_ros.tools.process_bag",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("bag_in", type=Path)
    ap.add_argument("bag_out", type=Path)
    ap.add_argument("--checkpoint", help="model checkpoint (default: the params file's "
                    "checkpoint, else the bundled demo checkpoint, as the node)")
    ap.add_argument("--params-file", type=Path,
                    help="node params file (default: BAG_IN.params.yaml when it exists)")
    ap.add_argument("--faults", default="", help="SENSOR:START-END[,...] seconds from start")
    ap.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the params')")
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--backend", choices=RUNTIME_BACKENDS,
                    help="torch | onnxruntime | openvino | auto (default: the params')")
    ap.add_argument("--network", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--storage", choices=bags.STORAGES, default="mcap")
    ap.add_argument("--bag-version", type=int, choices=bags.BAG_VERSIONS, default=9,
                    help="rosbag2 metadata version of the output: 8 for ros2 bag on Humble")
    ap.add_argument("--topic", action="append", default=[], metavar="ROLE=TOPIC",
                    help="read ROLE (" + ", ".join(ROLES) + ") from TOPIC, e.g. "
                         "camera=/front/image_raw (repeatable)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        values: dict = {}
        params_file = args.params_file or bags.params_path(args.bag_in)
        if args.params_file or params_file.is_file():
            values.update(load_params_file(params_file))
        if args.device:
            values["device"] = args.device
        if args.precision:
            values["precision"] = args.precision
        if args.backend:
            values["backend"] = args.backend
        if args.network:
            values["network.height"], values["network.width"] = args.network
        summary = process_bag(args.bag_in, args.bag_out, args.checkpoint, values,
                              bags.parse_windows(args.faults), args.storage,
                              progress=not args.quiet, topics=parse_topics(args.topic),
                              bag_version=args.bag_version)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError, FileExistsError,
            bags.BagError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if summary["frames_failed"] and not summary["frames_out"]:
        print(f"error: every frame failed in inference ({summary['frames_failed']}); see the "
              "errors above", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
