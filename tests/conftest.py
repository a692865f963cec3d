"""Shared fixtures: where the fetched test data lives."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

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
