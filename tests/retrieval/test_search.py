"""Searcher over a tiny index of the three test files, with a hashing stand-in embedder."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.config import Settings
from assistant.retrieval.adapter import AdaptedEmbedder, QueryAdapter
from assistant.retrieval.build import build_index, open_searcher
from assistant.retrieval.lexical import tokenize_terms
from assistant.retrieval.passages import split_sentences
from assistant.retrieval.search import GAP, Hit, Ranking, Searcher
from tests.retrieval.conftest import HashingEmbedder


@pytest.fixture
def searcher(tiny_settings: Settings, embedder: HashingEmbedder) -> Searcher:
    build_index(tiny_settings, progress=False, embedder=embedder)
    return open_searcher(tiny_settings, rebuild=False, embedder=embedder)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_finds_the_matching_document(searcher: Searcher, mode: str) -> None:
    hits = searcher.search("cholera vibrio", k=3, mode=mode)  # type: ignore[arg-type]
    assert hits and hits[0].doc_id in {"ICD10CM:A00.0", "ICD10CM:A00"}
    assert len(hits) <= 3
    assert len({h.doc_id for h in hits}) == len(hits)  # one hit per document
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_weighted_hybrid(searcher: Searcher) -> None:
    dense = searcher.search("typhoid salmonella", k=5, mode="dense")
    only_dense = searcher.search("typhoid salmonella", k=5, mode="hybrid", fusion="weighted",
                                 weight=1.0)
    assert [h.id for h in only_dense] == [h.id for h in dense]
    bm25 = searcher.search("typhoid salmonella", k=5, mode="bm25")
    only_bm25 = searcher.search("typhoid salmonella", k=5, mode="hybrid", fusion="weighted",
                                weight=0.0)
    assert [h.id for h in only_bm25] == [h.id for h in bm25]
    assert bm25[0].doc_id == "ICD10CM:A01"


def test_hits_carry_citations(searcher: Searcher) -> None:
    hit = searcher.search("Dravet syndrome", k=1, mode="bm25")[0]
    assert hit.doc_id == "PMID:100" and hit.source == "medline" and hit.year == 1998
    assert hit.citation.startswith("Smith JA et al. Seizures in SCN1A mutation carriers.")
    assert hit.url == "https://pubmed.ncbi.nlm.nih.gov/100/"
    assert set(hit.to_dict()) == {"id", "doc_id", "source", "title", "snippet", "score",
                                  "citation", "url", "year"}


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_by_source_and_year(searcher: Searcher, mode: str) -> None:
    query = "seizure epilepsy cholera"
    hpo = searcher.search(query, k=10, mode=mode, sources=["hpo"])  # type: ignore[arg-type]
    assert hpo and {h.source for h in hpo} == {"hpo"}
    dated = searcher.search(query, k=10, mode=mode,  # type: ignore[arg-type]
                            year_range=(1990, 2005))
    assert dated and all(h.year is not None and 1990 <= h.year <= 2005 for h in dated)
    assert searcher.search(query, k=10, mode=mode, sources=["hpo"],  # type: ignore[arg-type]
                           year_range=(2000, None)) == []


def test_filtered_search_still_fills_k(tiny_settings: Settings,
                                       embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    narrow = open_searcher(tiny_settings, rebuild=False, embedder=embedder)
    narrow.candidates = 1  # each ranker hands over 5 * k = 10 passages only
    hits = narrow.search("cholera", k=2, mode="dense", sources=["medline"])
    assert len(hits) == 2 and {h.source for h in hits} == {"medline"}


def _check_snippets(hits: list[Hit], searcher: Searcher) -> None:
    texts = {searcher.index.passages[i].id: searcher.index.passages[i].text
             for i in range(len(searcher.index))}
    for hit in hits:
        sentences = split_sentences(texts[hit.id])
        chosen = [s for part in hit.snippet.split(GAP) for s in split_sentences(part)]
        assert 1 <= len(chosen) <= 2
        assert all(s in sentences for s in chosen)
        assert chosen == sorted(chosen, key=sentences.index)  # passage order
        if len(chosen) == 2:  # set off by an ellipsis where the passage has more between
            apart = sentences.index(chosen[1]) - sentences.index(chosen[0]) > 1
            assert (GAP in hit.snippet) == apart, hit.snippet


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_snippets_are_at_most_two_sentences_of_the_passage(searcher: Searcher,
                                                           mode: str) -> None:
    hits = searcher.search("seizure rates in Dravet syndrome", k=10, mode=mode)  # type: ignore[arg-type]
    _check_snippets(hits, searcher)
    dravet = next(h for h in hits if h.doc_id == "PMID:100")  # three sentences, two shown
    assert len(split_sentences(dravet.snippet)) == 2


def test_bm25_works_without_an_embedder(searcher: Searcher) -> None:
    lexical_only = Searcher(searcher.index, embedder=None)
    assert lexical_only.search("salmonella", k=2, mode="bm25")[0].doc_id == "ICD10CM:A01"
    with pytest.raises(ValueError, match="need an embedder"):
        lexical_only.search("typhoid", mode="dense")


def test_bad_requests(searcher: Searcher) -> None:
    with pytest.raises(ValueError, match="empty"):
        searcher.search("  ")
    with pytest.raises(ValueError, match="mode"):
        searcher.search("x", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sources"):
        searcher.search("x", sources=["pubmed"])
    assert searcher.search("zzzz qqqq", mode="bm25") == []  # no shared term, no hit


def test_term_overlap_snippets_need_no_sentence_embeddings(searcher: Searcher,
                                                           embedder: HashingEmbedder) -> None:
    fast = Searcher(searcher.index, embedder, embed_snippets=False)
    calls = embedder.calls
    hits = fast.search("seizure rates in Dravet syndrome", k=10, mode="hybrid")
    assert embedder.calls == calls + 1  # the query only
    _check_snippets(hits, fast)


def test_a_query_searched_again_is_not_embedded_again(searcher: Searcher,
                                                     embedder: HashingEmbedder) -> None:
    fast = Searcher(searcher.index, embedder, embed_snippets=False)
    calls = embedder.calls
    everything = fast.search("seizure cholera", k=5)
    codes = fast.search("seizure cholera", k=5, sources=["icd10cm"])  # the same vector
    assert embedder.calls == calls + 1
    assert codes and {h.source for h in codes} == {"icd10cm"}
    fresh = Searcher(searcher.index, embedder, embed_snippets=False)
    assert ([h.to_dict() for h in fresh.search("seizure cholera", k=5, sources=["icd10cm"])]
            == [h.to_dict() for h in codes])
    assert [h.id for h in fast.search("seizure cholera", k=5)] == [h.id for h in everything]
    fast.search("typhoid", k=5)  # another query is embedded
    assert embedder.calls == calls + 3


def test_kept_query_vectors_follow_the_query_encoding(searcher: Searcher,
                                                     embedder: HashingEmbedder) -> None:
    """A vector is reused only while the embedder, its adapter and the base's query
    encoding (traced or not, precision) are the ones that made it; the oldest go first."""
    dim = embedder.dim
    adapted = AdaptedEmbedder(embedder, QueryAdapter(np.zeros((dim, dim)), {}))
    fast = Searcher(searcher.index, adapted, embed_snippets=False, query_vectors_kept=2)
    calls = embedder.calls

    def embeds(query: str) -> int:
        before = embedder.calls
        vec = fast._embed_query(query)
        assert not vec.flags.writeable
        return embedder.calls - before

    assert [embeds("seizure"), embeds("seizure")] == [1, 0]
    adapted.adapter = QueryAdapter(np.eye(dim) * 0.5, {})  # another adapter
    assert [embeds("seizure"), embeds("seizure")] == [1, 0]
    embedder.traced = True  # type: ignore[attr-defined]  # as trace_queries sets it
    assert [embeds("seizure"), embeds("seizure")] == [1, 0]
    embedder.precision = "bfloat16"  # type: ignore[attr-defined]
    assert embeds("seizure") == 1
    assert [embeds("cholera"), embeds("typhoid"), embeds("seizure")] == [1, 1, 1]  # 2 kept
    fast.query_vectors_kept = 0  # none kept
    assert [embeds("typhoid"), embeds("typhoid")] == [1, 1]
    assert embedder.calls == calls + 9


def test_title_channel_adds_the_document_title_bm25(tiny_settings: Settings,
                                                    embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder)
    index = open_searcher(tiny_settings, rebuild=False, embedder=embedder).index
    assert index.titles is not None and len(index.titles) == index.passages.document_count
    plain = Searcher(index, embedder, ranking=Ranking(title_weight=0.0))
    boosted = Searcher(index, embedder, ranking=Ranking(title_weight=2.0))
    query = "seizures carriers"
    base = plain.lexical_scores(query)
    assert np.array_equal(base, index.lexical.scores(query))
    title_scores = index.titles.scores(query)
    assert title_scores.max() > 0  # a test title names both terms
    expected = base + 2.0 * title_scores[index.passages.doc_rows]
    assert np.allclose(boosted.lexical_scores(query), expected)
    assert np.allclose(plain.lexical_scores(query, title_weight=2.0), expected)
    terms = set(tokenize_terms(query))
    for i in range(len(index)):  # boosted exactly where the passage's title names a term
        named = bool(terms & set(tokenize_terms(index.passages[i].title)))
        assert (title_scores[index.passages.doc_rows[i]] > 0) == named


def test_index_without_titles_has_no_title_channel(tiny_settings: Settings,
                                                   embedder: HashingEmbedder) -> None:
    build_index(tiny_settings, progress=False, embedder=embedder, titles=False)
    searcher = open_searcher(tiny_settings, rebuild=False, embedder=embedder)
    assert searcher.index.titles is None
    assert np.array_equal(searcher.lexical_scores("seizures"),
                          searcher.index.lexical.scores("seizures"))


def test_feedback_moves_the_query_towards_the_top_passages(searcher: Searcher) -> None:
    vec = searcher._embed(["cholera"])[0]
    first = searcher.rank("cholera", 5, Ranking("dense"), query_vec=vec)
    top = [i for i, _ in first[:2]]
    moved = searcher._feedback_vector(vec, top, 1.0)
    fed = np.stack([searcher.index.dense.reconstruct(i) for i in top]).mean(axis=0)
    expected = (vec + fed) / np.linalg.norm(vec + fed)
    assert np.allclose(moved, expected, atol=1e-6)
    with_feedback = searcher.rank("cholera", 5, Ranking("dense", feedback=2,
                                                        feedback_weight=1.0), query_vec=vec)
    plain_again = searcher.rank("cholera", 5, Ranking("dense", feedback=2,
                                                      feedback_weight=0.0), query_vec=vec)
    assert plain_again == first  # weight 0: no second search
    scores = dict(searcher._dense(moved, 5, None))
    assert with_feedback == sorted(scores.items(), key=lambda p: -p[1])


def test_ranking_validates_and_overrides() -> None:
    base = Ranking()
    assert base.but(mode="bm25", weight=None).mode == "bm25"
    assert base.but(weight=None) == base
    for bad in ({"mode": "fuzzy"}, {"fusion": "max"}, {"weight": 1.5},
                {"title_weight": -1.0}, {"feedback": -1}):
        with pytest.raises(ValueError):
            Ranking(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("query", "named"), [
    ("PMID: 31234567", ["PMID:31234567"]), ("pmid 100", ["PMID:100"]),
    ("seizure HP:0001250", ["HP:0001250"]), ("G40.909", ["ICD10CM:G40.909"]),
    ("icd-10-cm g40.909 epilepsy", ["ICD10CM:G40.909"]), ("ICD10CM:A00.0", ["ICD10CM:A00.0"]),
    ("HP:0001250 or PMID 100", ["HP:0001250", "PMID:100"]),
    ("ICD10CM:E11", ["ICD10CM:E11"]), ("icd10 e11.9", ["ICD10CM:E11.9"]),
    # a dotted code inside a question names it (before, the code whose notes mention it
    # came first); "code" may stand between ICD and the code
    ("What is G40.909?", ["ICD10CM:G40.909"]), ("explain r51.9.", ["ICD10CM:R51.9"]),
    ("What does ICD-10 code G40.909 mean?", ["ICD10CM:G40.909"]),
    ("ICD 10 CM code: E11", ["ICD10CM:E11"]), ("G40.909 or R51.9", ["ICD10CM:G40.909",
                                                                     "ICD10CM:R51.9"]),
    ("a dose of 1.5 mg", []), ("version v10.2.1", []), ("file a00.0.png", []),
    ("Is FreeSurfer v10.2 accurate?", []), ("x10.5 magnification", []),
    ("ICD-10-CM V10.2", ["ICD10CM:V10.2"]),
    # code-like words are words, not codes: inside a question, or alone without a dot
    ("vitamin B12 deficiency", []), ("T10 vertebral fracture", []), ("C57BL mice", []),
    ("p53", []), ("Q10", []), ("C60", []),
])
def test_source_ids_a_query_names(query: str, named: list[str]) -> None:
    from assistant.retrieval.search import named_documents

    assert named_documents(query) == named


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_a_document_named_by_its_source_id_comes_first(searcher: Searcher, mode: str) -> None:
    """A clinician checking a citation searches for its id: the record comes first (it
    did not, before: an id's characters are no words to match)."""
    for query, doc in (("HP:0001250", "HP:0001250"), ("PMID 100", "PMID:100"),
                       ("A00.0", "ICD10CM:A00.0"), ("ICD-10-CM A01", "ICD10CM:A01"),
                       ("cholera PMID:300", "PMID:300")):
        hits = searcher.search(query, k=3, mode=mode)  # type: ignore[arg-type]
        assert hits[0].doc_id == doc, (query, [h.doc_id for h in hits])
        assert len({h.doc_id for h in hits}) == len(hits) <= 3
    # filters still apply, and an id the index lacks changes nothing
    assert all(h.doc_id != "HP:0001250" for h in searcher.search(
        "HP:0001250", k=5, mode=mode, sources=["medline"]))  # type: ignore[arg-type]
    unknown = searcher.search("cholera vibrio PMID:424242", k=3,  # type: ignore[arg-type]
                              mode=mode)
    assert unknown[0].doc_id in {"ICD10CM:A00.0", "ICD10CM:A00"}


def test_a_term_found_by_its_title_comes_first_when_asked_for(searcher: Searcher) -> None:
    """The chat puts the HPO term or ICD-10-CM code titled as asked first ("What is the code
    for cerebral edema?" had quoted the traumatic codes and never G93.6)."""
    store = searcher.index.passages
    assert store.titled("cholera") == ["ICD10CM:A00"]
    assert store.titled("  CHOLERA, other. ") == ["ICD10CM:A00.1"]  # case and punctuation
    assert store.titled("Seizure") == ["HP:0001250"]
    medline_title = next(store[i].title for i in range(len(store))
                         if store[i].source == "medline")
    assert store.titled(medline_title) == []  # a paper is no term's own entry
    assert store.titled("") == store.titled("no such term") == []
    hits = searcher.search("cholera vibrio", k=3, first=["ICD10CM:A00.1"])
    assert hits[0].doc_id == "ICD10CM:A00.1"
    assert all(h.doc_id != "ICD10CM:A00.1" for h in searcher.search(
        "cholera vibrio", k=3, sources=["medline"], first=["ICD10CM:A00.1"]))
