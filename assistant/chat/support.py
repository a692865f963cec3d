"""Whether a text supports a claim, by containment or by term overlap; the terms a question
is about. Pure functions over strings, shared by the answer composition (does a retrieved
passage speak to the question?) and the citation-support measure
(``scripts/eval_chat_citations.py``: is each cited sentence's claim in the passage it cites?).

Terms are the retrieval index's own (``tokenize_terms``: lower case, stop words out,
Snowball stems), after British spellings are folded to the American ones MEDLINE uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from assistant.retrieval.lexical import tokenize_terms

# A claim whose content terms are at least this share present in the evidence is supported
# by overlap even when it is not contained word for word (e.g. quoted with an ellipsis).
OVERLAP_SUPPORT = 0.9

# British -> American spellings (MEDLINE is indexed in American English).
_SPELLINGS = {"tumour": "tumor", "haemorrhag": "hemorrhag", "haemat": "hemat", "oedema": "edema",
              "anaem": "anem", "ischaem": "ischem", "leukaem": "leukem", "paediatr": "pediatr",
              "oesophag": "esophag", "foetal": "fetal", "foetus": "fetus", "haemo": "hemo",
              "oestrogen": "estrogen", "orthopaed": "orthoped", "diarrhoea": "diarrhea"}
_SPELLING = re.compile(r"\b(" + "|".join(sorted(_SPELLINGS, key=len, reverse=True)) + ")",
                       re.IGNORECASE)

# Words that make a question a question, not what it is about.
QUESTION_WORDS = ("what which who whom whose how why when where tell me about explain "
                  "define definition describe description does do did mean meaning means "
                  "can could would should know please give list overview term terms i my "
                  "you your us our there is are was were the a an of hello hey thanks thank "
                  "like want wanted wonder wondering question quick need d ll m ve")


# Latin names that keep their "ae" in American English too (MEDLINE and the HPO write
# "Haemophilus influenzae" and "Schistosoma haematobium" 105 and 23 times, "hemo-" 3 and 0).
_TAXA = re.compile(r"\bhaem(?:ophil|atobi|onch|oproteus|adipsa|aphysalis)", re.IGNORECASE)


def american(text: str) -> str:
    """``text`` with the British spellings of ``_SPELLINGS`` folded to American ones (what
    the chat searches for, and how it compares words); the Latin names of ``_TAXA`` kept."""
    kept = {m.start() for m in _TAXA.finditer(text)}
    return _SPELLING.sub(lambda m: m[0] if m.start() in kept
                         else _SPELLINGS[m.group(1).lower()], text)


def terms(text: str) -> list[str]:
    """The index's terms of ``text`` (American spelling), in order."""
    return tokenize_terms(american(text))


@lru_cache(maxsize=1)
def _question_terms() -> frozenset[str]:
    return frozenset(tokenize_terms(QUESTION_WORDS))


def focus_terms(question: str) -> list[str]:
    """The distinct terms a question is about: its terms less the question words."""
    seen: dict[str, None] = {}
    for term in terms(question):
        if term not in _question_terms():
            seen.setdefault(term, None)
    return list(seen)


def needed(focus_count: int) -> int:
    """How many of a question's focus terms a passage must hold to speak to it: all of up
    to three, three quarters (rounded up) of more."""
    return focus_count if focus_count <= 3 else math.ceil(0.75 * focus_count)


def covers(focus: Iterable[str], text: str) -> bool:
    wanted = set(focus)
    return bool(wanted) and len(wanted & set(terms(text))) >= needed(len(wanted))


def plain(text: str) -> str:
    """Lower case, American spelling, only letters and digits separated by single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", american(text).lower()))


@dataclass(frozen=True)
class Support:
    contained: bool  # the claim's words appear in the evidence in order, verbatim
    overlap: float  # share of the claim's distinct terms found in the evidence

    @property
    def supported(self) -> bool:
        return self.contained or self.overlap >= OVERLAP_SUPPORT


def support(claim: str, evidence: str) -> Support:
    """How far ``evidence`` supports ``claim`` (case, punctuation and spacing ignored)."""
    plain_claim = plain(claim)
    contained = bool(plain_claim) and plain_claim in plain(evidence)
    claim_terms = set(terms(claim))
    if not claim_terms:
        return Support(contained, 1.0 if contained else 0.0)
    overlap = len(claim_terms & set(terms(evidence))) / len(claim_terms)
    return Support(contained, overlap)
