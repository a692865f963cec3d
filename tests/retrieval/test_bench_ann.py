"""scripts/bench_ann.py: its recall against a brute-force count, its data loaders (chunk
folder, hold-out, augmentation, synthetic mixture) and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import faiss
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_ann.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_ann", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ann"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_ann"]


def _unit(rng: np.random.Generator, n: int, d: int = 384) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_matches_a_brute_force_count(bench: ModuleType) -> None:
    rng = np.random.default_rng(1)
    base, queries = _unit(rng, 300, 16), _unit(rng, 25, 16)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]  # (Q, 10) brute force
    found = exact.copy()
    found[:, 5:] = rng.integers(0, 300, (25, 5))  # half replaced: some right, some repeated
    found[0, :3] = -1  # missing results never count
    expected = np.mean([len({*f[f >= 0]} & {*e}) / 10 for f, e in zip(found, exact,
                                                                      strict=True)])
    assert bench.recall_at_k(found, exact) == pytest.approx(expected)
    assert bench.recall_at_k(exact, exact) == 1.0
    _, flat_ids = bench.search_faiss(bench.build_faiss(base, "flat"), queries, 10)
    assert bench.recall_at_k(flat_ids, exact) == 1.0  # the benchmark's ground truth


def test_a_chunk_folder_is_read_in_order_with_queries_held_out(bench: ModuleType,
                                                             tmp_path: Path) -> None:
    real = _unit(np.random.default_rng(2), 105)
    for i, (start, stop) in enumerate([(0, 40), (40, 80), (80, 105)]):
        np.save(tmp_path / f"{i:05d}.npy", real[start:stop])
    np.save(tmp_path / "00003.tmp.npy", real[:3])  # a chunk being written: skipped
    assert np.array_equal(np.concatenate(bench.open_vectors(tmp_path)), real)

    base, queries, data = bench.real_vectors(tmp_path, 150, 10, seed=0, noise=0.03)
    assert base.shape == (150, 384) and queries.shape == (10, 384)
    assert (data["real_in_base"], data["augmented"]) == (95, 55)
    as_real = lambda x: np.argmax(x @ real.T, axis=1)  # noqa: E731
    assert np.allclose(real[as_real(queries)], queries, atol=1e-6)
    assert np.allclose(real[as_real(base[:95])], base[:95], atol=1e-6)
    assert not {*as_real(queries)} & {*as_real(base[:95])}  # held out, never indexed
    assert np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-5)
    nearest = (base[95:] @ base[:95].T).max(axis=1)  # an augmented copy vs its source
    assert nearest.min() > 0.8


def test_synthetic_data_is_seeded_unit_and_clustered(bench: ModuleType) -> None:
    base, queries, data = bench.synthetic(2000, 20, seed=3, clusters=50)
    again, _, _ = bench.synthetic(2000, 20, seed=3, clusters=50)
    assert np.array_equal(base, again) and data["kind"] == "synthetic clustered mixture"
    assert np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-5)
    nn = np.sort(queries @ base.T, axis=1)[:, -1]
    assert nn.max() < 0.999  # queries are fresh draws, not base rows
    assert np.median(nn) > 0.5  # clustered: random unit vectors would give about 0.2


def test_a_tiny_run_reports_every_kind(bench: ModuleType, tmp_path: Path) -> None:
    threads = faiss.omp_get_max_threads()
    try:
        result = bench.main(["--n", "3000", "--queries", "30", "--latency-queries", "5",
                             "--clusters", "40", "--threads", "1", "--nlist", "16",
                             "--pq-m", "8", "--json", str(tmp_path / "out.json")])
    finally:
        faiss.omp_set_num_threads(threads)
    assert json.loads((tmp_path / "out.json").read_text())["n"] == 3000
    kinds = {row["kind"] for row in result["rows"]}
    assert kinds == set(bench.KINDS)
    flat = [row for row in result["rows"] if row["kind"] == "flat"]
    assert len(flat) == 1 and flat[0]["recall"] == 1.0
    assert [s["kind"] for s in result["summary"]] == list(bench.KINDS[1:])
    best = {s["kind"]: s["recall"] for s in result["summary"]}
    assert best["hnsw"] >= 0.95 and best["ivfsq8"] >= 0.95
