"""A frame's output messages, built once for the node and for ``process_bag``.

:func:`frame_messages` turns a :class:`~anyseg_ros.pipeline.Segmentation` into the messages of
the node's outputs (labels, colours, overlay and confidence when computed, the label image's
CameraInfo), keyed by their topic relative to the node, and :func:`status_message` the
frame's status record, once they went out. The node publishes them on its publishers,
``process_bag`` writes them into its bag under the same names: an output added or changed
here is added or changed for both.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from . import conversions as conv
from .pipeline import Segmentation

#: The outputs of a frame: relative topic -> message type.
OUTPUTS = {
    "anyseg/labels": "sensor_msgs/msg/Image",
    "anyseg/color": "sensor_msgs/msg/Image",
    "anyseg/overlay": "sensor_msgs/msg/Image",
    "anyseg/confidence": "sensor_msgs/msg/Image",
    "anyseg/camera_info": "sensor_msgs/msg/CameraInfo",
    "anyseg/status": "std_msgs/msg/String",
}


@dataclass(frozen=True)
class MessageClasses:
    """The classes the messages are made of: rclpy's for the node, rosbags' for bags."""

    Image: type
    CameraInfo: type
    String: type


def frame_messages(session: Any, r: Segmentation, classes: MessageClasses) -> dict:
    """Topic -> message for one output frame ``r`` of ``session``, stamped with the frame's
    own header stamp and frame_id. Overlay and confidence are there when the frame has them;
    the CameraInfo when intrinsics are known."""
    stamp, frame_id = r.header_stamp, r.frame_id
    image = classes.Image
    out = {"anyseg/labels": conv.array_to_image(r.labels, "mono8", stamp, frame_id, cls=image),
           "anyseg/color": conv.array_to_image(r.color, "rgb8", stamp, frame_id, cls=image)}
    if r.overlay is not None:
        out["anyseg/overlay"] = conv.array_to_image(r.overlay, "rgb8", stamp, frame_id,
                                                    cls=image)
    if r.confidence is not None:
        out["anyseg/confidence"] = conv.array_to_image(r.confidence.astype("float32"), "32FC1",
                                                       stamp, frame_id, cls=image)
    info = session.output_camera_info(r)
    if info is not None:
        out["anyseg/camera_info"] = conv.camera_info_msg(
            info["K"], info["size_hw"], stamp, frame_id, D=info["D"],
            distortion_model=info["distortion_model"], cls=classes.CameraInfo)
    return out


def status_message(session: Any, r: Segmentation, classes: MessageClasses,
                   now: Optional[float] = None, ros_now: Optional[float] = None) -> Any:
    """The ``anyseg/status`` message of frame ``r``. Counts the frame as gone out
    (``Session.record``, with ``now`` / ``ros_now``): call it once the frame's other
    messages went out, once per frame."""
    return classes.String(data=json.dumps(session.record(r, now=now, ros_now=ros_now)))
