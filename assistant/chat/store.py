"""The conversation store: SQLite (stdlib ``sqlite3``), WAL, one connection behind a lock.

Three tables: ``conversations`` (an id, who asked, when), ``studies`` (an image analysed in
a conversation: its sha256 and the analysis JSON, so a follow-up never runs the model
again) and ``messages`` (each new user turn and each answer, with the study it was about).
The schema is migrated by ``assistant.sqlite_store.SqliteStore``: ``MIGRATIONS[i]`` takes a store
from version ``i`` to ``i + 1``, and a store written by a newer version is refused.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from assistant.sqlite_store import SqliteStore
from assistant.sqlite_store import StoreError as StoreError  # re-exported

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        user TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE studies (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        image_sha256 TEXT NOT NULL,
        analysis TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX studies_by_conversation ON studies(conversation_id, created);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        study_id TEXT REFERENCES studies(id),
        kind TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

# Ids a client may choose (``metadata.conversation_id``); ours are 32 hex digits.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class StoredStudy:
    id: str
    conversation_id: str
    image_sha256: str
    analysis: dict[str, Any]  # Analysis.to_dict(), without the heatmap PNG
    created: float


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: str
    role: str
    content: str
    study_id: str | None
    kind: str | None
    created: float


class ConversationStore(SqliteStore):
    """Conversations, their studies and messages; safe to share between threads."""

    migrations = MIGRATIONS
    kind = "conversation store"


    # -- conversations ---------------------------------------------------------------------

    def create_conversation(self, user: str | None = None,
                            conversation_id: str | None = None) -> str:
        """A new conversation (``conversation_id`` if given, else a fresh id); its id."""
        cid = conversation_id or new_id()
        if not self.ensure_conversation(cid, user):
            raise ValueError(f"conversation {cid} exists already")
        return cid

    def ensure_conversation(self, conversation_id: str, user: str | None = None) -> bool:
        """Create the conversation unless it exists; True when it was created."""
        if not ID_PATTERN.fullmatch(conversation_id):
            raise ValueError(f"a conversation id is 1-64 letters, digits, '-' or '_'; "
                             f"got {conversation_id!r}")
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO conversations (id, user, created, "
                                "updated) VALUES (?, ?, ?, ?)", (conversation_id, user, now, now))
        return cursor.rowcount == 1

    def has_conversation(self, conversation_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM conversations WHERE id = ?",
                                   (conversation_id,)).fetchone()
        return row is not None

    def conversation_user(self, conversation_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT user FROM conversations WHERE id = ?",
                                   (conversation_id,)).fetchone()
        return None if row is None else row["user"]

    # -- studies ---------------------------------------------------------------------------

    def add_study(self, conversation_id: str, image_sha256: str,
                  analysis: dict[str, Any]) -> StoredStudy:
        """Keep an analysis (``Analysis.to_dict()``; the heatmap PNG is left out)."""
        kept = _without_png(analysis)
        study_id = str(kept.get("study_id") or new_id())
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT INTO studies (id, conversation_id, image_sha256, analysis, "
                       "created) VALUES (?, ?, ?, ?, ?)",
                       (study_id, conversation_id, image_sha256, json.dumps(kept), now))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?",
                       (now, conversation_id))
        return StoredStudy(study_id, conversation_id, image_sha256, kept, now)

    def find_study(self, conversation_id: str, image_sha256: str) -> StoredStudy | None:
        """The latest study of this image in this conversation."""
        return self._one_study("SELECT * FROM studies WHERE conversation_id = ? AND "
                               "image_sha256 = ? ORDER BY created DESC, rowid DESC LIMIT 1",
                               (conversation_id, image_sha256))

    def latest_study(self, conversation_id: str) -> StoredStudy | None:
        return self._one_study("SELECT * FROM studies WHERE conversation_id = ? "
                               "ORDER BY created DESC, rowid DESC LIMIT 1", (conversation_id,))

    def study(self, study_id: str) -> StoredStudy | None:
        return self._one_study("SELECT * FROM studies WHERE id = ?", (study_id,))

    def _one_study(self, sql: str, params: tuple[str, ...]) -> StoredStudy | None:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        if row is None:
            return None
        return StoredStudy(row["id"], row["conversation_id"], row["image_sha256"],
                           json.loads(row["analysis"]), row["created"])

    # -- messages --------------------------------------------------------------------------

    def add_message(self, conversation_id: str, role: str, content: str,
                    study_id: str | None = None, kind: str | None = None) -> int:
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO messages (conversation_id, role, content, "
                                "study_id, kind, created) VALUES (?, ?, ?, ?, ?, ?)",
                                (conversation_id, role, content, study_id, kind, now))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?",
                       (now, conversation_id))
        return int(cursor.lastrowid or 0)

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM messages WHERE conversation_id = ? "
                                    "ORDER BY id", (conversation_id,)).fetchall()
        return [StoredMessage(r["id"], r["conversation_id"], r["role"], r["content"],
                              r["study_id"], r["kind"], r["created"]) for r in rows]


def _without_png(analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis without the heatmap's base64 PNG (tens of kB no answer quotes)."""
    heatmap = analysis.get("heatmap")
    if not isinstance(heatmap, dict) or "png_base64" not in heatmap:
        return analysis
    return {**analysis, "heatmap": {k: v for k, v in heatmap.items() if k != "png_base64"}}
