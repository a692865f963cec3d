"""Unpacking an uploaded zip of studies without trusting it.

Checked before anything is unpacked: the number of entries (``max_zip_members``) and their
declared unpacked total (``max_zip_uncompressed_bytes``); while unpacking, the bytes
actually written are counted against the same total (a lying header cannot inflate more).
No entry name is ever used as a path: entries are written as ``<dest>/000000``,
``000001``, ... and the name is only the study's ``source``. Folders, links, hidden files
and ``__MACOSX`` entries are left out, and so is anything that is not PNG, JPEG or DICOM
by name or by its first bytes. An entry larger than an image may be
(``limits.max_upload_bytes``) is not unpacked and becomes a failed study. Encrypted,
corrupt or unsupported archives are refused with the reason.
"""

from __future__ import annotations

import logging
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from assistant.batch.errors import BatchInputError, BatchTooLargeError, NotAnArchiveError
from assistant.batch.inputs import IMAGE_SUFFIXES, Item, looks_like_image
from assistant.config import BatchConfig, Limits

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
               ValueError)


def _source(name: str) -> str | None:
    """The entry's name as a clean relative path; None for entries to leave out."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts
             if p not in ("", "/", ".", "..")]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return "/".join(parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _open(file: BinaryIO) -> zipfile.ZipFile:
    head = file.read(4)
    file.seek(0)
    if not head.startswith(b"PK"):
        raise NotAnArchiveError("the upload is not a zip archive")
    try:
        return zipfile.ZipFile(file)
    except _ZIP_ERRORS as exc:
        raise BatchInputError(f"the zip archive cannot be read: {exc}") from exc


def _check_sizes(archive: zipfile.ZipFile, config: BatchConfig) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > config.max_zip_members:
        raise BatchTooLargeError(f"the archive has {len(infos)} entries; at most "
                                 f"{config.max_zip_members} are accepted")
    declared = sum(i.file_size for i in infos)
    if declared > config.max_zip_uncompressed_bytes:
        raise BatchTooLargeError(f"the archive unpacks to {declared} bytes; at most "
                                 f"{config.max_zip_uncompressed_bytes} are accepted")
    if any(i.flag_bits & 0x1 for i in infos):
        raise BatchInputError("the archive is encrypted; send it without a password")
    return [i for i in infos if not i.is_dir() and not _is_link(i)]


class _Unpacker:
    def __init__(self, archive: zipfile.ZipFile, dest: Path, config: BatchConfig,
                 limits: Limits) -> None:
        self.archive, self.dest, self.config, self.limits = archive, dest, config, limits
        self.written = 0
        self.items: list[Item] = []
        self.ignored = 0

    def entry(self, info: zipfile.ZipInfo, source: str) -> None:
        seq = len(self.items)
        if info.file_size > self.limits.max_upload_bytes:
            if PurePosixPath(source).suffix.lower() in IMAGE_SUFFIXES:
                self.items.append(Item(seq, source, None, error=(
                    f"file too large: {info.file_size} bytes, the limit is "
                    f"{self.limits.max_upload_bytes}")))
            else:
                self.ignored += 1
            return
        target = self.dest / f"{seq:06d}"
        head = self._copy(info, target)
        if PurePosixPath(source).suffix.lower() in IMAGE_SUFFIXES or looks_like_image(head):
            self.items.append(Item(seq, source, target))
        else:
            target.unlink()
            self.ignored += 1

    def _copy(self, info: zipfile.ZipInfo, target: Path) -> bytes:
        """Unpack one entry, counting every byte; its first bytes, to sniff."""
        head = b""
        with self.archive.open(info) as src, target.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                self.written += len(chunk)
                if self.written > self.config.max_zip_uncompressed_bytes:
                    raise BatchTooLargeError(
                        "the archive unpacks to more than "
                        f"{self.config.max_zip_uncompressed_bytes} bytes")
                head = head or chunk[:132]
                dst.write(chunk)
        return head


def unpack_zip(file: BinaryIO, dest: Path, config: BatchConfig, limits: Limits
               ) -> tuple[list[Item], int]:
    """The archive's studies, unpacked into ``dest``, and the count of entries left out.
    On any error ``dest`` is removed."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with _open(file) as archive:
            infos = _check_sizes(archive, config)
            unpacker = _Unpacker(archive, dest, config, limits)
            named = ((source, info) for info in infos
                     if (source := _source(info.filename)) is not None)
            for source, info in sorted(named, key=lambda pair: pair[0]):  # as a folder's
                unpacker.entry(info, source)
    except _ZIP_ERRORS as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BatchInputError(f"the zip archive cannot be unpacked: {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if not unpacker.items:
        shutil.rmtree(dest, ignore_errors=True)
        raise BatchInputError("the archive holds no PNG, JPEG or DICOM files")
    if len(unpacker.items) > config.max_files:
        shutil.rmtree(dest, ignore_errors=True)
        raise BatchTooLargeError(f"the archive holds {len(unpacker.items)} studies; at most "
                                 f"{config.max_files} are accepted in one batch")
    return unpacker.items, unpacker.ignored
