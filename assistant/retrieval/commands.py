"""The ``assistant search`` and ``assistant index`` commands' work (cli.py holds the options)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import typer
from tqdm import tqdm

from assistant.config import Settings
from assistant.data.manifest import DataError
from assistant.retrieval.adapter import AdapterConfig, QueryAdapter, TrainingSet, train_adapter
from assistant.retrieval.benchmark import BenchmarkConfig, abstract_mask
from assistant.retrieval.build import (
    INDEX_NAME,
    CorpusSpec,
    EmbeddingNeededError,
    build_index,
    ensure_index,
    expected_corpus_sha256,
    index_path,
    open_searcher,
    query_embedder,
    texts_sha256,
)
from assistant.retrieval.corpus import SOURCES, iter_corpus
from assistant.retrieval.dense import INDEX_KINDS, IndexKind
from assistant.retrieval.embed import Embedder, TextEmbedder, encode_queries, trace_queries
from assistant.retrieval.evaluate import (
    Method,
    Query,
    evaluate_methods,
    major_topics,
    mesh_major_queries,
)
from assistant.retrieval.index import (
    MANIFEST_FILE,
    IndexManifest,
    IndexMissingError,
    IndexUnusableError,
    open_index,
    stale_reasons,
)
from assistant.retrieval.rerank import FEATURES, Reranker, RerankerConfig, fit_reranker, made_for
from assistant.retrieval.search import MODES, Fusion, Hit, Mode, Ranking, Searcher
from assistant.retrieval.seed import SeedInfo, read_seed, seed_path, write_seed

log = logging.getLogger(__name__)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def format_hits(hits: Sequence[Hit]) -> str:
    """Numbered hits: score and citation, then the snippet and the link, indented."""
    if not hits:
        return "no hits"
    lines = []
    for number, hit in enumerate(hits, start=1):
        lines += [f"{number:2d}. [{hit.score:.4f}] {hit.citation}",
                  f"    {hit.snippet}", f"    {hit.url}"]
    return "\n".join(lines)


def run_search(settings: Settings, query: str, k: int, as_json: bool, mode: str,
               fusion: str | None, weight: float | None, sources: Sequence[str] | None,
               year_range: tuple[int | None, int | None]) -> None:
    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if fusion is not None and fusion not in get_args(Fusion):
        raise typer.BadParameter(f"--fusion must be rrf or weighted, got {fusion!r}")
    try:
        searcher = open_searcher(settings, rebuild=False)
        hits = searcher.search(query, k, cast(Mode, mode), sources, year_range,
                               cast(Fusion | None, fusion), weight)
    except IndexMissingError as exc:
        raise _fail(f"no literature index in {index_path(settings)}: run "
                    "`assistant index build` first") from exc
    except (IndexUnusableError, DataError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([hit.to_dict() for hit in hits], indent=1, ensure_ascii=False))
    else:
        typer.echo(format_hits(hits))


def run_index_build(settings: Settings, sources: Sequence[str] | None, limit: int | None,
                    kind: str, max_words: int, progress: bool) -> None:
    if kind not in INDEX_KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    try:
        manifest = build_index(settings, sources, limit, cast(IndexKind, kind), max_words,
                               progress=progress)
    except (DataError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"index: {index_path(settings)}")
    typer.echo(f"{manifest.passage_count} passages of {manifest.document_count} documents "
               f"({_counts(manifest)}), {manifest.index_kind}, "
               f"{manifest.build_seconds:.1f} s")


def _counts(manifest: IndexManifest) -> str:
    return ", ".join(f"{s} {n}" for s, n in sorted(manifest.source_counts.items()))


def index_status(settings: Settings, manifest: IndexManifest) -> str:
    """"up to date", or "stale: what differs"."""
    spec = CorpusSpec.from_dict(manifest.corpus)
    expected = expected_corpus_sha256(settings, spec, manifest)
    reasons = stale_reasons(manifest, expected, Embedder(settings.data_dir).fingerprint)
    return "stale: " + "; ".join(reasons) if reasons else "up to date"


def run_index_info(settings: Settings) -> None:
    path = index_path(settings)
    try:
        manifest = IndexManifest.load(path / MANIFEST_FILE)
    except IndexMissingError as exc:
        raise _fail(f"no literature index in {path}: run `assistant index build`") from exc
    except IndexUnusableError as exc:
        raise _fail(str(exc)) from exc
    try:
        status = index_status(settings, manifest)
    except DataError as exc:
        status = f"unknown ({exc})"
    unusable = False
    if status == "up to date":  # and its files read as a search reads them
        try:
            opened = open_index(path, None, None)
        except IndexUnusableError as exc:
            status, unusable = f"unusable: {exc}", True
        else:
            if opened.titles is None:
                status += " (no title channel: hybrid search is not re-ranked)"
            opened.close()
    corpus = manifest.corpus
    typer.echo(f"index:     {path}\nstatus:    {status}\n"
               f"passages:  {manifest.passage_count} of {manifest.document_count} documents "
               f"({_counts(manifest)})\n"
               f"corpus:    sources {', '.join(corpus['sources'])}; limit {corpus['limit']}; "
               f"max_words {corpus['max_words']}; sha256 {manifest.corpus_sha256}\n"
               f"embedder:  {manifest.embedder} (sha256 {manifest.embedder_sha256}), "
               f"dim {manifest.dim}\n"
               f"kind:      {manifest.index_kind} {json.dumps(manifest.index_params)}\n"
               f"built:     {manifest.created} in {manifest.build_seconds:.1f} s, vectors "
               f"{manifest.vectors_source}")
    if unusable:
        raise typer.Exit(1)


def run_index_pack(settings: Settings, bits: int) -> None:
    """Write the up-to-date index's vectors as the committed seed (``seed.py``), and say
    what the quantisation costs: cosine of each decoded vector to the original."""
    try:
        index = ensure_index(settings, rebuild=False)
    except (IndexUnusableError, DataError) as exc:
        raise _fail(str(exc)) from exc
    manifest = index.manifest
    if manifest.index_kind == "ivfpq":
        raise _fail("an ivfpq index keeps only compressed vectors: build a flat or hnsw "
                    "index first")
    vectors = index.dense.reconstruct_n(0, manifest.passage_count)  # (N, d)
    titles = CorpusSpec.from_dict(manifest.corpus).titles
    info = SeedInfo(manifest.embedder, manifest.embedder_sha256,
                    texts_sha256(manifest.corpus_sha256, titles), manifest.passage_count,
                    manifest.dim, bits)
    target = seed_path(settings.index_dir, INDEX_NAME)
    try:
        size = write_seed(target, vectors, info)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    decoded = read_seed(target, info.embedder_sha256, info.texts_sha256, info.count)
    assert decoded is not None  # just written for exactly these embeddings
    cosines = np.einsum("ij,ij->i", vectors, decoded)  # (N,)
    typer.echo(f"seed:      {target} ({size / 2**20:.1f} MiB, {bits} bits x {manifest.dim})\n"
               f"cosine to the original vectors: mean {cosines.mean():.5f}, "
               f"min {cosines.min():.5f}")


def run_index_ensure(settings: Settings, embed: bool) -> None:
    """Open the index, building it when missing or stale: from the committed seed when it
    holds the vectors, else by embedding (only when ``embed``; otherwise a warning and a
    zero exit, so set-up goes on and the service reports retrieval unavailable)."""
    start = time.perf_counter()
    try:
        index = ensure_index(settings, rebuild=True, progress=True, embed=embed)
    except EmbeddingNeededError as exc:
        typer.echo(f"warning: literature index not built: {exc}", err=True)
        return
    except (IndexUnusableError, DataError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    manifest = index.manifest
    typer.echo(f"index ready: {manifest.passage_count} passages ({_counts(manifest)}), "
               f"{manifest.index_kind}, vectors {manifest.vectors_source}; "
               f"{time.perf_counter() - start:.1f} s")


def adapter_training_set(settings: Settings, config: BenchmarkConfig | None = None,
                         embedder: TextEmbedder | None = None
                         ) -> tuple[TrainingSet, np.ndarray, list[set[int]], dict[str, Any]]:
    """The adapter's training set (every MeSH descriptor that is a major topic of a
    MEDLINE citation with an abstract, but those of the benchmark's reported and tuning
    sets), the tuning descriptors' vectors and judgments, and what the adapter records of
    its data. Passage vectors are the literature index's own."""
    config = config or BenchmarkConfig()
    embedder = embedder or Embedder(settings.data_dir)
    searcher = open_searcher(settings, rebuild=False, embedder=embedder)
    docs = [d for d in iter_corpus(settings.data_dir, ("medline",)) if d.has_abstract]
    rows = np.flatnonzero(abstract_mask(searcher, {d.id for d in docs}))
    store = searcher.index.passages
    doc_row = {d.id: i for i, d in enumerate(docs)}
    passage_doc = np.array([doc_row[store.doc_id(int(i))] for i in rows], dtype=np.int64)
    passages = np.stack([searcher.index.dense.reconstruct(int(i)) for i in rows])  # (P, d)
    sets = mesh_major_queries(docs, config.min_major, config.n_test, config.n_tune,
                              config.seed)
    held = {q.key for q in [*sets.test, *sets.tune]}
    names, relevant = major_topics(docs)
    train_uis = sorted(ui for ui in names if ui not in held)
    log.info("adapter training: %d descriptors (%d held out), %d passages of %d citations",
             len(train_uis), len(held), len(rows), len(docs))
    train = TrainingSet(embedder.encode([names[ui] for ui in train_uis], batch_size=256),
                        [sorted(doc_row[d] for d in relevant[ui]) for ui in train_uis],
                        passages, passage_doc)
    tune_vectors = embedder.encode([q.text for q in sets.tune])
    tune_relevant = [{doc_row[d] for d in q.relevant} for q in sets.tune]
    meta = {"embedder": embedder.name, "embedder_sha256": embedder.fingerprint,
            "index_corpus_sha256": searcher.index.manifest.corpus_sha256,
            "training_descriptors": len(train_uis), "passages": len(rows),
            "citations": len(docs), "held_out_descriptors": sorted(held),
            "held_out_rule": asdict(config)}
    return train, tune_vectors, tune_relevant, meta


def run_train_query_adapter(settings: Settings, config: AdapterConfig, out: Path,
                            held_out: BenchmarkConfig | None = None,
                            embedder: TextEmbedder | None = None) -> QueryAdapter:
    """Trains the adapter on the built index and writes it to ``out``; ``held_out``: the
    benchmark query sets kept out (the benchmark's defaults)."""
    start = time.perf_counter()
    try:
        train, tune_vectors, tune_relevant, meta = adapter_training_set(settings, held_out,
                                                                        embedder)
    except (IndexUnusableError, DataError) as exc:
        raise _fail(f"{exc}\nbuild the index first: `assistant index ensure`") from exc
    try:
        matrix, result = train_adapter(train, tune_vectors, tune_relevant, config)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    meta |= result | {"seconds": round(time.perf_counter() - start, 1),
                      "command": "assistant train query-adapter"}
    adapter = QueryAdapter(matrix, meta)
    digest = adapter.save(out)
    typer.echo(f"query adapter: best step {result['best_step']}, tuning dense nDCG@10 "
               f"{result['history'][0]['tune_ndcg10']:.4f} -> {result['tune_ndcg10']:.4f}; "
               f"{meta['seconds']} s; {out} (sha256 {digest})")
    return adapter


def run_train_reranker(settings: Settings, config: RerankerConfig, out: Path,
                       held_out: BenchmarkConfig | None = None,
                       embedder: TextEmbedder | None = None) -> Reranker:
    """Fits the re-ranker on the candidates the shipped fusion retrieves for every MeSH
    descriptor of at least ``min_major`` citations outside the benchmark's reported and
    tuning sets, reports the tuning descriptors' nDCG@10 without and with it, and writes
    it to ``out``."""
    start = time.perf_counter()
    bench = held_out or BenchmarkConfig()
    embedder = embedder or query_embedder(settings)
    trace_queries(embedder)  # queries embedded as the service embeds them
    try:
        searcher = open_searcher(settings, rebuild=False, embedder=embedder, rerank=False)
        medline = list(iter_corpus(settings.data_dir, ("medline",)))
    except (IndexUnusableError, DataError) as exc:
        raise _fail(f"{exc}\nbuild the index first: `assistant index ensure`") from exc
    if not searcher.document_features.usable:
        raise _fail("the index keeps no vectors (IVF-PQ): the re-ranker needs flat or HNSW")
    docs = [d for d in medline if d.has_abstract]
    sets = mesh_major_queries(docs, bench.min_major, bench.n_test, bench.n_tune, bench.seed)
    held = {q.key for q in [*sets.test, *sets.tune]}
    # The descriptors are chosen as the benchmark chooses them (on the citations with an
    # abstract), but their candidates are all MEDLINE citations, title-only ones included,
    # as a search sees them: trained on abstracts alone, the model over-rated title-only
    # citations (one passage, all of it the title).
    counts = {ui: len(ids) for ui, ids in major_topics(docs)[1].items()}
    names, relevant = major_topics(medline)
    train = [Query(ui, names[ui], frozenset(relevant[ui])) for ui in sorted(counts)
             if counts[ui] >= bench.min_major and ui not in held]
    mask = searcher.index.passages.source_codes == SOURCES.index("medline")
    if not train:
        raise _fail("no training descriptors: every eligible one is held out")
    ranking = Ranking(rerank=False)
    vectors = encode_queries(embedder, [q.text for q in train])
    store = searcher.index.passages
    features, labels = [], []
    for query, vector in zip(tqdm(train, desc="candidates", unit="query"), vectors,
                             strict=True):
        rows, found = searcher.candidate_features(query.text, config.depth, ranking, mask,
                                                  vector)
        features.append(found)
        labels.append(np.array([store.doc_id(int(r)) in query.relevant for r in rows]))
    x, y = np.concatenate(features), np.concatenate(labels)
    meta: dict[str, Any] = {
        "embedder": searcher.index.manifest.embedder, **made_for(embedder),
        "ranking": asdict(ranking), "index_corpus_sha256": searcher.index.manifest.corpus_sha256,
        "index_titles": searcher.index.titles is not None,
        "training_descriptors": len(train), "candidates": len(y),
        "relevant_candidates": int(y.sum()), "held_out_descriptors": sorted(held),
        "held_out_rule": asdict(bench), "config": asdict(config)}
    try:
        reranker = fit_reranker(x, y, config, meta)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    before = after = float("nan")  # no tuning descriptors: nothing to measure on
    if sets.tune:
        tuned = Searcher(searcher.index, embedder, reranker=reranker)
        results = evaluate_methods(
            tuned, sets.tune, [Method("fused", ranking),
                               Method("re-ranked", ranking.but(rerank=True))],
            abstract_mask(searcher, {d.id for d in docs}),
            encode_queries(embedder, [q.text for q in sets.tune]))
        before, after = (results[name].mean("ndcg@10") for name in ("fused", "re-ranked"))
    reranker.meta |= {"tune_ndcg10": {"fused": before, "re-ranked": after},
                      "coefficients": dict(zip(FEATURES, map(float, reranker.coef),
                                               strict=True)),
                      "seconds": round(time.perf_counter() - start, 1),
                      "command": "assistant train reranker"}
    digest = reranker.save(out)
    typer.echo(f"re-ranker: {len(train)} descriptors, {len(y)} candidates ({int(y.sum())} "
               f"relevant); tuning nDCG@10 {before:.4f} fused -> {after:.4f} re-ranked; "
               f"{reranker.meta['seconds']} s; {out} (sha256 {digest})")
    return reranker
