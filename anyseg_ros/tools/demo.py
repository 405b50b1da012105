"""The out-of-the-box demo: a drive with a LiDAR outage and a camera outage, segmented live.

    python -m anyseg_ros.tools.demo [--out demo_output] [--seconds 24]
        [--faults lidar:8-13,camera:16-20] [--checkpoint CKPT] [--keep-bag]

What it does, with real processes and real topics (what ``make demo`` runs):
1. writes a synthetic drive bag (:mod:`anyseg_ros.tools.synthetic_bag`);
2. starts ``anyseg_node`` (``python -m anyseg_ros.node``) with the shipped
   ``config/anyseg.yaml``, the bag's calibration params and ``use_sim_time``, on the demo
   checkpoint unless ``--checkpoint`` says otherwise;
3. replays the bag with ``python -m anyseg_ros.tools.play --clock --drop FAULTS`` (the
   outages: seconds of receive time from the bag's start) and records the node's outputs in
   this process;
4. scores the outputs against the drive's ground truth per phase with
   :mod:`anyseg_ros.scoring`, the rules of ``process_bag``: ``process_bag BAG OUT --faults
   FAULTS`` on the bag (kept with ``--keep-bag``) names the same phases and scores its
   outputs the same way;
5. writes ``montage.png`` (for one frame of each phase: inputs, prediction, ground truth),
   ``timeline.png`` (the modalities each output used, outages shaded) and ``summary.md``
   (frames in and out per phase, modalities used, latency p50/p95, mIoU per phase), and
   prints the summary.
Discovery stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a ROS domain of
its own unless ``--domain-id`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from anyseg_core import viz
from anyseg_core.checkpoint import read_metadata
from anyseg_core.modalities import CAMERA, EVENTS, LIDAR
from anyseg_core.sensors.frame import Events

from . import bag as bags
from .. import conversions as conv
from ..events import EventPacketStream
from ..params import DEMO_CHECKPOINT, defaults, load_params_file
from ..scoring import ALL_SENSORS, GroundTruth, PhaseScorer, PhaseSpans, modality_key, scan_bag
from .fastdds import with_profile
from .processes import interrupt
from .shipped import LARGE_FRAMES_PROFILE, shipped_config  # noqa: F401 (demo.shipped_config)
from .synthetic_bag import write_synthetic_bag

SENSOR_ROWS = (CAMERA, EVENTS, LIDAR)


#: How the demo's tables name a phase (process_bag's names carry the window's seconds).
PHASE_NAMES = {"label": "{sensor} off", "joiner": " + "}


def node_values(params_files: Sequence[str | Path]) -> dict:
    """The parameters the demo's node runs with: its defaults, then the files in order."""
    values = defaults()
    for path in params_files:
        values.update(load_params_file(path))
    return values


def phases_of(bag: Path, faults: dict, values: dict) -> tuple[PhaseSpans, GroundTruth]:
    """The phases of a replay of ``bag`` with ``--drop`` ``faults`` into a node with
    parameters ``values``, and the bag's ground truth (:func:`anyseg_ros.scoring.scan_bag`,
    as process_bag observes a bag)."""
    modalities = tuple(values["modalities"])
    spans = PhaseSpans.for_params(faults, values, modalities, **PHASE_NAMES)
    gt, _ = scan_bag(bag, spans, {bags.TOPICS[m]: m for m in modalities})
    return spans, gt


def _wait_for(predicate, timeout: float, what: str, proc=None, log: Optional[Path] = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}"
                               + (f":\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def record(env: dict, namespace: str, node_proc, play_cmd: list[str], play_log: Path,
           timeout: float) -> tuple[list, list]:
    """Run the player and record the node's labels and status until the player ends."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    labels, status = [], []
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("anyseg_demo_recorder", context=context)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, f"{namespace}/anyseg/labels", labels.append, qos)
        node.create_subscription(String, f"{namespace}/anyseg/status",
                                 lambda m: status.append(json.loads(m.data)), qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        with open(play_log, "wb") as out:
            player = subprocess.Popen(play_cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while player.poll() is None and time.monotonic() < deadline:
                if node_proc.poll() is not None:
                    raise RuntimeError(f"the node exited with {node_proc.returncode} during "
                                       "the replay")
                executor.spin_once(timeout_sec=0.05)
            end = time.monotonic() + 2.0  # the last frames
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
        finally:
            interrupt(player, timeout=10)
        if player.returncode:
            raise RuntimeError(f"the player failed:\n{play_log.read_text()[-3000:]}")
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return labels, status


def _bag_lookup(bag: Path, wanted: dict[str, set]) -> dict:
    """(topic, stamp rounded to µs) -> decoded message, for the stamps asked for."""
    found = {}
    for m in bags.read_bag(bag, list(wanted)):
        msg = m.decode()
        key = round(conv.stamp_to_sec(msg.header.stamp), 6)
        if key in wanted[m.topic]:
            found[(m.topic, key)] = msg
    return found


#: The events a montage shows: the node's default window before the frame.
EVENT_WINDOW_S = defaults()["events.window"]


def _bag_events(bag: Path) -> Optional[Events]:
    """Every event of the bag on ROS time, decoded as the node decodes them (EventPacket
    streams statefully, or our PointCloud2 layout); None when it has none."""
    stream, parts = EventPacketStream(), []
    for m in bags.read_bag(bag, [bags.TOPICS["events"]]):
        msg = m.decode()
        parts.append(stream(msg) if hasattr(msg, "time_base")
                     else conv.events_from_cloud(msg, None))
    if not parts:
        return None
    return Events(*(np.concatenate([np.asarray(getattr(e, f)) for e in parts])
                    for f in "xytp"))


def timeline_png(path: Path, status: list, t0: float, seconds: float, faults: dict) -> None:
    import cv2

    W, row_h, left, top = 900, 36, 90, 30
    H = top + row_h * len(SENSOR_ROWS) + 40
    img = np.full((H, W, 3), 255, np.uint8)
    x_of = lambda t: int(left + (W - left - 20) * t / seconds)  # noqa: E731
    for sensor, a, b in ((k, a, b) for k, spans in faults.items() for a, b in spans):
        if sensor in SENSOR_ROWS:
            r = SENSOR_ROWS.index(sensor)
            cv2.rectangle(img, (x_of(a), top + r * row_h), (x_of(b), top + (r + 1) * row_h - 2),
                          (255, 205, 205), -1)
    for r, sensor in enumerate(SENSOR_ROWS):
        y = top + r * row_h + row_h // 2
        cv2.putText(img, sensor, (8, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.line(img, (left, y), (W - 20, y), (220, 220, 220), 1)
    for s in status:
        x = x_of(s["stamp"] - t0)
        for r, sensor in enumerate(SENSOR_ROWS):
            if sensor in s["modalities"]:
                y = top + r * row_h + row_h // 2
                cv2.line(img, (x, y - 9), (x, y + 9), (40, 90, 200), 2)
    y_axis = top + row_h * len(SENSOR_ROWS) + 12
    for t in range(0, int(seconds) + 1, 2):
        cv2.putText(img, f"{t}s", (x_of(t) - 8, y_axis + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "modalities used by each output frame (blue); sensor outages (red)",
                (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    viz.save_png(path, img)


def montage_png(path: Path, picks: list, bag: Path, calib: dict, palette) -> None:
    """One row per phase: camera, LiDAR (bird's eye), events, prediction, ground truth."""
    wanted: dict[str, set] = {t: set() for t in (bags.TOPICS["camera"], bags.TOPICS["lidar"],
                                                 bags.TOPICS["gt"])}
    for phase, s, _ in picks:
        for sensor, stamps in s["stamps"].items():
            if sensor != EVENTS:
                wanted[bags.TOPICS[sensor]].update(round(t, 6) for t in stamps)
        wanted[bags.TOPICS["gt"]].add(round(s["gt_stamp"], 6))
    msgs = _bag_lookup(bag, wanted)
    events = _bag_events(bag)
    H, W = calib["image_hw"]
    blank = lambda text: viz.titled(np.full((H, W, 3), 40, np.uint8), text)  # noqa: E731
    rows = []
    for phase, s, labels in picks:
        st = {k: [round(t, 6) for t in v] for k, v in s["stamps"].items()}
        cam = msgs.get((bags.TOPICS["camera"], st.get(CAMERA, [None])[-1]))
        row = [viz.titled(conv.image_to_array(cam)[0], f"{phase}: camera") if cam is not None
               else blank(f"{phase}: no camera image")]
        lid = msgs.get((bags.TOPICS["lidar"], st.get(LIDAR, [None])[-1]))
        row.append(viz.titled(viz.fit(viz.lidar_bev(conv.lidar_points(lid)[0], size=H), (H, W)),
                              "LiDAR (bird's eye)") if lid is not None else blank("LiDAR off"))
        window = (np.asarray(events.t) > s["stamp"] - EVENT_WINDOW_S) & (
            np.asarray(events.t) <= s["stamp"]) if events is not None and st.get(EVENTS) \
            else None
        if window is not None and window.any():
            ev_img = viz.events_to_image(np.asarray(events.x)[window],
                                         np.asarray(events.y)[window],
                                         np.asarray(events.p)[window],
                                         tuple(calib["events_hw"]))
            row.append(viz.titled(viz.fit(ev_img, (H, W)), "events (30 ms)"))
        else:
            row.append(blank("events off"))
        row.append(viz.titled(viz.colorize_labels(labels, palette),
                              "prediction (" + modality_key(s["modalities"]) + ")"))
        gt = msgs.get((bags.TOPICS["gt"], round(s["gt_stamp"], 6)))
        row.append(viz.titled(viz.colorize_labels(conv.image_to_array(gt)[0], palette),
                              "ground truth") if gt is not None else blank("no ground truth"))
        rows.append(row)
    viz.save_png(path, viz.grid(rows))


def _score(status: list, labels_msgs: list, bag: Path, t0: float, faults: dict,
           values: dict, num_classes: int) -> dict:
    """The node's outputs against the drive's ground truth per phase of the drive, with
    :mod:`anyseg_ros.scoring` (the phases and the matching of process_bag: ``faults`` are
    the ``--drop`` windows of the replay, ``values`` the node's parameters); per phase also
    the frames in (ground-truth ticks) and out, the modalities used, latencies, and the
    scored frame nearest the phase's middle for the montage (``t0``: the drive's first
    stamp; "all sensors" is shown at 4 s)."""
    spans, gt = phases_of(bag, faults, values)
    scorer = PhaseScorer(spans, gt, values["sync.slop"], num_classes)
    labels_by_stamp = {round(conv.stamp_to_sec(m.header.stamp), 6):
                       np.array(conv.image_to_array(m)[0]) for m in labels_msgs}
    middles = {spans.name(*w): (lo + hi) / 2 for w, (lo, hi) in spans.spans.items()}
    latencies: dict[str, list] = {}
    picks: dict[str, tuple] = {}
    for s in status:
        pred = labels_by_stamp.get(round(s["stamp"], 6))
        phase, gt_stamp = scorer.add(s["stamp"], s["modalities"], pred)
        latencies.setdefault(phase, []).append(s["latency_ms"])
        if gt_stamp is None:
            continue
        s["gt_stamp"] = gt_stamp
        mid = middles.get(phase, t0 + 4.0)
        best = picks.get(phase)
        if best is None or abs(s["stamp"] - mid) < abs(best[1]["stamp"] - mid):
            picks[phase] = (phase, s, pred)
    order = [ALL_SENSORS] + list(dict.fromkeys(spans.name(*w) for w in spans.windows))
    return {"frames_in": scorer.ticks(), "frames_out": scorer.frames,
            "used": scorer.phase_sets, "latencies": latencies, "picks": picks,
            "miou": {p: scorer.miou(p) for p in scorer.per_phase}, "order": order}


def _report(out: Path, score: dict, intro: str, started: float) -> str:
    """summary.md (returned) and summary.json from :func:`_score`'s figures."""
    frames_in, frames_out, used = score["frames_in"], score["frames_out"], score["used"]
    latencies, mious = score["latencies"], score["miou"]
    all_lat = [v for vs in latencies.values() for v in vs]
    lines = [
        "# AnySeg demo", "", intro, "",
        "| phase | frames in (camera clock) | frames out | modalities used | latency p50 / p95 "
        "(ms) | mIoU |", "|---|---|---|---|---|---|"]
    for phase in score["order"]:
        if phase not in frames_in and phase not in frames_out:
            continue
        mods = ", ".join(f"{k} x{n}" for (p, k), n in sorted(used.items()) if p == phase)
        lat = latencies.get(phase) or [float("nan")]
        miou = mious.get(phase, float("nan"))
        lines.append(f"| {phase} | {frames_in[phase]} | {frames_out[phase]} | {mods or '-'} | "
                     f"{np.percentile(lat, 50):.0f} / {np.percentile(lat, 95):.0f} | "
                     f"{miou:.1f} |")
    lines += ["",
              f"Latency is the node's own (its clock at publishing minus the input stamp, on "
              f"the bag's /clock), all frames: p50 {np.percentile(all_lat, 50):.0f} ms, "
              f"p95 {np.percentile(all_lat, 95):.0f} ms. Modalities: C camera, E events, "
              "L LiDAR. mIoU in % against the drive's ground truth, over the classes present.",
              "", "Files: `montage.png` (inputs, prediction and ground truth for one frame of "
              "each phase), `timeline.png`, `node.log`, `play.log`.",
              f"Took {time.monotonic() - started:.0f} s."]
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    (out / "summary.json").write_text(json.dumps({
        "frames_in": frames_in, "frames_out": frames_out,
        "used": {f"{p}|{k}": n for (p, k), n in used.items()},
        "miou": mious,
        "latency_ms": {p: [float(np.percentile(v, 50)), float(np.percentile(v, 95))]
                       for p, v in latencies.items()}}, indent=1))
    return summary


def run_demo(out: Path, seconds: float = 24.0, faults_text: str = "lidar:8-13,camera:16-20",
             checkpoint: Optional[str] = None, size_hw: Sequence[int] = (144, 256),
             condition: str = "clear-day", seed: int = 3, domain_id: Optional[int] = None,
             keep_bag: bool = False) -> str:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    faults = bags.parse_windows(faults_text)
    ckpt = Path(checkpoint) if checkpoint else DEMO_CHECKPOINT
    meta = read_metadata(ckpt)
    palette = meta["palette"]

    print(f"[1/4] writing a {seconds:g} s drive ...", flush=True)
    bag = work / "drive"
    info = write_synthetic_bag(bag, seconds, condition, None, seed, size_hw, progress=False)
    t0 = info["t_start"]

    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.randint(1, 100))
    env["PYTHONUNBUFFERED"] = "1"
    # Large frames over shared memory (docs/ros.md, "Transport"), unless the user has a profile.
    with_profile(env, str(shipped_config(LARGE_FRAMES_PROFILE)))
    namespace = "/anyseg_demo"
    node_log = out / "node.log"
    node_cmd = [sys.executable, "-m", "anyseg_ros.node", "--ros-args",
                "--params-file", str(shipped_config()), "--params-file", info["params"],
                "-p", "use_sim_time:=true", "-r", f"__ns:={namespace}"]
    if checkpoint:
        node_cmd += ["-p", f"checkpoint:={Path(checkpoint).resolve()}"]
    print(f"[2/4] starting anyseg_node ({ckpt.name}; log {node_log}) ...", flush=True)
    with open(node_log, "wb") as log:
        node = subprocess.Popen(node_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: b"ready:" in node_log.read_bytes(), 300, "the node to start", node,
                  node_log)
        print(f"[3/4] replaying the bag ({seconds:g} s) with outages {faults_text} and "
              "recording the outputs ...", flush=True)
        play_cmd = [sys.executable, "-m", "anyseg_ros.tools.play", str(bag), "--clock",
                    "--namespace", namespace, "--wait-for", "/camera/image", "/events",
                    "/lidar/points", "--start-delay", "0.5"]
        play_cmd += ["--drop", faults_text] if faults else []
        labels_msgs, status = record(env, namespace, node, play_cmd, out / "play.log",
                                     timeout=seconds * 3 + 60)
    finally:
        interrupt(node, timeout=10)

    print("[4/4] scoring and drawing ...", flush=True)
    values = node_values([shipped_config(), info["params"]])
    score = _score(status, labels_msgs, bag, t0, faults, values, len(meta["class_names"]))
    picks = score["picks"]
    montage_png(out / "montage.png", [picks[p] for p in score["order"] if p in picks], bag,
                info["calibration"], palette)
    timeline_png(out / "timeline.png", status, t0, seconds, faults)
    intro = (f"A {seconds:g} s synthetic drive ({condition}, {size_hw[1]}x{size_hw[0]} camera) "
             "replayed with `python -m anyseg_ros.tools.play --clock"
             + (f" --drop {faults_text}` (sensor outages, seconds of the drive)" if faults
                else "` (no outages)")
             + " into `anyseg_node` (use_sim_time) "
             f"running `{ckpt.name}` on its default config; {len(status)} output frames "
             "recorded.")
    summary = _report(out, score, intro, started)
    if not keep_bag:
        shutil.rmtree(work, ignore_errors=True)
        Path(info["params"]).unlink(missing_ok=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anyseg_ros.tools.demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("demo_output"))
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--faults", default="lidar:8-13,camera:16-20")
    ap.add_argument("--checkpoint", help="default: the demo checkpoint shipped with the package")
    ap.add_argument("--size", type=int, nargs=2, default=(144, 256), metavar=("H", "W"),
                    help="camera size of the drive")
    ap.add_argument("--condition", default="clear-day")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: random 1..100)")
    ap.add_argument("--keep-bag", action="store_true", help="keep the bag in OUT/work")
    args = ap.parse_args(argv)
    try:
        summary = run_demo(args.out, args.seconds, args.faults, args.checkpoint, args.size,
                           args.condition, args.seed, args.domain_id, args.keep_bag)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    print()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
