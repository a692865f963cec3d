"""Tests for the perceptual hash and near-copy grouping in ``assistant.vision.dedup``."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.vision import dedup
from assistant.vision.dedup import (
    close_pairs,
    group_near_copies,
    hamming_matrix,
    majority_labels,
    mixed_label_groups,
    phash,
    summarise_groups,
    union_find,
)

Texture = Callable[[int], np.ndarray]


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def reencode(img: np.ndarray, ext: str, *params: int) -> np.ndarray:
    ok, buffer = cv2.imencode(ext, to_uint8(img), list(params))
    assert ok
    decoded = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    assert decoded is not None
    return decoded.astype(np.float32) / 255.0


# ---------------------------------------------------------------- phash


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_phash_survives_reencoding_rescaling_and_contrast(texture: Texture, seed: int) -> None:
    img = texture(seed)
    reference = phash(reencode(img, ".png"))
    jpeg = reencode(img, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    height, width = img.shape
    larger = cv2.resize(img, (width * 3 // 2, height * 3 // 2), interpolation=cv2.INTER_LINEAR)
    contrast = 0.15 + 0.7 * img
    for variant in (jpeg, larger, contrast, reencode(contrast, ".jpg")):
        assert distance(phash(variant), reference) == 0


def test_phash_is_far_for_unrelated_textures(texture: Texture) -> None:
    hashes = [phash(texture(seed)) for seed in range(10, 16)]
    for a, b in itertools.combinations(hashes, 2):
        assert distance(a, b) > 20


def test_phash_bit_layout_and_weight(texture: Texture) -> None:
    value = phash(texture(0))
    assert 0 <= value < 2**64
    assert value >> 63 == 1  # the DC coefficient of a positive image is above the AC median
    assert value.bit_count() == 32  # 31 of 63 AC terms above their median, plus DC


def test_phash_accepts_integer_pixels(texture: Texture) -> None:
    img = texture(4)
    assert phash(to_uint8(img)) == phash(to_uint8(img).astype(np.float32) / 255.0)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3)), np.zeros((0, 5)), np.full((8, 8), np.nan), np.zeros((4, 4), complex)],
)
def test_phash_refuses_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="phash"):
        phash(bad)


# ---------------------------------------------------------------- hamming_matrix


def test_hamming_matrix_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup, "_ROW_CHUNK", 7)  # several chunks, one ragged
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=40, dtype=np.uint64, endpoint=False)
    hashes[5] = hashes[6]  # a duplicate
    hashes[7] = np.uint64(2**64 - 1)
    hashes[8] = np.uint64(0)
    got = hamming_matrix(hashes)
    expected = [[distance(int(a), int(b)) for b in hashes] for a in hashes]
    assert got.dtype == np.uint8
    assert got.tolist() == expected
    assert got[7, 8] == 64 and got[5, 6] == 0


def test_hamming_matrix_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="uint64"):
        hamming_matrix(np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError, match="1-D"):
        hamming_matrix(np.zeros((2, 2), dtype=np.uint64))


# ---------------------------------------------------------------- grouping


def test_union_find_chains_transitively_and_numbers_by_first_index() -> None:
    groups = union_find(7, [(5, 6), (1, 4), (4, 2)])
    assert groups.tolist() == [0, 1, 1, 2, 1, 3, 3]


def test_group_near_copies_single_linkage_chain() -> None:
    base = 0xF0F0_F0F0_0F0F_0F0F
    one = base ^ 0b11  # 2 bits from base
    two = one ^ 0b1100  # 2 bits from one, 4 from base
    far = base ^ 0xFFFF_0000_0000_0000  # 16 bits from base
    hashes = np.array([two, far, base, one], dtype=np.uint64)
    assert group_near_copies(hashes, 2).tolist() == [0, 1, 0, 0]
    assert group_near_copies(hashes, 1).tolist() == [0, 1, 2, 3]
    assert group_near_copies(hashes, 16).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="max_distance"):
        group_near_copies(hashes, -1)


def connected_components(count: int, edges: list[tuple[int, int]]) -> list[frozenset[int]]:
    """Brute force: flood fill from each unvisited node."""
    neighbours: dict[int, set[int]] = {node: set() for node in range(count)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen: set[int] = set()
    components = []
    for start in range(count):
        if start in seen:
            continue
        stack, component = [start], set()
        while stack:
            node = stack.pop()
            if node not in component:
                component.add(node)
                stack.extend(neighbours[node] - component)
        seen |= component
        components.append(frozenset(component))
    return components


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 25).flatmap(
        lambda n: st.tuples(
            st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)))
        )
    )
)
def test_union_find_matches_flood_fill(graph: tuple[int, list[tuple[int, int]]]) -> None:
    count, edges = graph
    groups = union_find(count, edges)
    got = {frozenset(np.flatnonzero(groups == g).tolist()) for g in np.unique(groups)}
    assert got == set(connected_components(count, edges))
    first_seen = list(dict.fromkeys(groups.tolist()))
    assert first_seen == list(range(len(first_seen)))


def test_close_pairs_upper_triangle() -> None:
    distances = np.array([[0, 2, 9], [2, 0, 4], [9, 4, 0]], dtype=np.uint8)
    assert close_pairs(distances, 4).tolist() == [[0, 1], [1, 2]]


# ---------------------------------------------------------------- labels


def test_label_summaries() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0, 1])
    groups = np.array([0, 0, 1, 1, 1, 2, 2])
    assert majority_labels(labels, groups).tolist() == [1, 0, 1]  # group 2 ties -> 1
    assert mixed_label_groups(labels, groups) == [1, 2]
    summary = summarise_groups(labels, groups)
    assert (summary.images, summary.groups, summary.largest) == (7, 3, 3)
    assert summary.groups_by_label == {0: 1, 1: 2}
    assert summary.mixed == (1, 2)
    with pytest.raises(ValueError, match="one length"):
        summarise_groups(labels, groups[:-1])
