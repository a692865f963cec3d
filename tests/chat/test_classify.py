"""Which questions are about the study and which ask the literature; what a study
question asks for."""

from __future__ import annotations

import pytest

from assistant.chat.compose import classify, follow_up, study_intents, without_greeting


@pytest.mark.parametrize(("question", "has_study", "image_now", "topic"), [
    ("What does this scan show?", False, False, "study"),  # points at a study: says none
    ("", True, True, "study"),
    # an image came with it: the literature answers, the study's diagnosis and the model's
    # labels ("it names no type") before it (the study alone answered, before the
    # twenty-first session: "What is hydrocephalus?" got the tumour finding)
    ("What is a glioma?", True, True, "knowledge"),
    ("Is it a glioma?", True, True, "study"),
    ("Is there a tumour?", True, False, "study"),
    ("How confident is the model?", True, False, "study"),
    ("Where is it?", True, False, "study"),
    ("What is the probability?", True, False, "study"),
    ("What is a glioma?", True, False, "knowledge"),
    ("Define meningioma", True, False, "knowledge"),
    ("What is the prognosis of brain tumours?", True, False, "knowledge"),
    # asks about a patient with no study attached: the answer asks for the image, not
    # passages about tumours of other organs
    ("Is there a tumour?", False, False, "study"),
    ("Where is the lesion?", False, False, "study"),
    # a finding named as the patient's, with no study: the image is asked for (the
    # twenty-second session's probe got malignant tumours of the gut, and "side effects")
    ("Is the tumour malignant?", False, False, "study"),
    ("Which side is the tumour on?", False, False, "study"),
    ("How big is the tumour?", False, False, "study"), ("Any tumor?", False, False, "study"),
    ("What is the prognosis of the tumour?", False, False, "knowledge"),
    # with a study and no image this turn: a finding the model has no label for, where in
    # the brain, how the image was made (each went to the literature before: "Is there a
    # hemorrhage?" quoted premacular hemorrhage, "Which lobe?" lung lobation)
    ("Is there a hemorrhage?", True, False, "study"), ("Any infarct?", True, False, "study"),
    ("Is there bleeding?", True, False, "study"), ("Which lobe?", True, False, "study"),
    ("Which hemisphere?", True, False, "study"), ("Is it supratentorial?", True, False, "study"),
    ("Was contrast given?", True, False, "study"), ("What do you see?", True, False, "study"),
    ("Is gadolinium dangerous?", True, False, "knowledge"),
    ("What is diffusion weighted imaging?", True, False, "knowledge"),
    ("Is there any treatment for hemorrhage?", True, False, "knowledge"),
    # general questions that name a finding, a brain structure or a sequence stay the
    # literature's (a review found the first version sent them to the study)
    *((q, has, False, "knowledge") for has in (False, True) for q in (
        "What is the growth rate of glioblastoma?", "When does the hematoma resolve?",
        "Is there a difference between a stroke and a TIA?",
        "Is there a vaccine for meningitis?", "Which lobe controls speech?",
        "Which hemisphere controls language?", "What sequences are best for MS?",
        "How does diffusion weighted imaging detect stroke?",
        "How often is calcification seen in oligodendroglioma?",
        "What is the duration of treatment for meningitis?")),
    *((q, False, False, "knowledge") for q in (
        "How is the tumour graded?", "What is the mass effect of a glioma?",
        "Any tumour markers for glioma?", "How is the edema measured on MRI?")),
    # a second probe: stems inside other words ("pressure", "side effects"), a definition
    # with "it" after it, a code asked of the study's diagnosis
    *((q, has, False, "knowledge") for has in (False, True) for q in (
        "What are the signs of raised intracranial pressure?",
        "What is the normal intracranial pressure?",
        "Is gadolinium contrast safe in pregnancy?",
        "What are the side effects of temozolomide?",
        "What is a meningioma and how is it treated?",
        "What is glioblastoma and is it curable?",
        "What is the ICD-10 code for brain tumor?",
        "What is the most common primary brain tumour in adults?",
        "Is there a link between mobile phones and brain tumours?")),
    ("Which lobe is the tumour in?", False, False, "study"),
    *((q, True, False, "knowledge") for q in (
        "How is hydrocephalus diagnosed?", "What is the left hemisphere responsible for?",
        "What is the normal size of the ventricles?")),
    ("What does the red area mean?", True, False, "study"),
    ("How is the heatmap made?", True, False, "study"),
    ("How sure is the model?", True, False, "study"), ("Is it on the right side?", True, False,
                                                      "study"),
    ("Was IV contrast used?", True, False, "study"),
    ("Is this a contrast-enhanced scan?", True, False, "study"),
    # how far to trust an answer, with no study: nothing to look up (the literature was
    # searched for "sure" before)
    ("Sure?", False, False, "study"),
    ("How confident are you?", False, False, "study"),
    ("Are you certain?", False, False, "study"),
    ("Is a meningioma likely to recur?", False, False, "knowledge"),
    ("Does the patient have a glioma?", False, False, "study"),
    ("Is there a treatment for glioma?", False, False, "knowledge"),
    ("Is there any evidence that radiotherapy helps?", False, False, "knowledge"),
    ("Glioma", False, False, "knowledge"),
    ("Is there a difference between glioma and meningioma?", False, False, "knowledge"),
    ("Are there different types of glioma?", False, False, "knowledge"),
    ("Where is the pituitary gland located?", False, False, "knowledge"),
    ("Is there a vaccine for glioblastoma?", False, False, "knowledge"),
    ("Are there any lesions?", False, False, "study"),
    ("Is there a large mass?", False, False, "study"),
    ("What is the capital of France?", True, False, "knowledge"),
    # with a study in the conversation: what is generally known stays knowledge, though
    # a study answer would quote its limits for a type, a size or a worry
    ("Compare glioma and meningioma", True, False, "knowledge"),
    ("How are gliomas graded?", True, False, "knowledge"),
    ("Is a meningioma benign?", True, False, "knowledge"),
    ("Are there different types of glioma?", True, False, "knowledge"),
    ("Is there a vaccine for glioblastoma?", True, False, "knowledge"),
    ("Glioma", True, False, "knowledge"),
    ("Is gadolinium dangerous?", True, False, "knowledge"),
    ("How big can a meningioma get?", True, False, "knowledge"),
    ("What is the ICD-10-CM code for migraine?", True, False, "knowledge"),
    ("What is the diagnosis code for asthma?", False, False, "knowledge"),
    ("What is the pituitary gland?", True, False, "knowledge"),
    ("Is it a glioma or a meningioma?", True, False, "study"),
    ("How big is it?", True, False, "study"),
    ("Should I be worried?", True, False, "study"),
    ("Should I be worried?", False, False, "study"),  # about a patient: asks for the image
])
def test_classify(question: str, has_study: bool, image_now: bool, topic: str) -> None:
    assert classify(question, has_study, image_now) == topic


def test_intents() -> None:
    assert study_intents("Anything?") == ["diagnosis"]
    assert study_intents("How likely, and where?") == ["probability", "location"]
    assert study_intents("Give me the full report") == ["report"]
    # where in the brain: the heatmap's location, and the model's labels with the note
    assert study_intents("Is the tumor in the frontal lobe?") == ["diagnosis", "location", "type"]
    assert study_intents("Was contrast given?") == ["technique", "type"]
    # image contrast is image quality; a contrast agent is not
    assert study_intents("What is the image contrast like?") == ["quality"]


@pytest.mark.parametrize(("question", "rest"), [
    ("Hi, what is hydrocephalus?", "what is hydrocephalus?"),
    ("Good morning. Is it malignant?", "Is it malignant?"),
    ("Hi there, good morning. Could you please tell me what hydrocephalus is?",
     "Could you please tell me what hydrocephalus is?"),
    ("Hey what is a glioma?", "what is a glioma?"),
    ("hello", "hello"), ("Hi!", "Hi!"),  # a greeting alone stays: small talk
    ("Highlights of glioma imaging", "Highlights of glioma imaging"),
    ("Hello world syndrome?", "Hello world syndrome?"),  # no punctuation, no question word
])
def test_a_greeting_before_a_question_is_left_out(question: str, rest: str) -> None:
    assert without_greeting(question) == rest


@pytest.mark.parametrize(("question", "read_as"), [
    ("What causes it?", "What causes meningioma?"),
    ("And how is it treated?", "And how is meningioma treated?"),
    ("What is its ICD-10 code?", "What is meningioma's ICD-10 code?"),
    ("Symptoms?", "Symptoms of meningioma?"),
    # more than the earlier subject, or a question of its own: left as asked
    ("Is it related to epilepsy?", None), ("Is it malignant?", None),
    ("What is a glioma?", None), ("Treatment options?", None),
])
def test_a_follow_up_takes_the_subject_of_an_earlier_question(question: str,
                                                             read_as: str | None) -> None:
    assert follow_up(question, ["Hi, what is a meningioma?", "Thanks"]) == read_as
    assert follow_up(question, ["thanks", "Is there a tumour?"]) is None  # no subject


@pytest.mark.parametrize(("earlier", "question", "read_as"), [
    # the subject carries through follow-ups and "the <aspect> of X" questions
    (["What is a glioblastoma?", "What is the prognosis?"], "How is it treated?",
     "How is glioblastoma treated?"),
    (["What is a glioblastoma?", "What are its symptoms?"], "What causes it?",
     "What causes glioblastoma?"),
    (["What are the symptoms of hydrocephalus?"], "Symptoms?", "Symptoms of hydrocephalus?"),
    (["What is the ICD-10 code for migraine?"], "Symptoms?", "Symptoms of migraine?"),
    (["What is a meningioma?"], "What causes it and how is it treated?",
     "What causes meningioma and how is meningioma treated?"),
    (["What is a meningioma?"], "What are the symptoms?",
     "What are the symptoms of meningioma?"),
    # no subject to take, or a question that is not about it: left as asked
    (["What is G40.909?"], "What causes it?", None), (["What is it?"], "Symptoms?", None),
    (["What is a meningioma?"], "Where is it?", None),
    (["What is a meningioma?"], "Which side is it on?", None),
    (["What is a meningioma?"], "What is this?", None),
    (["What is a meningioma?"], "Thanks for that!", None),
    (["What is a meningioma?"], "What is a diagnosis?", None),
    (["What is a meningioma?"], "Define risk", None),
])
def test_follow_ups_a_review_found_misread(earlier: list[str], question: str,
                                           read_as: str | None) -> None:
    assert follow_up(question, earlier) == read_as
