"""``/v1/batches``: batch drafting over HTTP; jobs in SQLite that survive a restart.

- ``POST /v1/batches``: a zip of PNG/JPEG/DICOM files, as a multipart ``file`` field or
  as the body itself (``Content-Type: application/zip``), or JSON ``{"folder": "/abs"}``
  naming a folder inside one of ``ASSISTANT_BATCH__ALLOWED_ROOTS`` (403 outside them, or
  when there are none). 202 with the job's progress and a ``Location``.
- ``GET /v1/batches/{id}``: progress: ``state`` (queued, running, done, failed) and counts
  (total, pending, done, skipped, failed, out_of_scope).
- ``GET /v1/batches/{id}/results``: the finished studies, in input order, as JSON lines
  (default), a JSON list (``?format=json``) or a FHIR R4B Bundle (``?format=fhir``); the
  ``X-Batch-State`` header says whether the job is done.

Errors follow ``errors.py``: 413 an archive or batch too large, 415 not a zip, 422 a bad
archive or folder, 403 a folder not allowed, 404 no such job.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.batch import output
from assistant.batch.errors import BatchInputError, NotAnArchiveError
from assistant.batch.jobs import JobManager
from assistant.batch.store import BatchStore, JobProgress
from assistant.config import Settings
from assistant.fhir import FHIR_JSON
from assistant.pipeline import Pipeline
from assistant.service.errors import given_twice
from assistant.service.json_body import JSONRoute, media_type
from assistant.service.state import OK, VISION, Services

log = logging.getLogger(__name__)

router = APIRouter(tags=["batches"], route_class=JSONRoute)

_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
_SPOOL_BYTES = 1024 * 1024  # a raw zip body beyond this waits on disk, not in memory
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a server folder outside the allowed roots, or none allowed"},
    404: {"description": "no such batch job"},
    413: {"description": "archive too large, packed or unpacked, or too many studies"},
    415: {"description": "not a zip archive, or an unsupported content type"},
    422: {"description": "unreadable archive, no images in it, or a bad folder"},
}
_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "zip of PNG, JPEG or DICOM files"}}}},
    "application/zip": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "required": ["folder"], "properties": {
        "folder": {"type": "string", "description": "absolute path inside an allowed root"}},
        "additionalProperties": False}},
}}}


class FolderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str


def _manager(request: Request) -> JobManager:
    manager: JobManager = request.app.state.batches
    return manager


def _answer(progress: JobProgress, status: int = 200) -> JSONResponse:
    base = f"/v1/batches/{progress.id}"
    body = {**progress.to_dict(), "links": {"self": base, "results": f"{base}/results"}}
    headers = {"Location": base} if status == 202 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _spooled_body(request: Request) -> BinaryIO:
    spool = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)  # noqa: SIM115 (closed by caller)
    async for chunk in request.stream():
        spool.write(chunk)
    spool.seek(0)
    return spool  # type: ignore[return-value]


async def _folder(request: Request) -> str:
    try:
        # a byte-order mark before the JSON, as some Windows tools write it, is no error
        body = (await request.body()).removeprefix(b"\xef\xbb\xbf")
        return FolderRequest.model_validate_json(body).folder
    except ValidationError as exc:
        raise BatchInputError('send JSON {"folder": "/absolute/path"}: ' + "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors())) from None


@router.post("/v1/batches", status_code=202, responses=_ERRORS, openapi_extra=_BODY)
async def create_batch(request: Request) -> JSONResponse:
    """Start a batch job from a zip upload or an allowed server folder."""
    manager = _manager(request)
    ctype = media_type(request)
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=2, max_fields=4)
        except StarletteHTTPException as exc:  # Starlette's 400: no boundary, too many parts
            raise BatchInputError(f"the multipart body could not be read: {exc.detail}") from None
        try:
            if repeated := given_twice(form, ["file"]):
                raise BatchInputError(f"a field given more than once: {repeated}; send one "
                                      "zip archive")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BatchInputError(
                    "send the zip archive in a multipart field named 'file' (none came "
                    "complete: a body cut short before its closing boundary has none)")
            progress = await run_in_threadpool(manager.submit_zip, upload.file)
        finally:
            await form.close()
    elif ctype in _ZIP_TYPES:
        body = await _spooled_body(request)
        try:
            progress = await run_in_threadpool(manager.submit_zip, body)
        finally:
            body.close()
    elif ctype == "application/json":
        progress = await run_in_threadpool(manager.submit_folder, await _folder(request))
    else:
        raise NotAnArchiveError("send a zip archive (multipart field 'file', or the body as "
                                'application/zip) or JSON {"folder": ...}')
    return _answer(progress, 202)


@router.get("/v1/batches/{job_id}", responses=_ERRORS)
async def batch_progress(request: Request, job_id: str) -> JSONResponse:
    """A job's state and counts."""
    return _answer(await run_in_threadpool(_manager(request).progress, job_id))


def _json_list(rows: Iterator[output.Drafted]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + "\n" + output.line_json(row)
    yield "\n]\n"


@router.get("/v1/batches/{job_id}/results", responses=_ERRORS)
async def batch_results(
    request: Request, job_id: str,
    format: Annotated[Literal["jsonl", "json", "fhir"], Query(
        description="jsonl: a line per study; json: a list; fhir: a FHIR R4B Bundle")
    ] = "jsonl",
) -> StreamingResponse:
    """The finished studies of a job, in input order (all of them once it is done)."""
    manager = _manager(request)
    progress = await run_in_threadpool(manager.progress, job_id)
    rows = manager.results(job_id)
    headers = {"X-Batch-State": progress.state}
    if format == "fhir":
        return StreamingResponse(output.fhir_chunks(rows), media_type=FHIR_JSON,
                                 headers=headers)
    if format == "json":
        return StreamingResponse(_json_list(rows), media_type="application/json",
                                 headers=headers)
    return StreamingResponse(output.jsonl_chunks(rows), media_type="application/x-ndjson",
                             headers=headers)


def open_batches(app: FastAPI, settings: Settings) -> None:
    """Open the store and start the job runner (the lifespan calls this); unfinished jobs
    resume once the vision model has loaded."""
    assert settings.batch.db_path is not None  # Settings resolves it
    services: Services = app.state.services
    store = BatchStore(settings.batch.db_path)

    def pipeline() -> Pipeline | None:
        return services.pipeline if services.components.get(VISION) == OK else None

    manager = JobManager(store, settings.batch, settings.limits, pipeline)
    app.state.batches = manager
    manager.start()
    log.info("batches: jobs in %s; %d unfinished", settings.batch.db_path,
             len(store.unfinished_jobs()))


def close_batches(app: FastAPI) -> None:
    manager: JobManager | None = getattr(app.state, "batches", None)
    if manager is not None:
        manager.stop()
        manager.store.close()
