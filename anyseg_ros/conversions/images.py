"""``sensor_msgs/Image`` -> numpy: raw images (camera, depth, rendered event frames), as
views of the message buffer where the layout allows."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from .common import MAX_PIXELS, InvalidMessage, byte_view


#: encoding -> (numpy dtype of one channel, channels).
IMAGE_LAYOUTS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32FC3": (np.dtype(np.float32), 3),
}
#: OpenCV's generic encodings under the name whose channel order they have in practice
#: (cv2.imread gives BGR), as anyseg_core's camera_to_tensor reads them.
_CANONICAL_ENCODING = {"8UC3": "bgr8", "8UC1": "mono8"}

IMAGE_ENCODINGS = tuple(IMAGE_LAYOUTS)
#: What the camera accepts: exactly anyseg_core.sensors.CAMERA_ENCODINGS (8UC3 is read as
#: bgr8 and 8UC1 as mono8; image_to_array returns those names).
CAMERA_ENCODINGS = ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "mono8", "8UC1", "mono16")
#: Depth: 16UC1 millimetres or 32FC1 metres, as anyseg_core.sensors.DEPTH_ENCODINGS.
DEPTH_ENCODINGS = ("16UC1", "32FC1")
#: An event frame rendered upstream: H x W x 3 float channels (positive count, negative
#: count, recency) as anyseg_core's render_events makes them; 8-bit images cannot hold them.
EVENT_IMAGE_ENCODINGS = ("32FC3",)


def image_to_array(msg: Any, encodings: Collection[str] | None = None
                   ) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image`` as ``(array, encoding)``.

    The array is H x W x C for multi-channel encodings and H x W for single-channel ones,
    with the encoding's dtype (uint8, uint16 or float32) in native byte order. It is a view
    of ``msg.data`` (row padding skipped by strides) unless the data must be byte-swapped
    (``is_bigendian`` differs from this machine), is misaligned for its dtype, or comes as
    something without the buffer protocol: then it is a copy. The encoding returned is the
    message's, except that 8UC3 comes back as bgr8 and 8UC1 as mono8 (the same bytes, named
    as the camera reads them).

    Supported: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3, 16UC1, 32FC1, 32FC3.
    ``encodings`` narrows what this use accepts (:data:`CAMERA_ENCODINGS`,
    :data:`DEPTH_ENCODINGS`, :data:`EVENT_IMAGE_ENCODINGS`); anything else raises
    ``InvalidMessage("unknown_encoding")``. Other reasons: bad_size, step_too_small,
    data_length.
    """
    encoding = msg.encoding
    if encoding not in IMAGE_LAYOUTS or (encodings is not None and encoding not in encodings):
        accepted = list(encodings if encodings is not None else IMAGE_ENCODINGS)
        raise InvalidMessage("unknown_encoding",
                             f"image encoding {encoding!r} is not accepted here: {accepted}")
    channel_dtype, channels = IMAGE_LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0 or height * width > MAX_PIXELS:
        raise InvalidMessage("bad_size", f"image of {height} x {width} pixels (at most "
                                         f"{MAX_PIXELS} pixels, none empty)")
    row_bytes = width * channels * channel_dtype.itemsize
    if step < row_bytes:
        raise InvalidMessage("step_too_small", f"step {step} < {row_bytes} bytes for {width} "
                                               f"{encoding} pixels")
    data = byte_view(msg.data)
    if data.size != step * height:
        raise InvalidMessage("data_length", f"{data.size} bytes of data, expected step {step} x "
                                            f"height {height} = {step * height}")
    dtype = channel_dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # Rows as a (height, step) byte array, padding cut off, reinterpreted in place.
    image = data.reshape(height, step)[:, :row_bytes].view(dtype)
    image = image.reshape((height, width, channels) if channels > 1 else (height, width))
    if not dtype.isnative:
        image = image.astype(channel_dtype)  # a native copy: torch cannot wrap swapped bytes
    elif not image.flags.aligned:
        image = image.copy()
    return image, _CANONICAL_ENCODING.get(encoding, encoding)


