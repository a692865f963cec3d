"""Search latency on the built literature index (the default corpus), and its parts.

Figures, not a test. Opens ``indexes/literature`` as the service does, then times, per
query, ``Searcher.search`` end to end (query embedding + ranking + snippets) for each mode,
and separately the query embedding, the dense search and BM25 (passages + titles). Hybrid
search is timed in the same process with the query through SentenceTransformer.encode (the
baseline) and through the traced encoder in float32 and, where the CPU has bfloat16
instructions, bfloat16; then re-ranked against the fused ranking alone. The dense index
kinds are compared on the same vectors in the same process: the index as
built (the baseline), exact flat, HNSW at two efSearch values and 8-bit scalar-quantised
flat, built here from its vectors, with recall@10 against the exact search.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_search.py --threads 2 --queries 200
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import faiss
import numpy as np
import torch

from assistant.config import Settings
from assistant.retrieval.build import open_searcher
from assistant.retrieval.dense import build_faiss
from assistant.retrieval.embed import Precision, base_embedder, trace_queries
from assistant.retrieval.search import MODES, Searcher

log = logging.getLogger("bench_search")


def _queries(searcher: Searcher, count: int) -> list[str]:
    """Titles of evenly spaced passages cut to their first six words: varied queries with
    an answer in the index, across all three sources."""
    store = searcher.index.passages
    step = max(1, len(store) // count)
    return [" ".join(store[i].title.split()[:6]) or "seizure"
            for i in range(0, len(store), step)][:count]


def _p50(fn: Callable[[str], object], queries: Sequence[str]) -> tuple[float, float]:
    """(p50, p90) milliseconds of ``fn`` over the queries, after one warm-up call."""
    fn(queries[0])
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def _dense_kinds(searcher: Searcher, vectors: np.ndarray, qvecs: np.ndarray) -> None:
    """Each dense kind's single-query latency and recall@10 against the built index."""
    built = searcher.index.dense
    flat = build_faiss(vectors, "flat")
    _, exact = flat.search(qvecs, 10)
    kinds: dict[str, faiss.Index] = {f"as built ({searcher.index.manifest.index_kind})": built,
                                     "flat (exact)": flat}
    for ef in (128, 512):
        start = time.perf_counter()
        kinds[f"hnsw m32 ef{ef}"] = build_faiss(vectors, "hnsw", ef_search=ef)
        log.info("hnsw build: %.1f s", time.perf_counter() - start)
    sq8 = faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit,
                                     faiss.METRIC_INNER_PRODUCT)
    sq8.train(vectors)
    sq8.add(vectors)
    kinds["flat sq8"] = sq8
    base = None
    for name, index in kinds.items():
        times = []
        for q in qvecs:
            start = time.perf_counter()
            index.search(q[None, :], 10)
            times.append(1000 * (time.perf_counter() - start))
        _, ids = index.search(qvecs, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
        p50 = statistics.median(times)
        base = base or p50
        log.info("dense %-24s p50 %6.2f ms (x%.1f faster than as built), recall@10 against "
                 "exact %.4f",
                 name, p50, base / p50, recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-kinds", action="store_true", help="skip the dense kind comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    searcher = open_searcher(Settings(), rebuild=False)
    searcher.query_vectors_kept = 0  # every timed search embeds its query, as a new one does
    assert searcher.embedder is not None
    trace_queries(searcher.embedder)  # as the service does
    searcher.embedder.encode(["warm-up"])
    manifest = searcher.index.manifest
    log.info("index: %d passages (%s), %s; opened and embedder loaded in %.1f s; %d threads",
             manifest.passage_count, manifest.source_counts, manifest.index_kind,
             time.perf_counter() - start, args.threads)
    queries = _queries(searcher, args.queries)
    embed = searcher.embedder.encode
    parts: dict[str, Callable[[str], object]] = {"embed query": lambda q: embed([q]),
             "bm25 passages + titles": searcher.lexical_scores}
    for name, fn in parts.items():
        p50, p90 = _p50(fn, queries)
        log.info("%-24s p50 %6.2f ms, p90 %6.2f ms", name, p50, p90)
    for mode in MODES:
        p50, p90 = _p50(partial(searcher.search, k=10, mode=mode), queries)
        log.info("search k=10 %-12s p50 %6.2f ms, p90 %6.2f ms (embed + rank + snippets)",
                 mode, p50, p90)
    # The baseline in this process: queries through SentenceTransformer.encode, as before
    # the traced encoder.
    base = base_embedder(searcher.embedder)
    if base is not None:
        served = base.traced_dtype
        timed: dict[str, tuple[float, float]] = {}
        runs: tuple[tuple[str, bool, Precision], ...] = (
            ("SentenceTransformer.encode (baseline)", False, "float32"),
            ("traced query encoder, float32", True, "float32"),
            ("traced query encoder, bfloat16", True, "bfloat16"))
        for name, traced, precision in runs:
            if precision == "bfloat16" and served != "bfloat16":
                continue  # no bfloat16 instructions here: emulated, never served
            base.traced, base.precision, base._traced = traced, precision, None
            searcher.search("warm-up", k=10)
            timed[name] = _p50(lambda q: searcher.search(q, k=10, mode="hybrid"), queries)
            log.info("search k=10 hybrid, %-38s p50 %6.2f ms, p90 %6.2f ms", name,
                     *timed[name])
        baseline = timed["SentenceTransformer.encode (baseline)"][0]
        for name, (p50, _) in list(timed.items())[1:]:
            log.info("hybrid p50: %s / baseline %.2fx", name, p50 / baseline)
        base.traced, base.precision, base._traced = True, "auto", None  # as served
        log.info("served: traced query encoder in %s", served)
    if searcher.reranks():
        # The re-ranker's cost, against the fused ranking alone in the same process.
        reranked: dict[bool, tuple[float, float]] = {}
        for rerank in (False, True):
            searcher.ranking = searcher.ranking.but(rerank=rerank)
            reranked[rerank] = _p50(lambda q: searcher.search(q, k=10, mode="hybrid"),
                                    queries)
            log.info("search k=10 hybrid, %-38s p50 %6.2f ms, p90 %6.2f ms",
                     "re-ranked" if rerank else "fused only (baseline)", *reranked[rerank])
        log.info("hybrid p50: re-ranked / fused only %.2fx",
                 reranked[True][0] / reranked[False][0])
    if not args.no_kinds:
        vectors = searcher.index.dense.reconstruct_n(0, manifest.passage_count)
        _dense_kinds(searcher, vectors, embed(queries))


if __name__ == "__main__":
    main()
