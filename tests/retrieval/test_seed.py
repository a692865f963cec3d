"""The committed index seed: a build takes its vectors only when they are exactly the ones
it would embed, and ranks as the embedded index does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings
from assistant.retrieval.build import (
    INDEX_NAME,
    EmbeddingNeededError,
    build_index,
    ensure_index,
    index_path,
    open_searcher,
    texts_sha256,
)
from assistant.retrieval.seed import SeedInfo, read_seed, seed_path, write_seed
from tests.retrieval.conftest import HashingEmbedder


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_vectors_stay_close(bits: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    info = SeedInfo("e", "a" * 64, "b" * 64, 500, 32, bits)
    size = write_seed(tmp_path / "s.seed", vectors, info)
    assert size < vectors.nbytes * bits / 32 + 4096  # bits per dimension, plus a header
    decoded = read_seed(tmp_path / "s.seed", "a" * 64, "b" * 64, 500)
    assert decoded is not None
    assert np.allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-5)
    cosines = np.einsum("ij,ij->i", vectors, decoded)
    assert cosines.min() > (0.999 if bits == 8 else 0.95)
    # any mismatch in what the vectors are of: no vectors
    assert read_seed(tmp_path / "s.seed", "c" * 64, "b" * 64, 500) is None
    assert read_seed(tmp_path / "s.seed", "a" * 64, "c" * 64, 500) is None
    assert read_seed(tmp_path / "s.seed", "a" * 64, "b" * 64, 499) is None
    assert read_seed(tmp_path / "missing", "a" * 64, "b" * 64, 500) is None
    with pytest.raises(ValueError, match="bits"):
        write_seed(tmp_path / "t.seed", vectors, SeedInfo("e", "a", "b", 500, 32, 3))


def _seed_from(settings: Settings, embedder: HashingEmbedder) -> None:
    """What `assistant index pack` writes, from the index built in ``settings``."""
    searcher = open_searcher(settings, rebuild=False, embedder=embedder)
    manifest = searcher.index.manifest
    vectors = searcher.index.dense.reconstruct_n(0, manifest.passage_count)
    info = SeedInfo(manifest.embedder, manifest.embedder_sha256,
                    texts_sha256(manifest.corpus_sha256, True), manifest.passage_count,
                    manifest.dim, 8)
    write_seed(seed_path(settings.index_dir, INDEX_NAME), vectors, info)


def test_build_uses_a_matching_seed_instead_of_embedding(tiny_settings: Settings) -> None:
    first = HashingEmbedder()
    build_index(tiny_settings, progress=False, embedder=first)
    expected = open_searcher(tiny_settings, rebuild=False, embedder=first).search(
        "cholera vibrio", k=3, mode="dense")
    _seed_from(tiny_settings, first)
    shutil.rmtree(index_path(tiny_settings))
    shutil.rmtree(tiny_settings.data_dir / "cache")  # no cached embeddings either

    second = HashingEmbedder()
    manifest = build_index(tiny_settings, progress=False, embedder=second)
    assert manifest.vectors_source == "seed" and second.calls == 0  # nothing embedded
    hits = open_searcher(tiny_settings, rebuild=False, embedder=second).search(
        "cholera vibrio", k=3, mode="dense")
    assert [h.id for h in hits] == [h.id for h in expected]

    other = HashingEmbedder(fingerprint="e" * 64)  # another embedder: the seed is not its
    manifest = build_index(tiny_settings, progress=False, embedder=other)
    assert manifest.vectors_source == "embedded" and other.calls > 0
    fewer = build_index(tiny_settings, progress=False, embedder=HashingEmbedder(), limit=5)
    assert fewer.vectors_source == "embedded"  # other passages: the seed is not theirs


def test_ensure_without_embedding_builds_only_from_the_seed(tiny_settings: Settings) -> None:
    embedder = HashingEmbedder()
    with pytest.raises(EmbeddingNeededError, match="no seed"):
        ensure_index(tiny_settings, embedder=embedder, embed=False)
    assert embedder.calls == 0 and not index_path(tiny_settings).exists()
    build_index(tiny_settings, progress=False, embedder=embedder)
    _seed_from(tiny_settings, embedder)
    shutil.rmtree(index_path(tiny_settings))
    fresh = HashingEmbedder()
    index = ensure_index(tiny_settings, embedder=fresh, embed=False)
    assert index.manifest.vectors_source == "seed" and fresh.calls == 0
    again = ensure_index(tiny_settings, embedder=fresh, embed=False)  # up to date: kept
    assert again.manifest.created == index.manifest.created
