"""Reading and writing the project's checkpoint files (torch payload dictionaries).

A file is written atomically (a ``.part`` file renamed into place) and identified by
the sha256 of its bytes. Reading refuses, with a ``CheckpointError`` that says why, a
file that cannot be read, differs from an expected sha256, is not a readable torch file
(``weights_only``: no code runs), or carries another ``format``.

Release files are listed with their sha256 in a ``SHA256SUMS`` file beside them (the
format ``sha256sum`` writes and ``sha256sum -c`` checks). A listed file is expected to
match its line when it is read (a file changed on disk since it was written, even by a
bit, is refused instead of being served as the release), and writing a listed file
updates its line (a release retrained in place stays consistent).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, of another format, or fails its checks."""


SUMS_FILE = "SHA256SUMS"
_SUMS_LINE = re.compile(r"(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)")


def _sums(folder: Path) -> dict[str, str]:
    """File name -> sha256 of the ``SHA256SUMS`` in ``folder`` (empty when there is none)."""
    try:
        lines = (folder / SUMS_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:  # "<sha256>  name" (text mode) or "<sha256> *name" (binary mode)
        if match := _SUMS_LINE.fullmatch(line.strip()):
            out[match["name"].removeprefix("./")] = match["digest"].lower()
    return out


def listed_sha256(path: Path) -> str | None:
    """The sha256 the ``SHA256SUMS`` beside ``path`` lists for it, if any."""
    return _sums(path.parent).get(path.name)


def write_payload(payload: dict[str, Any], path: Path) -> str:
    """Write ``payload`` to ``path``; return the sha256 of the file's bytes (and record it
    in the ``SHA256SUMS`` beside it when that lists the file)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(path, data, path.with_suffix(path.suffix + ".part"))
    digest = hashlib.sha256(data).hexdigest()
    sums = _sums(path.parent)
    if path.name in sums:
        sums[path.name] = digest
        text = "".join(f"{d}  {name}\n" for name, d in sorted(sums.items()))
        _write_whole(path.parent / SUMS_FILE, text.encode("utf-8"),
                     path.parent / f".{SUMS_FILE}.{os.getpid()}.part")
    return digest


def _write_whole(path: Path, data: bytes, part: Path) -> None:
    """``data`` written to ``part``, then renamed over ``path``: never half written."""
    part.write_bytes(data)
    part.replace(path)


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
    listed = listed_sha256(path)
    if listed is not None and digest != listed:
        raise error(f"{path}: sha256 {digest} differs from the {listed} that {SUMS_FILE} "
                    "beside it lists: the file changed since it was written (`sha256sum -c "
                    f"{SUMS_FILE}` in its folder checks them all)")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise error(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path} is not a {fmt} file")
    return payload, digest
