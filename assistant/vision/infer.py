"""From reader pixels to a diagnosis: preprocessing from the checkpoint, the scope checks,
the calibrated probability at the stored threshold, and optionally the heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from assistant.imaging.preprocess import preprocess
from assistant.vision.checkpoint import VisionBundle, as_batch
from assistant.vision.explain import Method, patch_heat
from assistant.vision.ood import image_gate


@dataclass(frozen=True)
class Diagnosis:
    in_scope: bool
    scope_reason: str | None  # why the image is out of scope, if it is
    label: str | None  # None when out of scope: no diagnosis is given
    probability: float | None  # calibrated probability of the positive class
    threshold: float
    ood_distance: float | None
    heat: npt.NDArray[np.float32] | None = None  # (g, g) in [0, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"in_scope": self.in_scope, "scope_reason": self.scope_reason,
                "label": self.label, "probability": self.probability,
                "threshold": self.threshold, "ood_distance": self.ood_distance}


class VisionModel:
    """A loaded bundle, ready to diagnose batches of images."""

    def __init__(self, bundle: VisionBundle, heat_method: Method = "gradient") -> None:
        self.bundle = bundle
        self.heat_method = heat_method
        bundle.model.eval()

    def prepare(self, pixels: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        return preprocess(pixels.astype(np.float32, copy=False), self.bundle.preprocess)

    @torch.no_grad()
    def _scores(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        model, b = self.bundle.model, self.bundle
        features = model.stem((x - 0.5) / 0.5)
        out = model.encode(features)
        feats = torch.cat([features.mean(dim=(2, 3)), out.tokens.mean(dim=1)], dim=1)
        probs = (out.logits / b.temperature).softmax(dim=-1)[:, 1]
        return probs.double().numpy(), b.ood.distance(feats.double().numpy())

    def diagnose(self, images: Sequence[npt.NDArray[np.float32]], heatmap: bool = False,
                 ) -> list[Diagnosis]:
        """Preprocessed images (S, S) -> one Diagnosis each."""
        b = self.bundle
        gates = [image_gate(img) for img in images]
        ok = [i for i, g in enumerate(gates) if g.ok]
        probs: dict[int, float] = {}
        dists: dict[int, float] = {}
        heats: dict[int, npt.NDArray[np.float32]] = {}
        if ok:
            x = as_batch(np.stack([images[i] for i in ok]))
            p, d = self._scores(x)
            probs, dists = dict(zip(ok, p.tolist(), strict=True)), dict(zip(ok, d.tolist(),
                                                                          strict=True))
            if heatmap:
                heats = dict(zip(ok, patch_heat(b.model, x, self.heat_method), strict=True))
        out = []
        for i, gate in enumerate(gates):
            if not gate.ok:
                out.append(Diagnosis(False, gate.reason, None, None, b.threshold, None))
                continue
            if dists[i] > b.ood.threshold:
                reason = (f"the image is unlike the brain MRI slices the model was trained on "
                          f"(feature distance {dists[i]:.1f} > {b.ood.threshold:.1f})")
                out.append(Diagnosis(False, reason, None, None, b.threshold, dists[i]))
                continue
            label = b.labels[1] if probs[i] >= b.threshold else b.labels[0]
            out.append(Diagnosis(True, None, label, probs[i], b.threshold, dists[i],
                                 heats.get(i)))
        return out
