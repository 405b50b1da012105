"""The AnySeg ROS 2 node: anymodal semantic segmentation that survives dead sensors.

    anyseg_node --ros-args --params-file config/anyseg.yaml -p checkpoint:=model.safetensors
    python -m anyseg_ros.node ...   (the same)

Thin glue around :class:`anyseg_ros.session.Session`, which does the work without ROS (and
is what :mod:`anyseg_ros.tools.process_bag` runs offline): the subscription callbacks hand it the
messages, a worker thread polls it for frames and segments them, so the executor keeps
receiving while the model runs, and a steady-clock timer publishes its diagnostics. Topics are
relative (namespaces and remapping work); parameters are declared below with their
descriptions, and ``config/anyseg.yaml`` documents them for users.
"""
from __future__ import annotations

import copy
import json
import signal
import sys
import threading
import time
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from anyseg_core.checkpoint import CheckpointError
from anyseg_core.modalities import CAMERA, DEPTH, EVENTS, LIDAR

from .params import BUILTIN_PARAMS, PARAMS, PARAMS_BY_NAME, ConfigError, check_value
from .outputs import OUTPUTS, MessageClasses, frame_messages, status_message
from .pipeline import Segmentation
from .session import LOG_THROTTLE_S, LivenessClock, Session
from .tf_tree import Tf2Lookup

NODE_NAME = "anyseg"
INPUT_TOPICS = {CAMERA: "camera/image", LIDAR: "lidar/points", EVENTS: "events",
                DEPTH: "depth/image"}
CAMERA_INFO_TOPIC = "camera/camera_info"
# Inputs and outputs whose QoS a params file may override, per topic, as ROS 2 nodes do:
# qos_overrides./ns/camera/image.subscription.reliability: reliable (and history, depth:
# rclpy's default policies; durability is not overridable); the qos.* parameters are the
# defaults. rclpy writes an override into the profile it is given: each endpoint gets a
# copy of its own.
OVERRIDABLE = QoSOverridingOptions.with_default_policies()
COMPRESSED_TOPIC = "camera/image/compressed"  # camera.transport: compressed (image_transport's)
MESSAGE_CLASSES = MessageClasses(Image=Image, CameraInfo=CameraInfo, String=String)
OUTPUT_CLASSES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
                  "std_msgs/msg/String": String}


def _events_type(events_type: str) -> type:
    """The message class of the events topic for ``events.type``."""
    if events_type == "image":
        return Image
    if events_type == "pointcloud":
        return PointCloud2
    try:
        from event_camera_msgs.msg import EventPacket
    except ImportError as e:
        raise ConfigError(
            f"events.type is packet but event_camera_msgs does not import ({e}): sudo apt "
            "install ros-$ROS_DISTRO-event-camera-msgs (rosdep installs it), or `make setup` "
            "on a pip install; events.type:=pointcloud reads this project's own layout") from None
    return EventPacket


class AnysegNodeLogic:
    """The node's work, on any rclpy node class: the plain :class:`AnysegNode` runs every
    step at construction; the managed :class:`~anyseg_ros.lifecycle.AnysegLifecycleNode`
    runs them on lifecycle transitions.

    - :meth:`_setup`: declare the parameters (construction);
    - :meth:`_load`: build the session (model, runtime, warm-up) from them (configure);
    - :meth:`_open`: subscriptions, publishers, the diagnostics timer, the inference worker
      (activate); :meth:`_shut` undoes it (deactivate);
    - :meth:`_unload`: drop the session and the model's memory (cleanup).
    """

    session: Optional[Session]

    def _setup(self) -> None:
        self._declare_parameters()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._endpoints: list = []  # what _open made: subscriptions, publishers, timers
        self._tf_listener = None
        self.session = None
        self.runtime = None
        self.pub_classes = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load(self) -> None:
        self.session = Session({p.name: self._param_value(p.name) for p in PARAMS},
                               logger=self.get_logger(), warmup=True)
        # Liveness, max_wait and ages: ROS time with use_sim_time (slow replay keeps the
        # sensors live), the steady clock otherwise; a stopped /clock does not freeze them.
        self.live_clock = LivenessClock(
            bool(self.get_parameter("use_sim_time").value),
            lambda: self.get_clock().now().nanoseconds)
        self.modalities = self.session.modalities
        self.runtime = self.session.runtime
        if not self.has_parameter("class_names"):
            self.declare_parameter("class_names", [str(n) for n in self.runtime.class_names],
                                   ParameterDescriptor(
                                       description="the checkpoint's class names, by label "
                                       "id (255 = unlabelled); ids, names and colours are also "
                                       "on anyseg/classes", read_only=True))

    def _open(self) -> None:
        values = self.session.values
        qos_in = QoSProfile(depth=values["qos.depth"], history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.BEST_EFFORT
                            if values["qos.reliability"] == "best_effort"
                            else ReliabilityPolicy.RELIABLE)
        qos_out = QoSProfile(depth=values["qos.depth"], history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        try:
            self._subscribe(qos_in, values["events.type"])
            # A frame's outputs (anyseg_ros.outputs.OUTPUTS), the label image's calibration
            # among them (with every label image: same stamp and frame).
            self.publishers_out = {
                topic: self._made(self.create_publisher(
                    OUTPUT_CLASSES[kind], topic, copy.copy(qos_out),
                    qos_overriding_options=OVERRIDABLE))
                for topic, kind in OUTPUTS.items()}
        except RuntimeError as e:  # rclpy refusing a qos_overrides value
            if "QoS override" not in str(e):
                raise
            raise ConfigError(f"qos_overrides: {e} (reliability: reliable | best_effort; "
                              "history: keep_last | keep_all; depth: a positive integer)"
                              ) from None
        # Class ids, names and colours, latched: a consumer that starts later still gets them.
        self.pub_classes = self._made(self.create_publisher(String, "anyseg/classes", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL)))
        self._publish_classes()
        self.pub_diag = self._made(self.create_publisher(DiagnosticArray, "/diagnostics", 10))
        # On the steady clock: with use_sim_time a paused or finished bag stops /clock, and
        # that is exactly when the sensors going stale must still be reported.
        self._made(self.create_timer(values["diagnostics.period"], self._publish_diagnostics,
                                     clock=Clock(clock_type=ClockType.STEADY_TIME)))
        self._check_qos_overrides()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="anyseg-inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: modalities {list(self.modalities)}, device {self.runtime.device}, "
            f"network {self.runtime.input_size[0]}x{self.runtime.input_size[1]}, "
            f"inputs {[self.resolve_topic_name(self.input_topics[m]) for m in self.modalities]}")

    def _made(self, entity):
        """Remember ``entity`` (a subscription, publisher or timer) for :meth:`_shut`."""
        self._endpoints.append(entity)
        return entity

    def _shut(self) -> None:
        """Stop the worker and remove every subscription, publisher and timer of
        :meth:`_open`: nothing is received or published until it runs again."""
        self.close()
        for entity in reversed(self._endpoints):
            destroy = {"Subscription": self.destroy_subscription,
                       "Publisher": self.destroy_publisher,
                       "Timer": self.destroy_timer}.get(type(entity).__name__)
            if destroy is not None:
                destroy(entity)
        self._endpoints = []
        if self._tf_listener is not None:
            self._tf_listener.unregister()
            self._tf_listener = None
        self.pub_classes = None

    def _unload(self) -> None:
        """Drop the session: the model, its runtime and their memory."""
        self.session = self.runtime = None
        import gc

        gc.collect()
        _empty_cuda_cache()

    # -- parameters ----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for p in PARAMS:
            desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic)
            if p.range is not None and isinstance(p.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(p.range[0]), to_value=float(p.range[1]))]
            elif p.range is not None and isinstance(p.default, int) \
                    and not isinstance(p.default, bool):
                desc.integer_range = [IntegerRange(
                    from_value=int(p.range[0]), to_value=int(p.range[1]), step=0)]
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

    def _check_qos_overrides(self) -> None:
        """rclpy declares ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` for each
        input and output (reliability, durability, history, depth); one given for anything
        else (a typo, a topic the node does not have) would be silently ignored: refused."""
        given = [n for n in getattr(self, "_parameter_overrides", {})
                 if n.startswith("qos_overrides.")]
        unused = sorted(n for n in given if not self.has_parameter(n))
        if unused:
            known = sorted(n for n in self._parameters if n.startswith("qos_overrides."))
            raise ConfigError(f"qos_overrides {unused} match no topic and policy of this node; "
                              f"it has {known}")

    def _param_value(self, name: str):
        """The value of a declared parameter; None for an array nobody set."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Hand the new values to the session, which checks them all and builds what depends
        on them before anything changes: a refused set leaves the node exactly as it was.
        Without a session (a managed node not configured yet) each value is checked, and the
        session is built from them when the node is configured."""
        try:
            if self.session is None:
                for p in params:
                    if p.name in PARAMS_BY_NAME:
                        check_value(p.name, p.value)
            else:
                self.session.update({p.name: p.value for p in params})
        except ValueError as e:  # ConfigError, or a constructor refusing a value
            return SetParametersResult(successful=False, reason=str(e))
        if any(p.name == "palette" for p in params):
            self._publish_classes()
        return SetParametersResult(successful=True)

    def _publish_classes(self) -> None:
        if self.pub_classes is not None and self.session is not None:
            self.pub_classes.publish(String(data=json.dumps(self.session.classes())))

    # -- inputs --------------------------------------------------------------------------
    def _subscribe(self, qos: QoSProfile, events_type: str) -> None:
        compressed = self.session.values["camera.transport"] == "compressed"
        types = {CAMERA: CompressedImage if compressed else Image, LIDAR: PointCloud2,
                 DEPTH: Image, EVENTS: _events_type(events_type) if EVENTS in self.modalities
                 else None}
        self.input_topics = dict(INPUT_TOPICS, **({CAMERA: COMPRESSED_TOPIC} if compressed
                                                  else {}))
        for mod in self.modalities:
            self._made(self.create_subscription(
                types[mod], self.input_topics[mod], lambda msg, m=mod: self._receive(m, msg),
                copy.copy(qos), qos_overriding_options=OVERRIDABLE))
        # Its arrival on the liveness clock, like every input's (ROS time under sim time).
        self._made(self.create_subscription(
            CameraInfo, CAMERA_INFO_TOPIC,
            lambda msg: self.session.camera_info(msg, now=self.live_clock()), copy.copy(qos),
            qos_overriding_options=OVERRIDABLE))
        self._listen_to_tf(self.session.values["tf.listener"])

    def _listen_to_tf(self, listener: str) -> None:
        """Where the rig's transforms come from (parameter ``tf.listener``): tf2_ros's Buffer
        and TransformListener on a ROS install, else the session's own tree fed by this
        node's /tf_static and /tf subscriptions (the pip install, where tf2_msgs is what
        ``make setup`` generates)."""
        if listener in ("auto", "tf2_ros"):
            try:
                import tf2_ros
            except ImportError as e:
                if listener == "tf2_ros":
                    raise ConfigError(f"tf.listener is tf2_ros but tf2_ros does not import "
                                      f"({e}); use tf.listener:=builtin") from None
            else:
                from rclpy.duration import Duration

                self._tf_buffer = tf2_ros.Buffer(cache_time=Duration(seconds=10))
                self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
                self.session.tf = Tf2Lookup(self._tf_buffer)
                self.get_logger().info("TF: tf2_ros (interpolated, no extrapolation)")
                return
        # As tf2's listener takes them: /tf_static latched (a late joiner still gets every
        # static broadcaster's transforms), /tf reliable.
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().warning(
                "tf2_msgs is not installed: extrinsics come only from the lidar.T_cam_lidar / "
                "events.T_cam_events parameters (make setup builds it on a pip install)")
            return
        tf_static_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                   reliability=ReliabilityPolicy.RELIABLE,
                                   durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._made(self.create_subscription(
            TFMessage, "/tf_static", lambda m: self.session.transforms(m, static=True),
            tf_static_qos))
        self._made(self.create_subscription(
            TFMessage, "/tf", lambda m: self.session.transforms(m, static=False),
            QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE)))
        self.get_logger().info("TF: builtin (/tf_static and /tf; nearest sample at or before "
                               "the stamp, tf.max_age)")

    def _now(self) -> float:
        """ROS time (sim time with use_sim_time), seconds: what header stamps are compared
        with. Arrivals, liveness, max_wait and sensor ages use ``live_clock`` (see
        :class:`~anyseg_ros.session.LivenessClock`)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _receive(self, sensor: str, msg) -> None:
        """Hand one message to the session (cheap: no inference here, so the executor keeps
        receiving) and wake the worker."""
        if self.session.receive(sensor, msg, now=self.live_clock(), ros_now=self._now()):
            self._wake.set()

    # -- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        """Take the newest ready frame, segment it, publish; sleep until the next message or
        the synchroniser's next deadline. Runs until its own stop event is set (a worker
        that outlives close()'s join never takes the next activation's frames)."""
        stop = self._stop
        while not stop.is_set():
            self._wake.clear()  # before polling: a message arriving from here on wakes us
            now = self.live_clock()
            frame, deadline = self.session.poll(now)
            if frame is None:
                timeout = 0.05 if deadline is None else min(0.05, max(deadline - now, 0.001))
                self._wake.wait(timeout)
                continue
            result = self.session.segment(
                frame, overlay=self.publishers_out["anyseg/overlay"].get_subscription_count() > 0)
            if result is None:
                continue  # skipped or failed: counted and logged by the session
            try:
                self._publish(result)
            except Exception as e:  # noqa: BLE001
                if not self.context.ok():
                    return  # SIGINT shut the context down while this frame was published
                self.get_logger().error(f"publishing frame {frame.stamp:.3f} failed: "
                                        f"{type(e).__name__}: {e}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _publish(self, r: Segmentation) -> None:
        for topic, msg in frame_messages(self.session, r, MESSAGE_CLASSES).items():
            self.publishers_out[topic].publish(msg)
        self.publishers_out["anyseg/status"].publish(status_message(
            self.session, r, MESSAGE_CLASSES, now=self.live_clock(), ros_now=self._now()))

    # -- diagnostics ---------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        # A periodic report about the node, made of no single input message: stamped with
        # the time it describes, as diagnostic_updater does (segmentation outputs copy their
        # input's stamp instead).
        msg.header.stamp = self.get_clock().now().to_msg()
        hw = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        for d in self.session.diagnostics(now=self.live_clock()):
            msg.status.append(DiagnosticStatus(  # the node's full name: instances apart
                level=bytes([d.level]), name=f"{hw}: {d.name}", message=d.message,
                hardware_id=hw, values=[KeyValue(key=k, value=v) for k, v in d.values.items()]))
        self.pub_diag.publish(msg)

    # -- shutdown ------------------------------------------------------------------------
    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker: it finishes the frame in flight if it can within ``timeout``
        (it is a daemon thread, so a longer frame cannot hold the process)."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None


class AnysegNode(AnysegNodeLogic, Node):
    """Subscribes to the sensors, segments whatever is alive, publishes labels and colours:
    the model is loaded and the topics are open from construction on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._setup()
        self._load()
        self._open()


def usage() -> str:
    """What ``anyseg_node --help`` prints: how to start it, its topics and parameters."""
    lines = ["usage: anyseg_node [--help] [--managed] [--ros-args -p NAME:=VALUE ... "
             "--params-file FILE -r FROM:=TO ...]", "",
             "Semantic segmentation from whichever of camera, event camera, LiDAR (and depth) "
             "are alive (docs/ros.md).", "",
             "--managed: a lifecycle node (configure loads the model, activate opens the "
             "topics, deactivate closes them, cleanup frees the model); without it the node "
             "runs from the start.", "",
             "inputs (relative, remap with -r): " + ", ".join(
                 [*INPUT_TOPICS.values(), CAMERA_INFO_TOPIC, COMPRESSED_TOPIC]),
             "outputs: " + ", ".join([*OUTPUTS, "anyseg/classes", "/diagnostics"]), "",
             "parameters (config/anyseg.yaml documents them; * = can change while running):"]
    for p in PARAMS:
        default = "unset" if p.default is None else repr(p.default)
        lines.append(f"  {p.name}{' *' if p.dynamic else ''} (default {default}): "
                     f"{p.description}")
    return "\n".join(lines)


def main(args: Optional[list[str]] = None) -> int:
    """Spin the node until SIGINT/SIGTERM or shutdown; exit 1 with one clear line on a bad
    configuration or checkpoint. ``--help`` (before any ``--ros-args``) prints the usage;
    ``--managed`` runs the lifecycle node (:mod:`anyseg_ros.lifecycle`)."""
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "--help" in own or "-h" in own:
        print(usage())
        return 0
    unknown = [a for a in own if a != "--managed"]
    if unknown:
        print(f"[anyseg] error: unknown argument(s) {unknown} before --ros-args (see "
              "anyseg_node --help)", file=sys.stderr, flush=True)
        return 2
    managed = "--managed" in own
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        if managed:
            from .lifecycle import AnysegLifecycleNode

            node = AnysegLifecycleNode()
        else:
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
        # A launch's Ctrl-C sends SIGINT to the whole group, so the node may get a second
        # one while it stops: ignored from here, so that no KeyboardInterrupt lands inside
        # the worker's join or a logger's destructor and the exit stays clean.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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


def _empty_cuda_cache() -> None:
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()
