"""Report drafting.

For studies with no report corpus (the Br35H brain MRI model has none) the report is
structured and grounded: composed only from the vision model's outputs and measurements
of the image, every sentence naming its sources (``structured``), and checked against
the diagnosis by a negation-aware reading of its text (``check``).
"""

from assistant.report.check import Verdict, check_report, text_stance
from assistant.report.context import SEXES, Context
from assistant.report.evidence import (
    FrameGeometry,
    HeatLocation,
    ImageQuality,
    frame_geometry,
    head_mask,
    heat_location,
    heat_on_frame,
    image_quality,
)
from assistant.report.structured import (
    DRAFT_NOTICE,
    DRAFTER,
    DRAFTER_VERSION,
    SOURCES,
    Evidence,
    ModelInfo,
    Report,
    Sentence,
    draft_report,
)

__all__ = [
    "DRAFTER",
    "DRAFTER_VERSION",
    "DRAFT_NOTICE",
    "SEXES",
    "SOURCES",
    "Context",
    "Evidence",
    "FrameGeometry",
    "HeatLocation",
    "ImageQuality",
    "ModelInfo",
    "Report",
    "Sentence",
    "Verdict",
    "check_report",
    "draft_report",
    "frame_geometry",
    "head_mask",
    "heat_location",
    "heat_on_frame",
    "image_quality",
    "text_stance",
]
