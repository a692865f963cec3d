"""Does a report contradict the diagnosis it was drafted from? A negation-aware reading.

The checker reads only the report's text (findings and impression), never the sentences'
sources, so it judges what a reader would read. Each mention of a tumour term is

- *neutral* when it is the object of a probability phrase ("probability of tumour"),
- *affirmed* when an uncertainty-keeping double negative follows ("not excluded"),
- *negated* when a negation cue comes before it in its clause ("no", "without", "negative
  for", ...) or a negating phrase follows it, auxiliaries skipped ("[is] absent", "[was]
  not seen", ...), in the manner of NegEx (Chapman et al., 2001), clauses being cut at
  ; : , ( ) and "but",
- *affirmed* otherwise.

A text's stance is "affirmed", "negated", "mixed" (both) or "none" (no non-neutral
mention). The expected stance is "affirmed" for the positive label, "negated" for the
negative one and "none" when the image was out of scope; the impression must carry the
expected stance by itself, and every probability the text quotes must be the diagnosis's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from assistant.report.structured import Report
from assistant.vision.infer import Diagnosis

Stance = Literal["affirmed", "negated", "mixed", "none"]

TERM = re.compile(r"^(tumou?rs?|neoplasms?|neoplastic|mass(es)?|lesions?|gliomas?|"
                  r"meningiomas?|glioblastomas?|metastas[ie]s|malignan(cy|cies|t)|cancers?)$")
PRE_NEGATIONS = ("no", "not", "without", "absence of", "absent", "negative for", "free of",
                 "no evidence of", "no sign of", "no signs of", "rules out", "ruled out",
                 "excludes", "never", "nor", "neither", "cannot see", "does not show",
                 "did not show", "do not show")
POST_NEGATIONS = ("absent", "not seen", "not identified", "not detected", "not present",
                  "not visible", "not evident", "not suggested", "ruled out", "excluded")
POST_AFFIRMATIONS = ("not excluded", "not ruled out", "cannot be excluded",
                     "cannot be ruled out")
AUXILIARIES = frozenset({"is", "are", "was", "were", "be", "been", "has", "have", "had"})
PSEUDO = ("probability of", "likelihood of", "chance of", "risk of", "odds of")
PRE_WINDOW = 6  # tokens before a term searched for a negation cue
POST_WINDOW = 4  # tokens after it

_CLAUSE = re.compile(r"[;:,()]|\bbut\b|\bhowever\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")
_PROBABILITY = re.compile(r"probability(?: of [a-z]+)? ([<>]?\d\.\d+)")


def _contains(tokens: list[str], phrases: tuple[str, ...]) -> bool:
    text = f" {' '.join(tokens)} "
    return any(f" {p} " in text for p in phrases)


def _ends_with(tokens: list[str], phrases: tuple[str, ...]) -> bool:
    text = f" {' '.join(tokens)}"
    return any(text.endswith(f" {p}") for p in phrases)


def _starts_with(tokens: list[str], phrases: tuple[str, ...]) -> bool:
    text = f"{' '.join(tokens)} "
    return any(text.startswith(f"{p} ") for p in phrases)


def _mention_stance(before: list[str], after: list[str]) -> Stance:
    """Stance of one term mention from the tokens before and after it in its clause."""
    if _ends_with(before, PSEUDO):
        return "none"
    while after and after[0] in AUXILIARIES:  # "is absent", "was ruled out"
        after = after[1:]
    if _starts_with(after[:POST_WINDOW], POST_AFFIRMATIONS):
        return "affirmed"
    if _contains(before[-PRE_WINDOW:], PRE_NEGATIONS):
        return "negated"
    if _starts_with(after[:POST_WINDOW], POST_NEGATIONS):
        return "negated"
    return "affirmed"


def _combine(stances: list[Stance]) -> Stance:
    found = {s for s in stances if s != "none"}
    if not found:
        return "none"
    return "mixed" if len(found) > 1 else found.pop()


def text_stance(text: str) -> Stance:
    """The stance of ``text`` towards a tumour: what its mentions, taken together, say."""
    stances: list[Stance] = []
    for sentence in _SENTENCE.split(text.lower()):
        for clause in _CLAUSE.split(sentence):
            tokens = _TOKEN.findall(clause)
            stances += [_mention_stance(tokens[:i], tokens[i + 1:])
                        for i, token in enumerate(tokens) if TERM.match(token)]
    return _combine(stances)


def expected_stance(diagnosis: Diagnosis, positive: str = "tumour") -> Stance:
    if not diagnosis.in_scope or diagnosis.label is None:
        return "none"
    return "affirmed" if diagnosis.label == positive else "negated"


def _rounds_to(value: float, quoted: str) -> bool:
    """Whether ``quoted`` ("0.93", "<0.01", ">0.99") states ``value`` (rounded to as many
    decimals, or bounded)."""
    if quoted[0] in "<>":
        bound = float(quoted[1:])
        return value < bound if quoted[0] == "<" else value > bound
    decimals = len(quoted.split(".")[1])
    return abs(float(quoted) - value) <= 0.5 * 10.0 ** -decimals + 1e-9


@dataclass(frozen=True)
class Verdict:
    ok: bool
    expected: Stance
    found: Stance  # of findings and impression together
    impression: Stance
    problems: tuple[str, ...]


def check_report(report: Report, diagnosis: Diagnosis, positive: str = "tumour") -> Verdict:
    """Whether ``report`` says what ``diagnosis`` says, read from its text alone."""
    expected = expected_stance(diagnosis, positive)
    body = f"{report.findings} {report.impression}"
    found, impression = text_stance(body), text_stance(report.impression)
    problems = []
    if found != expected:
        problems.append(f"findings and impression read {found}, the diagnosis is {expected}")
    if impression != expected:
        problems.append(f"the impression reads {impression}, the diagnosis is {expected}")
    quoted = _PROBABILITY.findall(body.lower())
    if diagnosis.probability is None and quoted:
        problems.append(f"probabilities {quoted} quoted for an image without a diagnosis")
    elif diagnosis.probability is not None:
        wrong = [q for q in quoted if not _rounds_to(diagnosis.probability, q)]
        if wrong:
            problems.append(f"quoted probabilities {wrong} differ from "
                            f"{diagnosis.probability:.4f}")
    return Verdict(not problems, expected, found, impression, tuple(problems))
