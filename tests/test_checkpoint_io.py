"""Checkpoint files: the SHA256SUMS beside the release files is checked on every read and
kept up to date by every write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from assistant.checkpoint_io import (
    SUMS_FILE,
    CheckpointError,
    listed_sha256,
    read_payload,
    write_payload,
)
from assistant.config import Settings


def test_the_release_files_match_their_sums() -> None:
    weights = Settings().weights_dir
    releases = sorted(weights.glob("*.pt"))
    assert releases
    for path in releases:
        assert listed_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest(), path


def test_a_listed_file_changed_on_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    first = write_payload({"format": "f", "x": 1}, path)
    (tmp_path / SUMS_FILE).write_text(f"{first}  model.pt\n")
    assert read_payload(path, "f", "model")[1] == first
    second = write_payload({"format": "f", "x": 2}, path)  # retrained in place: recorded
    assert listed_sha256(path) == second != first
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # one bit flipped
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA256SUMS"):
        read_payload(path, "f", "model")
    other = tmp_path / "other.pt"  # not listed: read as before
    write_payload({"format": "f"}, other)
    assert listed_sha256(other) is None and read_payload(other, "f", "other")[0]["format"] == "f"
    assert (tmp_path / SUMS_FILE).read_text() == f"{second}  model.pt\n"


def test_sums_in_binary_mode_and_with_a_folder_prefix_are_read(tmp_path: Path) -> None:
    a = write_payload({"format": "f", "x": 1}, tmp_path / "a.pt")
    b = write_payload({"format": "f", "x": 2}, tmp_path / "b.pt")
    (tmp_path / SUMS_FILE).write_text(f"{a} *a.pt\r\n{b.upper()}  ./b.pt\n")  # sha256sum -b
    assert listed_sha256(tmp_path / "a.pt") == a and listed_sha256(tmp_path / "b.pt") == b

