"""Near-copy detection with a DCT perceptual hash, and grouping of near-copies.

Pure functions: pixels in, hashes, distances and group ids out. Used to keep every
near-copy of a scan (re-encoded, rescaled or contrast-changed) inside one fold.

The hash (``phash``) is the standard DCT perceptual hash: the grey image is shrunk to
32 x 32 with ``INTER_AREA``, transformed with a 2-D DCT-II (``cv2.dct``), and the top-left
8 x 8 low-frequency block is thresholded at its median. The median is taken
over the 63 AC coefficients, excluding the DC term (which is much larger than the rest and
only measures mean brightness); all 64 coefficients, DC included, give a bit. Bits are
packed row-major, coefficient (0, 0) in the most significant bit. With 63 distinct AC
values exactly 31 lie above their median, and the DC term of a non-negative image nearly
always is too, so hashes have 32 set bits and distances between them are even (all 3,000
Br35H hashes do).

Resize and DCT run in float64 although the pixels arrive as float32: over Br35H the
smallest gap between a coefficient and the median is about 1e-6 of the largest AC
coefficient, only a few float32 ulps, and a hash that flips with the CPU's SIMD path
would make the committed split manifest irreproducible. (float32 and float64 give the
same 3,000 hashes today.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

HASH_RESIZE = 32
HASH_BLOCK = 8
HASH_BITS = HASH_BLOCK * HASH_BLOCK
_ROW_CHUNK = 1024  # rows of the distance matrix computed at once (bounds the XOR temporary)

_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64))


def phash(grey: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2-D grey image (any real dtype, any scale).

    Invariant to a linear contrast change (gain > 0, any offset) up to rounding, and
    nearly invariant to re-encoding and rescaling.
    """
    if not isinstance(grey, np.ndarray) or grey.ndim != 2:
        shape = getattr(grey, "shape", type(grey).__name__)
        raise ValueError(f"phash needs a 2-D grey array (H, W), got {shape}")
    if grey.shape[0] == 0 or grey.shape[1] == 0:
        raise ValueError(f"phash needs a non-empty image, got shape {grey.shape}")
    if not np.issubdtype(grey.dtype, np.number) or np.issubdtype(grey.dtype, np.complexfloating):
        raise ValueError(f"phash needs real-valued pixels, got dtype {grey.dtype}")
    work = np.asarray(grey, dtype=np.float64)
    if not np.isfinite(work).all():
        raise ValueError("phash needs finite pixels, got NaN or infinite values")
    small = cv2.resize(work, (HASH_RESIZE, HASH_RESIZE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(np.ascontiguousarray(small))[:HASH_BLOCK, :HASH_BLOCK]
    coefficients = low.ravel()
    median = np.median(coefficients[1:])  # AC terms only: the DC term is excluded
    bits = (coefficients > median).astype(np.uint64)
    return int(np.sum(bits * _BIT_WEIGHTS, dtype=np.uint64))


def _as_hashes(hashes: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    out = np.asarray(hashes)
    if out.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, got shape {out.shape}")
    if out.dtype != np.uint64:
        raise ValueError(f"hashes must have dtype uint64, got {out.dtype}")
    return out


def hamming_matrix(hashes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(N, N) Hamming distances between 64-bit hashes, as uint8 (0..64)."""
    values = _as_hashes(hashes)
    count = values.shape[0]
    out = np.empty((count, count), dtype=np.uint8)
    for start in range(0, count, _ROW_CHUNK):
        rows = values[start : start + _ROW_CHUNK, None] ^ values[None, :]
        out[start : start + _ROW_CHUNK] = np.bitwise_count(rows)
    return out


def close_pairs(distances: np.ndarray, max_distance: int) -> npt.NDArray[np.intp]:
    """(P, 2) index pairs i < j with distance <= ``max_distance``, in row-major order."""
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be a square matrix, got shape {distances.shape}")
    upper = np.triu(distances <= max_distance, k=1)
    return np.argwhere(upper)


def _find(parent: list[int], node: int) -> int:
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving
        node = parent[node]
    return node


def union_find(count: int, pairs: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Connected components of ``count`` nodes joined by ``pairs`` (P, 2).

    Group ids are renumbered 0, 1, 2, ... in order of each group's first (smallest) index,
    so they depend only on the components and the node order.
    """
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= count):
        raise ValueError(f"pair indices must lie in [0, {count}), got {edges.min()}..{edges.max()}")
    parent = list(range(count))
    for a, b in edges.tolist():
        root_a, root_b = _find(parent, a), _find(parent, b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)  # the root is the smallest index
    roots = np.array([_find(parent, node) for node in range(count)], dtype=np.int64)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int64)


def group_near_copies(hashes: npt.ArrayLike, max_distance: int) -> npt.NDArray[np.int64]:
    """Group ids (single linkage): images joined by any chain of pairs within ``max_distance``.

    ``max_distance`` = 0 groups identical hashes only. Ids as in ``union_find``.
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    values = _as_hashes(hashes)
    return union_find(values.shape[0], close_pairs(hamming_matrix(values), max_distance))


@dataclass(frozen=True)
class GroupSummary:
    """What a grouping did to a labelled set."""

    images: int
    groups: int
    groups_by_label: dict[int, int]  # majority label -> number of groups
    largest: int
    mixed: tuple[int, ...]  # ids of groups holding more than one label


def majority_labels(labels: np.ndarray, groups: np.ndarray) -> npt.NDArray[np.int64]:
    """Each group's most common label (ties go to the larger label), indexed by group id."""
    labels, groups = _check_labelled(labels, groups)
    table = np.zeros((int(groups.max()) + 1, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(table, (groups, labels), 1)
    # argmax returns the first maximum; reversing the columns makes ties go to the larger label.
    return (table.shape[1] - 1 - np.argmax(table[:, ::-1], axis=1)).astype(np.int64)


def mixed_label_groups(labels: np.ndarray, groups: np.ndarray) -> list[int]:
    """Ids of groups whose images do not all carry the same label, ascending."""
    labels, groups = _check_labelled(labels, groups)
    low = np.full(int(groups.max()) + 1, np.iinfo(np.int64).max)
    high = np.full(int(groups.max()) + 1, np.iinfo(np.int64).min)
    np.minimum.at(low, groups, labels)
    np.maximum.at(high, groups, labels)
    return [int(g) for g in np.flatnonzero(low < high)]


def summarise_groups(labels: np.ndarray, groups: np.ndarray) -> GroupSummary:
    """Counts of a grouping: groups, groups per majority label, largest group, mixed groups."""
    labels, groups = _check_labelled(labels, groups)
    present = np.unique(groups)
    majority = majority_labels(labels, groups)[present]
    by_label = {int(k): int(np.sum(majority == k)) for k in np.unique(labels)}
    return GroupSummary(
        images=int(labels.size),
        groups=int(present.size),
        groups_by_label=by_label,
        largest=int(np.bincount(groups).max()),
        mixed=tuple(mixed_label_groups(labels, groups)),
    )


def _check_labelled(
    labels: np.ndarray, groups: np.ndarray
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    labels_arr, groups_arr = np.asarray(labels), np.asarray(groups)
    if labels_arr.ndim != 1 or labels_arr.shape != groups_arr.shape or labels_arr.size == 0:
        raise ValueError(
            "labels and groups must be non-empty 1-D arrays of one length, got shapes "
            f"{labels_arr.shape} and {groups_arr.shape}"
        )
    for name, arr in (("labels", labels_arr), ("groups", groups_arr)):
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
            raise ValueError(f"{name} must be non-negative integers, got dtype {arr.dtype}")
    return labels_arr.astype(np.int64), groups_arr.astype(np.int64)
