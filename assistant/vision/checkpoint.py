"""A trained vision model as a product: weights with everything needed to use them.

The file carries the model config, the labels, the preprocessing, the temperature and
operating threshold fitted on validation, the out-of-scope detector, and provenance (the
sha256 of the split manifest and of the data manifest record it was trained on, the
training config, the command, the measured metrics). Loading needs no training and no
other file; a file that is not such a checkpoint is refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from assistant.checkpoint_io import CheckpointError as CheckpointError  # re-exported
from assistant.checkpoint_io import read_payload, write_payload
from assistant.imaging.preprocess import PreprocessConfig
from assistant.vision.model import PatchTransformer, VisionConfig, VisionOutput
from assistant.vision.ood import BRAIN_MRI, HeaderScope, MahalanobisDetector

if TYPE_CHECKING:
    from assistant.config import Settings

FORMAT = "assistant-vision-checkpoint/1"
RELEASE_NAME = "vision-br35h"  # the release checkpoint in the weights folder: <name>.pt


@dataclass
class VisionBundle:
    model: PatchTransformer
    preprocess: PreprocessConfig
    labels: tuple[str, ...]
    temperature: float
    threshold: float
    ood: MahalanobisDetector
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the file this bundle was loaded from (or last saved to)

    @property
    def name(self) -> str:
        return str(self.provenance.get("name", "vision"))

    @property
    def header_scope(self) -> HeaderScope | None:
        """What a DICOM header may say of an image in scope: the provenance's
        ``header_scope`` if it names one, else brain MRI for a model trained on Br35H
        (the release), else no header gate."""
        named = self.provenance.get("header_scope")
        if isinstance(named, dict):
            return HeaderScope.from_dict(named)
        source = str(self.provenance.get("data_source", ""))
        return BRAIN_MRI if source.startswith("br35h") else None

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_config": self.model.config.to_dict(),
            "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "preprocess": self.preprocess.to_dict(),
            "labels": list(self.labels),
            "temperature": float(self.temperature),
            "threshold": float(self.threshold),
            "ood": {"means": torch.from_numpy(self.ood.means),
                    "precision": torch.from_numpy(self.ood.precision),
                    "threshold": self.ood.threshold, "quantile": self.ood.quantile},
            "provenance": self.provenance,
        }

    def save(self, path: Path) -> str:
        """Write the checkpoint; return (and remember) its sha256."""
        self.sha256 = write_payload(self.to_payload(), path)
        return self.sha256


def _require(payload: dict[str, Any], key: str, path: Path) -> Any:
    if key not in payload:
        raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    return payload[key]


def load_bundle(path: Path, expected_sha256: str | None = None) -> VisionBundle:
    """Load and check a checkpoint. Raises CheckpointError, never a bare unpickling error."""
    payload, digest = read_payload(path, FORMAT, "vision checkpoint",
                                   expected_sha256=expected_sha256)
    try:
        model = PatchTransformer(VisionConfig.from_dict(_require(payload, "model_config", path)))
        model.load_state_dict(_require(payload, "state_dict", path))
        ood = _require(payload, "ood", path)
        bundle = VisionBundle(
            model=model.eval(),
            preprocess=PreprocessConfig.from_dict(_require(payload, "preprocess", path)),
            labels=tuple(_require(payload, "labels", path)),
            temperature=float(_require(payload, "temperature", path)),
            threshold=float(_require(payload, "threshold", path)),
            ood=MahalanobisDetector(np.asarray(ood["means"], np.float64),
                                    np.asarray(ood["precision"], np.float64),
                                    float(ood["threshold"]), float(ood["quantile"])),
            provenance=dict(payload.get("provenance", {})),
            sha256=digest,
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint content is inconsistent: {exc}") from exc
    if len(bundle.labels) != bundle.model.config.classes:
        raise CheckpointError(f"{path}: {len(bundle.labels)} labels for "
                              f"{bundle.model.config.classes} classes")
    if not (0.0 < bundle.threshold < 1.0 and bundle.temperature > 0):
        raise CheckpointError(f"{path}: threshold {bundle.threshold} or temperature "
                              f"{bundle.temperature} out of range")
    return bundle


# --- using a bundle -------------------------------------------------------------------


@torch.no_grad()
def ood_features(model: PatchTransformer, images: torch.Tensor, batch: int = 64,
                 ) -> np.ndarray:
    """Per image: mean stem feature and mean encoded patch token, concatenated (N, D);
    computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([logits_and_scope_features(model, images[i:i + batch].to(device))[1]
                      .cpu() for i in range(0, len(images), batch)]).double().numpy()


def encode_with_scope_features(model: PatchTransformer, images: torch.Tensor,
                               keep_attention: bool = False,
                               ) -> tuple[VisionOutput, torch.Tensor]:
    """(B, 1, S, S) -> the model's output and the out-of-scope features (B, D): the mean
    stem feature and the mean encoded patch token, concatenated."""
    features = model.stem((images - 0.5) / 0.5)
    out = model.encode(features, keep_attention)
    return out, torch.cat([features.mean(dim=(2, 3)), out.tokens.mean(dim=1)], dim=1)


def logits_and_scope_features(model: PatchTransformer, images: torch.Tensor,
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, S, S) -> logits (B, C) and the out-of-scope features (B, D)."""
    out, feats = encode_with_scope_features(model, images)
    return out.logits, feats


def as_batch(images: np.ndarray) -> torch.Tensor:
    """(N, S, S) or (N, 1, S, S) float array -> (N, 1, S, S) float32 tensor."""
    x = torch.as_tensor(np.asarray(images, np.float32))
    return x.unsqueeze(1) if x.dim() == 3 else x


def predict_proba(bundle: VisionBundle, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Calibrated class probabilities (N, classes) for preprocessed images."""
    bundle.model.eval()
    x = as_batch(images)
    with torch.no_grad():
        logits = torch.cat([bundle.model(x[i:i + batch]).logits
                            for i in range(0, len(x), batch)])
    return (logits / bundle.temperature).softmax(dim=-1).double().numpy()


def release_path(settings: Settings) -> Path:
    """The release checkpoint shipped in the package's weights folder."""
    return settings.weights_dir / f"{RELEASE_NAME}.pt"
