"""Drafting a batch: each study read, keyed, skipped when already in the store, else
analysed in model batches (``Pipeline.analyze_many``) and stored the moment its batch ends.

``Tracker`` holds what both engines share: a study whose content was already drafted is
``skipped`` (its stored result is used), the second copy of a file in the same run waits
for the first, and every study gets exactly one ``Outcome``. ``EmbeddedEngine`` runs the
model batches in this process, several at once (``workers``), so that reading, decoding and
report writing of one batch overlap the model's work on another; ``ray_engine`` runs them
on a Ray cluster. A batch that raises is run again one study at a time, so a bad file fails
alone, with its reason, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from assistant.batch.inputs import Item, study_id, study_key
from assistant.batch.store import BatchStore, StudyRecord
from assistant.config import Limits
from assistant.imaging import ImageInputError
from assistant.pipeline import Analysis, Pipeline

log = logging.getLogger(__name__)

OutcomeStatus = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class Loaded:
    """A study's bytes (empty once sent elsewhere) and its key."""

    item: Item
    data: bytes
    image_sha256: str
    key: str

    @property
    def study_id(self) -> str:
        return study_id(self.key)


@dataclass(frozen=True)
class Outcome:
    """What became of one study: drafted now, found in the store, or failed (and why)."""

    item: Item
    status: OutcomeStatus
    key: str | None = None
    in_scope: bool | None = None
    error: str | None = None


@dataclass
class Summary:
    """Counts of a run, by outcome; ``out_of_scope`` counts drafted and skipped studies
    that were refused a diagnosis; ``ignored`` files were not images."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    out_of_scope: int = 0
    ignored: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        self.out_of_scope += outcome.in_scope is False

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    def text(self) -> str:
        return (f"{self.total} studies: {self.done} drafted, {self.skipped} skipped (drafted "
                f"before, or a copy of another file), {self.failed} failed; "
                f"{self.out_of_scope} out of scope "
                f"(no diagnosis)" + (f"; {self.ignored} other files left out"
                                      if self.ignored else ""))


def default_workers(workers: int) -> int:
    return workers or min(8, 2 * (os.cpu_count() or 1))


def _os_reason(exc: OSError) -> str:
    return f"cannot read the file: {exc.strerror or type(exc).__name__}"


_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)  # POSIX only


def _opened_inside(fd: int, path: Path, opened: os.stat_result,
                   roots: Sequence[Path]) -> bool:
    """Whether the file open at ``fd`` really lies under one of ``roots``: where the open
    file is (``/proc/self/fd``), not what its name resolved to earlier, so a link swapped
    in after the job was made cannot reach outside."""
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc: the name resolved now, if it is still the open file
        real = path.resolve()
        try:
            now = os.stat(real)
        except OSError:
            return False
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return False
    return any(real.is_relative_to(root.resolve()) for root in roots)


def load(item: Item, limits: Limits, roots: Sequence[Path] = ()) -> Loaded | str:
    """The study's bytes and key, or why it cannot be read (the size is checked first).
    ``roots``: the folders the file must really lie in, checked on the open file."""
    if item.error is not None or item.path is None:
        return item.error or "no file"
    try:
        # O_NONBLOCK: opening a pipe named like an image must not wait for a writer;
        # O_NOCTTY: a terminal device must not become this process's
        fd = os.open(item.path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "not a regular file"
    except OSError as exc:
        return _os_reason(exc)
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        return "not a regular file"
    with os.fdopen(fd, "rb") as f:
        try:
            if roots and not _opened_inside(fd, item.path, opened, roots):
                return "the file is a link to somewhere outside the allowed folders"
            if opened.st_size > limits.max_upload_bytes:
                return (f"file too large: {opened.st_size} bytes, the limit is "
                        f"{limits.max_upload_bytes} (ASSISTANT_LIMITS__MAX_UPLOAD_BYTES)")
            data = f.read()
        except OSError as exc:
            return _os_reason(exc)
    sha = hashlib.sha256(data).hexdigest()
    return Loaded(item, data, sha, study_key(sha, item.context))


def _reason(exc: Exception) -> str:
    if isinstance(exc, ImageInputError):
        return str(exc)
    if isinstance(exc, OSError):
        return _os_reason(exc)
    log.error("drafting failed unexpectedly", exc_info=exc)
    return f"drafting failed: {type(exc).__name__}: {exc}"


def _record(study: Loaded, analysis: Analysis) -> StudyRecord:
    return StudyRecord(study.key, study.image_sha256, "done", analysis.diagnosis.in_scope,
                       json.dumps(analysis.to_dict()))


def analyze_chunk(pipeline: Pipeline, studies: Sequence[Loaded]) -> list[StudyRecord]:
    """One model batch -> a record per study; a failing batch is retried one by one."""
    if not studies:
        return []
    try:
        analyses = pipeline.analyze_many([s.data for s in studies],
                                         [s.item.context for s in studies],
                                         [s.study_id for s in studies])
    except Exception as exc:
        if len(studies) == 1:
            s = studies[0]
            return [StudyRecord(s.key, s.image_sha256, "failed", error=_reason(exc))]
        log.info("a batch of %d failed (%s): drafting its studies one at a time",
                 len(studies), type(exc).__name__)
        return [analyze_chunk(pipeline, [s])[0] for s in studies]
    return [_record(s, a) for s, a in zip(studies, analyses, strict=True)]


@dataclass
class Tracker:
    """Admits studies (skipping stored ones and waiting copies) and turns stored records
    into outcomes; ``on_outcome`` is called once per study, from the caller's thread."""

    store: BatchStore
    limits: Limits
    on_outcome: Callable[[Outcome], None]
    roots: Sequence[Path] = ()  # where files must really lie (a service's allowed folders)
    _copies: dict[str, list[Item]] = field(default_factory=dict)

    def admit(self, item: Item) -> Loaded | None:
        """The study to analyse, or None when its outcome is already known."""
        loaded = load(item, self.limits, self.roots)
        if isinstance(loaded, str):
            self.on_outcome(Outcome(item, "failed", error=loaded))
            return None
        if loaded.key in self._copies:
            self._copies[loaded.key].append(item)
            return None
        stored = self.store.done_scope(loaded.key)
        if stored is not None:
            self.on_outcome(Outcome(item, "skipped", loaded.key, stored[0]))
            return None
        self._copies[loaded.key] = []
        return loaded

    def finish(self, studies: Sequence[Loaded], records: Sequence[StudyRecord]) -> None:
        """Store a finished model batch (one transaction), then tell its outcomes."""
        self.store.record(records)
        for study, rec in zip(studies, records, strict=True):
            self.on_outcome(Outcome(study.item, rec.status, rec.key, rec.in_scope, rec.error))
            for copy in self._copies.pop(rec.key, []):
                status: OutcomeStatus = "skipped" if rec.status == "done" else "failed"
                self.on_outcome(Outcome(copy, status, rec.key, rec.in_scope, rec.error))


class EmbeddedEngine:
    """Model batches of ``batch_size`` in this process, ``workers`` of them in flight.
    ``torch_threads``: torch's intra-op threads while it runs (the command line gives 1:
    the batches in flight use the cores); None leaves them as they are (the service)."""

    def __init__(self, pipeline: Pipeline, store: BatchStore, batch_size: int = 8,
                 workers: int = 0, torch_threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.pipeline = pipeline
        self.store = store
        self.batch_size = batch_size
        self.workers = default_workers(workers)
        self.torch_threads = torch_threads
        # Each citation query searched now, once: the pipeline keeps the hits, so worker
        # threads never use the searcher (its embedder's tokenizer is not thread-safe).
        pipeline.citation_snapshot()

    def run(self, items: Iterable[Item], on_outcome: Callable[[Outcome], None],
            stop: threading.Event | None = None, roots: Sequence[Path] = ()) -> None:
        """Draft every item (or until ``stop`` is set: batches in flight still finish).
        ``roots``: the folders every file must really lie in when it is read.

        On Ctrl-C the batches not yet started are cancelled, and those running are
        waited for and stored (a second Ctrl-C stops waiting), so the work done is kept."""
        threads = torch.get_num_threads()
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        try:
            self._run(items, on_outcome, stop, roots)
        finally:
            torch.set_num_threads(threads)

    def _run(self, items: Iterable[Item], on_outcome: Callable[[Outcome], None],
             stop: threading.Event | None, roots: Sequence[Path]) -> None:
        tracker = Tracker(self.store, self.pipeline.limits, on_outcome, roots)
        inflight: dict[Future[list[StudyRecord]], list[Loaded]] = {}
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="draft")
        interrupted = False
        try:
            self._feed(executor, tracker, inflight, items, stop)
        except KeyboardInterrupt:
            interrupted = True
            executor.shutdown(wait=False, cancel_futures=True)
            for future, chunk in inflight.items():
                if not future.cancelled():
                    tracker.finish(chunk, future.result())  # raises again on a second Ctrl-C
            raise
        finally:
            executor.shutdown(wait=not interrupted)

    def _feed(self, executor: ThreadPoolExecutor, tracker: Tracker,
              inflight: dict[Future[list[StudyRecord]], list[Loaded]], items: Iterable[Item],
              stop: threading.Event | None) -> None:
        def settle(block: bool) -> None:
            if not inflight:
                return
            finished, _ = wait(inflight, timeout=None if block else 0,
                               return_when=FIRST_COMPLETED)
            for future in finished:
                tracker.finish(inflight.pop(future), future.result())

        def submit(chunk: list[Loaded]) -> None:
            inflight[executor.submit(analyze_chunk, self.pipeline, chunk)] = chunk
            while len(inflight) >= 2 * self.workers:
                settle(block=True)
            settle(block=False)

        chunk: list[Loaded] = []
        for item in items:
            if stop is not None and stop.is_set():
                break
            loaded = tracker.admit(item)
            if loaded is not None:
                chunk.append(loaded)
            if len(chunk) >= self.batch_size:
                submit(chunk)
                chunk = []
        if chunk and not (stop is not None and stop.is_set()):
            submit(chunk)
        while inflight:
            settle(block=True)
