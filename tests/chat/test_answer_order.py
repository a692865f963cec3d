"""Which passages a knowledge answer quotes first: definitions before codes. Hand-made hits
(the order is a pure function of them); the real-index tests are in test_compose.py."""

from __future__ import annotations

import pytest

from assistant.chat.compose import (
    defines,
    definition_subject,
    key_term,
    knowledge_answer,
    source_number,
    sources_of,
    with_source,
)
from assistant.retrieval.search import Hit, named_documents


def _hit(doc_id: str, title: str, snippet: str) -> Hit:
    source = {"PMID": "medline", "HP": "hpo", "ICD10CM": "icd10cm"}[doc_id.split(":")[0]]
    return Hit(f"{doc_id}#0", doc_id, source, title, snippet, 0.5, f"{source} {doc_id}",
               f"https://example.org/{doc_id}", None)


@pytest.mark.parametrize(("question", "subject"), [
    ("What is Polycythemia?", "polycythemia"),
    ("what are cerebrospinal fluid shunts", "cerebrospinal fluid shunts"),
    ("What is an arachnoid cyst?", "arachnoid cyst"),
    ("Define status epilepticus.", "status epilepticus"),
    ("What does HbA1c mean?", "hba1c"),
    ("Tell me about Dravet syndrome", "dravet syndrome"),
    ("What is oedema?", "edema"),  # American spelling, as the index
    ("What is the treatment of anemia?", "treatment of anemia"),
    ("What is the perineum?", "perineum"),
    ("Is there a tumour?", None),
    ("How is anemia treated?", None),
    ("What is " + "word " * 13 + "?", None),  # not a term: no definition is looked for
    ("What is " + "?" * 19000 + "x", "x"),  # (a pattern over the tail took 3 s on this)
    ("What is  the  perineum?", "perineum"),  # two spaces
    ("  What does HbA1c mean?", "hba1c"),
    ("What's anemia?", "anemia"),
    ("Define: anemia", "anemia"),
    ("What is Alzheimer's disease?", "alzheimer s disease"),
])
def test_the_subject_of_a_definitional_question(question: str, subject: str | None) -> None:
    assert definition_subject(question) == subject


@pytest.mark.parametrize(("text", "expected"), [
    ("Dravet syndrome (DS) is a severe developmental and epileptic encephalopathy.", True),
    ("Dravet syndrome, a rare epilepsy of infancy, begins in the first year.", True),
    ("Dravet syndromes are characterized by febrile seizures.", True),
    ("Dravet syndrome refers to severe myoclonic epilepsy in infancy.", True),
    ("We describe adults with Dravet syndrome treated with cannabidiol.", False),
    ("Dravet syndrome was diagnosed in 12 patients.", False),
    ("Dravet is a name; the syndrome is rare.", False),
    ("In Dravet syndrome, a sodium channel gene is mutated.", False),  # not where it starts
    ("Dravet syndrome is known to respond poorly to carbamazepine.", False),
    ("Dravet syndrome is described in 12 of 40 children.", False),
    ("Atypical Dravet syndrome is a milder form.", False),  # defines another term
    ("We studied 12 children. Dravet syndrome is a rare epilepsy.", True),
])
def test_a_sentence_that_defines_the_subject(text: str, expected: bool) -> None:
    assert defines("dravet syndrome", text) is expected


@pytest.mark.parametrize(("subject", "text", "expected"), [
    ("stent", "A stent is a small mesh tube.", True),
    ("stent", "Stenosis is a narrowing; stenting restored flow.", False),  # another word
    ("cyst", "Cystitis is an inflammation of the bladder.", False),
    ("alzheimer s disease", "Alzheimer's disease is a neurodegenerative disorder.", True),
    ("cerebrospinal fluid shunts", "A cerebrospinal fluid shunt is a drainage device.", True),
    ("stroke", "Strokes are a leading cause of disability.", True),
])
def test_definitions_of_other_subjects(subject: str, text: str, expected: bool) -> None:
    assert defines(subject, text) is expected


def _order(question: str, hits: list[Hit]) -> list[str]:
    return [c.doc_id for c in knowledge_answer(question, hits, max_citations=len(hits))
            .citations]


def test_the_term_s_own_definition_comes_before_codes() -> None:
    """"What is Anemia?" was answered "Anemia, unspecified" (a code) first; the HPO term,
    which defines it, now comes first, and the literature before the other codes."""
    hits = [_hit("ICD10CM:D64.9", "Anemia, unspecified", "Anemia, unspecified"),
            _hit("ICD10CM:D50", "Iron deficiency anemia", "Iron deficiency anemia"),
            _hit("PMID:1", "Anemia in the elderly", "Anemia was found in 12% of patients."),
            _hit("HP:0001903", "Anemia",
                 "A reduction in erythrocytes volume or hemoglobin concentration.")]
    assert _order("What is Anemia?", hits) == ["HP:0001903", "PMID:1", "ICD10CM:D64.9",
                                               "ICD10CM:D50"]


def test_a_defining_sentence_comes_before_the_subject_s_code() -> None:
    hits = [_hit("ICD10CM:G40.834", "Dravet syndrome, intractable, without status epilepticus",
                 "Dravet syndrome, intractable, without status epilepticus"),
            _hit("ICD10CM:G40.83", "Dravet syndrome",
                 "Dravet syndrome Inclusion terms: Severe myoclonic epilepsy in infancy"),
            _hit("PMID:2", "Cannabidiol in adults with Dravet syndrome",
                 "We describe adults with Dravet syndrome treated with cannabidiol."),
            _hit("PMID:3", "Sodium channel variants",
                 "Dravet syndrome (DS) is a severe epileptic encephalopathy of infancy.")]
    assert _order("What is Dravet syndrome?", hits) == [
        "PMID:3", "ICD10CM:G40.83", "PMID:2", "ICD10CM:G40.834"]


def test_without_a_definition_asked_literature_comes_before_codes_in_search_order() -> None:
    hits = [_hit("ICD10CM:D50", "Iron deficiency anemia", "Iron deficiency anemia"),
            _hit("PMID:4", "Oral iron", "Iron deficiency anemia responded to oral iron."),
            _hit("PMID:5", "Transfusion", "In iron deficiency anemia transfusion was rare.")]
    assert _order("iron deficiency anemia", hits) == [
        "PMID:4", "PMID:5", "ICD10CM:D50"]


def test_a_paper_titled_as_the_subject_is_not_its_entry() -> None:
    """Only an HPO term titled X is X's own entry; a case report titled "Polycythemia."
    does not come before a passage that defines it."""
    hits = [_hit("PMID:6", "Polycythemia.", "A case of polycythemia in a child."),
            _hit("PMID:7", "Review", "Polycythemia is an increase in red cell mass.")]
    assert _order("What is polycythemia?", hits) == ["PMID:7", "PMID:6"]


def test_a_record_named_by_its_id_still_comes_first() -> None:
    hits = [_hit("HP:0001903", "Anemia", "A reduction in erythrocytes volume."),
            _hit("ICD10CM:D50", "Iron deficiency anemia", "Iron deficiency anemia")]
    assert _order("What is ICD-10-CM D50 anemia?", hits)[0] == "ICD10CM:D50"


def test_an_aspect_of_a_subject_is_answered_from_the_subject_saying_so() -> None:
    """"What causes hydrocephalus?" was refused: no passage held both "cause" and
    "hydrocephalus". The subject's passages are quoted now, after a line saying that none
    speaks of causes as such; a passage that does comes first and needs no such line."""
    from assistant.chat.compose import split_focus
    from assistant.chat.support import focus_terms

    assert split_focus(focus_terms("What causes hydrocephalus?")) == (["hydrocephalus"],
                                                                      ["caus"])
    about = [_hit("HP:0000238", "Hydrocephalus",
                  "Hydrocephalus is an active distension of the ventricular system."),
             _hit("ICD10CM:G91.9", "Hydrocephalus, unspecified", "Hydrocephalus, unspecified")]
    body = knowledge_answer("What causes hydrocephalus?", about).body
    assert body.startswith('No passage found speaks to "causes" as such')
    assert "[1] Hydrocephalus:" in body
    causes = _hit("PMID:9", "Aqueduct stenosis",
                  "Aqueduct stenosis causes hydrocephalus in infants.")
    answer = knowledge_answer("What causes hydrocephalus?", [*about, causes])
    assert answer.body.startswith("From the literature:")
    assert [c.doc_id for c in answer.citations] == ["PMID:9"]  # only what answers
    etiology = _hit("PMID:12", "Etiology of hydrocephalus", "The etiology of hydrocephalus.")
    assert [c.doc_id for c in knowledge_answer("What causes hydrocephalus?", [*about, etiology])
            .citations] == ["PMID:12"]  # "etiology" says "cause"
    treated = knowledge_answer("How is hydrocephalus treated?", [*about, _hit(
        "PMID:13", "Shunt therapy", "Shunt therapy of hydrocephalus in infants.")])
    assert treated.body.startswith("From the literature:")  # "therapy" says "treated"


@pytest.mark.parametrize(("question", "subject", "aspects"), [
    ("Why does hydrocephalus happen?", ["hydrocephalus", "happen"], []),
    ("MRI of the knee", ["mri", "knee"], []),  # a modality is a subject
    ("Where can I find the guidelines for migraine?", ["find", "guidelin", "migrain"], []),
    ("How is epilepsy diagnosed?", ["epilepsi"], ["diagnos"]),
    ("Side effects of temozolomide", ["temozolomid"], ["side", "effect"]),
    ("hello, what causes migraine?", ["migrain"], ["caus"]),  # a greeting is no subject
])
def test_what_is_subject_and_what_is_aspect(question: str, subject: list[str],
                                            aspects: list[str]) -> None:
    from assistant.chat.compose import split_focus
    from assistant.chat.support import focus_terms

    assert split_focus(focus_terms(question)) == (subject, aspects)


def test_an_aspect_is_answered_only_by_passages_holding_the_whole_subject() -> None:
    """"Is headache a symptom of brain tumour?" quoted a passage on symptoms of brain
    tumours that never says "headache" (three of the four words were enough)."""
    hits = [_hit("PMID:425778", "[Primary multiple brain neoplasms]",
                 "The tumours gave general suprafocal symptoms in the brain.")]
    for question in ("Is headache a symptom of brain tumour?",
                     "Is headache a symptom of brain tumor?"):
        assert knowledge_answer(question, hits).kind == "refusal", question
    hits.append(_hit("PMID:2", "Headache in brain tumor patients",
                     "Headache is a symptom of brain tumors in half of the patients."))
    answer = knowledge_answer("Is headache a symptom of brain tumour?", hits)
    assert [c.doc_id for c in answer.citations] == ["PMID:2"]


def test_an_aspect_of_nothing_is_not_looked_up() -> None:
    """"Symptoms?" after a question about meningioma quoted HPO's "Abdominal symptom": each
    question is looked up alone, so one that names no subject says so."""
    hits = [_hit("HP:0011458", "Abdominal symptom", "A symptom of the abdomen."),
            _hit("PMID:1", "Symptoms of glioma", "Headache is a symptom of glioma.")]
    for question in ("Symptoms?", "And the treatment?", "What causes it?"):
        answer = knowledge_answer(question, hits)
        assert answer.kind == "refusal" and "name it" in answer.body, question
    assert knowledge_answer("What are symptoms?", hits).kind == "knowledge"  # defined
    assert knowledge_answer("Symptoms of glioma?", hits).citations[0].doc_id == "PMID:1"


def test_a_term_with_an_aspect_word_is_defined_whole() -> None:
    """"What is a diagnosis of exclusion?" asks for a term, not for the diagnosis of
    exclusion: a passage on exclusion alone is not quoted."""
    hits = [_hit("PMID:14", "Social exclusion", "Social exclusion and rejection in teens.")]
    assert knowledge_answer("What is a diagnosis of exclusion?", hits).kind == "refusal"
    assert knowledge_answer("What is the treatment of exclusion?", hits).body.startswith(
        'No passage found speaks to "treatment" as such')


def test_a_code_asked_for_is_quoted_first() -> None:
    hits = [_hit("PMID:10", "Migraine in children", "Migraine was common in children."),
            _hit("ICD10CM:G43.909", "Migraine, unspecified, not intractable",
                 "Migraine, unspecified, not intractable"),
            _hit("ICD10CM:G43", "Migraine", "Migraine Notes: equivalent to intractable")]
    answer = knowledge_answer("What is the ICD-10 code for migraine?", hits)
    # the codes, the subject's own first; the paper about migraine does not answer
    assert [c.doc_id for c in answer.citations] == ["ICD10CM:G43", "ICD10CM:G43.909"]
    assert answer.body.startswith("From the literature:")
    only_papers = knowledge_answer("What is the ICD-10 code for migraine?", hits[:1]).body
    assert only_papers.startswith('No passage found speaks to "ICD-10-CM code" as such')


def test_a_definition_keeps_its_whole_subject() -> None:
    """"What is Magnetic Resonance Imaging?" asks what MRI is: "imaging" is part of the
    subject there, not an aspect, so a passage must hold it."""
    hits = [_hit("PMID:11", "Resonance", "Magnetic resonance of protons in water.")]
    assert knowledge_answer("What is Magnetic Resonance Imaging?", hits).kind == "refusal"


@pytest.mark.parametrize(("question", "expected"), [
    ("What is the ICD-10 code for migraine?", True), ("ICD-10-CM code of asthma", True),
    ("Which ICD codes cover epilepsy?", True), ("What is the diagnosis code for asthma?", True),
    ("What is the genetic code?", False), ("Morse code", False), ("What is migraine?", False),
    ("What causes migraine?", False),
])
def test_asks_code(question: str, expected: bool) -> None:
    from assistant.chat.compose import asks_code

    assert asks_code(question) is expected


def test_a_passage_must_hold_the_rarest_subject_term_when_not_all_are_needed() -> None:
    """"5-year survival rate of glioblastoma": three of the four subject terms were enough,
    and a breast cancer survival figure ("5", "year", "rate") was quoted as the answer."""
    breast = _hit("PMID:1", "Breast cancer outcomes",
                  "The 5-year survival rate for stages I and II is 60 per cent.")
    glioma = _hit("PMID:2", "Glioblastoma outcomes",
                  "The 5-year survival rate of glioblastoma is below 10 per cent.")
    counts = {"5": 900, "year": 5000, "rate": 4000, "glioblastoma": 40, "surviv": 3000}
    question = "What is the 5-year survival rate of glioblastoma?"
    assert _order(question, [breast, glioma]) == ["PMID:1", "PMID:2"]  # without counts
    def frequency(term: str) -> int:
        return counts.get(term, 0)

    answer = knowledge_answer(question, [breast, glioma], 2, frequency)
    assert [c.doc_id for c in answer.citations] == ["PMID:2"]
    # never a number, and never a term the index does not hold
    assert key_term(["5", "year", "rate", "glioblastoma"], frequency) == "glioblastoma"
    assert key_term(["5", "year", "rate", "glioblastomma"], frequency) == "rate"
    assert key_term(["year", "rate", "glioblastoma"], frequency) is None  # all needed
    assert key_term(["5", "year", "rate", "glioblastoma"], None) is None


_ANSWER = """From the literature:
[1] Meningioma: "A benign tumor of the meninges."
[2] "Intracranial meningioma"
[3] Carbuncle: "..."

Sources:
[1] HPO HP:0002858 Meningioma https://hpo.jax.org/browse/term/HP:0002858
[2] Smith J et al. Meningiomas. J Neurosurg. 2021. PMID:34022255 https://pubmed.ncbi.nlm.nih.gov/34022255/
[3] ICD-10-CM L02.93 Carbuncle, unspecified https://www.icd10data.com/L02.93

(conversation abc)"""


@pytest.mark.parametrize(("question", "number", "read_as"), [
    ("Tell me more about [2]", 2, "Tell me more about PMID:34022255"),
    ("What does reference 1 say?", 1, "What does HP:0002858 say?"),
    ("What does source #3 say?", 3, "What does ICD-10-CM L02.93 say?"),
    ("And citation 4?", 4, None),  # the answer lists three
    ("What is the 5-year survival?", None, None),
])
def test_a_numbered_source_of_the_previous_answer(question: str, number: int | None,
                                                 read_as: str | None) -> None:
    assert source_number(question) == number
    assert with_source(question, _ANSWER) == read_as
    assert with_source(question, None) is None
    if read_as is not None:  # the rewritten question names the source by its id
        assert named_documents(read_as) == [sources_of(_ANSWER)[number or 0]]
    # a history sent back with CRLF line ends reads the same
    assert with_source(question, _ANSWER.replace("\n", "\r\n")) == read_as


def test_a_source_line_gives_its_own_id_not_one_its_title_names() -> None:
    answer = ("From the literature:\n[1] x\n\nSources:\n[1] Roe A et al. Survival after C71.9 "
              "resection. J Neurooncol. 2020. PMID:123 https://pubmed.ncbi.nlm.nih.gov/123/\n")
    assert sources_of(answer) == {1: "PMID:123"}
