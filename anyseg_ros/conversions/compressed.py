"""``sensor_msgs/CompressedImage`` (jpeg, png as image_transport's compressed plugin writes
them): header parsing without decoding, and decoding with OpenCV into what
:func:`~anyseg_ros.conversions.images.image_to_array` gives for a raw image."""
from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Any, NamedTuple

import numpy as np

from .common import MAX_PIXELS, InvalidMessage, byte_view
from .images import CAMERA_ENCODINGS


#: Codecs :func:`compressed_to_array` reads: the CODEC of image_transport's compressed
#: plugin (``"ORIG; CODEC compressed [PIXFMT]"``) or a bare format ("jpeg", "jpg", "png").
COMPRESSED_CODECS = ("jpeg", "png")
#: Colour encodings of the raw image, as image_transport's ``enc::isColor`` names them: for
#: these the compressed pixel format (``PIXFMT``) says the channel order of the payload.
_COLOUR_ENCODINGS = frozenset(("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16",
                               "bgra16"))
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk, CRC included
#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman or
#: arithmetic): every marker C0..CF but C4 (DHT), C8 (reserved) and CC (DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length: TEM and RST0..7 (SOI/EOI are handled apart).
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
#: PNG colour type -> channels (palette: 3, OpenCV expands it).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class CompressedHeader(NamedTuple):
    """What a JPEG or PNG payload's header says, read without decoding it."""

    codec: str  # "jpeg" or "png"
    height: int
    width: int
    channels: int  # JPEG components (1, 3, 4); PNG channels of the colour type
    bit_depth: int  # JPEG sample precision (8, 12); PNG bit depth (1 .. 16)
    #: byte offset of the size fields: JPEG 16-bit height then width (big-endian), PNG
    #: 32-bit width then height (big-endian)
    size_offset: int


def compressed_header(data: Any) -> CompressedHeader:
    """The size and layout of a JPEG or PNG payload (``CompressedImage.data``) from its
    header: a walk over the JPEG segments up to the frame header (SOFn), or PNG's IHDR
    chunk. No pixels are decoded. Raises ``InvalidMessage("bad_compressed")`` when the data
    is neither, or its header is cut off or malformed."""
    view = memoryview(byte_view(data))
    n = len(view)
    if bytes(view[:3]) == _JPEG_MAGIC:
        i = 2
        while i + 4 <= n:
            if view[i] != 0xFF:
                raise InvalidMessage("bad_compressed", f"JPEG: no marker at byte {i} (found "
                                                       f"0x{view[i]:02x}) before the frame header")
            while i < n and view[i] == 0xFF:  # fill bytes before a marker
                i += 1
            if i >= n:
                break
            marker = view[i]
            i += 1
            if marker in _JPEG_STANDALONE:
                continue
            if marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI, SOS before any frame header
                raise InvalidMessage("bad_compressed", f"JPEG: marker 0x{marker:02x} at byte "
                                                       f"{i - 1} before the frame header (SOF)")
            if i + 2 > n:
                break
            length = struct.unpack_from(">H", view, i)[0]
            if length < 2:
                raise InvalidMessage("bad_compressed", f"JPEG: segment 0x{marker:02x} at byte "
                                                       f"{i - 1} has length {length}")
            if marker in _JPEG_SOF:
                if i + 8 > n:
                    break
                precision, height, width, components = struct.unpack_from(">BHHB", view, i + 2)
                return CompressedHeader("jpeg", height, width, components, precision, i + 3)
            i += length
        raise InvalidMessage("bad_compressed", f"JPEG of {n} bytes ends before its frame "
                                               "header (SOF): cut off")
    if bytes(view[:8]) == _PNG_MAGIC:
        if n < 33 or bytes(view[12:16]) != b"IHDR":  # signature + IHDR chunk with its CRC
            raise InvalidMessage("bad_compressed", f"PNG of {n} bytes has no IHDR chunk "
                                                   "after the signature")
        width, height, depth, colour = struct.unpack_from(">IIBB", view, 16)
        if colour not in _PNG_CHANNELS:
            raise InvalidMessage("bad_compressed", f"PNG colour type {colour} does not exist")
        return CompressedHeader("png", height, width, _PNG_CHANNELS[colour], depth, 16)
    raise InvalidMessage("bad_compressed", f"the data is neither a JPEG nor a PNG (it starts "
                                           f"with {bytes(view[:8]).hex(' ')})")


def require_opencv() -> Any:
    """The ``cv2`` module, imported on first use; an ImportError saying how to install it
    when missing (decoding ``sensor_msgs/CompressedImage`` needs it: call this at start-up
    to fail there rather than on the first image)."""
    try:
        import cv2
    except ImportError as err:  # pip installs without the `cv` extra have no OpenCV
        raise ImportError("decoding or encoding sensor_msgs/CompressedImage needs OpenCV "
                          "for Python (cv2): pip install 'anyseg_ros[cv]' "
                          "(opencv-python-headless), or apt install python3-opencv on a ROS "
                          "machine") from err
    return cv2


def _compressed_format(text: str) -> tuple[str, str, bool]:
    """``CompressedImage.format`` -> (original encoding or "", codec or "", payload in RGB
    order).

    image_transport's compressed plugin writes ``"ORIG; CODEC compressed PIXFMT"``: ORIG the
    raw image's encoding, CODEC jpeg or png, PIXFMT the order the encoder was given for
    colour images (bgr8, bgr16) and "mono8" or nothing for mono ones. Its subscriber takes a
    colour payload as BGR when the format holds "compressed bgr", else as RGB; for a mono
    or generic (8UC3) original, and for formats without ";" (older plugins and many drivers
    write "jpeg"; empty: jpeg or png by the data), as OpenCV decodes it, BGR."""
    text = str(text).strip()
    if ";" not in text:
        codec = text.lower()
        return "", "jpeg" if codec == "jpg" else codec, False
    original, _, rest = text.partition(";")
    original, words = original.strip(), rest.lower().split()
    if len(words) < 2 or words[1] != "compressed":
        # e.g. compressedDepth's "16UC1; compressedDepth png", or "rgb8; tiff"
        raise InvalidMessage("unknown_encoding", f"compressed format {text!r} is not "
                                                 "\"ENCODING; jpeg|png compressed [PIXFMT]\"")
    codec = "jpeg" if words[0] == "jpg" else words[0]
    rgb = original in _COLOUR_ENCODINGS and not (len(words) > 2 and words[2].startswith("bgr"))
    return original, codec, rgb


def compressed_to_array(msg: Any, encodings: Collection[str] = CAMERA_ENCODINGS
                        ) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/CompressedImage`` (jpeg or png) as ``(array, encoding)``, decoded with
    OpenCV, like :func:`image_to_array` gives a raw camera image: colour as H x W x 3 uint8
    ``"rgb8"`` (alpha dropped), grey as H x W uint8 ``"mono8"`` or, from a 16-bit PNG,
    uint16 ``"mono16"``. The array is a new one (not a view of ``msg.data``).

    ``msg.format`` is read as image_transport's compressed plugin writes it,
    ``"ORIG; CODEC compressed PIXFMT"`` (e.g. ``"rgb8; jpeg compressed bgr8"``,
    ``"mono8; png compressed "``), or as a bare codec (``"jpeg"``, ``"jpg"``, ``"png"``,
    case-insensitive; empty: jpeg or png by the data), which is decoded as OpenCV's BGR;
    see :func:`_compressed_format` for the channel order. ORIG, when given, must be in
    ``encodings`` (default :data:`CAMERA_ENCODINGS`), as the raw image's encoding must be
    for image_to_array; so must the encoding returned.

    Checked before any pixel is decoded: the format, the data's magic bytes (the codec's),
    the size in its header (:func:`compressed_header`) against :data:`MAX_PIXELS`, and its
    end (JPEG's EOI marker, trailing zero bytes allowed; PNG's IEND chunk): a cut-off
    payload is refused without decoding it. Reasons: unknown_encoding (a format other than
    jpeg/png or not of the plugin's pattern, an ORIG not accepted, 16-bit colour),
    data_length (no data), bad_size (zero or more than MAX_PIXELS pixels), bad_compressed
    (not the codec's data, a header or end missing, or OpenCV cannot decode it). Needs
    OpenCV (:func:`require_opencv`: ImportError otherwise).

    Not detected: bytes overwritten inside a JPEG's entropy-coded data with its header and
    end intact; JPEG has no checksum, and libjpeg decodes them into wrong pixels (with a
    "Corrupt JPEG data" warning on stderr). PNG's checksums and filters catch most.
    """
    original, codec, rgb_order = _compressed_format(msg.format)
    if codec not in ("", *COMPRESSED_CODECS):
        raise InvalidMessage("unknown_encoding", f"compressed format {msg.format!r}: codec "
                                                 f"{codec!r} is not one of "
                                                 f"{list(COMPRESSED_CODECS)}")
    if original and original not in encodings:
        raise InvalidMessage("unknown_encoding", f"compressed format {msg.format!r}: image "
                                                 f"encoding {original!r} is not accepted here: "
                                                 f"{list(encodings)}")
    data = byte_view(msg.data)
    if data.size == 0:
        raise InvalidMessage("data_length", f"no data in a compressed image of format "
                                            f"{msg.format!r}")
    header = compressed_header(data)
    if codec and header.codec != codec:
        raise InvalidMessage("bad_compressed", f"format {msg.format!r} says {codec}, the data "
                                               f"is a {header.codec.upper()}")
    height, width = header.height, header.width
    if height <= 0 or width <= 0 or height * width > MAX_PIXELS:
        raise InvalidMessage("bad_size", f"{header.codec} image of {height} x {width} pixels "
                                         f"(at most {MAX_PIXELS} pixels, none empty)")
    if header.codec == "png" and header.bit_depth == 16 and header.channels > 2:
        raise InvalidMessage("unknown_encoding", "a 16-bit colour PNG (rgb16) is not accepted "
                                                 f"here: {list(encodings)}")
    if header.codec == "jpeg":
        complete = bytes(data[-256:]).rstrip(b"\x00").endswith(b"\xff\xd9")
    else:
        complete = bytes(data[-12:]) == _PNG_IEND
    if not complete:
        raise InvalidMessage("bad_compressed", f"{header.codec} of {data.size} bytes for "
                                               f"{height} x {width} pixels has no end marker "
                                               f"({'EOI' if header.codec == 'jpeg' else 'IEND'}): "
                                               "cut off")
    cv2 = require_opencv()
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF rotation
    except cv2.error as e:
        raise InvalidMessage("bad_compressed", f"OpenCV cannot decode the {header.codec} of "
                                               f"{data.size} bytes: {e}") from None
    if image is None:
        raise InvalidMessage("bad_compressed", f"OpenCV cannot decode the {header.codec} of "
                                               f"{data.size} bytes ({height} x {width} pixels "
                                               "in its header)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:  # the header walk missed a frame
        raise InvalidMessage("bad_size", f"decoded image of {image.shape[0]} x "
                                         f"{image.shape[1]} pixels (at most {MAX_PIXELS})")
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype == np.uint8 and channels == 1:
        image, encoding = image.reshape(image.shape[:2]), "mono8"
    elif image.dtype == np.uint16 and channels == 1:
        image, encoding = image.reshape(image.shape[:2]), "mono16"
    elif image.dtype == np.uint8 and channels == 3:
        if not rgb_order:
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place
        encoding = "rgb8"
    elif image.dtype == np.uint8 and channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if rgb_order else cv2.COLOR_BGRA2RGB)
        encoding = "rgb8"
    else:
        raise InvalidMessage("unknown_encoding", f"decoded {header.codec} of {channels} "
                                                 f"channel(s) of {image.dtype} is not a camera "
                                                 "image (8-bit colour or grey, 16-bit grey)")
    if encoding not in encodings:
        raise InvalidMessage("unknown_encoding", f"a {header.codec} decoded as {encoding} is "
                                                 f"not accepted here: {list(encodings)}")
    return image, encoding


