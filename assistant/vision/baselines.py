"""Baselines trained on the same split as our model, so their figures print beside ours.

- **Naive GPT-2 over patches**: the approach this kind of system is often shown with. Raw
  pixels of each 16 x 16 patch, flattened in row-major patch order, a linear layer into
  a GPT-2 built from its config (causal self-attention, learned positions, no pretrained
  weights), and a linear head on the last token's hidden state: with causal attention
  that is the only token that has seen every patch. Plain Adam at 1e-4 for 10 epochs,
  no augmentation, no scheduler, no early stopping, no calibration: the naive recipe on
  purpose. The issue's author measured 74.7% accuracy / 0.773 AUC for it.
- **Logistic regression on downsampled pixels**: the image area-averaged to 32 x 32,
  standardised with the training mean and std, and an L2-regularised logistic loss
  minimised full-batch by L-BFGS (in torch; sklearn is only a transitive dependency).

Neither baseline has a calibration or threshold-selection step, so both are read at the
fixed threshold ``BASELINE_THRESHOLD`` = 0.5 on p(tumour), the argmax of their outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm
from transformers import GPT2Config, GPT2Model

from assistant.vision.data import Dataset

log = logging.getLogger(__name__)

FloatImages = npt.NDArray[np.float32]  # (N, S, S) preprocessed, values in [0, 1]
Labels = npt.NDArray[np.int64]  # (N,) 0 = no tumour, 1 = tumour
Probabilities = npt.NDArray[np.float64]  # (N,) p(tumour)

BASELINE_THRESHOLD = 0.5  # no calibration step in either recipe: read at the argmax
GPT2_NAME = "naive GPT-2 over patches"
LOGISTIC_NAME = "logistic regression 32x32"
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# ---------------------------------------------------------------- naive GPT-2


@dataclass(frozen=True)
class NaiveGPT2Config:
    """A GPT-2 of reduced size over raw pixel patches.

    The default GPT-2 (124M parameters: 12 layers, 12 heads, width 768) cannot train 10
    epochs on the ~2,000 training images within an evaluation run on a 2-core CPU, so
    this baseline keeps GPT-2's architecture (pre-norm blocks, GELU MLP of 4 x width,
    learned positions, causal attention, dropout 0.1) at 4 layers, 4 heads and width
    256 (about 3.2M parameters). It is therefore a smaller model than "GPT-2" usually
    means; its figures are those of this size, not of the 124M model.
    """

    image_size: int = 128
    patch_size: int = 16
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1  # GPT-2's resid / embd / attn pdrop
    classes: int = 2

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def gpt2_config(self) -> GPT2Config:
        """The transformers config. vocab_size is 1: tokens come in as ``inputs_embeds``,
        so the word-embedding table is never read and need not hold 50,257 rows (nor
        are there begin / end tokens)."""
        return GPT2Config(vocab_size=1, n_positions=self.num_patches, n_embd=self.n_embd,
                          n_layer=self.n_layer, n_head=self.n_head,
                          resid_pdrop=self.dropout, embd_pdrop=self.dropout,
                          attn_pdrop=self.dropout, use_cache=False,
                          bos_token_id=None, eos_token_id=None)


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p): raw pixel patches in row-major order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


class NaiveGPT2Classifier(nn.Module):
    """Flattened pixel patches -> linear -> GPT-2 (causal) -> linear head on the last token."""

    def __init__(self, cfg: NaiveGPT2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.patch_size**2, cfg.n_embd)
        self.gpt2 = GPT2Model(cfg.gpt2_config())  # from config: random weights, no hub
        self.head = nn.Linear(cfg.n_embd, cfg.classes)

    def hidden_states(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) images -> (B, T, n_embd) final hidden states, one per patch."""
        size = self.cfg.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, size, size):
            raise ValueError(f"expected images of shape (B, 1, {size}, {size}), "
                             f"got {tuple(x.shape)}")
        tokens = self.embed(patchify(x, self.cfg.patch_size))  # (B, T, n_embd)
        out = self.gpt2(inputs_embeds=tokens, use_cache=False)
        return out.last_hidden_state  # (B, T, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) images -> (B, classes) logits from the last token alone."""
        return self.head(self.hidden_states(x)[:, -1])  # (B, classes)


def _as_batch(images: FloatImages | Tensor) -> Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    return x.unsqueeze(1) if x.dim() == 3 else x  # (N, 1, S, S)


def train_naive_gpt2(x_train: FloatImages, y_train: Labels, cfg: NaiveGPT2Config,
                     epochs: int = 10, lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
                     progress: bool = True) -> NaiveGPT2Classifier:
    """The naive recipe: plain Adam at ``lr`` for ``epochs`` epochs of shuffled
    mini-batches, nothing else (no augmentation, scheduler, early stopping or
    validation). Deterministic for a seed on the same machine and thread count."""
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(x_train)} images "
                         f"and {len(y_train)} labels")
    torch.manual_seed(seed)  # the weights and dropout
    gen = torch.Generator().manual_seed(seed)  # the batch order
    model = NaiveGPT2Classifier(cfg)
    images, labels = _as_batch(x_train), torch.as_tensor(y_train, dtype=torch.int64)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    bar = tqdm(range(epochs), desc="naive GPT-2", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(images):.4f}")
        log.debug("naive GPT-2 epoch %d: train loss %.4f", epoch, total / len(images))
    model.eval()
    return model


@torch.no_grad()
def predict_proba_gpt2(model: NaiveGPT2Classifier, x: FloatImages | Tensor,
                       batch: int = 64) -> Probabilities:
    """p(tumour) (N,) for images (N, S, S) or (N, 1, S, S); softmax, no temperature."""
    model.eval()
    images = _as_batch(x)
    logits = [model(images[i:i + batch]) for i in range(0, len(images), batch)]
    return torch.softmax(torch.cat(logits), dim=1)[:, 1].double().numpy()


# ---------------------------------------------------------------- logistic regression


def downsample(x: FloatImages, size: int = 32) -> npt.NDArray[np.float32]:
    """(N, S, S) images -> (N, size * size) pixels area-averaged (cv2.INTER_AREA)."""
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, S, S), got {x.shape}")
    out = np.empty((len(x), size * size), dtype=np.float32)
    for i, img in enumerate(x):
        small = cv2.resize(np.asarray(img, np.float32), (size, size),
                           interpolation=cv2.INTER_AREA)
        out[i] = small.reshape(-1)
    return out


@dataclass(frozen=True)
class LogisticModel:
    """p(tumour) = sigmoid(((downsample(x) - mean) / std) @ weight + bias)."""

    size: int
    mean: npt.NDArray[np.float64]  # (size * size,)
    std: npt.NDArray[np.float64]  # (size * size,), constant features divided by 1
    weight: npt.NDArray[np.float64]  # (size * size,)
    bias: float
    l2: float
    loss_history: tuple[float, ...]  # the objective before and after each L-BFGS iteration


def _objective(z: Tensor, y: Tensor, w: Tensor, b: Tensor, l2: float) -> Tensor:
    """Mean logistic loss plus (l2 / 2) ||w||^2; the bias is not penalised."""
    return F.binary_cross_entropy_with_logits(z @ w + b, y) + 0.5 * l2 * (w @ w)


def _fit_lbfgs(z: Tensor, y: Tensor, l2: float, max_iter: int,
               ) -> tuple[Tensor, Tensor, list[float]]:
    """Full-batch L-BFGS (strong Wolfe line search), one iteration per ``step`` so the
    objective after each iteration is recorded; stops when it changes by < 1e-10."""
    w = torch.zeros(z.shape[1], dtype=z.dtype, requires_grad=True)
    b = torch.zeros((), dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=1, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _objective(z, y, w, b, l2)
        loss.backward()
        return loss

    with torch.no_grad():
        history = [float(_objective(z, y, w, b, l2))]
    for _ in range(max_iter):
        opt.step(closure)
        with torch.no_grad():
            history.append(float(_objective(z, y, w, b, l2)))
        if abs(history[-2] - history[-1]) < 1e-10:
            break
    return w.detach(), b.detach(), history


def _fit_logistic(features: npt.NDArray[np.float32], y: Labels, size: int, l2: float,
                  max_iter: int) -> LogisticModel:
    feats = features.astype(np.float64)
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)  # constant pixels (e.g. background corners)
    z = torch.from_numpy((feats - mean) / std)
    w, b, history = _fit_lbfgs(z, torch.as_tensor(y, dtype=torch.float64), l2, max_iter)
    log.debug("logistic l2=%g: %d iterations, objective %.5f -> %.5f", l2,
              len(history) - 1, history[0], history[-1])
    return LogisticModel(size, mean, std, w.numpy(), float(b), l2, tuple(history))


def _proba_features(model: LogisticModel, features: npt.NDArray[np.float32]) -> Probabilities:
    z = (features.astype(np.float64) - model.mean) / model.std
    logits = z @ model.weight + model.bias
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def _log_loss(y: Labels, p: Probabilities) -> float:
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1.0 - q)))


def train_logistic(x_train: FloatImages, y_train: Labels, size: int = 32, l2: float = 1e-3,
                   seed: int = 0, x_val: FloatImages | None = None,
                   y_val: Labels | None = None, max_iter: int = 200) -> LogisticModel:
    """Logistic regression on ``size`` x ``size`` downsampled pixels.

    With a validation set, ``l2`` is chosen from ``L2_GRID`` by the best validation
    log-loss (``l2`` is then ignored); without one, ``l2`` is used as given. The fit is
    full-batch and starts from zero weights, so it is deterministic; ``seed`` only sets
    torch's generator for symmetry with the other baseline."""
    if len(x_train) != len(y_train) or len(x_train) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(x_train)} images "
                         f"and {len(y_train)} labels")
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val, or neither")
    torch.manual_seed(seed)
    train_feats = downsample(x_train, size)
    if x_val is None or y_val is None or len(x_val) == 0:
        return _fit_logistic(train_feats, y_train, size, l2, max_iter)
    val_feats = downsample(x_val, size)
    best: tuple[float, LogisticModel] | None = None
    for candidate in L2_GRID:
        model = _fit_logistic(train_feats, y_train, size, candidate, max_iter)
        loss = _log_loss(y_val, _proba_features(model, val_feats))
        log.info("logistic regression l2=%g: validation log-loss %.4f", candidate, loss)
        if best is None or loss < best[0]:
            best = (loss, model)
    assert best is not None
    log.info("logistic regression: chose l2=%g", best[1].l2)
    return best[1]


def predict_proba_logistic(model: LogisticModel, x: FloatImages) -> Probabilities:
    """p(tumour) (N,) for preprocessed images (N, S, S)."""
    return _proba_features(model, downsample(x, model.size))


# ---------------------------------------------------------------- both, on one split


def run_baselines(dataset: Dataset, eval_mask: npt.NDArray[np.bool_],
                  train_mask: npt.NDArray[np.bool_], val_mask: npt.NDArray[np.bool_],
                  progress: bool = True, *, gpt2_cfg: NaiveGPT2Config | None = None,
                  epochs: int = 10, seed: int = 0) -> dict[str, Probabilities]:
    """p(tumour) on the ``eval_mask`` images for each baseline, by name.

    Both train on the ``train_mask`` images (the same as our model). The naive GPT-2
    recipe uses no validation set; the logistic regression uses ``val_mask`` only to
    choose its L2 strength. Read both at ``BASELINE_THRESHOLD``."""
    if np.any(eval_mask & (train_mask | val_mask)):
        raise ValueError("eval_mask overlaps the training or validation images")
    cfg = gpt2_cfg or NaiveGPT2Config(image_size=dataset.images.shape[-1])
    x_train, y_train = dataset.images[train_mask], dataset.labels[train_mask]
    x_eval = dataset.images[eval_mask]
    log.info("baselines: %d training, %d validation, %d evaluation images",
             len(x_train), int(val_mask.sum()), len(x_eval))
    gpt2 = train_naive_gpt2(x_train, y_train, cfg, epochs=epochs, seed=seed,
                            progress=progress)
    has_val = bool(val_mask.any())
    logistic = train_logistic(x_train, y_train, seed=seed,
                              x_val=dataset.images[val_mask] if has_val else None,
                              y_val=dataset.labels[val_mask] if has_val else None)
    return {GPT2_NAME: predict_proba_gpt2(gpt2, x_eval),
            LOGISTIC_NAME: predict_proba_logistic(logistic, x_eval)}


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters, for the log line beside the figures."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "BASELINE_THRESHOLD", "GPT2_NAME", "L2_GRID", "LOGISTIC_NAME", "LogisticModel",
    "NaiveGPT2Classifier", "NaiveGPT2Config", "downsample", "parameter_count", "patchify",
    "predict_proba_gpt2", "predict_proba_logistic", "run_baselines", "train_logistic",
    "train_naive_gpt2",
]
