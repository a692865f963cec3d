"""Batch jobs of the HTTP API: made from an uploaded zip or an allowed server folder,
stored in SQLite, and drafted by one background thread with the service's pipeline.

A job and its studies are written to the store when it is made; the runner drafts its
pending studies (``EmbeddedEngine``), recording each study's state as its model batch
finishes. A job the service was stopped in the middle of (even killed) is still
``queued`` or ``running`` in the store, and the runner of the next service resumes it
from its pending studies. The unpacked files of an uploaded zip are removed when its job
is done; results stay in the store.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from assistant.batch.archive import unpack_zip
from assistant.batch.engine import EmbeddedEngine, Outcome
from assistant.batch.errors import (
    BatchInputError,
    BatchTooLargeError,
    FolderNotAllowedError,
    JobNotFoundError,
)
from assistant.batch.inputs import Item, discover_folder
from assistant.batch.output import Drafted
from assistant.batch.store import BatchStore, JobProgress
from assistant.config import BatchConfig, Limits
from assistant.pipeline import Pipeline

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")
IDLE_WAIT_S = 5.0  # how often the runner looks for work when nobody wakes it
PAGE = 200  # studies read from the store at a time for the results


class JobManager:
    """Makes jobs, answers their progress and results, and runs them in a thread.
    ``pipeline`` gives the loaded pipeline, or None while it is not (yet) available."""

    def __init__(self, store: BatchStore, config: BatchConfig, limits: Limits,
                 pipeline: Callable[[], Pipeline | None]) -> None:
        self.store = store
        self.config = config
        self.limits = limits
        self.pipeline = pipeline
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- making jobs -----------------------------------------------------------------------

    def submit_zip(self, file: BinaryIO) -> JobProgress:
        job_id = uuid.uuid4().hex
        assert self.config.upload_dir is not None  # Settings resolves it
        dest = self.config.upload_dir / job_id
        items, ignored = unpack_zip(file, dest, self.config, self.limits)
        self.store.create_job(job_id, "upload", dest, items)
        log.info("batch %s: %d studies from an uploaded zip (%d other entries left out)",
                 job_id, len(items), ignored)
        return self._queued(job_id)

    def submit_folder(self, folder: str) -> JobProgress:
        roots = self.config.allowed_roots
        if not roots:
            raise FolderNotAllowedError("server folders are not enabled on this service "
                                        "(ASSISTANT_BATCH__ALLOWED_ROOTS is empty)")
        if not folder or "\x00" in folder:
            raise BatchInputError("folder must be a path")
        path = Path(folder).expanduser()
        if not path.is_absolute():
            raise BatchInputError("folder must be an absolute path")
        real = path.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            raise FolderNotAllowedError("the folder is outside the folders this service may "
                                        "read")
        if not real.is_dir():
            raise BatchInputError("the folder does not exist or is not a folder")
        items = [_storable(item) for item in discover_folder(real, roots)[0]]
        if not items:
            raise BatchInputError("the folder holds no PNG, JPEG or DICOM files")
        if len(items) > self.config.max_files:
            raise BatchTooLargeError(f"the folder holds {len(items)} studies; at most "
                                     f"{self.config.max_files} are accepted in one batch")
        job_id = uuid.uuid4().hex
        self.store.create_job(job_id, "folder", None, items)
        log.info("batch %s: %d studies from a server folder", job_id, len(items))
        return self._queued(job_id)

    def _queued(self, job_id: str) -> JobProgress:
        self._wake.set()
        return self.progress(job_id)

    # -- reading jobs ----------------------------------------------------------------------

    def progress(self, job_id: str) -> JobProgress:
        progress = self.store.progress(job_id) if JOB_ID.fullmatch(job_id) else None
        if progress is None:
            raise JobNotFoundError(f"no batch job {job_id!r}")
        return progress

    def results(self, job_id: str) -> Iterator[Drafted]:
        """The finished studies of a job, in order, read from the store a page at a time."""
        self.progress(job_id)  # 404 first
        after = -1
        while rows := self.store.job_rows(job_id, after, PAGE):
            for row in rows:
                error = row.error if row.status == "failed" else None
                yield Drafted(row.seq, row.source, error or (
                    "failed" if row.status == "failed" else None), row.study)
            after = rows[-1].seq

    # -- running jobs ----------------------------------------------------------------------

    def start(self) -> None:
        self._sweep_uploads()
        self._thread = threading.Thread(target=self._loop, name="batch-jobs", daemon=True)
        self._thread.start()

    def _sweep_uploads(self) -> None:
        """Remove unpacked uploads no unfinished job needs (a service killed while it was
        unpacking one, or before it removed a finished job's files)."""
        folder = self.config.upload_dir
        if folder is None or not folder.is_dir():
            return
        keep = set(self.store.unfinished_jobs())
        for entry in folder.iterdir():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("removed the leftover upload %s", entry.name)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the model batches in flight (the rest stays pending in the store)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            pipeline = self.pipeline()
            jobs = self.store.unfinished_jobs() if pipeline is not None else []
            if pipeline is None or not jobs:
                self._wake.wait(1.0 if pipeline is None else IDLE_WAIT_S)
                self._wake.clear()
                continue
            for job_id in jobs:
                if self._stop.is_set():
                    break
                self._run(job_id, pipeline)

    def _run(self, job_id: str, pipeline: Pipeline) -> None:
        self.store.set_job_state(job_id, "running")

        def on_outcome(outcome: Outcome) -> None:
            self.store.set_items(job_id, [(outcome.item.seq, outcome.status, outcome.key,
                                           outcome.error)])

        # Where each file must really lie when it is read: its unpacked upload, or the
        # allowed folders (a link swapped in after the job was made reaches no further).
        upload = self.store.job_folder(job_id)
        roots = [upload] if upload is not None else list(self.config.allowed_roots)
        try:
            engine = EmbeddedEngine(pipeline, self.store, self.config.batch_size,
                                    self.config.workers)
            engine.run(self.store.pending_items(job_id), on_outcome, self._stop, roots)
        except Exception as exc:  # a bug or the disk: the job fails, the service goes on
            log.exception("batch %s failed", job_id)
            self.store.set_job_state(job_id, "failed", f"{type(exc).__name__}: {exc}")
            return
        if self._stop.is_set():
            log.info("batch %s: stopped with the service; it resumes at the next start",
                     job_id)
            return
        self.store.set_job_state(job_id, "done")
        folder = self.store.job_folder(job_id)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        log.info("batch %s done: %s", job_id, self.progress(job_id).counts)


def _storable(item: Item) -> Item:
    """``item``, or a failed one when its path is not valid UTF-8: the job's store keeps
    paths as text (the output names the file with its odd bytes escaped)."""
    if item.path is None:
        return item
    try:
        str(item.path).encode("utf-8")
    except UnicodeEncodeError:
        return replace(item, path=None, error="the file name is not valid UTF-8: rename the "
                                              "file to draft it")
    return item
