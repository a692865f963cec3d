"""Completing a drafted report against its findings, sentence by sentence.

A decoded report can leave out a finding it was given (the decoder writes the common
wording of a study like this one, and a rare finding's sentence loses to it) or assert
one it was not given. ``complete`` mends both, with the negation-aware matcher
(``findings.asserted``):

- a sentence that asserts a finding class the study was not given, or denies one it was
  given ("no pleural effusion", or a normal statement such as "heart size is within normal
  limits" for a study with cardiomegaly), is dropped;
- for each finding class given and not asserted, one sentence is borrowed from the
  nearest training reports (``neighbours``) whose codes carry the same MeSH term, and
  added at the end. A sentence is borrowed only when it asserts that class and nothing the
  study was not given, and says nothing the study's codes cannot back: one of the study's
  codes of that class must back every location, extent, descriptor or diagnosis word in it
  (``GUARDS``: "left", "upper", "basilar", "mild", "patchy", "aortic", "pneumonia", ...)
  by its term or modifiers; every other word must be neutral (``NEUTRAL``: "there", "is",
  "lungs", "hemidiaphragm", ...) or part of the phrase of a finding it asserts; it has no
  number, comparison with an earlier study, hedge, negation or normal claim (``BANNED``),
  and at most ``MAX_WORDS`` words. Devices and obscured structures are never borrowed, nor
  a sentence that names a device: a code names no device type and no tip position.

A finding for which no such sentence exists stays missing (the service's answer says so).
Every borrowed sentence is returned with the training report it came from, so the service
can show its source. The matcher is the same one that scores findings consistency, so a
completed report's consistency is partly the matcher agreeing with itself: the README's
figures say so, and give the scores without completion beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from assistant.report.decoder.data import Finding
from assistant.report.decoder.findings import (
    NORMAL_CLASS,
    asserted,
    code_classes,
    finding_class,
    mentions,
    phrase_spans,
)
from assistant.report.decoder.neighbours import ReportNeighbours

POOL = 50  # nearest training reports searched first for a sentence (then all the others)
MAX_WORDS = 15
# Devices: a code names no device type or tip position. An obscured structure: the code
# names the structure, the sentences name it in words no guard reads.
NOT_BORROWED = frozenset({"device", "obscured structure"})
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
_WORD = re.compile(r"[a-z]+")

# A word in a borrowed sentence -> what one of the study's codes for the finding must hold
# among its term and modifiers ("Opacity/lung/base/left" backs "left basilar opacity").
GUARDS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), needs) for pattern, needs in (
        (r"\bleft\b", ("left",)), (r"\bright\b", ("right",)),
        (r"\bbi(lateral|basil\w*|apical)\b|\bboth\b", ("bilateral",)),
        (r"\bbibasil", ("base",)), (r"\bbiapical", ("apex",)),
        (r"\bapices\b|\bbases\b", ("bilateral",)),  # both of them
        (r"\bupper\b", ("upper lobe",)), (r"\blower\b", ("lower lobe",)),
        (r"\bbas(e|es|al|ilar)\b", ("base",)), (r"\bmid", ("middle lobe",)),
        (r"\blingul", ("lingula",)), (r"\bap(ex|ices|ical)\b", ("apex",)),
        (r"\bhil(ar|um)|perihilar", ("hilum",)), (r"retrocardiac", ("retrocardiac",)),
        (r"\bmild|\bminimal", ("mild",)), (r"\bmoderate", ("moderate",)),
        (r"\bsevere|\bmarked", ("severe",)), (r"\bsmall\b", ("small",)),
        (r"\blarge\b", ("large",)), (r"\bborderline", ("borderline",)),
        (r"\bmultiple|\bseveral|\bscattered|\bnumerous", ("multiple", "scattered")),
        (r"\bhealed", ("healed",)), (r"\bchronic", ("chronic",)), (r"\bdiffuse", ("diffuse",)),
        (r"\binterstitial", ("interstitial",)), (r"\bpatchy", ("patchy",)),
        (r"\bstreaky|\blinear|\bbandlike", ("streaky",)), (r"\bfocal", ("focal",)),
        (r"\bround|\bnodular", ("round",)), (r"\birregular", ("irregular",)),
        (r"\breticul", ("reticular",)), (r"\banterior", ("anterior",)),
        (r"\bposterior", ("posterior",)), (r"\baort", ("aorta",)), (r"\bribs?\b", ("ribs",)),
        (r"\bclavic", ("clavicle",)), (r"\bhumer|\bshoulder", ("humerus", "shoulder")),
        (r"\bspin|\bvertebra", ("spine", "vertebrae")), (r"\bthoracic spine", ("thoracic",)),
        (r"\blumbar", ("lumbar",)), (r"\bcervical", ("cervical",)),
        (r"\blymph|\bnodes?\b", ("lymph nodes",)), (r"\bmediastin", ("mediastinum",)),
        (r"paratracheal", ("paratracheal",)), (r"\bbreast", ("breast",)),
        (r"\babdom|quadrant", ("abdomen",)), (r"\bpleura\b", ("pleura",)),
        (r"costophrenic", ("costophrenic",)), (r"\btrache", ("trachea",)),
        (r"\blungs?\b|\bpulmonary", ("lung", "pulmonary")), (r"\bcentral", ("central",)),
        (r"\bvascular|\bvessel", ("aorta", "vessels")), (r"\bmultilobar", ("multilobar",)),
        (r"\bbronchovascular|\bcrowding", ("bronchovascular",)),
        (r"\bflatten", ("flattened",)), (r"\belevat", ("elevated",)),
        (r"\beventrat", ("eventration",)), (r"\bmass", ("mass",)),
        (r"aneurysm", ("aneurysm",)), (r"\bdilat|ectasia|ectatic", ("enlarged", "dilat")),
        # a diagnosis beside the finding class must be one of the codes' terms
        (r"pneumonia", ("pneumonia",)), (r"\bair ?space|\balveolar|\bconsolidat",
                                         ("airspace", "consolidation", "pneumonia")),
        (r"\binfiltrat", ("infiltrate",)), (r"\bedema", ("edema",)),
        (r"\bemphysem", ("emphysema",)), (r"\bcopd", ("obstructive",)),
        (r"\bgranulom", ("granulom",)), (r"\batherosclero", ("atherosclerosis",)),
        (r"\bheart failure|\bchf\b", ("heart failure",)), (r"fibros|fibrotic", ("fibrosis",)),
        (r"histoplasm", ("histoplasm",)), (r"\bdish\b", ("hyperostosis",)),
        (r"hypertension", ("hypertension",)), (r"\bcalcifi", ("calcified", "calcinosis")),
    ))
# Words a borrowed sentence may hold beside the words of its finding's phrase and of the
# guards its codes back: anything else ("trace", "residual", "aspiration", "scapula",
# "lateral") and the sentence is not borrowed.
_NEUTRAL_WORDS = """
a an the there is are be of in at on and with to both also some its their this
seen noted present identified demonstrated visualized visible appears appear appearing
lung lungs pulmonary chest thorax thoracic heart cardiac silhouette size shadow contour
contours hemidiaphragm hemidiaphragms diaphragm diaphragms spine vertebral bodies aorta
lobe lobes zone zones field fields segment changes disease process findings finding
bone bones bony osseous structures lymph node nodes levels level
"""
NEUTRAL = frozenset(_NEUTRAL_WORDS.split())
BANNED = re.compile(
    r"\d|xxxx|\b(one|two|three|four|five|six|seven|eight|nine|ten|single|few|subcentimeter"
    r"|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh"
    r"|twelfth|stable|unchanged|again|interval|prior|previous\w*|new|since|before|increas\w*"
    r"|decreas\w*|improv\w*|wors\w*|redemonstrat\w*|persist\w*|compar\w*|similar|change"
    r"|remain\w*|slightly|smaller|larger|overall|tip|now|still|known|history|post|acute"
    r"|suggest\w*|may|could|might|possibl\w*|probabl\w*|likely|versus|vs|if|suspect\w*"
    r"|concern\w*|represent\w*|reflect\w*|question\w*|metasta\w*|malignan\w*|neoplas\w*"
    r"|cancer|tumou?r|lymphoma|infect\w*|tubercul\w*|sarcoid\w*|pneumonitis|cannot"
    # nothing said of what is absent or normal: the rest of the report says that
    r"|no|not|without|negative|free|clear|otherwise|normal|unremarkable)\b")


@dataclass(frozen=True)
class Borrowed:
    sentence: str
    finding: str  # the finding class it states
    source_uid: str  # the training report it is taken from

    def to_dict(self) -> dict[str, str]:
        return {"sentence": self.sentence, "finding": self.finding,
                "source_uid": self.source_uid}


@dataclass(frozen=True)
class Completed:
    text: str
    borrowed: tuple[Borrowed, ...] = ()
    dropped: tuple[str, ...] = ()  # sentences asserting a finding not given, or denying one


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text.strip())) if s]


# A numbered list's mark standing alone ("1." of "1. No acute disease. 2. ..."): no sentence.
_LIST_MARK = re.compile(r"\(?\d{1,2}[.)]")


def _items(text: str) -> list[str]:
    """The decoded text's sentences, each list mark kept with the sentence it numbers (so
    that dropping a sentence drops its number too, and never leaves "1. 2.")."""
    out: list[str] = []
    mark = ""
    for part in sentences(text):
        if _LIST_MARK.fullmatch(part):
            mark += part + " "
        else:
            out.append(mark + part)
            mark = ""
    if mark and out:
        out[-1] += " " + mark.strip()
    return out or sentences(text)


def _join(parts: Sequence[str]) -> str:
    """Sentences as one text, each ended, so that a sentence's negation never reaches the
    next one."""
    ended = (p.rstrip(" ,;:") for p in parts)
    return " ".join(p if p[-1] in ".!?" else p + "." for p in ended if p)


def _covered(low: str, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether every word of ``low`` is neutral or overlaps one of ``spans``."""
    return all(m.group() in NEUTRAL or any(a < m.end() and m.start() < b for a, b in spans)
               for m in _WORD.finditer(low))


@lru_cache(maxsize=1 << 15)
def _screened(sentence: str) -> frozenset[str] | None:
    """The finding classes ``sentence`` asserts where it may be borrowed for some study at
    all: at most ``MAX_WORDS`` words, nothing ``BANNED``, no device or obscured structure
    asserted; None where it may not. Cached: completion reads the same training sentences
    for every study."""
    low = sentence.lower()
    if len(low.split()) > MAX_WORDS or BANNED.search(low):
        return None
    says = frozenset(asserted(sentence))
    return None if says & NOT_BORROWED else says


def backed(sentence: str, cls: str, findings: Sequence[Finding], given: set[str]) -> bool:
    """Whether ``sentence`` may be borrowed to state ``cls`` for a study with these
    findings (``given``: their classes): one of the study's codes for ``cls`` backs every
    guard word in it, and every other word is neutral or part of a phrase of a finding the
    sentence asserts."""
    says = _screened(sentence)
    if cls in NOT_BORROWED or says is None or cls not in says or not says <= given:
        return False
    low = sentence.lower()
    hits = [(m.span(), needs) for pattern, needs in GUARDS for m in pattern.finditer(low)]
    codes = [" ".join((f.term.lower(), *f.modifiers)) for f in findings
             if finding_class(f) == cls]
    if not any(all(any(need in code for need in needs) for _, needs in hits)
               for code in codes):
        return False
    spans = [span for span, _ in hits] + phrase_spans(low, says)
    return _covered(low, spans)


def _further(neighbours: ReportNeighbours, findings: Sequence[Finding], terms: frozenset[str],
             seen: set[str]) -> Iterator[tuple[str, str]]:
    """The training reports carrying ``terms`` beyond those ``seen``, ranked only when the
    nearest have no backed sentence (a generator: ``carrying`` runs when it is reached)."""
    yield from ((t, uid) for t, uid in neighbours.carrying(findings, terms) if t not in seen)


def complete(text: str, findings: Sequence[Finding], neighbours: ReportNeighbours,
             indication: str | None = None, pool: int = POOL) -> Completed:
    """``text`` without its sentences that assert a finding not given or deny one given,
    and with one borrowed sentence for each given finding it does not assert, where one is
    backed. When every sentence asserts something not given, those that deny nothing given
    are kept (the service names what they add); when every sentence denies a given
    finding, nothing can be mended and ``text`` is returned as it is."""
    given = code_classes(findings)
    findings_given = given - {NORMAL_CLASS}
    parts = _items(text)
    said = [mentions(s) for s in parts]
    keep = [not (found - given or denied & findings_given) for found, denied in said]
    if not any(keep):
        keep = [not denied & findings_given for _, denied in said]
        if not any(keep):
            return Completed(text)
    # no kept sentence denies a given finding, so nothing borrowed contradicts one
    stated = {c for (found, _), k in zip(said, keep, strict=True) if k for c in found}
    borrowed: list[Borrowed] = []
    missing = sorted(findings_given - stated - NOT_BORROWED)
    if missing:
        nearest = neighbours.nearest(findings, pool, indication=indication)
        for cls in missing:
            if cls in stated:
                continue  # a sentence borrowed for another class states this one too
            terms = frozenset(f.term.lower() for f in findings if finding_class(f) == cls)
            reports = chain(((t, neighbours.source(t, terms)) for t in nearest),
                            _further(neighbours, findings, terms, set(nearest)))
            pick = next(((s, uid) for t, uid in reports if uid is not None
                         for s in sentences(t) if backed(s, cls, findings, given)), None)
            if pick is not None:
                borrowed.append(Borrowed(pick[0], cls, pick[1]))
                stated |= asserted(pick[0])
    if all(keep) and not borrowed:
        return Completed(text)
    kept = [s for s, k in zip(parts, keep, strict=True) if k]
    dropped = tuple(s for s, k in zip(parts, keep, strict=True) if not k)
    completed = _join([*kept, *(b.sentence for b in borrowed)])
    if not _WORD.search(completed.lower()):
        return Completed(text)  # nothing but list marks would be left
    return Completed(completed, tuple(borrowed), dropped)
