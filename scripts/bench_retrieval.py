"""Smoke figures for the literature index: embedding rate and search latency, on one thread.

Figures, not a test. Builds a small MEDLINE index (the first ``--passages`` passages) into a
temporary folder with the real MiniLM embedder, timing the embedding alone, then times
``Searcher.search`` (query embedding + search + snippets) per mode.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_retrieval.py \
        --passages 1000 --queries 40
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch

from assistant.config import Settings
from assistant.retrieval.build import CorpusSpec, build_index, iter_passages, open_searcher
from assistant.retrieval.embed import Embedder
from assistant.retrieval.search import MODES, Searcher

log = logging.getLogger("bench_retrieval")


class TimedEmbedder:
    """Delegates to an Embedder and adds up the seconds and texts of ``encode``."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dim, self.fingerprint = inner.name, inner.dim, inner.fingerprint
        self.seconds = 0.0
        self.texts = 0

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.inner.encode(texts, batch_size, progress)
        self.seconds += time.perf_counter() - start
        self.texts += len(texts)
        return vectors


def _queries(searcher: Searcher, count: int) -> list[str]:
    """Titles of every n-th indexed passage, cut to their first six words: realistic,
    varied queries with an answer in the index."""
    store = searcher.index.passages
    step = max(1, len(store) // count)
    return [" ".join(store[i].title.split()[:6]) for i in range(0, len(store), step)][:count]


def _time_search(searcher: Searcher, queries: list[str]) -> None:
    for mode in MODES:
        searcher.search(queries[0], k=10, mode=mode)  # warm-up
        times = []
        for query in queries:
            start = time.perf_counter()
            searcher.search(query, k=10, mode=mode)
            times.append(time.perf_counter() - start)
        ms = sorted(1000 * t for t in times)
        log.info("search k=10 %-6s: p50 %.0f ms, p90 %.0f ms, max %.0f ms over %d queries",
                 mode, statistics.median(ms), ms[int(0.9 * (len(ms) - 1))], ms[-1], len(ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=1000, help="MEDLINE passages to embed")
    parser.add_argument("--queries", type=int, default=40, help="queries to time per mode")
    parser.add_argument("--max-words", type=int, default=110, help="passage length limit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    data_dir = Settings().data_dir
    spec = CorpusSpec.make(["medline"], args.passages, args.max_words)
    words = [len(p.embed_text().split()) for p, _ in iter_passages(data_dir, spec)]
    log.info("%d passages, %.0f words each on average (max %d)", len(words),
             statistics.mean(words), max(words))

    embedder = TimedEmbedder(Embedder(data_dir))
    start = time.perf_counter()
    embedder.inner.encode(["warm-up"])  # loads the model, outside the timing
    log.info("model load: %.1f s", time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=data_dir, index_dir=Path(tmp))
        manifest = build_index(settings, sources=spec.sources, limit=spec.limit,
                               max_words=spec.max_words, progress=False, embedder=embedder)
        rate = embedder.texts / embedder.seconds
        log.info("embedding: %d passages in %.1f s = %.1f passages/s on %d torch thread(s)",
                 embedder.texts, embedder.seconds, rate, torch.get_num_threads())
        log.info("build total (parse, embed, faiss, bm25, write): %.1f s",
                 manifest.build_seconds)
        searcher = open_searcher(settings, rebuild=False, embedder=embedder.inner)
        searcher.query_vectors_kept = 0  # every timed search embeds its query
        _time_search(searcher, _queries(searcher, args.queries))
        searcher.index.close()


if __name__ == "__main__":
    main()
