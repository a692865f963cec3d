"""From reader pixels to a diagnosis: preprocessing from the checkpoint, the scope checks,
the calibrated probability at the stored threshold, and optionally the heatmap."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from assistant.imaging import ImageMeta
from assistant.imaging.preprocess import preprocess
from assistant.vision.checkpoint import (
    VisionBundle,
    as_batch,
    encode_with_scope_features,
    logits_and_scope_features,
)
from assistant.vision.explain import Method, attention_rollout, normalise_heat, patch_heat
from assistant.vision.ood import ImageGate, bright_background, image_gate


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


class _Scorer(torch.nn.Module):
    """Calibrated probabilities and out-of-scope features in one pass (traceable)."""

    def __init__(self, bundle: VisionBundle) -> None:
        super().__init__()
        self.model = bundle.model
        self.temperature = bundle.temperature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = logits_and_scope_features(self.model, x)
        return self.calibrated(logits), feats

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled probability of the positive class."""
        return (logits / self.temperature).softmax(dim=-1)[:, 1]


class _RolloutScorer(_Scorer):
    """Probabilities, out-of-scope features and the attention rollout's patch relevance
    (B, N) in one pass (traceable): what ``_Scorer`` and the rollout heatmap would take two
    passes for."""

    def forward(  # type: ignore[override]
            self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, feats = encode_with_scope_features(self.model, x, keep_attention=True)
        assert out.attentions is not None
        return self.calibrated(out.logits), feats, attention_rollout(out.attentions)


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """The module's 4-d weights in channels-last order, in place (values unchanged)."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def compile_scorer(bundle: VisionBundle, mkldnn: bool = False, rollout: bool = False
                   ) -> torch.nn.Module:
    """TorchScript-traced and frozen scorer (batch norms folded; batch size stays free) on a
    channels-last copy of the model, so oneDNN's convolutions take the activations as they
    are. ``mkldnn`` adds ``torch.jit.optimize_for_inference`` instead (the earlier path):
    its opaque MKL-DNN tensors go back to dense and return around each of the stem's four
    TensorFlow 'same' pads, a third of the time at batch 32 (``scripts/bench_vision.py``
    measures both). ``rollout``: the scorer that also returns the rollout relevance
    (``_RolloutScorer``). A traced scorer runs its whole graph without Python's GIL."""
    size = bundle.model.config.image_size
    example = torch.rand(2, bundle.model.config.in_channels, size, size)
    scorer = _RolloutScorer(bundle) if rollout else _Scorer(bundle)
    scorer.model = copy.deepcopy(bundle.model).eval()
    if not mkldnn:
        channels_last(scorer)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(scorer.eval(), example, check_trace=False))
        return torch.jit.optimize_for_inference(frozen) if mkldnn else frozen


class VisionModel:
    """A loaded bundle, ready to diagnose batches of images."""

    def __init__(self, bundle: VisionBundle, heat_method: Method = "rollout",
                 fast: bool = False) -> None:
        """``fast``: the scorer traced and frozen (``compile_scorer``), and with the rollout
        heatmap the one-pass rollout scorer too; outputs within 1e-5 of the eager model's
        (``tests/vision/test_release.py`` compares them on the release)."""
        self.bundle = bundle
        self.heat_method = heat_method
        # channels-last convolutions: the eager stem at batch 8 about a quarter faster here
        channels_last(bundle.model.eval())
        self.scorer: torch.nn.Module = compile_scorer(bundle) if fast else _Scorer(bundle)
        self.rollout_scorer: torch.nn.Module = (
            compile_scorer(bundle, rollout=True) if fast and heat_method == "rollout"
            else _RolloutScorer(bundle))

    def prepare(self, pixels: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        return preprocess(pixels.astype(np.float32, copy=False), self.bundle.preprocess)

    @torch.no_grad()
    def _scores(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        probs, feats = self.scorer(x)
        return probs.double().numpy(), self.bundle.ood.distance(feats.double().numpy())

    @torch.no_grad()
    def _scores_and_rollout(self, x: torch.Tensor
                            ) -> tuple[np.ndarray, np.ndarray, npt.NDArray[np.float32]]:
        """Probabilities, out-of-scope distances and rollout heat from one forward pass
        (what ``_scores`` and ``patch_heat`` compute with two)."""
        probs, feats, relevance = self.rollout_scorer(x)
        return (probs.double().numpy(), self.bundle.ood.distance(feats.double().numpy()),
                normalise_heat(relevance, self.bundle.model.config.grid))

    def diagnose(self, images: Sequence[npt.NDArray[np.float32]], heatmap: bool = False,
                 refused: Sequence[str | None] | None = None) -> list[Diagnosis]:
        """Preprocessed images (S, S) -> one Diagnosis each. ``refused``: per image, a
        reason found before the pixels (its DICOM header, ``header_reasons``) to give it
        no diagnosis; the model does not see such an image."""
        b = self.bundle
        gates = [ImageGate(False, r) if r else image_gate(img)
                 for img, r in zip(images, refused or [None] * len(images), strict=True)]
        ok = [i for i, g in enumerate(gates) if g.ok]
        probs: dict[int, float] = {}
        dists: dict[int, float] = {}
        heats: dict[int, npt.NDArray[np.float32]] = {}
        if ok:
            x = as_batch(np.stack([images[i] for i in ok]))
            h: npt.NDArray[np.float32] | None
            if heatmap and self.heat_method == "rollout":
                p, d, h = self._scores_and_rollout(x)  # one forward pass for all three
            else:
                p, d = self._scores(x)
                h = patch_heat(b.model, x, self.heat_method) if heatmap else None
            probs, dists = dict(zip(ok, p.tolist(), strict=True)), dict(zip(ok, d.tolist(),
                                                                          strict=True))
            if h is not None:
                heats = dict(zip(ok, h, strict=True))
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

    def header_reasons(self, metas: Sequence[ImageMeta]) -> list[str | None]:
        """Per image, why its DICOM header puts it out of the model's scope, if it does."""
        scope = self.bundle.header_scope
        return [None if scope is None else scope.reason(m.modality, m.body_part)
                for m in metas]

    def refuse_negatives(self, pixels: Sequence[npt.NDArray[np.floating[Any]]],
                         diagnoses: Sequence[Diagnosis]) -> list[Diagnosis]:
        """``diagnoses``, with each image in scope that looks like a negative refused: its
        background is bright (``bright_background``) and its inverted grey levels lie
        closer to the training images than its own. Only such images pay for a second
        pass. Over the 3,000 Br35H images this refuses 2 (figures on a white page, both in
        training folds) and none of the 444 test-fold images; of their negatives, the
        1,508 that the feature distance passed with a bright background are all refused."""
        suspects = [i for i, (p, d) in enumerate(zip(pixels, diagnoses, strict=True))
                    if d.in_scope and d.ood_distance is not None and bright_background(p)]
        if not suspects:
            return list(diagnoses)
        x = as_batch(np.stack([self.prepare(1.0 - pixels[i]) for i in suspects]))
        _, inverted = self._scores(x)
        out = list(diagnoses)
        for i, d_inv in zip(suspects, inverted.tolist(), strict=True):
            d = diagnoses[i]
            assert d.ood_distance is not None
            if d_inv < d.ood_distance:
                reason = ("the image looks like a negative (inverted grey levels): its "
                          "background is bright, and inverted it is closer to the images the "
                          f"model was trained on (feature distance {d_inv:.1f} against "
                          f"{d.ood_distance:.1f})")
                out[i] = Diagnosis(False, reason, None, None, d.threshold, d.ood_distance)
        return out
