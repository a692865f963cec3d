"""Build the Br35H near-copy-grouped split manifest and print its counts.

Hashes every verified Br35H image (DCT perceptual hash), joins near-copies within
``--max-distance`` into groups (single linkage), holds out a stratified test fold and
deals the rest into 5 cross-validation folds, whole groups at a time. Writes
``assistant/vision/split_br35h.csv`` (or ``--out``); see ``assistant/vision/split_br35h.md``.

    ASSISTANT_DATA_DIR=... OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. \
        python scripts/make_br35h_split.py --max-distance 6 --seed 0
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from assistant.config import Settings
from assistant.vision.splits import (
    BR35H_MAX_DISTANCE,
    BR35H_SPLIT_PATH,
    SplitRow,
    build_br35h_split,
    manifest_sha256,
    write_split_manifest,
)

log = logging.getLogger("make_br35h_split")


def print_counts(rows: list[SplitRow]) -> None:
    """Images and groups per fold and label, and groups holding both labels."""
    labels_of_group: dict[int, set[int]] = {}
    fold_of_group: dict[int, str] = {}
    for row in rows:
        labels_of_group.setdefault(row.group, set()).add(row.label)
        fold_of_group[row.group] = row.fold
    mixed = sorted(g for g, labels in labels_of_group.items() if len(labels) > 1)
    print(f"images {len(rows)}, groups {len(labels_of_group)}, mixed-label groups {len(mixed)}")
    print("fold  images  tumour  none  groups  groups_with_tumour  groups_without")
    for fold in sorted({row.fold for row in rows}, key=lambda f: (f == "test", f)):
        images = [r for r in rows if r.fold == fold]
        labels = Counter(r.label for r in images)
        groups = {g for g, f in fold_of_group.items() if f == fold}
        with_tumour = sum(1 in labels_of_group[g] for g in groups)
        print(
            f"{fold:<5} {len(images):>6}  {labels[1]:>6}  {labels[0]:>4}  {len(groups):>6}  "
            f"{with_tumour:>18}  {len(groups) - with_tumour:>14}"
        )
    for group in mixed:
        members = [r.path for r in rows if r.group == group]
        print(f"mixed group {group} (fold {fold_of_group[group]}): {' '.join(members)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-distance",
        type=int,
        default=BR35H_MAX_DISTANCE,
        help="largest phash Hamming distance joining two images into a group",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BR35H_SPLIT_PATH)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = build_br35h_split(Settings().data_dir, args.max_distance, seed=args.seed)
    write_split_manifest(args.out, rows)
    log.info("wrote %s (sha256 %s)", args.out, manifest_sha256(args.out))
    print_counts(rows)


if __name__ == "__main__":
    main()
