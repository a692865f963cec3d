"""Batch drafting fixtures: the release pipeline loaded once, and the environment a
``python -m assistant`` subprocess runs in (no literature index: faster, and the analyses
say why they cite nothing). Folders of real images: ``make_folder`` (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.pipeline import Pipeline
from tests.conftest import data_dir


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The real data and release weights; an empty index folder (no citations)."""
    return Settings(data_dir=data_dir(), index_dir=tmp_path_factory.mktemp("no-index"))


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> Pipeline:
    return Pipeline.from_settings(settings, citations=True)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of an ``assistant`` subprocess: real data, no index, own stores."""
    return {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir()),
            "ASSISTANT_INDEX_DIR": str(tmp_path / "no-index"),
            "ASSISTANT_BATCH__DB_PATH": str(tmp_path / "default.sqlite3"),
            "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
