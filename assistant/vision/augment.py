"""Augmentation suited to axial MRI slices, batched in torch.

Geometry: left-right flip (tumours occur on either side), small rotations, scaling and
shifts (head position and field of view vary between scanners). Intensity: gamma,
contrast and brightness (sequences and windowing vary), mild noise. No vertical flips or
large rotations: an upside-down slice is not a plausible input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06
    gamma: tuple[float, float] = (0.8, 1.25)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.05
    noise_std: float = 0.02


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment(images: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """images: (B, C, S, S) in [0, 1] -> an augmented copy, same shape, in [0, 1]."""
    b = images.size(0)
    angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180
    scale = _uniform(b, *cfg.scale, gen)
    flip = torch.where(torch.rand(b, generator=gen) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, _uniform(b, -cfg.shift, cfg.shift, gen)], dim=1),
        torch.stack([sin * flip, cos, _uniform(b, -cfg.shift, cfg.shift, gen)], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    shape = (b, 1, 1, 1)
    gamma = _uniform(b, *cfg.gamma, gen).view(shape)
    out = out.clamp(0, 1) ** gamma
    out = out * _uniform(b, *cfg.contrast, gen).view(shape)
    out = out + _uniform(b, -cfg.brightness, cfg.brightness, gen).view(shape)
    noise = torch.randn(out.shape, generator=gen) * _uniform(b, 0, cfg.noise_std, gen).view(shape)
    return (out + noise).clamp(0, 1)
