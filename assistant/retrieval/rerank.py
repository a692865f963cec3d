"""A learned re-ranker of the fused candidates, trained on MEDLINE's own indexing.

Fusion scores a passage from two numbers (its dense and its BM25 score). The re-ranker
scores a candidate *document* from nine, measured over all of its passages: its best dense
score, its best and summed passage BM25, its title's BM25, its fused score, how many
passages it has (log), the share of the query's terms (weighted by their rarity) that occur
in it and in its title, and whether it is its title alone. A logistic regression over those
(standardised) features was fitted to tell the citations NLM's indexers gave a MeSH
descriptor as a major topic from the other MEDLINE citations that descriptor's name
retrieves, those without an abstract included.

Training descriptors are those of at least ``min_major`` citations *outside* the relevance
benchmark's reported and tuning sets; their identifiers are stored in the file, as the
query adapter stores its own, so that the benchmark can refuse to report on a descriptor the
re-ranker was trained on. The features depend on the query vectors and the fusion, so the
file records the query adapter and the ranking it was trained with, and a searcher with
others does not use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from assistant.checkpoint_io import CheckpointError, read_payload, write_payload
from assistant.retrieval.index import LoadedIndex
from assistant.retrieval.lexical import LexicalIndex

log = logging.getLogger(__name__)

FORMAT = "assistant-reranker-v1"
RELEASE_NAME = "reranker-medline.pt"
FEATURES = ("dense_max", "bm25_max", "bm25_sum", "title_bm25", "fused", "passages",
            "coverage", "title_coverage", "title_only")


class RerankerError(CheckpointError):
    """A re-ranker file is unreadable, or made for another embedder or query adapter."""


def passage_vectors(index: faiss.Index) -> np.ndarray | None:
    """(N, d) float32 view of the stored vectors of a flat or HNSW-flat index (no copy),
    None for compressed indexes (IVF-PQ), whose vectors are not kept."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if not isinstance(inner, faiss.IndexFlat) or inner.ntotal == 0:
        return None
    flat = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
    return np.asarray(flat).reshape(inner.ntotal, inner.d)


class DocumentFeatures:
    """Computes ``FEATURES`` for candidate documents of one opened index: built once per
    index (a document's passages are consecutive rows, as the index writes them)."""

    def __init__(self, index: LoadedIndex) -> None:
        doc_rows = index.passages.doc_rows
        if len(doc_rows) and np.any(np.diff(doc_rows) < 0):
            raise ValueError("the index's passages are not grouped by document")
        self.doc_rows = doc_rows
        self.documents = index.passages.document_count
        self.starts = np.searchsorted(doc_rows, np.arange(self.documents + 1))  # (D+1,)
        self.vectors = passage_vectors(index.dense)
        self.title_only = index.passages.title_only
        self.lexical = index.lexical
        self.titles = index.titles

    @property
    def usable(self) -> bool:
        return self.vectors is not None

    def _present(self, lexical: LexicalIndex, terms: Sequence[str], docs: np.ndarray,
                 rows_are_docs: bool) -> np.ndarray:
        """(M,) share of the query's information in each of ``docs``: the BM25 idf of the
        ``terms`` that occur in it over the idf of all of them (a rare term counts more
        than "syndrome")."""
        slot = np.full(self.documents, -1, dtype=np.int64)  # document -> its place in docs
        slot[docs] = np.arange(len(docs))
        share = np.zeros(len(docs), dtype=np.float32)
        total, n = 0.0, len(lexical)
        for term in terms:
            rows = lexical.postings(term)
            idf = float(np.log1p((n - len(rows) + 0.5) / (len(rows) + 0.5)))
            found = slot[rows if rows_are_docs else self.doc_rows[rows]]
            share[np.unique(found[found >= 0])] += idf
            total += idf
        return share / total if total > 0 else share

    def compute(self, terms: Sequence[str], query_vec: np.ndarray, bm25: np.ndarray,
                titles: np.ndarray | None, fused: Sequence[tuple[int, float]]
                ) -> tuple[np.ndarray, np.ndarray]:
        """The candidate documents of ``fused`` (passage rows and scores, best first):
        (M,) their best passages in fused order and (M, F) their features. ``terms``: the
        query's stemmed terms; ``bm25``: (N,) passage BM25; ``titles``: (D,) title BM25 or
        None."""
        if self.vectors is None:
            raise ValueError("the index keeps no vectors (IVF-PQ): nothing to re-rank with")
        best: dict[int, int] = {}
        fused_score: dict[int, float] = {}
        for row, score in fused:
            doc = int(self.doc_rows[row])
            if doc not in best:
                best[doc], fused_score[doc] = row, score
        docs = np.fromiter(best, dtype=np.int64, count=len(best))
        if not len(docs):
            return np.zeros(0, np.int64), np.zeros((0, len(FEATURES)), np.float32)
        first, counts = self.starts[docs], self.starts[docs + 1] - self.starts[docs]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.repeat(first - offsets, counts) + np.arange(int(counts.sum()))
        dense = np.asarray(self.vectors[rows], dtype=np.float32) @ query_vec
        lexical = bm25[rows]
        unique = list(dict.fromkeys(t for t in terms if t in self.lexical))
        title_terms = ([t for t in unique if t in self.titles] if self.titles is not None
                       else [])
        features = np.zeros((len(docs), len(FEATURES)), dtype=np.float32)
        features[:, 0] = np.maximum.reduceat(dense, offsets)
        features[:, 1] = np.maximum.reduceat(lexical, offsets)
        features[:, 2] = np.add.reduceat(lexical, offsets)
        features[:, 3] = titles[docs] if titles is not None else 0.0
        features[:, 4] = [fused_score[int(d)] for d in docs]
        features[:, 5] = np.log(counts)
        features[:, 8] = (counts == 1) & self.title_only[first]
        if unique:
            features[:, 6] = self._present(self.lexical, unique, docs, False)
        if title_terms and self.titles is not None:
            features[:, 7] = self._present(self.titles, title_terms, docs, True)
        return np.fromiter(best.values(), dtype=np.int64, count=len(best)), features


@dataclass(frozen=True)
class RerankerConfig:
    c: float = 1.0  # inverse L2 strength of the logistic regression
    depth: int = 200  # passages each ranker hands to fusion while collecting candidates
    max_iter: int = 3000


class Reranker:
    """A logistic regression over standardised ``FEATURES``: ``scores`` (M, F) -> (M,)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                 intercept: float, meta: dict[str, Any]) -> None:
        shapes = {mean.shape, scale.shape, coef.shape}
        if shapes != {(len(FEATURES),)}:
            raise ValueError(f"need {len(FEATURES)} weights per part, got {shapes}")
        self.mean = mean.astype(np.float32)
        self.scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        self.coef = coef.astype(np.float32)
        self.intercept = float(intercept)
        self.meta = meta
        self.sha256 = ""

    @property
    def held_out(self) -> frozenset[str]:
        """The descriptor identifiers kept out of training."""
        return frozenset(self.meta.get("held_out_descriptors", ()))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(M, F) -> (M,) probability that each candidate is about the query."""
        logits = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        # clipped: an extreme query (thousands of words) must not overflow exp
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))).astype(np.float32)

    def save(self, path: Path) -> str:
        weights = np.stack([self.mean, self.scale, self.coef])
        self.sha256 = write_payload({"format": FORMAT, "features": list(FEATURES),
                                     "weights": torch.from_numpy(weights),
                                     "intercept": self.intercept, "meta": self.meta}, path)
        return self.sha256

    @classmethod
    def load(cls, path: Path) -> Reranker:
        payload, digest = read_payload(path, FORMAT, "re-ranker", RerankerError)
        if list(payload.get("features", ())) != list(FEATURES):
            raise RerankerError(f"{path} was made for the features {payload.get('features')}"
                                f", this code computes {list(FEATURES)}: retrain it "
                                "(`assistant train reranker`)")
        mean, scale, coef = payload["weights"].numpy()
        reranker = cls(mean, scale, coef, float(payload["intercept"]), dict(payload["meta"]))
        reranker.sha256 = digest
        return reranker

    def fits(self, ranking: dict[str, Any]) -> bool:
        """Whether ``ranking`` (``asdict(search.Ranking)``) fuses as the training did."""
        return self._fusion(ranking) == self._fusion(self.meta.get("ranking", {}))

    @staticmethod
    def _fusion(ranking: dict[str, Any]) -> dict[str, Any]:
        return {k: ranking.get(k) for k in ("fusion", "weight", "title_weight", "feedback",
                                             "feedback_weight")}

    def check(self, embedder: Any, ranking: dict[str, Any]) -> None:
        """Raises ``RerankerError`` unless the query vectors (``embedder``'s, see
        ``made_for``) and the fusion are those it was trained with."""
        meta, used = self.meta, made_for(embedder)
        if meta.get("embedder_sha256") != used["embedder_sha256"]:
            raise RerankerError(f"it was trained with the embedder {meta.get('embedder_sha256')}"
                                f", not the one in use ({used['embedder_sha256']})")
        if meta.get("query_adapter_sha256") != used["query_adapter_sha256"]:
            raise RerankerError(f"it was trained with the query adapter "
                                f"{meta.get('query_adapter_sha256')}, not "
                                f"{used['query_adapter_sha256']}")
        if not self.fits(ranking):
            raise RerankerError(f"it was trained on the fusion "
                                f"{self._fusion(meta.get('ranking', {}))}, the search uses "
                                f"{self._fusion(ranking)}")


def made_for(embedder: Any) -> dict[str, str | None]:
    """What makes the query vectors: the embedder's fingerprint and its query adapter's
    sha256 (None without one). A re-ranker records these and is used only with them."""
    adapter = getattr(embedder, "adapter", None)
    return {"embedder_sha256": str(getattr(embedder, "fingerprint", "")),
            "query_adapter_sha256": adapter.sha256 if adapter is not None else None}


def fit_reranker(features: np.ndarray, labels: np.ndarray, config: RerankerConfig,
                 meta: dict[str, Any]) -> Reranker:
    """A logistic regression on standardised features (scikit-learn, lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    if features.ndim != 2 or features.shape[1] != len(FEATURES) or len(features) != len(labels):
        raise ValueError(f"need (M, {len(FEATURES)}) features and M labels, got "
                         f"{features.shape} and {labels.shape}")
    if len(set(labels.tolist())) < 2:
        raise ValueError("the training candidates are all relevant or all not")
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    model = LogisticRegression(C=config.c, max_iter=config.max_iter)
    model.fit((features - mean) / scale, labels.astype(int))
    return Reranker(mean, scale, model.coef_[0], float(model.intercept_[0]), meta)
