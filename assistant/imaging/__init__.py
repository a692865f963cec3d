"""Bytes -> pixels: reading PNG, JPEG and DICOM uploads safely (see ``read``)."""

from assistant.imaging.errors import (
    ImageInputError,
    ImageTooLargeError,
    NoPixelDataError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from assistant.imaging.read import (
    DecodedImage,
    ImageMeta,
    read_dicom_values,
    read_image,
    sniff_format,
)

__all__ = [
    "DecodedImage",
    "ImageInputError",
    "ImageMeta",
    "ImageTooLargeError",
    "NoPixelDataError",
    "UnreadableImageError",
    "UnsupportedFormatError",
    "read_dicom_values",
    "read_image",
    "sniff_format",
]
