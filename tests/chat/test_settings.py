"""The chat's settings: where the conversation store lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import Settings


def test_the_store_follows_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                        ) -> None:
    monkeypatch.delenv("ASSISTANT_CHAT__DB_PATH", raising=False)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path))
    assert Settings().chat.db_path == tmp_path.resolve() / "chat.sqlite3"


def test_the_store_path_is_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASSISTANT_CHAT__DB_PATH", str(tmp_path / "db" / "c.sqlite3"))
    monkeypatch.setenv("ASSISTANT_CHAT__CITATIONS", "5")
    settings = Settings()
    assert settings.chat.db_path == (tmp_path / "db" / "c.sqlite3").resolve()
    assert settings.chat.citations == 5
