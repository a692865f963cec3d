"""Reading and writing the project's checkpoint files (torch payload dictionaries).

A file is written atomically (a ``.part`` file renamed into place) and identified by
the sha256 of its bytes. Reading refuses, with a ``CheckpointError`` that says why, a
file that cannot be read, differs from an expected sha256, is not a readable torch file
(``weights_only``: no code runs), or carries another ``format``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, of another format, or fails its checks."""


def write_payload(payload: dict[str, Any], path: Path) -> str:
    """Write ``payload`` to ``path``; return the sha256 of the file's bytes."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def read_payload(path: Path, fmt: str, what: str, error: type[CheckpointError] = CheckpointError,
                 expected_sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """The payload of a ``fmt`` file and the sha256 of its bytes; ``what`` names the
    file in messages ("vision checkpoint")."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise error(f"{path}: sha256 {digest} differs from the expected "
                    f"{expected_sha256}; the file changed")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise error(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path} is not a {fmt} file")
    return payload, digest
