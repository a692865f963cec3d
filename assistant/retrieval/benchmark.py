"""``assistant eval retrieval``: the relevance benchmark run end to end (see evaluate.py).

Set (a) is searched in the literature index itself (``indexes/literature``), restricted to
the passages of MEDLINE citations with an abstract; set (b) in an abstract-only index of
the same citations built with the same code into ``<data_dir>/cache/bench/known-item``
(its embeddings are cached, so it is built once). Fusion weights and feedback are tuned on
the tuning descriptors only, then every method runs on the test descriptors in one run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Settings
from assistant.retrieval.adapter import QueryAdapter
from assistant.retrieval.build import build_index, ensure_index, open_searcher, query_embedder
from assistant.retrieval.corpus import Document, iter_corpus
from assistant.retrieval.embed import TextEmbedder, encode_queries, trace_queries
from assistant.retrieval.evaluate import (
    DEPTH,
    METRICS,
    Method,
    MethodResult,
    Query,
    evaluate_methods,
    known_item_queries,
    mesh_major_queries,
    mesh_pair_queries,
    query_metrics,
)
from assistant.retrieval.index import IndexUnusableError
from assistant.retrieval.lexical import LexicalIndex, top_k
from assistant.retrieval.passages import split_passages
from assistant.retrieval.rerank import Reranker
from assistant.retrieval.search import Ranking, Searcher, best_per_document

log = logging.getLogger(__name__)

WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # dense share in weighted fusion
TITLE_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # title BM25 added to passage BM25
FEEDBACK = ((5, 0.5), (5, 1.0), (10, 0.5), (10, 1.0), (20, 1.0), (10, 2.0))  # (m, weight)


@dataclass(frozen=True)
class BenchmarkConfig:
    min_major: int = 5  # major-topic citations a descriptor needs to be a query
    n_test: int = 300
    n_tune: int = 300
    n_known: int = 1000
    seed: int = 0
    known_item: bool = True
    known_item_dense: bool = True  # False: BM25 only, no abstract-only embeddings needed
    n_pairs: int = 300  # set (c), two reported descriptors together; 0: not run
    min_both: int = 2  # citations a pair needs as major topics of both


@dataclass(frozen=True)
class Tuned:
    ranking: Ranking  # the best on the tuning descriptors: what ships (search.Ranking)
    weight: float  # the best weighted-fusion share, reported beside RRF
    scores: dict[str, dict[str, float]]  # tuning nDCG@10 of every setting tried


def base_methods(tuned: Tuned) -> list[Method]:
    """Plain stemmed BM25, BM25 with the title channel, dense, both fusions, and the tuned
    ranking (with feedback, if tuning chose it; re-ranked, if tuning chose that)."""
    tw = tuned.ranking.title_weight
    methods = [Method("bm25", Ranking("bm25", title_weight=0.0, rerank=False)),
               Method(f"bm25 + title x{tw:g}", Ranking("bm25", title_weight=tw, rerank=False)),
               Method("dense", Ranking("dense", rerank=False)),
               Method("hybrid rrf", Ranking("hybrid", "rrf", title_weight=tw, rerank=False)),
               Method(f"hybrid weighted {tuned.weight:g}",
                      Ranking("hybrid", "weighted", tuned.weight, title_weight=tw,
                              rerank=False))]
    if tuned.ranking.feedback or tuned.ranking.rerank:
        methods.append(Method(f"tuned: {describe(tuned.ranking)}", tuned.ranking))
    return methods


def describe(r: Ranking) -> str:
    fusion = "rrf" if r.fusion == "rrf" else f"weighted {r.weight:g}"
    feedback = f", feedback {r.feedback} x{r.feedback_weight:g}" if r.feedback else ""
    rerank = ", re-ranked" if r.rerank else ""
    return f"{r.mode} {fusion}, title x{r.title_weight:g}{feedback}{rerank}"


def abstract_mask(searcher: Searcher, with_abstract: set[str]) -> np.ndarray:
    """(N,) True for the passages of the documents in ``with_abstract``."""
    store = searcher.index.passages
    return np.fromiter((store.doc_id(i) in with_abstract for i in range(len(store))),
                       dtype=bool, count=len(store))


def _best(searcher: Searcher, tune: Sequence[Query], mask: np.ndarray, vectors: np.ndarray,
          rankings: Sequence[Ranking]) -> tuple[Ranking, dict[str, float]]:
    """The ranking with the best tuning nDCG@10 (ties: the first listed)."""
    methods = [Method(describe(r), r) for r in rankings]
    results = evaluate_methods(searcher, tune, methods, mask, vectors, label="tuning")
    scores = {m.name: results[m.name].mean("ndcg@10") for m in methods}
    best = max(range(len(methods)), key=lambda i: (scores[methods[i].name], -i))
    return methods[best].ranking, scores


def tune(searcher: Searcher, queries: Sequence[Query], mask: np.ndarray,
         vectors: np.ndarray) -> Tuned:
    """On the tuning queries, in turn: the title weight (BM25 alone), the fusion (RRF or a
    weighted share), dense feedback on the best fusion, then the searcher's re-ranker (if
    it has one made for the chosen fusion)."""
    bm25, title_scores = _best(searcher, queries, mask, vectors,
                               [Ranking("bm25", title_weight=tw, rerank=False)
                                for tw in TITLE_WEIGHTS])
    tw = bm25.title_weight
    fusions = [Ranking("hybrid", "rrf", title_weight=tw, rerank=False)] + [
        Ranking("hybrid", "weighted", w, title_weight=tw, rerank=False) for w in WEIGHTS]
    fused, fusion_scores = _best(searcher, queries, mask, vectors, fusions)
    weighted = max(fusions[1:], key=lambda r: fusion_scores[describe(r)]).weight
    shipped, feedback_scores = _best(searcher, queries, mask, vectors, [fused] + [
        fused.but(feedback=m, feedback_weight=b) for m, b in FEEDBACK])
    rerank_scores: dict[str, float] = {}
    if searcher.reranks(shipped.but(rerank=True)):
        shipped, rerank_scores = _best(searcher, queries, mask, vectors,
                                       [shipped, shipped.but(rerank=True)])
    log.info("tuning nDCG@10: %s; chosen: %s", {**title_scores, **fusion_scores,
                                                **feedback_scores, **rerank_scores},
             describe(shipped))
    return Tuned(shipped, weighted, {"title": title_scores, "fusion": fusion_scores,
                                     "feedback": feedback_scores, "rerank": rerank_scores})


def known_item_searcher(settings: Settings, embedder: TextEmbedder,
                        reranker: Reranker | None = None) -> Searcher:
    """The abstract-only MEDLINE index, built (once) beside the data; ``reranker``: the
    literature searcher's, so that the shipped ranking is measured as it ships."""
    bench = settings.model_copy(update={"index_dir": settings.data_dir / "cache" / "bench"
                                        / "known-item"})
    spec = {"sources": ["medline"], "titles": False, "abstracts_only": True}
    try:
        return Searcher(ensure_index(bench, rebuild=False, embedder=embedder), embedder,
                        embed_snippets=False, reranker=reranker)
    except IndexUnusableError as exc:  # missing, stale or corrupt: (re)build it
        log.info("building the abstract-only index for the known-item queries (%s)", exc)
    build_index(bench, embedder=embedder, progress=True, **spec)  # type: ignore[arg-type]
    return Searcher(ensure_index(bench, rebuild=False, embedder=embedder), embedder,
                    embed_snippets=False, reranker=reranker)


def known_item_bm25(docs: Sequence[Document], queries: Sequence[Query],
                    max_words: int = 110) -> MethodResult:
    """Known item with BM25 alone over abstract-only passages cut as the index cuts them
    (no embeddings needed): documents ranked by their best passage."""
    passages = [p for d in docs for p in split_passages(d, max_words, 1) if p.text]
    lexical = LexicalIndex.build([p.text for p in passages])
    doc_ids = [p.doc_id for p in passages]
    result = MethodResult("bm25")
    for query in queries:
        scores, ids = top_k(lexical.scores(query.text), 3 * DEPTH)
        ranked = best_per_document(list(zip(ids.tolist(), scores.tolist(), strict=True)),
                                   [doc_ids[i] for i in ids], DEPTH)
        result.add(query_metrics([doc_ids[i] for i, _ in ranked], query.relevant))
    return result


def _table(title: str, results: dict[str, MethodResult], queries: int) -> list[str]:
    lines = [f"{title} ({queries} queries)", f"  {'method':28s} " + " ".join(
        f"{m:>22s}" for m in METRICS)]
    for name, result in results.items():
        cells = []
        for metric in METRICS:
            low, high = result.summary()[metric]["ci95"]
            cells.append(f"{result.mean(metric):.3f} [{low:.3f}-{high:.3f}]".rjust(22))
        lines.append(f"  {name:28s} " + " ".join(cells))
    return lines


def check_held_out(model: QueryAdapter | Reranker, queries: Sequence[Query]) -> None:
    """Refuses (ValueError) to report on descriptors whose judgments trained the query
    adapter or the re-ranker."""
    seen = {q.key for q in queries} - model.held_out
    if seen:
        what, setting = (("query adapter", "ASSISTANT_QUERY_ADAPTER") if isinstance(
            model, QueryAdapter) else ("re-ranker", "ASSISTANT_RERANKER"))
        raise ValueError(
            f"the {what} was trained on {len(seen)} of these descriptors' judgments "
            f"(e.g. {sorted(seen)[:3]}): report with its own query sets (the defaults), "
            f"or without it ({setting}=false)")


def run_benchmark(settings: Settings, config: BenchmarkConfig, out: Path | None = None,
                  embedder: TextEmbedder | None = None) -> dict[str, Any]:
    """Every query set, every method: the figures (written to ``out`` as JSON), with the
    printable tables under "table"."""
    start = time.perf_counter()
    docs: list[Document] = [d for d in iter_corpus(settings.data_dir, ("medline",))
                            if d.has_abstract]
    embedder = embedder or query_embedder(settings)
    trace_queries(embedder)  # queries embedded as the service embeds them
    searcher = open_searcher(settings, rebuild=False, embedder=embedder)
    mask = abstract_mask(searcher, {d.id for d in docs})
    sets = mesh_major_queries(docs, config.min_major, config.n_test, config.n_tune,
                              config.seed)
    adapter = getattr(embedder, "adapter", None)
    for model in (adapter, searcher.reranker):
        if model is not None:
            check_held_out(model, [*sets.test, *sets.tune])
    report: dict[str, Any] = {"config": config.__dict__, "documents": len(docs),
                              "query_adapter": adapter.sha256 if adapter else None,
                              "reranker": (searcher.reranker.sha256 if searcher.reranker
                                           else None),
                              "eligible_descriptors": sets.eligible,
                              "index": searcher.index.manifest.corpus_sha256}
    tune_vecs = encode_queries(embedder, [q.text for q in sets.tune])
    tuned = tune(searcher, sets.tune, mask, tune_vecs)
    report["tuning"] = {"chosen": asdict(tuned.ranking), "ndcg@10": tuned.scores}
    test = evaluate_methods(searcher, sets.test, base_methods(tuned), mask, progress=True,
                            label="MeSH")
    report["mesh"] = {name: r.summary() for name, r in test.items()}
    lines = _table(f"(a) MeSH major topics over {len(docs)} abstracts", test, len(sets.test))
    if config.known_item:
        known = known_item_queries(docs, config.n_known, config.seed)
        if config.known_item_dense:
            ki = known_item_searcher(settings, embedder, searcher.reranker)
            # the shipped ranking as it runs there (an index without titles is not re-ranked)
            shipped = replace(tuned, ranking=tuned.ranking.but(
                rerank=tuned.ranking.rerank and ki.reranks(tuned.ranking)))
            results = evaluate_methods(ki, known, base_methods(shipped), None, progress=True,
                                       label="known item")
        else:
            results = {"bm25": known_item_bm25(docs, known)}
        report["known_item"] = {name: r.summary() for name, r in results.items()}
        lines += _table("(b) known item, title -> abstract-only index", results, len(known))
    if config.n_pairs:
        pairs = mesh_pair_queries(docs, {q.key for q in sets.test}, config.min_both,
                                  config.n_pairs, config.seed)
        report["mesh_pairs_queries"] = len(pairs)
        if pairs:
            both = evaluate_methods(searcher, pairs, base_methods(tuned), mask,
                                    progress=True, label="MeSH pairs")
            report["mesh_pairs"] = {name: r.summary() for name, r in both.items()}
            lines += _table("(c) two MeSH major topics named together", both, len(pairs))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["table"] = lines
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report
