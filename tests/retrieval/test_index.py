"""FAISS search against brute force, and the index folder: save, open, stale, corrupt, mmap."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assistant.retrieval.dense import build_faiss, search_faiss
from assistant.retrieval.index import (
    DENSE_FILE,
    MANIFEST_FILE,
    PASSAGES_FILE,
    CorruptIndexError,
    IndexManifest,
    IndexMissingError,
    PassageRecord,
    StaleIndexError,
    open_index,
    save_index,
)
from assistant.retrieval.lexical import LexicalIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(queries: np.ndarray, vectors: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T  # (Q, N)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize(("n", "d", "k"), [(1, 8, 1), (50, 16, 5), (500, 384, 10)])
def test_flat_search_equals_brute_force(n: int, d: int, k: int) -> None:
    rng = np.random.default_rng(n)
    vectors, queries = _unit(rng, n, d), _unit(rng, 7, d)
    scores, ids = search_faiss(build_faiss(vectors, "flat"), queries, k)
    want_scores, want_ids = _brute_force(queries, vectors, k)
    assert ids.shape == (7, k) and ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_flat_search_with_a_mask_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    vectors, queries = _unit(rng, 300, 32), _unit(rng, 5, 32)
    allowed = rng.random(300) < 0.1
    _, ids = search_faiss(build_faiss(vectors), queries, 8, allowed)
    np.testing.assert_array_equal(ids, _brute_force(queries, vectors, 8, allowed)[1])
    assert allowed[ids].all()


def test_fewer_rows_than_k_are_padded() -> None:
    vectors = _unit(np.random.default_rng(2), 3, 8)
    scores, ids = search_faiss(build_faiss(vectors), vectors[:1], 5)
    assert ids[0, 0] == 0 and ids[0, 3:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 3:]).all()


def test_hnsw_recall_at_10() -> None:
    rng = np.random.default_rng(3)
    vectors, queries = _unit(rng, 2000, 384), _unit(rng, 100, 384)
    _, ids = search_faiss(build_faiss(vectors, "hnsw"), queries, 10)
    _, truth = _brute_force(queries, vectors, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
    assert recall >= 0.9


def test_a_narrow_filter_on_hnsw_still_gives_k_rows() -> None:
    """A filtered graph search can stop before it meets k allowed rows (the literature
    index gave 3 hits of 50 for one year's citations, 125 or more of them held): the
    allowed rows are then searched exactly."""
    rng = np.random.default_rng(5)
    vectors, queries = _unit(rng, 3000, 32), _unit(rng, 4, 32)
    index = build_faiss(vectors, "hnsw", m=4, ef_construction=16, ef_search=16)
    allowed = np.zeros(3000, dtype=bool)
    allowed[rng.choice(3000, 60, replace=False)] = True
    scores, ids = search_faiss(index, queries, 50, allowed)
    want_scores, want_ids = _brute_force(queries, vectors, 50, allowed)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    few = np.zeros(3000, dtype=bool)
    few[[7, 9]] = True  # fewer allowed than k: those, then padding
    _, ids = search_faiss(index, queries[:1], 5, few)
    assert sorted(ids[0, :2].tolist()) == [7, 9] and ids[0, 2:].tolist() == [-1, -1, -1]


def test_ivfpq_builds_searches_and_refuses_too_few_vectors() -> None:
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 1000, 64)
    index = build_faiss(vectors, "ivfpq", nlist=8, m=8, nbits=6, nprobe=8)
    _, ids = search_faiss(index, vectors[:20], 5)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.8  # PQ is lossy; self mostly first
    with pytest.raises(ValueError, match="at least"):
        build_faiss(vectors[:100], "ivfpq", nlist=8, m=8, nbits=8)
    with pytest.raises(ValueError, match="divide"):
        build_faiss(vectors, "ivfpq", m=7)
    with pytest.raises(ValueError, match="unknown hnsw parameters"):
        build_faiss(vectors, "hnsw", nlist=3)
    with pytest.raises(ValueError, match="index kind"):
        build_faiss(vectors, "annoy")  # type: ignore[arg-type]


# -- the index folder -----------------------------------------------------------------------

TEXTS = ["Seizure in children with fever.", "Glioma of the brain. Seizures at onset.",
         "Cholera due to Vibrio cholerae.", "Typhoid fever. Salmonella typhi infection."]


def _manifest(n: int, dim: int = 16) -> IndexManifest:
    return IndexManifest(
        embedder="test", embedder_sha256="e" * 64, dim=dim, corpus_sha256="c" * 64,
        corpus_inputs_sha256="i" * 64, passage_count=n, document_count=n,
        source_counts={"medline": n}, index_kind="flat", index_params={},
        corpus={"sources": ["medline"], "limit": None, "max_words": 110,
                "overlap_sentences": 1},
        build_seconds=0.5, created="2026-01-01T00:00:00+00:00")


def _records() -> list[PassageRecord]:
    return [PassageRecord(id=f"PMID:{i}#0", doc_id=f"PMID:{i}", source="medline",
                          title=f"Title {i}", text=text, year=2000 + i, citation=f"Cite {i}",
                          url=f"https://pubmed.ncbi.nlm.nih.gov/{i}/", position=0)
            for i, text in enumerate(TEXTS)]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "indexes" / "literature"
    vectors = _unit(np.random.default_rng(5), len(TEXTS), 16)
    save_index(directory, build_faiss(vectors), _records(), _manifest(len(TEXTS)),
               LexicalIndex.build(TEXTS))
    return directory


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = _manifest(4)
    manifest.save(tmp_path / "m.json")
    assert IndexManifest.load(tmp_path / "m.json") == manifest
    (tmp_path / "bad.json").write_text('{"dim": 3}')
    with pytest.raises(CorruptIndexError, match="not a valid index manifest"):
        IndexManifest.load(tmp_path / "bad.json")
    raw = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**raw, "format_version": 0}))
    with pytest.raises(StaleIndexError, match="format"):
        IndexManifest.load(tmp_path / "old.json")


def test_save_and_open(saved: Path) -> None:
    loaded = open_index(saved, "c" * 64, "e" * 64)
    assert len(loaded) == 4 and loaded.dense.ntotal == 4 and len(loaded.lexical) == 4
    assert loaded.passages[1] == _records()[1]
    assert loaded.passages.years.tolist() == [2000, 2001, 2002, 2003]
    assert loaded.manifest.file_sizes[DENSE_FILE] == (saved / DENSE_FILE).stat().st_size
    assert [p.name for p in saved.parent.iterdir()] == ["literature"]  # no temp folders left
    loaded.close()


def test_save_replaces_an_open_index(saved: Path) -> None:
    first = open_index(saved, None, None)
    vectors = _unit(np.random.default_rng(6), 2, 16)
    save_index(saved, build_faiss(vectors), _records()[:2], _manifest(2),
               LexicalIndex.build(TEXTS[:2]))
    assert len(open_index(saved, None, None)) == 2
    assert search_faiss(first.dense, vectors, 1)[1].shape == (2, 1)  # old mmap still valid
    assert sorted(p.name for p in saved.parent.iterdir()) == ["literature"]


def test_open_refuses_a_stale_index(saved: Path) -> None:
    with pytest.raises(StaleIndexError, match="corpus sha256 cccccccccccc in the index, "
                                              "dddddddddddd now"):
        open_index(saved, "d" * 64, "e" * 64)
    with pytest.raises(StaleIndexError, match="embedder sha256") as info:
        open_index(saved, "c" * 64, "0" * 64)
    assert "corpus" not in str(info.value) and "assistant index build" in str(info.value)


def test_open_refuses_missing_and_corrupt_indexes(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError):
        open_index(tmp_path / "nothing", None, None)
    passages = saved / PASSAGES_FILE
    content = passages.read_bytes()
    passages.write_bytes(content[: len(content) // 2])
    with pytest.raises(CorruptIndexError, match="bytes, the manifest says"):
        open_index(saved, None, None)
    # Cut at a line end and the manifest sizes dropped: the counts disagree.
    passages.write_bytes(b"".join(content.splitlines(keepends=True)[:3]))
    raw = json.loads((saved / MANIFEST_FILE).read_text())
    (saved / MANIFEST_FILE).write_text(json.dumps({**raw, "file_sizes": {}}))
    with pytest.raises(CorruptIndexError, match="disagrees with itself"):
        open_index(saved, None, None)
    passages.write_bytes(content[:-5])  # cut inside the last line
    with pytest.raises(CorruptIndexError, match="truncated"):
        open_index(saved, None, None)
    (saved / DENSE_FILE).unlink()
    with pytest.raises(CorruptIndexError, match="missing"):
        open_index(saved, None, None)


def test_open_maps_the_faiss_file_read_only(saved: Path) -> None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps on this system")
    loaded = open_index(saved, None, None)
    target = str((saved / DENSE_FILE).resolve())
    mapped = [line.split() for line in maps.read_text().splitlines() if line.endswith(target)]
    assert mapped, "dense.faiss is not memory-mapped"
    assert all("w" not in fields[1] for fields in mapped)  # permissions, e.g. "r--s"
    assert len(loaded) == 4


def test_manifest_with_another_dimension_is_corrupt(saved: Path) -> None:
    replace(_manifest(4, dim=8), file_sizes={}).save(saved / MANIFEST_FILE)
    with pytest.raises(CorruptIndexError, match="dimension 16 vs 8"):
        open_index(saved, None, None)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_every_kind_opens_memory_mapped(tmp_path: Path, kind: str) -> None:
    directory = tmp_path / "literature"
    vectors = _unit(np.random.default_rng(7), 300, 16)
    params = {"nlist": 4, "m": 4, "nbits": 4} if kind == "ivfpq" else {}
    dense = build_faiss(vectors, kind, **params)  # type: ignore[arg-type]
    records = [replace(_records()[0], id=f"PMID:0#{i}", position=i) for i in range(300)]
    manifest = replace(_manifest(300), index_kind=kind)
    save_index(directory, dense, records, manifest, LexicalIndex.build(TEXTS[:1] * 300))
    loaded = open_index(directory, None, None)
    _, ids = search_faiss(loaded.dense, vectors[:3], 4)
    _, want = search_faiss(dense, vectors[:3], 4)
    np.testing.assert_array_equal(ids, want)
    target = str((directory / DENSE_FILE).resolve())
    if Path("/proc/self/maps").exists():
        assert target in Path("/proc/self/maps").read_text()
