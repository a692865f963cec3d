"""Decompression bombs inside DICOM, refused before the decoder allocates (private; used by
``_dicom``).

- A compressed frame (JPEG 2000, JPEG, JPEG-LS) carries its own size in its codestream
  header, and the decoders allocate what that header says, not what the DICOM Rows and
  Columns say: a 64 x 64 DICOM holding a JPEG 2000 header that claims 50,000 x 50,000 made
  OpenJPEG take 5 GB. ``check_codestream`` reads that size first: over ``max_pixels`` is a
  413, different from Rows x Columns a 422.
- A deflated data set (transfer syntax 1.2.840.10008.1.2.1.99) is inflated whole by pydicom
  as it parses: a 1 MB file inflated to 2 GB. ``check_deflated`` inflates it first in 1 MiB
  steps, keeping nothing, and refuses it past ``max_inflated_bytes`` (413).
"""

from __future__ import annotations

import struct
import zlib

from assistant.config import Limits
from assistant.imaging._common import check_pixel_count
from assistant.imaging.errors import ImageTooLargeError, UnreadableImageError

DEFLATED = b"1.2.840.10008.1.2.1.99"
_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ
_J2K_SEARCH = 4096  # a JP2 file's boxes come before its codestream
# JPEG SOF0-15 (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7).
_JPEG_SOF = (frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_STEP = 1 << 20


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000, JPEG or JPEG-LS codestream header; None when the
    frame is none of these (RLE: its decoder sizes from Rows and Columns)."""
    at = frame.find(_J2K_SIZ, 0, _J2K_SEARCH)
    if at >= 0:
        fields = frame[at + 8: at + 24]
        if len(fields) < 16:
            raise UnreadableImageError("truncated JPEG 2000 header (SIZ) in the pixel data")
        x, y, x0, y0 = struct.unpack(">IIII", fields)
        return max(x - x0, 0), max(y - y0, 0)
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    return None


def _jpeg_size(frame: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            raise UnreadableImageError(f"corrupt JPEG in the pixel data at byte {pos}")
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", frame[pos + 2: pos + 4])
        if marker in _JPEG_SOF:
            if len(frame) < pos + 9:
                break
            height, width = struct.unpack(">HH", frame[pos + 5: pos + 9])
            return width, height
        if marker == 0xDA or length < 2:
            break
        pos += 2 + length
    raise UnreadableImageError("no frame header (SOF) in the JPEG pixel data")


def check_codestream(frame: bytes, rows: int, columns: int, limits: Limits) -> None:
    """Refuse a compressed frame whose own header is too large or disagrees with the
    DICOM's, before it is decoded."""
    size = codestream_size(frame)
    if size is None:
        return
    width, height = size
    check_pixel_count(width, height, limits)
    if (width, height) != (columns, rows):
        raise UnreadableImageError(
            f"the compressed frame is {width} x {height} pixels; the DICOM header says "
            f"{columns} x {rows}")


def _meta_end(data: bytes) -> int:
    """Where a file's meta group ends, from its (0002,0000) group length."""
    if data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        raise UnreadableImageError("a deflated DICOM needs a file meta group length")
    return 144 + int.from_bytes(data[140:144], "little")


def check_deflated(data: bytes, limits: Limits) -> None:
    """Refuse a deflated data set that inflates past ``max_inflated_bytes``."""
    if data[128:132] != b"DICM" or DEFLATED not in data[132:2048]:
        return
    limit = limits.max_inflated_bytes
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[_meta_end(data):], 0
    try:
        while not inflater.eof:
            out = inflater.decompress(pending, _STEP)
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > limit:
                raise ImageTooLargeError(
                    f"the deflated DICOM data set inflates to more than {limit} bytes",
                    limit_name="max_inflated_bytes", limit=limit, actual=total)
            if not out and not pending:
                break
    except zlib.error as exc:
        raise UnreadableImageError(f"corrupt deflated DICOM data set: {exc}") from exc
