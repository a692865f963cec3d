"""Training: AdamW with linear warm-up and cosine decay, early stopping on validation
loss, a fixed seed; then temperature scaling and the operating threshold, both fitted
on the validation images only.

With a pretrained CNN stem, its first ``freeze_blocks`` blocks stay frozen (ImageNet
filters, batch-norm statistics included) and their outputs are computed once for a clean
and ``views`` augmented copies of every training image: each epoch then draws one view
per image, so augmentation costs nothing after the first pass. The remaining blocks and
the transformer train normally.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from assistant.vision.augment import AugmentConfig, augment
from assistant.vision.metrics import (
    choose_threshold,
    fit_temperature,
    roc_auc,
    softmax_with_temperature,
)
from assistant.vision.model import Lite0Stem, PatchTransformer
from assistant.vision.restore import check_copies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    stem_lr_scale: float = 0.3  # pretrained layers learn more slowly
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    patience: int = 6
    seed: int = 0
    freeze_blocks: int = 4  # of the CNN stem; 0 trains everything end to end
    views: int = 12  # cached augmented views per training image (frozen stem only)
    min_sensitivity: float = 0.98  # the operating threshold's floor on validation
    miss_cost: float = 3.0  # a missed tumour costs this many false alarms (caps the threshold)
    # Exponential moving average of the weights, per step (0 = off): validation, early
    # stopping and the kept model use the averaged weights.
    ema: float = 0.0
    # Re-stored copies of each training image (``restore.py``: JPEG, resampled) and the
    # share of augmented views that start from one of them instead of the image as
    # fetched (0 copies: every view starts from the image as fetched).
    restored_copies: int = 0
    restored_share: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    model: PatchTransformer
    temperature: float
    threshold: float
    best_epoch: int
    seconds: float
    history: list[dict[str, float]]


def frozen_part(model: PatchTransformer, cfg: TrainConfig) -> nn.Module | None:
    if not isinstance(model.stem, Lite0Stem) or cfg.freeze_blocks == 0:
        return None
    return model.stem.blocks[: cfg.freeze_blocks]


def _trainable_forward(model: PatchTransformer, cfg: TrainConfig, x: Tensor) -> Tensor:
    """Logits from either cached frozen features or (augmented) images."""
    if frozen_part(model, cfg) is None:
        return model(x).logits
    assert isinstance(model.stem, Lite0Stem)
    return model.encode(model.stem.blocks[cfg.freeze_blocks:](x)).logits


def _view_source(images: Tensor, restored: Tensor | None, cfg: TrainConfig,
                 gen: torch.Generator) -> Tensor:
    """What each image's augmented view starts from: the image as fetched or, for a
    ``restored_share`` of them, one of its re-stored copies (``restored``: (B, K, S, S))."""
    if restored is None or restored.size(1) == 0 or cfg.restored_share <= 0:
        return images
    b = images.size(0)
    pick = torch.randint(restored.size(1), (b,), generator=gen)
    use = torch.rand(b, generator=gen) < cfg.restored_share
    copy = restored[torch.arange(b), pick].unsqueeze(1)
    return torch.where(use.view(b, 1, 1, 1), copy, images)


@torch.no_grad()
def feature_bank(frozen: nn.Module, images: Tensor, views: int, cfg: TrainConfig,
                 gen: torch.Generator, progress: bool, device: str = "cpu",
                 restored: Tensor | None = None) -> Tensor:
    """(N, views + 1, C, H, W) float16 frozen-stem outputs, on ``device``; view 0 is the
    clean image. Augmentation runs on the CPU (its generator), the stem on ``device``.
    ``restored``: (N, K, S, S) re-stored copies some augmented views start from."""
    if restored is not None:  # images: (N, 1, S, S)
        check_copies(tuple(restored.shape), (len(images), *images.shape[2:]))
    frozen.eval().to(device)
    out: list[Tensor] = []
    for start in tqdm(range(0, len(images), 64), desc="frozen stem", disable=not progress,
                      leave=False):
        batch = images[start:start + 64]
        copies = restored[start:start + 64] if restored is not None else None
        stack = [batch] + [augment(_view_source(batch, copies, cfg, gen), cfg.augment, gen)
                           for _ in range(views)]
        feats = [frozen(((v - 0.5) / 0.5).to(device)).half() for v in stack]
        out.append(torch.stack(feats, dim=1))
    return torch.cat(out)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: PatchTransformer, cfg: TrainConfig) -> torch.optim.Optimizer:
    stem = [p for p in model.stem.parameters() if p.requires_grad]
    stem_ids = {id(p) for p in stem}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in stem_ids]
    lr_stem = cfg.lr * (cfg.stem_lr_scale if isinstance(model.stem, Lite0Stem) else 1.0)
    return torch.optim.AdamW([{"params": stem, "lr": lr_stem, "base_lr": lr_stem},
                              {"params": rest, "lr": cfg.lr, "base_lr": cfg.lr}],
                             weight_decay=cfg.weight_decay)


@torch.no_grad()
def predict_logits(model: nn.Module, images: npt.NDArray[np.float32] | Tensor,
                   batch: int = 64) -> npt.NDArray[np.float32]:
    """Logits (N, classes) for preprocessed images (N, S, S) or (N, 1, S, S), on the
    model's device."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(images)
    x = x.unsqueeze(1) if x.dim() == 3 else x
    out = [model(x[i:i + batch].to(device)).logits.cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy().astype(np.float32)


def operating_threshold(y_val: npt.NDArray[np.int64], p_val: npt.NDArray[np.float64],
                        cfg: TrainConfig) -> float:
    """The threshold on calibrated probabilities: the highest one that keeps validation
    sensitivity at the floor, but never above the Bayes threshold 1 / (1 + miss_cost).

    On a validation fold whose classes barely overlap, the sensitivity floor alone would
    put the threshold just under the lowest tumour score seen, a point that does not carry
    over to new images; with calibrated probabilities the cost cap says what a miss is
    worth and keeps the threshold where the two costs balance.
    """
    floor = choose_threshold(y_val, p_val, cfg.min_sensitivity)
    return min(floor, 1.0 / (1.0 + cfg.miss_cost))


def _set_train_mode(model: PatchTransformer, cfg: TrainConfig) -> None:
    model.train()
    frozen = frozen_part(model, cfg)
    if frozen is not None:
        frozen.eval()
        for p in frozen.parameters():
            p.requires_grad_(False)


def train(model: PatchTransformer, x_train: npt.NDArray[np.float32],
          y_train: npt.NDArray[np.int64], x_val: npt.NDArray[np.float32],
          y_val: npt.NDArray[np.int64], cfg: TrainConfig, progress: bool = True,
          bank: Tensor | None = None, device: str = "cpu",
          restored: npt.NDArray[np.float32] | None = None) -> TrainResult:
    """Train, keep the epoch with the lowest validation loss, then calibrate on validation.

    ``bank``: frozen-stem outputs of ``x_train`` already computed (``feature_bank``), e.g.
    shared by the folds of a cross-validation; computed here when absent. ``device``: where
    the training steps run; the model returned is on the CPU. ``restored``: (N, K, S, S)
    re-stored copies of ``x_train`` that augmented views may start from.
    """
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.from_numpy(x_train).unsqueeze(1)
    if restored is not None:
        check_copies(restored.shape, x_train.shape)
    copies = torch.from_numpy(restored) if restored is not None else None
    labels = torch.from_numpy(y_train).to(device)
    model.to(device)
    _set_train_mode(model, cfg)
    frozen = frozen_part(model, cfg)
    if frozen is not None and bank is None:
        bank = feature_bank(frozen, images, cfg.views, cfg, gen, progress, device, copies)
    elif frozen is None:
        bank = None
    if bank is not None:
        bank = bank.to(device)
    averaged = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                              use_buffers=True) if cfg.ema > 0 else None)
    scored: nn.Module = model if averaged is None else averaged.module
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    best: tuple[float, int, dict[str, Tensor]] = (math.inf, -1, {})
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.epochs), desc="train vision", unit="epoch", disable=not progress)
    step = 0
    for epoch in bar:
        _set_train_mode(model, cfg)
        order = torch.randperm(len(images), generator=gen)
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            at = idx.to(device)
            if bank is not None:
                view = torch.randint(1, cfg.views + 1, (len(idx),), generator=gen)
                x = bank[at, view.to(device)].float()
            else:
                source = _view_source(images[idx], copies[idx] if copies is not None else None,
                                      cfg, gen)
                x = augment(source, cfg.augment, gen).to(device)
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(step, warmup, total)
            loss = F.cross_entropy(_trainable_forward(model, cfg, x), labels[at])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(loss.item())
            step += 1
        val_logits = predict_logits(scored, x_val)
        val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(y_val)))
        val_p = softmax_with_temperature(val_logits, 1.0)[:, 1]
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                  "val_auc": roc_auc(y_val, val_p),
                  "val_acc": float(((val_p >= 0.5) == y_val).mean())}
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_loss=f"{val_loss:.3f}",
                        val_auc=f"{record['val_auc']:.4f}", val_acc=f"{record['val_acc']:.3f}")
        log.debug("epoch %s", record)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(scored.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best[1])
            break
    model.load_state_dict(best[2])
    model.to("cpu").eval()
    val_logits = predict_logits(model, x_val)
    temperature = fit_temperature(val_logits, y_val)
    val_p = softmax_with_temperature(val_logits, temperature)[:, 1]
    threshold = operating_threshold(y_val, val_p, cfg)
    return TrainResult(model, temperature, threshold, best[1], time.perf_counter() - start,
                       history)
