"""The node's parameters, without ROS: names, defaults, descriptions, validation.

The node declares exactly these (``anyseg_ros.node``); the offline tools
(``anyseg_ros.tools.process_bag``) read the same names from a params file, so a file that works
for one works for the other. ``config/anyseg.yaml`` documents them for users.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import yaml

from anyseg_core.modalities import ALL_MODALITIES, CAMERA, DEPTH, EVENTS, LIDAR
from anyseg_core.runtime import BACKENDS as RUNTIME_BACKENDS
from anyseg_core.runtime import PRECISIONS
from anyseg_core.sensors.distortion import MODELS as DISTORTION_MODELS
from anyseg_core.sensors.distortion import check_distortion

from .conversions.event_packets import BACKENDS as EVENT_DECODERS
from .payloads import OUTPUT_RESOLUTIONS, Geometry, with_geometry
from .sync import AnymodalSynchronizer

# The checkpoint used when the `checkpoint` parameter is empty (`make demo-checkpoint`).
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "demo.safetensors"


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``default`` None = no default (an array set by users)."""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    array: Optional[str] = None  # "double" | "integer": an array with no default
    range: Optional[tuple[float, float]] = None


PARAMS = [
    Param("checkpoint", "", "path of a .safetensors checkpoint; empty = the bundled demo "
          "checkpoint"),
    Param("device", "auto", "auto | cpu | cuda | cuda:N"),
    Param("precision", "fp32", "fp32 | fp16 | bf16 (fp16 needs CUDA)"),
    Param("backend", "auto", "what runs the network: torch | onnxruntime | openvino (exported "
          "graphs, the deploy extra) | auto (the fastest installed for the device, "
          "docs/benchmarks.md); checkpoint may also be an export directory"),
    Param("threads", 0, "CPU threads for inference (torch.set_num_threads); 0 = torch's "
          "default (one per core)", range=(0, 256)),
    Param("onnxruntime.spinning", False, "backend onnxruntime: let its CPU worker threads "
          "busy-wait between runs (false: they sleep, leaving the cores to the sensor "
          "processing; docs/benchmarks.md)"),
    Param("modalities", [CAMERA, EVENTS, LIDAR], "modalities subscribed to and fused: any "
          "non-empty subset of the checkpoint's (camera, events, lidar, depth)"),
    Param("network.height", 0, "network input height in pixels (multiple of 32); 0 = the "
          "checkpoint's training size", range=(0, 8192)),
    Param("network.width", 0, "network input width in pixels (multiple of 32); 0 = the "
          "checkpoint's training size", range=(0, 8192)),
    Param("output.resolution", "camera", "camera (labels at the camera image size) | network",
          dynamic=True),
    Param("sync.slop", 0.05, "seconds: inputs join a frame when their stamps are this close",
          dynamic=True, range=(0.0, 1.0)),
    Param("sync.max_wait", 0.1, "seconds to wait for live sensors before running with "
          "whatever arrived", dynamic=True, range=(0.0, 5.0)),
    Param("sync.stale_after", 0.5, "seconds without messages after which a sensor is stale",
          dynamic=True, range=(0.01, 3600.0)),
    Param("sync.max_future", 1.0, "seconds: messages stamped further ahead of the node's "
          "clock are rejected", dynamic=True, range=(0.0, 3600.0)),
    *(Param(f"sync.offset.{m}", 0.0, f"seconds added to the {m}'s stamps before frames are "
            "matched (a clock offset, or a LiDAR stamped at sweep start: + half a sweep); "
            "outputs keep the input's own stamp", dynamic=True, range=(-10.0, 10.0))
      for m in (CAMERA, LIDAR, EVENTS, DEPTH)),
    Param("qos.reliability", "best_effort", "best_effort (sensor drivers) | reliable"),
    Param("qos.depth", 5, "history depth of subscriptions and publishers", range=(1, 1000)),
    Param("events.type", "packet", "packet (event_camera_msgs/EventPacket, as the event-camera "
          "drivers publish it: evt3, libcaer_cmp, libcaer, mono) | pointcloud (x, y, t, p, "
          "this project's layout) | image (a rendered frame)"),
    Param("events.decoder", "auto", "who decodes EVT 3.0 packets: evt3 (the evt3 package) | "
          "numpy | auto (evt3 where it is installed, else numpy)"),
    Param("events.window", 0.03, "seconds of events accumulated into one frame", dynamic=True,
          range=(0.001, 1.0)),
    Param("events.K", None, "event camera intrinsics, row-major 3x3; unset = the camera's",
          dynamic=True, array="double"),
    Param("events.T_cam_events", None, "event camera to camera, row-major 4x4; unset = "
          "from TF (/tf_static, /tf) for the packets' frame_id", dynamic=True, array="double"),
    Param("events.height", 0, "event camera height in pixels; 0 = the camera's", range=(0, 65535)),
    Param("events.width", 0, "event camera width in pixels; 0 = the camera's", range=(0, 65535)),
    Param("lidar.min_range", 1.0, "metres; nearer LiDAR points are dropped", dynamic=True,
          range=(0.0, 100.0)),
    Param("lidar.intensity_field", "intensity", "PointCloud2 field read as the intensity "
          "(e.g. reflectivity); a cloud without it gets zeros, counted in /diagnostics"),
    Param("lidar.intensity_scale", 1.0, "factor applied to the intensity: the checkpoint "
          "expects the scale of its training data (0..255 for the synthetic world, MUSES' "
          "recorded scale for MUSES; e.g. 255 for a LiDAR reporting 0..1)",
          range=(1e-6, 1e6)),
    Param("lidar.T_cam_lidar", None, "LiDAR to camera, row-major 4x4 (p_cam = T p_lidar), "
          "overriding TF; unset = from TF (/tf_static, /tf) for each cloud's frame_id",
          dynamic=True, array="double"),
    Param("tf.listener", "auto", "who resolves TF: tf2_ros (its Buffer and TransformListener: "
          "tf2's interpolation, no extrapolation) | builtin (anyseg_ros.tf_tree on the node's "
          "own /tf_static and /tf subscriptions) | auto (tf2_ros where it imports, else builtin)"),
    Param("tf.max_age", 0.5, "seconds, builtin listener: a /tf transform serves a message "
          "stamped up to this long after it (the newest sample at or before the stamp; "
          "/tf_static always serves)", range=(0.0, 3600.0)),
    Param("camera.K", None, "camera intrinsics, row-major 3x3, used until a CameraInfo "
          "arrives", dynamic=True, array="double"),
    Param("camera.height", 0, "image height that camera.K is for (K is scaled to images of "
          "another size); 0 = camera.K is for the images as they come", range=(0, 65535)),
    Param("camera.width", 0, "image width that camera.K is for (see camera.height); 0 with "
          "camera.height", range=(0, 65535)),
    Param("camera.D", None, "lens distortion coefficients that go with camera.K (until a "
          "CameraInfo arrives, whose own D then counts); unset = none", dynamic=True,
          array="double"),
    Param("camera.distortion_model", "plumb_bob", "model of camera.D: plumb_bob | "
          "rational_polynomial | equidistant", dynamic=True),
    Param("camera.transport", "raw", "raw (sensor_msgs/Image on camera/image) | compressed "
          "(sensor_msgs/CompressedImage, jpeg or png, on camera/image/compressed)"),
    Param("camera.rectified", False, "the camera images are rectified (image_rect): take K "
          "from CameraInfo's projection matrix P and ignore its distortion"),
    Param("palette", None, "class colours r, g, b, r, g, b, ... (0..255); unset = the "
          "checkpoint's", dynamic=True, array="integer"),
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


def matrix_param(name: str, value, shape: tuple[int, int]) -> Optional[np.ndarray]:
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


#: What ``events.type`` takes: what the events topic carries.
EVENT_TYPES = ("packet", "pointcloud", "image")
# Ranges include their ends (as ROS parameter ranges do); these must also be above zero.
POSITIVE = ("sync.slop", "sync.stale_after", "events.window", "diagnostics.period")


def check_value(name: str, value) -> None:
    """Raise ConfigError when ``value`` is not acceptable for parameter ``name``."""
    choices = {"device": None, "precision": PRECISIONS, "output.resolution": OUTPUT_RESOLUTIONS,
               "tf.listener": ("auto", "tf2_ros", "builtin"), "backend": RUNTIME_BACKENDS,
               "qos.reliability": ("best_effort", "reliable"),
               "camera.transport": ("raw", "compressed"),
               "events.type": EVENT_TYPES, "events.decoder": EVENT_DECODERS}
    if name in choices and choices[name] is not None and value not in choices[name]:
        raise ConfigError(f"{name} must be one of {list(choices[name])}, got {value!r}")
    if name == "modalities":
        bad = [m for m in value if m not in ALL_MODALITIES]
        if bad or not value or len(set(value)) != len(value):
            raise ConfigError(f"modalities must be a non-empty list of distinct names from "
                              f"{list(ALL_MODALITIES)}, got {list(value)}")
    if name in ("network.height", "network.width") and (value < 0 or value % 32):
        raise ConfigError(f"{name} must be 0 (the checkpoint's size) or a positive multiple "
                          f"of 32, got {value}")
    if name in ("events.height", "events.width", "camera.height", "camera.width") and value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    if name in ("events.K", "camera.K"):
        matrix_param(name, value, (3, 3))
    if name == "camera.distortion_model" and value not in DISTORTION_MODELS:
        raise ConfigError(f"camera.distortion_model must be one of {list(DISTORTION_MODELS)}, "
                          f"got {value!r}")
    if name in ("events.T_cam_events", "lidar.T_cam_lidar"):
        matrix_param(name, value, (4, 4))
    if name == "palette" and value is not None and len(value):
        if len(value) % 3 or any(not 0 <= v <= 255 for v in value):
            raise ConfigError("palette must be r, g, b triples of integers 0..255, got "
                              f"{len(value)} numbers")
    spec = PARAMS_BY_NAME.get(name)
    if spec is not None and spec.range is not None and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        lo, hi = spec.range
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be in [{lo:g}, {hi:g}], got {value}")
    if name in POSITIVE and not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def defaults() -> dict[str, Any]:
    """Every parameter's default (None for the unset arrays)."""
    return {p.name: p.default for p in PARAMS}


def _flatten(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def load_params_file(path: str | Path, node_name: str = "anyseg") -> dict[str, Any]:
    """Parameter values from a ROS 2 params file (``/**`` or ``<node_name>`` sections, later
    files override earlier ones), checked like the node checks them. Unknown names raise."""
    text = Path(path).read_text()
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    values: dict[str, Any] = {}
    for key, section in tree.items():
        if key.strip("/").split("/")[-1] not in ("**", node_name):
            continue
        params = (section or {}).get("ros__parameters", {})
        for name, value in _flatten(params):
            if name in BUILTIN_PARAMS:
                continue
            if name not in PARAMS_BY_NAME:
                raise ConfigError(f"{path}: unknown parameter {name!r}; the node has "
                                  f"{sorted(PARAMS_BY_NAME)}")
            check_value(name, value)
            values[name] = value
    return values


def geometry_from_params(values: Mapping[str, Any], geometry: Optional[Geometry] = None,
                         camera_info_seen: bool = False) -> Geometry:
    """``geometry`` (default: empty) updated with the calibration parameters in ``values``.

    The LiDAR and event camera come from the parameters alone; the frame camera's K and
    size come from ``camera.K`` (and ``camera.height/width``) only while no CameraInfo has
    been seen, since a CameraInfo, once received, wins."""
    v = values
    changes: dict[str, Any] = {
        "T_cam_lidar": matrix_param("lidar.T_cam_lidar", v["lidar.T_cam_lidar"], (4, 4)),
        "T_cam_events": matrix_param("events.T_cam_events", v["events.T_cam_events"], (4, 4)),
        "events_K": matrix_param("events.K", v["events.K"], (3, 3)),
    }
    if changes["T_cam_lidar"] is None:
        changes["T_cam_lidar"] = np.eye(4)
    if v["events.height"] and v["events.width"]:
        if changes["events_K"] is None:
            raise ConfigError(
                f"events.height/width ({v['events.height']} x {v['events.width']}) describe a "
                "separate event camera, which needs its intrinsics events.K too (events "
                "in the camera's own pixels need neither)")
        changes["events_hw"] = (int(v["events.height"]), int(v["events.width"]))
    # camera.D is checked even after a CameraInfo (whose own D then counts): a value the node
    # takes is one it could use.
    try:
        distortion = check_distortion(v["camera.distortion_model"], v["camera.D"] or ())
    except ValueError as e:
        raise ConfigError(
            f"camera.D: {e} (to switch to a model with another number of coefficients "
            "while the node runs, set camera.D to zeros first, or set both at once with "
            "set_parameters_atomically)") from None
    if distortion is not None and v["camera.rectified"]:
        raise ConfigError("camera.D is set but camera.rectified is true: rectified images "
                          "have no distortion (leave camera.D unset, or zeros, and give "
                          "the rectified camera's K as camera.K)")
    if not camera_info_seen:
        h, w = int(v["camera.height"]), int(v["camera.width"])
        if (h == 0) != (w == 0):
            raise ConfigError(f"camera.height and camera.width must both be set or both be 0 "
                              f"(camera.K is then for the camera's images), got {h} x {w}")
        # No size: the first camera image gives it (geometry_from_camera); never guessed
        # from the principal point, which is rarely at the exact centre.
        changes["K"] = matrix_param("camera.K", v["camera.K"], (3, 3))
        changes["distortion"] = distortion
        if h or geometry is None:  # else keep the size learned from the images
            changes["image_hw"] = (h, w) if h else None
    return with_geometry(geometry or Geometry(), **changes)


def network_size(values: Mapping[str, Any]) -> Optional[tuple[int, int]]:
    """The network input size the parameters ask for; None = the checkpoint's own."""
    h, w = int(values["network.height"]), int(values["network.width"])
    if (h == 0) != (w == 0):
        raise ConfigError(f"network.height and network.width must both be 0 (the "
                          f"checkpoint's size) or both set, got {h} x {w}")
    return (h, w) if h else None


# Which sensor leads a frame when the camera is gone: LiDAR and depth give a whole frame each,
# an event packet only a slice of one, so events lead last.
PIVOT_ORDER = (CAMERA, LIDAR, DEPTH, EVENTS)


def synchronizer_from_params(values: Mapping[str, Any],
                             modalities: Sequence[str]) -> AnymodalSynchronizer:
    """The node's synchroniser for ``modalities`` with the ``sync.*`` and ``events.*``
    parameters in ``values`` (event packets and point clouds are collected over the event
    window; a rendered event image is one message)."""
    windows = {EVENTS: values["events.window"]} if (
        EVENTS in modalities and values["events.type"] != "image") else None
    return AnymodalSynchronizer(
        modalities, slop=values["sync.slop"], max_wait=values["sync.max_wait"],
        stale_after=values["sync.stale_after"],
        pivot_order=[m for m in PIVOT_ORDER if m in modalities], windows=windows)
