"""What a batch drafts: the studies of a folder (recursively) or of a CSV manifest.

A folder yields every PNG, JPEG or DICOM file under it, in path order: a file whose name
ends in an image extension, or whose first bytes say it is one (DICOM files often have no
extension). Hidden files and folders and macOS ``__MACOSX`` folders are left out, and so
is anything else (notes, spreadsheets), which is counted, not failed. Symbolic links to
folders are not followed (no loops); a file whose real location is outside the allowed
roots, when roots are given, is recorded as failed.

A CSV manifest has a ``path`` column and optional ``indication``, ``age`` and ``sex``
columns (the clinical context); relative paths resolve against the CSV's folder. A row
that names no file or gives an invalid context becomes a failed study with the reason;
it does not stop the batch. A row of empty cells is skipped, as a blank line is. The CSV
is read strictly: a quote that is never closed (which would swallow the rows after it
into one cell) or a cell over the CSV module's size limit stops the command, naming the
line, before anything is drafted.

A file name that is not valid UTF-8 is named in the output with its odd bytes escaped
(``caf\\xe9.jpg``), so every output line is valid JSON and names its source.

Each study is keyed by its content: the sha256 of the file's bytes, plus a digest of the
context when one is given (the same image with another context is another study). The
study id is derived from that key, so a rerun, or another engine, gives the same id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.batch.errors import BatchInputError
from assistant.report import Context

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".dcm", ".dicom", ".dic"})
CONTEXT_COLUMNS = ("indication", "age", "sex")
_SNIFF_BYTES = 132


@dataclass(frozen=True)
class Item:
    """One study to draft: where it is, what to call it, its context, or why it cannot be
    drafted (``error``: a bad manifest row, a file outside the allowed roots)."""

    seq: int
    source: str  # as the user named it: the path under the folder, or the manifest's cell
    path: Path | None
    context: Context | None = None
    error: str | None = None

    def context_json(self) -> str | None:
        if self.context is None or self.context.empty:
            return None
        return json.dumps(self.context.to_dict(), sort_keys=True)


def study_key(image_sha256: str, context: Context | None) -> str:
    """The store's key of a study: the image's sha256, plus a context digest if any."""
    if context is None or context.empty:
        return image_sha256
    text = json.dumps(context.to_dict(), sort_keys=True)
    return f"{image_sha256}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def study_id(key: str) -> str:
    """A study id (32 hex digits) that the same study always gets."""
    return hashlib.sha256(f"assistant-study:{key}".encode()).hexdigest()[:32]


def looks_like_image(head: bytes) -> bool:
    """PNG, JPEG or DICOM (with its preamble) from the first 132 bytes."""
    return (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")
            or head[128:132] == b"DICM")


def _wanted(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            return looks_like_image(f.read(_SNIFF_BYTES))
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    real = path.resolve()
    return any(real.is_relative_to(root) for root in roots)


def display_name(name: str) -> str:
    """``name`` as printable UTF-8: a file name's undecodable bytes (which Python keeps as
    lone surrogates) written as ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular, non-hidden file under ``root``, in sorted order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(files):
            path = Path(folder) / name
            if not _hidden(name) and path.is_file():
                yield path


def discover_folder(root: Path, allowed_roots: Sequence[Path] = ()) -> tuple[list[Item], int]:
    """The image files under ``root`` as items, and how many other files were left out."""
    if not root.is_dir():
        raise BatchInputError(f"{root} is not a folder")
    found: list[tuple[str, Path, str | None]] = []
    ignored = 0
    for path in walk_files(root):
        source = display_name(path.relative_to(root).as_posix())
        if allowed_roots and not _inside(path, allowed_roots):
            # judged by its name alone: not a byte of it is read
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((source, path, "the file is a link to somewhere outside the "
                                            "allowed folders"))
            else:
                ignored += 1
        elif _wanted(path):
            found.append((source, path, None))
        else:
            ignored += 1
    items: list[Item] = []
    for source, path, error in sorted(found):  # by relative path, as a zip's entries
        items.append(Item(len(items), source, None if error else path, error=error))
    if ignored:
        log.info("left out %d file(s) that are not PNG, JPEG or DICOM", ignored)
    return items, ignored


def _reader(text: str) -> csv.DictReader[str]:
    """Excel's CSV (quotes doubled inside quoted cells), with the delimiter the header
    uses: a comma, semicolon or tab."""
    head = text.split("\n", 1)[0]
    try:
        delimiter = csv.Sniffer().sniff(head, delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    # newline="": a quoted cell keeps its line breaks, as the csv module expects
    return csv.DictReader(io.StringIO(text, newline=""), dialect=csv.excel,
                          delimiter=delimiter, skipinitialspace=True, strict=True)


def _rows(reader: csv.DictReader[str], csv_path: Path) -> Iterator[dict[str | Any, Any]]:
    """The reader's rows; a malformed CSV raises ``BatchInputError`` naming the line where
    the row it could not read starts."""
    start = 2
    try:
        for row in reader:
            yield row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise BatchInputError(
            f"the manifest {csv_path} cannot be read from line {start}: {exc} (a quote "
            "that is never closed, or text after a closing quote?)") from None


def read_manifest(csv_path: Path, allowed_roots: Sequence[Path] = ()) -> list[Item]:
    """The rows of a CSV manifest as items (see the module's docstring)."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"cannot read the manifest {csv_path}: {exc}") from exc
    reader = _reader(text)
    names = [(name or "").strip().lower() for name in reader.fieldnames or ()]
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:  # csv.DictReader keeps the last column of a name: the first would be lost
        raise BatchInputError(f"the manifest {csv_path} names a column more than once: "
                              f"{', '.join(twice)}")
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
    if "path" not in columns:
        raise BatchInputError(f"the manifest {csv_path} has no 'path' column (its header: "
                              f"{', '.join(c for c in columns if c) or 'empty'})")
    base = csv_path.parent
    items: list[Item] = []
    for row in _rows(reader, csv_path):
        cells = {key: (row.get(name) or "").strip() for key, name in columns.items()}
        extra = [c for c in row.get(None) or () if c.strip()]  # cells beyond the header's
        if extra:
            items.append(Item(len(items), cells["path"], None, error=(
                f"the row has {len(extra)} more cell(s) than the header: a "
                f"{reader.reader.dialect.delimiter!r} inside a cell that is not quoted?")))
        elif any(cells.values()):  # a row of empty cells (a spreadsheet's tail) is blank
            items.append(_manifest_item(len(items), cells, base, allowed_roots))
    return items


def _manifest_item(seq: int, cells: dict[str, str], base: Path,
                   allowed_roots: Sequence[Path]) -> Item:
    source = cells["path"]
    try:
        context = Context.make(*(cells.get(c) or None for c in CONTEXT_COLUMNS))
    except ValueError as exc:
        return Item(seq, source, None, error=f"invalid context: {exc}")
    if not source:
        return Item(seq, source, None, context, "the row names no file")
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base / path
    if allowed_roots and not _inside(path, allowed_roots):
        return Item(seq, source, None, context, "the file is outside the allowed folders")
    return Item(seq, source, path, context)


def discover(input_path: Path, allowed_roots: Sequence[Path] = ()) -> tuple[list[Item], int]:
    """A folder's images or a CSV manifest's rows; and the count of files left out."""
    if input_path.is_dir():
        return discover_folder(input_path, allowed_roots)
    if input_path.is_file() and input_path.suffix.lower() == ".csv":
        return read_manifest(input_path, allowed_roots), 0
    if not input_path.exists():
        raise BatchInputError(f"{input_path} does not exist")
    raise BatchInputError(f"{input_path} is neither a folder nor a CSV manifest (.csv)")
