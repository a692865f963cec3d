"""Knowing what the model does not know: is this image a brain MRI slice like the ones
it was trained on?

Two gates, both of which must pass for ``in_scope``:

1. image statistics: a blank, nearly constant or pure-noise image is refused before the
   model is asked (no content, or no spatial structure: neighbouring pixels uncorrelated);
2. feature distance: the Mahalanobis distance of the image's mean encoded patch token to
   the training images (class-conditional means, shared covariance; Lee et al., 2018,
   "A Simple Unified Framework for Detecting Out-of-Distribution Samples"). The cut-off is
   a high quantile of the distances of in-domain *validation* images, so the false
   rejection rate is set on data the detector was not fitted on.
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
