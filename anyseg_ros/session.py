"""The heart of anyseg_node, without ROS: receive messages, assemble frames, segment them,
keep the record of what happened.

:class:`Session` is what the node (:mod:`anyseg_ros.node`) and the offline bag processor
(:mod:`anyseg_ros.tools.process_bag`) share: the parameters and what is built from them (runtime,
pipeline, synchroniser, the rig's geometry), CameraInfo handling, the validation and
conversion of every sensor message with its rejection counters, the synchroniser's poll, the
segmentation of a frame, the status record of every output and the diagnostics. The node
wraps it in subscriptions, a worker thread, timers and publishers; ``process_bag`` in a loop
over a bag's messages. Two clocks come in from the caller: ``now`` (the synchroniser's,
liveness and sensor ages: the steady clock live, the bag's receive time offline) and
``ros_now`` (what header stamps are compared with: ROS time live, the receive time offline).

Thread safety: every method may be called from any thread; the state they share is guarded by
one lock, and the model runs outside it (the node receives while a frame is segmented).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, IGNORE_INDEX, LIDAR
from anyseg_core.runtime import Runtime

from . import conversions as conv
from .inputs import EventPacketPayload, payload_function
from .params import (DEMO_CHECKPOINT, PARAMS_BY_NAME, ConfigError, check_value,
                     defaults, geometry_from_params, network_size, synchronizer_from_params)
from .payloads import EventPacket, Geometry, LidarSweep, geometry_from_camera, with_geometry
from .pipeline import FrameSkipped, Segmentation, SegmentationPipeline
from .sync import Frame
from .tf_tree import NoTransform, TfTree

LOG_THROTTLE_S = 5.0
#: Sensors that send whole frames at a steady rate: their stamp gaps tell lost frames.
FRAME_SENSORS = (CAMERA, LIDAR, DEPTH)
#: Notes of an input stream reported under their own name in /diagnostics (the other notes
#: count data removed from messages that were used: ``removed.<note>``).
STREAM_NOTES = ("lost_packets", "lost_frames", "stream_restarts")
RATE_WINDOW_S = 2.0  # sensor rates are counted over this many seconds
CAMERA_INFO = "camera_info"
# The levels of diagnostic_msgs/DiagnosticStatus (the same numbers, without ROS).
OK, WARN, ERROR, STALE = 0, 1, 2, 3
#: A sensor that lost more than this share of a report period's messages is a WARN.
LOSS_WARN_RATE = 0.02


class FrameGaps:
    """Frames a periodic sensor sent that never arrived, told from its stamps: a gap between
    consecutive stamps of more than ``factor`` times the sensor's own period (the median of
    its last ``window`` gaps, known after ``min_gaps``) counts ``round(gap / period) - 1``
    lost frames. A gap of ``max_gap`` (``sync.stale_after``) or more is an outage, reported
    as the sensor going stale, not as loss; a stamp at or before the last is ignored."""

    def __init__(self, factor: float = 1.5, window: int = 32, min_gaps: int = 5) -> None:
        self.factor, self.min_gaps = factor, min_gaps
        self.gaps: deque = deque(maxlen=window)
        self.last: Optional[float] = None

    def add(self, stamp: float, max_gap: float) -> int:
        """Frames lost before the frame stamped ``stamp``."""
        if self.last is not None and stamp <= self.last:
            return 0
        gap = None if self.last is None else stamp - self.last
        self.last = stamp
        if gap is None:
            return 0
        lost = 0
        if len(self.gaps) >= self.min_gaps and gap < max_gap:
            period = float(np.median(self.gaps))
            if period > 0 and gap > self.factor * period:
                lost = max(1, round(gap / period) - 1)
        if gap < max_gap:
            self.gaps.append(gap)
        return lost


@dataclass
class SensorHealth:
    """What /diagnostics and the status report for one input."""

    received: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # e.g. non-finite points removed
    last_arrival: Optional[float] = None  # on the caller's `now` clock, seconds
    last_stamp: Optional[float] = None
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # arrival times
    rejected_at_last_report: int = 0
    accepted_at_last_report: int = 0
    unused_at_last_report: int = 0  # the synchroniser's late + stamped-back + overflow
    lost_at_last_report: int = 0
    gaps: FrameGaps = field(default_factory=FrameGaps)

    @property
    def lost(self) -> int:
        """Messages the sensor sent that never arrived: gaps in an event packet counter, or
        in a frame sensor's stamps (:class:`FrameGaps`)."""
        return self.notes.get("lost_packets", 0) + self.notes.get("lost_frames", 0)

    def rate(self, now: float) -> float:
        while self.recent and now - self.recent[0] > RATE_WINDOW_S:
            self.recent.popleft()
        return len(self.recent) / RATE_WINDOW_S


class LivenessClock:
    """The clock of sensor liveness, ``sync.max_wait`` and sensor ages (seconds).

    Without sim time: the steady clock. With ``use_sim_time``: ROS time, so a bag replayed
    slowly (``play --rate 0.2``) keeps a 10 Hz sensor live and ``max_wait`` scales with it; but
    a /clock that stops (the bag ended, or paused) must not freeze the ages, so once no tick
    has moved ROS time for ``grace`` steady seconds the clock runs on at the steady rate from
    the last tick, and the sensors go stale. Before the first tick (sim time with no /clock)
    it counts steady seconds. Monotonic: it never goes back (a /clock that jumps back, e.g.
    ``play --loop``, holds it until ROS time passes it again).

    ``ros_ns``: a function giving ROS time in nanoseconds (0 = no /clock yet); ``steady``:
    the steady clock (``time.monotonic``), injectable for tests."""

    def __init__(self, sim: bool, ros_ns: Callable[[], int], grace: float = 0.5,
                 steady: Callable[[], float] = time.monotonic) -> None:
        self.sim, self._ros_ns, self.grace, self._steady = sim, ros_ns, grace, steady
        self._lock = threading.Lock()
        self._last_ros: Optional[float] = None  # the last ROS time seen, seconds
        self._moved_at = steady()  # steady time when ROS time last moved
        self._start = self._moved_at
        self._value = 0.0

    def __call__(self) -> float:
        steady = self._steady()
        if not self.sim:
            return steady
        ros = self._ros_ns() * 1e-9
        with self._lock:
            if ros <= 0:  # no /clock yet
                value = steady - self._start
            else:
                if ros != self._last_ros:
                    self._last_ros, self._moved_at = ros, steady
                value = ros + max(0.0, steady - self._moved_at - self.grace)
            self._value = max(self._value, value)
            return self._value


@dataclass
class Diagnostic:
    """One entry of a diagnostics report (a DiagnosticStatus without ROS)."""

    name: str  # an input's name, or "inference"
    level: int
    message: str
    values: dict[str, str]


class Session:
    """Parameters in, frames out.

    Args:
        values: parameter values (:mod:`anyseg_ros.params`) over the defaults; each is checked.
        logger: where warnings go (``info``, ``warning``, ``error`` taking one string); a
            rclpy logger or a :class:`logging.Logger`. Rejections, skipped and failed frames
            are logged at most every LOG_THROTTLE_S per kind.
        warmup: run every modality subset once at start (the node does: no slow first frame).
    """

    def __init__(self, values: Optional[Mapping[str, Any]] = None, logger: Any = None,
                 warmup: bool = True) -> None:
        v = defaults()
        v.update(values or {})
        unknown = sorted(k for k in v if k not in PARAMS_BY_NAME)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}")
        for name, value in v.items():
            check_value(name, value)
        self.log = logger or logging.getLogger("anyseg")
        self._lock = threading.Lock()
        self._values = v
        self._camera_info_seen = False
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # -> (time, muted)

        ckpt = v["checkpoint"] or str(DEMO_CHECKPOINT)
        if not Path(ckpt).is_file():
            raise ConfigError(f"checkpoint {ckpt!r} does not exist" + (
                "" if v["checkpoint"] else " (no checkpoint parameter was given and the "
                "bundled demo checkpoint is not installed: set checkpoint:=PATH)"))
        self.checkpoint = ckpt
        if not v["checkpoint"]:
            self.log.warning(
                f"no checkpoint parameter: running the bundled DEMO model ({ckpt}), trained on "
                "the synthetic world only; it does not segment real sensors. Set "
                "checkpoint:=PATH to a model trained on your data (MUSES, or your own)")
        if v["threads"]:
            import torch

            torch.set_num_threads(int(v["threads"]))
        size = network_size(v)
        self.log.info(f"loading {ckpt} on {v['device']} ({v['precision']}, backend "
                      f"{v['backend']}), network "
                      f"{'%dx%d' % size if size else 'at its training size'}"
                      + ("; warming up every subset" if warmup else ""))
        self.runtime = Runtime(ckpt, device=v["device"], precision=v["precision"],
                               input_size=size, warmup=warmup, backend=v["backend"],
                               threads=int(v["threads"]),
                               # true: spinning on; false: the Runtime's default (off on a CPU)
                               spinning=True if v["onnxruntime.spinning"] else None)
        if self.runtime.backend != "torch":
            self.log.info(f"backend {self.runtime.backend} ({self.runtime.precision}): "
                          f"{self.runtime.export_path}")
        if self.runtime.bf16_agreement is not None:  # OpenVINO bf16: labels against fp32's
            agreement = self.runtime.bf16_agreement
            (self.log.info if agreement.meets_minimum else self.log.warning)(agreement.summary())
        self.modalities = tuple(v["modalities"])
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
            self.runtime, self.modalities, event_window=v["events.window"],
            lidar_min_range=v["lidar.min_range"], output_resolution=v["output.resolution"])
        self._palette_default = self.runtime.palette.clone()
        self._apply_palette(v["palette"])
        self.geometry: Geometry = geometry_from_params(v)
        # The frames of the rig from /tf_static and /tf (see transforms()); the camera's
        # frame becomes known with its first image or CameraInfo.
        self.tf = TfTree(max_age_ns=int(round(v["tf.max_age"] * 1e9)))
        self.tf_rejected: Counter = Counter()
        self._camera_frame: Optional[str] = None
        if LIDAR in self.modalities and not v["lidar.T_cam_lidar"]:
            self.log.info(
                "lidar.T_cam_lidar is unset: each LiDAR cloud is brought into the camera's "
                "frame through /tf_static and /tf, from its header.frame_id (a cloud in the "
                "camera's frame needs no transform; one whose frame has no transform is "
                "rejected as no_transform, never projected with a guess)")
        if v["camera.transport"] == "compressed" and CAMERA in self.modalities:
            conv.require_opencv()  # at start, not at the first image
        self.payloads: dict[str, Callable] = {
            m: payload_function(m, v["events.type"], v["lidar.intensity_field"],
                                v["lidar.intensity_scale"], v["events.decoder"])
            for m in self.modalities}
        self.health = {m: SensorHealth() for m in (*self.modalities, CAMERA_INFO)}
        self.sync = synchronizer_from_params(v, self.modalities)
        self.frames_out = 0
        self.frames_failed = 0
        self.frames_skipped = 0
        self._frames_at_last_report = self._failed_at_last_report = 0
        self._last_output: Optional[float] = None
        self.latencies: deque = deque(maxlen=200)  # ms, input stamp to output
        self.inference_ms: deque = deque(maxlen=200)

    # -- parameters ----------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """A copy of the parameter values in force."""
        with self._lock:
            return dict(self._values)

    @property
    def camera_info_seen(self) -> bool:
        return self._camera_info_seen

    def _apply_palette(self, palette) -> None:
        """The checkpoint's palette with ``palette``'s colours over it; swapped in whole, so
        a frame is never coloured with a half-written one."""
        new = self._palette_default.clone()
        if palette:
            colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
            new[: len(colours)] = new.new_tensor(colours)
        self.runtime.palette = new

    def update(self, changes: Mapping[str, Any]) -> None:
        """Change dynamic parameters: every new value is checked and everything that depends
        on them is built before anything changes, so a refused change (ValueError, naming
        the problem) leaves the session exactly as it was. A change of ``sync.*`` or
        ``events.window`` builds a synchroniser with the new settings that carries over the
        old one's messages, liveness and counts (``AnymodalSynchronizer.carry_over``): the
        frame being formed is formed with the new settings and nothing is lost (messages
        already buffered keep the ``sync.offset.*`` they arrived with)."""
        with self._lock:
            values = dict(self._values)
            current, seen = self.geometry, self._camera_info_seen
        for name, value in changes.items():
            if name in PARAMS_BY_NAME:
                check_value(name, value)
                values[name] = value
        geometry = geometry_from_params(values, current, seen)
        resync = any(n.startswith("sync.") or n == "events.window" for n in changes)
        sync = synchronizer_from_params(values, self.modalities) if resync else None
        with self._lock:
            self._values = values
            self.geometry = geometry
            self.pipeline.event_window = values["events.window"]
            self.pipeline.lidar_min_range = values["lidar.min_range"]
            self.pipeline.output_resolution = values["output.resolution"]
            self._apply_palette(values["palette"])
            if sync is not None:
                sync.carry_over(self.sync)
                self.sync = sync

    # -- inputs --------------------------------------------------------------------------
    def _log_throttled(self, key: tuple[str, str], level: str, text: str) -> None:
        """Log ``text`` at most every LOG_THROTTLE_S per ``key``, saying how many were muted
        (a per-key throttle: one sensor's stream of bad messages hides no other's)."""
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(key)
            if last is not None and now - last[0] < LOG_THROTTLE_S:
                self._logged[key] = (last[0], last[1] + 1)
                return
            self._logged[key] = (now, 0)
        more = f" ({last[1]} more since the last such message)" if last and last[1] else ""
        getattr(self.log, level)(text + more)

    def reject(self, sensor: str, error: conv.InvalidMessage, received: bool = False) -> None:
        """Count a malformed message of ``sensor`` (an input or ``camera_info``) and log it
        (throttled). ``received``: count it as received too (a message the caller could not
        even hand over, e.g. one a bag cannot decode)."""
        with self._lock:
            self.health[sensor].received += int(received)
            self.health[sensor].rejected[error.reason] += 1
        self._log_throttled((sensor, error.reason), "warning",
                            f"{sensor}: rejected a message ({error.reason}): {error.detail}")

    def receive(self, sensor: str, msg: Any, now: Optional[float] = None,
                ros_now: Optional[float] = None) -> bool:
        """Validate and convert one message of ``sensor`` and hand it to the synchroniser;
        False when it was rejected (counted and logged). ``now``: the synchroniser's clock
        (default: the steady clock, read after the conversion); ``ros_now``: the clock stamps
        are checked against (``sync.max_future``; None or 0 = not known yet). An event packet
        (``events.type: packet``) is matched by its last event's time, not its header stamp."""
        health = self.health[sensor]
        with self._lock:
            health.received += 1
            if sensor in FRAME_SENSORS:  # event packets have their own counter (seq)
                self._count_gap(health, msg)
            geometry, max_future = self.geometry, self._values["sync.max_future"]
            offset = self._values.get(f"sync.offset.{sensor}", 0.0)

        def convert():
            # The sensor's stamps on the rig's clock: sync.offset.<sensor> added (events'
            # own times too), before the future check and the matching.
            stamp = conv.stamp_to_sec(msg.header.stamp) + offset
            conv.check_stamp(stamp, ros_now if ros_now else None, max_future)
            data = self.payloads[sensor](msg, geometry, health.notes)
            exact = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            if offset and isinstance(data, conv.Events):
                data = dataclasses.replace(data, t=np.asarray(data.t) + offset)
            if isinstance(self.payloads[sensor], EventPacketPayload) and len(data):
                # A driver stamps a packet when its first events arrive; the synchroniser
                # collects windowed sensors by the end of each message: its last event.
                stamp = float(np.max(data.t))
                exact = conv.sec_to_stamp(stamp)
            return stamp, exact, self._placed(sensor, msg, data)
        got = self._convert(sensor, convert)
        if got is None:
            return False
        stamp, exact, data = got
        with self._lock:
            now = self._arrived(health, now, stamp)
            if sensor == CAMERA:
                if data.frame_id:
                    self._camera_frame = data.frame_id
                if not self._camera_info_seen:
                    self.geometry = geometry_from_camera(self.geometry, data)
            self.sync.add(sensor, stamp, data, now, exact=exact)
        return True

    def camera_info(self, msg: Any, now: Optional[float] = None) -> bool:
        """Take the camera's calibration from a CameraInfo; False when it was rejected."""
        health = self.health[CAMERA_INFO]
        with self._lock:
            health.received += 1
            rectified = self._values["camera.rectified"]
        got = self._convert(CAMERA_INFO, lambda: (
            conv.camera_info(msg, rectified=rectified), conv.stamp_to_sec(msg.header.stamp)))
        if got is None:
            return False
        model, stamp = got
        with self._lock:
            self._arrived(health, now, stamp)
            self._camera_info_seen = True
            self.geometry = with_geometry(self.geometry, K=model.K, image_hw=model.image_hw,
                                          distortion=model.distortion, R_rect=model.R,
                                          frame_id=msg.header.frame_id or self.geometry.frame_id)
            if msg.header.frame_id:
                self._camera_frame = msg.header.frame_id
        return True

    # -- what consumers need beside the labels -----------------------------------------
    def output_camera_info(self, r: Segmentation) -> Optional[dict]:
        """The calibration of the label image ``r``: K scaled to its size (``output.resolution:
        network`` makes it smaller than the camera's), the camera's distortion model and
        coefficients, its size; from the last CameraInfo (or the camera parameters), so it
        keeps coming through a camera outage. None while no intrinsics are known."""
        with self._lock:
            g = self.geometry
        if g.K is None or g.image_hw is None:
            return None
        hw = tuple(int(n) for n in r.labels.shape[:2])
        K = np.asarray(g.K, dtype=np.float64)
        if tuple(g.image_hw) != hw:
            from anyseg_core.sensors.geometry import scale_intrinsics

            K = scale_intrinsics(K, g.image_hw, hw).numpy()
        model, D = g.distortion if g.distortion is not None else ("plumb_bob", (0.0,) * 5)
        return {"K": K, "size_hw": hw, "distortion_model": model, "D": list(D),
                "frame_id": r.frame_id}

    def classes(self) -> dict:
        """The label ids, class names and colours of the published images (JSON-ready), with
        the id of unlabelled pixels."""
        palette = self.runtime.palette.cpu().numpy()
        return {"classes": [{"id": i, "name": name, "color": [int(c) for c in palette[i]]}
                            for i, name in enumerate(self.runtime.class_names)],
                "ignore_id": IGNORE_INDEX, "labels_encoding": "mono8",
                "color_encoding": "rgb8"}

    # -- transforms ----------------------------------------------------------------------
    def transforms(self, msg: Any, static: bool) -> int:
        """Take a ``tf2_msgs/TFMessage`` from ``/tf_static`` (``static``) or ``/tf``; returns
        how many of its transforms were stored. A malformed transform (zero quaternion, NaN,
        a frame its own parent) is counted in ``tf_rejected`` and logged, the others kept."""
        try:
            errors = self.tf.add_message(msg, static)
            total = len(msg.transforms)
        except Exception as e:  # noqa: BLE001 - a message that is not a TFMessage at all
            errors, total = [e], 0
        for e in errors:
            with self._lock:
                self.tf_rejected["static" if static else "dynamic"] += 1
            self._log_throttled(("tf", "invalid"), "warning",
                                f"{'/tf_static' if static else '/tf'}: a transform was "
                                f"rejected: {e}")
        return total - len(errors) if total else 0

    def _placed(self, sensor: str, msg: Any, data: Any) -> Any:
        """A LiDAR cloud or an event packet of a separate event camera, with its transform
        into the camera's frame when the parameters give none: from TF, for the message's
        ``header.frame_id`` at its stamp (identity for a message already in the camera's
        frame). Raises ``no_transform`` when TF cannot say (the message is left out and
        counted, never projected with a guess). Other payloads pass unchanged."""
        with self._lock:
            values, camera_frame = self._values, self._camera_frame
        if sensor == LIDAR:
            explicit = bool(values["lidar.T_cam_lidar"])
        elif sensor == EVENTS and isinstance(data, conv.Events) and values["events.K"]:
            explicit = bool(values["events.T_cam_events"])  # a separate event camera
        else:
            return data
        T = None if explicit else self._lookup(msg, camera_frame)
        return LidarSweep(data, T) if sensor == LIDAR else EventPacket(data, T)

    def _lookup(self, msg: Any, camera_frame: Optional[str]) -> np.ndarray:
        source = str(msg.header.frame_id).strip("/")
        if not source or source == (camera_frame or "").strip("/"):
            return np.eye(4)
        if camera_frame is None:
            raise conv.InvalidMessage(
                "no_transform", f"a message in frame {source!r} arrived before the camera's "
                "frame is known (no camera image or CameraInfo yet)")
        stamp = msg.header.stamp
        try:
            return self.tf.lookup(camera_frame, source,
                                  int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))
        except NoTransform as e:
            raise conv.InvalidMessage(
                "no_transform", f"{e} (publish it on /tf_static or /tf, or set the extrinsic "
                "parameter)") from None

    def _convert(self, sensor: str, convert: Callable):
        """``convert()``, or None when it raises: an InvalidMessage is rejected with its
        reason, anything else as a conversion_error (a message never stops the caller)."""
        try:
            return convert()
        except conv.InvalidMessage as e:
            self.reject(sensor, e)
        except Exception as e:  # noqa: BLE001
            self.reject(sensor, conv.InvalidMessage("conversion_error",
                                                    f"{type(e).__name__}: {e}"))
        return None

    def _count_gap(self, health: SensorHealth, msg: Any) -> None:
        """Frames lost before ``msg`` (under the lock), from its header stamp; every message
        that arrives counts, a malformed one too (it was not lost)."""
        try:
            stamp = conv.stamp_to_sec(msg.header.stamp)
        except Exception:  # noqa: BLE001 - no stamp to tell by: rejected later anyway
            return
        lost = health.gaps.add(stamp, self._values["sync.stale_after"])
        if lost:
            health.notes["lost_frames"] += lost

    @staticmethod
    def _arrived(health: SensorHealth, now: Optional[float], stamp: float) -> float:
        """Count an accepted message (under the lock); returns its arrival time ``now``
        (default: the steady clock)."""
        now = time.monotonic() if now is None else now
        health.accepted += 1
        health.last_arrival, health.last_stamp = now, stamp
        health.recent.append(now)
        return now

    # -- frames --------------------------------------------------------------------------
    def poll(self, now: Optional[float] = None) -> tuple[Optional[Frame], Optional[float]]:
        """The newest ready frame (None if none), and when the synchroniser wants to be asked
        again (None: at the next message)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            frame = self.sync.poll(now)
            return frame, (self.sync.next_deadline() if frame is None else None)

    def segment(self, frame: Frame, overlay: bool = False,
                confidence: Optional[bool] = None) -> Optional[Segmentation]:
        """Segment ``frame`` with the geometry and parameters in force; None when it was
        skipped (nothing usable in it) or failed (counted in ``frames_failed``). Both are
        logged (throttled); a failure never reaches the caller. ``confidence``: compute the
        confidence map (None: as ``confidence.enabled`` says)."""
        with self._lock:
            geometry, values = self.geometry, dict(self._values)
        if confidence is None:
            confidence = values["confidence.enabled"]
        try:
            return self.pipeline.run(
                frame, geometry, overlay_alpha=values["overlay.alpha"] if overlay else None,
                confidence=confidence)
        except FrameSkipped as e:
            with self._lock:
                self.frames_skipped += 1
            self._log_throttled(("frame", "skipped"), "warning",
                                f"frame {frame.stamp:.3f} skipped: {e}")
        except Exception as e:  # noqa: BLE001 - any failure skips the frame, not the node
            with self._lock:
                self.frames_failed += 1
            self._log_throttled(("frame", "failed"), "error",
                                f"inference failed, frame {frame.stamp:.3f} skipped: "
                                f"{type(e).__name__}: {e}")
            if "out of memory" in str(e).lower():
                _empty_cuda_cache()
        return None

    def record(self, r: Segmentation, now: Optional[float] = None,
               ros_now: Optional[float] = None) -> dict:
        """Count an output that went out and return its status record (the node's
        ``anyseg/status``, process_bag's ``/anyseg/status``). ``ros_now``: the clock the
        latency is taken on (None or 0: not known, no latency)."""
        latency = (ros_now - r.stamp) * 1e3 if ros_now else None
        now = time.monotonic() if now is None else now
        with self._lock:
            self.frames_out += 1
            self._last_output = now
            if latency is not None:
                self.latencies.append(latency)
            self.inference_ms.append(r.inference_ms)
            ages = {m: (round(now - h.last_arrival, 4) if h.last_arrival is not None else None)
                    for m, h in self.health.items()}
        return {"stamp": r.stamp, "frame_id": r.frame_id, "modalities": list(r.modalities),
                "pivot": r.pivot, "sensor_age_s": ages,
                "stamps": {m: [round(i.stamp, 6) for i in items]
                           for m, items in r.frame.items.items()},
                "live": r.frame.live, "dropped_backlog": r.frame.dropped,
                "left_out": r.left_out,
                "latency_ms": None if latency is None else round(latency, 2),
                "inference_ms": round(r.inference_ms, 2)}

    # -- reports -------------------------------------------------------------------------
    def diagnostics(self, now: Optional[float] = None) -> list[Diagnostic]:
        """One entry per input and one for the inference, over the period since the last
        call (the counts of that period decide the levels; see :func:`sensor_status` and
        :func:`inference_status`)."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            stale_after = self._values["sync.stale_after"]
            period = self._values["diagnostics.period"]
            any_live = False
            for name, h in self.health.items():
                age = None if h.last_arrival is None else now - h.last_arrival
                any_live |= name != CAMERA_INFO and age is not None and age <= stale_after
                rejected = sum(h.rejected.values())
                unused = self.sync.sensor_stats.get(name, {})
                total_unused = sum(unused.values())
                level, text = sensor_status(
                    age, stale_after, rejected - h.rejected_at_last_report,
                    h.accepted - h.accepted_at_last_report,
                    total_unused - h.unused_at_last_report, h.lost - h.lost_at_last_report)
                h.rejected_at_last_report, h.accepted_at_last_report = rejected, h.accepted
                h.unused_at_last_report, h.lost_at_last_report = total_unused, h.lost
                values = {"rate_hz": f"{h.rate(now):.2f}",
                          "last_age_s": "" if age is None else f"{age:.3f}",
                          "received": str(h.received), "accepted": str(h.accepted),
                          "rejected": str(rejected)}
                values.update({f"rejected.{k}": str(n) for k, n in sorted(h.rejected.items())})
                values.update({(k if k in STREAM_NOTES else f"removed.{k}"): str(n)
                               for k, n in sorted(h.notes.items())})
                values.update({f"unused.{k}": str(n) for k, n in unused.items()})
                out.append(Diagnostic(name, level, text, values))
            values = {"frames_out": str(self.frames_out),
                      "frames_failed": str(self.frames_failed),
                      "dropped_backlog": str(self.sync.stats.get("dropped_backlog", 0)),
                      "sync_resets": str(self.sync.stats.get("resets", 0)),
                      "device": str(self.runtime.device)}
            if self.latencies:
                lat = np.array(self.latencies)
                values.update({"latency_ms_p50": f"{np.percentile(lat, 50):.1f}",
                               "latency_ms_p95": f"{np.percentile(lat, 95):.1f}"})
            if self.inference_ms:
                inference = np.array(self.inference_ms)
                values["inference_ms_p50"] = f"{np.percentile(inference, 50):.1f}"
            new_frames = self.frames_out - self._frames_at_last_report
            new_failed = self.frames_failed - self._failed_at_last_report
            self._frames_at_last_report = self.frames_out
            self._failed_at_last_report = self.frames_failed
            since_output = None if self._last_output is None else now - self._last_output
            frames_out = self.frames_out
        level, text = inference_status(frames_out, new_frames, new_failed, since_output,
                                       any_live, quiet_after=max(2.0, 2 * period))
        out.append(Diagnostic("inference", level, text, values))
        return out

    def counts(self) -> dict:
        """What came in and went out so far: per input received / accepted / rejected (by
        reason) / notes, and the frames."""
        with self._lock:
            return {"inputs": {m: {"received": h.received, "accepted": h.accepted,
                                   "rejected": dict(h.rejected), "notes": dict(h.notes)}
                               for m, h in self.health.items()},
                    "frames_out": self.frames_out, "frames_failed": self.frames_failed,
                    "frames_skipped": self.frames_skipped,
                    "dropped_backlog": self.sync.stats.get("dropped_backlog", 0)}


def sensor_status(age: Optional[float], stale_after: float, new_rejected: int,
                  new_accepted: int, new_unused: int, new_lost: int = 0) -> tuple[int, str]:
    """Diagnostic level and message of one input over the last report period.

    ``age``: seconds since its last message (None: none yet); ``new_*``: messages since the
    last report that were malformed, accepted, accepted but never used by a frame (late
    for their frame, stamped far back, or evicted from a full buffer), and lost on the way
    (gaps in an event packet counter or a frame sensor's stamps). A sensor whose messages
    mostly go unused (a clock not in step with the others, say), or that lost more than
    LOSS_WARN_RATE of the period's messages, is a WARN even though it is alive."""
    stale = "no message yet" if age is None else f"stale ({age:.1f} s)"
    if age is None or age > stale_after:
        if new_rejected:
            return ERROR, f"{stale}; only malformed messages ({new_rejected})"
        return STALE, stale
    problems = []
    if new_rejected:
        problems.append(f"{new_rejected} malformed message(s)")
    if new_lost and new_lost > LOSS_WARN_RATE * (new_lost + new_accepted + new_rejected):
        problems.append(f"{new_lost} message(s) lost on the way (gaps in its stamps or packet "
                        "counter: a lossy transport, QoS or shared-memory profile?)")
    if new_unused and 2 * new_unused >= new_accepted:
        problems.append(f"{new_unused} of {new_accepted} message(s) not used by any frame "
                        "(late, stamped back or buffer overflow: is its clock in step?)")
    if problems:
        return WARN, "; ".join(problems)
    return OK, "OK"


def inference_status(frames_out: int, new_frames: int, new_failed: int,
                     since_output: Optional[float], any_live: bool,
                     quiet_after: float) -> tuple[int, str]:
    """Diagnostic level and message of the inference over the last report period: ERROR when
    every frame of the period failed, WARN when some did, or when live sensors have given no
    output for ``quiet_after`` seconds (``since_output``: seconds since the last output)."""
    if new_failed and not new_frames:
        return ERROR, f"every frame failed ({new_failed}) since the last report"
    if new_failed:
        return WARN, f"{new_failed} frame(s) failed since the last report"
    if not frames_out:
        return WARN, "no frame yet"
    if any_live and since_output is not None and since_output > quiet_after:
        return WARN, f"no output for {since_output:.1f} s from live sensors"
    return OK, "running"


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

