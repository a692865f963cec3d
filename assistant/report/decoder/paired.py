"""Image-conditioned training from a user's own paired images and reports.

A paired set is a CSV with the columns ``image`` (a PNG, JPEG or DICOM path, relative to
the CSV's folder), ``findings`` and ``impression`` (the report), and optionally ``codes``
(finding codes separated by ``;``, as in ``Opacity/lung/base/left;Cardiomegaly/mild``)
and ``indication``. Each image goes through the vision model's encoder, frozen; its
patch tokens join the decoder's memory, and the decoder learns their projection.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from assistant.config import Settings
from assistant.data.manifest import DataError
from assistant.imaging import read_image
from assistant.report.decoder.data import Finding
from assistant.report.decoder.train import Example
from assistant.vision.checkpoint import VisionBundle, as_batch
from assistant.vision.infer import VisionModel

REQUIRED = ("image", "findings", "impression")


@dataclass(frozen=True)
class PairRow:
    image: Path
    findings: tuple[Finding, ...]
    indication: str
    target: str


def read_pairs(path: Path) -> list[PairRow]:
    """The rows of a paired-set CSV; a missing column or file is a clear DataError."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; a paired set needs "
                                f"{list(REQUIRED)} and may have codes, indication")
            rows = list(reader)
    except OSError as exc:
        raise DataError(f"cannot read paired set {path}: {exc}") from exc
    out = []
    for n, row in enumerate(rows, start=2):
        image = (path.parent / row["image"]).resolve()
        if not image.is_file():
            raise DataError(f"{path}, line {n}: image {row['image']!r} does not exist")
        try:
            codes = tuple(Finding.from_code(c) for c in (row.get("codes") or "").split(";")
                          if c.strip())
        except ValueError as exc:
            raise DataError(f"{path}, line {n}: {exc}") from exc
        target = " ".join(t.strip() for t in (row["findings"], row["impression"]) if t.strip())
        if not target:
            raise DataError(f"{path}, line {n}: the report (findings, impression) is empty")
        out.append(PairRow(image, codes, (row.get("indication") or "").strip(), target))
    return out


@torch.no_grad()
def image_tokens(vision: VisionBundle, paths: Sequence[Path], settings: Settings,
                 batch: int = 16) -> torch.Tensor:
    """(N, P, width) encoded patch tokens of the vision model for each image."""
    model = VisionModel(vision)
    out = []
    for i in range(0, len(paths), batch):
        pixels = [model.prepare(read_image(p, settings.limits).pixels)
                  for p in paths[i:i + batch]]
        out.append(vision.model(as_batch(np.stack(pixels))).tokens)
    return torch.cat(out)


def paired_examples(rows: Sequence[PairRow], tokens: torch.Tensor) -> list[Example]:
    return [Example(r.findings, r.indication, r.target, tokens[i])
            for i, r in enumerate(rows)]
