"""Benchmark the ROS node: end-to-end latency against the bare Runtime, and memory over a long run.

    python benchmarks/bench_node.py [--checkpoint PATH] [--threads T] [--latency-frames N]
        [--runtime-thread worker|main] [--frames 5000] [--rate HZ] [--skip-latency]
        [--skip-memory] [--fastdds-defaults] [--backend B] [--runtime-backend B]

Latency. ``python -m anyseg_ros.node`` runs as a subprocess (config/anyseg.yaml, a
calibration params file, its own namespace, ``device:=cpu``, network 288x512, camera,
events and LiDAR), as the end-to-end test starts it. This process plays a hardware-
synchronised rig: for each frame of a pre-rendered synthetic drive (512x288 camera,
32-ring LiDAR, 256x144 event camera; ``anyseg_core.data.synthetic.sequence.drive`` with
the LiDAR in phase with the camera) it publishes camera/image, camera/camera_info,
lidar/points and events best-effort (``qos_profile_sensor_data``, like drivers), all
stamped with the same time: the wall time at which they are published. Labels come back
reliable to a subscription in this process; latency = wall time at reception - header
stamp. In the same run and on the same frames, ``Runtime.predict(raw_frame,
output_size=camera size)`` is timed in this process from a RawFrame of the raw numpy arrays
(prepare included). The two alternate frame by frame: a frame is published and its labels
(and the node's status message) are awaited, and the same frame goes through the Runtime
here, before or after (they take turns at going first); so no backlog forms, neither
process computes while the other is timed, and background load falls on both alike. The
first ``--warmup`` frames (discovery, first-message allocations) are left out of both.
The node's status topic adds its own view: ``inference_ms`` (pipeline.run: RawFrame
assembly, prepare, predict, colours) and ``latency_ms`` (stamp to labels and colours
published). Two processes on a loaded machine can differ in speed by more than the node's
overhead, so the same frame also goes, here, through the node's work without ROS (the
conversions of anyseg_ros.inputs and SegmentationPipeline.run), in turn with the Runtime:
e2e / Runtime = (pipeline.run / Runtime, one process) x (e2e / pipeline.run, the node) is
then read without the noise between processes. The node runs with
``sync.stale_after:=30``: frames come every second or so here, and the default 0.5 s would
call LiDAR and events stale between frames.

Memory. A second node runs at network 64x96 on a 96x160 rig (so thousands of frames take
minutes on a CPU), fed a loop of pre-rendered frames at ``--rate`` Hz with increasing
stamps (the node drops what it cannot keep up with: the count is of labels received). The
resident memory (VmRSS of /proc/PID/status) of the node process is read every 500 labels;
the figure is RSS after ``--frames`` labels / RSS after 500.

Torch threads: the node runs with torch's default (one per core) unless ``--threads T``,
which sets OMP_NUM_THREADS=T for the node and torch.set_num_threads(T) here. The Runtime here
is built and warmed up on the main thread and then predicts on one long-lived thread of its
own, as in the node (``--runtime-thread main`` keeps it on the main thread). That matters on
a CPU shared with other work: libgomp spins actively at every barrier unless it manages more
OpenMP threads than there are cores, and a process whose only team is the main thread's
then spins against the other load; the node, with a team on its main thread (warm-up) and
one on its worker, has its spinning throttled.

Transport: every process gets a Fast DDS profile with shared memory only and an 8 MiB
segment (``--fastdds-defaults`` keeps Fast DDS's defaults, under which a 512x288 frame of
the three sensors, 1.1 MB published at one instant, loses messages). Every process uses
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID in 30..99. Nothing is
written outside a temporary directory, removed at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy reads it
os.environ.pop("ROS_STATIC_PEERS", None)

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from anyseg_core.data.synthetic.rig import RigConfig
from anyseg_core.data.synthetic.sequence import drive, drive_calibration
from anyseg_core.runtime import BACKENDS, Runtime
from anyseg_core.sensors import Events, RawFrame
from anyseg_ros import conversions as conv
from anyseg_ros.inputs import payload_function
from anyseg_ros.payloads import Geometry
from anyseg_ros.pipeline import SegmentationPipeline
from anyseg_ros.sync import Frame, Stamped
from anyseg_ros.tools.fastdds import with_profile
from anyseg_ros.tools.processes import interrupt

TEACHER = REPO / "runs" / "experiment" / "teacher" / "final.safetensors"
CAMERA_FRAME = "bench_camera_optical"
SEED = 11
EVENT_WINDOW = 0.03  # the node's events.window default
LATENCY_RIG = RigConfig()  # 512x288 camera, 256x144 events, 32 x 480 LiDAR
LATENCY_NETWORK = (288, 512)
MEMORY_RIG = RigConfig(image_hw=(96, 160), lidar_columns=240)
MEMORY_NETWORK = (64, 96)
RSS_EVERY = 500
STALE_AFTER = 30.0  # seconds, for the latency part (see latency_part)
#: Fast DDS participant profile for every process of the benchmark: shared memory only (no
#: network transport at all), with an 8 MiB segment instead of the default 512 KiB. With the
#: default, the 1.1 MB a 512x288 frame of the three sensors makes, published at one instant,
#: does not fit in the publisher's segment and best-effort messages are lost (see --fastdds-
#: defaults).
FASTDDS_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>bench_shm</transport_id>
        <type>SHM</type>
        <segment_size>8388608</segment_size>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="bench_node" is_default_profile="true">
      <rtps>
        <userTransports><transport_id>bench_shm</transport_id></userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


# --------------------------------------------------------------------------- inputs


@dataclass
class SyncedFrame:
    """One frame of the rig, every sensor at drive time ``t``."""

    t: float
    image: np.ndarray     # H x W x 3 rgb8
    lidar: np.ndarray     # N x 6: x, y, z, intensity, ring, time (drive time)
    events: Events        # the packets ending in (t - window, t], times in drive time


def render_frames(n: int, rig: RigConfig) -> list[SyncedFrame]:
    """``n`` camera frames of a drive, each with the LiDAR sweep of the same stamp (the
    LiDAR in phase with the camera) and the events of the window before it."""
    cameras, lidars, packets = {}, {}, []
    # Frame 0 has no events before it, so one more frame is rendered and the first dropped.
    for msg in drive(SEED, (n + 1) * 0.1 + 1e-3, rig=rig, t0=0.0, lidar_phase=0.0):
        key = round(msg.stamp, 6)
        if msg.sensor == "camera":
            cameras[key] = msg.data["image"]
        elif msg.sensor == "lidar":
            lidars[key] = msg.data
        else:
            packets.append((msg.stamp, msg.data))
    frames = []
    for key in sorted(cameras)[1:n + 1]:
        window = [p for s, p in packets if key - EVENT_WINDOW + 1e-9 < s <= key + 1e-9]
        events = Events(*(np.concatenate([np.asarray(getattr(p, a)) for p in window])
                          for a in ("x", "y", "t", "p")))
        frames.append(SyncedFrame(key, cameras[key], lidars[key], events))
    return frames


def build_messages(frame: SyncedFrame, stamp: tuple[int, int], calib: dict) -> dict:
    """The rig's messages for ``frame``, stamped ``stamp`` (per-point times moved along)."""
    offset = stamp[0] + stamp[1] * 1e-9 - frame.t
    pts, ev = frame.lidar, frame.events
    return {
        "camera/image": conv.array_to_image(frame.image, "rgb8", stamp, CAMERA_FRAME,
                                            cls=Image),
        "camera/camera_info": conv.camera_info_msg(calib["K"], calib["image_hw"], stamp,
                                                   CAMERA_FRAME, cls=CameraInfo),
        "lidar/points": conv.points_to_cloud({
            "x": pts[:, 0].astype(np.float32), "y": pts[:, 1].astype(np.float32),
            "z": pts[:, 2].astype(np.float32), "intensity": pts[:, 3].astype(np.float32),
            "ring": pts[:, 4].astype(np.uint16), "t": pts[:, 5] + offset},
            stamp, "bench_lidar", cls=PointCloud2),
        "events": conv.points_to_cloud({
            "x": np.asarray(ev.x, np.uint16), "y": np.asarray(ev.y, np.uint16),
            "t": np.asarray(ev.t, np.float64) + offset, "p": np.asarray(ev.p, np.uint8)},
            stamp, "bench_events", cls=PointCloud2),
    }


def raw_frame(frame: SyncedFrame, calib: dict) -> RawFrame:
    """What the Runtime gets for ``frame``: the raw arrays, as an offline user has them."""
    return RawFrame(image_hw=tuple(calib["image_hw"]), K=np.asarray(calib["K"]), t_cam=frame.t,
                    camera=frame.image, lidar=frame.lidar[:, :4].astype(np.float32),
                    T_cam_lidar=np.asarray(calib["T_cam_lidar"]), events=frame.events,
                    events_K=np.asarray(calib["events_K"]),
                    events_hw=tuple(calib["events_hw"]),
                    T_cam_events=np.asarray(calib["T_cam_events"]))


def stamp_key(stamp) -> int:
    """Milliseconds of a header stamp: bench stamps are whole milliseconds, and the node's
    float round trip moves the nanoseconds by far less than 0.5 ms."""
    return round((stamp.sec * 1_000_000_000 + stamp.nanosec) / 1e6)


def ms_stamp(t: float) -> tuple[int, tuple[int, int]]:
    """Wall time ``t`` rounded up to a whole millisecond: (key, (sec, nanosec))."""
    ms = int(np.ceil(t * 1e3))
    return ms, (ms // 1000, (ms % 1000) * 1_000_000)


# --------------------------------------------------------------------------- processes


def flat(m) -> list[float]:
    return [float(v) for v in np.asarray(m, dtype=np.float64).reshape(-1)]


def write_calibration(path: Path, calib: dict) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "lidar": {"T_cam_lidar": flat(calib["T_cam_lidar"])},
        "events": {"K": flat(calib["events_K"]), "T_cam_events": flat(calib["T_cam_events"]),
                   "height": int(calib["events_hw"][0]), "width": int(calib["events_hw"][1])},
    }}}))
    return path


def ros_env(domain_id: int, threads: int) -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.pop("ROS_STATIC_PEERS", None)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class NodeProcess:
    """``python -m anyseg_ros.node`` in a namespace of its own, logging to a file."""

    def __init__(self, ckpt: Path, calib_file: Path, network: tuple[int, int], env: dict,
                 log: Path, params: tuple[str, ...] = ()) -> None:
        self.ns = f"/bench_{uuid.uuid4().hex[:8]}"
        self.log = log
        cmd = [sys.executable, "-m", "anyseg_ros.node", "--ros-args",
               "--params-file", str(REPO / "config" / "anyseg.yaml"),
               "--params-file", str(calib_file),
               "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu",
               "-p", f"network.height:={network[0]}", "-p", f"network.width:={network[1]}",
               *(a for p in params for a in ("-p", p)), "-r", f"__ns:={self.ns}"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 900.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready:" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit(f"the node did not start (exit {self.proc.poll()}):\n"
                         f"{self.log.read_text()[-3000:]}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        interrupt(self.proc, timeout=30)


class Rig:
    """This process's ROS side: the sensor publishers and the labels / status listener,
    spun on a thread of its own."""

    def __init__(self, context, ns: str, keep_labels: bool) -> None:
        self.node = rclpy.create_node(f"anyseg_bench_{uuid.uuid4().hex[:6]}", context=context)
        self.pubs = {topic: self.node.create_publisher(kind, f"{ns}/{topic}",
                                                       qos_profile_sensor_data)
                     for topic, kind in (("camera/image", Image),
                                         ("camera/camera_info", CameraInfo),
                                         ("lidar/points", PointCloud2),
                                         ("events", PointCloud2))}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Condition()
        self.labels: dict[int, float] = {}          # stamp key -> wall time received
        self.label_data: dict[int, np.ndarray] = {}
        self.status: dict[int, dict] = {}
        self.count = 0
        self.keep_labels = keep_labels
        self.on_label = None
        self.subs = [
            self.node.create_subscription(Image, f"{ns}/anyseg/labels", self._labels, qos),
            self.node.create_subscription(String, f"{ns}/anyseg/status", self._status, qos)]
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # shutting the context down ends the spin
            self.executor.spin()

    def _labels(self, msg) -> None:
        received = time.time()
        key = stamp_key(msg.header.stamp)
        with self.lock:
            self.labels[key] = received
            self.count += 1
            if self.keep_labels:
                self.label_data[key] = np.frombuffer(msg.data, np.uint8).reshape(
                    msg.height, msg.width).copy()
            self.lock.notify_all()
        if self.on_label is not None:
            self.on_label(self.count)

    def _status(self, msg) -> None:
        status = json.loads(msg.data)
        key = round(status["stamp"] * 1e3)
        with self.lock:
            if self.keep_labels:
                self.status[key] = status
            self.lock.notify_all()

    def connected(self) -> bool:
        return (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and all(s.get_publisher_count() > 0 for s in self.subs))

    def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.connected():
            if time.monotonic() > deadline:
                raise SystemExit("discovery: the node's topics never matched")
            time.sleep(0.05)

    def publish(self, messages: dict) -> None:
        for topic in ("camera/image", "camera/camera_info", "lidar/points", "events"):
            self.pubs[topic].publish(messages[topic])

    def wait_for(self, key: int, timeout: float, status: bool = True) -> bool:
        """Wait for the labels (and, with ``status``, the status message) of ``key``."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not (key in self.labels and (not status or key in self.status)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


# --------------------------------------------------------------------------- parts


def stats(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 95))


def latency_part(args, ckpt: Path, tmp: Path, domain_id: int, context) -> list[str]:
    calib = drive_calibration(LATENCY_RIG)
    # One frame every second or two here (inference, then the Runtime's turn): the node's
    # 0.5 s liveness window would call LiDAR and events stale between frames and emit
    # camera-only frames, so it is widened; everything else is config/anyseg.yaml's.
    node = NodeProcess(ckpt, write_calibration(tmp / "calib_latency.yaml", calib),
                       LATENCY_NETWORK, ros_env(domain_id, args.threads), tmp / "node_latency.log",
                       params=(f"sync.stale_after:={STALE_AFTER}", f"backend:={args.backend}"))
    rig = pool = None
    try:
        n_total = args.warmup + args.latency_frames
        loop = min(n_total, args.loop)
        t0 = time.perf_counter()
        frames = render_frames(loop, LATENCY_RIG)
        print(f"rendered {len(frames)} frames at {LATENCY_RIG.image_hw[1]}x"
              f"{LATENCY_RIG.image_hw[0]} in {time.perf_counter() - t0:.1f} s "
              f"(events per frame: median {int(np.median([len(f.events) for f in frames]))}, "
              f"LiDAR points: {len(frames[0].lidar)})", flush=True)
        raws = [raw_frame(f, calib) for f in frames]
        # As in the node: built and warmed up on the main thread, then run on one long-lived
        # thread of its own (unless --runtime-thread main; see the module docstring).
        runtime = Runtime(ckpt, device="cpu", input_size=LATENCY_NETWORK, warmup=True,
                          backend=args.runtime_backend or args.backend,
                          threads=args.threads)
        if args.runtime_thread == "worker":
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-runtime")
        out_hw = tuple(calib["image_hw"])

        pipeline = SegmentationPipeline(runtime, ("camera", "events", "lidar"))
        geometry = Geometry(K=np.asarray(calib["K"]), image_hw=out_hw, frame_id=CAMERA_FRAME,
                            T_cam_lidar=np.asarray(calib["T_cam_lidar"]),
                            events_K=np.asarray(calib["events_K"]),
                            events_hw=tuple(calib["events_hw"]),
                            T_cam_events=np.asarray(calib["T_cam_events"]))

        def timed_predict(raw):
            start = time.perf_counter()
            labels = runtime.predict(raw, output_size=out_hw).labels.numpy()
            return (time.perf_counter() - start) * 1e3, labels

        def timed_pipeline(messages):
            """The node's work on one frame, without ROS transport: conversion of the three
            messages (the executor's callbacks), then pipeline.run (the worker)."""
            start = time.perf_counter()
            stamp = conv.stamp_to_sec(messages["camera/image"].header.stamp)
            items = {m: [Stamped(stamp, 0.0, payload_function(m)(messages[topic], geometry))]
                     for m, topic in (("camera", "camera/image"), ("events", "events"),
                                      ("lidar", "lidar/points"))}
            converted = time.perf_counter()
            result = pipeline.run(Frame(stamp, "camera", items, {m: True for m in items}, 0,
                                        0.0), geometry)
            done = time.perf_counter()
            return (converted - start) * 1e3, (done - converted) * 1e3, result.labels

        def local(raw, messages, runtime_first):
            """Runtime and pipeline on the same frame, here, taking turns at going first."""
            def both():
                if runtime_first:
                    a = timed_predict(raw)
                    return a, timed_pipeline(messages)
                b = timed_pipeline(messages)
                return timed_predict(raw), b
            return both() if pool is None else pool.submit(both).result()

        def predict(raw):
            return timed_predict(raw) if pool is None else pool.submit(timed_predict, raw).result()

        first = [predict(raws[i % loop])[0] for i in range(3)]
        print(f"Runtime here: {np.median(first):.0f} ms a frame at first", flush=True)
        node.wait_ready()
        print(f"node ready ({node.ns}); pid {node.proc.pid}", flush=True)
        rig = Rig(context, node.ns, keep_labels=True)
        rig.wait_connected()
        time.sleep(0.5)
        timeout = max(10.0, 20 * np.median(first) / 1e3)
        e2e, rt, pipe, conv_ms, node_inf, node_lat, agree, periods = ([] for _ in range(8))
        missing = partial = 0
        last_publish = None
        for i in range(n_total):
            frame, raw = frames[i % loop], raws[i % loop]
            local_first = i % 2 == 1  # the node and this process take turns at going first
            if local_first:
                _, own_stamp = ms_stamp(time.time())
                here = local(raw, build_messages(frame, own_stamp, calib), i % 4 == 1)
            key, stamp = ms_stamp(time.time() + 0.02)  # messages are built in these 20 ms
            messages = build_messages(frame, stamp, calib)
            delay = key / 1e3 - time.time()
            if delay > 0:
                time.sleep(delay)
            rig.publish(messages)
            if last_publish is not None:
                periods.append(key / 1e3 - last_publish)
            last_publish = key / 1e3
            if not rig.wait_for(key, timeout):
                missing += 1
                print(f"frame {i}: no labels within {timeout:.0f} s", flush=True)
                continue
            if not local_first:
                _, own_stamp = ms_stamp(time.time())
                here = local(raw, build_messages(frame, own_stamp, calib), i % 4 == 0)
            if i < args.warmup:
                continue
            (ms, labels), (c_ms, p_ms, p_labels) = here
            with rig.lock:
                received, status = rig.labels[key], rig.status[key]
                got = rig.label_data.pop(key)
            if sorted(status["modalities"]) != ["camera", "events", "lidar"]:
                partial += 1
                print(f"frame {i}: the node used {status['modalities']} "
                      f"(left out: {status['left_out']})", flush=True)
            e2e.append((received - key / 1e3) * 1e3)
            rt.append(ms)
            pipe.append(p_ms)
            conv_ms.append(c_ms)
            node_inf.append(status["inference_ms"])
            node_lat.append(status["latency_ms"])
            agree.append(min(float((got == labels).mean()), float((p_labels == labels).mean())))
        rss = node.rss_mib()
    finally:
        node.stop()
        if rig is not None:
            rig.close()
        if pool is not None:
            pool.shutdown()
    if not e2e:
        raise SystemExit(f"only {len(e2e)} frames measured ({missing} missing):\n"
                         f"{node.log.read_text()[-3000:]}")
    (rt_m, rt_p), (e_m, e_p), (pi_m, pi_p) = stats(rt), stats(e2e), stats(pipe)
    (ni_m, ni_p), (nl_m, nl_p), (c_m, c_p) = stats(node_inf), stats(node_lat), stats(conv_ms)
    pipe_vs_rt, around = stats(np.divide(pipe, rt)), stats(np.divide(e2e, node_inf))
    print(f"\n{len(e2e)} frames measured after {args.warmup} warm-up, {missing} without "
          f"labels, {partial} without all three modalities; publish period median "
          f"{np.median(periods):.2f} s; labels of the node and of the pipeline here agree with "
          f"the Runtime's on {100 * np.mean(agree):.2f} % of pixels (min "
          f"{100 * np.min(agree):.2f} %); node RSS {rss:.0f} MiB\n", flush=True)
    rows = [
        "| 288x512, camera + events + LiDAR, CPU | median | p95 |",
        "|---|---:|---:|",
        (f"| Runtime.predict(RawFrame) here ({args.runtime_thread} thread), prepare included, "
         f"ms | {rt_m:.1f} | {rt_p:.1f} |"),
        (f"| the node's work without ROS, here: conversion of the 3 messages, ms | {c_m:.1f} "
         f"| {c_p:.1f} |"),
        f"| ... then SegmentationPipeline.run, ms | {pi_m:.1f} | {pi_p:.1f} |",
        f"| node: pipeline.run (status inference_ms), ms | {ni_m:.1f} | {ni_p:.1f} |",
        (f"| node: stamp -> labels and colours published (status latency_ms), ms | "
         f"{nl_m:.1f} | {nl_p:.1f} |"),
        f"| **end to end: stamp -> labels received here, ms** | **{e_m:.1f}** | **{e_p:.1f}** |",
        (f"| e2e - node's pipeline.run (transport both ways, conversion, sync, publish), ms | "
         f"{np.median(np.subtract(e2e, node_inf)):.1f} | "
         f"{np.percentile(np.subtract(e2e, node_inf), 95):.1f} |"),
        (f"| **e2e / Runtime** (target <= 1.15), two processes | **{e_m / rt_m:.2f}** | "
         f"{e_p / rt_p:.2f} |"),
        (f"| (a) pipeline.run / Runtime, one process, frame by frame | {pipe_vs_rt[0]:.3f} | "
         f"{pipe_vs_rt[1]:.3f} |"),
        (f"| (b) e2e / pipeline.run, in the node, frame by frame | {around[0]:.3f} | "
         f"{around[1]:.3f} |"),
        (f"| (a) x (b): e2e / Runtime without the noise between processes | "
         f"{pipe_vs_rt[0] * around[0]:.3f} | |"),
    ]
    return rows


def memory_part(args, ckpt: Path, tmp: Path, domain_id: int, context) -> list[str]:
    calib = drive_calibration(MEMORY_RIG)
    node = NodeProcess(ckpt, write_calibration(tmp / "calib_memory.yaml", calib),
                       MEMORY_NETWORK, ros_env(domain_id, args.threads), tmp / "node_memory.log",
                       params=(f"backend:={args.backend}",))
    rss_at: dict[int, float] = {}
    rig = None
    try:
        frames = render_frames(args.loop, MEMORY_RIG)
        node.wait_ready()
        rss_at[0] = node.rss_mib()
        print(f"memory: node ready ({node.ns}), RSS {rss_at[0]:.0f} MiB", flush=True)
        rig = Rig(context, node.ns, keep_labels=False)
        done = threading.Event()

        def on_label(count: int) -> None:
            if count % RSS_EVERY == 0 and count not in rss_at:
                rss_at[count] = node.rss_mib()
                print(f"  {count} labels: RSS {rss_at[count]:.1f} MiB", flush=True)
            if count >= args.frames:
                done.set()

        rig.on_label = on_label
        rig.wait_connected()
        time.sleep(0.5)
        period = 1.0 / args.rate
        start = time.monotonic()
        next_t, published = time.time(), 0
        while not done.is_set():
            if node.proc.poll() is not None:
                raise SystemExit(f"the node died:\n{node.log.read_text()[-3000:]}")
            if time.monotonic() - start > args.memory_timeout:
                raise SystemExit(f"memory part: only {rig.count} labels in "
                                 f"{args.memory_timeout} s")
            delay = next_t - time.time()
            if delay > 0:
                time.sleep(delay)
            _, stamp = ms_stamp(time.time())
            rig.publish(build_messages(frames[published % len(frames)], stamp, calib))
            published += 1
            next_t += period
            if next_t < time.time() - period:  # fell behind (this process was starved)
                next_t = time.time()
        elapsed = time.monotonic() - start
        received = rig.count
    finally:
        node.stop()
        if rig is not None:
            rig.close()
    first, last = rss_at.get(RSS_EVERY), rss_at[max(rss_at)]
    print(f"\nmemory: {published} frames published at {args.rate:g} Hz, {received} labels "
          f"received in {elapsed:.0f} s ({received / elapsed:.1f} Hz)\n", flush=True)
    series = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(rss_at.items()))
    return [
        "| node RSS, 64x96 network, 96x160 rig | MiB |",
        "|---|---:|",
        f"| after start (warm-up done, no frame yet) | {rss_at[0]:.1f} |",
        f"| after {RSS_EVERY} labels | {first:.1f} |",
        f"| after {max(rss_at)} labels | {last:.1f} |",
        (f"| **after {max(rss_at)} / after {RSS_EVERY}** (target <= 1.05) | "
         f"**{last / first:.3f}** |"),
        "",
        f"RSS (MiB) by labels received: {series}",
    ]


# --------------------------------------------------------------------------- main


def checkpoint(args, tmp: Path) -> tuple[Path, str]:
    if args.checkpoint is not None:
        return args.checkpoint, f"{args.checkpoint} (given)"
    if TEACHER.is_file():
        return TEACHER, f"{TEACHER.relative_to(REPO)} (the experiment's teacher)"
    out = tmp / "tiny"
    print("no checkpoint given and no experiment teacher: training a tiny one", flush=True)
    subprocess.run([sys.executable, "-m", "anyseg_core.train", "--config",
                    "config/train_tiny.yaml", "--set", f"out_dir={out}",
                    "--set", "optim.steps=2", "--set", "model.embed_dim=128"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out / "final.safetensors", ("a tiny checkpoint (config/train_tiny.yaml, 2 steps, "
                                       "embed_dim 128): weights untrained, timing only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"default: {TEACHER.relative_to(REPO)} if it exists, else a tiny "
                             "checkpoint trained here")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the node (OMP_NUM_THREADS) and of this process; "
                             "0 = torch's default")
    parser.add_argument("--latency-frames", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loop", type=int, default=40, help="distinct frames rendered")
    parser.add_argument("--frames", type=int, default=5000,
                        help="labels to receive in the memory part")
    parser.add_argument("--rate", type=float, default=30.0,
                        help="publish rate (Hz) of the memory part")
    parser.add_argument("--memory-timeout", type=float, default=3600.0)
    parser.add_argument("--fastdds-defaults", action="store_true",
                        help="keep Fast DDS's default transports (UDP on loopback + 512 KiB "
                             "shared memory) instead of the 8 MiB shared-memory profile")
    parser.add_argument("--runtime-thread", choices=("worker", "main"), default="worker",
                        help="where this process runs Runtime.predict: a thread of its own, "
                             "as the node does (default), or the main thread")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="the node's backend parameter (and the Runtime's here)")
    parser.add_argument("--runtime-backend", choices=BACKENDS,
                        help="the Runtime's backend here, when not --backend: "
                             "--backend openvino --runtime-backend torch sets the node on "
                             "OpenVINO against PyTorch in one run")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if not args.skip_memory and args.frames < RSS_EVERY:
        parser.error(f"--frames must be at least {RSS_EVERY}")

    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    domain_id = random.randint(30, 99)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp_name:
        tmp = Path(tmp_name)
        # Exports of the exported backends (made once, shared by the node and this process).
        os.environ.setdefault("ANYSEG_CACHE", str(tmp / "exports"))
        ckpt, ckpt_text = checkpoint(args, tmp)
        transport = "Fast DDS defaults (UDP loopback + 512 KiB shared memory)"
        if not args.fastdds_defaults:  # before any participant exists; subprocesses inherit
            profile = tmp / "fastdds_profile.xml"
            profile.write_text(FASTDDS_PROFILE)
            with_profile(os.environ, str(profile), keep_users=False)
            transport = "Fast DDS shared memory only, 8 MiB segment"
        node_threads = (f"{args.threads} (OMP_NUM_THREADS)" if args.threads else
                        f"torch default, {default_threads}"
                        + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} inherited)"
                           if "OMP_NUM_THREADS" in os.environ else ""))
        header = (f"checkpoint {ckpt_text}; CPU, {os.cpu_count()} cores; torch threads: node "
                  f"{node_threads}, this process {torch.get_num_threads()}; torch "
                  f"{torch.__version__}; {transport}; ROS_DOMAIN_ID {domain_id}, localhost "
                  f"only; load average at start {os.getloadavg()[0]:.2f}")
        print(header, flush=True)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        tables = []
        try:
            if not args.skip_latency:
                tables.append(latency_part(args, ckpt, tmp, domain_id, context))
            if not args.skip_memory:
                tables.append(memory_part(args, ckpt, tmp, domain_id, context))
        finally:
            rclpy.try_shutdown(context=context)
    print(f"{header}; at the end {os.getloadavg()[0]:.2f}\n")
    for rows in tables:
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
