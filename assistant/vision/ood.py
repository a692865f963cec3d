"""Knowing what the model does not know: is this image a brain MRI slice like the ones
it was trained on?

Gates, all of which must pass for ``in_scope``:

0. the DICOM header, where the file has one (``HeaderScope``): a file whose Modality or
   BodyPartExamined says it is another kind of image (a CT, a chest) is refused before
   the model is asked, whatever its pixels look like;
1. image statistics: a blank, nearly constant or pure-noise image is refused before the
   model is asked (no content, or no spatial structure: neighbouring pixels uncorrelated);
2. feature distance: the Mahalanobis distance of the image's mean encoded patch token to
   the training images (class-conditional means, shared covariance; Lee et al., 2018,
   "A Simple Unified Framework for Detecting Out-of-Distribution Samples"). The cut-off is
   a high quantile of the distances of in-domain *validation* images, so the false
   rejection rate is set on data the detector was not fitted on;
3. polarity (``Pipeline``): an image with a bright background whose negative lies closer
   to the training images than the image itself is refused as inverted (a photographic
   negative, or MONOCHROME1 read as MONOCHROME2 upstream), since the feature distance
   alone passes about half of the negatives of the Br35H images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MIN_CONTENT_STD = 0.02  # below this the preprocessed image is blank
MIN_NEIGHBOUR_CORR = 0.3  # a real slice is smooth at the pixel scale; noise is not


@dataclass(frozen=True)
class ImageGate:
    ok: bool
    reason: str | None


def image_gate(image: npt.NDArray[np.floating[Any]]) -> ImageGate:
    """Statistics of a preprocessed grey image (S, S) in [0, 1]."""
    x = image.astype(np.float64)
    if x.std() < MIN_CONTENT_STD:
        return ImageGate(False, "the image is blank or nearly constant")
    a, b = x[:, :-1].ravel(), x[:, 1:].ravel()
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    if corr < MIN_NEIGHBOUR_CORR:
        return ImageGate(False, f"the image looks like noise (neighbour correlation {corr:.2f})")
    return ImageGate(True, None)


BRIGHT_BACKGROUND = 0.5  # median of the frame's outer band, grey levels in [0, 1]


def bright_background(pixels: npt.NDArray[np.floating[Any]]) -> bool:
    """Whether the median of the outer twenty-fifth of the frame on each side is bright:
    an MRI slice's background is dark, a negative's is not (nor a figure on a white page,
    which the polarity gate then tells apart)."""
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=-1)
    h, w = grey.shape
    bh, bw = max(1, h // 25), max(1, w // 25)
    band = np.concatenate([grey[:bh].ravel(), grey[-bh:].ravel(),
                           grey[:, :bw].ravel(), grey[:, -bw:].ravel()])
    return bool(np.median(band) > BRIGHT_BACKGROUND)


@dataclass(frozen=True)
class HeaderScope:
    """What a DICOM header may say of an image in the model's scope. PNG and JPEG files,
    and headers without the attributes, pass: the other gates decide."""

    modalities: frozenset[str]  # Modality values accepted ("OT", other: secondary captures)
    excluded_body_parts: frozenset[str]  # BodyPartExamined values refused
    description: str  # what the model was trained on, for the reason given

    def reason(self, modality: str | None, body_part: str | None) -> str | None:
        """Why the header puts the image out of scope; None when it does not."""
        if modality and modality.strip().upper() not in self.modalities:
            return (f"the DICOM header gives modality {modality.strip()}; the model was "
                    f"trained on {self.description} only")
        part = (body_part or "").strip().upper().replace(" ", "")
        if part in self.excluded_body_parts:
            return (f"the DICOM header gives body part {body_part}; the model was trained "
                    f"on {self.description} only")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"modalities": sorted(self.modalities),
                "excluded_body_parts": sorted(self.excluded_body_parts),
                "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeaderScope:
        return cls(frozenset(data["modalities"]), frozenset(data["excluded_body_parts"]),
                   str(data["description"]))


# Br35H: axial brain MRI slices. Body parts from DICOM's defined terms (PS3.16 CID 4031)
# that are not the head; a vendor's own term for the head ("KOPF", "HEAD_ROUTINE") passes.
BRAIN_MRI = HeaderScope(
    frozenset({"MR", "OT"}),
    frozenset({"CHEST", "THORAX", "LUNG", "HEART", "BREAST", "ABDOMEN", "PELVIS",
               "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDPELVIS", "LIVER", "KIDNEY",
               "PROSTATE", "SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "COCCYX",
               "EXTREMITY", "ARM", "LEG", "HAND", "FOOT", "KNEE", "HIP", "SHOULDER",
               "ELBOW", "WRIST", "ANKLE", "FEMUR", "TIBIA", "HUMERUS", "CLAVICLE", "RIB",
               "SCAPULA", "AORTA", "ABDOMINALAORTA", "THORACICAORTA", "COLON", "STOMACH",
               "BLADDER", "UTERUS", "OVARY", "TESTIS", "PANCREAS", "GALLBLADDER", "SPLEEN",
               "NECK", "THYROID"}),
    "axial brain MRI slices")


@dataclass(frozen=True)
class MahalanobisDetector:
    means: FloatArray  # (classes, D)
    precision: FloatArray  # (D, D) inverse of the shared covariance
    threshold: float  # distances above this are out of scope
    quantile: float

    @classmethod
    def fit(cls, features: FloatArray, labels: npt.NDArray[np.int64],
            val_features: FloatArray, quantile: float = 0.995,
            shrinkage: float = 1e-3) -> MahalanobisDetector:
        """Fit means and covariance on training features; set the cut-off on validation."""
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        cov = centred.T @ centred / len(features)
        cov += shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        precision = np.linalg.inv(cov)
        probe = cls(means, precision, np.inf, quantile)
        threshold = float(np.quantile(probe.distance(val_features), quantile))
        return cls(means, precision, threshold, quantile)

    def distance(self, features: FloatArray) -> FloatArray:
        """Minimum over classes of the Mahalanobis distance, per row."""
        diffs = features[:, None, :] - self.means[None, :, :]  # (N, classes, D)
        d2 = np.einsum("ncd,de,nce->nc", diffs, self.precision, diffs)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def in_scope(self, features: FloatArray) -> npt.NDArray[np.bool_]:
        return self.distance(features) <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"means": self.means.tolist(), "precision": self.precision.tolist(),
                "threshold": self.threshold, "quantile": self.quantile}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MahalanobisDetector:
        return cls(np.asarray(data["means"], np.float64),
                   np.asarray(data["precision"], np.float64),
                   float(data["threshold"]), float(data["quantile"]))
