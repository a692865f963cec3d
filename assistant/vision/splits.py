"""Grouped, label-stratified splits and the split manifest that makes them auditable.

``make_split`` is pure: whole near-copy groups go to a held-out ``"test"`` fold and to
cross-validation folds ``"0"`` .. ``"n_folds-1"``. ``build_br35h_split`` is the I/O edge:
it reads the verified Br35H files, hashes them (``assistant.vision.dedup.phash``), groups
near-copies and splits. The manifest is a CSV ``sha256,path,label,group,fold`` sorted by
path, LF line endings, so that anyone can rebuild it and compare bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.data.manifest import require
from assistant.imaging import read_image
from assistant.imaging.preprocess import to_grey
from assistant.vision.dedup import group_near_copies, majority_labels, phash

logger = logging.getLogger(__name__)

TEST_FOLD = "test"
MANIFEST_COLUMNS = ("sha256", "path", "label", "group", "fold")
BR35H_SOURCE = "br35h"
BR35H_LABELS = {"yes": 1, "no": 0}  # folder name -> label (1 = tumour)
BR35H_MAX_DISTANCE = 6  # phash threshold chosen from the contact sheets: see split_br35h.md
BR35H_SPLIT_PATH = Path(__file__).with_name("split_br35h.csv")


@dataclass(frozen=True)
class SplitRow:
    """One image of a split manifest."""

    sha256: str
    path: str  # relative to the data folder, forward slashes, e.g. "br35h/yes/y12.jpg"
    label: int
    group: int
    fold: str  # "test" or "0" .. "n_folds-1"


# ---------------------------------------------------------------- the split (pure)


def _greedy_bins(
    sizes: npt.NDArray[np.int64], order: npt.NDArray[np.intp], weights: Sequence[float]
) -> npt.NDArray[np.int64]:
    """Assign items (groups) of ``sizes`` to bins in ``order``, each to the bin whose
    normalised fill (images / target images + groups / target groups) is lowest after
    adding it; ties go to the lower bin. A bin left empty then takes the last-placed item
    of the bin holding the most items, so every bin gets one when there are enough items.
    Returns the bin of each item."""
    target = np.asarray(weights, dtype=np.float64)
    target_images = target * float(sizes.sum())
    target_groups = target * float(sizes.size)
    images = np.zeros(target.size)
    groups = np.zeros(target.size)
    out = np.empty(sizes.size, dtype=np.int64)
    for item in order:
        fill = (images + sizes[item]) / target_images + (groups + 1) / target_groups
        chosen = int(np.argmin(fill))
        out[item] = chosen
        images[chosen] += sizes[item]
        groups[chosen] += 1
    for empty in np.flatnonzero(groups == 0):
        donor = int(np.argmax(groups))
        if groups[donor] < 2:
            break
        item = next(i for i in order[::-1] if out[i] == donor)
        out[item] = empty
        groups[donor] -= 1
        groups[empty] += 1
    return out


def _stratum_order(sizes: npt.NDArray[np.int64], rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """Largest groups first; groups of equal size in a random (seeded) order."""
    shuffled = rng.permutation(sizes.size)
    return shuffled[np.argsort(-sizes[shuffled], kind="stable")]


def _check_split_args(
    labels: np.ndarray, groups: np.ndarray, n_folds: int, test_fraction: float
) -> None:
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and groups must be 1-D of one length, got shapes "
            f"{labels.shape} and {groups.shape}"
        )


def make_split(
    labels: np.ndarray,
    groups: np.ndarray,
    n_folds: int = 5,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> npt.NDArray[np.str_]:
    """Fold of each image: ``"test"`` or ``"0"`` .. ``str(n_folds - 1)``, whole groups at a time.

    Groups are stratified by their majority label (ties to the larger label). Within each
    stratum, first ``test_fraction`` of the groups is held out, then the rest is dealt to
    ``n_folds`` folds; both steps are greedy, balancing group counts and image counts at
    once (largest groups first, equal sizes in seeded random order). The test fold does not
    depend on ``n_folds``. Deterministic for a seed. Raises ValueError when a stratum has
    fewer groups than ``n_folds + 1`` (some fold would lack that label).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    _check_split_args(labels, groups, n_folds, test_fraction)
    group_ids, dense = np.unique(groups, return_inverse=True)
    sizes = np.bincount(dense).astype(np.int64)
    majority = majority_labels(labels, dense)
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(group_ids.size, dtype=object)
    for label in np.unique(majority):
        members = np.flatnonzero(majority == label)
        if members.size < n_folds + 1:
            raise ValueError(
                f"label {label} has {members.size} groups; at least "
                f"{n_folds + 1} are needed for a test fold and {n_folds} folds"
            )
        held = (
            _greedy_bins(
                sizes[members],
                _stratum_order(sizes[members], rng),
                [test_fraction, 1.0 - test_fraction],
            )
            == 0
        )
        fold_of_group[members[held]] = TEST_FOLD
        rest = members[~held]
        bins = _greedy_bins(
            sizes[rest], _stratum_order(sizes[rest], rng), [1.0 / n_folds] * n_folds
        )
        fold_of_group[rest] = [str(b) for b in bins]
    return np.asarray(fold_of_group[dense], dtype=str)


# ---------------------------------------------------------------- the manifest (I/O)


def _manifest_text(rows: Iterable[SplitRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in sorted(rows, key=lambda r: r.path):
        writer.writerow([row.sha256, row.path, row.label, row.group, row.fold])
    return buffer.getvalue()


def write_split_manifest(path: Path, rows: Iterable[SplitRow]) -> None:
    """Write ``rows`` as CSV (header ``sha256,path,label,group,fold``), sorted by path, LF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_manifest_text(rows).encode("utf-8"))


def read_split_manifest(path: Path) -> list[SplitRow]:
    """Rows of a split manifest written by ``write_split_manifest``; ValueError if malformed."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: expected header {','.join(MANIFEST_COLUMNS)}, got {header}")
        rows = []
        for number, record in enumerate(reader, start=2):
            if len(record) != len(MANIFEST_COLUMNS):
                raise ValueError(
                    f"{path}:{number}: expected {len(MANIFEST_COLUMNS)} fields, got {len(record)}"
                )
            sha, rel, label, group, fold = record
            try:
                rows.append(SplitRow(sha, rel, int(label), int(group), fold))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: label and group must be integers") from exc
    return rows


def manifest_sha256(path: Path) -> str:
    """sha256 of the manifest file's bytes: what an evaluation records."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- Br35H


def load_grey(path: Path) -> np.ndarray:
    """An image file as float32 grey in [0, 1] (BT.601 luminance of RGB), via ``read_image``."""
    return to_grey(read_image(path).pixels)


def hash_files(paths: Sequence[Path]) -> npt.NDArray[np.uint64]:
    """``phash`` of each file's grey pixels, in order."""
    return np.array([phash(load_grey(p)) for p in paths], dtype=np.uint64)


def br35h_images(data_dir: Path) -> tuple[list[str], list[str], npt.NDArray[np.int64]]:
    """Verified Br35H images sorted by relative path: (paths, sha256s, labels)."""
    files = require(data_dir, BR35H_SOURCE)
    entries = sorted((p.relative_to(data_dir).as_posix(), sha) for p, sha in files.items())
    paths, shas, labels = [], [], []
    for rel, sha in entries:
        folder = rel.split("/")[-2]
        if folder not in BR35H_LABELS:
            raise ValueError(f"{rel}: expected a file under br35h/yes or br35h/no")
        paths.append(rel)
        shas.append(sha)
        labels.append(BR35H_LABELS[folder])
    return paths, shas, np.array(labels, dtype=np.int64)


def build_br35h_split(data_dir: Path, max_distance: int, seed: int = 0) -> list[SplitRow]:
    """Hash every verified Br35H image, group near-copies within ``max_distance``, split."""
    paths, shas, labels = br35h_images(data_dir)
    logger.info("hashing %d Br35H images", len(paths))
    hashes = hash_files([data_dir / rel for rel in paths])
    groups = group_near_copies(hashes, max_distance)
    folds = make_split(labels, groups, seed=seed)
    return [
        SplitRow(sha, rel, int(label), int(group), str(fold))
        for sha, rel, label, group, fold in zip(shas, paths, labels, groups, folds, strict=True)
    ]
