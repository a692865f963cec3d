"""Typed errors for every way an input image can be bad.

Each carries a message that says what was wrong; the service maps the classes to
HTTP statuses in one place (``assistant.service.errors``).
"""

from __future__ import annotations


class ImageInputError(ValueError):
    """Base class: the input is not an image we can use."""


class UnsupportedFormatError(ImageInputError):
    """The bytes are not PNG, JPEG or DICOM (HTTP 415)."""


class UnreadableImageError(ImageInputError):
    """The format is supported but the content is corrupt or cannot be decoded (HTTP 422)."""


class NoPixelDataError(UnreadableImageError):
    """A DICOM object without pixel data, e.g. a structured report (HTTP 422)."""


class ImageTooLargeError(ImageInputError):
    """Too many bytes, pixels or frames for the configured limits (HTTP 413)."""

    def __init__(self, message: str, *, limit_name: str, limit: int, actual: int) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.actual = actual
