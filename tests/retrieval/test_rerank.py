"""The learned re-ranker: its features against a computation by hand, the logistic
regression, the file and its refusals, the searcher re-ordering with it (and only where it
fits), training end to end on a tiny index, and the benchmark's held-out check."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
import pytest
import typer

from assistant.chat.engine import chat_searcher
from assistant.config import Settings
from assistant.retrieval.adapter import AdaptedEmbedder, QueryAdapter
from assistant.retrieval.benchmark import BenchmarkConfig, check_held_out
from assistant.retrieval.build import build_index, open_searcher, search_reranker
from assistant.retrieval.commands import run_train_reranker
from assistant.retrieval.evaluate import Query
from assistant.retrieval.lexical import tokenize_terms
from assistant.retrieval.rerank import (
    FEATURES,
    Reranker,
    RerankerConfig,
    RerankerError,
    fit_reranker,
    made_for,
    passage_vectors,
)
from assistant.retrieval.search import Ranking, Searcher
from tests.retrieval.conftest import HashingEmbedder

QUERY = "epileptic seizures genetics"


def _reranker(coef: dict[str, float], **meta: object) -> Reranker:
    """A re-ranker with the given coefficients on unscaled features."""
    weights = np.array([coef.get(name, 0.0) for name in FEATURES], dtype=np.float32)
    zeros, ones = np.zeros(len(FEATURES)), np.ones(len(FEATURES))
    return Reranker(zeros, ones, weights, 0.0, {"ranking": asdict(Ranking()), **meta})


@pytest.fixture
def index_searcher(tiny_settings: Settings, embedder: HashingEmbedder) -> Searcher:
    build_index(tiny_settings, progress=False, embedder=embedder)
    return open_searcher(tiny_settings, rebuild=False, embedder=embedder)


def test_passage_vectors_view_flat_and_hnsw_storage_and_not_compressed_ones() -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    flat = faiss.IndexFlatIP(8)
    hnsw = faiss.IndexHNSWFlat(8, 4, faiss.METRIC_INNER_PRODUCT)
    quantised = faiss.IndexScalarQuantizer(8, faiss.ScalarQuantizer.QT_8bit,
                                           faiss.METRIC_INNER_PRODUCT)
    quantised.train(vectors)
    for index in (flat, hnsw, quantised):
        index.add(vectors)
    for index in (flat, hnsw):
        view = passage_vectors(index)
        assert view is not None and np.array_equal(view, vectors)
    assert passage_vectors(quantised) is None
    assert passage_vectors(faiss.IndexFlatIP(8)) is None  # empty


def test_features_match_a_computation_by_hand(tiny_settings: Settings,
                                              embedder: HashingEmbedder) -> None:
    # short passages, so that abstracts have several
    build_index(tiny_settings, progress=False, embedder=embedder, max_words=12)
    index_searcher = open_searcher(tiny_settings, rebuild=False, embedder=embedder)
    index = index_searcher.index
    store, lexical, titles = index.passages, index.lexical, index.titles
    assert titles is not None
    vec = embedder.encode([QUERY])[0]
    ranking = Ranking(rerank=False)
    fused = index_searcher.rank(QUERY, 50, ranking, None, vec)
    rows, features = index_searcher.candidate_features(QUERY, 50, ranking, None, vec)
    assert features.shape == (len(rows), len(FEATURES)) and len(rows) > 2
    for name in ("coverage", "title_coverage", "passages", "title_bm25",
                 "title_only"):  # not constant
        assert len(set(features[:, FEATURES.index(name)].round(4))) > 1, name
    bm25, title_bm25 = lexical.scores(QUERY), titles.scores(QUERY)
    terms = [t for t in dict.fromkeys(tokenize_terms(QUERY)) if t in lexical]
    n_passages, n_docs = len(store), store.document_count

    def idf(n: int, df: int) -> float:
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    # BM25 reads "Title. passage"
    passage_terms = [set(tokenize_terms(f"{store[i].title}. {store[i].text}"))
                     for i in range(n_passages)]
    title_terms = [set() for _ in range(n_docs)]  # type: list[set[str]]
    for i in range(n_passages):
        title_terms[store.doc_rows[i]] = set(tokenize_terms(store[i].title))
    first_rows = {}
    for i, _ in fused:  # each document's best fused passage, in fused order
        first_rows.setdefault(int(store.doc_rows[i]), i)
    assert rows.tolist() == list(first_rows.values())
    fused_score = dict(fused)
    for row, got in zip(rows, features, strict=True):
        doc = store.doc_rows[row]
        own = [i for i in range(n_passages) if store.doc_rows[i] == doc]
        vectors = np.stack([index.dense.reconstruct(i) for i in own])
        df = {t: sum(t in p for p in passage_terms) for t in terms}
        docs_with = {t: {store.doc_rows[i] for i in range(n_passages) if t in passage_terms[i]}
                     for t in terms}
        coverage = (sum(idf(n_passages, df[t]) for t in terms if doc in docs_with[t])
                    / sum(idf(n_passages, df[t]) for t in terms))
        in_titles = [t for t in terms if t in titles]
        title_df = {t: sum(t in title for title in title_terms) for t in in_titles}
        title_total = sum(idf(n_docs, title_df[t]) for t in in_titles)
        title_coverage = (sum(idf(n_docs, title_df[t]) for t in in_titles
                              if t in title_terms[doc]) / title_total) if title_total else 0
        title_only = len(own) == 1 and store[own[0]].text == store[own[0]].title
        expected = [float((vectors @ vec).max()), bm25[own].max(), bm25[own].sum(),
                    title_bm25[doc], fused_score[int(row)], math.log(len(own)), coverage,
                    title_coverage, float(title_only)]
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_fit_learns_which_feature_tells_relevance() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, len(FEATURES))).astype(np.float32)
    labels = features[:, FEATURES.index("coverage")] > 0.5
    reranker = fit_reranker(features, labels, RerankerConfig(), {"x": 1})
    coef = dict(zip(FEATURES, reranker.coef, strict=True))
    assert max(coef, key=lambda name: abs(coef[name])) == "coverage" and coef["coverage"] > 0
    scores = reranker.scores(features)
    assert scores[labels].mean() > 0.5 > scores[~labels].mean()
    with pytest.raises(ValueError, match="all relevant or all not"):
        fit_reranker(features, np.zeros(400, bool), RerankerConfig(), {})
    with pytest.raises(ValueError, match="features"):
        fit_reranker(features[:, :3], labels, RerankerConfig(), {})


def test_saved_reranker_loads_and_refuses_what_it_was_not_made_for(tmp_path: Path) -> None:
    path = tmp_path / "reranker.pt"
    made = _reranker({"coverage": 2.0}, embedder_sha256="a" * 64,
                     query_adapter_sha256="b" * 64, held_out_descriptors=["D1"])
    digest = made.save(path)
    loaded = Reranker.load(path)
    assert loaded.sha256 == digest and loaded.held_out == {"D1"}
    features = np.random.default_rng(1).normal(size=(5, len(FEATURES))).astype(np.float32)
    assert np.array_equal(loaded.scores(features), made.scores(features))
    shipped = asdict(Ranking())

    def adapted(fingerprint: str) -> AdaptedEmbedder:
        adapter = QueryAdapter(np.zeros((HashingEmbedder.dim,) * 2), {})
        adapter.sha256 = "b" * 64
        return AdaptedEmbedder(HashingEmbedder(fingerprint), adapter)

    assert made_for(adapted("a" * 64)) == {"embedder_sha256": "a" * 64,
                                           "query_adapter_sha256": "b" * 64}
    loaded.check(adapted("a" * 64), shipped)
    with pytest.raises(RerankerError, match="embedder"):
        loaded.check(adapted("c" * 64), shipped)
    with pytest.raises(RerankerError, match="query adapter"):
        loaded.check(HashingEmbedder("a" * 64), shipped)  # no adapter
    with pytest.raises(RerankerError, match="fusion"):
        loaded.check(adapted("a" * 64), asdict(Ranking(fusion="rrf")))
    assert loaded.fits(asdict(Ranking(rerank=False)))  # the switch is not the fusion
    assert not loaded.fits(asdict(Ranking(title_weight=1.0)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RerankerError):
        Reranker.load(path)


def test_searcher_orders_documents_by_the_reranker(index_searcher: Searcher) -> None:
    index, embedder = index_searcher.index, index_searcher.embedder
    # the fewest passages first, then the best fused score: unlike the fused order
    reranker = _reranker({"passages": -50.0, "fused": 1.0})
    searcher = Searcher(index, embedder, reranker=reranker)
    assert searcher.reranks()
    hits = searcher.search(QUERY, k=10)
    # the fused ranking's candidate documents, re-ordered
    fused = Searcher(index, embedder).rank(QUERY, searcher.candidates, Ranking(rerank=False))
    assert {h.doc_id for h in hits} <= {index.passages.doc_id(i) for i, _ in fused}
    counts = {h.doc_id: sum(index.passages.doc_id(i) == h.doc_id for i in range(len(index)))
              for h in hits}
    assert [counts[h.doc_id] for h in hits] == sorted(counts[h.doc_id] for h in hits)
    assert len({h.doc_id for h in hits}) == len(hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_reranking_applies_to_the_fusion_it_was_trained_on_only(
        index_searcher: Searcher) -> None:
    searcher = Searcher(index_searcher.index, index_searcher.embedder,
                        reranker=_reranker({"passages": -50.0}))
    assert searcher.reranks(Ranking())
    assert not searcher.reranks(Ranking(rerank=False))
    assert not searcher.reranks(Ranking(mode="dense"))
    assert not searcher.reranks(Ranking(mode="bm25"))
    assert not searcher.reranks(Ranking(fusion="rrf"))
    assert not searcher.reranks(Ranking(weight=0.5))
    # an override through search() is fused, not re-ranked
    rrf = searcher.search(QUERY, k=5, fusion="rrf")
    assert rrf == Searcher(searcher.index, searcher.embedder).search(QUERY, k=5, fusion="rrf")
    assert not Searcher(searcher.index, searcher.embedder).reranks()  # none given


def test_chat_searches_as_the_literature_search_does(index_searcher: Searcher) -> None:
    searcher = Searcher(index_searcher.index, index_searcher.embedder,
                        reranker=_reranker({"passages": -50.0}))
    chat = chat_searcher(searcher)
    assert chat.reranker is searcher.reranker and chat.reranks()
    assert ([h.doc_id for h in chat.search(QUERY, k=5)]
            == [h.doc_id for h in searcher.search(QUERY, k=5)])


def test_an_index_without_titles_is_not_reranked(tiny_settings: Settings,
                                                 embedder: HashingEmbedder,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder, titles=False)
    index = open_searcher(tiny_settings, rebuild=False, embedder=embedder).index
    with caplog.at_level(logging.INFO, logger="assistant.retrieval.search"):
        searcher = Searcher(index, embedder,
                            reranker=_reranker({"passages": -1.0}, index_titles=True))
    assert not searcher.reranks() and "title channel, this one has none" in caplog.text
    titleless = Searcher(index, embedder,
                         reranker=_reranker({"passages": -1.0}, index_titles=False))
    assert titleless.reranks()


def test_search_reranker_loads_the_release_only_where_it_fits(
        tiny_settings: Settings, embedder: HashingEmbedder, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    weights = tmp_path / "weights"
    settings = tiny_settings.model_copy(update={"weights_dir": weights})
    assert search_reranker(settings, embedder) is None  # no file
    _reranker({"coverage": 1.0}, embedder_sha256=embedder.fingerprint,
              query_adapter_sha256=None).save(weights / "reranker-medline.pt")
    assert search_reranker(settings, embedder) is not None
    off = settings.model_copy(update={"reranker": False})
    assert search_reranker(off, embedder) is None
    with caplog.at_level(logging.WARNING):
        assert search_reranker(settings, HashingEmbedder("e" * 64)) is None
    assert "not re-ranking" in caplog.text


def test_trained_end_to_end_on_a_tiny_index(tiny_settings: Settings,
                                            embedder: HashingEmbedder,
                                            tmp_path: Path) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    out = tmp_path / "reranker.pt"
    with pytest.raises(typer.Exit):  # every descriptor held out: nothing to train on
        run_train_reranker(tiny_settings, RerankerConfig(depth=20), out,
                           held_out=BenchmarkConfig(min_major=1), embedder=embedder)
    assert not out.exists()
    none_held = BenchmarkConfig(min_major=1, n_test=0, n_tune=0)
    reranker = run_train_reranker(tiny_settings, RerankerConfig(depth=20), out,
                                  held_out=none_held, embedder=embedder)
    meta = Reranker.load(out).meta
    assert meta["embedder_sha256"] == embedder.fingerprint
    assert meta["query_adapter_sha256"] is None and meta["index_titles"] is True
    assert meta["training_descriptors"] >= 2 and 0 < meta["relevant_candidates"] < meta[
        "candidates"]
    assert meta["command"] == "assistant train reranker" and reranker.held_out == set()
    assert set(meta["coefficients"]) == set(FEATURES)
    searcher = Searcher(open_searcher(tiny_settings, rebuild=False, embedder=embedder).index,
                        embedder, reranker=reranker)
    assert searcher.reranks() and searcher.search(QUERY, k=3)


def test_check_held_out_names_the_reranker_and_its_leaked_descriptors() -> None:
    reranker = _reranker({}, held_out_descriptors=["D1"])
    check_held_out(reranker, [Query("D1", "a", frozenset())])
    with pytest.raises(ValueError, match=r"re-ranker.*D2"):
        check_held_out(reranker, [Query("D2", "b", frozenset())])
