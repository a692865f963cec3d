"""The batch store: SQLite (stdlib ``sqlite3``), WAL, one connection behind a lock.

- ``studies``: every drafted study, keyed by content (``inputs.study_key``), ``done`` with
  its analysis JSON or ``failed`` with the reason. A study is written in its own
  transaction the moment its model batch finishes, so a killed run loses at most the
  batches in flight, and a rerun skips every study already ``done``.
- ``jobs`` and ``job_items``: the HTTP batch jobs, their studies in order and each one's
  state (``pending``, ``done``, ``skipped``: found done in the store, ``failed``), so that
  a job survives a restart of the service and resumes where it stopped.

The schema is migrated by ``assistant.sqlite_store.SqliteStore``: ``MIGRATIONS[i]`` takes a store
from version ``i`` to ``i + 1``, and a store written by a newer version is refused.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.batch.inputs import Item
from assistant.report import Context
from assistant.sqlite_store import SqliteStore
from assistant.sqlite_store import StoreError as StoreError  # re-exported

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE studies (
        key TEXT PRIMARY KEY,
        image_sha256 TEXT,
        status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
        in_scope INTEGER,
        result TEXT,
        error TEXT,
        updated REAL NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        origin TEXT NOT NULL,
        folder TEXT,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        error TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE job_items (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        source TEXT NOT NULL,
        path TEXT,
        context TEXT,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'skipped', 'failed')),
        key TEXT,
        error TEXT,
        PRIMARY KEY (job_id, seq)
    );
    CREATE INDEX job_items_by_status ON job_items(job_id, status);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

StudyStatus = Literal["done", "failed"]
ItemStatus = Literal["pending", "done", "skipped", "failed"]
JobState = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class StudyRecord:
    """A study's outcome, as written to and read from ``studies``."""

    key: str
    image_sha256: str | None
    status: StudyStatus
    in_scope: bool | None = None
    result: str | None = None  # Analysis.to_dict() as JSON, when done
    error: str | None = None  # why, when failed

    def analysis(self) -> dict[str, Any] | None:
        return None if self.result is None else dict(json.loads(self.result))


@dataclass(frozen=True)
class JobProgress:
    id: str
    origin: str
    state: JobState
    error: str | None
    created: float
    updated: float
    counts: dict[str, int]  # total, pending, done, skipped, failed, out_of_scope

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "origin": self.origin, "state": self.state,
                "error": self.error, "created": self.created, "updated": self.updated,
                **self.counts}


@dataclass(frozen=True)
class JobRow:
    """One study of a job with its outcome, for the results."""

    seq: int
    source: str
    status: ItemStatus
    error: str | None
    study: StudyRecord | None


class BatchStore(SqliteStore):
    """Studies and jobs; safe to share between threads (and processes: WAL)."""

    migrations = MIGRATIONS
    kind = "batch store"


    # -- studies ---------------------------------------------------------------------------

    def record(self, studies: Sequence[StudyRecord]) -> None:
        """Write outcomes in one transaction. A failure never replaces a ``done`` study."""
        now = time.time()
        with self._transaction() as db:
            for s in studies:
                db.execute(
                    "INSERT INTO studies (key, image_sha256, status, in_scope, result, error, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "image_sha256 = excluded.image_sha256, status = excluded.status, "
                    "in_scope = excluded.in_scope, result = excluded.result, "
                    "error = excluded.error, updated = excluded.updated "
                    "WHERE studies.status != 'done' OR excluded.status = 'done'",
                    (s.key, s.image_sha256, s.status, None if s.in_scope is None
                     else int(s.in_scope), s.result, s.error, now))

    def study(self, key: str) -> StudyRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM studies WHERE key = ?", (key,)).fetchone()
        return None if row is None else _study(row)

    def done_scope(self, key: str) -> tuple[bool | None] | None:
        """``(in_scope,)`` when the study is stored ``done``, else None."""
        with self._lock:
            row = self._db.execute("SELECT in_scope FROM studies WHERE key = ? AND "
                                   "status = 'done'", (key,)).fetchone()
        if row is None:
            return None
        return (None if row["in_scope"] is None else bool(row["in_scope"]),)

    def count_studies(self, status: StudyStatus = "done") -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM studies WHERE status = ?",
                                   (status,)).fetchone()
        return int(row[0])

    # -- jobs ------------------------------------------------------------------------------

    def create_job(self, job_id: str, origin: str, folder: Path | None,
                   items: Sequence[Item]) -> None:
        """A queued job and its studies, in one transaction."""
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, origin, folder, state, created, updated) "
                       "VALUES (?, ?, ?, 'queued', ?, ?)",
                       (job_id, origin, None if folder is None else str(folder), now, now))
            db.executemany(
                "INSERT INTO job_items (job_id, seq, source, path, context, status, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(job_id, it.seq, it.source, None if it.path is None else str(it.path),
                  it.context_json(), "failed" if it.error else "pending", it.error)
                 for it in items])

    def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                       (state, error, time.time(), job_id))

    def job_folder(self, job_id: str) -> Path | None:
        with self._lock:
            row = self._db.execute("SELECT folder FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None or row["folder"] is None else Path(row["folder"])

    def unfinished_jobs(self) -> list[str]:
        """Queued or running jobs, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state IN ('queued', 'running') "
                                    "ORDER BY created, id").fetchall()
        return [row["id"] for row in rows]

    def pending_items(self, job_id: str) -> list[Item]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM job_items WHERE job_id = ? AND "
                                    "status = 'pending' ORDER BY seq", (job_id,)).fetchall()
        return [Item(r["seq"], r["source"], None if r["path"] is None else Path(r["path"]),
                     Context(**json.loads(r["context"])) if r["context"] else None)
                for r in rows]

    def set_items(self, job_id: str,
                  outcomes: Sequence[tuple[int, ItemStatus, str | None, str | None]]) -> None:
        """(seq, status, key, error) of studies of a job, in one transaction."""
        with self._transaction() as db:
            db.executemany("UPDATE job_items SET status = ?, key = ?, error = ? "
                           "WHERE job_id = ? AND seq = ?",
                           [(status, key, error, job_id, seq)
                            for seq, status, key, error in outcomes])
            db.execute("UPDATE jobs SET updated = ? WHERE id = ?", (time.time(), job_id))

    def progress(self, job_id: str) -> JobProgress | None:
        with self._lock:
            job = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                return None
            rows = self._db.execute(
                "SELECT i.status, COUNT(*) AS n, SUM(s.in_scope = 0) AS out "
                "FROM job_items i LEFT JOIN studies s ON s.key = i.key AND s.status = 'done' "
                "WHERE i.job_id = ? GROUP BY i.status", (job_id,)).fetchall()
        counts = dict.fromkeys(("pending", "done", "skipped", "failed"), 0)
        out_of_scope = 0
        for row in rows:
            counts[row["status"]] = int(row["n"])
            if row["status"] in ("done", "skipped"):
                out_of_scope += int(row["out"] or 0)
        return JobProgress(job["id"], job["origin"], job["state"], job["error"],
                           job["created"], job["updated"],
                           {"total": sum(counts.values()), **counts,
                            "out_of_scope": out_of_scope})

    def job_rows(self, job_id: str, after: int = -1, limit: int = 200) -> list[JobRow]:
        """Finished studies of a job (results joined), in order, from ``seq > after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.seq, i.source, i.status AS item_status, i.error AS item_error, "
                "s.key, s.image_sha256, s.status, s.in_scope, s.result, s.error "
                "FROM job_items i LEFT JOIN studies s ON s.key = i.key "
                "WHERE i.job_id = ? AND i.seq > ? AND i.status != 'pending' "
                "ORDER BY i.seq LIMIT ?", (job_id, after, limit)).fetchall()
        return [JobRow(r["seq"], r["source"], r["item_status"], r["item_error"],
                       _study(r) if r["key"] is not None else None) for r in rows]


def _study(row: sqlite3.Row) -> StudyRecord:
    """A ``studies`` row (or the same columns of a join)."""
    in_scope = row["in_scope"]
    return StudyRecord(row["key"], row["image_sha256"], row["status"],
                       None if in_scope is None else bool(in_scope), row["result"],
                       row["error"])
