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
    asks_code,
    classify,
    defines,
    knowledge_answer,
    main_question,
    not_english,
    render,
    small_talk,
    study_answer,
    with_study,
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


def test_anything_else_quotes_the_model_labels(analyses: dict[str, dict[str, Any]]) -> None:
    """"Is there any other abnormality?" had been answered with the tumour finding alone,
    which reads as "nothing else"; the model can see nothing else."""
    for question in ("Is there any other abnormality?", "Anything else?"):
        assert "only labels" in study_answer(question, "s1", analyses["tumour"]).body


def test_a_side_comes_with_the_orientation_caveat(analyses: dict[str, dict[str, Any]]
                                                  ) -> None:
    """Asked about the patient's left, the answer quotes the image's side and says that left
    and right are the image's (it had left that limitation out)."""
    for question in ("Is the tumor on the patient's left?", "Which hemisphere?",
                     "Which side?"):
        body = study_answer(question, "s1", analyses["tumour"]).body
        assert "hottest area" in body and "Left and right are sides of the image" in body


@pytest.mark.parametrize("question", [
    "Is the tumor in the frontal lobe?", "Is it supratentorial?", "Does it cross the midline?",
    "Does the patient need surgery?", "Has the tumour grown?", "How many tumours are there?",
    "Is there mass effect?", "Was contrast given?", "Which lobe?", "Was IV contrast used?",
    "Is this a contrast-enhanced scan?", "Was it done without contrast?"])
def test_what_the_analysis_does_not_say_is_said(question: str,
                                               analyses: dict[str, dict[str, Any]]) -> None:
    """A question the analysis holds no answer to gets the note before the quotes, and the
    model's labels (the bare diagnosis had been quoted, which read as "yes")."""
    body = study_answer(question, "s1", analyses["tumour"]).body
    assert "does not answer all of this question" in body, question
    assert "only labels" in body, question


@pytest.mark.parametrize("question", [
    "What does it show?", "How confident is the model?", "Where is it?",
    "Is the image quality good?", "How was this analysed?", "How big is it?",
    "What model was used?", "Why was this not assessed?", "Is the tumour on the left?",
    "Is it a glioma?", "Should I be worried?", "What do you see?",
    "Where is the heatmap hottest?", "Where exactly is the abnormality?",
    "Is the image good enough to read?", "What does the red area mean?"])
def test_questions_the_analysis_answers_get_no_such_note(
        question: str, analyses: dict[str, dict[str, Any]]) -> None:
    assert "does not answer" not in study_answer(question, "s1", analyses["tumour"]).body


@pytest.mark.parametrize(("question", "wanted", "unwanted"), [
    ("Is it a glioma or a meningioma?", ("showing a tumour", "only labels"), ("hottest",)),
    ("How big is it?", ("hottest area", "not a lesion outline", "measures no size"),
     ("Impression",)),
    ("Should I be worried?", ("for clinician review", "Limitations"), ()),
    # a finding the model has no label for: the analysis says nothing either way (these had
    # quoted the tumour finding alone, as if it answered them)
    ("Is there a hemorrhage?", ('asks about "hemorrhage"', "no label for it", "only labels",
                                "showing a tumour"), ()),
    ("Any signs of stroke?", ('asks about "stroke"', "only labels"), ()),
    ("Does the patient have epilepsy?", ('asks about "epilepsy"', "only labels"), ()),
    ("Is this normal?", ("only labels", "showing a tumour"), ("no label for it",)),
    ("Is there a tumour?", ("showing a tumour",), ("no label for it", "only labels")),
    # words that name no finding raise no note (a review found "yes", "frontal lobe")
    ("Is there a tumor, yes or no?", ("showing a tumour",), ("no label for it",)),
    ("Is there a mass in the left frontal lobe?", ("showing a tumour",), ("no label for it",)),
    ("Any tumor on the scan today?", ("showing a tumour",), ("no label for it",)),
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


@pytest.mark.parametrize(("text", "question", "later"), [
    ("I have a question. What is hydrocephalus?", "What is hydrocephalus?", ()),
    ("Quick question: what is hydrocephalus?", "what is hydrocephalus?", ()),
    ("Patient with headache. What is hydrocephalus?", "What is hydrocephalus?", ()),
    ("What is hydrocephalus? What causes it?", "What is hydrocephalus?", ("What causes it?",)),
    # kept whole: one sentence, no question, or a question pointing back at the rest
    ("What is hydrocephalus?", "What is hydrocephalus?", ()),
    ("Tell me about hydrocephalus.", "Tell me about hydrocephalus.", ()),
    ("My patient has a glioma. What causes it?", "My patient has a glioma. What causes it?",
     ()),
    # the subject is in the sentence before; abbreviations end no sentence
    ("Patient with glioblastoma. What is the prognosis?",
     "Patient with glioblastoma. What is the prognosis?", ()),
    ("Meningioma. Symptoms?", "Meningioma. Symptoms?", ()),
    ("What is hydrocephalus vs. edema?", "What is hydrocephalus vs. edema?", ()),
])
def test_the_question_of_a_longer_message(text: str, question: str,
                                          later: tuple[str, ...]) -> None:
    assert main_question(text) == (question, later)


@pytest.mark.parametrize(("question", "image", "topic"), [
    # sent with an image, a definition of a named subject is a knowledge question (it had
    # quoted the study's tumour finding alone)
    ("What is hydrocephalus?", True, "knowledge"),
    ("What are the symptoms of meningioma?", True, "knowledge"),
    ("What does it show?", True, "study"),
    ("What are the symptoms?", True, "study"),  # names no subject
    ("What is the probability?", True, "study"),
    ("", True, "study"),
    # about the study and what the model finds, though worded as definitions or knowledge
    ("Describe what you see", True, "study"),
    ("Describe the tumor.", True, "study"),
    ("Tell me about the location of the tumor", True, "study"),
    ("Is there evidence of tumor?", True, "study"),
    ("Any signs of stroke?", True, "study"),
    ("Any risk of tumor?", True, "study"),
    ("Signs of a tumor?", False, "study"),
    ("What is hydrocephalus?", False, "knowledge"),
])
def test_a_question_sent_with_an_image(question: str, image: bool, topic: str) -> None:
    assert classify(question, True, image) == topic


@pytest.mark.parametrize(("question", "code"), [
    ("What is the code for cerebral edema?", True), ("What code for migraine?", True),
    ("What is the ICD-10 code for migraine?", True),
    ("Which gene codes for dystrophin?", False), ("What is the source code for it?", False),
    ("What code of conduct applies?", False), ("What is the genetic code?", False),
])
def test_a_code_asked_for(question: str, code: bool) -> None:
    assert asks_code(question) is code


def test_the_code_words_are_no_subject_and_tumours_are_neoplasms() -> None:
    from assistant.chat.compose import _CODE, icd_wording
    from assistant.chat.support import focus_terms

    # "ICD code" had left "code" among the subject's terms
    for question in ("ICD code for a benign brain tumour?", "ICD-10-CM code for it",
                     "icd10 codes for it", "What is the ICD code?"):
        assert "code" not in focus_terms(_CODE.sub(" ", question)), question
    assert icd_wording("ICD-10 code for brain tumours?") == "ICD-10 code for brain neoplasms?"
    assert icd_wording("Code for a Tumor of the spine") == "Code for a neoplasm of the spine"
    assert icd_wording("What is the ICD-10 code for migraine?") is None


def test_a_definition_after_a_snippet_gap_is_a_definition() -> None:
    assert defines("glioma", "Background text here. \u2026 Glioma is a primary brain tumour.")


@pytest.mark.parametrize(("question", "foreign"), [
    ("Qu'est-ce que l'hydrocéphalie ?", True), ("¿Qué es la hidrocefalia?", True),
    ("\u4ec0\u4e48\u662f\u8111\u79ef\u6c34", True),
    ("What is hydrocephalus?", False), ("Hydrocephalus symptoms treatment", False),
    ("Dravet syndrome", False), ("Sjögren syndrome", False),
])
def test_a_question_in_another_language(question: str, foreign: bool) -> None:
    assert not_english(question) is foreign


def test_a_knowledge_answer_with_an_image_quotes_the_study_first(
        analyses: dict[str, dict[str, Any]]) -> None:
    """The diagnosis comes first; a question naming a tumour type also gets the model's
    labels (it names none), so the definition never reads as the study's type."""
    answer = knowledge_answer("What is x?", [], 3)  # a refusal: nothing retrieved
    glioma = with_study(answer, "s1", analyses["tumour"], "What is a glioma?")
    assert glioma.study_id == "s1" and glioma.kind == "study"
    assert glioma.body.index("showing a tumour") < glioma.body.index(answer.body)
    assert "only labels" in glioma.body
    plain = with_study(answer, "s1", analyses["tumour"], "What is hydrocephalus?")
    assert "showing a tumour" in plain.body and "only labels" not in plain.body


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
