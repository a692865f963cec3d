"""Sentence splitting and passage cutting: exact cases, then properties on random text."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.retrieval.corpus import Document
from assistant.retrieval.passages import Passage, corpus_sha256, split_passages, split_sentences


@pytest.mark.parametrize(("text", "sentences"), [
    ("Seizures were seen, e.g. in Fig. 2. The rate was 3.5 per cent. Smith et al. reported it.",
     ["Seizures were seen, e.g. in Fig. 2.", "The rate was 3.5 per cent.",
      "Smith et al. reported it."]),
    ("J. Smith joined the U.S. Army. He left (p < 0.05). Then \"a quote.\" Why? Yes! ok.",
     ["J. Smith joined the U.S. Army.", "He left (p < 0.05).", 'Then "a quote."', "Why?",
      "Yes! ok."]),
    ("BACKGROUND: a b.\nMETHODS: c d. 12 patients\n\n  were seen.  ",
     ["BACKGROUND: a b.", "METHODS: c d.", "12 patients", "were seen."]),
    ("Against placebo, i.e. Drug A vs. Drug B, rates fell. The end",
     ["Against placebo, i.e. Drug A vs. Drug B, rates fell.", "The end"]),
    # The price of not cutting after initials: a sentence ending in one capital runs on.
    ("We measured vitamin D. Levels rose.", ["We measured vitamin D. Levels rose."]),
    ("Levels of mRNA. mRNA rose. [Ref. 3] was cited.",
     ["Levels of mRNA. mRNA rose.", "[Ref. 3] was cited."]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def _doc(text: str, title: str = "A title") -> Document:
    return Document(id="PMID:1", source="medline", title=title, text=text, year=2001)


def _sentence(n_words: int, tag: int) -> str:
    return " ".join(["S" + str(tag)] + [f"w{tag}x{i}" for i in range(1, n_words)]) + "."


def test_passages_fill_up_to_max_words_and_overlap_one_sentence() -> None:
    sentences = [_sentence(n, i) for i, n in enumerate([4, 3, 3, 5, 2])]
    passages = split_passages(_doc(" ".join(sentences)), max_words=8)
    # Each passage takes sentences while they fit in 8 words, then the next one starts again
    # with the last sentence of the one before.
    assert [p.text for p in passages] == [
        " ".join(sentences[0:2]),  # 4 + 3 words; the next 3 would make 10
        " ".join(sentences[1:3]),  # 3 + 3
        " ".join(sentences[2:4]),  # 3 + 5 = 8
        " ".join(sentences[3:5]),  # 5 + 2
    ]
    assert [p.overlap_words for p in passages] == [0, 3, 3, 5]
    assert [p.id for p in passages] == ["PMID:1#0", "PMID:1#1", "PMID:1#2", "PMID:1#3"]
    assert [p.position for p in passages] == [0, 1, 2, 3]
    assert all((p.doc_id, p.source, p.title, p.year) == ("PMID:1", "medline", "A title", 2001)
               for p in passages)


def test_overlap_is_dropped_when_it_does_not_fit_and_zero_overlap() -> None:
    sentences = [_sentence(6, 0), _sentence(6, 1), _sentence(2, 2)]
    text = " ".join(sentences)
    # 6 + 6 > 8, and repeating s0 beside s1 would not fit either.
    assert [p.text for p in split_passages(_doc(text), max_words=8)] == [
        sentences[0], sentences[1] + " " + sentences[2]]
    no_overlap = split_passages(_doc(" ".join(_sentence(3, i) for i in range(4))), 6, 0)
    assert [p.overlap_words for p in no_overlap] == [0, 0]
    assert [len(p.text.split()) for p in no_overlap] == [6, 6]


def test_a_sentence_longer_than_max_words_is_cut_into_word_runs() -> None:
    long = _sentence(25, 0)
    passages = split_passages(_doc(long + " " + _sentence(3, 1)), max_words=10)
    words = long.split()
    assert [p.text for p in passages] == [
        " ".join(words[:10]), " ".join(words[10:20]), " ".join(words[20:]) + " S1 w1x1 w1x2."]
    assert [p.overlap_words for p in passages] == [0, 0, 0]


def test_title_only_documents_and_empty_documents() -> None:
    (passage,) = split_passages(_doc("", title="Is it epilepsy?"))
    assert (passage.text, passage.embed_text()) == ("Is it epilepsy?", "Is it epilepsy?")
    assert split_passages(_doc("", title="")) == []
    with pytest.raises(ValueError, match="max_words"):
        split_passages(_doc("x"), max_words=0)


@pytest.mark.parametrize(("title", "text", "embedded"), [
    ("Seizures in children", "Rates rose.", "Seizures in children. Rates rose."),
    ("Seizures in children.", "Rates rose.", "Seizures in children. Rates rose."),
    ("Is it epilepsy?", "Rates rose.", "Is it epilepsy? Rates rose."),
    ("Cholera", "Cholera Inclusion terms: x", "Cholera Inclusion terms: x"),
    ("", "Rates rose.", "Rates rose."),
])
def test_embed_text_prepends_the_title_once(title: str, text: str, embedded: str) -> None:
    passage = Passage(id="d#0", doc_id="d", source="hpo", title=title, text=text, year=None,
                      position=0)
    assert passage.embed_text() == embedded


def test_corpus_sha256_is_stable_and_sees_ids_and_texts() -> None:
    passages = split_passages(_doc(" ".join(_sentence(5, i) for i in range(6))), max_words=12)
    digest = corpus_sha256(passages)
    assert digest == corpus_sha256(list(passages)) and len(digest) == 64
    assert corpus_sha256(passages[:-1]) != digest
    assert corpus_sha256(reversed(passages)) != digest
    changed = Passage(**{**passages[0].__dict__, "text": passages[0].text + "!"})
    assert corpus_sha256([changed, *passages[1:]]) != digest


# -- properties ------------------------------------------------------------------------------

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDE0123456789.,;()?!\"'", min_size=1,
                max_size=12)
_TEXT = st.lists(st.tuples(_WORD, st.sampled_from([" ", " ", " ", "\n", "  "])), max_size=200
                 ).map(lambda pairs: "".join(w + s for w, s in pairs))


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, max_words=st.integers(1, 40), overlap=st.integers(0, 3))
def test_passages_recover_every_sentence_in_order(text: str, max_words: int,
                                                  overlap: int) -> None:
    passages = split_passages(_doc(text, title="T"), max_words, overlap)
    sentences = split_sentences(text) or ["T"]
    # The non-overlapping parts, joined, are the sentences, in order and complete.
    assert " ".join(p.new_text for p in passages) == " ".join(sentences)
    for before, passage in itertools.pairwise(passages):
        words, previous = passage.text.split(), before.text.split()
        assert 0 <= passage.overlap_words < len(words)
        if passage.overlap_words:
            assert words[:passage.overlap_words] == previous[-passage.overlap_words:]
    assert all(0 < len(p.text.split()) <= max_words for p in passages)
    assert [p.position for p in passages] == list(range(len(passages)))


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=30),
       max_words=st.integers(5, 40))
def test_passages_hold_whole_sentences_and_repeat_exactly_one(lengths: list[int],
                                                              max_words: int) -> None:
    sentences = [_sentence(n, i) for i, n in enumerate(lengths)]
    assert split_sentences(" ".join(sentences)) == sentences
    passages = split_passages(_doc(" ".join(sentences)), max_words, overlap_sentences=1)
    fitting = [s for s in sentences if len(s.split()) <= max_words]
    for sentence in fitting:  # a sentence that fits is never cut
        assert any(f" {sentence} " in f" {p.text} " for p in passages)
    for before, passage in itertools.pairwise(passages):
        if passage.overlap_words:
            repeated = " ".join(passage.text.split()[:passage.overlap_words])
            assert repeated in sentences and before.text.endswith(repeated)
