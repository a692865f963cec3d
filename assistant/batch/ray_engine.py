"""The Ray engine: the same batch drafted by a pool of actors on a Ray cluster.

``ray.init()`` starts a local cluster (``num_cpus`` CPUs), or ``address`` joins a running
one (``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the others).
The driver (this process) reads and keys every study, skips those already in the store
exactly as the embedded engine does (``Tracker``), and hands the rest to Ray Data:
``from_items(...).map_batches(DraftActor, compute=ActorPoolStrategy(size=actors), ...)``
(Ray 2.60's spelling of ``concurrency=actors``). Each actor builds the pipeline once
(``Pipeline.from_settings``, its vision model only) and drafts its batches with the same
``analyze_chunk``; the citations come from one Ray task that opens the literature index
and searches each label's query while the actors load (``CitationSnapshot``). The
driver stores each finished batch in the same SQLite store, so resuming after a kill and
the output are the embedded engine's.

On a real cluster every node needs the project installed at the same path (the same
``bash scripts/setup.sh``: weights, index) and the input files at the same path (shared
storage): actors read the files themselves, only their paths travel.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.batch.engine import Loaded, Outcome, Tracker, analyze_chunk, load
from assistant.batch.errors import BatchInputError
from assistant.batch.inputs import Item
from assistant.batch.store import BatchStore, StudyRecord
from assistant.config import Settings
from assistant.malloc import keep_heap
from assistant.report import Context

if TYPE_CHECKING:
    from assistant.pipeline import CitationSnapshot

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 512 * 1024 * 1024  # of a local cluster: only paths and results travel
_QUIET = ("assistant", "ray", "ray.data")


def _quiet_logs() -> None:
    """In a Ray worker: warnings only from our loggers and Ray's."""
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


class DraftActor:
    """A Ray Data actor: the pipeline, built once, drafting batches of studies."""

    def __init__(self, settings: dict[str, Any], citations: list[Any],
                 torch_threads: int = 1) -> None:
        """``citations``: [the ObjectRef of a ``CitationSnapshot``], in a list so that Ray
        hands it over unresolved: the actor loads its model while the snapshot is made."""
        import ray
        import torch

        torch.set_num_threads(torch_threads)
        _quiet_logs()
        from assistant.pipeline import Pipeline

        self.settings = Settings(**settings)
        keep_heap(self.settings.batch)
        self.pipeline = Pipeline.from_settings(self.settings, citations=False)
        self.pipeline.use_citations(ray.get(citations[0]))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        studies: list[Loaded] = []
        records: dict[int, StudyRecord] = {}
        for seq, path, context, key in zip(batch["seq"], batch["path"], batch["context"],
                                           batch["key"], strict=True):
            item = Item(int(seq), "", Path(str(path)),
                        Context(**json.loads(str(context))) if context else None)
            loaded = load(item, self.settings.limits)
            if isinstance(loaded, str) or loaded.key != key:
                error = loaded if isinstance(loaded, str) else "the file changed during the batch"
                records[int(seq)] = StudyRecord(str(key), None, "failed", error=error)
            else:
                studies.append(loaded)
        for study, rec in zip(studies, analyze_chunk(self.pipeline, studies), strict=True):
            records[study.item.seq] = rec
        order = sorted(records)
        return {"seq": order,
                "key": [records[s].key for s in order],
                "image_sha256": [records[s].image_sha256 or "" for s in order],
                "status": [records[s].status for s in order],
                "in_scope": [_scope_code(records[s].in_scope) for s in order],
                "result": [records[s].result or "" for s in order],
                "error": [records[s].error or "" for s in order]}


def citation_snapshot(settings: dict[str, Any]) -> CitationSnapshot:
    """Every label's citations from the literature index, searched once for all actors
    (a Ray task: one process opens the index and the embedder, not every actor)."""
    _quiet_logs()
    from assistant.pipeline import Pipeline

    return Pipeline.from_settings(Settings(**settings), citations=True).citation_snapshot()


def _scope_code(in_scope: bool | None) -> int:
    return -1 if in_scope is None else int(in_scope)


def _records(batch: dict[str, np.ndarray]) -> dict[int, StudyRecord]:
    out = {}
    for seq, key, sha, status, in_scope, result, error in zip(
            batch["seq"], batch["key"], batch["image_sha256"], batch["status"],
            batch["in_scope"], batch["result"], batch["error"], strict=True):
        out[int(seq)] = StudyRecord(str(key), str(sha) or None, str(status),  # type: ignore[arg-type]
                                    None if int(in_scope) < 0 else bool(in_scope),
                                    str(result) or None, str(error) or None)
    return out


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address``, or start a local one with ``num_cpus`` CPUs."""
    import ray

    env = {"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}
    if address:
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchInputError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, runtime_env=env, log_to_driver=False)
    log.info("ray cluster: %s", ray.cluster_resources())


def run_ray(settings: Settings, store: BatchStore, items: Iterable[Item],
            on_outcome: Callable[[Outcome], None], batch_size: int = 8,
            actors: int | None = None) -> None:
    """Draft ``items`` on the connected Ray cluster (``connect`` first); ``actors``
    defaults to one per CPU of the cluster."""
    import ray
    import ray.data

    tracker = Tracker(store, settings.limits, on_outcome)
    pending: dict[int, Loaded] = {}
    for item in items:
        loaded = tracker.admit(item)
        if loaded is not None:
            pending[item.seq] = replace(loaded, data=b"")  # actors read the file again
    if not pending:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows = [{"seq": seq, "path": str(s.item.path), "context": s.item.context_json() or "",
             "key": s.key} for seq, s in pending.items()]
    dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / batch_size))
    config = settings.model_dump(mode="json")
    # No CPU reserved: it runs while the actors, one per CPU, load their models.
    snapshot = ray.remote(num_cpus=0)(citation_snapshot).remote(config)
    drafted = dataset.map_batches(
        DraftActor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=1, batch_format="numpy",
        fn_constructor_kwargs={"settings": config, "citations": [snapshot]})
    for batch in drafted.iter_batches(batch_size=None, batch_format="numpy"):
        records = _records(batch)
        tracker.finish([pending.pop(seq) for seq in records], list(records.values()))
    if pending:  # never expected: Ray returns a row for every row it was given
        raise RuntimeError(f"the Ray engine returned no result for {len(pending)} studies")
