"""Answer composition: study questions quoted from real analyses of real images, knowledge
questions quoted from real search hits of a small real index."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from assistant.chat.compose import (
    NOTICE,
    REFUSAL,
    knowledge_answer,
    render,
    small_talk,
    study_answer,
)
from assistant.config import Settings
from assistant.pipeline import Pipeline
from assistant.report.structured import side_words
from assistant.retrieval import open_searcher
from assistant.retrieval.search import Searcher
from tests.chat.conftest import Images, indexed_records, topic_question

pytestmark = pytest.mark.data

# -- study answers from real analyses ---------------------------------------------------------


@pytest.fixture(scope="module")
def analyses(images: Images) -> dict[str, dict[str, Any]]:
    pipeline = Pipeline.from_settings(Settings(), citations=False)
    return {name: pipeline.analyze(path.read_bytes()).to_dict()
            for name, path in (("tumour", images.tumour), ("no tumour", images.no_tumour),
                               ("out", images.out_of_scope))}


def _quoted(body: str) -> list[str]:
    return re.findall(r'^- \w+: "(.*)"$', body, flags=re.MULTILINE)


def _report_sentences(analysis: dict[str, Any]) -> list[str]:
    return [s["text"] for s in analysis["report"]["sentences"]]


def test_diagnosis_is_quoted_from_the_report(analyses: dict[str, dict[str, Any]]) -> None:
    for label in ("tumour", "no tumour"):
        analysis = analyses[label]
        composed = study_answer("What does it show?", "s1", analysis)
        assert composed.kind == "study" and composed.study_id == "s1"
        quotes = _quoted(composed.body)
        assert quotes and set(quotes) <= set(_report_sentences(analysis))
        assert analysis["report"]["impression"] in quotes
        assert f"showing {'a tumour' if label == 'tumour' else 'no tumour'}" in composed.body


def test_probability_quotes_the_numbers(analyses: dict[str, dict[str, Any]]) -> None:
    d = analyses["tumour"]["diagnosis"]
    body = study_answer("How confident is the model?", "s1", analyses["tumour"]).body
    assert f"calibrated probability of tumour {d['probability']:.3f}" in body
    assert f"operating threshold {d['threshold']:.2f}" in body


def test_location_quotes_the_heatmap(analyses: dict[str, dict[str, Any]]) -> None:
    body = study_answer("Where is it?", "s1", analyses["tumour"]).body
    side = analyses["tumour"]["heatmap"]["location"]["side"]
    assert "hottest area" in body and side_words(side) in body
    assert "Impression" not in body  # only what was asked


@pytest.mark.parametrize(("question", "wanted", "unwanted"), [
    ("Is it a glioma or a meningioma?", ("showing a tumour", "only labels"), ("hottest",)),
    ("How big is it?", ("hottest area", "not a lesion outline", "measures no size"),
     ("Impression",)),
    ("Should I be worried?", ("for clinician review", "Limitations"), ()),
])
def test_what_the_model_cannot_say_is_answered_with_its_limits(
        analyses: dict[str, dict[str, Any]], question: str, wanted: tuple[str, ...],
        unwanted: tuple[str, ...]) -> None:
    """A type, a size or a worry about the result: the analysis's sentences that bear on it
    and the limitation that says what the model does not do, not the diagnosis alone (or,
    for "Should I be worried?", literature about worry)."""
    composed = study_answer(question, "s1", analyses["tumour"])
    assert set(_quoted(composed.body)) <= set(_report_sentences(analyses["tumour"]))
    for words in wanted:
        assert words in composed.body, question
    for words in unwanted:
        assert words not in composed.body, question


@pytest.mark.parametrize(("message", "expected"), [
    ("Thanks!", True), ("thank you very much", True), ("OK", True), ("Hello", True),
    ("Thanks, what is a glioma?", False), ("Is it OK?", False), ("Fine needle aspiration", False),
    ("ok thanks", True), ("great, thanks doc", True),
    ("Sure?", False),  # asks how sure the model is
    ("Thanks 2", False), ("OK 你好", False),  # more than courtesy
])
def test_small_talk(message: str, expected: bool) -> None:
    assert small_talk(message) is expected


def test_out_of_scope_answers_say_why(analyses: dict[str, dict[str, Any]]) -> None:
    analysis = analyses["out"]
    assert analysis["in_scope"] is False
    for question in ("Is there a tumour?", "Where is it?", "How likely?"):
        composed = study_answer(question, "s2", analysis)
        quotes = _quoted(composed.body)
        assert quotes and set(quotes) <= set(_report_sentences(analysis))
        assert any("No diagnosis is given" in q or "Not assessed" in q for q in quotes)
        assert "probability of" not in composed.body


def test_rendered_answers_carry_the_notice_and_reference(
        analyses: dict[str, dict[str, Any]]) -> None:
    text = render(study_answer("Result?", "s1", analyses["tumour"]), "c1")
    assert text.startswith(NOTICE) and text.endswith("(conversation c1)")


# -- knowledge answers from real hits ----------------------------------------------------------


@pytest.fixture(scope="module")
def searcher(index_dir: Path) -> Searcher:
    return open_searcher(Settings(index_dir=index_dir), rebuild=False)


def test_knowledge_answers_cite_numbered_passages(searcher: Searcher, index_dir: Path) -> None:
    question = topic_question(index_dir)
    composed = knowledge_answer(question, searcher.search(question, k=9), max_citations=3)
    assert composed.kind == "knowledge" and 1 <= len(composed.citations) <= 3
    records = indexed_records(index_dir)
    for n, citation in enumerate(composed.citations, start=1):
        record = records[citation.id]
        assert citation.number == n and citation.citation == record["citation"]
        assert f"[{n}] {citation.quote}" in composed.body
        assert f"[{n}] {record['citation']} {record['url']}" in composed.body


def test_unsupported_questions_are_refused(searcher: Searcher) -> None:
    for question in ("What is the capital of France?", "What is it?"):
        composed = knowledge_answer(question, searcher.search(question, k=9))
        assert composed.kind == "refusal" and composed.body.startswith(REFUSAL)
        assert not composed.citations


def test_a_record_named_by_its_id_is_quoted(searcher: Searcher, index_dir: Path) -> None:
    """"What is PMID:...?": the record the id names is the answer, though none of its words
    is in the question."""
    doc = str(next(iter(indexed_records(index_dir).values()))["doc_id"])  # "PMID:n"
    question = f"What is {doc.replace('ICD10CM:', 'ICD-10-CM ')}?"
    composed = knowledge_answer(question, searcher.search(question, k=9))
    assert composed.kind == "knowledge" and composed.citations[0].doc_id == doc
