"""The SQLite conversation store: schema versioning, WAL, round trips, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from assistant.chat.store import SCHEMA_VERSION, ConversationStore, StoreError

ANALYSIS = {"study_id": "s1", "in_scope": True, "diagnosis": {"label": "tumour"},
            "heatmap": {"method": "rollout", "png_base64": "iVBORw0KGgo="}}


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "chat.sqlite3")


def test_new_store_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "chat.sqlite3"
    store = ConversationStore(path)
    assert store.schema_version == SCHEMA_VERSION == 1
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "studies", "messages"} <= tables


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    ConversationStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        ConversationStore(path)


def test_conversations_studies_and_messages_persist(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    store = ConversationStore(path)
    cid = store.create_conversation(user="dr-a")
    study = store.add_study(cid, "ab" * 32, ANALYSIS)
    store.add_message(cid, "user", "What does it show?", study.id)
    store.add_message(cid, "assistant", "Tumour ...", study.id, "study")
    store.close()

    again = ConversationStore(path)  # reopened: nothing lost, no migration rerun
    assert again.has_conversation(cid) and again.conversation_user(cid) == "dr-a"
    found = again.find_study(cid, "ab" * 32)
    assert found is not None and found.id == "s1" and found.conversation_id == cid
    assert found.analysis["diagnosis"] == {"label": "tumour"}
    assert "png_base64" not in found.analysis["heatmap"]  # the PNG is not kept
    assert found.analysis["heatmap"]["method"] == "rollout"
    assert [(m.role, m.kind) for m in again.messages(cid)] == [("user", None),
                                                              ("assistant", "study")]


def test_latest_study_and_lookups(store: ConversationStore) -> None:
    cid = store.create_conversation()
    assert store.latest_study(cid) is None
    store.add_study(cid, "a" * 64, {**ANALYSIS, "study_id": "first"})
    store.add_study(cid, "b" * 64, {**ANALYSIS, "study_id": "second"})
    latest = store.latest_study(cid)
    assert latest is not None and latest.id == "second"
    first = store.find_study(cid, "a" * 64)
    assert first is not None and first.id == "first"
    assert store.find_study(store.create_conversation(), "a" * 64) is None  # per conversation
    assert store.study("second") is not None and store.study("nope") is None


def test_conversation_ids(store: ConversationStore) -> None:
    assert store.ensure_conversation("ward-7_case-12", user="dr-b") is True
    assert store.ensure_conversation("ward-7_case-12") is False  # exists: kept as it was
    assert store.conversation_user("ward-7_case-12") == "dr-b"
    with pytest.raises(ValueError, match="exists"):
        store.create_conversation(conversation_id="ward-7_case-12")
    for bad in ("", "has space", "x" * 65, "semi;colon"):
        with pytest.raises(ValueError, match="conversation id"):
            store.ensure_conversation(bad)


def test_messages_need_a_conversation(store: ConversationStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_message("missing", "user", "hello")


def test_threads_share_one_store(store: ConversationStore) -> None:
    cid = store.create_conversation()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(25):
                store.add_message(cid, "user", f"thread {n} message {i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    messages = store.messages(cid)
    assert len(messages) == 200 and len({m.content for m in messages}) == 200
