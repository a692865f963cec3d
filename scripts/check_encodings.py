"""Does the diagnosis change with how the same image is stored? Every Br35H test-fold image
is analysed as it was fetched, then again after re-encoding it several ways, through the
same pipeline the service calls, and each re-encoding's verdicts are compared with the
original's: scope decisions that changed, labels that changed, the largest probability
change, and the errors against the true label.

The re-encodings start from the image's grey levels (8 bits; some Br35H JPEGs carry colour
noise, which the model never sees; ``tests/encodings.py``): lossless ones (PNG 8-bit, PNG
16-bit, RGB and RGBA PNG, DICOM
12-bit MONOCHROME2, MONOCHROME1 stored inverted, signed 16-bit with a rescale, a rescale
slope and intercept), lossy ones (JPEG at quality 100, 95, 85, 75 and 60, progressive JPEG
95) and resampled ones (2x bicubic, 0.75x area); and the image as fetched, colour noise
and all, re-encoded as a colour PNG and a colour JPEG at 75. Lossless encodings must give
the same verdicts; the lossy and resampled ones measure how far the model is from that.

    .venv/bin/python scripts/check_encodings.py [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.config import Settings  # noqa: E402
from assistant.pipeline import Pipeline  # noqa: E402
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest  # noqa: E402
from tests.encodings import (  # noqa: E402
    ENCODINGS,
    FROM_FETCHED,
    FROM_FETCHED_LOSSLESS,
    LOSSLESS,
    grey_levels,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test-fold images")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    settings = Settings()
    pipeline = Pipeline.from_settings(settings, citations=False)
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    rows = rows[:args.limit] if args.limit else rows
    scope: Counter[str] = Counter()
    label: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    deltas: dict[str, list[float]] = defaultdict(list)
    examples: list[str] = []
    for row in rows:
        original = (settings.data_dir / row.path).read_bytes()
        reference = pipeline.analyze(original).diagnosis
        wrong["original"] += reference.in_scope and (reference.label == "tumour") != row.label
        grey = grey_levels(original)
        copies = {**{name: encode(grey) for name, encode in ENCODINGS.items()},
                  **{name: encode(original) for name, encode in FROM_FETCHED.items()}}
        for name, data in copies.items():
            verdict = pipeline.analyze(data).diagnosis
            if verdict.in_scope != reference.in_scope:
                scope[name] += 1
                examples.append(f"{row.path} {name}: in scope {reference.in_scope} -> "
                                f"{verdict.in_scope} ({verdict.scope_reason})")
                continue
            if verdict.label != reference.label:
                label[name] += 1
                examples.append(f"{row.path} {name}: {reference.label} "
                                f"{reference.probability:.4f} -> {verdict.label} "
                                f"{verdict.probability:.4f}")
            if verdict.probability is not None and reference.probability is not None:
                deltas[name].append(abs(verdict.probability - reference.probability))
            wrong[name] += verdict.in_scope and (verdict.label == "tumour") != row.label
    figures = {name: {"scope_changed": scope[name], "label_changed": label[name],
                      "max_probability_change": max(deltas[name], default=0.0),
                      "errors": wrong[name]} for name in (*ENCODINGS, *FROM_FETCHED)}
    print(f"{len(rows)} test-fold images; errors against the true label as fetched: "
          f"{wrong['original']}")
    print(f"{'encoding':20s} {'scope changed':>14s} {'label changed':>14s} "
          f"{'max |dp|':>9s} {'errors':>7s}")
    for name, f in figures.items():
        print(f"{name:20s} {f['scope_changed']:14d} {f['label_changed']:14d} "
              f"{f['max_probability_change']:9.4f} {f['errors']:7d}")
    for line in examples:
        print("  " + line)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"images": len(rows), "figures": figures,
                                         "changes": examples}, indent=1) + "\n")
    if any(scope[n] or label[n] for n in (*LOSSLESS, *FROM_FETCHED_LOSSLESS)):
        sys.exit(1)  # a lossless encoding changed a verdict


if __name__ == "__main__":
    main()
