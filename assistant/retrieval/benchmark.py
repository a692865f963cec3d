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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import Settings
from assistant.retrieval.build import build_index, ensure_index, open_searcher
from assistant.retrieval.corpus import Document, iter_corpus
from assistant.retrieval.embed import Embedder, TextEmbedder
from assistant.retrieval.evaluate import (
    METRICS,
    Method,
    MethodResult,
    Query,
    evaluate_methods,
    known_item_queries,
    mesh_major_queries,
)
from assistant.retrieval.index import IndexUnusableError
from assistant.retrieval.search import Searcher

log = logging.getLogger(__name__)

WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # dense share in weighted fusion, tuned
TITLE_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # title BM25 added to passage BM25, tuned


@dataclass(frozen=True)
class BenchmarkConfig:
    min_major: int = 5  # major-topic citations a descriptor needs to be a query
    n_test: int = 300
    n_tune: int = 300
    n_known: int = 1000
    seed: int = 0
    known_item: bool = True


@dataclass(frozen=True)
class Tuned:
    title_weight: float
    weight: float  # dense share in weighted fusion
    scores: dict[str, dict[float, float]]  # tuning nDCG@10 per setting tried


def base_methods(tuned: Tuned) -> list[Method]:
    """Plain stemmed BM25, BM25 with the title channel, dense, and both fusions."""
    tw = tuned.title_weight
    return [Method("bm25", "bm25", title_weight=0.0),
            Method(f"bm25 + title x{tw:g}", "bm25", title_weight=tw),
            Method("dense", "dense"),
            Method("hybrid rrf", "hybrid", "rrf", title_weight=tw),
            Method(f"hybrid weighted {tuned.weight:g}", "hybrid", "weighted", tuned.weight,
                   title_weight=tw)]


def abstract_mask(searcher: Searcher, with_abstract: set[str]) -> np.ndarray:
    """(N,) True for the passages of the documents in ``with_abstract``."""
    store = searcher.index.passages
    return np.fromiter((store.doc_id(i) in with_abstract for i in range(len(store))),
                       dtype=bool, count=len(store))


def _best(searcher: Searcher, tune: Sequence[Query], mask: np.ndarray, vectors: np.ndarray,
          methods: dict[float, Method]) -> tuple[float, dict[float, float]]:
    """The setting whose method has the best tuning nDCG@10 (ties: the smaller setting)."""
    results = evaluate_methods(searcher, tune, list(methods.values()), mask, vectors,
                               label="tuning")
    scores = {value: results[m.name].mean("ndcg@10") for value, m in methods.items()}
    return max(scores, key=lambda v: (scores[v], -v)), scores


def tune(searcher: Searcher, queries: Sequence[Query], mask: np.ndarray,
         vectors: np.ndarray) -> Tuned:
    """The title weight (on BM25 alone), then the fusion weight, on the tuning queries."""
    title_weight, title_scores = _best(searcher, queries, mask, vectors, {
        tw: Method(f"title {tw}", "bm25", title_weight=tw) for tw in TITLE_WEIGHTS})
    weight, weight_scores = _best(searcher, queries, mask, vectors, {
        w: Method(f"w {w}", "hybrid", "weighted", w, title_weight=title_weight)
        for w in WEIGHTS})
    log.info("tuning nDCG@10: title weights %s, fusion weights %s; chosen %g and %g",
             title_scores, weight_scores, title_weight, weight)
    return Tuned(title_weight, weight, {"title_weight": title_scores,
                                        "fusion_weight": weight_scores})


def known_item_searcher(settings: Settings, embedder: TextEmbedder) -> Searcher:
    """The abstract-only MEDLINE index, built (once) beside the data."""
    bench = settings.model_copy(update={"index_dir": settings.data_dir / "cache" / "bench"
                                        / "known-item"})
    spec = {"sources": ["medline"], "titles": False, "abstracts_only": True}
    try:
        return Searcher(ensure_index(bench, rebuild=False, embedder=embedder), embedder,
                        embed_snippets=False)
    except IndexUnusableError as exc:  # missing, stale or corrupt: (re)build it
        log.info("building the abstract-only index for the known-item queries (%s)", exc)
    build_index(bench, embedder=embedder, progress=True, **spec)  # type: ignore[arg-type]
    return Searcher(ensure_index(bench, rebuild=False, embedder=embedder), embedder,
                    embed_snippets=False)


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


def run_benchmark(settings: Settings, config: BenchmarkConfig, out: Path | None = None,
                  embedder: TextEmbedder | None = None) -> dict[str, Any]:
    """Both query sets, every method: the figures (written to ``out`` as JSON), with the
    printable tables under "table"."""
    start = time.perf_counter()
    docs: list[Document] = [d for d in iter_corpus(settings.data_dir, ("medline",))
                            if d.has_abstract]
    embedder = embedder or Embedder(settings.data_dir)
    searcher = open_searcher(settings, rebuild=False, embedder=embedder)
    mask = abstract_mask(searcher, {d.id for d in docs})
    sets = mesh_major_queries(docs, config.min_major, config.n_test, config.n_tune,
                              config.seed)
    report: dict[str, Any] = {"config": config.__dict__, "documents": len(docs),
                              "eligible_descriptors": sets.eligible,
                              "index": searcher.index.manifest.corpus_sha256}
    tune_vecs = embedder.encode([q.text for q in sets.tune])
    tuned = tune(searcher, sets.tune, mask, tune_vecs)
    report["tuning"] = {"title_weight": tuned.title_weight, "fusion_weight": tuned.weight,
                        "ndcg@10": {k: {str(v): s for v, s in d.items()}
                                    for k, d in tuned.scores.items()}}
    test = evaluate_methods(searcher, sets.test, base_methods(tuned), mask, progress=True,
                            label="MeSH")
    report["mesh"] = {name: r.summary() for name, r in test.items()}
    lines = _table(f"(a) MeSH major topics over {len(docs)} abstracts", test, len(sets.test))
    if config.known_item:
        known = known_item_queries(docs, config.n_known, config.seed)
        ki = known_item_searcher(settings, embedder)
        results = evaluate_methods(ki, known, base_methods(tuned), None, progress=True,
                                   label="known item")
        report["known_item"] = {name: r.summary() for name, r in results.items()}
        lines += _table("(b) known item, title -> abstract-only index", results, len(known))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["table"] = lines
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report
