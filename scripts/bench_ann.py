"""Scale benchmark of approximate nearest-neighbour search: flat vs HNSW vs IVF(-PQ, -SQ8).

Figures, not a test. Over ``--n`` 384-d unit vectors under inner product (all-MiniLM-L6-v2's
space) it measures, per index and per search setting: build seconds (train + add), index
bytes (serialized), queries per second for one batch of ``--queries`` queries, single-query
latency p50, and recall@10 against the exact top-10 of the flat index. HNSW's efSearch and
IVF's nprobe are swept; a summary gives, per index, the fastest setting with recall@10 >=
0.95 and its QPS against flat measured in the same process (target >= 20x). Tables are
Markdown; ``--json`` writes every figure.

Data (printed at the start, kept in the JSON):

* ``--vectors PATH``: real embeddings, a ``.npy`` (N, 384) float32 file or a folder of
  chunk files ``00000.npy, 00001.npy, ...`` (the embedding cache) read in name order. A
  seeded random ``--queries`` of them are held out as queries, never indexed. When fewer
  than ``--n`` remain, the rest of the base is augmented: each synthetic vector is a random
  real base vector plus gaussian noise of standard deviation ``--noise`` per coordinate,
  renormalised (0.03: noise norm 0.59, cosine to its source about 0.86).
* default, synthetic: a seeded three-level gaussian mixture on the sphere, 64 topics ->
  ``--clusters`` clusters (lognormal weights) -> members, with a common mean direction and
  a power-law spectrum (variance ~ 1/(j + 5)) in a random rotation. Its constants were
  fitted to 1,500 real passages embedded with all-MiniLM-L6-v2 (900 MEDLINE, 170 HPO, 430
  ICD-10-CM), 1,500 samples of each: pairwise cosine 0.078 +/- 0.099 (real 0.082 +/- 0.108),
  median nearest-neighbour cosine 0.53 (0.55), median 10th-neighbour cosine 0.40 (0.40),
  norm of the mean 0.28 (0.29), principal components for 50/80/90% of the variance 31/111/
  184 (34/108/161), TwoNN intrinsic dimension 11.5 (15.4); members of one cluster have
  cosine 0.66 on average. Queries are fresh draws from the same mixture. Uniform random
  vectors (no structure) would be a misleading worst case; this is not real data either.

Indexes: flat (``build_faiss``), HNSW with the project's own M 32 / efConstruction 80
(``build_faiss``; efSearch swept), IVF-PQ (``build_faiss``; nlist 4 sqrt(N), PQ 48 x 8 bits,
trained on 39 nlist vectors; nprobe swept), the same IVF-PQ re-ranked by exact inner
product over its top 4 x 10 (``IndexRefineFlat``, a full copy of the vectors), and IVF-SQ8
(8-bit scalar codes). HNSW's build dominates at 1M: about 430 CPU-microseconds a vector
at efConstruction 80 when extrapolated from 25k and 100k builds here (efConstruction 40
builds about 1.5x faster but, at 100k, gave recall@10 0.945 at efSearch 64 against 0.995).

Memory: the base (N x 384 float32: 1.5 GB at 1M) is held once; one index at a time is
built, swept and freed (flat 1.5 GB, HNSW about 1.8 GB, IVF-PQ + refine 1.6 GB at 1M), so
the peak is about 3.5 GB at 1M. Run it on an otherwise idle machine: sharing the 2 cores
with another job slowed faiss's BLAS work (flat search, k-means) by an order of magnitude
here (flat at 50k: 247 QPS, where 225 QPS at 1M implies about 4,500).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_ann.py --n 1000000 \\
        --threads 2 --json bench_ann.json [--vectors .data/cache/embeddings/<key>]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from assistant.retrieval.dense import DEFAULT_PARAMS, build_faiss, index_params, search_faiss

log = logging.getLogger("bench_ann")

DIM = 384
K = 10  # recall@K against the exact top-K
RECALL_TARGET = 0.95
SPEEDUP_TARGET = 20.0
KINDS = ("flat", "hnsw", "ivfpq", "ivfpq_refine", "ivfsq8")
EF_SEARCH = (16, 32, 64, 128, 256, 512)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BLOCK = 65_536  # rows per chunk when generating, reading or normalising
# Synthetic mixture, fitted to real MiniLM passages (module docstring).
TOPICS, SPECTRUM_OFFSET, MEAN_NORM, TOPIC_SPREAD, MEMBER_SPREAD = 64, 5, 0.5, 1.0, 0.7


# ---------------------------------------------------------------- data

def normalise_(x: np.ndarray) -> np.ndarray:
    """Scale the rows of ``x`` to unit norm in place, a block at a time."""
    for start in range(0, len(x), BLOCK):
        rows = x[start:start + BLOCK]
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return x


@dataclass
class Mixture:
    """Topics -> clusters -> members on the sphere (module docstring)."""

    centres: np.ndarray  # (C, d) unit cluster centres
    weights: np.ndarray  # (C,) cluster probabilities
    spread: np.ndarray  # (C,) member noise scale per cluster
    basis: np.ndarray  # (d, d) spectrum-scaled random rotation

    @classmethod
    def make(cls, rng: np.random.Generator, clusters: int, d: int = DIM) -> Mixture:
        rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
        spectrum = (np.arange(1, d + 1) + SPECTRUM_OFFSET) ** -0.5  # variance ~ 1/(j + 5)
        spectrum /= np.sqrt(np.mean(spectrum**2))
        basis = (spectrum[:, None] * rotation / np.sqrt(d)).astype(np.float32)
        mean = rng.standard_normal(d)
        topics = rng.standard_normal((TOPICS, d)) @ basis  # (T, d)
        offsets = TOPIC_SPREAD * rng.standard_normal((clusters, d)) @ basis  # (C, d)
        centres = MEAN_NORM * mean / np.linalg.norm(mean) + topics[
            rng.integers(0, TOPICS, clusters)] + offsets
        weights = rng.lognormal(0.0, 0.5, clusters)
        spread = MEMBER_SPREAD * rng.uniform(0.7, 1.3, clusters)
        return cls(normalise_(centres.astype(np.float32)), weights / weights.sum(),
                   spread.astype(np.float32), basis)

    def fill_(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw ``len(out)`` members into ``out`` (n, d), a block at a time."""
        for start in range(0, len(out), BLOCK):
            rows = out[start:start + BLOCK]
            label = rng.choice(len(self.weights), len(rows), p=self.weights)
            noise = rng.standard_normal(rows.shape, dtype=np.float32) @ self.basis
            rows[:] = self.centres[label] + self.spread[label, None] * noise
        return normalise_(out)


def synthetic(n: int, queries: int, seed: int, clusters: int
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(base (n, d), queries (q, d), description): independent draws of one mixture."""
    rng = np.random.default_rng(seed)
    mixture = Mixture.make(rng, clusters)
    base = mixture.fill_(np.empty((n, DIM), np.float32), rng)
    held = mixture.fill_(np.empty((queries, DIM), np.float32), rng)
    return base, held, {"kind": "synthetic clustered mixture", "clusters": clusters,
                        "topics": TOPICS, "seed": seed}


def open_vectors(path: Path) -> list[np.ndarray]:
    """Memory maps of a (N, d) ``.npy`` file, or of a folder's ``<digits>.npy`` chunks in
    name order (the embedding cache; its ``*.tmp.npy`` files are partial and skipped)."""
    files = sorted(p for p in path.glob("*.npy") if p.stem.isdigit()) if path.is_dir() \
        else [path]
    if not files:
        raise ValueError(f"no <digits>.npy chunk files in {path}")
    arrays = [np.load(f, mmap_mode="r") for f in files]
    for f, a in zip(files, arrays, strict=True):
        if a.ndim != 2 or a.shape[1] != DIM:
            raise ValueError(f"expected vectors of shape (N, {DIM}) in {f}, got {a.shape}")
    return arrays


def _blocks(arrays: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    for a in arrays:
        for start in range(0, len(a), BLOCK):
            yield a[start:start + BLOCK]


def _augment_(base: np.ndarray, real: int, noise: float, rng: np.random.Generator) -> None:
    """Rows ``real:`` of ``base`` := a random row of ``base[:real]`` + N(0, noise^2) per
    coordinate, renormalised."""
    for start in range(real, len(base), BLOCK):
        rows = base[start:start + BLOCK]
        parents = rng.integers(0, real, len(rows))
        rows[:] = base[parents] + noise * rng.standard_normal(rows.shape, dtype=np.float32)
        normalise_(rows)


def real_vectors(path: Path, n: int, queries: int, seed: int, noise: float
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(base (n, d), held-out queries (q, d), description) from real embeddings, the base
    augmented with noisy copies when the file holds fewer than n + q rows."""
    arrays = open_vectors(path)
    total = sum(len(a) for a in arrays)
    if total <= queries:
        raise ValueError(f"{path} holds {total} vectors, not more than --queries {queries}")
    rng = np.random.default_rng(seed)
    used = min(total, n + queries)
    chosen = np.zeros(total, bool)
    chosen[rng.choice(total, used, replace=False)] = True
    is_query = np.zeros(total, bool)
    is_query[rng.choice(np.flatnonzero(chosen), queries, replace=False)] = True
    base, held = np.empty((n, DIM), np.float32), np.empty((queries, DIM), np.float32)
    b = q = offset = 0
    for block in _blocks(arrays):  # copy the chosen rows, in order, into base and held
        span = slice(offset, offset + len(block))
        rows = np.asarray(block[chosen[span]], np.float32)
        asked = is_query[span][chosen[span]]
        to_held = int(asked.sum())
        held[q:q + to_held], base[b:b + len(rows) - to_held] = rows[asked], rows[~asked]
        b, q, offset = b + len(rows) - to_held, q + to_held, offset + len(block)
    normalise_(base[:b])
    normalise_(held)
    _augment_(base, b, noise, rng)
    kind = "real embeddings" if b == n else "real embeddings + noisy copies"
    return base, held, {"kind": kind, "path": str(path), "real_rows": total,
                        "real_in_base": b, "augmented": n - b,
                        "noise_sd": noise if b < n else None, "seed": seed}


# ---------------------------------------------------------------- indexes

@dataclass
class Built:
    """An index ready to sweep: ``set_knob(v)`` sets efSearch or nprobe to ``v``."""

    index: faiss.Index
    build_s: float
    params: str
    knob: str = ""
    values: tuple[int, ...] = (0,)
    set_knob: Callable[[int], None] = lambda value: None
    keep: list[Any] = field(default_factory=list)  # objects the index points into


def _nlist(args: argparse.Namespace, n: int) -> int:
    return args.nlist or index_params("ivfpq", n)["nlist"]  # the project's 4 sqrt(N)


def _train_size(args: argparse.Namespace, n: int) -> int:
    return min(n, args.train or 39 * _nlist(args, n))  # faiss asks >= 39 points a list


def _set_nprobe(ivf: faiss.IndexIVF) -> Callable[[int], None]:
    def set_knob(value: int) -> None:
        ivf.nprobe = value
    return set_knob


def build_hnsw(base: np.ndarray, args: argparse.Namespace) -> Built:
    start = time.perf_counter()
    index = build_faiss(base, "hnsw", m=args.hnsw_m, ef_construction=args.hnsw_efc)
    assert isinstance(index, faiss.IndexHNSW)

    def set_knob(value: int) -> None:
        index.hnsw.efSearch = value
    return Built(index, time.perf_counter() - start,
                 f"M={args.hnsw_m}, efConstruction={args.hnsw_efc}", "efSearch",
                 EF_SEARCH, set_knob)


def build_ivfpq(base: np.ndarray, args: argparse.Namespace) -> Built:
    nlist, train = _nlist(args, len(base)), _train_size(args, len(base))
    start = time.perf_counter()
    index = build_faiss(base, "ivfpq", nlist=nlist, m=args.pq_m, nbits=8, nprobe=1,
                        train_size=train)
    values = tuple(v for v in NPROBE if v <= nlist)
    return Built(index, time.perf_counter() - start,
                 f"nlist={nlist}, PQ{args.pq_m}x8, train={train}", "nprobe", values,
                 _set_nprobe(faiss.extract_index_ivf(index)))


def build_refine(base: np.ndarray, args: argparse.Namespace, ivfpq: Built | None) -> Built:
    """IVF-PQ whose top ``k_factor * k`` are re-ranked with the exact vectors (a copy)."""
    inner = ivfpq or build_ivfpq(base, args)
    start = time.perf_counter()
    index = faiss.IndexRefineFlat(inner.index, faiss.swig_ptr(base))
    index.k_factor = args.refine_k
    return Built(index, inner.build_s + time.perf_counter() - start,
                 f"{inner.params}, refine flat k_factor={args.refine_k}", "nprobe",
                 inner.values, _set_nprobe(faiss.extract_index_ivf(inner.index)),
                 [inner.index])


def build_ivfsq8(base: np.ndarray, args: argparse.Namespace) -> Built:
    n = len(base)
    nlist, train = _nlist(args, n), _train_size(args, n)
    start = time.perf_counter()
    index = faiss.index_factory(DIM, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(np.random.default_rng(0).choice(n, train, replace=False))
    index.train(base[rows])
    index.add(base)
    values = tuple(v for v in NPROBE if v <= nlist)
    return Built(index, time.perf_counter() - start, f"nlist={nlist}, SQ8, train={train}",
                 "nprobe", values, _set_nprobe(faiss.extract_index_ivf(index)))


def build_flat(base: np.ndarray, args: argparse.Namespace) -> Built:
    start = time.perf_counter()
    index = build_faiss(base, "flat")
    return Built(index, time.perf_counter() - start, "exact inner product")


# ---------------------------------------------------------------- measures

def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found top-k & exact top-k| / k; ids (Q, k), -1 = no result."""
    if found.shape != exact.shape:
        raise ValueError(f"found {found.shape} and exact {exact.shape} ids differ in shape")
    hits = (exact[:, :, None] == found[:, None, :]).any(axis=2) & (exact >= 0)  # (Q, k)
    return float(hits.sum() / exact.size)  # each exact id counted once, found or not


def serialized_bytes(index: faiss.Index) -> int:
    """Size of ``faiss.write_index(index)``, counted as written, without a copy."""
    size = 0

    def count(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
    writer = faiss.PyCallbackIOWriter(count)  # type: ignore[attr-defined]
    faiss.write_index(index, writer)
    del writer  # flushes
    return size


def rss_bytes() -> int:
    """The process's resident set now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_batch(index: faiss.Index, queries: np.ndarray, repeats: int
               ) -> tuple[np.ndarray, float]:
    """(ids (Q, K), queries per second, best of ``repeats``) for one batched search."""
    search_faiss(index, queries[:8], K)  # warm-up
    best, ids = math.inf, np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids = search_faiss(index, queries, K)
        best = min(best, time.perf_counter() - start)
    return ids, len(queries) / best


def latency_ms(index: faiss.Index, queries: np.ndarray) -> tuple[float, float]:
    """(p50, p90) milliseconds of searching ``queries`` one at a time."""
    search_faiss(index, queries[:1], K)
    times = []
    for row in queries:
        start = time.perf_counter()
        search_faiss(index, row[None], K)
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


@dataclass
class Row:
    kind: str
    params: str
    knob: str
    value: int
    recall: float
    qps: float
    p50_ms: float
    p90_ms: float
    build_s: float
    index_bytes: int
    rss_delta_bytes: int
    n: int

    def setting(self) -> str:
        return f"{self.knob}={self.value}" if self.knob else "-"


def sweep(kind: str, built: Built, queries: np.ndarray, exact: np.ndarray | None,
          args: argparse.Namespace, rss_delta: int) -> tuple[list[Row], np.ndarray]:
    """One row per knob value; also the ids of the last batch (flat's are the exact)."""
    size = serialized_bytes(built.index)
    rows, ids = [], np.empty(0)
    for value in built.values:
        built.set_knob(value)
        ids, qps = time_batch(built.index, queries, args.repeats)
        p50, p90 = latency_ms(built.index, queries[:args.latency_queries])
        recall = recall_at_k(ids, ids if exact is None else exact)
        rows.append(Row(kind, built.params, built.knob, value, recall, qps, p50, p90,
                        built.build_s, size, rss_delta, built.index.ntotal))
        log.info("  %-12s %-13s recall@%d %.4f  %8.0f QPS  p50 %7.2f ms  p90 %7.2f ms",
                 kind, rows[-1].setting(), K, recall, qps, p50, p90)
    return rows, ids


# ---------------------------------------------------------------- run and report

BUILDERS: dict[str, Callable[[np.ndarray, argparse.Namespace], Built]] = {
    "flat": build_flat, "hnsw": build_hnsw, "ivfpq": build_ivfpq, "ivfsq8": build_ivfsq8}


def run(base: np.ndarray, queries: np.ndarray, kinds: Sequence[str],
        args: argparse.Namespace) -> list[Row]:
    """Build, sweep and free each index in turn, flat (the exact top-K) first."""
    rows: list[Row] = []
    exact: np.ndarray | None = None
    ivfpq: Built | None = None  # kept for ivfpq_refine, which re-ranks it
    for kind in kinds:
        before = rss_bytes()
        built = build_refine(base, args, ivfpq) if kind == "ivfpq_refine" \
            else BUILDERS[kind](base, args)
        delta = rss_bytes() - before
        log.info("%s (%s): built in %.1f s, process RSS +%.0f MiB", kind, built.params,
                 built.build_s, delta / 2**20)
        kind_rows, ids = sweep(kind, built, queries, exact, args, delta)
        rows += kind_rows
        exact = ids if kind == "flat" else exact
        ivfpq = built if kind == "ivfpq" and "ivfpq_refine" in kinds else None
        del built
    return rows


def _down(x: float, digits: int) -> str:
    """``x`` rounded down (figures that are better when larger are never rounded up)."""
    return f"{math.floor(x * 10**digits) / 10**digits:,.{digits}f}"


def _up(x: float, digits: int) -> str:
    """``x`` rounded up (costs: time, memory)."""
    return f"{math.ceil(x * 10**digits) / 10**digits:,.{digits}f}"


def summarise(rows: Sequence[Row], flat_qps: float) -> list[dict[str, Any]]:
    """Per approximate kind: the fastest setting at recall@K >= target (else the most
    accurate one), its speed-up over flat, and whether both targets are met."""
    out = []
    for kind in dict.fromkeys(r.kind for r in rows if r.kind != "flat"):
        mine = [r for r in rows if r.kind == kind]
        good = [r for r in mine if r.recall >= RECALL_TARGET]
        best = max(good, key=lambda r: r.qps) if good else max(mine, key=lambda r: r.recall)
        speedup = best.qps / flat_qps
        out.append({"row": best, "speedup": speedup, "reaches_recall": bool(good),
                    "met": bool(good) and speedup >= SPEEDUP_TARGET})
    return out


def markdown(rows: Sequence[Row], flat_qps: float, met: Sequence[str] | None = None
             ) -> list[str]:
    """A Markdown table of ``rows``; with ``met``, build parameters and a target column."""
    head = ["index", "setting", f"recall@{K}", "QPS", "x flat", "p50 ms", "build s",
            "index MiB", "bytes/vector"]
    head += ["target met"] if met is not None else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        name = f"{r.kind} ({r.params})" if met is not None else r.kind
        cells = [name, r.setting(), _down(r.recall, 3), _down(r.qps, 0),
                 _down(r.qps / flat_qps, 1), _up(r.p50_ms, 2), _up(r.build_s, 1),
                 _up(r.index_bytes / 2**20, 1), _up(r.index_bytes / r.n, 0)]
        cells += [met[i]] if met is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(rows: Sequence[Row], data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    flat_qps = next(r.qps for r in rows if r.kind == "flat")
    summary = summarise(rows, flat_qps)
    log.info("\n## All settings (%s, N=%d, %d queries batched, %d thread(s))\n",
             data["kind"], rows[0].n, args.queries, args.threads)
    log.info("\n".join(markdown(rows, flat_qps)))
    log.info("\n## Summary (%s, N=%d): fastest setting with recall@%d >= %.2f; "
             "target >= %.0fx flat\n", data["kind"], rows[0].n, K, RECALL_TARGET,
             SPEEDUP_TARGET)
    for s in summary:
        r = s["row"]
        log.info("%s: %s recall@%d %s, %s QPS = %sx flat (%s QPS): %s", r.kind, r.setting(), K,
                 _down(r.recall, 3), _down(r.qps, 0), _down(s["speedup"], 1),
                 _down(flat_qps, 0), "met" if s["met"] else "NOT met" + (
                     "" if s["reaches_recall"] else f" (no setting reaches {RECALL_TARGET})"))
    flat = [r for r in rows if r.kind == "flat"]
    table = markdown(flat + [s["row"] for s in summary], flat_qps,
                     ["baseline", *("yes" if s["met"] else "no" for s in summary)])
    log.info("\n%s", "\n".join(table))
    return {"flat_qps": flat_qps, "rows": [asdict(r) for r in rows],
            "summary": [{"kind": s["row"].kind, "setting": s["row"].setting(),
                         "recall": s["row"].recall, "qps": s["row"].qps,
                         "speedup": s["speedup"], "met": s["met"]} for s in summary]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    p.add_argument("--queries", type=int, default=1000, help="batch for QPS and recall")
    p.add_argument("--latency-queries", type=int, default=200,
                   help="of those, searched one at a time for the latency")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated, of {','.join(KINDS)}; flat always runs (baseline)")
    p.add_argument("--vectors", type=Path, help=".npy (N, 384) or a folder of chunk files")
    p.add_argument("--noise", type=float, default=0.03,
                   help="sd per coordinate of the noise of augmented copies of real vectors")
    p.add_argument("--clusters", type=int, default=4000, help="synthetic mixture clusters")
    hnsw = DEFAULT_PARAMS["hnsw"]  # the project's own: M 32, efConstruction 80
    p.add_argument("--hnsw-m", type=int, default=hnsw["m"])
    p.add_argument("--hnsw-efc", type=int, default=hnsw["ef_construction"],
                   help="HNSW efConstruction")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists; 0: 4 sqrt(N)")
    p.add_argument("--train", type=int, default=0, help="IVF training sample; 0: 39 nlist")
    p.add_argument("--pq-m", type=int, default=48, help="PQ sub-quantizers (8 bits each)")
    p.add_argument("--refine-k", type=int, default=4, help="ivfpq_refine: re-rank k_factor*K")
    p.add_argument("--repeats", type=int, default=1, help="batched searches, best kept")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    kinds = set(args.kinds.split(",")) | {"flat"}
    if unknown := kinds - set(KINDS):
        p.error(f"unknown kinds {sorted(unknown)}; known: {KINDS}")
    args.kinds = [k for k in KINDS if k in kinds]
    args.latency_queries = min(args.latency_queries, args.queries)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    base, queries, data = (real_vectors(args.vectors, args.n, args.queries, args.seed,
                                        args.noise) if args.vectors else
                           synthetic(args.n, args.queries, args.seed, args.clusters))
    log.info("DATA: %s: %s", data["kind"].upper(), json.dumps(data))
    log.info("%d x %d base vectors (%.0f MiB), %d queries, faiss %s with %d thread(s), "
             "%.1f s to prepare", *base.shape, base.nbytes / 2**20, len(queries),
             faiss.__version__, faiss.omp_get_max_threads(), time.perf_counter() - started)
    rows = run(base, queries, args.kinds, args)
    result = {"data": data, "n": len(base), "dim": DIM, "queries": len(queries),
              "latency_queries": args.latency_queries, "threads": args.threads,
              "faiss": faiss.__version__, "numpy": np.__version__, "cpus": os.cpu_count(),
              "machine": platform.platform(), "args": {k: str(v) for k, v in vars(args).items()},
              **report(rows, data, args),
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "wall_s": time.perf_counter() - started}
    log.info("peak RSS %.0f MiB, %.0f s in all", result["peak_rss_bytes"] / 2**20,
             result["wall_s"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        log.info("figures written to %s", args.json)
    return result


if __name__ == "__main__":
    main()
