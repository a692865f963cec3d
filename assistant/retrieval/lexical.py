"""BM25 over the passages (bm25s), with PyStemmer's English stemmer and English stop words.

The lexical index sits beside the dense one (``<index>/bm25/``) and is memory-mapped when
loaded. Row ``i`` is passage ``i`` of the dense index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.INFO)  # it sets DEBUG, a line per index built

STOPWORDS = "en"
_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s' default: words of two or more characters


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def tokenize_terms(text: str) -> list[str]:
    """Lower-cased, stop words removed, stemmed terms of ``text``, in order: what
    ``bm25s.tokenize`` makes of it with the index's settings (a test holds them equal)."""
    return list(_terms(text))


_split = re.compile(_TOKEN_PATTERN).findall
_STOPWORDS = frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1024)
def _terms(text: str) -> tuple[str, ...]:
    # Not bm25s.tokenize itself: a search tokenizes its query for the passages, the
    # titles, the re-ranker and the snippets, and every sentence of its hits, and
    # bm25s.tokenize builds vocabularies and progress bars for each call.
    words = [w for w in _split(text.lower()) if w not in _STOPWORDS]
    return tuple(_stemmer().stemWords(words)) if words else ()


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None,
          positive_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best entries of a (N,) score vector -> (scores, ids), best first.

    Entries outside ``allowed`` (a (N,) bool mask) and, with ``positive_only``, those
    scoring 0 or less (no query term present) are never returned. Ties: lower id first.
    """
    keep = np.ones(len(scores), dtype=bool) if allowed is None else allowed.copy()
    if positive_only:
        keep &= scores > 0
    candidates = np.flatnonzero(keep)
    if k <= 0 or len(candidates) == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    values = scores[candidates]
    if len(candidates) > k:
        part = np.argpartition(-values, k - 1)[:k]
        candidates, values = candidates[part], values[part]
    order = np.lexsort((candidates, -values))
    return values[order].astype(np.float32), candidates[order].astype(np.int64)


class LexicalIndex:
    """A bm25s BM25 index whose rows are the passages of the dense index."""

    def __init__(self, retriever: bm25s.BM25) -> None:
        self.retriever = retriever

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        if not texts:
            raise ValueError("cannot build a BM25 index over no passages")
        tokens = bm25s.tokenize(list(texts), lower=True, token_pattern=_TOKEN_PATTERN,
                                stopwords=STOPWORDS, stemmer=_stemmer(), show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever)

    def save(self, directory: Path) -> None:
        self.retriever.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path, mmap: bool = True) -> LexicalIndex:
        retriever = bm25s.BM25.load(str(directory), mmap=mmap, show_progress=False)
        return cls(retriever)

    def __len__(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def __contains__(self, term: object) -> bool:
        return term in self.retriever.vocab_dict

    def postings(self, term: str) -> np.ndarray:
        """The rows whose text holds the (stemmed) ``term``; empty when it is not indexed."""
        token = self.retriever.vocab_dict.get(term)
        if token is None:
            return np.zeros(0, dtype=np.int64)
        indptr = self.retriever.scores["indptr"]
        return np.asarray(self.retriever.scores["indices"][indptr[token]:indptr[token + 1]])

    def scores(self, query: str) -> np.ndarray:
        """(N,) float32 BM25 score of every passage; all 0 when no query term is indexed."""
        terms = [t for t in tokenize_terms(query) if t in self]
        if not terms:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(terms), dtype=np.float32)
