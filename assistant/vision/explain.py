"""Heatmaps: where in the image the diagnosis came from, and checks that they mean it.

Two methods over the patch grid:

- attention rollout (Abnar & Zuidema, 2020): head-averaged attention plus the residual
  identity, renormalised and multiplied through the layers; the class token's row;
- gradient x input on the patch embeddings: how much each patch's embedding moves the
  tumour logit (a first-order attribution, signed; its positive part is kept).

Faithfulness is measured, not assumed: the deletion test masks the hottest patches first
and should drop the tumour probability faster than masking patches in random order, and
the share of heat on the brain's foreground mask should be high.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from assistant.vision.model import PatchTransformer

Method = Literal["rollout", "gradient"]


def attention_rollout(attentions: list[Tensor]) -> Tensor:
    """Per-layer attention (B, heads, T, T), class token first -> (B, T - 1) relevance."""
    joint: Tensor | None = None
    for att in attentions:
        a = att.mean(dim=1)  # (B, T, T)
        a = a + torch.eye(a.size(-1))
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    assert joint is not None, "no attention maps"
    return joint[:, 0, 1:]


def gradient_x_input(model: PatchTransformer, images: Tensor, target: int = 1) -> Tensor:
    """(B, 1, S, S) -> (B, N) positive part of grad(logit_target) * patch embedding."""
    model.eval()
    features = model.stem((images - 0.5) / 0.5).detach().requires_grad_(True)
    logits = model.encode(features).logits
    (grad,) = torch.autograd.grad(logits[:, target].sum(), features)
    relevance = (grad * features).sum(dim=1).flatten(1)  # (B, N)
    return relevance.clamp(min=0).detach()


def patch_heat(model: PatchTransformer, images: Tensor, method: Method = "gradient",
               ) -> npt.NDArray[np.float32]:
    """(B, 1, S, S) -> (B, g, g) heat normalised to [0, 1] per image."""
    if method == "rollout":
        with torch.no_grad():
            out = model(images, keep_attention=True)
        assert out.attentions is not None
        return rollout_heat(out.attentions, model.config.grid)
    return normalise_heat(gradient_x_input(model, images), model.config.grid)


def rollout_heat(attentions: list[Tensor], grid: int) -> npt.NDArray[np.float32]:
    """Attention maps of one forward pass -> (B, g, g) rollout heat in [0, 1] per image."""
    return normalise_heat(attention_rollout(attentions), grid)


def normalise_heat(heat: Tensor, g: int) -> npt.NDArray[np.float32]:
    """Patch relevance (B, N) -> (B, g, g) heat scaled to [0, 1] per image."""
    heat = heat.view(-1, g, g)
    lo = heat.flatten(1).min(dim=1).values.view(-1, 1, 1)
    hi = heat.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return ((heat - lo) / (hi - lo).clamp(min=1e-12)).numpy().astype(np.float32)


def upsample(heat: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    return np.asarray(cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC)
                      .clip(0, 1), np.float32)


def overlay(image: npt.NDArray[np.floating], heat: npt.NDArray[np.float32],
            alpha: float = 0.45) -> npt.NDArray[np.uint8]:
    """Grey image (S, S) in [0, 1] and heat (g, g) -> RGB uint8 overlay (S, S, 3)."""
    size = image.shape[0]
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    colour = cv2.applyColorMap((upsample(heat, size) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return np.asarray(cv2.addWeighted(base, 1 - alpha, colour, alpha, 0), np.uint8)


def foreground_mask(image: npt.NDArray[np.floating], threshold: float = 0.08,
                    ) -> npt.NDArray[np.bool_]:
    """The head's foreground on a preprocessed slice: thresholded, closed, holes filled."""
    raw = (image > threshold).astype(np.uint8)
    closed = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(raw)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def heat_share_in_mask(heat: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> float:
    """Fraction of the (upsampled) heat that falls inside the mask."""
    full = upsample(heat, mask.shape[0])
    total = float(full.sum())
    return float(full[mask].sum()) / total if total > 0 else float("nan")


@torch.no_grad()
def deletion_curve(model: PatchTransformer, image: Tensor, order: npt.NDArray[np.intp],
                   steps: int = 8) -> npt.NDArray[np.float32]:
    """p(tumour) as patches are zeroed in ``order`` (hottest first), ``steps`` + 1 points."""
    model.eval()
    g, p = model.config.grid, model.config.stride
    n = g * g
    counts = np.linspace(0, n, steps + 1).round().astype(int)
    batch = image.repeat(len(counts), 1, 1, 1).clone()  # (K, 1, S, S)
    for k, count in enumerate(counts):
        for idx in order[:count]:
            r, c = divmod(int(idx), g)
            batch[k, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = 0.0
    probs = model(batch).logits.softmax(dim=-1)[:, 1]
    return probs.numpy().astype(np.float32)
