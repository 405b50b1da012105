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
from typing import Callable, Optional

import numpy as np

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from anyseg_core.checkpoint import CheckpointError
from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, LIDAR
from anyseg_core.runtime import Runtime

from . import conversions as conv
from .inputs import payload_function
from .params import (BUILTIN_PARAMS, DEMO_CHECKPOINT, PARAMS, PARAMS_BY_NAME, ConfigError,
                     check_value, geometry_from_params, network_size,
                     synchronizer_from_params)
from .pipeline import (FrameSkipped, Segmentation, SegmentationPipeline, geometry_from_camera,
                       with_geometry)

NODE_NAME = "anyseg"
INPUT_TOPICS = {CAMERA: "camera/image", LIDAR: "lidar/points", EVENTS: "events",
                DEPTH: "depth/image"}
CAMERA_INFO_TOPIC = "camera/camera_info"
LOG_THROTTLE_S = 5.0
RATE_WINDOW_S = 2.0  # sensor rates are counted over this many seconds


@dataclass
class SensorHealth:
    """What /diagnostics and the status topic report for one input."""

    received: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # e.g. non-finite points removed
    last_arrival: Optional[float] = None  # steady clock (time.monotonic), seconds
    last_stamp: Optional[float] = None
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # steady-clock arrival times
    rejected_at_last_report: int = 0
    accepted_at_last_report: int = 0
    unused_at_last_report: int = 0  # the synchroniser's late + stamped-back + overflow

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
        self._reject_logged: dict[tuple[str, str], tuple[float, int]] = {}  # -> (time, muted)

        ckpt = values["checkpoint"] or str(DEMO_CHECKPOINT)
        if not Path(ckpt).is_file():
            raise ConfigError(f"checkpoint {ckpt!r} does not exist" + (
                "" if values["checkpoint"] else " (no checkpoint parameter was given and the "
                "bundled demo checkpoint is not installed: set checkpoint:=PATH)"))
        if values["threads"]:
            import torch

            torch.set_num_threads(int(values["threads"]))
        size = network_size(values)
        self.get_logger().info(f"loading {ckpt} on {values['device']} ({values['precision']}), "
                               f"network {'%dx%d' % size if size else 'at its training size'}"
                               "; warming up every subset")
        self.runtime = Runtime(ckpt, device=values["device"], precision=values["precision"],
                               input_size=size, warmup=True)
        self.modalities = tuple(values["modalities"])
        missing = [m for m in self.modalities if m not in self.runtime.modalities]
        if missing:
            raise ConfigError(f"modalities {missing} are not in the checkpoint {ckpt}, which "
                              f"has {list(self.runtime.modalities)}")
        foreign = [m for m in self.modalities if not self.runtime.reads_raw(m)]
        if foreign:
            raise ConfigError(f"the checkpoint {ckpt} was trained on {foreign} inputs "
                              "normalised otherwise than raw sensor data (a DELIVER "
                              "checkpoint?); the node feeds it raw sensors: use a checkpoint "
                              "trained on the synthetic world or MUSES")
        self.pipeline = SegmentationPipeline(
            self.runtime, self.modalities, event_window=values["events.window"],
            lidar_min_range=values["lidar.min_range"],
            output_resolution=values["output.resolution"])
        self._palette_default = self.runtime.palette.clone()
        self._apply_palette(values["palette"])
        self.geometry = geometry_from_params(values)
        if LIDAR in self.modalities and not values["lidar.T_cam_lidar"]:
            self.get_logger().warn(
                "lidar.T_cam_lidar is unset: the LiDAR points are taken as already in the "
                "camera's optical frame (x right, y down, z forward). A LiDAR publishing in "
                "its own frame (REP 103: x forward, z up) then projects nowhere near its "
                "place; set the extrinsics (docs/ros.md, Parameters)")
        self.health = {m: SensorHealth() for m in (*self.modalities, "camera_info")}
        self.frames_out = 0
        self.frames_failed = 0
        self._frames_at_last_report = self._failed_at_last_report = 0
        self._last_output: Optional[float] = None  # steady clock
        self.latencies = deque(maxlen=200)  # ms, input stamp to publish
        self.inference_ms = deque(maxlen=200)
        self.sync = synchronizer_from_params(values, self.modalities)

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
        # On the steady clock: with use_sim_time a paused or finished bag stops /clock, and
        # that is exactly when the sensors going stale must still be reported.
        self.create_timer(values["diagnostics.period"], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="anyseg-inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: modalities {list(self.modalities)}, device {self.runtime.device}, "
            f"network {self.runtime.input_size[0]}x{self.runtime.input_size[1]}, "
            f"inputs {[self.resolve_topic_name(INPUT_TOPICS[m]) for m in self.modalities]}")

    # -- parameters ----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for p in PARAMS:
            desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic)
            if p.range is not None and isinstance(p.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(p.range[0]), to_value=float(p.range[1]))]
            unset = {"double": Parameter.Type.DOUBLE_ARRAY,
                     "integer": Parameter.Type.INTEGER_ARRAY}.get(p.array)
            try:
                self.declare_parameter(p.name, unset if p.default is None else p.default, desc)
            except ParameterException as e:  # a wrongly typed or out-of-range value given
                given = getattr(self, "_parameter_overrides", {}).get(p.name)
                hint = (" (a whole number for a floating-point parameter: write it with a "
                        "decimal point, e.g. 1.0)" if isinstance(p.default, float)
                        and given is not None and given.type_ == Parameter.Type.INTEGER
                        else "")
                raise ConfigError(f"parameter {p.name}: {e}{hint}") from None
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

    def _apply_palette(self, palette) -> None:
        """The checkpoint's palette with ``palette``'s colours over it; swapped in whole, so
        the worker never colours a frame with a half-written one."""
        new = self._palette_default.clone()
        if palette:
            colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
            new[: len(colours)] = new.new_tensor(colours)
        self.runtime.palette = new

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check every new value and build what depends on them before anything changes; a
        refused set leaves the node exactly as it was."""
        values = dict(self._values)
        try:
            for p in params:
                if p.name in PARAMS_BY_NAME:
                    check_value(p.name, p.value)
                    values[p.name] = p.value
            geometry = geometry_from_params(values, self.geometry, self._camera_info_seen)
            resync = any(p.name.startswith("sync.") or p.name == "events.window"
                         for p in params)
            sync = synchronizer_from_params(values, self.modalities) if resync else None
        except ValueError as e:  # ConfigError, or a constructor refusing a value
            return SetParametersResult(successful=False, reason=str(e))
        with self._lock:
            self._values = values
            self.geometry = geometry
            self.pipeline.event_window = values["events.window"]
            self.pipeline.lidar_min_range = values["lidar.min_range"]
            self.pipeline.output_resolution = values["output.resolution"]
            self._apply_palette(values["palette"])
            if sync is not None:
                self.sync = sync  # a fresh synchroniser: the frame being formed is lost
        return SetParametersResult(successful=True)

    # -- inputs --------------------------------------------------------------------------
    def _subscribe(self, qos: QoSProfile, events_type: str) -> None:
        types = {CAMERA: Image, LIDAR: PointCloud2, DEPTH: Image,
                 EVENTS: Image if events_type == "image" else PointCloud2}
        for mod in self.modalities:
            payload = payload_function(mod, events_type, self._values["lidar.intensity_field"],
                                       self._values["lidar.intensity_scale"])
            self.create_subscription(types[mod], INPUT_TOPICS[mod],
                                     lambda msg, m=mod, f=payload: self._receive(m, msg, f),
                                     qos)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._camera_info, qos)

    def _now(self) -> float:
        """ROS time (sim time with use_sim_time), seconds: what header stamps are compared
        with. Arrivals, liveness, max_wait and sensor ages use the steady clock instead
        (time.monotonic): a paused, stopped or looping /clock must neither hide a dead sensor
        nor hold back output."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, sensor: str, error: conv.InvalidMessage) -> None:
        """Count a malformed message; log it at most every LOG_THROTTLE_S per (sensor,
        reason). rclpy's own throttling is per call site, so one sensor's steady stream of
        bad messages would hide every other sensor's."""
        key, now = (sensor, error.reason), time.monotonic()
        with self._lock:
            self.health[sensor].rejected[error.reason] += 1
            last = self._reject_logged.get(key)
            if last is not None and now - last[0] < LOG_THROTTLE_S:
                self._reject_logged[key] = (last[0], last[1] + 1)
                return
            self._reject_logged[key] = (now, 0)
        more = f" ({last[1]} more since the last such warning)" if last and last[1] else ""
        self.get_logger().warning(f"{sensor}: rejected a message ({error.reason}): "
                                  f"{error.detail}{more}")

    def _receive(self, sensor: str, msg, payload: Callable) -> None:
        """Validate and convert one message, then hand it to the synchroniser. Cheap: no
        inference here, so the executor keeps receiving."""
        ros_now = self._now()
        health = self.health[sensor]
        health.received += 1
        try:
            stamp = conv.stamp_to_sec(msg.header.stamp)
            conv.check_stamp(stamp, ros_now if ros_now > 0 else None,
                             self._values["sync.max_future"])
            data = payload(msg, self.geometry, health.notes)
        except conv.InvalidMessage as e:
            self._reject(sensor, e)
            return
        except Exception as e:  # noqa: BLE001 - a message must never stop the executor
            self._reject(sensor, conv.InvalidMessage(
                "conversion_error", f"{type(e).__name__}: {e}"))
            return
        with self._lock:
            now = time.monotonic()  # after the conversion, which may take a while
            health.accepted += 1
            health.last_arrival, health.last_stamp = now, stamp
            health.recent.append(now)
            if sensor == CAMERA and not self._camera_info_seen:
                self.geometry = geometry_from_camera(self.geometry, data)
            self.sync.add(sensor, stamp, data, now,
                          exact=(msg.header.stamp.sec, msg.header.stamp.nanosec))
        self._wake.set()

    def _camera_info(self, msg) -> None:
        health = self.health["camera_info"]
        health.received += 1
        try:
            model = conv.camera_info(msg, rectified=self._values["camera.rectified"])
        except conv.InvalidMessage as e:
            self._reject("camera_info", e)
            return
        except Exception as e:  # noqa: BLE001 - a message must never stop the executor
            self._reject("camera_info", conv.InvalidMessage(
                "conversion_error", f"{type(e).__name__}: {e}"))
            return
        with self._lock:
            health.accepted += 1
            health.last_arrival = time.monotonic()
            health.last_stamp = conv.stamp_to_sec(msg.header.stamp)
            health.recent.append(health.last_arrival)
            self._camera_info_seen = True
            self.geometry = with_geometry(self.geometry, K=model.K, image_hw=model.image_hw,
                                          distortion=model.distortion, R_rect=model.R,
                                          frame_id=msg.header.frame_id or self.geometry.frame_id)

    # -- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        """Take the newest ready frame, segment it, publish; sleep until the next message or
        the synchroniser's next deadline."""
        while not self._stop.is_set():
            self._wake.clear()  # before polling: a message arriving from here on wakes us
            now = time.monotonic()
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
            try:
                self._publish(result)
            except Exception as e:  # noqa: BLE001
                if not self.context.ok():
                    return  # SIGINT shut the context down while this frame was published
                self.get_logger().error(f"publishing frame {frame.stamp:.3f} failed: "
                                        f"{type(e).__name__}: {e}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _publish(self, r: Segmentation) -> None:
        stamp = r.header_stamp
        self.pub_labels.publish(conv.array_to_image(r.labels, "mono8", stamp, r.frame_id,
                                                    cls=Image))
        self.pub_color.publish(conv.array_to_image(r.color, "rgb8", stamp, r.frame_id, cls=Image))
        if r.overlay is not None:
            self.pub_overlay.publish(conv.array_to_image(r.overlay, "rgb8", stamp, r.frame_id,
                                                         cls=Image))
        if r.confidence is not None:
            self.pub_confidence.publish(conv.array_to_image(
                r.confidence.astype(np.float32), "32FC1", stamp, r.frame_id, cls=Image))
        ros_now = self._now()
        # None while ROS time is unset (use_sim_time and no /clock yet): no clock to measure by
        latency = (ros_now - r.stamp) * 1e3 if ros_now > 0 else None
        now = time.monotonic()
        with self._lock:
            self.frames_out += 1
            self._last_output = now
            if latency is not None:
                self.latencies.append(latency)
            self.inference_ms.append(r.inference_ms)
            ages = {m: (round(now - h.last_arrival, 4) if h.last_arrival is not None else None)
                    for m, h in self.health.items()}
        status = {"stamp": r.stamp, "frame_id": r.frame_id, "modalities": list(r.modalities),
                  "pivot": r.pivot, "sensor_age_s": ages,
                  "stamps": {m: [round(i.stamp, 6) for i in items]
                             for m, items in r.frame.items.items()},
                  "live": r.frame.live, "dropped_backlog": r.frame.dropped,
                  "left_out": r.left_out,
                  "latency_ms": None if latency is None else round(latency, 2),
                  "inference_ms": round(r.inference_ms, 2)}
        self.pub_status.publish(String(data=json.dumps(status)))

    # -- diagnostics ---------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stale_after = self._values["sync.stale_after"]
        msg = DiagnosticArray()
        # A periodic report about the node, made of no single input message: stamped with
        # the time it describes, as diagnostic_updater does (segmentation outputs copy their
        # input's stamp instead).
        msg.header.stamp = self.get_clock().now().to_msg()
        hw = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        with self._lock:
            any_live = False
            for name, h in self.health.items():
                age = None if h.last_arrival is None else now - h.last_arrival
                any_live |= name != "camera_info" and age is not None and age <= stale_after
                rejected = sum(h.rejected.values())
                unused = self.sync.sensor_stats.get(name, {})
                total_unused = sum(unused.values())
                if total_unused < h.unused_at_last_report:  # a new synchroniser (parameters)
                    h.unused_at_last_report = 0
                level, text = sensor_status(
                    age, stale_after, rejected - h.rejected_at_last_report,
                    h.accepted - h.accepted_at_last_report,
                    total_unused - h.unused_at_last_report)
                h.rejected_at_last_report, h.accepted_at_last_report = rejected, h.accepted
                h.unused_at_last_report = total_unused
                values = {"rate_hz": f"{h.rate(now):.2f}",
                          "last_age_s": "" if age is None else f"{age:.3f}",
                          "received": str(h.received), "accepted": str(h.accepted),
                          "rejected": str(rejected)}
                values.update({f"rejected.{k}": str(n) for k, n in sorted(h.rejected.items())})
                values.update({f"removed.{k}": str(n) for k, n in sorted(h.notes.items())})
                values.update({f"unused.{k}": str(n) for k, n in unused.items()})
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
                               "latency_ms_p95": f"{np.percentile(lat, 95):.1f}"})
            if inf is not None:
                values["inference_ms_p50"] = f"{np.percentile(inf, 50):.1f}"
            new_frames = self.frames_out - self._frames_at_last_report
            new_failed = self.frames_failed - self._failed_at_last_report
            self._frames_at_last_report = self.frames_out
            self._failed_at_last_report = self.frames_failed
            since_output = (None if self._last_output is None else now - self._last_output)
        level, text = inference_status(
            self.frames_out, new_frames, new_failed, since_output, any_live,
            quiet_after=max(2.0, 2 * self._values["diagnostics.period"]))
        msg.status.append(_status(f"{NODE_NAME}: inference", level, text, hw, values))
        self.pub_diag.publish(msg)

    # -- shutdown ------------------------------------------------------------------------
    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker: it finishes the frame in flight if it can within ``timeout``
        (it is a daemon thread, so a longer frame cannot hold the process)."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout)


def sensor_status(age: Optional[float], stale_after: float, new_rejected: int,
                  new_accepted: int, new_unused: int) -> tuple[int, str]:
    """Diagnostic level and message of one input over the last report period.

    ``age``: seconds since its last message (None: none yet); ``new_*``: messages since the
    last report that were malformed, accepted, and accepted but never used by a frame (late
    for their frame, stamped far back, or evicted from a full buffer). A sensor whose
    messages mostly go unused (a clock not in step with the others, say) is a WARN even
    though it is alive."""
    stale = "no message yet" if age is None else f"stale ({age:.1f} s)"
    if age is None or age > stale_after:
        if new_rejected:
            return DiagnosticStatus.ERROR, f"{stale}; only malformed messages ({new_rejected})"
        return DiagnosticStatus.STALE, stale
    problems = []
    if new_rejected:
        problems.append(f"{new_rejected} malformed message(s)")
    if new_unused and 2 * new_unused >= new_accepted:
        problems.append(f"{new_unused} of {new_accepted} message(s) not used by any frame "
                        "(late, stamped back or buffer overflow: is its clock in step?)")
    if problems:
        return DiagnosticStatus.WARN, "; ".join(problems)
    return DiagnosticStatus.OK, "OK"


def inference_status(frames_out: int, new_frames: int, new_failed: int,
                     since_output: Optional[float], any_live: bool,
                     quiet_after: float) -> tuple[int, str]:
    """Diagnostic level and message of the inference over the last report period: ERROR when
    every frame of the period failed, WARN when some did, or when live sensors have given no
    output for ``quiet_after`` seconds (``since_output``: seconds since the last output)."""
    if new_failed and not new_frames:
        return DiagnosticStatus.ERROR, f"every frame failed ({new_failed}) since the last report"
    if new_failed:
        return DiagnosticStatus.WARN, f"{new_failed} frame(s) failed since the last report"
    if not frames_out:
        return DiagnosticStatus.WARN, "no frame yet"
    if any_live and since_output is not None and since_output > quiet_after:
        return DiagnosticStatus.WARN, f"no output for {since_output:.1f} s from live sensors"
    return DiagnosticStatus.OK, "running"


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
    except RuntimeError:
        # rclpy's SIGINT handler shuts the context down at any moment, also while a timer
        # callback (diagnostics) is publishing: that publish fails with RCLError. A normal
        # stop, unless the context is still valid.
        if rclpy.ok():
            raise
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as e:
        # rclpy's logger may not exist yet; stderr always does.
        print(f"[anyseg] error: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            started = time.monotonic()
            node.close()
            node.destroy_node()
            # Printed, not logged: the logger may be gone once the context is shut down.
            print(f"[anyseg] stopped ({time.monotonic() - started:.2f} s to stop the worker "
                  "and release the node)", flush=True)
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
