"""Types and helpers shared by the PNG/JPEG and DICOM readers (private; see ``read``)."""

from __future__ import annotations

import dataclasses
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Literal

import cv2
import numpy as np
from pydicom.errors import BytesLengthException, InvalidDicomError

from assistant.config import Limits
from assistant.imaging.errors import ImageTooLargeError

ImageFormat = Literal["png", "jpeg", "dicom"]


@dataclass(frozen=True)
class ImageMeta:
    """Non-identifying metadata of a decoded image.

    Only technical fields live here: never patient name, ID or birth date, dates,
    institution or any UID, so a ``to_dict()`` can be logged or returned freely.
    """

    format: ImageFormat
    width: int
    height: int
    channels: int  # of the returned array: 1 (H, W) or 3 (H, W, 3)
    bit_depth: int  # bits of the source samples (8, 16, BitsStored for DICOM)
    modality: str | None = None  # DICOM Modality, e.g. "MR", "CT"
    body_part: str | None = None  # DICOM BodyPartExamined
    photometric: str | None = None  # e.g. "MONOCHROME1", "RGB", "PALETTE COLOR"
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    frame_count: int = 1
    frame_index: int = 0  # which frame of a multi-frame object was returned
    transfer_syntax: str | None = None  # name, e.g. "JPEG 2000 Image Compression"
    window: tuple[float, float] | None = None  # (centre, width) applied, if any
    orientation: int = 1  # a JPEG's EXIF Orientation (1-8), applied; 1: rows as stored

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (tuples become lists)."""
        out: dict[str, object] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class DecodedImage:
    """Display-ready pixels and their metadata."""

    pixels: np.ndarray  # float32, (H, W) grey or (H, W, 3) RGB, values in [0, 1]
    meta: ImageMeta
    # A DICOM's StudyInstanceUID, only for a keyed hash (``assistant.security.study_hash``):
    # never returned, logged or stored as it is; not part of ``meta``.
    study_uid: str | None = dataclasses.field(default=None, repr=False)


def check_pixel_count(width: int, height: int, limits: Limits) -> None:
    """Refuse a frame whose header claims more pixels than allowed, before decoding it."""
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width} x {height} = {pixels} pixels; the limit is {limits.max_pixels}",
            limit_name="max_pixels",
            limit=limits.max_pixels,
            actual=pixels,
        )


# A frame this large or larger takes hundreds of MB to decode and convert (a 6,300 x 6,300
# 16-bit RGB PNG of 230 kB: 1.2 GB at its peak); at most LARGE_DECODES of them are decoded
# at once in a process, so that concurrent requests cannot multiply that peak.
LARGE_FRAME_PIXELS = 4_000_000
LARGE_DECODES = 2
_LARGE_SLOTS = threading.BoundedSemaphore(LARGE_DECODES)


@contextmanager
def decode_slot(pixels: int) -> Iterator[None]:
    """Hold one of the LARGE_DECODES slots while decoding a frame of ``pixels`` pixels, if
    it is large; a small frame needs none."""
    if pixels < LARGE_FRAME_PIXELS:
        yield
        return
    with _LARGE_SLOTS:
        yield


def collapse_grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) whose three channels are exactly equal -> (H, W); anything else unchanged."""
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        red = pixels[..., 0]
        if np.array_equal(red, pixels[..., 1]) and np.array_equal(red, pixels[..., 2]):
            return np.ascontiguousarray(red)
    return pixels


def to_unit_float(pixels: np.ndarray, full_scale: float) -> np.ndarray:
    """Integer samples -> float32 in [0, 1], dividing by the samples' full-scale value."""
    out = pixels.astype(np.float32) / np.float32(full_scale)
    return np.clip(out, 0.0, 1.0, out=out)


# What decoders (pydicom and its plugins, OpenCV, struct/zlib parsing) raise on bad
# bytes. ImageInputError is a ValueError, so callers re-raise it before catching these.
DECODER_ERRORS: tuple[type[Exception], ...] = (
    ArithmeticError,  # OverflowError, ZeroDivisionError
    AttributeError,
    EOFError,
    LookupError,  # IndexError, KeyError
    MemoryError,
    OSError,
    RuntimeError,  # NotImplementedError, RecursionError, plugin failures
    TypeError,
    ValueError,
    Warning,  # a pydicom warning raised as an error under -W error
    struct.error,
    zlib.error,
    cv2.error,
    InvalidDicomError,
    BytesLengthException,
)


def describe_error(exc: BaseException) -> str:
    """A short reason for an error message: the class and the first 200 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
