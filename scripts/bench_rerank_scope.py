"""The re-ranker as a search sees the corpus: all MEDLINE citations, title-only ones included.

Figures, not a test. The relevance benchmark's set (a) searches the citations with an
abstract only. A search in the service does not, and about a third of the MEDLINE citations
here have no abstract: one passage, all of it the title. This prints, on the benchmark's
*tuning* descriptors (never the reported ones), judged against every MEDLINE citation NLM
gave the descriptor as a major topic and searched over all MEDLINE passages:

- nDCG@10 of the fused ranking and of each re-ranker file given;
- the share of title-only citations in each one's first ten;
- that share among the relevant citations.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_rerank_scope.py [RERANKER.pt ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from assistant.config import Settings
from assistant.retrieval.build import open_searcher, query_embedder
from assistant.retrieval.corpus import SOURCES, iter_corpus
from assistant.retrieval.embed import encode_queries, trace_queries
from assistant.retrieval.evaluate import (
    Method,
    Query,
    document_ranker,
    evaluate_methods,
    major_topics,
    mesh_major_queries,
)
from assistant.retrieval.rerank import RELEASE_NAME, Reranker
from assistant.retrieval.search import Ranking, Searcher

log = logging.getLogger("bench_rerank_scope")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rerankers", nargs="*", type=Path,
                        help="re-ranker files (default: the release)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    medline = list(iter_corpus(settings.data_dir, ("medline",)))
    title_only = {d.id for d in medline if not d.has_abstract}
    sets = mesh_major_queries([d for d in medline if d.has_abstract])
    _, relevant = major_topics(medline)
    tune = [Query(q.key, q.text, frozenset(relevant[q.key])) for q in sets.tune]
    embedder = query_embedder(settings)
    trace_queries(embedder)  # queries embedded as the service embeds them
    base = open_searcher(settings, rebuild=False, embedder=embedder, rerank=False)
    mask = base.index.passages.source_codes == SOURCES.index("medline")
    vectors = encode_queries(embedder, [q.text for q in tune])
    share = np.mean([np.mean([d in title_only for d in q.relevant]) for q in tune])
    log.info("%d tuning descriptors over %d MEDLINE citations (%d title-only); title-only "
             "share of the relevant citations %.3f", len(tune), len(medline),
             len(title_only), share)
    files = args.rerankers or [settings.weights_dir / RELEASE_NAME]
    for path in [None, *files]:
        reranker = Reranker.load(path) if path is not None else None
        searcher = Searcher(base.index, embedder, reranker=reranker)
        method = Method(str(path or "fused"), Ranking(rerank=reranker is not None))
        if reranker is not None and not searcher.reranks(method.ranking):
            log.warning("%s does not fit this searcher: skipped", path)
            continue
        result = evaluate_methods(searcher, tune, [method], mask, vectors)[method.name]
        rank = document_ranker(searcher, method, mask)
        top = np.mean([np.mean([d in title_only for d in rank(q, v)[:10]])
                       for q, v in zip(tune, vectors, strict=True)])
        log.info("%-40s nDCG@10 %.4f, title-only share of the first ten %.3f", method.name,
                 result.mean("ndcg@10"), top)


if __name__ == "__main__":
    main()
