"""The relevance benchmark: judgments made by NLM's indexers, not by us.

Two query sets over the MEDLINE citations that have an abstract:

(a) **MeSH major topics**: a descriptor that is a major topic of at least ``min_major``
    citations is a query (its name); the relevant documents are exactly those citations.
    The descriptors are shuffled with a fixed seed and cut into a *test* set, the one
    reported, and a disjoint *tuning* set: whatever is tuned (fusion weight, feedback)
    sees only tuning judgments.
(b) **Known item**: a citation's title is the query and its own abstract the one relevant
    document, searched in an index of abstracts without their titles.
(c) **Two topics**: two of set (a)'s reported descriptors that are both major topics of at
    least ``min_both`` citations, named together ("Brain Electroencephalography"); the
    relevant documents are the citations about both. A query of two concepts, neither of
    which tuning or training saw, in a form unlike any query they saw.

Rankings are of documents: a document ranks where its best passage ranks, as in
``Searcher.search``. Metrics: nDCG@10 (binary gains), Recall@100 and MRR (reciprocal rank of
the first relevant document within the first 100, else 0), each a mean over queries with a
95% bootstrap interval.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from assistant.retrieval.corpus import Document
from assistant.retrieval.embed import encode_queries
from assistant.retrieval.search import Ranking, Searcher, best_per_document

log = logging.getLogger(__name__)

DEPTH = 100  # documents ranked per query: Recall@100 and MRR need no more
METRICS = ("ndcg@10", "recall@100", "mrr")


@dataclass(frozen=True)
class Query:
    key: str  # descriptor UI ("D004827") or the target's PMID
    text: str
    relevant: frozenset[str]  # document ids, "PMID:n"


@dataclass(frozen=True)
class QuerySets:
    test: list[Query]
    tune: list[Query]
    eligible: int  # descriptors meeting the threshold, before the cut


def major_topics(docs: Iterable[Document]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Every MeSH descriptor that is a major topic of one of ``docs``: its name, and the
    ids of the documents it is a major topic of (both keyed by descriptor UI)."""
    names: dict[str, str] = {}
    relevant: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        for heading in doc.mesh:
            if heading.major:
                names[heading.ui] = heading.descriptor
                relevant[heading.ui].add(doc.id)
    return names, dict(relevant)


def mesh_major_queries(docs: Iterable[Document], min_major: int = 5, n_test: int = 300,
                       n_tune: int = 300, seed: int = 0) -> QuerySets:
    """Set (a): descriptor names as queries, their major-topic citations as judgments.

    The eligible descriptors (sorted by UI) are shuffled with ``seed``; the first
    ``n_test`` are the reported queries and the next ``n_tune`` the tuning ones.
    """
    names, relevant = major_topics(docs)
    eligible = sorted(ui for ui, ids in relevant.items() if len(ids) >= min_major)
    random.Random(seed).shuffle(eligible)
    queries = [Query(ui, names[ui], frozenset(relevant[ui])) for ui in eligible]
    return QuerySets(queries[:n_test], queries[n_test:n_test + n_tune], len(eligible))


def mesh_pair_queries(docs: Iterable[Document], descriptors: AbstractSet[str],
                      min_both: int = 2, n: int = 300, seed: int = 0) -> list[Query]:
    """Set (c): up to ``n`` pairs of ``descriptors`` (a seeded sample of the eligible ones)
    that are both major topics of at least ``min_both`` of ``docs``; the query is their
    names joined by a space, in the order of their UIs, each pair once."""
    names: dict[str, str] = {}
    both: dict[tuple[str, str], set[str]] = defaultdict(set)
    for doc in docs:
        majors = {h.ui: h.descriptor for h in doc.mesh if h.major}
        names.update(majors)
        chosen = sorted(majors.keys() & descriptors)
        for i, a in enumerate(chosen):
            for b in chosen[i + 1:]:
                both[(a, b)].add(doc.id)
    eligible = sorted(pair for pair, ids in both.items() if len(ids) >= min_both)
    random.Random(seed).shuffle(eligible)
    return [Query(f"{a}+{b}", f"{names[a]} {names[b]}", frozenset(both[(a, b)]))
            for a, b in eligible[:n]]


def known_item_queries(docs: Iterable[Document], n: int = 1000, seed: int = 0) -> list[Query]:
    """Set (b): ``n`` citations' titles (seeded sample of those with an abstract and a
    title of at least three words), each finding its own abstract."""
    pool = sorted((d for d in docs if d.has_abstract and len(d.title.split()) >= 3),
                  key=lambda d: d.id)
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    return [Query(d.key, d.title, frozenset({d.id})) for d in chosen]


# -- metrics -------------------------------------------------------------------------------


def ndcg_at(ranked: Sequence[Hashable], relevant: AbstractSet[Hashable], k: int = 10) -> float:
    """Binary-gain nDCG@k: DCG of ``ranked`` over the DCG of an ideal ranking."""
    gains = [1.0 / np.log2(rank + 2) for rank, doc in enumerate(ranked[:k]) if doc in relevant]
    ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return float(sum(gains) / ideal) if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int = 100) -> float:
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: frozenset[str], k: int = 100) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def query_metrics(ranked: Sequence[str], relevant: frozenset[str]) -> dict[str, float]:
    return {"ndcg@10": ndcg_at(ranked, relevant), "recall@100": recall_at(ranked, relevant),
            "mrr": reciprocal_rank(ranked, relevant)}


def bootstrap_interval(values: Sequence[float], n: int = 2000, seed: int = 0
                       ) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class MethodResult:
    """Per-query metrics of one ranking method on one query set, and their summary."""

    name: str
    per_query: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})

    def add(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.per_query[name].append(value)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.per_query[metric])) if self.per_query[metric] else 0.0

    def summary(self) -> dict[str, Any]:
        return {m: {"mean": self.mean(m), "ci95": bootstrap_interval(self.per_query[m])}
                for m in METRICS} | {"queries": len(self.per_query["mrr"])}


# -- ranking -------------------------------------------------------------------------------

Ranker = Callable[[Query, np.ndarray], list[str]]  # (query, its vector) -> document ids


@dataclass(frozen=True)
class Method:
    """A named way of ranking."""

    name: str
    ranking: Ranking


def document_ranker(searcher: Searcher, method: Method, mask: np.ndarray | None,
                    depth: int = DEPTH) -> Ranker:
    """Documents ranked by ``method`` among the passages in ``mask``: each ranker fetches
    three passages per wanted document, enough for ``depth`` distinct documents."""
    store = searcher.index.passages

    def rank(query: Query, vector: np.ndarray) -> list[str]:
        ranked = searcher.rank(query.text, 3 * depth, method.ranking, mask,
                               vector if vector.size else None)
        kept = best_per_document(ranked, [store.doc_id(i) for i, _ in ranked], depth)
        return [store.doc_id(i) for i, _ in kept]

    return rank


def evaluate_methods(searcher: Searcher, queries: Sequence[Query], methods: Sequence[Method],
                     mask: np.ndarray | None, vectors: np.ndarray | None = None,
                     progress: bool = False, label: str = "") -> dict[str, MethodResult]:
    """Every method on every query; ``vectors`` (Q, d) are the embedded query texts."""
    if vectors is None and searcher.embedder is not None:
        vectors = encode_queries(searcher.embedder, [q.text for q in queries])
    results = {m.name: MethodResult(m.name) for m in methods}
    rankers = {m.name: document_ranker(searcher, m, mask) for m in methods}
    for i, query in enumerate(tqdm(queries, desc=f"queries {label}".strip(), unit="query",
                                   disable=not progress)):
        vector = vectors[i] if vectors is not None else np.zeros(0, np.float32)
        for name, ranker in rankers.items():
            results[name].add(query_metrics(ranker(query, vector), query.relevant))
    return results
