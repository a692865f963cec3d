"""``assistant draft``: a folder or CSV manifest in, a JSONL file or FHIR Bundle out.

Every study's outcome goes to the store as its model batch finishes; the output file is
written whole from the store at the end (``output.write``), so running the same command
again after an interruption, even ``kill -9``, drafts only what is missing and writes every
study exactly once.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from assistant.batch import output
from assistant.batch.engine import EmbeddedEngine, Outcome, Summary
from assistant.batch.errors import BatchInputError
from assistant.batch.inputs import Item, discover
from assistant.batch.store import BatchStore
from assistant.config import Settings
from assistant.malloc import keep_heap

log = logging.getLogger(__name__)

Engine = Literal["embedded", "ray"]


@dataclass(frozen=True)
class DraftOptions:
    out: Path
    fmt: output.Format = "jsonl"
    engine: Engine = "embedded"
    address: str | None = None  # a running Ray cluster; None: start a local one
    db: Path | None = None  # None: settings.batch.db_path
    batch_size: int | None = None  # None: settings.batch.batch_size
    workers: int | None = None  # threads (embedded) or actors (ray); None: from settings
    progress: bool = True


@contextmanager
def _quiet_studies() -> Iterator[None]:
    """The pipeline's line per study is noise under a progress bar: warnings only."""
    logger = logging.getLogger("assistant.pipeline")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logger.setLevel(level)


Runner = Callable[[list[Item], Callable[[Outcome], None]], None]


@contextmanager
def _engine(settings: Settings, store: BatchStore, options: DraftOptions) -> Iterator[Runner]:
    """The engine, ready (model loaded, or Ray connected) before the progress bar starts."""
    batch_size = options.batch_size or settings.batch.batch_size
    workers = settings.batch.workers if options.workers is None else options.workers
    if options.engine == "embedded":
        from assistant.pipeline import Pipeline

        engine = EmbeddedEngine(Pipeline.from_settings(settings, citations=True), store,
                                batch_size, workers, torch_threads=1)
        yield engine.run
        return
    import ray

    from assistant.batch.ray_engine import connect, run_ray

    connect(options.address, None)
    try:
        yield lambda items, on_outcome: run_ray(settings, store, items, on_outcome,
                                                batch_size, workers or None)
    finally:
        ray.shutdown()


def _check_out(out: Path, input_path: Path, db: Path) -> Path:
    """The file to write (a link's target: the link stays), refused before drafting, not
    after, when it cannot or must not be written: a folder, a device or pipe, the input
    manifest itself, a read-only file, a folder where no file can be made."""
    try:
        target = out.resolve() if out.is_symlink() else out
        if target.is_dir():
            raise BatchInputError(f"--out {out} is a folder; give a file name")
        if target.exists():
            mode = target.stat().st_mode
            if not stat.S_ISREG(mode):
                raise BatchInputError(f"--out {out} is not a regular file (a device or a "
                                      "pipe?): the output is written whole and renamed "
                                      "into place")
            for other, what in ((input_path, "the input manifest"), (db, "the --db store")):
                if other.exists() and target.samefile(other):
                    raise BatchInputError(f"--out {out} is {what}; give another file")
            if not mode & 0o222:
                raise BatchInputError(f"--out {out} is read-only")
        # the temporary file the output is written to, made and removed now
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = output.temporary(target)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise BatchInputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return target


def run_draft(settings: Settings, input_path: Path, options: DraftOptions) -> Summary:
    """Draft every study of ``input_path`` not already in the store, then write the output
    (raises ``BatchInputError`` for an input that is no folder or manifest)."""
    start = time.perf_counter()
    db = Path(options.db or settings.batch.db_path or "batches.sqlite3")
    out = _check_out(options.out, input_path, db)
    keep_heap(settings.batch)
    items, ignored = discover(input_path)
    if not items:
        log.warning("no PNG, JPEG or DICOM files in %s", input_path)
    store = BatchStore(db)
    summary = Summary(ignored=ignored)
    outcomes: dict[int, Outcome] = {}
    bars: list[tqdm] = []  # made once the engine is ready, so its clock starts then

    def on_outcome(outcome: Outcome) -> None:
        outcomes[outcome.item.seq] = outcome
        summary.add(outcome)
        bars[0].set_postfix(skipped=summary.skipped, failed=summary.failed, refresh=False)
        bars[0].update(1)

    try:
        with _quiet_studies(), _engine(settings, store, options) as run:
            bars.append(tqdm(total=len(items), unit="study", disable=not options.progress,
                             desc=f"drafting ({options.engine})", dynamic_ncols=True))
            run(items, on_outcome)
            bars[0].close()
        output.write(out, _drafted(store, items, outcomes), options.fmt)
    finally:
        for bar in bars:
            bar.close()
        store.close()
    log.info("drafted in %.1f s: %s", time.perf_counter() - start, summary.text())
    return summary


def _drafted(store: BatchStore, items: list[Item], outcomes: dict[int, Outcome]
             ) -> Iterator[output.Drafted]:
    for item in items:
        outcome = outcomes.get(item.seq)
        if outcome is None:
            yield output.Drafted(item.seq, item.source, "not drafted", None)
            continue
        study = store.study(outcome.key) if outcome.key else None
        if outcome.status == "failed":
            yield output.Drafted(item.seq, item.source, outcome.error or "failed", study)
        else:
            yield output.Drafted(item.seq, item.source, None if study else "not stored", study)
