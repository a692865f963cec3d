"""Building the literature index, and opening it only when it matches corpus and embedder.

``build_index``: corpus -> passages -> embeddings -> FAISS + BM25 -> ``<index_dir>/literature``.

Staleness: an index records ``corpus_sha256``, the digest of the passages it holds
(``passages.corpus_sha256``), and ``corpus_inputs_sha256``, a digest of what those passages
are made from: the data files' sha256s (from the verified data manifest), the passage
settings and the source of the reader and splitter modules. When the inputs are unchanged,
the passages are too, and the recorded digest is the expected one: opening costs a file
verification, not a corpus parse. When the inputs changed, the corpus is parsed again
(about half a minute) and its passages digested: an unchanged digest (say, only a comment
changed) keeps the index and records the new inputs; a changed one makes it stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from assistant.config import Settings
from assistant.data.manifest import require
from assistant.retrieval import corpus as corpus_module
from assistant.retrieval import passages as passages_module
from assistant.retrieval.adapter import RELEASE_NAME as ADAPTER_RELEASE
from assistant.retrieval.adapter import AdaptedEmbedder, AdapterError, QueryAdapter
from assistant.retrieval.corpus import SOURCES, Source, iter_corpus
from assistant.retrieval.dense import IndexKind, build_faiss, index_params
from assistant.retrieval.embed import Embedder, TextEmbedder, passage_embedder
from assistant.retrieval.index import (
    MANIFEST_FILE,
    IndexManifest,
    IndexMissingError,
    IndexUnusableError,
    LoadedIndex,
    PassageRecord,
    StaleIndexError,
    open_index,
    save_index,
)
from assistant.retrieval.lexical import LexicalIndex
from assistant.retrieval.passages import Passage, corpus_sha256, split_passages
from assistant.retrieval.rerank import RELEASE_NAME as RERANKER_RELEASE
from assistant.retrieval.rerank import Reranker, RerankerError
from assistant.retrieval.search import Ranking, Searcher
from assistant.retrieval.seed import read_seed, seed_path

log = logging.getLogger(__name__)

INDEX_NAME = "literature"
# The kind set-up and `assistant index build` make. HNSW, not exact search, because of the
# latency target: on the 166,072 passages a flat query took 22 ms p50 (2 threads), HNSW
# 0.41 ms at recall@10 0.9865 against exact (scripts/bench_search.py; README results).
DEFAULT_KIND: IndexKind = "hnsw"
EMBED_CHUNK = 512  # passages per encode call: the progress bar's step (about 20 s)
CACHE_CHUNK = 8192  # passages per cached vector file: at most this much work is lost


@dataclass(frozen=True)
class CorpusSpec:
    """How the indexed passages are made from the corpus.

    ``titles``: the embedder and BM25 read "Title. passage" (the default) or the passage
    alone (the known-item benchmark's abstract-only index). ``abstracts_only``: leave out
    documents without an abstract or definition (title-only citations, ICD-10-CM codes).
    """

    sources: tuple[Source, ...] = SOURCES
    limit: int | None = None  # the first ``limit`` passages only (small builds, tests)
    max_words: int = 110  # 1.7% of passages exceed MiniLM's 256 word pieces (passages.py)
    overlap_sentences: int = 1
    titles: bool = True
    abstracts_only: bool = False

    @classmethod
    def make(cls, sources: Sequence[str] | None = None, limit: int | None = None,
             max_words: int = 110, overlap_sentences: int = 1, titles: bool = True,
             abstracts_only: bool = False) -> CorpusSpec:
        chosen = set(sources or SOURCES)
        if unknown := chosen - set(SOURCES):
            raise ValueError(f"unknown sources {sorted(unknown)}; known: {list(SOURCES)}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return cls(tuple(s for s in SOURCES if s in chosen), limit, max_words,
                   overlap_sentences, titles, abstracts_only)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CorpusSpec:
        return cls.make(raw["sources"], raw["limit"], raw["max_words"],
                        raw["overlap_sentences"], raw.get("titles", True),
                        raw.get("abstracts_only", False))

    def text(self, passage: Passage) -> str:
        """What the embedder and BM25 read for ``passage``."""
        return passage.embed_text() if self.titles else passage.text


def index_path(settings: Settings) -> Path:
    return settings.index_dir / INDEX_NAME


def iter_passages(data_dir: Path, spec: CorpusSpec
                  ) -> Iterator[tuple[Passage, corpus_module.Document]]:
    """(passage, its document) in corpus order, at most ``spec.limit`` of them."""
    docs = (d for d in iter_corpus(data_dir, spec.sources)
            if d.has_abstract or not spec.abstracts_only)
    pairs = ((passage, doc) for doc in docs
             for passage in split_passages(doc, spec.max_words, spec.overlap_sentences))
    return islice(pairs, spec.limit)


def corpus_inputs_sha256(data_dir: Path, spec: CorpusSpec) -> str:
    """Digest of the verified data files of ``spec.sources``, ``spec`` and the reader and
    splitter source code: equal digests make equal passages."""
    files = {str(path.relative_to(data_dir)): sha for source in spec.sources
             for path, sha in sorted(require(data_dir, source).items())}
    code = {module.__name__: hashlib.sha256(Path(str(module.__file__)).read_bytes()).hexdigest()
            for module in (corpus_module, passages_module)}
    payload = json.dumps({"files": files, "spec": asdict(spec), "code": code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _record(passage: Passage, doc: corpus_module.Document) -> PassageRecord:
    return PassageRecord(id=passage.id, doc_id=passage.doc_id, source=passage.source,
                         title=passage.title, text=passage.text, year=passage.year,
                         citation=doc.citation(), url=doc.url, position=passage.position)


def texts_sha256(corpus_digest: str, titles: bool) -> str:
    """Digest of the texts embedded for passages of ``corpus_digest``: the passages
    themselves, read with or without their titles."""
    if titles:
        return corpus_digest
    return hashlib.sha256(f"no titles\n{corpus_digest}".encode()).hexdigest()


def embedding_cache_dir(settings: Settings, embedder: TextEmbedder, corpus_digest: str) -> Path:
    """Where the vectors of one corpus digest under one embedder are cached while (and
    after) they are computed: ``<data_dir>/cache/embeddings/<key>``."""
    passages = passage_embedder(embedder)  # an adapter around it changes no passage vector
    key = hashlib.sha256(f"{embedder.name}\n{embedder.fingerprint}\n"
                         f"{getattr(passages, 'max_seq_length', '')}\n{corpus_digest}"
                         .encode()).hexdigest()[:24]
    return settings.data_dir / "cache" / "embeddings" / key


def _embed_all(embedder: TextEmbedder, texts: Sequence[str], progress: bool,
               cache: Path | None = None) -> np.ndarray:
    """(N, d) vectors of ``texts``. With ``cache``, every ``CACHE_CHUNK`` passages are saved
    there as they are done, so an interrupted build resumes where it stopped."""
    parts: list[np.ndarray] = []
    with tqdm(total=len(texts), desc="embedding passages", unit="passage",
              disable=not progress) as bar:
        for first in range(0, len(texts), CACHE_CHUNK):
            batch = texts[first:first + CACHE_CHUNK]
            path = cache / f"{first // CACHE_CHUNK:05d}.npy" if cache else None
            if path is not None and path.exists():
                done = np.load(path)
                if done.shape == (len(batch), embedder.dim):
                    parts.append(done)
                    bar.update(len(batch))
                    continue
                log.warning("ignoring cached vectors %s of shape %s", path, done.shape)
            chunks = []
            for start in range(0, len(batch), EMBED_CHUNK):
                chunks.append(embedder.encode(batch[start:start + EMBED_CHUNK]))
                bar.update(len(chunks[-1]))
            parts.append(np.concatenate(chunks))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, parts[-1])
                tmp.replace(path)
    return np.concatenate(parts)  # (N, d)


def document_titles(passages: Sequence[Passage]) -> list[str]:
    """The title of each distinct document, in the order the passages first name it
    (the rows of the title BM25 index; ``PassageStore.doc_rows`` maps passages to them)."""
    titles: dict[str, str] = {}
    for passage in passages:
        titles.setdefault(passage.doc_id, passage.title)
    return list(titles.values())


def build_index(settings: Settings, sources: Sequence[str] | None = None,
                limit: int | None = None, kind: IndexKind = "flat", max_words: int = 110,
                progress: bool = True, embedder: TextEmbedder | None = None,
                params: dict[str, int] | None = None, titles: bool = True,
                abstracts_only: bool = False) -> IndexManifest:
    """Embed the corpus (or ``sources``, or its first ``limit`` passages) and write the
    FAISS index of ``kind``, BM25 and the manifest to ``<index_dir>/literature``."""
    spec = CorpusSpec.make(sources, limit, max_words, titles=titles,
                           abstracts_only=abstracts_only)
    return _build(settings, spec, kind, params or {}, progress, embedder)


class EmbeddingNeededError(IndexUnusableError):
    """No index, and no seed holding its vectors: building it means embedding the corpus."""


def _build(settings: Settings, spec: CorpusSpec, kind: IndexKind, params: dict[str, int],
           progress: bool, embedder: TextEmbedder | None, embed: bool = True
           ) -> IndexManifest:
    start = time.perf_counter()
    embedder = embedder or Embedder(settings.data_dir)
    inputs_sha = corpus_inputs_sha256(settings.data_dir, spec)
    # Records keep a document's citation, not the document (its MeSH headings and so on).
    pairs = [(p, _record(p, d)) for p, d in iter_passages(settings.data_dir, spec)]
    if not pairs:
        raise ValueError(f"no passages in sources {spec.sources}: nothing to index")
    passages = [p for p, _ in pairs]
    log.info("indexing %d passages of %d documents (%s)", len(passages),
             len({p.doc_id for p in passages}), ", ".join(spec.sources))
    texts = [spec.text(p) for p in passages]
    digest = corpus_sha256(passages)
    texts_digest = texts_sha256(digest, spec.titles)
    vectors = read_seed(seed_path(settings.index_dir, INDEX_NAME), embedder.fingerprint,
                        texts_digest, len(texts))  # (N, d) or None
    vectors_source = "seed" if vectors is not None else "embedded"
    if vectors is None and not embed:
        raise EmbeddingNeededError(
            f"no seed in {seed_path(settings.index_dir, INDEX_NAME)} holds the vectors of "
            f"these {len(texts)} passages: `assistant index build` embeds them (about "
            f"{len(texts) / 30 / 60:.0f} min at 30 passages/s)")
    if vectors is None:
        cache = embedding_cache_dir(settings, embedder, texts_digest)
        vectors = _embed_all(embedder, texts, progress, cache)  # (N, d)
    resolved = index_params(kind, len(passages), **params)
    dense = build_faiss(vectors, kind, **resolved)
    lexical = LexicalIndex.build(texts)
    titles = LexicalIndex.build(document_titles(passages)) if spec.titles else None
    manifest = IndexManifest(
        embedder=embedder.name, embedder_sha256=embedder.fingerprint, dim=int(vectors.shape[1]),
        corpus_sha256=digest, corpus_inputs_sha256=inputs_sha,
        passage_count=len(passages), document_count=len({p.doc_id for p in passages}),
        source_counts=dict(Counter(p.source for p in passages)), index_kind=kind,
        index_params=resolved, corpus={**asdict(spec), "sources": list(spec.sources)},
        build_seconds=round(time.perf_counter() - start, 2), vectors_source=vectors_source,
        created=datetime.now(UTC).isoformat(timespec="seconds"))
    save_index(index_path(settings), dense, (r for _, r in pairs), manifest, lexical, titles)
    log.info("built a %s index of %d passages in %.1f s", kind, len(passages),
             manifest.build_seconds)
    return manifest


def expected_corpus_sha256(settings: Settings, spec: CorpusSpec,
                           manifest: IndexManifest | None = None) -> str:
    """The passage digest the corpus gives now under ``spec``: the manifest's own when its
    inputs digest still matches (no parse), else computed from the corpus."""
    inputs_sha = corpus_inputs_sha256(settings.data_dir, spec)
    if manifest is not None and manifest.corpus_inputs_sha256 == inputs_sha:
        return manifest.corpus_sha256
    log.info("corpus inputs changed since the index was built: digesting the passages again")
    digest = corpus_sha256(p for p, _ in iter_passages(settings.data_dir, spec))
    if manifest is not None and manifest.corpus_sha256 == digest:
        log.info("the passages are unchanged: recording the new inputs in the manifest")
        refreshed = replace(manifest, corpus_inputs_sha256=inputs_sha)
        try:
            refreshed.save(index_path(settings) / MANIFEST_FILE)
        except OSError as exc:  # a read-only index folder: digest again next time
            log.warning("could not update %s: %s", index_path(settings) / MANIFEST_FILE, exc)
    return digest


def _recorded(settings: Settings) -> IndexManifest | None:
    try:
        return IndexManifest.load(index_path(settings) / MANIFEST_FILE)
    except IndexUnusableError:
        return None


def _require_built(settings: Settings) -> None:
    if not (index_path(settings) / MANIFEST_FILE).exists():
        raise IndexMissingError(f"no literature index in {index_path(settings)}: run "
                                "`assistant index build`")


def ensure_index(settings: Settings, rebuild: bool = True,
                 embedder: TextEmbedder | None = None, progress: bool = False,
                 embed: bool = True) -> LoadedIndex:
    """Open the literature index, checked against the corpus and the embedder.

    A missing, stale or corrupt index is rebuilt (with the corpus settings, kind and
    parameters it recorded, else the defaults) when ``rebuild``; otherwise its error is
    raised. A stale index is never used. ``embed`` False: rebuild only from the committed
    seed, raising ``EmbeddingNeededError`` when it does not hold the vectors.
    """
    if not rebuild:
        _require_built(settings)  # before the embedder's files are verified
    embedder = embedder or Embedder(settings.data_dir)
    manifest = _recorded(settings)
    spec = CorpusSpec.from_dict(manifest.corpus) if manifest else CorpusSpec()
    try:
        if manifest is None:
            _require_built(settings)  # nothing to check against: no corpus digest needed
        expected = expected_corpus_sha256(settings, spec, manifest)
        return open_index(index_path(settings), expected, embedder.fingerprint)
    except IndexUnusableError as exc:
        if not rebuild:
            raise
        what = "missing" if isinstance(exc, IndexMissingError) else (
            "stale" if isinstance(exc, StaleIndexError) else "corrupt")
        log.warning("literature index %s (%s): rebuilding it", what, exc)
    kind: IndexKind = manifest.index_kind if manifest else DEFAULT_KIND
    params = manifest.index_params if manifest else {}
    new = _build(settings, spec, kind, params, progress, embedder, embed)
    return open_index(index_path(settings), new.corpus_sha256, embedder.fingerprint)


def query_embedder(settings: Settings) -> TextEmbedder:
    """The embedder, with the committed query adapter when ``settings.query_adapter`` and
    the file is there. An adapter made for another embedder is not used (a warning says
    so): queries are then embedded as passages are."""
    base = Embedder(settings.data_dir, precision=settings.query_precision)
    path = settings.weights_dir / ADAPTER_RELEASE
    if not settings.query_adapter or not path.exists():
        return base
    try:
        adapter = QueryAdapter.load(path, base.fingerprint)
    except AdapterError as exc:
        log.warning("not using the query adapter: %s", exc)
        return base
    return AdaptedEmbedder(base, adapter)


def search_reranker(settings: Settings, embedder: TextEmbedder) -> Reranker | None:
    """The committed re-ranker when ``settings.reranker`` and the file is there, made for
    this embedder, query adapter and the default fusion; else None (a warning says why)."""
    path = settings.weights_dir / RERANKER_RELEASE
    if not settings.reranker or not path.exists():
        return None
    try:
        reranker = Reranker.load(path)
        reranker.check(embedder, asdict(Ranking()))
    except RerankerError as exc:
        log.warning("not re-ranking literature search: %s", exc)
        return None
    return reranker


def open_searcher(settings: Settings, rebuild: bool = True,
                  embedder: TextEmbedder | None = None, rerank: bool = True) -> Searcher:
    """A ``Searcher`` over the checked (or rebuilt) index: what the pipeline and the service
    hold, with the committed re-ranker unless ``rerank`` is False. The embedder loads its
    weights on the first dense query."""
    if not rebuild:
        _require_built(settings)
    embedder = embedder or query_embedder(settings)
    index = ensure_index(settings, rebuild=rebuild, embedder=embedder)
    return Searcher(index, embedder,
                    reranker=search_reranker(settings, embedder) if rerank else None)
