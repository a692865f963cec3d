"""FAISS over unit vectors: building an index of one of three kinds, and searching it.

Pure functions over arrays. Inner product on L2-normalised vectors is cosine similarity.
Row ``i`` of the vectors gets id ``i``.
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "hnsw", "ivfpq"]
INDEX_KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivfpq")
# Defaults per kind; ``build_faiss(..., **params)`` overrides them.
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 512},
    "ivfpq": {"nlist": 0, "m": 48, "nbits": 8, "nprobe": 16, "train_size": 50_000},
}  # ivfpq nlist 0: about 4 sqrt(N)


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"expected vectors of shape (N, d) with N >= 1, got {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def index_params(kind: IndexKind, n: int, **params: int) -> dict[str, int]:
    """The defaults of ``kind`` overridden by ``params``, with ivfpq's nlist resolved."""
    if kind not in DEFAULT_PARAMS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    unknown = set(params) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise ValueError(f"unknown {kind} parameters {sorted(unknown)}; known: "
                         f"{sorted(DEFAULT_PARAMS[kind])}")
    resolved = {**DEFAULT_PARAMS[kind], **params}
    if kind == "ivfpq" and not resolved["nlist"]:
        resolved["nlist"] = max(1, min(int(4 * np.sqrt(n)), n // 39))
    return resolved


def _build_ivfpq(vectors: np.ndarray, p: dict[str, int]) -> faiss.Index:
    n, d = vectors.shape
    if d % p["m"]:
        raise ValueError(f"ivfpq m={p['m']} must divide the dimension {d}")
    if n < max(p["nlist"], 2 ** p["nbits"]):
        raise ValueError(f"ivfpq needs at least max(nlist, 2**nbits) = "
                         f"{max(p['nlist'], 2 ** p['nbits'])} vectors to train, got {n}: "
                         "use kind 'flat' at this size")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, p["nlist"], p["m"], p["nbits"],
                             faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = vectors if n <= p["train_size"] else vectors[
        np.sort(rng.choice(n, p["train_size"], replace=False))]
    index.train(sample)
    index.nprobe = p["nprobe"]
    return index


def build_faiss(vectors: np.ndarray, kind: IndexKind = "flat", **params: int) -> faiss.Index:
    """An inner-product FAISS index over ``vectors`` (N, d), row i getting id i.

    flat: exact (``IndexFlatIP``), the default at this corpus size. hnsw:
    ``IndexHNSWFlat(d, m, METRIC_INNER_PRODUCT)`` with ``ef_construction``, ``ef_search``.
    ivfpq: ``IndexIVFPQ`` (``nlist`` lists, ``m`` sub-quantizers of ``nbits``, ``nprobe``)
    trained on the vectors or a seeded sample of ``train_size``.
    """
    vectors = _check_vectors(vectors)  # (N, d)
    n, d = vectors.shape
    p = index_params(kind, n, **params)
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    else:
        index = _build_ivfpq(vectors, p)
    index.add(vectors)
    return index


def _search_parameters(index: faiss.Index, allowed: np.ndarray | None
                       ) -> tuple[faiss.SearchParameters | None, np.ndarray | None]:
    """Search parameters restricting results to ``allowed`` ((N,) bool), with the index's
    own efSearch / nprobe kept; and the bitmap they point into (keep it alive)."""
    if allowed is None:
        return None, None
    if allowed.shape != (index.ntotal,):
        raise ValueError(f"allowed must be a ({index.ntotal},) bool mask, got {allowed.shape}")
    bitmap = np.packbits(allowed.astype(bool), bitorder="little")
    inner = faiss.downcast_index(index)
    params: faiss.SearchParameters
    if isinstance(inner, faiss.IndexHNSW):
        hnsw = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        hnsw.efSearch = inner.hnsw.efSearch
        params = hnsw
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = inner.nprobe
    else:
        params = faiss.SearchParameters()
    params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    return params, bitmap


def search_faiss(index: faiss.Index, queries: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by inner product -> (scores (Q, k) float32, ids (Q, k) int64), best
    first. Only rows where ``allowed`` is True are returned; missing slots (fewer than
    ``k`` candidates) hold id -1 and score -inf."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, d)
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index {index.d}")
    if k <= 0 or index.ntotal == 0:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    params, bitmap = _search_parameters(index, allowed)
    scores, ids = index.search(queries, k, params=params)
    del bitmap
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    ids = ids.astype(np.int64)
    if allowed is not None:
        # A graph or inverted-list search that a filter narrows may stop before it reaches
        # k allowed rows (HNSW with a year range: 3 hits of 50 asked, 125+ matching): the
        # allowed rows are then searched exactly, from the index's own stored vectors.
        wanted = min(k, int(np.count_nonzero(allowed)))
        if bool(((ids >= 0).sum(axis=1) < wanted).any()):
            exact = _exact_over(index, queries, k, np.flatnonzero(allowed))
            if exact is not None:
                return exact
    return scores, ids


EXACT_ROWS = 200_000  # allowed rows searched exactly at most (float32: 300 MB at 384-d)


def _exact_over(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-``k`` of ``rows`` by exact inner product with the vectors ``index`` stores (as
    stored: quantised ones decoded); None where it cannot give them back (an inverted
    file without a direct map) or there are more than ``EXACT_ROWS`` rows."""
    if len(rows) > EXACT_ROWS:
        return None
    try:
        vectors = index.reconstruct_batch(rows)
    except RuntimeError:
        return None
    sims = queries @ np.asarray(vectors, dtype=np.float32).T  # (Q, R)
    top = min(k, len(rows))
    part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
    order = np.take_along_axis(part, np.argsort(
        -np.take_along_axis(sims, part, axis=1), axis=1, kind="stable"), axis=1)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores[:, :top] = np.take_along_axis(sims, order, axis=1)
    ids[:, :top] = rows[order]
    return scores, ids
