"""The SQLite store: studies by key (a failure never replaces a drafted study), jobs and
their studies' states, progress counts, results in order, and reopening."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from assistant.batch.inputs import Item
from assistant.batch.store import SCHEMA_VERSION, BatchStore, StoreError, StudyRecord
from assistant.report import Context


def _done(key: str, in_scope: bool = True) -> StudyRecord:
    return StudyRecord(key, key, "done", in_scope, json.dumps({"study": key}))


def test_studies_by_key(tmp_path: Path) -> None:
    store = BatchStore(tmp_path / "s.sqlite3")
    assert store.done_scope("a") is None and store.study("a") is None
    store.record([_done("a"), StudyRecord("b", None, "failed", error="bad bytes")])
    assert store.done_scope("a") == (True,)
    assert store.done_scope("b") is None  # failed: drafted again next time
    stored = store.study("a")
    assert stored is not None and stored.analysis() == {"study": "a"}
    # A failure never replaces a drafted study; a drafted one replaces a failure.
    store.record([StudyRecord("a", "a", "failed", error="late failure"), _done("b", False)])
    assert store.done_scope("a") == (True,) and store.done_scope("b") == (False,)
    assert store.count_studies("done") == 2 and store.count_studies("failed") == 0
    store.close()
    reopened = BatchStore(tmp_path / "s.sqlite3")
    assert reopened.done_scope("b") == (False,)


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    BatchStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer assistant"):
        BatchStore(path)


def test_jobs_progress_and_results(tmp_path: Path) -> None:
    store = BatchStore(tmp_path / "s.sqlite3")
    items = [Item(0, "a.png", tmp_path / "a.png"),
             Item(1, "b.png", tmp_path / "b.png", Context("pain", 40, "female")),
             Item(2, "c.png", None, error="outside the allowed folders"),
             Item(3, "d.png", tmp_path / "d.png")]
    store.create_job("j1", "upload", tmp_path / "up", items)
    assert store.unfinished_jobs() == ["j1"] and store.job_folder("j1") == tmp_path / "up"
    pending = store.pending_items("j1")
    assert [i.seq for i in pending] == [0, 1, 3]
    assert pending[1].context == Context("pain", 40, "female")
    progress = store.progress("j1")
    assert progress is not None and progress.state == "queued"
    assert progress.counts == {"total": 4, "pending": 3, "done": 0, "skipped": 0,
                               "failed": 1, "out_of_scope": 0}
    store.record([_done("ka"), _done("kd", in_scope=False)])
    store.set_items("j1", [(0, "done", "ka", None), (3, "skipped", "kd", None)])
    store.set_job_state("j1", "running")
    progress = store.progress("j1")
    assert progress is not None and progress.state == "running"
    assert progress.counts == {"total": 4, "pending": 1, "done": 1, "skipped": 1,
                               "failed": 1, "out_of_scope": 1}
    rows = store.job_rows("j1")
    assert [(r.seq, r.status) for r in rows] == [(0, "done"), (2, "failed"), (3, "skipped")]
    assert rows[0].study is not None and rows[0].study.analysis() == {"study": "ka"}
    assert rows[1].study is None and rows[1].error == "outside the allowed folders"
    assert [r.seq for r in store.job_rows("j1", after=0, limit=1)] == [2]
    store.set_job_state("j1", "done")
    assert store.unfinished_jobs() == [] and store.progress("nope") is None
