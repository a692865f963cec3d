"""Images that are not brain MRI slices, for measuring out-of-scope rejection.

Real images from the fetched data (chest X-rays, CT, radiographs, ultrasound, an
abdominal MR, DICOM test patterns), the two photographs that ship inside scikit-learn,
and synthetic blank and noise images. DICOM MR files whose anatomy is unclear are left
out rather than guessed.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from assistant.data import require
from assistant.imaging import read_image

# (file, kind) of fetched DICOM objects that are certainly not brain MRI slices.
DICOM_PROBES = (
    ("CT_small.dcm", "CT (chest)"),
    ("693_UNCI.dcm", "CT (head)"),
    ("RG1_UNCI.dcm", "radiograph (chest)"),
    ("US1_UNCR.dcm", "ultrasound"),
    ("OBXXXX1A.dcm", "ultrasound"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "ultrasound"),
    ("color3d_jpeg_baseline.dcm", "ultrasound (echo)"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR (abdomen)"),
    ("mlut_18.dcm", "test pattern"),
    ("vlut_04.dcm", "test pattern"),
)


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str
    pixels: npt.NDArray[np.float32]  # reader output: (H, W) or (H, W, 3) in [0, 1]


def _synthetic(seed: int = 0) -> list[Probe]:
    rng = np.random.default_rng(seed)
    size = (256, 256)
    grad = np.tile(np.linspace(0, 1, size[1], dtype=np.float32), (size[0], 1))
    return [
        Probe("blank-black", "blank", np.zeros(size, np.float32)),
        Probe("blank-grey", "blank", np.full(size, 0.5, np.float32)),
        Probe("noise-uniform", "noise", rng.random(size, dtype=np.float32)),
        Probe("noise-gaussian", "noise",
              np.clip(rng.normal(0.5, 0.2, size), 0, 1).astype(np.float32)),
        Probe("noise-rgb", "noise", rng.random((*size, 3), dtype=np.float32)),
        Probe("gradient", "synthetic", grad),
    ]


def _photographs() -> list[Probe]:
    """The two JPEG photographs (a temple, a flower) that scikit-learn's wheel carries."""
    folder = Path(str(importlib.resources.files("sklearn.datasets") / "images"))
    return [Probe(p.name, "photograph", read_image(p).pixels)
            for p in sorted(folder.glob("*.jpg"))]


def out_of_scope_probes(data_dir: Path) -> list[Probe]:
    probes = [Probe(p.name, "chest X-ray (Kermany)", read_image(p).pixels)
              for p in sorted(require(data_dir, "kermany"))]
    dicom = {p.name: p for p in require(data_dir, "dicom") | require(data_dir, "dicom-extra")}
    probes += [Probe(name, kind, read_image(dicom[name]).pixels) for name, kind in DICOM_PROBES]
    return probes + _photographs() + _synthetic()
