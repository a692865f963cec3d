"""Shared fixtures: where the fetched test data lives."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$ASSISTANT_DATA_DIR``, else ``<repo>/.data`` (where `assistant data fetch` writes)."""
    return Path(os.environ.get("ASSISTANT_DATA_DIR", REPO_ROOT / ".data"))


@pytest.fixture(scope="session")
def dicom_path() -> Callable[[str], Path]:
    """``dicom_path("CT_small.dcm")`` -> the path of a fetched DICOM test file.

    Fails (rather than skips) when the file is missing, so that a forgotten data
    fetch cannot turn the DICOM tests silently green.
    """

    def locate(name: str) -> Path:
        path = data_dir() / "dicom" / name
        if not path.is_file():
            pytest.fail(f"missing test file {path}: run `assistant data fetch` first")
        return path

    return locate


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
