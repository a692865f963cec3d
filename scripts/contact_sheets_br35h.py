"""Contact sheets of Br35H image pairs at each perceptual-hash distance, and a threshold table.

For each distance d in 0..10, up to 24 pairs whose phash distance is exactly d are drawn
(fixed seed) and written side by side to ``<data_dir>/reports/dedup/pairs_d{d:02d}.png``,
each cell labelled with d and both file names; ``bridges_d{d:02d}.png`` shows only pairs
that join two groups still separate at threshold d - 1 (the merges raising the threshold
to d makes). Look at both to choose the distance at which pairs stop being the same scan.
Hashes have 32 set bits (see ``assistant.vision.dedup``), so odd distances never occur.
The sheets hold copies of the images: never commit them (the Br35H licence does not allow
redistribution). Also prints, per threshold t, the groups single linkage makes.

    ASSISTANT_DATA_DIR=... OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. \
        python scripts/contact_sheets_br35h.py
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from assistant.config import Settings
from assistant.vision.dedup import (
    close_pairs,
    hamming_matrix,
    summarise_groups,
    union_find,
)
from assistant.vision.splits import br35h_images, hash_files, load_grey

log = logging.getLogger("contact_sheets_br35h")

CELL = 160  # pixels per image side
BAND = 34  # caption band above each pair
COLUMNS = 3  # pairs per sheet row


def _thumb(path: Path) -> np.ndarray:
    grey = load_grey(path)
    scale = CELL / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((CELL, CELL), np.float32)
    top, left = (CELL - small.shape[0]) // 2, (CELL - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def _pair_cell(data_dir: Path, a: str, b: str, distance: int) -> np.ndarray:
    cell = np.full((BAND + CELL, 2 * CELL + 4), 255, np.uint8)
    cell[BAND:, :CELL] = _thumb(data_dir / a)
    cell[BAND:, CELL + 4 :] = _thumb(data_dir / b)
    names = [p.removeprefix("br35h/") for p in (a, b)]
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(cell, f"d={distance}", (2, 13), font, 0.4, 0, 1, cv2.LINE_AA)
    cv2.putText(cell, f"{names[0]} | {names[1]}", (2, 28), font, 0.4, 0, 1, cv2.LINE_AA)
    return cell


def write_sheet(
    data_dir: Path, paths: list[str], pairs: np.ndarray, distance: int, out: Path
) -> None:
    cells = [_pair_cell(data_dir, paths[i], paths[j], distance) for i, j in pairs]
    blank = np.full_like(cells[0], 255)
    cells += [blank] * (-len(cells) % COLUMNS)
    rows = [
        np.hstack(
            [np.pad(c, ((4, 4), (4, 4)), constant_values=128) for c in cells[k : k + COLUMNS]]
        )
        for k in range(0, len(cells), COLUMNS)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows))


def print_table(labels: np.ndarray, distances: np.ndarray, max_t: int) -> None:
    print("t  groups  tumour  none  largest  mixed  pairs_at_d  cross_label_pairs_at_d")
    for t in range(max_t + 1):
        groups = union_find(labels.size, close_pairs(distances, t))
        s = summarise_groups(labels, groups)
        at = np.argwhere(np.triu(distances == t, k=1))
        cross = int(np.sum(labels[at[:, 0]] != labels[at[:, 1]]))
        print(
            f"{t:<2} {s.groups:>6}  {s.groups_by_label.get(1, 0):>6}  "
            f"{s.groups_by_label.get(0, 0):>4}  {s.largest:>7}  {len(s.mixed):>5}  "
            f"{len(at):>10}  {cross:>22}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-d", type=int, default=10, help="largest distance shown")
    parser.add_argument("--pairs", type=int, default=24, help="pairs per sheet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data_dir = Settings().data_dir
    paths, _, labels = br35h_images(data_dir)
    log.info("hashing %d images", len(paths))
    distances = hamming_matrix(hash_files([data_dir / p for p in paths]))
    rng = np.random.default_rng(args.seed)
    out_dir = data_dir / "reports" / "dedup"
    for d in range(args.max_d + 1):
        at = np.argwhere(np.triu(distances == d, k=1))
        if len(at) == 0:
            log.info("d=%d: no pairs", d)
            continue
        chosen = at[np.sort(rng.choice(len(at), min(args.pairs, len(at)), replace=False))]
        write_sheet(data_dir, paths, chosen, d, out_dir / f"pairs_d{d:02d}.png")
        log.info("d=%d: %d pairs, wrote %d to %s", d, len(at), len(chosen), out_dir)
        if d > 0:
            write_bridges(data_dir, paths, distances, d, args.pairs, rng)
    print_table(labels, distances, args.max_d)


def write_bridges(
    data_dir: Path,
    paths: list[str],
    distances: np.ndarray,
    d: int,
    count: int,
    rng: np.random.Generator,
) -> None:
    """Pairs at exactly d that join two groups still separate at threshold d - 1: the
    merges that raising the threshold to d actually makes."""
    before = union_find(len(paths), close_pairs(distances, d - 1))
    at = np.argwhere(np.triu(distances == d, k=1))
    at = at[before[at[:, 0]] != before[at[:, 1]]]
    if len(at) == 0:
        return
    chosen = at[np.sort(rng.choice(len(at), min(count, len(at)), replace=False))]
    out = data_dir / "reports" / "dedup" / f"bridges_d{d:02d}.png"
    write_sheet(data_dir, paths, chosen, d, out)
    log.info(
        "d=%d: %d pairs join groups separate at d-1, wrote %d to %s", d, len(at), len(chosen), out
    )


if __name__ == "__main__":
    main()
