"""Batch drafting fixtures: folders of real Br35H test-fold images (distinct files), the
release pipeline loaded once, and the environment a ``python -m assistant`` subprocess
runs in (no literature index: faster, and the analyses say why they cite nothing)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.pipeline import Pipeline
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest
from tests.conftest import data_dir

MakeFolder = Callable[[Path, int], list[Path]]


@pytest.fixture(scope="session")
def br35h_paths() -> list[Path]:
    """Test-fold images of distinct content, tumour and no tumour interleaved."""
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    by_label = [[r for r in rows if r.label == label] for label in (1, 0)]
    seen: set[str] = set()
    out: list[Path] = []
    for pair in zip(*by_label, strict=False):
        for row in pair:
            path = data_dir() / row.path
            if not path.is_file():
                pytest.fail(f"missing {path}: run `assistant data fetch` first")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                out.append(path)
    return out


@pytest.fixture(scope="session")
def make_folder(br35h_paths: list[Path]) -> MakeFolder:
    """``make_folder(dest, n)``: n distinct Br35H images copied into ``dest`` (half of
    them in a subfolder); the copies' paths."""

    def make(dest: Path, n: int) -> list[Path]:
        if n > len(br35h_paths):
            raise ValueError(f"only {len(br35h_paths)} distinct test-fold images")
        (dest / "sub").mkdir(parents=True, exist_ok=True)
        copies = []
        for i, src in enumerate(br35h_paths[:n]):
            target = dest / ("sub" if i % 2 else "") / f"{i:03d}-{src.name}"
            shutil.copy(src, target)
            copies.append(target)
        return copies

    return make


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
