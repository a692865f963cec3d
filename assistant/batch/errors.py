"""Errors of batch drafting that a caller can cause; ``assistant.service.errors`` maps
them to HTTP statuses, the command line to exit status 2."""

from __future__ import annotations


class BatchError(Exception):
    """A batch that cannot be made or found, for the reason the message states."""


class BatchInputError(BatchError):
    """The input (folder, manifest, archive) cannot be read as a batch (HTTP 422)."""


class BatchTooLargeError(BatchError):
    """Too many files, or an archive too large packed or unpacked (HTTP 413)."""


class NotAnArchiveError(BatchError):
    """An upload that is not a zip archive (HTTP 415)."""


class FolderNotAllowedError(BatchError):
    """A server folder outside the allowed roots, or none are allowed (HTTP 403)."""


class JobNotFoundError(BatchError):
    """No batch job has this id (HTTP 404)."""
