"""ROS 2 sensor messages <-> numpy arrays, for the node and the bag tools, one module per kind:

- :mod:`.common`: :class:`InvalidMessage` and its :data:`REASONS`, size limits, stamps;
- :mod:`.images`: ``sensor_msgs/Image`` (camera, depth, rendered event frames);
- :mod:`.compressed`: ``sensor_msgs/CompressedImage`` (jpeg, png; OpenCV decodes);
- :mod:`.clouds`: ``sensor_msgs/PointCloud2`` (named fields of any layout, LiDAR points);
- :mod:`.events`: events as a PointCloud2 of this project's layout (x, y, t, p);
- :mod:`.event_packets`: ``event_camera_msgs/EventPacket`` as event-camera drivers publish it
  (evt3, libcaer_cmp, libcaer, mono), decoded by :class:`EventDecoder`;
- :mod:`.camera_info`: ``sensor_msgs/CameraInfo``;
- :mod:`.builders`: numpy -> Image, CompressedImage, PointCloud2, CameraInfo and EventPacket
  messages.

Parsing is duck-typed: it reads the fields of a message by name and works alike on rclpy
messages (``data`` an ``array.array('B')``), on the ``rosbags`` library's messages (``data``
a numpy uint8 array) and on anything else with the same attribute names (``data`` as bytes,
memoryview or a numpy array). Arrays are numpy views of ``msg.data`` where the layout
allows, so they keep the message's buffer alive and see changes made to it. A message that
cannot be read raises :class:`InvalidMessage`, whose ``reason`` is one of :data:`REASONS`.

Building makes messages of a class given as ``cls=`` (default: ``sensor_msgs.msg``, imported
on first use); see :func:`array_to_image` for the classes that work.

Nothing here imports rclpy, the message packages or OpenCV at import time: the package works
without ROS, and without OpenCV for everything but compressed images. Every name is
importable from here (``from anyseg_ros import conversions as conv; conv.image_to_array``).
"""
from anyseg_core.sensors.frame import Events

from .builders import (array_to_compressed, array_to_image, camera_info_msg,
                       event_packet_msg, points_to_cloud)
from .camera_info import CameraModel, camera_info
from .clouds import POINTFIELD_DTYPES, cloud_to_array, has_field, lidar_points
from .common import (MAX_PIXELS, MAX_POINTS, REASONS, InvalidMessage, check_stamp,
                     sec_to_stamp, stamp_to_sec)
from .compressed import (COMPRESSED_CODECS, CompressedHeader, compressed_header,
                         compressed_to_array, require_opencv)
from .events import EVENT_TIME_TOLERANCE_S, events_from_cloud
from .images import (CAMERA_ENCODINGS, DEPTH_ENCODINGS, EVENT_IMAGE_ENCODINGS,
                     IMAGE_ENCODINGS, IMAGE_LAYOUTS, image_to_array)

__all__ = [
    "Events", "array_to_compressed", "array_to_image", "camera_info_msg", "event_packet_msg",
    "points_to_cloud",
    "CameraModel", "camera_info", "POINTFIELD_DTYPES", "cloud_to_array", "has_field",
    "lidar_points", "MAX_PIXELS", "MAX_POINTS", "REASONS", "InvalidMessage", "check_stamp",
    "sec_to_stamp", "stamp_to_sec", "COMPRESSED_CODECS", "CompressedHeader",
    "compressed_header", "compressed_to_array", "require_opencv", "EVENT_TIME_TOLERANCE_S",
    "events_from_cloud", "CAMERA_ENCODINGS", "DEPTH_ENCODINGS", "EVENT_IMAGE_ENCODINGS",
    "IMAGE_ENCODINGS", "IMAGE_LAYOUTS", "image_to_array",
]
