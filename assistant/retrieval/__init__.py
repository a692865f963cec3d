"""Corpus, embeddings, index and search, with citations.

The public face: ``open_searcher(settings)`` -> ``Searcher.search(query, k, mode, sources,
year_range)`` -> ``list[Hit]``; ``build_index`` / ``ensure_index`` for the index itself.
"""

import logging

# faiss logs its CPU-feature probing at INFO, three lines per process: noise in the CLI.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

from assistant.retrieval.build import (  # noqa: E402
    CorpusSpec,
    build_index,
    ensure_index,
    index_path,
    open_searcher,
)
from assistant.retrieval.embed import Embedder  # noqa: E402
from assistant.retrieval.index import (  # noqa: E402
    CorruptIndexError,
    IndexManifest,
    IndexMissingError,
    IndexUnusableError,
    LoadedIndex,
    StaleIndexError,
    open_index,
)
from assistant.retrieval.search import Hit, Searcher  # noqa: E402

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
