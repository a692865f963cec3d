"""Search: dense, BM25 or both fused, filtered by source and year, with snippets.

The ranking pieces are pure functions over arrays and dicts (``rrf``, ``weighted_fusion``,
``filter_mask``, ``best_sentences``); ``Searcher`` wires them to an opened index and the
embedder. A hit is one passage, at most one per document (its best passage), with the one
or two sentences of it that best answer the query as the snippet.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np

from assistant.retrieval.corpus import SOURCES
from assistant.retrieval.dense import search_faiss
from assistant.retrieval.embed import TextEmbedder, encode_queries, passage_embedder
from assistant.retrieval.index import LoadedIndex
from assistant.retrieval.lexical import tokenize_terms, top_k
from assistant.retrieval.passages import split_sentences
from assistant.retrieval.rerank import DocumentFeatures, Reranker

log = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["rrf", "weighted"]
MODES: tuple[Mode, ...] = ("dense", "bm25", "hybrid")
RRF_K = 60
CANDIDATES = 100  # passages each ranker hands to fusion, de-duplication and filtering
QUERY_VECTORS_KEPT = 256  # recent queries' vectors (1.5 KB each and the query's text)


@dataclass(frozen=True)
class Ranking:
    """How passages are ranked. The defaults are the settings chosen on the tuning MeSH
    descriptors of the relevance benchmark (benchmark.py), never on the reported ones.

    ``title_weight``: the BM25 of a passage's document title, times this, is added to the
    passage's BM25 (a citation whose title names the query is about it). ``rerank``: the
    fused candidate documents are re-ordered by the searcher's learned re-ranker
    (rerank.py) when it has one made for this fusion; hybrid mode only. ``feedback``:
    pseudo-relevance feedback, the unit vectors of the first ranking's top ``feedback``
    passages averaged and added, times ``feedback_weight``, to the query vector for a
    second dense search (Rocchio), then fused again; 0 for none.
    """

    mode: Mode = "hybrid"
    fusion: Fusion = "weighted"
    weight: float = 0.4  # dense share in weighted fusion
    title_weight: float = 2.0
    rerank: bool = True
    # Feedback (10 passages, weight 0.5) gained 0.003 tuning nDCG@10 (0.4410 vs 0.4379)
    # for a second dense search per query: off by default.
    feedback: int = 0
    feedback_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES or self.fusion not in ("rrf", "weighted"):
            raise ValueError(f"need mode in {MODES} and fusion rrf or weighted; got "
                             f"{self.mode!r}, {self.fusion!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if self.title_weight < 0 or self.feedback < 0 or self.feedback_weight < 0:
            raise ValueError("title_weight, feedback and feedback_weight must be >= 0; got "
                             f"{self.title_weight}, {self.feedback}, {self.feedback_weight}")

    def but(self, **changes: Any) -> Ranking:
        """This ranking with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# -- fusion --------------------------------------------------------------------------------


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(id) = sum over rankings of 1 / (k + rank), rank from 1.

    Returns (id, score) best first; ties keep the order of first appearance.
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


def _min_max(scores: Mapping[int, float]) -> dict[int, float]:
    """Scores mapped onto [0, 1]; all 1.0 when they are all equal."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {i: (s - low) / span if span > 0 else 1.0 for i, s in scores.items()}


def weighted_fusion(dense: Mapping[int, float], lexical: Mapping[int, float],
                    weight: float = 0.5) -> list[tuple[int, float]]:
    """score = weight * dense' + (1 - weight) * lexical', each list min-max normalised
    first, 0 where an id is absent from a list. ``weight`` 1.0 (0.0) is the dense
    (lexical) ranking unchanged: a list of weight 0 adds no candidates.

    Returns (id, score) best first; ties keep dense order, then lexical order.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    d, lx = _min_max(dense), _min_max(lexical)
    if weight in (0.0, 1.0):  # one list alone, ranked by its raw scores
        raw, norm = (dense, d) if weight == 1.0 else (lexical, lx)
        return [(i, norm[i]) for i, _ in sorted(raw.items(), key=lambda pair: -pair[1])]
    candidates = list(d) + [i for i in lx if i not in d]
    fused = {i: weight * d.get(i, 0.0) + (1 - weight) * lx.get(i, 0.0) for i in candidates}
    return sorted(fused.items(), key=lambda pair: -pair[1])


# -- filters -------------------------------------------------------------------------------


def filter_mask(source_codes: np.ndarray, years: np.ndarray,
                sources: Sequence[str] | None = None,
                year_range: tuple[int | None, int | None] | None = None) -> np.ndarray | None:
    """(N,) bool mask of passages passing the filters, or None when there are none.

    ``source_codes`` index ``corpus.SOURCES``; ``years`` hold 0 where a document has no
    year. A year bound leaves out undated documents (HPO terms, ICD-10-CM codes).
    """
    mask = None
    if sources:
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; known: {list(SOURCES)}")
        codes = [SOURCES.index(s) for s in sources]
        mask = np.isin(source_codes, codes)
    if year_range is not None and year_range != (None, None):
        low, high = year_range
        in_range = years > 0
        if low is not None:
            in_range &= years >= low
        if high is not None:
            in_range &= years <= high
        mask = in_range if mask is None else mask & in_range
    return mask


# -- snippets ------------------------------------------------------------------------------


def term_overlap_scores(query_terms: Sequence[str], sentences: Sequence[str]) -> np.ndarray:
    """(S,) number of distinct query terms (stemmed, stop words out) in each sentence."""
    wanted = set(query_terms)
    return np.array([len(wanted & set(tokenize_terms(s))) for s in sentences],
                    dtype=np.float32)


def _best(query: np.ndarray | Sequence[str], sentences: Sequence[str], n: int,
          sentence_vecs: np.ndarray | None) -> list[int]:
    """The indices of the ``n`` best of ``sentences``, in passage order."""
    if len(sentences) <= n:
        return list(range(len(sentences)))
    if isinstance(query, np.ndarray):
        if sentence_vecs is None or len(sentence_vecs) != len(sentences):
            raise ValueError(f"need one vector per sentence ({len(sentences)}), got "
                             f"{None if sentence_vecs is None else len(sentence_vecs)}")
        scores = sentence_vecs @ query  # (S,)
    else:
        scores = term_overlap_scores(query, sentences)
    chosen = np.lexsort((np.arange(len(sentences)), -scores))[:n]
    return sorted(int(i) for i in chosen)


def best_sentences(query: np.ndarray | Sequence[str], passage_text: str, n: int = 2,
                   sentence_vecs: np.ndarray | None = None) -> list[str]:
    """The ``n`` sentences of ``passage_text`` that best answer the query, in passage order.

    ``query``: a (d,) unit query vector, scored against ``sentence_vecs`` ((S, d), one row
    per ``split_sentences(passage_text)``) by inner product; or the query's terms
    (``tokenize_terms``), scored by term overlap. Ties go to the earlier sentence.
    """
    sentences = split_sentences(passage_text)
    return [sentences[i] for i in _best(query, sentences, n, sentence_vecs)]


# Between two quoted sentences that are not next to each other in the passage.
GAP = " \u2026 "


def snippet(query: np.ndarray | Sequence[str], passage_text: str, n: int = 2,
            sentence_vecs: np.ndarray | None = None,
            sentences: Sequence[str] | None = None) -> str:
    """``best_sentences`` as one snippet: a sentence that does not follow the one before in
    the passage is set off by an ellipsis (``GAP``), so a quote never reads as one stretch
    of text where the passage had more between. ``sentences``: the passage's, if split
    already."""
    if sentences is None:
        sentences = split_sentences(passage_text)
    chosen = _best(query, sentences, n, sentence_vecs)
    return "".join(("" if k == 0 else " " if i == chosen[k - 1] + 1 else GAP) + sentences[i]
                   for k, i in enumerate(chosen))


# -- hits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result: a passage, its citation and a snippet of it."""

    id: str  # passage id, "PMID:123#0"
    doc_id: str
    source: str
    title: str
    snippet: str
    score: float  # of the mode: cosine (dense), BM25, RRF or weighted fusion (hybrid), or
    # the re-ranker's probability (re-ranked hybrid)
    citation: str
    url: str
    year: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_per_document(ranked: Sequence[tuple[int, float]], doc_ids: Sequence[str],
                      k: int) -> list[tuple[int, float]]:
    """The first ``k`` entries of ``ranked`` whose document was not seen before."""
    seen: set[str] = set()
    kept = []
    for (item, score), doc in zip(ranked, doc_ids, strict=True):
        if doc not in seen:
            seen.add(doc)
            kept.append((item, score))
            if len(kept) == k:
                break
    return kept


# -- the searcher --------------------------------------------------------------------------


def _pairs(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    keep = ids >= 0
    return list(zip(ids[keep].tolist(), scores[keep].tolist(), strict=True))


MAX_QUERY = 1000  # characters of a query


def check_query(q: str | None, sources: Sequence[str] | None = None,
                year_from: int | None = None, year_to: int | None = None) -> str:
    """The query with its white space collapsed; ``ValueError`` saying what is wrong with
    it or its filters (the service answers 422, the command exits 2, before any index
    is opened)."""
    query = " ".join((q or "").split())
    if not query:
        raise ValueError("the query is empty: give words to search for, e.g. "
                         "/v1/search?q=glioblastoma+MRI")
    if any(unicodedata.category(ch) == "Cc" for ch in query):
        raise ValueError("the query must not contain control characters")
    if not any(ch.isalnum() for ch in query):  # a zero-width space, undecodable bytes (U+FFFD)
        raise ValueError("the query has no letters or digits to search for")
    if len(query) > MAX_QUERY:
        raise ValueError(f"the query must be at most {MAX_QUERY} characters, got {len(query)}")
    if unknown := sorted(set(sources or ()) - set(SOURCES)):
        raise ValueError(f"unknown source {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    if year_from is not None and year_to is not None and year_from > year_to:
        raise ValueError(f"year_from ({year_from}) is after year_to ({year_to})")
    return query


# Source ids a query may name, as hits cite them: "PMID: 31234567", "HP:0001250", and an
# ICD-10-CM code after "ICD" ("ICD-10-CM E11", "icd10 G40.909", "ICD-10 code R51.9") or
# with its dot ("G40.909", "What is G40.909?"). Without either, "p53", "Q10" or "C60"
# are the words a researcher means (a protein, coenzyme Q10, fullerene), and "T10" or
# "B12" inside a question are words too.
_PMID = re.compile(r"\bPMID\s*:?\s*(\d{1,9})\b", re.IGNORECASE)
_HPO = re.compile(r"\bHP\s*:\s*(\d{7})\b", re.IGNORECASE)
_ICD = r"([A-TV-Z]\d[0-9A-Z](?:\.[0-9A-Z]{1,4})?)"
# Without "ICD" before it, a V or X code is taken for a version or a magnification
# ("FreeSurfer v10.2", "x10.5"): V10.2 is a pedal cyclist's injury.
_ICD_DOTTED = re.compile(r"(?<![\w.])([A-TWYZ]\d[0-9A-Z]\.[0-9A-Z]{1,4})(?!\w|\.\w)",
                         re.IGNORECASE)
_ICD_NAMED = re.compile(rf"\bICD(?:[\s-]*10(?:[\s-]*CM)?)?(?:\s+codes?)?\s*:?\s*{_ICD}\b",
                        re.IGNORECASE)


def named_documents(query: str) -> list[str]:
    """The document ids a query names by their source ids, in the order named."""
    found = [(m.start(), f"PMID:{m[1]}") for m in _PMID.finditer(query)]
    found += [(m.start(), f"HP:{m[1]}") for m in _HPO.finditer(query)]
    icd = [*_ICD_NAMED.finditer(query), *_ICD_DOTTED.finditer(query)]
    found += [(m.start(1), f"ICD10CM:{m[1].upper()}") for m in icd]
    return list(dict.fromkeys(doc for _, doc in sorted(found)))


def _read_only(vec: np.ndarray) -> np.ndarray:
    """A float32 copy of ``vec`` that nothing can write to (a kept query vector is shared)."""
    out = np.array(vec, dtype=np.float32)
    out.setflags(write=False)
    return out


def _same_objects(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Element by element the same objects (``is``; an adapter's arrays have no ``==``)."""
    return len(a) == len(b) and all(x is y or (isinstance(x, (bool, str)) and x == y)
                                    for x, y in zip(a, b, strict=True))


class Searcher:
    """Answers queries from an opened index; the embedder is needed for dense and hybrid
    search (BM25 alone works without it). Snippets are chosen by embedding similarity
    when the query was embedded and ``embed_snippets``, else by term overlap."""

    def __init__(self, index: LoadedIndex, embedder: TextEmbedder | None = None,
                 candidates: int = CANDIDATES, embed_snippets: bool = False,
                 ranking: Ranking | None = None, reranker: Reranker | None = None,
                 query_vectors_kept: int = QUERY_VECTORS_KEPT) -> None:
        if embedder is not None and embedder.dim != index.manifest.dim:
            raise ValueError(f"the embedder gives {embedder.dim} dimensions, the index holds "
                             f"{index.manifest.dim}")
        self.index = index
        self.embedder = embedder
        self.candidates = candidates
        # Embedding every sentence of the hits is most of a dense query's time on a CPU
        # (91 ms p50 for dense search on 2 threads, of which 15 ms is the query and 22 ms
        # the flat search); term overlap takes about 1 ms, so it is the default.
        self.embed_snippets = embed_snippets
        self.ranking = ranking or Ranking()
        self.reranker = reranker
        # A question searched again (a chat question asking for a code searches all
        # sources, then ICD-10-CM alone) reuses its vector: embedding is most of a search.
        # 0 keeps none (benchmarks timing the embedding of every query).
        self.query_vectors_kept = query_vectors_kept
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_mode: tuple[object, ...] = ()
        self._query_lock = threading.Lock()
        self._reranker_fits_index = False  # its features can be computed on this index
        if reranker is not None:
            trained_titled = bool(reranker.meta.get("index_titles", True))
            if not self.document_features.usable:
                log.warning("not re-ranking: the %s index keeps no vectors to compute "
                            "features from", index.manifest.index_kind)
            elif trained_titled != (index.titles is not None):
                # two of its features are the title channel's: not comparable across
                log.info("not re-ranking: the re-ranker was trained on an index %s a title "
                         "channel, this one %s", "with" if trained_titled else "without",
                         "has none" if trained_titled else "has one")
            else:
                self._reranker_fits_index = True

    def _require_embedder(self) -> TextEmbedder:
        if self.embedder is None:
            raise ValueError("dense and hybrid search need an embedder; use mode='bm25'")
        return self.embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._require_embedder().encode(texts)

    def _embed_query(self, query: str) -> np.ndarray:
        """(d,), read-only: through the embedder's query adapter, if it has one. The
        vectors of the last ``query_vectors_kept`` queries are kept while the embedder,
        its adapter and its query encoding (traced or not, precision) stay the same."""
        embedder = self._require_embedder()
        if self.query_vectors_kept <= 0:
            return _read_only(encode_queries(embedder, [query])[0])
        base = passage_embedder(embedder)
        mode = (embedder, getattr(embedder, "adapter", None), base,
                getattr(base, "traced", None), getattr(base, "precision", None))
        with self._query_lock:
            if not _same_objects(mode, self._query_mode):
                self._query_vectors.clear()
                self._query_mode = mode
            vec = self._query_vectors.get(query)
            if vec is not None:
                self._query_vectors.move_to_end(query)
                return vec
        vec = _read_only(encode_queries(embedder, [query])[0])
        with self._query_lock:
            if _same_objects(mode, self._query_mode):
                self._query_vectors[query] = vec
                while len(self._query_vectors) > self.query_vectors_kept:
                    self._query_vectors.popitem(last=False)
        return vec

    def lexical_scores(self, query: str, title_weight: float | None = None) -> np.ndarray:
        """(N,) BM25 of every passage, plus ``title_weight`` (default: the ranking's) x
        the BM25 of its document's title where the index has titles."""
        weight = self.ranking.title_weight if title_weight is None else title_weight
        return self._combine(*self._lexical_parts(query, weight > 0), weight)

    def _lexical_parts(self, query: str, with_titles: bool = True
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N,) passage BM25 and (D,) title BM25 (None without titles)."""
        titles = self.index.titles
        return (self.index.lexical.scores(query),
                titles.scores(query) if titles is not None and with_titles else None)

    def _combine(self, bm25: np.ndarray, titles: np.ndarray | None, weight: float
                 ) -> np.ndarray:
        if titles is None or weight <= 0:
            return bm25
        return bm25 + weight * titles[self.index.passages.doc_rows]

    def reranks(self, ranking: Ranking | None = None) -> bool:
        """Whether ``ranking`` (default: the searcher's) is re-ranked here: hybrid, asked
        for, and the fusion the re-ranker was trained on."""
        r = ranking or self.ranking
        return (r.rerank and r.mode == "hybrid" and self.reranker is not None
                and self._reranker_fits_index and self.reranker.fits(asdict(r)))

    def _dense(self, vec: np.ndarray, depth: int, mask: np.ndarray | None
               ) -> list[tuple[int, float]]:
        return _pairs(*[a[0] for a in search_faiss(self.index.dense, vec, depth, mask)])

    def _feedback_vector(self, vec: np.ndarray, top: Sequence[int], weight: float
                         ) -> np.ndarray:
        """Rocchio: the query vector plus ``weight`` x the mean of the ``top`` passages'
        vectors, renormalised."""
        fed = np.stack([self.index.dense.reconstruct(int(i)) for i in top])  # (m, d)
        moved = vec + weight * fed.mean(axis=0)
        return (moved / max(float(np.linalg.norm(moved)), 1e-12)).astype(np.float32)

    def rank(self, query: str, depth: int, ranking: Ranking | None = None,
             mask: np.ndarray | None = None, query_vec: np.ndarray | None = None
             ) -> list[tuple[int, float]]:
        """Passage rows and scores, best first, each ranker fetching ``depth`` candidates."""
        r = ranking or self.ranking
        ranked, vec, bm25, titles = self._fused(query, depth, r, mask, query_vec)
        if ranked and vec is not None and bm25 is not None and self.reranks(r):
            assert self.reranker is not None
            rows, features = self.document_features.compute(tokenize_terms(query), vec, bm25,
                                                            titles, ranked)
            scores = self.reranker.scores(features)
            order = np.argsort(-scores, kind="stable")
            ranked = [(int(rows[i]), float(scores[i])) for i in order]
        return ranked

    def candidate_features(self, query: str, depth: int, ranking: Ranking | None = None,
                           mask: np.ndarray | None = None,
                           query_vec: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """The hybrid ``ranking``'s candidate documents before re-ranking: (M,) their best
        passages and (M, F) their re-ranker features (training data for rerank.py)."""
        r = (ranking or self.ranking).but(mode="hybrid")
        ranked, vec, bm25, titles = self._fused(query, depth, r, mask, query_vec)
        assert vec is not None and bm25 is not None
        return self.document_features.compute(tokenize_terms(query), vec, bm25, titles,
                                              ranked)

    @cached_property
    def document_features(self) -> DocumentFeatures:
        """The re-ranker's feature maker for this index (built on first use)."""
        return DocumentFeatures(self.index)

    def _fused(self, query: str, depth: int, r: Ranking, mask: np.ndarray | None,
               query_vec: np.ndarray | None
               ) -> tuple[list[tuple[int, float]], np.ndarray | None, np.ndarray | None,
                          np.ndarray | None]:
        """The fused ranking, with the query vector and the passage and title BM25 it
        came from (None where the mode did not need them)."""
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        vec = bm25 = titles = None
        if r.mode != "bm25":
            vec = self._embed_query(query) if query_vec is None else query_vec
            dense = self._dense(vec, depth, mask)
        if r.mode != "dense":
            bm25, titles = self._lexical_parts(query)
            lexical = _pairs(*top_k(self._combine(bm25, titles, r.title_weight), depth, mask))
        ranked = self._fuse(r, dense, lexical)
        if vec is not None and r.feedback and r.feedback_weight > 0 and ranked:
            top = [i for i, _ in ranked[:r.feedback]]
            dense = self._dense(self._feedback_vector(vec, top, r.feedback_weight), depth,
                                mask)
            ranked = self._fuse(r, dense, lexical)
        return ranked, vec, bm25, titles

    @staticmethod
    def _fuse(r: Ranking, dense: list[tuple[int, float]], lexical: list[tuple[int, float]]
              ) -> list[tuple[int, float]]:
        if r.mode == "dense":
            return dense
        if r.mode == "bm25":
            return lexical
        if r.fusion == "rrf":
            return rrf([[i for i, _ in dense], [i for i, _ in lexical]])
        return weighted_fusion(dict(dense), dict(lexical), r.weight)

    def search(self, query: str, k: int = 10, mode: Mode | None = None,
               sources: Sequence[str] | None = None,
               year_range: tuple[int | None, int | None] | None = None,
               fusion: Fusion | None = None, weight: float | None = None,
               first: Sequence[str] = ()) -> list[Hit]:
        """The ``k`` best passages for ``query``, at most one per document.

        ``first``: document ids to put first (after those the query names by source id),
        where they pass the filters: the chat's own entry of the term asked about.
        ``sources``: keep only these ("medline", "hpo", "icd10cm"); ``year_range``:
        (from, to), inclusive, either end None for open. ``mode``, ``fusion`` and ``weight``
        override the searcher's ranking: hybrid fuses dense and BM25 by reciprocal rank
        fusion (k=60) or ``weight`` * dense + (1 - weight) * BM25 on min-max normalised
        scores.
        """
        if not query.strip():
            raise ValueError("the query is empty")
        if k < 1:
            raise ValueError(f"need k >= 1, got {k}")
        ranking = self.ranking.but(mode=mode, fusion=fusion, weight=weight)
        store = self.index.passages
        mask = filter_mask(store.source_codes, store.years, sources, year_range)
        if mask is not None and not mask.any():
            return []
        query_vec = None if ranking.mode == "bm25" else self._embed_query(query)  # (d,)
        ranked = self.rank(query, max(self.candidates, 5 * k), ranking, mask, query_vec)
        kept = best_per_document(ranked, [store.doc_id(i) for i, _ in ranked], k)
        kept = self._named_first(query, kept, mask, k, first)
        records = [store[i] for i, _ in kept]
        snippets = self._snippets(query, query_vec if self.embed_snippets else None,
                                  [r.text for r in records])
        return [Hit(id=r.id, doc_id=r.doc_id, source=r.source, title=r.title, snippet=snippet,
                    score=float(score), citation=r.citation, url=r.url, year=r.year)
                for r, (_, score), snippet in zip(records, kept, snippets, strict=True)]

    def _named_first(self, query: str, kept: list[tuple[int, float]], mask: np.ndarray | None,
                     k: int, first: Sequence[str] = ()) -> list[tuple[int, float]]:
        """``kept`` with the documents the query names by source id, then ``first`` (those
        that pass the filters), first, scored as the best hit: a clinician checking a
        citation finds its record."""
        store = self.index.passages
        rows = [row for doc in dict.fromkeys([*named_documents(query), *first])
                if (row := store.first_passage(doc)) is not None
                and (mask is None or bool(mask[row]))]
        if not rows:
            return kept
        named = {store.doc_id(r) for r in rows}
        top = max((score for _, score in kept), default=1.0)
        rest = [(i, score) for i, score in kept if store.doc_id(i) not in named]
        return ([(r, top) for r in rows] + rest)[:k]

    def _snippets(self, query: str, query_vec: np.ndarray | None, texts: Sequence[str],
                  n: int = 2) -> list[str]:
        """Snippets by embedding similarity when the query was embedded (one batch for all
        sentences of all hits), else by term overlap."""
        if query_vec is None:
            terms = tokenize_terms(query)
            return [snippet(terms, text, n) for text in texts]
        split = [split_sentences(text) for text in texts]
        todo = [s for sentences in split if len(sentences) > n for s in sentences]
        vecs = self._embed(todo) if todo else np.zeros((0, len(query_vec)), np.float32)
        snippets, start = [], 0
        for text, sentences in zip(texts, split, strict=True):
            count = len(sentences) if len(sentences) > n else 0
            snippets.append(snippet(query_vec, text, n, vecs[start:start + count],
                                    sentences))
            start += count
        return snippets
