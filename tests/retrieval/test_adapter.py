"""The query adapter: identity at zero, learns a mapping, saved and refused like a checkpoint,
used for queries (never for passages), trained end to end on a tiny index, and the benchmark
refuses to report on descriptors it was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer

from assistant.config import Settings
from assistant.retrieval.adapter import (
    AdaptedEmbedder,
    AdapterConfig,
    AdapterError,
    QueryAdapter,
    TrainingSet,
    train_adapter,
)
from assistant.retrieval.benchmark import BenchmarkConfig, check_held_out, run_benchmark
from assistant.retrieval.build import build_index, open_searcher, query_embedder
from assistant.retrieval.commands import run_train_query_adapter
from assistant.retrieval.embed import encode_queries
from assistant.retrieval.evaluate import Query
from tests.retrieval.conftest import HashingEmbedder


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_a_zero_adapter_is_the_identity() -> None:
    vectors = _unit(np.random.default_rng(0).normal(size=(5, 8)))
    adapter = QueryAdapter(np.zeros((8, 8)), {})
    assert np.allclose(adapter.apply(vectors), vectors, atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        QueryAdapter(np.zeros((8, 4)), {})


def _rotated_task(seed: int) -> tuple[TrainingSet, np.ndarray, list[set[int]]]:
    """Documents in 40 clusters; every query is its cluster's centre under a fixed
    rotation, so unadapted queries land on the wrong documents."""
    rng = np.random.default_rng(seed)
    d, n_docs = 16, 40
    centres = _unit(rng.normal(size=(n_docs, d)))
    passages = _unit(np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(3 * n_docs, d)))
    passage_doc = np.repeat(np.arange(n_docs), 3)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    queries = _unit((np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(4 * n_docs, d)))
                    @ rotation.T)
    owners = np.repeat(np.arange(n_docs), 4)
    train_rows = np.flatnonzero(np.arange(len(queries)) % 4 != 0)
    tune_rows = np.flatnonzero(np.arange(len(queries)) % 4 == 0)
    train = TrainingSet(queries[train_rows], [[int(owners[i])] for i in train_rows],
                        passages, passage_doc)
    return train, queries[tune_rows], [{int(owners[i])} for i in tune_rows]


def test_training_learns_the_mapping_and_keeps_the_best_step() -> None:
    train, tune_q, tune_rel = _rotated_task(0)
    config = AdapterConfig(steps=150, batch_size=64, lr=2e-2, penalty=0.0, eval_every=25)
    matrix, result = train_adapter(train, tune_q, tune_rel, config)
    before = result["history"][0]["tune_ndcg10"]
    assert before < 0.5  # the rotation hides the right documents
    assert result["tune_ndcg10"] > before + 0.3
    assert result["best_step"] > 0
    assert result["tune_ndcg10"] == max(h["tune_ndcg10"] for h in result["history"])
    assert not np.allclose(matrix, 0.0)


def test_saved_adapter_loads_and_refuses_another_embedder(tmp_path: Path) -> None:
    path = tmp_path / "adapter.pt"
    matrix = np.random.default_rng(1).normal(scale=0.01, size=(8, 8)).astype(np.float32)
    digest = QueryAdapter(matrix, {"embedder_sha256": "a" * 64,
                                   "held_out_descriptors": ["D1", "D2"]}).save(path)
    loaded = QueryAdapter.load(path, "a" * 64)
    assert loaded.sha256 == digest and np.array_equal(loaded.matrix, matrix)
    assert loaded.held_out == {"D1", "D2"}
    with pytest.raises(AdapterError, match="adapts the embedder"):
        QueryAdapter.load(path, "b" * 64)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(AdapterError):
        QueryAdapter.load(path)


def test_queries_go_through_the_adapter_and_passages_do_not() -> None:
    base = HashingEmbedder()
    matrix = np.random.default_rng(2).normal(scale=0.5, size=(64, 64)).astype(np.float32)
    adapted = AdaptedEmbedder(base, QueryAdapter(matrix, {}))
    texts = ["cholera vibrio", "epileptic seizures"]
    assert np.array_equal(adapted.encode(texts), base.encode(texts))
    assert adapted.fingerprint == base.fingerprint and adapted.name == base.name
    moved = encode_queries(adapted, texts)
    assert np.allclose(moved, adapted.adapter.apply(base.encode(texts)))
    assert not np.allclose(moved, base.encode(texts), atol=1e-3)
    assert np.array_equal(encode_queries(base, texts), base.encode(texts))
    with pytest.raises(AdapterError, match="64-d"):
        AdaptedEmbedder(base, QueryAdapter(np.zeros((8, 8)), {}))


def test_searcher_embeds_queries_through_the_adapter(tiny_settings: Settings) -> None:
    base = HashingEmbedder()
    build_index(tiny_settings, progress=False, embedder=base)
    # an adapter that sends this query to where "cholera vibrio" lands
    query, target = base.encode(["epileptic seizures", "cholera vibrio"])
    matrix = np.outer(query, target).astype(np.float32) * 50.0
    searcher = open_searcher(tiny_settings, rebuild=False,
                             embedder=AdaptedEmbedder(base, QueryAdapter(matrix, {})))
    hits = searcher.search("epileptic seizures", k=3, mode="dense")
    plain = open_searcher(tiny_settings, rebuild=False, embedder=base).search(
        "epileptic seizures", k=3, mode="dense")
    assert hits[0].doc_id != plain[0].doc_id
    assert hits[0].doc_id in {"ICD10CM:A00", "ICD10CM:A00.0"}


def test_query_embedder_without_the_release_file_is_the_plain_embedder(
        tiny_settings: Settings, tmp_path: Path) -> None:
    settings = tiny_settings.model_copy(update={"weights_dir": tmp_path / "no-weights"})
    with pytest.raises(Exception, match="minilm"):  # the tiny data folder has no model
        query_embedder(settings)


def test_trained_end_to_end_on_a_tiny_index_then_benchmarked(tiny_settings: Settings,
                                                              tmp_path: Path) -> None:
    base = HashingEmbedder()
    build_index(tiny_settings, progress=False, embedder=base)
    out = tmp_path / "adapter.pt"
    # every descriptor held out: nothing to train on, a clear error
    with pytest.raises(typer.Exit):
        run_train_query_adapter(tiny_settings, AdapterConfig(steps=5, eval_every=5), out,
                                held_out=BenchmarkConfig(min_major=1), embedder=base)
    assert not out.exists()
    # none held out: trained on the tiny corpus's major topics
    none_held = BenchmarkConfig(min_major=1, n_test=0, n_tune=0)
    adapter = run_train_query_adapter(tiny_settings, AdapterConfig(steps=5, eval_every=5),
                                      out, held_out=none_held, embedder=base)
    assert out.exists() and adapter.meta["embedder_sha256"] == base.fingerprint
    assert adapter.held_out == set() and adapter.meta["training_descriptors"] >= 1
    assert adapter.meta["command"] == "assistant train query-adapter"
    adapted = AdaptedEmbedder(base, QueryAdapter.load(out, base.fingerprint))
    sets = BenchmarkConfig(min_major=1, n_test=1, n_tune=1, n_known=2, seed=0)
    with pytest.raises(ValueError, match="trained on"):  # its descriptors' judgments
        run_benchmark(tiny_settings, sets, None, embedder=adapted)
    # an adapter that held those descriptors out is reported on, and named in the figures
    held = QueryAdapter(adapted.adapter.matrix, {
        "held_out_descriptors": ["D012640", "D004827", "D006801"]})
    held.sha256 = "c" * 64
    report = run_benchmark(tiny_settings, sets, None, embedder=AdaptedEmbedder(base, held))
    assert report["query_adapter"] == "c" * 64 and report["mesh"]


def test_check_held_out_names_the_leaked_descriptors() -> None:
    adapter = QueryAdapter(np.zeros((4, 4)), {"held_out_descriptors": ["D1"]})
    check_held_out(adapter, [Query("D1", "a", frozenset())])
    with pytest.raises(ValueError, match="D2"):
        check_held_out(adapter, [Query("D1", "a", frozenset()), Query("D2", "b", frozenset())])
