"""Br35H for training and evaluation: verified files, the committed grouped split, and
the checkpoint's own preprocessing applied once to every image."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.data import DataError, require
from assistant.imaging import read_image
from assistant.imaging.preprocess import PreprocessConfig, preprocess
from assistant.vision import restore
from assistant.vision.splits import (
    BR35H_SPLIT_PATH,
    TEST_FOLD,
    manifest_sha256,
    read_split_manifest,
)

log = logging.getLogger(__name__)

LABELS = ("no tumour", "tumour")  # class index -> name; Br35H no/ = 0, yes/ = 1


@dataclass(frozen=True)
class Dataset:
    images: npt.NDArray[np.float32]  # (N, S, S) preprocessed, values in [0, 1]
    labels: npt.NDArray[np.int64]  # (N,)
    groups: npt.NDArray[np.int64]  # (N,) near-copy group
    folds: npt.NDArray[np.str_]  # (N,) "0".."4" or "test"
    paths: tuple[str, ...]
    split_sha256: str
    # (N, K, S, S): K re-stored copies of every image outside the test fold
    # (``restore.py``), for training only; the test fold's rows hold its clean images.
    restored: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.restored is not None:
            restore.check_copies(self.restored.shape, self.images.shape)

    def select(self, mask: npt.NDArray[np.bool_]) -> Dataset:
        restored = self.restored[mask] if self.restored is not None else None
        return Dataset(self.images[mask], self.labels[mask], self.groups[mask],
                       self.folds[mask], tuple(np.asarray(self.paths)[mask]), self.split_sha256,
                       restored)

    def fold_masks(self, val_fold: str | None) -> tuple[npt.NDArray[np.bool_], ...]:
        """(train, val, test) masks: test is the held-out fold; val is ``val_fold``."""
        test = self.folds == TEST_FOLD
        val = self.folds == val_fold if val_fold is not None else np.zeros_like(test)
        return ~test & ~val, val, test


def _load_one(path: Path, cfg: PreprocessConfig) -> npt.NDArray[np.float32]:
    return preprocess(read_image(path).pixels, cfg).astype(np.float32)


def load_br35h(data_dir: Path, cfg: PreprocessConfig, split_path: Path = BR35H_SPLIT_PATH,
               workers: int = 2, restored_copies: int = 0, seed: int = 0) -> Dataset:
    """Every Br35H image, verified against the data manifest and the split manifest.

    ``restored_copies``: that many re-stored copies of every image outside the test fold
    (``Dataset.restored``), drawn from ``seed``."""
    verified = {str(p.relative_to(data_dir)): sha for p, sha in require(data_dir, "br35h").items()}
    rows = read_split_manifest(split_path)
    for row in rows:
        if verified.get(row.path) != row.sha256:
            raise DataError(f"{row.path}: its sha256 differs from the split manifest "
                            f"{split_path.name}; the data or the split has changed")
    log.info("preprocessing %d Br35H images to %d px", len(rows), cfg.image_size)
    with ThreadPoolExecutor(workers) as pool:
        images = np.stack(list(pool.map(lambda r: _load_one(data_dir / r.path, cfg), rows)))
        restored = None
        if restored_copies > 0:
            log.info("re-storing the training images, %d copies each", restored_copies)

            def copies(i: int) -> npt.NDArray[np.float32]:
                if rows[i].fold == TEST_FOLD:
                    return np.repeat(images[i][None], restored_copies, axis=0)
                return restore.restored_copies(data_dir / rows[i].path, cfg, restored_copies,
                                               seed, i)

            restored = np.stack(list(pool.map(copies, range(len(rows)))))
    return Dataset(images, np.array([r.label for r in rows], np.int64),
                   np.array([r.group for r in rows], np.int64),
                   np.array([r.fold for r in rows]), tuple(r.path for r in rows),
                   manifest_sha256(split_path), restored)
