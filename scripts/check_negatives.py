"""Negatives and foreign DICOM headers through the pipeline's scope gates.

For every Br35H image (all folds, since the gates are fitted on none of them) and for its
negative (grey levels inverted, as a photographic negative or a MONOCHROME1 image read as
MONOCHROME2 upstream), stored as PNG: how many the pipeline takes as in scope, and why it
refuses the others, per fold. Then the test fold wrapped as DICOM with the header of
another modality or body part (each must be refused by its header). Prints counts; the
in-domain refusals are what the polarity gate costs.

    .venv/bin/python scripts/check_negatives.py [--folds test] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.config import Settings  # noqa: E402
from assistant.data import require  # noqa: E402
from assistant.imaging import read_image  # noqa: E402
from assistant.pipeline import Pipeline  # noqa: E402
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest  # noqa: E402
from tests.encodings import dicom, grey_levels  # noqa: E402

BATCH = 32
FOREIGN = (("CT", None), ("CR", None), ("US", None), ("MR", "CHEST"), ("MR", "KNEE"))


def _png(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.round(grey * 255).astype(np.uint8))
    assert ok
    return data.tobytes()


def _reason(reason: str | None) -> str:
    if reason is None:
        return "in scope"
    for key in ("negative", "modality", "body part", "unlike", "blank", "noise"):
        if key in reason:
            return key
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folds", nargs="*", help="folds to read (default: all)")
    ap.add_argument("--limit", type=int, help="images per fold at most")
    args = ap.parse_args()
    settings = Settings()
    require(settings.data_dir, "br35h")
    pipeline = Pipeline.from_settings(settings, citations=False)
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH)
            if not args.folds or r.fold in args.folds]
    per_fold: dict[str, list[Path]] = {}
    for r in rows:
        per_fold.setdefault(r.fold, []).append(settings.data_dir / r.path)
    start = time.perf_counter()
    for fold, paths in sorted(per_fold.items()):
        paths = paths[:args.limit] if args.limit else paths
        counts: dict[str, Counter[str]] = {"as fetched": Counter(), "negative": Counter()}
        for first in range(0, len(paths), BATCH):
            batch = paths[first:first + BATCH]
            grey = [read_image(p.read_bytes()).pixels for p in batch]
            grey = [g if g.ndim == 2 else g.mean(axis=-1) for g in grey]
            for name, images in (("as fetched", [p.read_bytes() for p in batch]),
                                 ("negative", [_png(1.0 - g) for g in grey])):
                for a in pipeline.analyze_many(images):
                    counts[name][_reason(a.diagnosis.scope_reason)] += 1
        for name, c in counts.items():
            print(f"fold {fold}, {len(paths)} images, {name}: {dict(sorted(c.items()))}")
    test = per_fold.get(TEST_FOLD, [])[:args.limit or None]
    for modality, body_part in FOREIGN:
        c: Counter[str] = Counter()
        for first in range(0, len(test), BATCH):
            batch = test[first:first + BATCH]
            data = [dicom(grey_levels(p.read_bytes()).astype(np.uint16) * 16,
                          modality=modality, body_part=body_part) for p in batch]
            for a in pipeline.analyze_many(data):
                c[_reason(a.diagnosis.scope_reason)] += 1
        print(f"test fold as DICOM, modality {modality}, body part {body_part}: "
              f"{dict(sorted(c.items()))}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
