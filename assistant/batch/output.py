"""A batch's results as JSON lines or as a FHIR R4B Bundle, written from the store.

JSON lines: one study per line, in input order: ``source`` (the file as the input named
it), ``status`` (``done`` or ``failed``), ``error`` (why it failed, else null), then the
study's ``Analysis.to_dict()`` (a failed one: its ``image_sha256`` when the file could be
read). FHIR: a ``collection`` Bundle holding a DiagnosticReport per drafted study (as
``/v1/analyze?format=fhir``, with the source file as a second identifier) and an
OperationOutcome per failed study, naming the file and the reason.

The command line writes the whole file again at the end of every run, to a temporary
name and then renamed into place, so the output holds every study exactly once however
often the run was interrupted.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fhir.resources.R4B.operationoutcome import OperationOutcome

from assistant.batch.store import StudyRecord
from assistant.fhir import diagnostic_report_json

Format = Literal["jsonl", "fhir"]
SOURCE_SYSTEM = "urn:medical-imaging-assistant:source-file"
_ENTRY_NAMESPACE = uuid.UUID("4f1d7d2e-8a43-4c59-9d0e-6b1f3a0c2e57")


@dataclass(frozen=True)
class Drafted:
    """One study of a batch and its stored outcome."""

    seq: int
    source: str
    error: str | None  # why it failed (None when done)
    study: StudyRecord | None  # the stored study, when its file could be read

    @property
    def analysis(self) -> dict[str, Any] | None:
        """The stored analysis of a drafted study; None for a failed one."""
        if self.error is not None or self.study is None or self.study.status != "done":
            return None
        return self.study.analysis()


def line(row: Drafted) -> dict[str, Any]:
    """The JSON object of one study (see the module's docstring)."""
    analysis = row.analysis
    if analysis is not None:
        return {"source": row.source, "status": "done", "error": None, **analysis}
    error = row.error or (row.study.error if row.study else None) or "not drafted"
    return {"source": row.source, "status": "failed", "error": error,
            "image_sha256": row.study.image_sha256 if row.study else None}


def _entry_id(row: Drafted) -> str:
    return str(uuid.uuid5(_ENTRY_NAMESPACE, f"{row.seq}:{row.source}"))


def fhir_entry(row: Drafted, issued: datetime) -> dict[str, Any]:
    """A Bundle entry: the DiagnosticReport of a drafted study, or an OperationOutcome."""
    entry_id = _entry_id(row)
    analysis = row.analysis
    if analysis is not None:
        resource = diagnostic_report_json(analysis, issued)
        resource["id"] = entry_id  # unique in the Bundle even when two files are one study
        resource["identifier"] = [*resource.get("identifier", []),
                                  {"system": SOURCE_SYSTEM, "value": row.source}]
    else:
        error = line(row)["error"]
        resource = OperationOutcome.model_validate({
            "resourceType": "OperationOutcome", "id": entry_id,
            "issue": [{"severity": "error", "code": "processing",
                       "diagnostics": f"{row.source}: {error}"}],
        }).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"fullUrl": f"urn:uuid:{entry_id}", "resource": resource}


def line_json(row: Drafted) -> str:
    """``json.dumps(line(row))``, without parsing a drafted study's stored JSON again."""
    study = row.study
    if row.error is None and study is not None and study.status == "done" and study.result:
        head = json.dumps({"source": row.source, "status": "done", "error": None})
        return head[:-1] + (", " + study.result[1:] if study.result != "{}" else "}")
    return json.dumps(line(row))


def jsonl_chunks(rows: Iterable[Drafted]) -> Iterator[str]:
    for row in rows:
        yield line_json(row) + "\n"


def fhir_chunks(rows: Iterable[Drafted], issued: datetime | None = None) -> Iterator[str]:
    """The Bundle's JSON, an entry at a time (a large batch is never held whole)."""
    when = issued or datetime.now(UTC)
    head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
            "timestamp": when.isoformat(timespec="seconds")}
    yield json.dumps(head)[:-1]
    empty = True  # FHIR JSON has no empty arrays: no studies, no "entry"
    for row in rows:
        yield (', "entry": [\n' if empty else ",\n") + json.dumps(fhir_entry(row, when))
        empty = False
    yield "}\n" if empty else "\n]}\n"


def chunks(rows: Iterable[Drafted], fmt: Format) -> Iterator[str]:
    return fhir_chunks(rows) if fmt == "fhir" else jsonl_chunks(rows)


def temporary(path: Path) -> Path:
    """Where the output is written before it is renamed into place: beside it, with a
    short name (a long output name must not make it too long)."""
    return path.with_name(f".draft-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write(path: Path, rows: Iterable[Drafted], fmt: Format) -> None:
    """Write the output whole to a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for chunk in chunks(rows, fmt):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
