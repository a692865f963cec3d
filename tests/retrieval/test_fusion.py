"""Fusion, filters, snippets and per-document de-duplication: pure functions, exact cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.retrieval.lexical import STOPWORDS, _stemmer, tokenize_terms, top_k
from assistant.retrieval.search import (
    best_per_document,
    best_sentences,
    filter_mask,
    rrf,
    snippet,
    term_overlap_scores,
    weighted_fusion,
)


def _bm25s_terms(text: str) -> list[str]:
    import bm25s

    tokens = bm25s.tokenize([text], lower=True, token_pattern=r"(?u)\b\w\w+\b",
                            stopwords=STOPWORDS, stemmer=_stemmer(), return_ids=False,
                            show_progress=False)
    return list(tokens[0]) if tokens else []


@pytest.mark.parametrize("text", [
    "", "a", "The EEG of the patients WAS normal; SCN1A-positive Dravet syndrome (n=12).",
    "Über-Anämie in Ärzten, naïve café x2 1p/19q IDH1 R132H 5-ALA", "it is not what we do",
    "Cholera due to Vibrio cholerae 01, biovar eltor", "running runs ran runner's"])
def test_query_terms_are_what_bm25s_makes_of_the_text(text: str) -> None:
    assert tokenize_terms(text) == _bm25s_terms(text)


@given(st.text(max_size=80))
def test_query_terms_equal_bm25s_on_any_text(text: str) -> None:
    assert tokenize_terms(text) == _bm25s_terms(text)


def test_rrf_hand_example() -> None:
    fused = rrf([[1, 2, 3], [3, 1, 4]], k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    scores = dict(fused)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[2] == pytest.approx(1 / 62)
    assert scores[4] == pytest.approx(1 / 63)


def test_rrf_single_ranking_and_ties() -> None:
    assert [i for i, _ in rrf([[5, 7, 6]])] == [5, 7, 6]
    # 8 and 9 are both first once: a tie, kept in order of first appearance.
    assert [i for i, _ in rrf([[8], [9]])] == [8, 9]
    assert rrf([]) == [] and rrf([[], []]) == []


DENSE = {4: 0.9, 2: 0.7, 7: 0.5, 1: 0.1}
LEXICAL = {7: 12.0, 3: 8.0, 4: 2.0}


def test_weighted_fusion_extremes_equal_the_single_rankings() -> None:
    assert [i for i, _ in weighted_fusion(DENSE, LEXICAL, 1.0)] == [4, 2, 7, 1]
    assert [i for i, _ in weighted_fusion(DENSE, LEXICAL, 0.0)] == [7, 3, 4]


def test_weighted_fusion_normalises_each_list() -> None:
    fused = dict(weighted_fusion(DENSE, LEXICAL, 0.5))
    # dense min-max: 4 -> 1, 2 -> .75, 7 -> .5, 1 -> 0; lexical: 7 -> 1, 3 -> .6, 4 -> 0.
    assert fused == pytest.approx({4: 0.5, 2: 0.375, 7: 0.75, 1: 0.0, 3: 0.3})
    assert [i for i, _ in weighted_fusion(DENSE, LEXICAL, 0.5)][:2] == [7, 4]


def test_weighted_fusion_edge_cases() -> None:
    assert weighted_fusion({}, {}, 0.5) == []
    assert weighted_fusion({1: 3.0, 2: 3.0}, {}, 0.5) == [(1, 0.5), (2, 0.5)]  # equal -> 1.0
    with pytest.raises(ValueError, match="weight"):
        weighted_fusion(DENSE, LEXICAL, 1.5)


scores_dicts = st.dictionaries(st.integers(0, 50), st.floats(-5, 5, allow_nan=False),
                               max_size=20)


@given(scores_dicts, scores_dicts)
def test_weighted_fusion_extremes_property(dense: dict[int, float],
                                           lexical: dict[int, float]) -> None:
    by_score = lambda d: [i for i, _ in sorted(d.items(), key=lambda p: -p[1])]  # noqa: E731
    assert [i for i, _ in weighted_fusion(dense, lexical, 1.0)] == by_score(dense)
    assert [i for i, _ in weighted_fusion(dense, lexical, 0.0)] == by_score(lexical)


def test_filter_mask() -> None:
    codes = np.array([0, 0, 1, 2, 0], dtype=np.uint8)  # medline, medline, hpo, icd, medline
    years = np.array([1999, 2005, 0, 0, 2021], dtype=np.int32)
    assert filter_mask(codes, years) is None
    assert filter_mask(codes, years, [], (None, None)) is None
    assert filter_mask(codes, years, ["hpo", "icd10cm"]).tolist() == [0, 0, 1, 1, 0]
    assert filter_mask(codes, years, None, (2000, 2021)).tolist() == [0, 1, 0, 0, 1]
    assert filter_mask(codes, years, None, (None, 2000)).tolist() == [1, 0, 0, 0, 0]
    assert filter_mask(codes, years, ["medline"], (2006, None)).tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="unknown sources"):
        filter_mask(codes, years, ["pubmed"])


def test_top_k_keeps_allowed_positive_scores_best_first() -> None:
    scores = np.array([0.0, 3.0, 1.0, 3.0, 2.0], dtype=np.float32)
    assert top_k(scores, 3)[1].tolist() == [1, 3, 4]  # tie: lower id first
    assert top_k(scores, 10)[1].tolist() == [1, 3, 4, 2]  # the 0 is no match
    allowed = np.array([1, 0, 1, 1, 0], dtype=bool)
    assert top_k(scores, 10, allowed)[1].tolist() == [3, 2]
    assert len(top_k(scores, 0)[1]) == 0


TEXT = ("BACKGROUND: Gliomas are common brain tumours. The weather was fine. "
        "Seizures are a frequent first symptom of glioma. We thank the nurses.")


def test_best_sentences_by_term_overlap_keep_passage_order() -> None:
    chosen = best_sentences(tokenize_terms("glioma seizures"), TEXT)
    assert chosen == ["BACKGROUND: Gliomas are common brain tumours.",
                      "Seizures are a frequent first symptom of glioma."]
    assert best_sentences(tokenize_terms("nurses"), TEXT, n=1) == ["We thank the nurses."]
    assert term_overlap_scores(tokenize_terms("glioma seizures"), ["no match", "a glioma"]
                               ).tolist() == [0, 1]


def test_best_sentences_by_vectors() -> None:
    vecs = np.eye(4, dtype=np.float32)  # one per sentence of TEXT
    query = np.array([0.1, 0.0, 0.2, 0.9], dtype=np.float32)
    assert best_sentences(query, TEXT, 2, vecs) == [
        "Seizures are a frequent first symptom of glioma.", "We thank the nurses."]
    with pytest.raises(ValueError, match="one vector per sentence"):
        best_sentences(query, TEXT, 2, vecs[:3])


def test_sentences_apart_in_the_passage_are_set_off_by_an_ellipsis() -> None:
    """A snippet of sentences 1 and 3 had read as one stretch of the passage."""
    assert snippet(tokenize_terms("glioma seizures"), TEXT) == (
        "BACKGROUND: Gliomas are common brain tumours. \u2026 Seizures are a frequent first "
        "symptom of glioma.")
    assert snippet(tokenize_terms("weather seizures"), TEXT) == (
        "The weather was fine. Seizures are a frequent first symptom of glioma.")
    vecs = np.eye(4, dtype=np.float32)  # one per sentence of TEXT
    assert snippet(np.array([0.9, 0.0, 0.0, 0.8], dtype=np.float32), TEXT, 2, vecs) == (
        "BACKGROUND: Gliomas are common brain tumours. \u2026 We thank the nurses.")
    assert snippet(["x"], "One sentence. Two sentences.") == "One sentence. Two sentences."
    assert snippet(["x"], "") == ""


def test_best_sentences_of_a_short_passage_is_the_passage() -> None:
    assert best_sentences(["x"], "One sentence. Two sentences.") == [
        "One sentence.", "Two sentences."]
    assert best_sentences(["x"], "") == []


def test_best_per_document() -> None:
    ranked = [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6)]
    docs = ["a", "a", "b", "c"]
    assert best_per_document(ranked, docs, 2) == [(0, 0.9), (2, 0.7)]
    assert best_per_document(ranked, docs, 10) == [(0, 0.9), (2, 0.7), (3, 0.6)]
