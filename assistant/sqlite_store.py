"""The SQLite plumbing the project's stores share (stdlib ``sqlite3``).

One connection behind a lock, in autocommit mode with explicit ``BEGIN IMMEDIATE``
transactions; WAL on files; foreign keys on. The schema version is SQLite's
``PRAGMA user_version``: ``migrations[i]`` takes a store from version ``i`` to ``i + 1``,
and a store written by a newer version of this code is refused.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store cannot be opened or was written by a newer version of this code."""


class SqliteStore:
    """Base of a store: subclasses set ``migrations`` and ``kind`` (for messages)."""

    migrations: tuple[str, ...] = ()
    kind = "store"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                       isolation_level=None)  # autocommit; we BEGIN ourselves
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the {self.kind} {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._migrate()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        latest = len(self.migrations)
        with self._transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > latest:
                raise StoreError(f"{self.path} has schema version {version}; this code "
                                 f"knows {latest}: use a newer assistant")
            for step in range(version, latest):
                for statement in self.migrations[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {step + 1}")
                log.info("%s %s: schema version %d", self.kind, self.path, step + 1)

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
