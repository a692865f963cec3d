"""The relevance benchmark: its metrics by hand, its query sets, and one run on a tiny index."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.retrieval.benchmark import BenchmarkConfig, run_benchmark
from assistant.retrieval.build import build_index, open_searcher
from assistant.retrieval.corpus import Document, MeshHeading, iter_corpus
from assistant.retrieval.evaluate import (
    Method,
    Query,
    bootstrap_interval,
    document_ranker,
    known_item_queries,
    mesh_major_queries,
    mesh_pair_queries,
    ndcg_at,
    query_metrics,
    recall_at,
    reciprocal_rank,
)
from assistant.retrieval.search import Ranking
from tests.retrieval.conftest import HashingEmbedder


def test_metrics_by_hand() -> None:
    relevant = frozenset({"a", "b"})
    assert ndcg_at(["a", "b", "x"], relevant) == pytest.approx(1.0)
    # one relevant at rank 2: (1/log2 3) / (1 + 1/log2 3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at(["x", "a", "y"], relevant) == pytest.approx(expected)
    assert ndcg_at(["x"] * 10 + ["a"], relevant) == 0.0  # past the cut-off
    assert recall_at(["a", "x"], relevant) == 0.5
    assert reciprocal_rank(["x", "y", "b"], relevant) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"] * 100 + ["a"], relevant) == 0.0
    assert query_metrics([], relevant) == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr": 0.0}


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = [0.0, 1.0] * 50
    low, high = bootstrap_interval(values)
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_interval([0.7] * 10) == pytest.approx((0.7, 0.7))


def _doc(pmid: int, majors: list[str], minors: list[str] = ()) -> Document:  # type: ignore[assignment]
    mesh = tuple(MeshHeading(name, f"D{name}", True) for name in majors) + tuple(
        MeshHeading(name, f"D{name}", False) for name in minors)
    return Document(id=f"PMID:{pmid}", source="medline", title=f"title number {pmid} here",
                    text="abstract", mesh=mesh, has_abstract=True)


def test_mesh_queries_hold_out_the_test_descriptors() -> None:
    docs = [_doc(i, [f"T{i % 7}", f"U{i % 3}"], ["Humans"]) for i in range(60)]
    sets = mesh_major_queries(docs, min_major=9, n_test=4, n_tune=3, seed=1)
    # T0..T6 have 8 or 9 citations (60 = 7 * 8 + 4), U0..U2 have 20; "Humans" is never major
    assert sets.eligible == 4 + 3
    test_keys = {q.key for q in sets.test}
    assert len(sets.test) == 4 and len(sets.tune) == 3
    assert not test_keys & {q.key for q in sets.tune}
    for query in sets.test + sets.tune:
        expected = {d.id for d in docs if any(h.major and h.ui == query.key for h in d.mesh)}
        assert query.relevant == expected and len(expected) >= 9
        assert query.text == query.key.removeprefix("D")
    again = mesh_major_queries(docs, min_major=9, n_test=4, n_tune=3, seed=1)
    assert [q.key for q in again.test] == [q.key for q in sets.test]  # seeded


def test_known_item_queries_find_their_own_citation() -> None:
    docs = [_doc(i, []) for i in range(20)] + [
        Document(id="PMID:99", source="medline", title="Short", text="", has_abstract=False)]
    queries = known_item_queries(docs, n=5, seed=0)
    assert len(queries) == 5 and len({q.key for q in queries}) == 5
    for query in queries:
        assert query.relevant == {f"PMID:{query.key}"}
        assert query.text == f"title number {query.key} here"


def test_document_ranker_ranks_distinct_documents(tiny_settings: Settings,
                                                  embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    searcher = open_searcher(tiny_settings, rebuild=False, embedder=embedder)
    query = Query("A00", "cholera vibrio", frozenset({"ICD10CM:A00"}))
    vector = embedder.encode([query.text])[0]
    for method in (Method("bm25", Ranking("bm25")), Method("dense", Ranking("dense")),
                   Method("rrf", Ranking("hybrid")),
                   Method("w", Ranking("hybrid", "weighted", 0.3)),
                   Method("fb", Ranking("hybrid", feedback=2, feedback_weight=1.0))):
        ranked = document_ranker(searcher, method, None, depth=5)(query, vector)
        assert 0 < len(ranked) <= 5 and len(set(ranked)) == len(ranked)
        assert ranked[0] in {"ICD10CM:A00", "ICD10CM:A00.0"}


def test_pair_queries_name_two_major_topics_of_the_same_citations() -> None:
    docs = ([_doc(i, ["B", "A"]) for i in range(3)] + [_doc(10, ["A"], ["C"])]
            + [_doc(i, ["A", "C"]) for i in range(20, 22)] + [_doc(30, ["B", "C", "X"])])
    pairs = mesh_pair_queries(docs, descriptors={"DA", "DB", "DC"}, min_both=3)
    # (A, C) is major in two citations only, C is minor in a third; X is not a descriptor
    # of the set; each pair once, named in UI order
    assert pairs == [Query("DA+DB", "A B", frozenset({"PMID:0", "PMID:1", "PMID:2"}))]
    assert {q.key for q in mesh_pair_queries(docs, {"DA", "DB", "DC"}, min_both=2)} == {
        "DA+DB", "DA+DC"}
    assert {q.key for q in mesh_pair_queries(docs, {"DA", "DB", "DC"}, min_both=1)} == {
        "DA+DB", "DA+DC", "DB+DC"}
    assert mesh_pair_queries(docs, {"DA"}, min_both=1) == []  # a pair needs both
    assert len(mesh_pair_queries(docs, {"DA", "DB", "DC"}, min_both=1, n=2, seed=3)) == 2


def test_benchmark_runs_end_to_end(tiny_settings: Settings, embedder: HashingEmbedder,
                                   tmp_path: Path) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    out = tmp_path / "results.json"
    config = BenchmarkConfig(min_major=1, n_test=1, n_tune=1, n_known=2, seed=0)
    report = run_benchmark(tiny_settings, config, out, embedder=embedder)
    assert json.loads(out.read_text())["mesh"] == json.loads(json.dumps(report["mesh"]))
    assert set(report["mesh"]) == set(report["known_item"])
    for results in (report["mesh"], report["known_item"]):
        for summary in results.values():
            assert 0.0 <= summary["ndcg@10"]["mean"] <= 1.0
    with_abstract = [d for d in iter_corpus(tiny_settings.data_dir, ("medline",))
                     if d.has_abstract]
    assert report["documents"] == len(with_abstract)
    assert report["known_item"]["bm25"]["queries"] == len(
        known_item_queries(with_abstract, n=2))
    # the known-item index holds abstracts without titles, built beside the data
    assert (tiny_settings.data_dir / "cache" / "bench" / "known-item" / "literature"
            / "manifest.json").exists()


def test_known_item_bm25_alone_matches_the_indexed_path(tiny_settings: Settings,
                                                        embedder: HashingEmbedder,
                                                        tmp_path: Path) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    config = BenchmarkConfig(min_major=1, n_test=1, n_tune=1, n_known=3, seed=0)
    full = run_benchmark(tiny_settings, config, None, embedder=embedder)
    lexical = run_benchmark(tiny_settings, BenchmarkConfig(
        min_major=1, n_test=1, n_tune=1, n_known=3, seed=0, known_item_dense=False),
        None, embedder=embedder)
    assert list(lexical["known_item"]) == ["bm25"]
    assert lexical["known_item"]["bm25"] == full["known_item"]["bm25"]
