"""The AnySeg ROS 2 node: anymodal semantic segmentation that survives dead sensors.

    anyseg_node --ros-args --params-file config/anyseg.yaml -p checkpoint:=model.safetensors
    python -m anyseg_ros.node ...   (the same)

Thin glue: messages are validated and converted by :mod:`anyseg_ros.conversions` in the
subscription callbacks, grouped in time by :class:`anyseg_ros.sync.AnymodalSynchronizer`,
and segmented by :class:`anyseg_ros.pipeline.SegmentationPipeline` on a worker thread, so
the executor keeps receiving while the model runs. Topics are relative (namespaces and
remapping work); parameters are declared below with their descriptions, and
``config/anyseg.yaml`` documents them for users.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from anyseg_core.checkpoint import CheckpointError
from anyseg_core.modalities import ALL_MODALITIES, CAMERA, DEPTH, EVENTS, LIDAR
from anyseg_core.runtime import PRECISIONS, Runtime

from . import conversions as conv
from .pipeline import (OUTPUT_RESOLUTIONS, CameraImage, DepthImage, EventImage, FrameSkipped,
                       Geometry, Segmentation, SegmentationPipeline, with_geometry)
from .sync import AnymodalSynchronizer

NODE_NAME = "anyseg"
# The pivot order when the camera is gone: LiDAR and depth give a whole frame each, event
# packets only a slice, so they lead last.
PIVOT_ORDER = (CAMERA, LIDAR, DEPTH, EVENTS)
INPUT_TOPICS = {CAMERA: "camera/image", LIDAR: "lidar/points", EVENTS: "events",
                DEPTH: "depth/image"}
CAMERA_INFO_TOPIC = "camera/camera_info"
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "models" / "demo.safetensors"
LOG_THROTTLE_S = 5.0
RATE_WINDOW_S = 2.0  # sensor rates are counted over this many seconds


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``default`` None = no default (an array set by users)."""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    type_: Optional[Parameter.Type] = None
    range: Optional[tuple[float, float]] = None


PARAMS = [
    Param("checkpoint", "", "path of a .safetensors checkpoint; empty = the bundled demo "
          "checkpoint"),
    Param("device", "auto", "auto | cpu | cuda | cuda:N"),
    Param("precision", "fp32", "fp32 | fp16 | bf16 (fp16 needs CUDA)"),
    Param("modalities", [CAMERA, EVENTS, LIDAR], "modalities subscribed to and fused: any "
          "non-empty subset of the checkpoint's (camera, events, lidar, depth)"),
    Param("network.height", 288, "network input height in pixels (multiple of 32)"),
    Param("network.width", 512, "network input width in pixels (multiple of 32)"),
    Param("output.resolution", "camera", "camera (labels at the camera image size) | network",
          dynamic=True),
    Param("sync.slop", 0.05, "seconds: inputs join a frame when their stamps are this close",
          dynamic=True, range=(0.0, 1.0)),
    Param("sync.max_wait", 0.1, "seconds to wait for live sensors before running with "
          "whatever arrived", dynamic=True, range=(0.0, 5.0)),
    Param("sync.stale_after", 0.5, "seconds without messages after which a sensor is stale",
          dynamic=True, range=(0.01, 60.0)),
    Param("sync.max_future", 1.0, "seconds: messages stamped further ahead of the node's "
          "clock are rejected", dynamic=True, range=(0.0, 3600.0)),
    Param("qos.reliability", "best_effort", "best_effort (sensor drivers) | reliable"),
    Param("qos.depth", 5, "history depth of subscriptions and publishers", range=(1, 1000)),
    Param("events.type", "pointcloud", "pointcloud (x, y, t, p) | image (a rendered frame)"),
    Param("events.window", 0.03, "seconds of events accumulated into one frame", dynamic=True,
          range=(0.001, 1.0)),
    Param("events.K", None, "event camera intrinsics, row-major 3x3; unset = the camera's",
          dynamic=True, type_=Parameter.Type.DOUBLE_ARRAY),
    Param("events.T_cam_events", None, "event camera to camera, row-major 4x4; unset = "
          "identity", dynamic=True, type_=Parameter.Type.DOUBLE_ARRAY),
    Param("events.height", 0, "event camera height in pixels; 0 = the camera's"),
    Param("events.width", 0, "event camera width in pixels; 0 = the camera's"),
    Param("lidar.min_range", 1.0, "metres; nearer LiDAR points are dropped", dynamic=True,
          range=(0.0, 100.0)),
    Param("lidar.T_cam_lidar", None, "LiDAR to camera, row-major 4x4 (p_cam = T p_lidar); "
          "unset = identity", dynamic=True, type_=Parameter.Type.DOUBLE_ARRAY),
    Param("camera.K", None, "camera intrinsics, row-major 3x3, used until a CameraInfo "
          "arrives", dynamic=True, type_=Parameter.Type.DOUBLE_ARRAY),
    Param("camera.height", 0, "camera image height, used with camera.K until a CameraInfo or "
          "image arrives; 0 = 2 * cy + 1 of camera.K"),
    Param("camera.width", 0, "camera image width (see camera.height); 0 = 2 * cx + 1"),
    Param("palette", None, "class colours r, g, b, r, g, b, ... (0..255); unset = the "
          "checkpoint's", dynamic=True, type_=Parameter.Type.INTEGER_ARRAY),
    Param("overlay.alpha", 0.5, "opacity of the class colours over the camera image",
          dynamic=True, range=(0.0, 1.0)),
    Param("confidence.enabled", False, "also publish anyseg/confidence (32FC1)", dynamic=True),
    Param("diagnostics.period", 1.0, "seconds between /diagnostics messages",
          range=(0.05, 60.0)),
]
PARAMS_BY_NAME = {p.name: p for p in PARAMS}
# Parameters every rclpy node has, or that rclpy reads itself.
BUILTIN_PARAMS = ("use_sim_time", "start_type_description_service")


class ConfigError(ValueError):
    """A parameter value the node cannot run with."""


def _matrix(name: str, value, shape: tuple[int, int]) -> Optional[np.ndarray]:
    if value is None or len(value) == 0:
        return None
    if len(value) != shape[0] * shape[1]:
        raise ConfigError(f"{name} must have {shape[0] * shape[1]} numbers (row-major "
                          f"{shape[0]}x{shape[1]}), got {len(value)}")
    m = np.asarray(value, dtype=np.float64).reshape(shape)
    if not np.isfinite(m).all():
        raise ConfigError(f"{name} has non-finite entries")
    if shape == (3, 3) and (m[0, 0] <= 0 or m[1, 1] <= 0 or abs(np.linalg.det(m)) < 1e-12):
        raise ConfigError(f"{name} is not a camera matrix (focal lengths must be positive)")
    if shape == (4, 4):
        R = m[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or not np.allclose(
                m[3], [0, 0, 0, 1]):
            raise ConfigError(f"{name} is not a rigid transform (rotation not orthonormal or "
                              "last row not 0 0 0 1)")
    return m


def check_value(name: str, value) -> None:
    """Raise ConfigError when ``value`` is not acceptable for parameter ``name``."""
    choices = {"device": None, "precision": PRECISIONS, "output.resolution": OUTPUT_RESOLUTIONS,
               "qos.reliability": ("best_effort", "reliable"),
               "events.type": ("pointcloud", "image")}
    if name in choices and choices[name] is not None and value not in choices[name]:
        raise ConfigError(f"{name} must be one of {list(choices[name])}, got {value!r}")
    if name == "modalities":
        bad = [m for m in value if m not in ALL_MODALITIES]
        if bad or not value or len(set(value)) != len(value):
            raise ConfigError(f"modalities must be a non-empty list of distinct names from "
                              f"{list(ALL_MODALITIES)}, got {list(value)}")
    if name in ("network.height", "network.width") and (value <= 0 or value % 32):
        raise ConfigError(f"{name} must be a positive multiple of 32, got {value}")
    if name in ("events.height", "events.width", "camera.height", "camera.width") and value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    if name in ("events.K", "camera.K"):
        _matrix(name, value, (3, 3))
    if name in ("events.T_cam_events", "lidar.T_cam_lidar"):
        _matrix(name, value, (4, 4))
    if name == "palette" and value is not None and len(value):
        if len(value) % 3 or any(not 0 <= v <= 255 for v in value):
            raise ConfigError("palette must be r, g, b triples of integers 0..255, got "
                              f"{len(value)} numbers")


@dataclass
class SensorHealth:
    """What /diagnostics and the status topic report for one input."""

    received: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped_points: int = 0  # non-finite points removed from otherwise valid clouds
    last_arrival: Optional[float] = None  # node clock, seconds
    last_stamp: Optional[float] = None
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # wall arrival times
    rejected_at_last_report: int = 0

    def rate(self, wall_now: float) -> float:
        while self.recent and wall_now - self.recent[0] > RATE_WINDOW_S:
            self.recent.popleft()
        return len(self.recent) / RATE_WINDOW_S


class AnysegNode(Node):
    """Subscribes to the sensors, segments whatever is alive, publishes labels and colours."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._lock = threading.Lock()  # guards sync, health, geometry swaps
        self._wake = threading.Event()
        self._stop = threading.Event()
        values = {p.name: self._param_value(p.name) for p in PARAMS}
        for name, value in values.items():
            check_value(name, value)
        self._values = values
        self._camera_info_seen = False

        ckpt = values["checkpoint"] or str(DEMO_CHECKPOINT)
        if not Path(ckpt).is_file():
            raise ConfigError(f"checkpoint {ckpt!r} does not exist" + (
                "" if values["checkpoint"] else " (no checkpoint parameter was given and the "
                "bundled demo checkpoint is not installed: set checkpoint:=PATH)"))
        size = (values["network.height"], values["network.width"])
        self.get_logger().info(f"loading {ckpt} on {values['device']} ({values['precision']}), "
                               f"network {size[0]}x{size[1]}; warming up every subset")
        self.runtime = Runtime(ckpt, device=values["device"], precision=values["precision"],
                               input_size=size, warmup=True)
        self.modalities = tuple(values["modalities"])
        missing = [m for m in self.modalities if m not in self.runtime.modalities]
        if missing:
            raise ConfigError(f"modalities {missing} are not in the checkpoint {ckpt}, which "
                              f"has {list(self.runtime.modalities)}")
        self.pipeline = SegmentationPipeline(
            self.runtime, self.modalities, event_window=values["events.window"],
            lidar_min_range=values["lidar.min_range"],
            output_resolution=values["output.resolution"])
        self._palette_default = self.runtime.palette.clone()
        self._apply_palette(values["palette"])
        self.geometry = self._geometry_from_params(Geometry())
        self.health = {m: SensorHealth() for m in (*self.modalities, "camera_info")}
        self.frames_out = 0
        self.frames_failed = 0
        self.latencies = deque(maxlen=200)  # ms, input stamp to publish
        self.inference_ms = deque(maxlen=200)
        self.sync = self._make_sync(values)

        qos_in = QoSProfile(depth=values["qos.depth"], history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.BEST_EFFORT
                            if values["qos.reliability"] == "best_effort"
                            else ReliabilityPolicy.RELIABLE)
        qos_out = QoSProfile(depth=values["qos.depth"], history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._subscribe(qos_in, values["events.type"])
        self.pub_labels = self.create_publisher(Image, "anyseg/labels", qos_out)
        self.pub_color = self.create_publisher(Image, "anyseg/color", qos_out)
        self.pub_overlay = self.create_publisher(Image, "anyseg/overlay", qos_out)
        self.pub_confidence = self.create_publisher(Image, "anyseg/confidence", qos_out)
        self.pub_status = self.create_publisher(String, "anyseg/status", qos_out)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(values["diagnostics.period"], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="anyseg-inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: modalities {list(self.modalities)}, device {self.runtime.device}, "
            f"inputs {[self.resolve_topic_name(INPUT_TOPICS[m]) for m in self.modalities]}")

    # -- parameters ----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for p in PARAMS:
            desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic)
            if p.range is not None and isinstance(p.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(p.range[0]), to_value=float(p.range[1]))]
            self.declare_parameter(p.name, p.type_ if p.default is None else p.default, desc)
        declared = {p.name for p in PARAMS}
        unknown = sorted(name for name in getattr(self, "_parameter_overrides", {})
                         if name not in declared and name not in BUILTIN_PARAMS
                         and not name.startswith("qos_overrides."))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} (typo in the params file?); "
                              f"the node has {sorted(declared)}")

    def _param_value(self, name: str):
        """The value of a declared parameter; None for an array nobody set."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _geometry_from_params(self, geometry: Geometry) -> Geometry:
        v = self._values
        changes: dict[str, Any] = {
            "T_cam_lidar": _matrix("lidar.T_cam_lidar", v["lidar.T_cam_lidar"], (4, 4)),
            "T_cam_events": _matrix("events.T_cam_events", v["events.T_cam_events"], (4, 4)),
            "events_K": _matrix("events.K", v["events.K"], (3, 3)),
        }
        if changes["T_cam_lidar"] is None:
            changes["T_cam_lidar"] = np.eye(4)
        if v["events.height"] and v["events.width"]:
            changes["events_hw"] = (v["events.height"], v["events.width"])
        if not self._camera_info_seen:  # a CameraInfo, once received, wins over camera.K
            K = _matrix("camera.K", v["camera.K"], (3, 3))
            hw = None
            if K is not None:
                hw = (v["camera.height"] or int(round(2 * K[1, 2] + 1)),
                      v["camera.width"] or int(round(2 * K[0, 2] + 1)))
            changes.update(K=K, image_hw=hw)
        return with_geometry(geometry, **changes)

    def _apply_palette(self, palette) -> None:
        self.runtime.palette.copy_(self._palette_default)
        if palette:
            colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
            self.runtime.palette[: len(colours)] = self.runtime.palette.new_tensor(colours)

    def _make_sync(self, v: dict) -> AnymodalSynchronizer:
        windows = {EVENTS: v["events.window"]} if (
            EVENTS in self.modalities and v["events.type"] == "pointcloud") else None
        return AnymodalSynchronizer(
            self.modalities, slop=v["sync.slop"], max_wait=v["sync.max_wait"],
            stale_after=v["sync.stale_after"],
            pivot_order=[m for m in PIVOT_ORDER if m in self.modalities], windows=windows)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        try:
            for p in params:
                if p.name in PARAMS_BY_NAME:
                    check_value(p.name, p.value)
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        with self._lock:
            for p in params:
                if p.name in PARAMS_BY_NAME:
                    self._values[p.name] = p.value
            v = self._values
            self.geometry = self._geometry_from_params(self.geometry)
            self.pipeline.event_window = v["events.window"]
            self.pipeline.lidar_min_range = v["lidar.min_range"]
            self.pipeline.output_resolution = v["output.resolution"]
            self._apply_palette(v["palette"])
            if any(p.name.startswith("sync.") or p.name == "events.window" for p in params):
                self.sync = self._make_sync(v)  # a fresh synchroniser: one frame is lost
        return SetParametersResult(successful=True)

    # -- inputs --------------------------------------------------------------------------
    def _subscribe(self, qos: QoSProfile, events_type: str) -> None:
        handlers: dict[str, tuple[type, Callable]] = {
            CAMERA: (Image, self._camera_payload),
            LIDAR: (PointCloud2, self._lidar_payload),
            DEPTH: (Image, self._depth_payload),
            EVENTS: (Image, self._event_image_payload) if events_type == "image"
            else (PointCloud2, self._events_payload),
        }
        for mod in self.modalities:
            msg_type, payload = handlers[mod]
            self.create_subscription(msg_type, INPUT_TOPICS[mod],
                                     lambda msg, m=mod, f=payload: self._receive(m, msg, f),
                                     qos)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._camera_info, qos)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, sensor: str, error: conv.InvalidMessage) -> None:
        with self._lock:
            self.health[sensor].rejected[error.reason] += 1
        self.get_logger().warning(f"{sensor}: rejected a message ({error.reason}): "
                                  f"{error.detail}", throttle_duration_sec=LOG_THROTTLE_S)

    def _receive(self, sensor: str, msg, payload: Callable) -> None:
        """Validate and convert one message, then hand it to the synchroniser. Cheap: no
        inference here, so the executor keeps receiving."""
        now = self._now()
        health = self.health[sensor]
        health.received += 1
        try:
            stamp = conv.stamp_to_sec(msg.header.stamp)
            conv.check_stamp(stamp, now if now > 0 else None, self._values["sync.max_future"])
            data = payload(msg)
        except conv.InvalidMessage as e:
            self._reject(sensor, e)
            return
        with self._lock:
            health.accepted += 1
            health.last_arrival, health.last_stamp = now, stamp
            health.recent.append(time.monotonic())
            self.sync.add(sensor, stamp, data, now)
        self._wake.set()

    def _camera_payload(self, msg) -> CameraImage:
        array, encoding = conv.image_to_array(msg, conv.CAMERA_ENCODINGS)
        return CameraImage(array, encoding, msg.header.frame_id)

    def _depth_payload(self, msg) -> DepthImage:
        return DepthImage(*conv.image_to_array(msg, conv.DEPTH_ENCODINGS))

    def _event_image_payload(self, msg) -> EventImage:
        array, _ = conv.image_to_array(msg, conv.EVENT_IMAGE_ENCODINGS)
        if array.ndim != 3 or array.shape[2] != 3:
            raise conv.InvalidMessage("unknown_encoding", "an event image needs 3 channels "
                                      "(positive, negative, third), got "
                                      f"{msg.encoding}")
        return EventImage(array)

    def _lidar_payload(self, msg) -> np.ndarray:
        points, dropped = conv.lidar_points(msg)
        if dropped:
            self.health[LIDAR].dropped_points += dropped
        return points

    def _events_payload(self, msg):
        g = self.geometry
        size = g.events_hw or (g.image_hw if g.events_K is None else None)
        return conv.events_from_cloud(msg, size)

    def _camera_info(self, msg) -> None:
        health = self.health["camera_info"]
        health.received += 1
        try:
            K, hw = conv.camera_info(msg)
        except conv.InvalidMessage as e:
            self._reject("camera_info", e)
            return
        with self._lock:
            health.accepted += 1
            health.last_arrival = self._now()
            health.last_stamp = conv.stamp_to_sec(msg.header.stamp)
            health.recent.append(time.monotonic())
            self._camera_info_seen = True
            self.geometry = with_geometry(self.geometry, K=K, image_hw=hw,
                                          frame_id=msg.header.frame_id or self.geometry.frame_id)

    # -- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        """Take the newest ready frame, segment it, publish; sleep until the next message or
        the synchroniser's next deadline."""
        while not self._stop.is_set():
            self._wake.clear()  # before polling: a message arriving from here on wakes us
            now = self._now()
            with self._lock:
                frame = self.sync.poll(now)
                deadline = self.sync.next_deadline() if frame is None else None
                geometry, values = self.geometry, dict(self._values)
            if frame is None:
                timeout = 0.05 if deadline is None else min(0.05, max(deadline - now, 0.001))
                self._wake.wait(timeout)
                continue
            try:
                want_overlay = self.pub_overlay.get_subscription_count() > 0
                result = self.pipeline.run(
                    frame, geometry, overlay_alpha=values["overlay.alpha"] if want_overlay
                    else None, confidence=values["confidence.enabled"])
            except FrameSkipped as e:
                self.get_logger().warning(f"frame {frame.stamp:.3f} skipped: {e}",
                                          throttle_duration_sec=LOG_THROTTLE_S)
                continue
            except Exception as e:  # noqa: BLE001 - any failure skips the frame, not the node
                self.frames_failed += 1
                self.get_logger().error(f"inference failed, frame {frame.stamp:.3f} skipped: "
                                        f"{type(e).__name__}: {e}",
                                        throttle_duration_sec=LOG_THROTTLE_S)
                if "out of memory" in str(e).lower():
                    _empty_cuda_cache()
                continue
            self._publish(result)

    def _publish(self, r: Segmentation) -> None:
        stamp = conv.sec_to_stamp(r.stamp)
        self.pub_labels.publish(conv.array_to_image(r.labels, "mono8", stamp, r.frame_id,
                                                    cls=Image))
        self.pub_color.publish(conv.array_to_image(r.color, "rgb8", stamp, r.frame_id, cls=Image))
        if r.overlay is not None:
            self.pub_overlay.publish(conv.array_to_image(r.overlay, "rgb8", stamp, r.frame_id,
                                                         cls=Image))
        if r.confidence is not None:
            self.pub_confidence.publish(conv.array_to_image(
                r.confidence.astype(np.float32), "32FC1", stamp, r.frame_id, cls=Image))
        now = self._now()
        latency = (now - r.stamp) * 1e3
        with self._lock:
            self.frames_out += 1
            self.latencies.append(latency)
            self.inference_ms.append(r.inference_ms)
            ages = {m: (round(now - h.last_arrival, 4) if h.last_arrival is not None else None)
                    for m, h in self.health.items()}
        status = {"stamp": r.stamp, "frame_id": r.frame_id, "modalities": list(r.modalities),
                  "pivot": r.pivot, "sensor_age_s": ages,
                  "stamps": {m: [round(i.stamp, 6) for i in items]
                             for m, items in r.frame.items.items()},
                  "live": r.frame.live, "dropped_backlog": r.frame.dropped,
                  "left_out": r.left_out, "latency_ms": round(latency, 2),
                  "inference_ms": round(r.inference_ms, 2)}
        self.pub_status.publish(String(data=json.dumps(status)))

    # -- diagnostics ---------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now, wall = self._now(), time.monotonic()
        stale_after = self._values["sync.stale_after"]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        hw = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        with self._lock:
            for name, h in self.health.items():
                age = None if h.last_arrival is None else now - h.last_arrival
                rejected = sum(h.rejected.values())
                new_rejects = rejected - h.rejected_at_last_report
                h.rejected_at_last_report = rejected
                stale = "no message yet" if age is None else f"stale ({age:.1f} s)"
                if new_rejects and (age is None or age > stale_after):
                    level = DiagnosticStatus.ERROR
                    text = f"{stale}; only malformed messages ({new_rejects})"
                elif age is None or age > stale_after:
                    level, text = DiagnosticStatus.STALE, stale
                elif new_rejects:
                    level, text = DiagnosticStatus.WARN, f"{new_rejects} malformed message(s)"
                else:
                    level, text = DiagnosticStatus.OK, "OK"
                values = {"rate_hz": f"{h.rate(wall):.2f}",
                          "last_age_s": "" if age is None else f"{age:.3f}",
                          "received": str(h.received), "accepted": str(h.accepted),
                          "rejected": str(rejected)}
                values.update({f"rejected.{k}": str(n) for k, n in sorted(h.rejected.items())})
                if h.dropped_points:
                    values["non_finite_points_dropped"] = str(h.dropped_points)
                msg.status.append(_status(f"{NODE_NAME}: {name}", level, text, hw, values))
            lat = np.array(self.latencies) if self.latencies else None
            inf = np.array(self.inference_ms) if self.inference_ms else None
            values = {"frames_out": str(self.frames_out),
                      "frames_failed": str(self.frames_failed),
                      "dropped_backlog": str(self.sync.stats.get("dropped_backlog", 0)),
                      "sync_resets": str(self.sync.stats.get("resets", 0)),
                      "device": str(self.runtime.device)}
            if lat is not None:
                values.update({"latency_ms_p50": f"{np.percentile(lat, 50):.1f}",
                               "latency_ms_p95": f"{np.percentile(lat, 95):.1f}",
                               "inference_ms_p50": f"{np.percentile(inf, 50):.1f}"})
        level = DiagnosticStatus.OK if self.frames_out else DiagnosticStatus.WARN
        msg.status.append(_status(f"{NODE_NAME}: inference", level,
                                  "running" if self.frames_out else "no frame yet", hw, values))
        self.pub_diag.publish(msg)

    # -- shutdown ------------------------------------------------------------------------
    def close(self, timeout: float = 1.5) -> None:
        """Stop the worker (it finishes the frame in flight, if it can within ``timeout``)."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout)


def _status(name: str, level, message: str, hardware_id: str,
            values: dict[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args: Optional[list[str]] = None) -> int:
    """Spin the node until SIGINT/SIGTERM or shutdown; exit 1 with one clear line on a bad
    configuration or checkpoint."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = AnysegNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as e:
        # rclpy's logger may not exist yet; stderr always does.
        print(f"[anyseg] error: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
