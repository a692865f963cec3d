"""Answers composed from facts only: the study's analysis or retrieved passages.

Pure functions. A question is about the study or a knowledge question (``classify``). A
study answer quotes the sentences of the analysis's grounded report that the question asks
about, chosen by the report's own source tags (diagnosis, probability and threshold,
heatmap location, scope, technique, limitations, image quality), plus the model's numbers
when asked for them. A knowledge answer quotes the snippets of the retrieved passages that
hold the question's terms, numbered [1], [2], with their citations listed. Where neither
supports an answer the reply says so (``REFUSAL``). Every reply starts with ``NOTICE``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from assistant.chat.support import american, covers, focus_terms, needed, plain, terms
from assistant.retrieval.passages import split_sentences
from assistant.retrieval.search import Hit, named_documents

AnswerKind = Literal["study", "knowledge", "refusal"]
Topic = Literal["study", "knowledge"]

NOTICE = ("Draft for a clinician to verify: software quoted this from the study's analysis "
          "or the cited literature; it is not a diagnosis.")
REFUSAL = "I cannot answer that from the analysis or the literature."

# Words that point at the study in hand.
_DEICTIC = re.compile(
    r"\b(this|these|it|its|attached|uploaded|the (image|scan|study|slice|mri|picture|film|"
    r"patient|result|results|report|finding|findings|diagnosis(?! codes?\b)|impression|"
    r"probability|heat ?map|model|prediction)|the (red|hot|highlighted|colou?red|bright) "
    r"(area|spot|region|part|zone)s?)\b")
# Asking what is generally known (treatment, prognosis...), not what this study shows.
_KNOWLEDGE = re.compile(r"\b(treat|therap|prognos|surviv|caus|risk|symptom|sign of|epidemiol|"
                        r"incidence|prevalen|manag|guideline|drug|surger|outcome|literature|"
                        r"studies|evidence|typical|usually|generally|in general|genetic|"
                        r"side effects?|role of|most common|link between|distinguish|"
                        r"differentiat|pregnan|safe\b|curable|radiation|normal (range|values?|"
                        r"levels?|size|intracranial)|responsible for|functions? of|"
                        r"how (is|are) [a-z ]+ diagnosed)")
# Asking whether this patient has something, or where it is: about a study even when none
# is attached ("Is there a tumour?" is not a literature question).
_FINDING = (r"(tumou?rs?|mass(es)?|lesions?|bleed\w*|ha?emorrhage|abnormalit\w+|nodules?|"
            r"growth|cancer|cysts?|oedema|edema|metastas[ie]s|swelling|stroke|infarcts?|"
            r"infarction|isch(a)?emi\w*|hydrocephalus|h(a)?ematoma|aneurysms?|fractures?|"
            r"herniation|midline shift|atrophy|calcifications?|abscess(es)?|"
            r"h(a)?emorrhages|bleeds?|effusions?|pneumonia|shift)")
_PRESENCE = re.compile(rf"^\s*((is|are) there (an? |any )?(\w+ )?{_FINDING}\b|"
                       rf"any (\w+ )?{_FINDING}\b|"
                       rf"where (is|are) (the |a |an )?(\w+ )?{_FINDING}\b|"
                       r"(does|do) (he|she|they|the patient) have\b)")
# A finding named as this patient's, in a question about it ("Is the tumour malignant?",
# "How big is the mass?", "Which side is the lesion on?"; not "How is the tumour graded?",
# "What is the growth rate of glioblastoma?").
_DEFINITE = re.compile(r"^\s*(is|are|was|were|has|have|does|do|did|how (big|large|small)|"
                       r"where|which (side|lobe|hemisphere|part|region)|what side|what size)"
                       r"\b.*\bthe (tumou?rs?|mass(es)?|lesions?|nodules?|cysts?|h(a)?ematomas?|"
                       r"bleed|abscess(es)?)\b")
# What makes a question a general one though it names a finding ("Is there a difference
# between a stroke and a TIA?", "Is there a vaccine for meningitis?", "Any tumour markers
# for glioma?").
_GENERAL = re.compile(r"\b(between|differen\w*|differ|versus|vs|vaccines?|tests? for|"
                      r"markers?|suppressors?|genes?|mutat\w*|rates?|incidence|prevent\w*|"
                      r"cure|resolve\w*|measured|graded|classif\w*|defin\w*)\b")
# A definition of a named subject, then more about it ("What is a meningioma and how is it
# treated?"): "it" is that subject, not the study.
_DEFINED_THEN_IT = re.compile(r"\s*(what\s+(is|are)|define|explain|describe|tell me about)\s+"
                              r"(an?\s+)?(?!(the|this|it|these|that|those)\b)[a-z][^?]*?\band\b")
_DEFINITION = re.compile(r"^\s*(what\s+(is|are)\s+(an?\s+)?(?!the\b)|define\b|explain\b|"
                         r"describe\b|tell me about\b|what does\b)")

# Words of the image quality intent beside "contrast", which may be a contrast agent's.
_QUALITY = r"quality|good enough|readable|noise|blur|framing"
# What a study question asks about, in the order answers list it.
_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("diagnosis", re.compile(r"diagnos|tumou?r|finding|impression|result|show|normal|lesion|"
                             r"mass|cancer|positive|negative|what did|what does|\bsee\b|"
                             r"anything else")),
    # whole words where a stem is inside others ("pressure", "side effects", "rightly")
    ("probability", re.compile(r"probab|likel|confiden|certain|\bsure\b|chance|percent|%|"
                               r"\bscores?\b|threshold|cut-?off")),
    ("location", re.compile(r"where|locat|\bsides?\b(?!\s+effects?)|\bleft\b|\bright\b|"
                            r"heat ?map|\bregions?\b|\bareas?\b|which part|\bposition\b|"
                            r"\blook")),
    ("scope", re.compile(r"scope|why (no|not)|refus|not assess|unlike|out of")),
    ("technique", re.compile(r"techni|how (was|did|were)\b|how is (it|this|the (image|scan|"
                             r"study|slice|model|heat ?map))\b|which model|what model|method|"
                             r"train")),
    ("limitations", re.compile(r"limit|caveat|reliab|trust|accura")),
    # image contrast, not a contrast agent ("Was contrast given?", "a contrast MRI")
    ("quality", re.compile(rf"{_QUALITY}|(?<!with )(?<!post-)(?<!post )contrast(?!\s*(agent|"
                           r"medium|media|enhanc|given|administ|inject|material|mri|scan|study|"
                           r"series|sequence|was))")),
    ("report", re.compile(r"report|summar|full|everything|overview|describ")),
)
_QUALITY_WORDS = re.compile(_QUALITY)
# Where in the brain: a study question, answered by where the heatmap is hottest on the
# image, with the note that the analysis names no structure (``unanswered``).
_ANATOMY = re.compile(r"\b(hemispheres?|lobes?|lobar|frontal|parietal|temporal|occipital|"
                      r"insula\w*|cerebell\w*|brain ?stem|pons|medulla|midbrain|thalam\w*|"
                      r"basal ganglia|ventric\w*|sella\w*|suprasellar|pituitary fossa|"
                      r"cortex|cortical|subcortical|white matter|grey matter|gray matter|"
                      r"(supra|infra)tentorial|midline|corpus callosum|meninges|dura( mater)?|"
                      r"dural)\b")
# How the image was acquired, which the analysis does not know: the technique is quoted,
# with the note that the analysis does not answer it (``_beyond``).
_ACQUISITION = re.compile(
    r"\b((iv |intravenous |post-?|pre-?|with |without |no )?contrast[\s-]*(agent|medium|media|"
    r"enhanc\w*|given|was|used|administered|injected)|(was|were|is) (iv |intravenous )?"
    r"contrast( (given|used|administered|injected))?|(iv|intravenous|post|pre|with|without)"
    r"[\s-]*contrast|gadolinium (given|was|used)|(was|were) gadolinium( given| used)?|"
    r"sequences?|t1|t2|flair|dwi|diffusion|weighted)\b")
# What the model cannot say (a type or grade, a size) and worry about the result: these
# choose what a study answer quotes, but only a question that points at the study is
# routed to it for them ("Is it a glioma?"; "How are gliomas graded?" is knowledge).
_LIMIT_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("type", re.compile(r"\btype|kind of|sort of|\bgrade|subtype|gliom|meningiom|pituitar|"
                        r"glioblastom|metasta|which tumou?r|what tumou?r|differential|malignan|"
                        r"benign|cancer")),
    ("size", re.compile(r"\bsize|how (big|large|small)|measur|dimension|diameter|volume|"
                        r"extent")),
    ("concern", re.compile(r"\bworr(y|ied|ying)\b|\bconcerned\b|\bserious\b|\bdangerous\b|"
                           r"\bscar(y|ed)\b|\bafraid\b|\b(bad|good) news\b")),
)
# Worry about one's own result: about a study, with one or without ("attach the image").
_WORRY = re.compile(r"\bshould (i|we|they) (be )?(worried|concerned)\b|"
                    r"\b(am i|are we) (right to be )?(worried|concerned)\b|\b(bad|good) news\b")


def _tags(sentence: Mapping[str, Any]) -> list[str]:
    return [str(t) for t in sentence.get("sources", ())]


def _scoped(s: Mapping[str, Any]) -> bool:
    return any(t.startswith("scope.") for t in _tags(s))


_SELECT: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "diagnosis": lambda s: s["section"] in ("findings", "impression") and (
        ("diagnosis.label" in _tags(s) and "heat.location" not in _tags(s)) or _scoped(s)),
    "probability": lambda s: bool({"diagnosis.probability", "diagnosis.threshold"}
                                  & set(_tags(s))),
    # with the caveat that left and right are the image's ("image.meta" limitation)
    "location": lambda s: bool({"heat.location", "heat.method"} & set(_tags(s))) or (
        s["section"] == "limitations" and "image.meta" in _tags(s)),
    "scope": _scoped,
    "technique": lambda s: s["section"] == "technique",
    "limitations": lambda s: s["section"] == "limitations",
    "quality": lambda s: "image.quality" in _tags(s),
    "report": lambda s: s["section"] in ("findings", "impression"),
    "type": lambda s: _SELECT["diagnosis"](s) or "model.labels" in _tags(s),
    "size": lambda s: _SELECT["location"](s) or "model.labels" in _tags(s),
    "concern": lambda s: _SELECT["diagnosis"](s) or s["section"] == "limitations",
}


@dataclass(frozen=True)
class Citation:
    number: int
    id: str  # passage id, "PMID:123#0"
    doc_id: str
    title: str
    quote: str  # what the answer quotes from the passage
    citation: str
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "id": self.id, "doc_id": self.doc_id,
                "title": self.title, "quote": self.quote, "citation": self.citation,
                "url": self.url}


@dataclass(frozen=True)
class Composed:
    kind: AnswerKind
    body: str  # the answer without the notice and the conversation reference
    citations: tuple[Citation, ...] = ()
    study_id: str | None = None


def classify(question: str, has_study: bool, image_now: bool = False) -> Topic:
    """``study`` when the question points at the study (not "What is X and how is it
    treated?", nor a code asked for), or comes with an image and is not a definition or a
    question about what is generally known of a named subject ("What is hydrocephalus?"
    sent with an image is answered from the literature, the study's diagnosis beside it);
    with a study in the conversation, when it asks about one of its results, whether the
    patient has a finding, where in the brain (a structure named, nothing else unread) or
    how the image was acquired, and is neither a definition nor about what is generally
    known; with no study, when it asks whether the patient has something, or about "the
    tumour" (answered: attach the image); otherwise ``knowledge``."""
    text = american(question).lower()
    if _DEFINED_THEN_IT.match(text):
        return "knowledge"  # "What is a meningioma and how is it treated?": "it" is that
    if _DEICTIC.search(text):
        return "study"
    if asks_code(text):
        return "knowledge"  # the analysis holds no code ("the ICD-10 code for brain tumor?")
    if image_now:
        return "knowledge" if _asks_knowledge(text) else "study"
    if _DEFINITION.search(text) or _KNOWLEDGE.search(text):
        return "knowledge"
    if _WORRY.search(text):
        return "study"
    # "Is there a hemorrhage?", "Any infarct?", "Is the tumour malignant?": this patient's
    # ("Is there a vaccine for meningitis?", "How is the tumour graded?" are not)
    asks_study = not _GENERAL.search(text) and bool(
        _PRESENCE.search(text) or _DEFINITE.search(text)
        or (_OPENS_FINDING.search(text) and unassessed(question)))
    if not has_study:
        # "Sure?", "How confident are you?": about a model's answer, nothing to look up
        about_model = (focus := focus_terms(text)) and set(focus) <= _model_terms()
        return "study" if asks_study or about_model else "knowledge"
    # where in the brain, how it was acquired: of this study when nothing else is asked
    # ("Which lobe?", "Was contrast given?"; not "Which lobe controls speech?")
    acquired = (bool(_ANATOMY.search(text) or _ACQUISITION.search(text))
                and not _HOW_IT_WORKS.match(text) and not unanswered(question))
    return "study" if asks_study or acquired or any(
        p.search(text) for _, p in _INTENTS) else "knowledge"


def _asks_knowledge(text: str) -> bool:
    """A definition or what is generally known, of a subject the question names other than
    the study and what the model finds ("What is hydrocephalus?", "Symptoms of meningioma";
    not "What causes it?", "Symptoms?", "Describe the tumour", "Tell me about what you
    see", "Is there evidence of a tumour?", "Any signs of stroke?")."""
    if not (_DEFINITION.search(text) or _KNOWLEDGE.search(text)) or _ASKS_FINDING.search(text):
        return False
    return any(t not in _answered_terms() for t in _subject_terms(text))


def _subject_terms(question: str) -> list[str]:
    """The focus terms of ``question`` that name a subject: neither an aspect ("causes") nor
    a code asked for ("ICD-10 code"); empty for "What causes it?" or "Symptoms?"."""
    return [t for t in focus_terms(_CODE.sub(" ", question)) if not _aspect_group(t)]


# Within a sentence, a colon before the question ("Quick question: what is X?").
_COLON = re.compile(r"(?<=:)\s+")


def main_question(text: str) -> tuple[str, tuple[str, ...]]:
    """The question a message asks when it says more ("I have a question. What is X?",
    "Patient with headache. What is hydrocephalus?"): its first sentence ending in a
    question mark, when that one stands on its own (names a subject of its own, and no
    pronoun points back at what came before: "Patient with glioblastoma. What is the
    prognosis?" keeps its first sentence), and the questions after it; the message itself
    and none otherwise. Sentences are cut as passages are (not after "vs." or "e.g.")."""
    parts = [p.strip() for sentence in split_sentences(text.strip())
             for p in _COLON.split(sentence) if p.strip()]
    asked = [p for p in parts if p.endswith("?")]
    if len(parts) < 2 or not asked or _PRONOUN.search(asked[0]):
        return text, ()
    if not _subject_terms(asked[0]):
        return text, ()  # "What is the prognosis?", "Symptoms?": the subject came before
    return asked[0], tuple(asked[1:])


def with_study(composed: Composed, study_id: str, analysis: Mapping[str, Any],
               question: str = "") -> Composed:
    """A knowledge answer to a question sent with an image: the study's diagnosis first (the
    image was analysed and is the conversation's study now), with the model's labels when
    the question names a tumour type ("What is a glioma?": the model names none), then the
    answer."""
    text = american(question).lower()
    names_type = any(p.search(text) for name, p in _LIMIT_INTENTS if name == "type")
    study = study_answer("", study_id, analysis,
                         ["diagnosis", "type"] if names_type else ["diagnosis"])
    kind: AnswerKind = "study" if composed.kind == "refusal" else composed.kind
    return Composed(kind, f"{study.body}\n\n{composed.body}", composed.citations, study_id)


# Words of a question about how far to trust an answer ("Sure?", "How confident are you?").
MODEL_WORDS = "sure certain certainty confident confidence probability probable likely accurate"


@lru_cache(maxsize=1)
def _model_terms() -> frozenset[str]:
    return frozenset(terms(MODEL_WORDS))


# A message that is only thanks, a greeting or an acknowledgement, in one to three parts
# ("ok thanks", "thanks doc").
_COURTESY = (r"(thanks?( you)?( very much| so much| a lot)?|thank u|thx|ty|cheers|hi|hello|hey|"
             r"good (morning|afternoon|evening)|bye|goodbye|ok(ay)?|got it|great|cool|perfect|"
             r"nice|understood|sure|fine)( (again|all|there|doc|doctor))?")
_SMALL_TALK = re.compile(rf"{_COURTESY}( {_COURTESY}){{0,2}}")
HELP = ("Ask about a study (attach its image, or ask about the one in this conversation: "
        "its diagnosis, probability, heatmap location, image quality or limitations) or what "
        "a medical term means: answers quote the analysis or the cited literature.")


# A greeting before the question ("Hi, what is hydrocephalus?", "Good morning. Is it
# malignant?"): followed by punctuation, or by a word a question starts with.
_GREETING = re.compile(
    r"^\s*(?:(?:hi|hello|hey|greetings|good\s+(?:morning|afternoon|evening|day))"
    r"(?:\s+(?:there|all|doc|doctor))?(?:\s*[,.!;:]+\s*|\s+(?=(?:what|which|who|how|why|"
    r"when|where|is|are|can|could|would|do|does|did|tell|explain|define|describe|please)\b)))+",
    re.IGNORECASE)


def without_greeting(question: str) -> str:
    """``question`` without the greetings before it; a greeting alone stays as it is
    (``small_talk``)."""
    rest = _GREETING.sub("", question, count=1)
    return rest if rest.strip() else question


# A follow-up that points back at the subject of an earlier question ("What is a
# meningioma?", then "What causes it?"), or names an aspect only ("Symptoms?").
PRONOUNS = ("it", "its", "this", "that", "they", "them", "their")
_PRONOUN = re.compile(rf"\b({'|'.join(PRONOUNS)})\b", re.IGNORECASE)


def follow_up(question: str, earlier: Sequence[str]) -> str | None:
    """``question`` with the subject of the latest question in ``earlier`` (the
    conversation's user turns, oldest first) that names one, when it asks an aspect or the
    code of a pronoun ("What causes it?" -> "What causes meningioma?") or names an aspect
    alone ("Symptoms?" -> "Symptoms of meningioma?"); None when it needs none, asks more
    than that, or no earlier question names a subject. For a conversation without a study
    only: there, "it" is the study."""
    subject = None
    for text in earlier:  # each earlier follow-up read as it was, so its subject carries
        found = subject_named(without_greeting(text))
        if found is not None:
            subject = found
    if subject is None or _THANKS.search(question):
        return None
    focus = focus_terms(_CODE.sub(" ", question))
    asked = [t for t in focus if _aspect_group(t) and t != "side"]  # "Which side is it on?"
    others = [t for t in focus if t not in asked and t not in _pronoun_terms()]
    if others or not (asked or asks_code(question)):
        return None  # "Is it malignant?", "Where is it?", "That's it", "What is a glioma?"
    if _PRONOUN.search(question):
        return _PRONOUN.sub(lambda m: subject + ("'s" if m[1].lower() in ("its", "their")
                                                 else ""), question)
    definitional = definition_subject(question)
    if definitional is not None and not _WHAT_IS_THE.match(question):
        return None  # "What is a diagnosis?" asks what a diagnosis is
    return f"{question.strip().rstrip('?.!').strip()} of {subject}?"


# A numbered source of the answer before ("Tell me more about [2]", "What does reference 1
# say?", "source #3").
_REFERENCE = re.compile(r"\[(\d{1,2})\]|\b(?:references?|refs?|citations?|sources?)\s*"
                        r"(?:no\.?|number|#)?\s*(\d{1,2})\b", re.IGNORECASE)
_SOURCE_LINE = re.compile(r"\[(\d{1,2})\]\s+(.*)")


def sources_of(answer: str) -> dict[int, str]:
    """The numbered sources an answer lists under "Sources:": number -> document id."""
    _, found, listed = answer.replace("\r\n", "\n").partition("\nSources:\n")
    out: dict[int, str] = {}
    for line in listed.splitlines() if found else ():
        match = _SOURCE_LINE.match(line.strip())
        if match and (ids := named_documents(match[2])):
            out[int(match[1])] = ids[-1]  # the line's own id ends it: a title may name another
    return out


def _named_as(doc_id: str) -> str:
    """A document id as a question names it ("ICD10CM:G93.6" -> "ICD-10-CM G93.6")."""
    source, _, code = doc_id.partition(":")
    return f"ICD-10-CM {code}" if source == "ICD10CM" else doc_id


def source_number(question: str) -> int | None:
    """The number of the source a question asks about ("What does reference 1 say?": 1)."""
    match = _REFERENCE.search(question)
    return None if match is None else int(match[1] or match[2])


def with_source(question: str, previous: str | None) -> str | None:
    """A question about a numbered source of the ``previous`` answer with that source's id
    in place of its number ("What does reference 1 say?" -> "What does PMID:123 say?");
    None when the previous answer lists no such source."""
    match = _REFERENCE.search(question)
    doc_id = sources_of(previous or "").get(int(match[1] or match[2])) if match else None
    if match is None or doc_id is None:
        return None
    return f"{question[:match.start()]}{_named_as(doc_id)}{question[match.end():]}"


_THANKS = re.compile(r"\b(thanks?|thank\s+you|cheers)\b", re.IGNORECASE)
_WHAT_IS_THE = re.compile(r"\s*what\s+(?:is|are)\s+the\s", re.IGNORECASE)


def subject_named(text: str) -> str | None:
    """The subject an earlier question names: X of "What is X?" and of "What is the
    <aspect> of X?" or "What is the ICD-10 code for X?"; None for a question with no
    subject of its own (a follow-up, an aspect alone, a source id or number)."""
    if named_documents(text) or _PRONOUN.search(text) or _REFERENCE.search(text):
        return None  # an id, "it" or "reference 1" names no subject a follow-up can take
    subject = definition_subject(_CODE.sub(" code ", text))
    if subject is None:
        return None
    words = subject.split()
    for joint in (" of ", " for "):  # "symptoms of hydrocephalus", "code for migraine"
        if joint in f" {subject} ":
            words = f" {subject} ".rsplit(joint, 1)[1].split()
    # more than question words, aspects and the "code" put in for an ICD name ("icd" is
    # never left: _CODE took it)
    named = [t for t in focus_terms(" ".join(words)) if not _aspect_group(t) and t != "code"]
    return " ".join(words) if named else None


@lru_cache(maxsize=1)
def _pronoun_terms() -> frozenset[str]:
    return frozenset(terms(" ".join(PRONOUNS)))


def small_talk(question: str) -> bool:
    """Whether ``question`` is only thanks, a greeting or an acknowledgement ("Thanks!"),
    which the literature must not be searched for ("Thank you to our Reviewers!")."""
    text = question.strip().lower()
    if text.endswith("?"):  # "Sure?" asks how sure the model is
        return False
    return _SMALL_TALK.fullmatch(" ".join(re.split(r"[\s!.,;:]+", text)).strip()) is not None


def study_intents(question: str) -> list[str]:
    """What a study question asks about; the diagnosis when nothing more specific. Asking
    whether the study is normal, or about a finding the model has no label for, also
    quotes the model's labels (``type``)."""
    text = american(question).lower()
    found = [name for name, pattern in (*_INTENTS, *_LIMIT_INTENTS) if pattern.search(text)]
    if _ANATOMY.search(text) and "location" not in found:
        found.append("location")
    if _ACQUISITION.search(text):  # contrast given, not the image's contrast
        found = [f for f in found if f != "quality" or _QUALITY_WORDS.search(text)]
        if "technique" not in found:
            found.append("technique")
    found = found or ["diagnosis"]
    if "type" not in found and (_NORMAL.search(text) or _OTHER_WORDS.search(text)
                                or unassessed(question) or _beyond(found, question)):
        found.append("type")
    return found


_NORMAL = re.compile(r"\b(ab)?normal\b")
# "Is there any other abnormality?": the model's labels say what else it can see (nothing).
_OTHER_WORDS = re.compile(r"\b(other|else|another|additional)\b")
# How something works in general ("How does diffusion weighted imaging detect stroke?").
_HOW_IT_WORKS = re.compile(r"\s*how (does|do|can|could|would)\b")
# A question that opens by asking whether the study shows something.
_OPENS_FINDING = re.compile(
    r"^\s*((is|are) there|any|(does|do|did) (he|she|they|it|this|the \w+) (have|has|show)|"
    r"(can|do) you see|rule out|(signs?|evidence) of)\b")
# Asking whether the study shows something: "Is there a hemorrhage?", "Any sign of stroke?",
# "Does the patient have epilepsy?", "Can you see edema?", "Rule out an abscess".
_ASKS_FINDING = re.compile(
    r"\b((is|are) there|any|signs? of|evidence of|(does|do|did) (he|she|they|it|this|the "
    r"(patient|image|scan|study|mri|slice)) (have|has|show)|(can|do) you see|rule out|"
    r"(is|are) (it|this|that) an?)\b")
# Words a question about the study may hold that the diagnosis itself answers (the model's
# labels and what stands for them) or that only point at the study.
_ANSWERED_WORDS = (
    "tumor tumors mass masses lesion lesions growth growths neoplasm neoplasms abnormal "
    "abnormality abnormalities normal finding findings anything something wrong problem "
    "image images scan scans slice study mri picture film patient brain head model result "
    "results report diagnosis impression evidence sign signs see seen show shows visible "
    "present detect detected found look looks like left right side region area location "
    "here sure definitely clearly else more other any have has heatmap heat map hottest "
    "hot exactly red highlighted colored coloured bright spot")


@lru_cache(maxsize=1)
def _answered_terms() -> frozenset[str]:
    return frozenset(terms(_ANSWERED_WORDS))


# Findings a brain MRI may show that the model has no label for (its labels: tumour or
# none): asked about, the diagnosis says nothing either way.
_OTHER_FINDING = re.compile(
    r"\b(bleed\w*|hemorrhag\w*|microbleeds?|cysts?|edema|swelling|stroke|infarcts?|"
    r"infarction|ischemi\w*|hydrocephalus|hematomas?|aneurysms?|fractures?|herniation|"
    r"midline shift|shift|atrophy|calcifications?|abscess(es)?|effusions?|pneumonia|"
    r"epilep\w*|seizures?|infections?|inflammation|encephalitis|meningitis|"
    r"multiple sclerosis|sclerosis|demyelinat\w*|dementia|alzheimer\w*|white matter "
    r"(lesions?|disease|changes)|vascular malformations?|malformations?|cavernoma|"
    r"contusions?|trauma|injur(y|ies)|sinusitis|lacun\w*)\b")


def unassessed(question: str) -> list[str]:
    """The findings a question asks the study about that the model has no label for
    ("hemorrhage" of "Is there a hemorrhage?", "stroke" of "Any signs of stroke?"); empty
    for other questions, and for what the limit intents answer (a type, a size)."""
    text = american(question).lower()
    if not _ASKS_FINDING.search(text) or any(p.search(text) for _, p in _LIMIT_INTENTS):
        return []
    if any(p.search(text) for name, p in _INTENTS
           if name not in ("diagnosis", "report", "location")):
        return []  # "Is there a heatmap?", "Any limitations?"
    return list(dict.fromkeys(m[0] for m in _OTHER_FINDING.finditer(text)))


def unanswered(question: str) -> list[str]:
    """The words of a study question that nothing in the analysis answers: no intent reads
    them, they are not what the diagnosis answers or points at the study, and they name no
    finding the model has no label for (``unassessed`` notes those): "surgery" of "Does
    the patient need surgery?", "grown" of "Has the tumour grown?", "frontal" of "Is the
    tumor in the frontal lobe?". Empty for a question the quoted sentences answer."""
    text = american(question).lower()
    for read in (_ANATOMY, _ACQUISITION):  # read, though not answered: _beyond says so
        text = read.sub(" ", text)
    known = _answered_terms() | _model_terms() | _pronoun_terms()
    patterns = [p for _, p in (*_INTENTS, *_LIMIT_INTENTS)] + [_OTHER_FINDING, _WORRY]
    out = []
    for word in re.findall(r"[a-z]+", text):
        found = focus_terms(word)
        if not found or found[0] in known or any(p.search(word) for p in patterns):
            continue
        out.append(word)
    return list(dict.fromkeys(out))


# Said before the quoted sentences when a study question asks more than the analysis holds.
NOT_IN_ANALYSIS = ("- The analysis does not answer all of this question: it holds the model's "
                   "diagnosis and its probability, where the heatmap is hottest on the image "
                   "(no brain structure is named), and the image's quality; what it says is "
                   "quoted below.")
# Intents whose sentences answer only what they name: a question chosen for them (or for
# nothing more specific) that holds words no intent reads gets ``NOT_IN_ANALYSIS``.
_GENERAL_INTENTS = frozenset({"diagnosis", "location", "type"})


def _beyond(intents: Sequence[str], question: str) -> bool:
    """Whether a study question chosen for ``intents`` asks what the analysis does not say
    ("Does the patient need surgery?", "Is it in the frontal lobe?", "Was contrast given?");
    not "How big is it?", which the size intent answers (the model measures no size)."""
    if _ANATOMY.search(text := american(question).lower()) or _ACQUISITION.search(text):
        return True  # "Is it in the frontal lobe?", "Was contrast given?"
    return set(intents) <= _GENERAL_INTENTS and bool(unanswered(question))


def _numbers(analysis: Mapping[str, Any]) -> str:
    d = analysis["diagnosis"]
    return (f"- Model output: label \"{d['label']}\", calibrated probability of "
            f"{d['positive_label']} {d['probability']:.3f}, operating threshold "
            f"{d['threshold']:.2f}.")


def study_answer(question: str, study_id: str, analysis: Mapping[str, Any],
                 intents: Sequence[str] | None = None) -> Composed:
    """Quote the analysis's report sentences that answer ``question`` (or, given, the
    ``intents``)."""
    sentences = [s for s in analysis["report"]["sentences"] if s["section"] != "notice"]
    intents = list(intents) if intents is not None else study_intents(question)
    in_scope = bool(analysis.get("in_scope"))
    if not in_scope and not any(_SELECT[i](s) for i in intents for s in sentences):
        intents = ["scope"]  # out of scope: nothing but why
    chosen = [s for s in sentences if any(_SELECT[i](s) for i in intents)]
    if not chosen:
        return refusal(f"{REFUSAL} The analysis of study {study_id} says nothing about it.")
    model = analysis["report"]["drafter"]["model"]
    lines = [f"From the analysis of study {study_id} by {model}:"]
    asked = unassessed(question) if in_scope else []
    if asked:  # the diagnosis says nothing either way about what the model has no label for
        lines.append(f"- The question asks about \"{' '.join(asked)}\": the model has no "
                     "label for it, so this analysis does not say whether it is there or not "
                     "(the model's labels are quoted below).")
    elif in_scope and _beyond(intents, question):
        lines.append(NOT_IN_ANALYSIS)
    lines += [f"- {s['section'].capitalize()}: \"{s['text']}\"" for s in chosen]
    if "probability" in intents and in_scope and analysis["diagnosis"]["probability"] is not None:
        lines.append(_numbers(analysis))
    return Composed("study", "\n".join(lines), study_id=study_id)


def _quote(hit: Hit) -> str:
    if hit.snippet.strip() == hit.title.strip():
        return f"\"{hit.title}\""
    return f"{hit.title.rstrip('.')}: \"{hit.snippet}\""


# "What is X?", "Define X", "What does X mean?": X, the subject a definition is asked of
# (of at most SUBJECT_WORDS words: a longer one is not a term).
_SUBJECT = re.compile(r"(?:what\s+(?:is|are)|what's|define:?|explain|describe|tell\s+me\s+about|"
                      r"what\s+does)\s+", re.IGNORECASE)
SUBJECT_WORDS = 12
# Where a definition of X starts: the sentence's start or a bracket, then an article.
_DEFINED_AT = r"(?:^|[.!?;:\u2026]\s+|\()(?:(?:a|an|the)\s+)?"  # \u2026: a snippet's gap
# What follows X in a definition: "X is a ...", "X (XY) refers to ...", "X, a ...".
_DEFINES = (r"(?:\s*\([^()]{1,40}\))?(?:\s*,\s*(?:a|an|one)\s|\s+(?:is|are)\s+(?:a|an|the|one|"
            r"characteri[sz]ed\s+by|defined\s+as|described\s+as|known\s+as)\b|"
            r"\s+refers?\s+to\b)")


def definition_subject(question: str) -> str | None:
    """The words a definitional question asks about, lower case ("polycythemia" of "What is
    Polycythemia?"), or None."""
    text = question.strip()
    match = _SUBJECT.match(text)
    if match is None:
        return None
    words = plain(text[match.end():]).split()
    if words[:1] in (["a"], ["an"], ["the"]):
        words = words[1:]  # "What is the perineum?"; "What is the treatment of X?" gives
        # "treatment of x", which only a sentence defining that treatment matches
    if words[-1:] == ["mean"] and match[0].lower().startswith("what does"):
        words = words[:-1]  # "What does X mean?"
    return " ".join(words) if 0 < len(words) <= SUBJECT_WORDS else None


def _word(word: str) -> str:
    """A subject word as a definition may write it: plural or singular, possessive."""
    base = word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") \
        else word
    return re.escape(base) + r"(?:s|es)?(?:'s?)?"


def defines(subject: str, text: str) -> bool:
    """Whether ``text`` has a sentence that starts by defining ``subject`` ("Polycythemia is
    a ...", "A stent is a ...", "Alzheimer's disease, a ..."): the subject's words as they
    are, or plural, singular or possessive."""
    words = [w for i, w in enumerate(subject.split()) if not (w == "s" and i)]  # "alzheimer s"
    pattern = _DEFINED_AT + r"[\W_]+".join(_word(w) for w in words) + _DEFINES
    return re.search(pattern, american(text).lower()) is not None


# What a question asks about its subject ("What causes X?", "Symptoms of X"): words a
# passage about X need not hold to be quoted, though one that holds them is quoted first and
# alone. Each group's words say the same ("treated", "treatment", "therapy").
ASPECTS = ("cause causes caused causing etiology aetiology",
           "symptom symptoms sign signs feature features manifestation manifestations",
           "treat treats treated treating treatment treatments therapy therapies manage "
           "managed management",
           "prognosis prognostic outcome outcomes survival",
           "diagnose diagnosed diagnosis diagnostic",
           "risk risks",
           "complication complications",
           "side effect effects adverse toxicity toxic")
# A code asked for: "ICD-10-CM code", "ICD 10", "diagnosis code" ("genetic code" is not one).
_CODE = re.compile(r"\bicd(?:[\s-]*(?:9|10))?(?:[\s-]*cm)?(?:[\s-]+codes?)?\b|"
                   r"\b(?:diagnosis|diagnostic|billing)[\s-]+codes?\b|"
                   r"(?<=\bthe )codes?(?=\s+for\b)|(?<=\bits )codes?(?=\s+for\b)|"
                   r"(?<=\bwhat )codes?(?=\s+for\b)", re.IGNORECASE)
# The more common word of an aspect, searched beside the question's own ("Signs of X" finds
# what "Symptoms of X" finds: papers write "symptoms" more often).
_ASPECT_WORDS = {"sign": "symptoms", "signs": "symptoms", "feature": "symptoms",
                 "features": "symptoms", "manifestation": "symptoms",
                 "manifestations": "symptoms", "etiology": "causes", "aetiology": "causes",
                 "therapy": "treatment", "therapies": "treatment", "management": "treatment",
                 "outcome": "prognosis", "outcomes": "prognosis", "survival": "prognosis"}
_ASPECT_WORD = re.compile(r"\b(" + "|".join(_ASPECT_WORDS) + r")\b(?=\s+(?:of|in|for)\b)",
                          re.IGNORECASE)


def aspect_variant(question: str) -> str | None:
    """``question`` with its aspect words in their more common wording ("Signs of X?" ->
    "symptoms of X?"); None when it has none to change."""
    if not _ASPECT_WORD.search(question):
        return None
    return _ASPECT_WORD.sub(lambda m: _ASPECT_WORDS[m[1].lower()], question)


@lru_cache(maxsize=1)
def _aspect_groups() -> tuple[frozenset[str], ...]:
    """Each aspect group's terms, as the index writes them ("treat", "therapi", ...)."""
    return tuple(frozenset(terms(group)) for group in ASPECTS)


def _aspect_group(term: str) -> frozenset[str]:
    """Every term saying what ``term`` says; empty when it is no aspect."""
    return frozenset().union(*(g for g in _aspect_groups() if term in g))


# ICD-10-CM names tumours "neoplasms" ("Malignant neoplasm of brain", D33.2 "Benign
# neoplasm of brain, unspecified"): a code asked for a tumour is looked up so worded too.
_TUMOUR = re.compile(r"\btumou?r(s?)\b", re.IGNORECASE)


def icd_wording(question: str) -> str | None:
    """``question`` with "tumour" as ICD-10-CM words it ("neoplasm"); None without one."""
    if not _TUMOUR.search(question):
        return None
    return _TUMOUR.sub(lambda m: f"neoplasm{m[1]}", question)


def asks_code(question: str) -> bool:
    """Whether a question asks for a code ("What is the ICD-10 code for migraine?")."""
    return _CODE.search(question) is not None


def split_focus(focus: Sequence[str]) -> tuple[list[str], list[str]]:
    """(subject terms, aspect terms) of a question's focus terms: "What causes
    hydrocephalus?" -> (["hydrocephalus"], ["caus"]). A question of aspects alone keeps them
    as its subject."""
    asked = [t for t in focus if _aspect_group(t)]
    subject = [t for t in focus if t not in asked]
    return (subject, asked) if subject else (list(focus), [])


def speaks(hit: Hit, wants_code: bool, aspects: Sequence[str]) -> bool:
    """Whether a passage speaks to what the question asks of its subject: it is an
    ICD-10-CM entry when a code is asked for, and says each aspect in some word."""
    if wants_code and hit.source != "icd10cm":
        return False
    said = set(terms(f"{hit.title} {hit.snippet}"))
    return all(said & _aspect_group(t) for t in aspects)


def _answer_order(hits: Sequence[Hit], focus: Sequence[str], named: set[str],
                  subject: str | None, aspects: Sequence[str] = (),
                  wants_code: bool = False) -> list[Hit]:
    """The hits to quote, best first:

    1. a record the question names by its id;
    2. with aspects asked ("What causes X?"), a passage that speaks to them (holds their
       words; for a code, an ICD-10-CM entry), then an entry titled with the subject's terms
       alone;
    3. for "What is X?", X's own entry that defines it (an HPO term titled X);
    4. a definition: a passage with a sentence defining X, or an HPO term whose title holds
       the question's terms (every HPO entry is a definition);
    5. X's own code (the ICD-10-CM entry titled X; a paper titled X is not an entry);
    6. literature before other codes (a code's name such as "Carbuncle of perineum" does
       not say what the perineum is), unless a code is asked for; a passage whose title
       holds the question's terms first, then the search's order."""
    core = set(focus) - set(aspects)
    asked = bool(aspects) or wants_code
    def key(h: Hit) -> tuple[bool, ...]:
        code = h.source == "icd10cm"
        own = subject is not None and plain(h.title) == subject
        definition = subject is not None and (
            defines(subject, h.snippet) or (h.source == "hpo" and covers(focus, h.title)))
        return (h.doc_id not in named, asked and not speaks(h, wants_code, aspects),
                asked and set(terms(h.title)) != core,
                not (own and h.source == "hpo"), not definition, not (own and code),
                code and not wants_code, not covers(focus, h.title))

    return sorted(hits, key=key)


def key_term(wanted: Sequence[str], frequency: Callable[[str], int] | None) -> str | None:
    """The term a passage must hold beside most of ``wanted`` when it need not hold them all
    (``needed``): the rarest in the index (``frequency``: passages holding a term), the one
    that names the subject ("glioblastoma" of "5-year survival rate of glioblastoma", which
    a breast cancer survival figure holds all but); never a number. None when every term is
    needed, or without frequencies."""
    if frequency is None or needed(len(wanted)) >= len(wanted):
        return None
    indexed = [t for t in wanted if not t.isdigit() and frequency(t) > 0]
    return min(indexed, key=frequency) if indexed else None


def knowledge_answer(question: str, hits: Sequence[Hit], max_citations: int = 3,
                     frequency: Callable[[str], int] | None = None) -> Composed:
    """Quote the hits whose title and snippet hold the question's terms, or its subject's
    when it asks an aspect of it (with ``frequency``, the rarest of them always: ``key_term``),
    numbered, in the order of ``_answer_order``. A record the
    question names by its source id ("What is HP:0001250?") is quoted first, whatever its
    words. When the question asks an aspect of its subject ("What causes X?") and no quoted
    passage holds it, the answer says so before quoting what was found on the subject."""
    wants_code = asks_code(question)
    focus = focus_terms(_CODE.sub(" ", question))  # "ICD-10-CM code" is no subject
    named = set(named_documents(question))
    if not focus and not named:
        return refusal(f"{REFUSAL} The question names nothing to look up.")
    subject = definition_subject(question)
    # "What is Magnetic Resonance Imaging?" and "What is a diagnosis of exclusion?" ask what
    # X is, whatever X's words; "What is the treatment of X?" asks an aspect of X.
    the = _WHAT_IS_THE.match(question) is not None
    whole = subject is not None and not wants_code and not (
        the and _aspect_group(next(iter(terms(subject)), "")))
    subject_terms, aspects = (list(focus), []) if whole else split_focus(focus)
    if not whole and not named and all(_aspect_group(t) for t in focus):
        return refusal(f"{REFUSAL} The question asks \"{question.strip()}\" of no condition "
                       "or term: name it (\"What causes hydrocephalus?\"). Each question is "
                       "looked up on its own words.")
    # Asking an aspect of a subject, a passage holds the subject ("Is headache a symptom of
    # brain tumour?" quoted "symptoms" in the brain of a tumour, without "headache").
    wanted = subject_terms if aspects or wants_code else focus
    key = key_term(wanted, frequency)
    relevant = [h for h in hits if h.doc_id in named or (
        covers(wanted, text := f"{h.title} {h.snippet}") and (key is None or key in terms(text)))]
    relevant = _answer_order(relevant, focus, named, subject, aspects, wants_code)
    lines = ["From the literature:"]
    if aspects or wants_code:
        answering = [h for h in relevant if h.doc_id in named or speaks(h, wants_code, aspects)]
        if answering:  # only what speaks to the question, not the subject's other passages
            relevant = answering
        elif relevant:
            said = [w for w in re.findall(r"[A-Za-z]+", _CODE.sub(" ", question))
                    if set(terms(w)) & set(aspects)] + (["ICD-10-CM code"] if wants_code else [])
            lines = [f"No passage found speaks to \"{' '.join(said)}\" as such; from the "
                     "literature on the rest of the question:"]
    relevant = relevant[:max_citations]
    if not relevant:
        return refusal(f"{REFUSAL} No retrieved passage speaks to it.")
    citations = tuple(Citation(n, h.id, h.doc_id, h.title, _quote(h), h.citation, h.url)
                      for n, h in enumerate(relevant, start=1))
    lines += [f"[{c.number}] {c.quote}" for c in citations]
    lines += ["", "Sources:"]
    lines += [f"[{c.number}] {c.citation} {c.url}" for c in citations]
    return Composed("knowledge", "\n".join(lines), citations)


def refusal(text: str = REFUSAL) -> Composed:
    return Composed("refusal", text)


# English words nearly every question of three words or more holds one of.
_ENGLISH = frozenset([
    "a", "an", "the", "of", "in", "on", "to", "for", "and", "or", "is", "are", "was", "were",
    "be", "do", "does", "did", "can", "could", "would", "should", "will", "what", "which",
    "who", "whom", "whose", "how", "why", "when", "where", "there", "this", "that", "these",
    "those", "it", "its", "i", "my", "me", "you", "your", "we", "our", "any", "some", "with",
    "about", "from", "by", "at", "as", "not", "no", "has", "have", "had", "tell", "explain",
    "define", "describe", "please"])
ENGLISH_ONLY = ("Questions are read in English: the analysis, the literature indexed here and "
                "its search are in English.")


def not_english(question: str) -> bool:
    """Whether a question holds none of the English words nearly every question does, has
    letters English has not, and runs to three words or more ("Qu'est-ce que
    l'hydrocéphalie ?") or is written mostly in such letters (Chinese, Arabic); "Dravet
    syndrome" and "Sjögren syndrome" are terms, not another language."""
    words = re.findall(r"[^\W\d_]+", question.lower())
    if not words or _ENGLISH.intersection(words):
        return False
    letters = "".join(words)
    foreign = sum(not c.isascii() for c in letters)  # "Hydrocephalus symptoms treatment": 0
    return bool(foreign) and (len(words) >= 3 or foreign > 0.3 * len(letters))


def head() -> str:
    """What every reply starts with: known before the answer is composed."""
    return f"{NOTICE}\n\n"


def tail(composed: Composed, conversation_id: str) -> str:
    """The rest of the reply: the answer, then the reference a follow-up is found by."""
    return f"{composed.body}\n\n(conversation {conversation_id})"


def render(composed: Composed, conversation_id: str) -> str:
    return head() + tail(composed, conversation_id)
