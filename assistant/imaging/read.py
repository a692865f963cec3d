"""Read an uploaded image (PNG, JPEG or DICOM) into display-ready pixels.

Every check that protects memory runs before the work it protects:

1. size: more than ``limits.max_upload_bytes`` is refused before anything else
   (a path is stat-ed, then read with a bounded read);
2. format: decided by magic bytes only, never by the file name; a DICOM whose preamble
   holds an executable header (a PE/ELF polyglot) is refused;
3. dimensions: PNG IHDR, JPEG SOFn and DICOM Rows/Columns/NumberOfFrames are read
   from the header and checked against ``max_pixels`` / ``max_frames`` before any
   pixel is decoded, so decompression bombs fail in milliseconds (inside DICOM too: the
   compressed frame's own header, and a deflated data set's inflated size);
4. memory: a frame of 4 million pixels or more holds one of two process-wide decode
   slots while it is decoded, so concurrent uploads cannot multiply its peak.

Output: float32 pixels in [0, 1], (H, W) for grey or (H, W, 3) for RGB. A colour
image whose three channels are identical is returned as grey. PNG/JPEG alpha is
composited over black. DICOM follows the grayscale pipeline (Modality LUT, VOI
LUT or the first window, else min-max; MONOCHROME1 inverted) - see ``_dicom``.

Multi-frame DICOM: only the middle frame, ``index = n_frames // 2``, is decoded
and returned (frames are not all decoded, so a 2,000-frame cine costs one frame).
``meta.frame_count`` and ``meta.frame_index`` say which one it was.

Errors: only subclasses of ``ImageInputError`` leave this module for bad bytes;
decoder exceptions are wrapped in ``UnreadableImageError`` with the cause chained.
OS errors opening a *path* (missing file, permissions) propagate unchanged: they
are the caller's problem, not the image's.
"""

from __future__ import annotations

import logging
import os
import select
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from assistant.config import Limits
from assistant.imaging import _dicom, _raster
from assistant.imaging._common import (
    DECODER_ERRORS,
    DecodedImage,
    ImageFormat,
    ImageMeta,
    decode_slot,
    describe_error,
)
from assistant.imaging.errors import (
    ImageInputError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedFormatError,
)

__all__ = ["DecodedImage", "ImageMeta", "read_dicom_values", "read_image", "sniff_format"]

logger = logging.getLogger(__name__)

Source = bytes | bytearray | memoryview | str | os.PathLike[str]
T = TypeVar("T")

_SUPPORTED = "supported formats are PNG, JPEG and DICOM"
# Explicit VR codes, for recognising a DICOM data set written without preamble/meta.
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)
# Signatures of formats people upload by mistake, named in the error message.
# Checked before the text test; the two-byte ones after it (text may start "BM").
_STRONG_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF-", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"PK\x05\x06", "ZIP"),
    (b"\x7fELF", "ELF/PE executable"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"\x1f\x8b", "gzip"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"\x93NUMPY", "NumPy array"),
)
_WEAK_MAGIC: tuple[tuple[bytes, str], ...] = ((b"MZ", "ELF/PE executable"), (b"BM", "BMP"))


def sniff_format(data: bytes) -> ImageFormat:
    """The format from magic bytes; `UnsupportedFormatError` naming what it is otherwise."""
    if data.startswith(_raster.PNG_SIGNATURE):
        return "png"
    if data.startswith(_raster.JPEG_SIGNATURE):
        return "jpeg"
    if data[128:132] == b"DICM":
        _check_preamble(data[:128])
        return "dicom"
    if _looks_like_bare_dicom(data):
        return "dicom"
    what = _describe_unsupported(data)
    raise UnsupportedFormatError(f"unsupported file format ({what}); {_SUPPORTED}")


def _check_preamble(preamble: bytes) -> None:
    """Refuse a DICOM whose 128-byte preamble holds an executable header: a DICOM / PE or
    ELF polyglot, which runs as a program on a careless machine (CVE-2019-11687)."""
    for magic in (b"MZ", b"\x7fELF", b"#!"):
        if preamble.startswith(magic):
            raise UnsupportedFormatError(
                f"refused: the DICOM preamble holds an executable header ({magic!r}), a "
                "DICOM/executable polyglot; re-export the image (the preamble should be "
                "zeros)")


def read_image(source: Source, limits: Limits | None = None) -> DecodedImage:
    """Bytes or a path -> display-ready float32 pixels in [0, 1] and non-identifying metadata."""
    limits = limits if limits is not None else _default_limits()
    data = _load(source, limits)
    fmt = sniff_format(data)
    decoders: dict[ImageFormat, Callable[[], DecodedImage]] = {
        "png": lambda: _raster.decode_png(data, limits),
        "jpeg": lambda: _raster.decode_jpeg(data, limits),
        "dicom": lambda: _dicom.read_display(data, limits),  # holds its own slot
    }
    with decode_slot(_raster_pixels(fmt, data)):  # large frames: a few at a time
        image = _guarded(fmt, decoders[fmt])
        pixels = np.nan_to_num(image.pixels, nan=0.0, posinf=1.0, neginf=0.0)
    logger.debug("read %s image %dx%d", fmt, image.meta.width, image.meta.height)
    return DecodedImage(pixels=pixels.astype(np.float32, copy=False), meta=image.meta,
                        study_uid=image.study_uid)


def read_dicom_values(source: Source, limits: Limits | None = None) -> tuple[np.ndarray, ImageMeta]:
    """DICOM modality values (after rescale or Modality LUT, before VOI) as float32.

    Colour images give their decoded samples (YBR already converted to RGB);
    palette images give the stored indices. Same limits and frame rule as
    `read_image`; ``meta.window`` is None because no window is applied.
    """
    limits = limits if limits is not None else _default_limits()
    data = _load(source, limits)
    fmt = sniff_format(data)
    if fmt != "dicom":
        raise UnsupportedFormatError(f"expected DICOM, got {fmt.upper()}")
    frame = _guarded(fmt, lambda: _dicom.read_frame(data, limits))
    return frame.values, frame.meta


def _raster_pixels(fmt: ImageFormat, data: bytes) -> int:
    """The pixels a PNG or JPEG header claims (0 for DICOM, or a header that does not
    parse: the decoder then says why)."""
    try:
        if fmt == "png":
            header = _raster.read_png_header(data)
        elif fmt == "jpeg":
            header = _raster.read_jpeg_header(data)
        else:
            return 0
    except ImageInputError:
        return 0
    return header.width * header.height


def _default_limits() -> Limits:
    # model_validate rather than Limits(): mypy without the pydantic plugin does not
    # see Field defaults given positionally.
    return Limits.model_validate({})


def _load(source: Source, limits: Limits) -> bytes:
    """The bytes of `source`, refusing more than ``max_upload_bytes`` before reading them."""
    limit = limits.max_upload_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        _check_size(len(source), limit)
        data = bytes(source)
    else:
        path = Path(source)
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe would wait for a writer; a device, forever
            raise UnreadableImageError(f"{path} is not a regular file")
        _check_size(info.st_size, limit)
        with path.open("rb") as handle:  # bounded, in case the file grew after stat
            data = read_at_most(handle.fileno(), limit)
        _check_size(len(data), limit)
    if not data:
        raise UnreadableImageError("empty file: 0 bytes")
    return data


def read_at_most(fd: int, limit: int) -> bytes:
    """What ``fd`` holds up to its end, or its first ``limit`` + 1 bytes when it holds more:
    read in pieces (nothing is allocated for a limit never reached), waiting on a
    descriptor left non-blocking (a pipe from some parent processes) instead of failing."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        try:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        except BlockingIOError:
            select.select([fd], [], [])  # until there is something to read, or the end
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ImageTooLargeError(
            f"upload is {size} bytes; the limit is {limit}",
            limit_name="max_upload_bytes",
            limit=limit,
            actual=size,
        )


def _guarded(fmt: ImageFormat, decode: Callable[[], T]) -> T:
    """Run a decoder, turning anything it raises on bad bytes into `UnreadableImageError`."""
    try:
        return decode()
    except ImageInputError:
        raise
    except DECODER_ERRORS as exc:
        logger.debug("%s decoder failed", fmt, exc_info=True)
        raise UnreadableImageError(
            f"could not decode {fmt.upper()}: {describe_error(exc)}"
        ) from exc


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A data set without preamble: a little-endian (0002,xxxx) or (0008,xxxx) first tag
    followed by an explicit VR code or a plausible implicit-VR length."""
    if len(data) < 8 or int.from_bytes(data[:2], "little") not in (0x0002, 0x0008):
        return False
    return data[4:6] in _DICOM_VRS or int.from_bytes(data[4:8], "little") <= 0xFFFF


def _describe_unsupported(data: bytes) -> str:
    for magic, name in _STRONG_MAGIC:
        if data.startswith(magic):
            return f"detected {name}"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "detected WebP"
    if data[4:8] == b"ftyp":
        return "detected an ISO media file (HEIF/AVIF/MP4)"
    if _is_text(data[:4096]):
        return "detected text"
    for magic, name in _WEAK_MAGIC:
        if data.startswith(magic):
            return f"detected {name}"
    return f"unrecognised, first bytes {data[:8].hex(' ')}"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 4 KiB boundary is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
