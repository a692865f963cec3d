"""PNG and JPEG: header checks by hand, then decoding with OpenCV (private; see ``read``).

The headers (PNG IHDR, JPEG SOFn) are parsed here rather than trusted to the
decoder so that an image claiming 100000 x 100000 pixels is refused before a
single pixel buffer is allocated. A JPEG's EXIF orientation (cameras and phones store
the sensor's rows and say how to turn them) is applied, so the pixels, the size and the
heatmap's sides are those a viewer shows.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from assistant.config import Limits
from assistant.imaging._common import (
    DecodedImage,
    ImageFormat,
    ImageMeta,
    check_pixel_count,
    collapse_grey,
    to_unit_float,
)
from assistant.imaging.errors import UnreadableImageError, UnsupportedFormatError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC: always these 12 bytes
# PNG colour type -> allowed bit depths (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_PALETTE = 3

# SOF0-SOF15 carry the frame header, except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_JPEG_EOI = b"\xff\xd9"
_JPEG_LS_SOF = 0xF7  # SOF55: a JPEG-LS frame, which OpenCV does not decode


@dataclass(frozen=True)
class RasterHeader:
    """What the header promises, checked against the decoded array."""

    width: int
    height: int
    bit_depth: int
    end: int  # offset just after the header segment
    orientation: int = 1  # EXIF Orientation (1-8) of a JPEG; 1: rows as stored


def read_png_header(data: bytes) -> RasterHeader:
    """Parse and validate the IHDR chunk, which must come first."""
    ihdr = data[8:33]
    if len(ihdr) < 25:
        raise UnreadableImageError(f"truncated PNG: {len(data)} bytes, no complete IHDR chunk")
    length, kind = struct.unpack(">I4s", ihdr[:8])
    if length != 13 or kind != b"IHDR":
        raise UnreadableImageError("corrupt PNG: the first chunk is not a 13-byte IHDR")
    (crc,) = struct.unpack(">I", ihdr[21:25])
    if zlib.crc32(ihdr[4:21]) != crc:
        raise UnreadableImageError("corrupt PNG: IHDR checksum mismatch")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", ihdr[8:21]
    )
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise UnreadableImageError(f"corrupt PNG: invalid size {width} x {height}")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise UnreadableImageError(f"corrupt PNG: bit depth {depth} with colour type {colour}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise UnreadableImageError("corrupt PNG: unknown compression, filter or interlace method")
    # Palette entries are 8-bit whatever the index depth; sub-byte grey is expanded to 8.
    bit_depth = 8 if colour == _PNG_PALETTE else max(depth, 8)
    return RasterHeader(width, height, bit_depth, end=33)


def read_jpeg_header(data: bytes) -> RasterHeader:
    """Walk the marker segments up to the SOFn frame header."""
    pos = 2
    orientation: int | None = None  # the first EXIF segment's, as libjpeg and Pillow read it
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise UnreadableImageError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise UnreadableImageError("corrupt JPEG: no frame header (SOF) before the image data")
        if marker == _JPEG_LS_SOF:
            raise UnsupportedFormatError("JPEG-LS files are not supported on their own: send "
                                         "the image as DICOM (JPEG-LS transfer syntax), PNG "
                                         "or baseline JPEG")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            segment = data[pos + 4 : pos + 2 + length]
            if length < 8 or len(segment) < 6:
                raise UnreadableImageError("truncated JPEG: incomplete frame header")
            precision, height, width = struct.unpack(">BHH", segment[:5])
            if width == 0 or height == 0:
                raise UnreadableImageError(
                    f"unsupported JPEG: frame header gives size {width} x {height}"
                )
            return RasterHeader(width, height, precision, pos + 2 + length, orientation or 1)
        if length < 2:
            raise UnreadableImageError(f"corrupt JPEG: segment length {length} at byte {pos}")
        if marker == 0xE1 and orientation is None:  # APP1: EXIF, how the rows are turned
            orientation = exif_orientation(data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    raise UnreadableImageError("truncated JPEG: no frame header (SOF) found")


def exif_orientation(segment: bytes) -> int | None:
    """The Orientation tag (0x0112) in the first image directory of an APP1 EXIF
    segment; None when the segment is not EXIF or has no readable orientation."""
    if not segment.startswith(b"Exif\x00\x00"):
        return None
    tiff = segment[6:]
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(tiff[:4])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, kind, n = struct.unpack(order + "HHI", entry[:8])
            if tag == 0x0112 and kind == 3 and n == 1:  # one SHORT
                (value,) = struct.unpack(order + "H", entry[8:10])
                return value if 1 <= value <= 8 else None
    except struct.error:  # a directory cut short: no orientation
        return None
    return None


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Rows and columns as EXIF orientation 1-8 says to show them (TIFF 6.0, tag 274):
    2 mirrored, 3 turned 180 degrees, 4 flipped, 5 transposed, 6 turned 90 degrees
    clockwise, 7 transversed, 8 turned 90 degrees anticlockwise."""
    turned = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return array if turned is None else np.ascontiguousarray(turned(array))


def decode_png(data: bytes, limits: Limits) -> DecodedImage:
    header = read_png_header(data)
    check_pixel_count(header.width, header.height, limits)
    if data.rfind(_PNG_IEND, header.end) == -1:
        raise UnreadableImageError(f"truncated PNG: no IEND chunk in {len(data)} bytes")
    return _decode_with_cv2(data, "png", header)


def decode_jpeg(data: bytes, limits: Limits) -> DecodedImage:
    header = read_jpeg_header(data)
    check_pixel_count(header.width, header.height, limits)
    # 0xFF bytes inside entropy-coded data are stuffed (FF 00), so FF D9 after the
    # frame header can only be the end-of-image marker.
    if data.rfind(_JPEG_EOI, header.end) == -1:
        raise UnreadableImageError(f"truncated JPEG: no end-of-image marker in {len(data)} bytes")
    return _decode_with_cv2(data, "jpeg", header)


def _decode_with_cv2(data: bytes, fmt: ImageFormat, header: RasterHeader) -> DecodedImage:
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        if fmt == "jpeg" and header.bit_depth != 8:  # 12-bit JPEG: DICOM's, not OpenCV's
            raise UnsupportedFormatError(
                f"{header.bit_depth}-bit JPEG files are not supported on their own: send the "
                "image as DICOM (its JPEG transfer syntaxes decode them) or as PNG")
        detail = f" ({header.bit_depth}-bit samples)" if header.bit_depth not in (8, 16) else ""
        raise UnreadableImageError(f"the {fmt.upper()} decoder could not decode the image{detail}")
    if array.shape[:2] != (header.height, header.width):
        raise UnreadableImageError(
            f"corrupt {fmt.upper()}: decoded {array.shape[1]} x {array.shape[0]}, "
            f"header says {header.width} x {header.height}"
        )
    if fmt == "jpeg" and (fill := _grey_fill_rows(array)):
        raise UnreadableImageError(
            f"corrupt JPEG: its scan data ends early, so the decoder filled the last {fill} "
            f"of {array.shape[0]} rows with flat grey (a file cut short, its end marker "
            "put back)")
    if array.dtype == np.uint8:
        full_scale = 255.0
    elif array.dtype == np.uint16:
        # 16-bit PNG uses the full range; a 12-bit JPEG decodes to uint16 holding 0..4095.
        full_scale = float(2 ** min(header.bit_depth, 16) - 1)
    else:
        raise UnreadableImageError(f"unsupported {fmt.upper()} sample type {array.dtype}")
    pixels = orient(collapse_grey(_to_rgb(to_unit_float(array, full_scale))), header.orientation)
    meta = ImageMeta(
        format=fmt,
        width=pixels.shape[1],
        height=pixels.shape[0],
        channels=1 if pixels.ndim == 2 else 3,
        bit_depth=header.bit_depth,
        orientation=header.orientation,
    )
    return DecodedImage(pixels=pixels, meta=meta)


JPEG_FILL = 128  # what libjpeg decodes a missing block to: DC 0, mid-grey in every channel
BLOCK = 8  # a JPEG block's side


def _grey_fill_rows(array: np.ndarray) -> int:
    """How many bottom rows of a decoded 8-bit JPEG are the decoder's fill for scan data
    that ended early (a file cut short, its end marker put back): rows of exactly
    ``JPEG_FILL`` in every pixel and channel, at least a block high, under the block row
    where the data ran out, whose last block is fill and whose first is not (blocks are
    decoded left to right). 0 otherwise: a uniform grey image, or an image with a grey band
    along its foot (its edge rings, and the row above it is content edge to edge)."""
    if array.dtype != np.uint8:
        return 0
    fill = array == JPEG_FILL
    fill = fill if fill.ndim == 2 else fill.all(axis=2)
    rows = fill.all(axis=1)
    n = int(np.argmin(rows[::-1])) if not rows.all() else 0
    start = array.shape[0] - n
    if n < BLOCK or start < BLOCK:
        return 0
    cut = fill[start - BLOCK:start]  # the block row the data ran out in
    return n if cut[:, -BLOCK:].all() and not cut[:, :BLOCK].all() else 0


def _to_rgb(unit: np.ndarray) -> np.ndarray:
    """OpenCV channel layouts -> (H, W) grey or (H, W, 3) RGB; alpha composited over black."""
    if unit.ndim == 2:
        return unit
    channels = unit.shape[2]
    if channels == 1:
        return unit[..., 0]
    if channels == 2:  # grey + alpha
        return unit[..., 0] * unit[..., 1]
    if channels == 3:  # BGR
        return np.ascontiguousarray(unit[..., ::-1])
    if channels == 4:  # BGRA
        return np.ascontiguousarray(unit[..., 2::-1] * unit[..., 3:4])
    raise UnreadableImageError(f"unsupported channel count {channels}")
