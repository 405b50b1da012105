"""numpy -> messages: images, compressed images, point clouds and CameraInfo, of a class
given as ``cls=`` (rclpy's, the rosbags library's, or any class taking the fields as
keywords), for the node's outputs and the bag tools."""
from __future__ import annotations

import array
import dataclasses
import functools
import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .clouds import POINTFIELD_DTYPES
from .common import sec_to_stamp
from .compressed import COMPRESSED_CODECS, require_opencv
from .images import IMAGE_ENCODINGS, IMAGE_LAYOUTS


def _default_class(name: str) -> type:
    return getattr(importlib.import_module("sensor_msgs.msg"), name)


@functools.cache
def _member_class(cls: type, member: str) -> type:
    """The message class of member ``member`` of ``cls`` (of its elements for a list)."""
    field_types = getattr(cls, "get_fields_and_field_types", None)
    if field_types is not None:  # rosidl (rclpy): 'std_msgs/Header', 'sequence<pkg/Type>'
        ros_type = field_types()[member].removeprefix("sequence<").removesuffix(">")
        package, name = ros_type.split("/")
        return getattr(importlib.import_module(f"{package}.msg"), name)
    if dataclasses.is_dataclass(cls):  # rosbags: annotations name classes beside cls
        annotation = {f.name: f.type for f in dataclasses.fields(cls)}[member]
        if isinstance(annotation, str):
            name = annotation.removeprefix("list[").removesuffix("]")
            found = getattr(sys.modules[cls.__module__], name, None)
            if found is None:  # a type registered at run time (rosbags.usertypes, e.g.
                # EventPacket): its members are the store's own types, in another module
                found = next(getattr(module, name) for module in list(sys.modules.values())
                             if getattr(module, "__name__", "").startswith("rosbags.")
                             and hasattr(module, name))
            annotation = found
        return annotation
    return cls  # a plain namespace class (types.SimpleNamespace): nested ones alike


def _primitive_sequence(cls: type, values: np.ndarray, typecode: str) -> Any:
    """A variable-length primitive member (uint8[] data, float64[] d) as ``cls`` stores it:
    a numpy array for rosbags' dataclasses; an ``array.array`` otherwise, which is what
    rclpy stores and the only form its setter takes without a per-element check (bytes are
    checked element by element under ROS_PYTHON_CHECK_FIELDS=1). One copy either way."""
    values = np.ascontiguousarray(values)
    if dataclasses.is_dataclass(cls):
        return values.reshape(-1).view(np.uint8).view(np.dtype(typecode)).copy()
    sequence = array.array(typecode)
    sequence.frombytes(memoryview(values).cast("B"))
    return sequence


def _new_message(cls: type, sequences: Mapping[str, Any], **fields: Any) -> Any:
    """``cls(**sequences, **fields)``, except that for classes constructed empty (rclpy's)
    the primitive sequences are assigned afterwards: rclpy's constructor copies a sequence
    twice (array.array of it, then the setter), its setter once (not at all under
    ROS_PYTHON_CHECK_FIELDS=1). For a 1920x1080 rgb8 image: 0.4 ms instead of 14 ms."""
    if dataclasses.is_dataclass(cls):  # rosbags: every field is required at construction
        return cls(**sequences, **fields)
    message = cls(**fields)
    for name, value in sequences.items():
        setattr(message, name, value)
    return message


def _header(cls: type, stamp: float | tuple[int, int], frame_id: str) -> Any:
    header_cls = _member_class(cls, "header")
    sec, nanosec = sec_to_stamp(stamp) if not isinstance(stamp, tuple) else stamp
    time = _member_class(header_cls, "stamp")(sec=int(sec), nanosec=int(nanosec))
    return header_cls(stamp=time, frame_id=frame_id)


def _image_array(array: Any, encoding: str, dtype: np.dtype, channels: int,
                 allow_empty: bool) -> np.ndarray:
    """``array`` as an H x W (one channel; H x W x 1 is squeezed) or H x W x ``channels``
    array of ``dtype`` (any byte order); ValueError naming what ``encoding`` needs."""
    image = np.asarray(array)
    if channels == 1 and image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    shape_ok = image.ndim == 2 if channels == 1 else (image.ndim == 3
                                                      and image.shape[2] == channels)
    if (not shape_ok or image.dtype.newbyteorder("=") != dtype.newbyteorder("=")
            or (not allow_empty and 0 in image.shape)):
        want = "H x W" if channels == 1 else f"H x W x {channels}"
        empty = "" if allow_empty else "non-empty "
        raise ValueError(f"encoding {encoding!r} needs a {empty}{want} {dtype} array, got "
                         f"shape {image.shape} {image.dtype}")
    return image


def array_to_image(array: np.ndarray, encoding: str, stamp: float | tuple[int, int],
                   frame_id: str, cls: type | None = None) -> Any:
    """An image array as a ``sensor_msgs/Image`` (a copy of the pixels).

    ``array``: H x W (or H x W x 1) for single-channel encodings, H x W x C otherwise, with
    the encoding's dtype (uint8, uint16, float32; see :data:`IMAGE_ENCODINGS`); anything
    else raises ValueError. The message is little-endian (``is_bigendian`` 0) and unpadded
    (``step`` = width x pixel bytes). ``stamp``: float seconds or ``(sec, nanosec)``.

    ``cls``: the message class, default ``sensor_msgs.msg.Image`` (imported on first use).
    Any rosidl-generated class works (rclpy's), and so do the dataclasses of the
    ``rosbags`` library (e.g. ``typestore.types['sensor_msgs/msg/Image']``), for writing
    bags; the header and time classes are found from ``cls``. Any other class taking the
    fields as keywords (e.g. ``types.SimpleNamespace``, for tests without ROS) is used for
    the nested messages too. rclpy messages get ``data`` as an ``array.array('B')``
    assigned after construction (see _new_message: one copy of the pixels in all, about
    0.5 ms for 1920x1080 rgb8), rosbags ones as a numpy uint8 array.
    """
    if encoding not in IMAGE_LAYOUTS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: "
                         f"{list(IMAGE_ENCODINGS)}")
    channel_dtype, channels = IMAGE_LAYOUTS[encoding]
    image = _image_array(array, encoding, channel_dtype, channels, allow_empty=True)
    image = np.ascontiguousarray(image, dtype=channel_dtype.newbyteorder("<"))
    cls = cls or _default_class("Image")
    height, width = image.shape[:2]
    return _new_message(cls, {"data": _primitive_sequence(cls, image, "B")},
                        header=_header(cls, stamp, frame_id), height=height, width=width,
                        encoding=encoding, is_bigendian=0,
                        step=width * channels * channel_dtype.itemsize)


def array_to_compressed(array: np.ndarray, encoding: str, stamp: float | tuple[int, int],
                        frame_id: str, codec: str = "jpeg", quality: int = 95,
                        png_level: int = 3, cls: type | None = None) -> Any:
    """An image array as a ``sensor_msgs/CompressedImage``, encoded with OpenCV as
    image_transport's compressed plugin does it: colour given to the encoder in BGR order,
    ``format`` ``"<encoding>; jpeg compressed bgr8"`` (``png compressed bgr8``), mono
    ``"mono8; jpeg compressed mono8"`` / ``"mono8; png compressed "``.

    ``array``: H x W x 3 uint8 for ``encoding`` rgb8 or bgr8, H x W uint8 for mono8, H x W
    uint16 for mono16 (png only: JPEG holds 8 bits). ``codec``: jpeg (``quality`` 0..100,
    the plugin's default 95) or png (``png_level`` 0..9, its default 3). ``stamp`` and
    ``cls`` (default ``sensor_msgs.msg.CompressedImage``; rosbags' class for bags) as for
    :func:`array_to_image`. ValueError for anything else; ImportError without OpenCV.
    """
    layouts = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1),
               "mono16": (np.uint16, 1)}
    if codec not in COMPRESSED_CODECS:
        raise ValueError(f"codec must be one of {list(COMPRESSED_CODECS)}, got {codec!r}")
    if encoding not in layouts or (codec == "jpeg" and encoding == "mono16"):
        accepted = [e for e in layouts if codec == "png" or e != "mono16"]
        raise ValueError(f"a {codec} CompressedImage is made of {accepted}, not {encoding!r}")
    dtype, channels = layouts[encoding]
    image = _image_array(array, encoding, np.dtype(dtype), channels, allow_empty=False)
    image = image.astype(np.dtype(dtype).newbyteorder("="), copy=False)  # OpenCV: native
    if not (0 <= quality <= 100 and 0 <= png_level <= 9):
        raise ValueError(f"quality must be in 0..100 and png_level in 0..9, got {quality}, "
                         f"{png_level}")
    cv2 = require_opencv()
    image = np.ascontiguousarray(image)
    if encoding == "rgb8":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, payload = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        pixfmt = "bgr8" if channels == 3 else "mono8"
    else:
        ok, payload = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
        pixfmt = "bgr8" if channels == 3 else ""
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as "
                         f"{codec}")
    cls = cls or _default_class("CompressedImage")
    return _new_message(cls, {"data": _primitive_sequence(cls, payload.reshape(-1), "B")},
                        header=_header(cls, stamp, frame_id),
                        format=f"{encoding}; {codec} compressed {pixfmt}")


#: numpy dtype -> PointField.datatype, for points_to_cloud.
_DTYPE_TO_POINTFIELD = {dtype.newbyteorder("="): datatype
                        for datatype, dtype in POINTFIELD_DTYPES.items()}


def points_to_cloud(columns: Mapping[str, np.ndarray], stamp: float | tuple[int, int],
                    frame_id: str, cls: type | None = None,
                    field_cls: type | None = None) -> Any:
    """Columns of equal length N as an unorganised (height 1) ``sensor_msgs/PointCloud2``.

    Fields are packed (no padding) in the order of ``columns``, each with the PointField
    datatype of its numpy dtype (int8 INT8, uint8 UINT8, ... float32 FLOAT32, float64
    FLOAT64; other dtypes, e.g. int64, raise ValueError: cast first). ``is_dense`` is true
    only when every float column is finite. Little-endian. ``cls`` / ``field_cls``: the
    PointCloud2 / PointField classes, default sensor_msgs.msg's; ``field_cls`` defaults to
    the element class of ``cls.fields`` (see :func:`array_to_image` for the classes that
    work).
    """
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    if not arrays:
        raise ValueError("a point cloud needs at least one column")
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"columns must be 1-D of one length, got shapes "
                         f"{ {name: a.shape for name, a in arrays.items()} }")
    n = next(iter(shapes))[0]
    datatypes = {}
    for name, a in arrays.items():
        datatype = _DTYPE_TO_POINTFIELD.get(a.dtype.newbyteorder("="))
        if datatype is None:
            raise ValueError(f"column {name!r} has dtype {a.dtype}, which PointField cannot "
                             "hold (int8..uint32, float32, float64)")
        datatypes[name] = datatype
    offsets, point_step = {}, 0
    for name, datatype in datatypes.items():
        offsets[name] = point_step
        point_step += POINTFIELD_DTYPES[datatype].itemsize
    record = np.dtype({"names": list(arrays),
                       "formats": [POINTFIELD_DTYPES[datatypes[name]] for name in arrays],
                       "offsets": [offsets[name] for name in arrays], "itemsize": point_step})
    packed = np.empty(n, record)
    for name, a in arrays.items():
        packed[name] = a
    is_dense = all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")

    cls = cls or _default_class("PointCloud2")
    field_cls = field_cls or _member_class(cls, "fields")
    fields = [field_cls(name=name, offset=offsets[name], datatype=datatypes[name], count=1)
              for name in arrays]
    return _new_message(cls, {"data": _primitive_sequence(cls, packed.view(np.uint8), "B")},
                        header=_header(cls, stamp, frame_id), height=1, width=n, fields=fields,
                        is_bigendian=False, point_step=point_step, row_step=point_step * n,
                        is_dense=bool(is_dense))


def camera_info_msg(K: Any, size_hw: tuple[int, int], stamp: float | tuple[int, int],
                    frame_id: str, D: Sequence[float] | None = None,
                    cls: type | None = None, distortion_model: str = "plumb_bob") -> Any:
    """A ``sensor_msgs/CameraInfo`` for intrinsics ``K`` (3 x 3) of an image of ``size_hw``.

    ``distortion_model`` (default plumb_bob) with ``d`` = ``D`` (default 5 zeros), ``k`` = K
    row-major, ``r`` = identity, ``p`` = [K | 0], no binning, an empty ROI. ``cls``: the CameraInfo
    class, default sensor_msgs.msg's (see :func:`array_to_image` for the classes that work).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3 x 3, got shape {K.shape}")
    distortion = np.zeros(5) if D is None else np.asarray(D, dtype=np.float64).reshape(-1)
    cls = cls or _default_class("CameraInfo")
    roi = _member_class(cls, "roi")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _new_message(cls, {"d": _primitive_sequence(cls, distortion, "d")},
                        header=_header(cls, stamp, frame_id), height=int(size_hw[0]),
                        width=int(size_hw[1]), distortion_model=distortion_model,
                        k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1),
                        p=np.hstack([K, np.zeros((3, 1))]).reshape(-1), binning_x=0,
                        binning_y=0, roi=roi)


def event_packet_msg(events: bytes | np.ndarray, encoding: str, size_hw: tuple[int, int],
                     stamp: float | tuple[int, int], frame_id: str, seq: int = 0,
                     time_base: int = 0, cls: type | None = None) -> Any:
    """An ``event_camera_msgs/EventPacket`` holding ``events`` (already encoded, e.g. by
    :func:`~anyseg_ros.conversions.event_packets.encode_evt3`), little-endian. ``cls``: the
    message class, default event_camera_msgs.msg's (rosbags' class for bags)."""
    if cls is None:
        cls = getattr(importlib.import_module("event_camera_msgs.msg"), "EventPacket")
    data = np.frombuffer(events, np.uint8) if isinstance(events, (bytes, bytearray)) \
        else np.asarray(events, np.uint8).reshape(-1)
    return _new_message(cls, {"events": _primitive_sequence(cls, data, "B")},
                        header=_header(cls, stamp, frame_id), height=int(size_hw[0]),
                        width=int(size_hw[1]), seq=int(seq), time_base=int(time_base),
                        encoding=encoding, is_bigendian=False)
