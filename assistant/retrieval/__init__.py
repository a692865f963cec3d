"""Corpus, embeddings, index and search, with citations.

The public face: ``open_searcher(settings)`` -> ``Searcher.search(query, k, mode, sources,
year_range)`` -> ``list[Hit]``; ``build_index`` / ``ensure_index`` for the index itself.
"""

from assistant.retrieval.build import (
    CorpusSpec,
    build_index,
    ensure_index,
    index_path,
    open_searcher,
)
from assistant.retrieval.embed import Embedder
from assistant.retrieval.index import (
    CorruptIndexError,
    IndexManifest,
    IndexMissingError,
    IndexUnusableError,
    LoadedIndex,
    StaleIndexError,
    open_index,
)
from assistant.retrieval.search import Hit, Searcher

__all__ = [
    "CorpusSpec",
    "CorruptIndexError",
    "Embedder",
    "Hit",
    "IndexManifest",
    "IndexMissingError",
    "IndexUnusableError",
    "LoadedIndex",
    "Searcher",
    "StaleIndexError",
    "build_index",
    "ensure_index",
    "index_path",
    "open_index",
    "open_searcher",
]
