"""Tiny decoder configs and synthetic examples for the decoder's unit tests (the real
IU X-ray reports are used only by tests marked ``data``)."""

from __future__ import annotations

import pytest
import torch

from assistant.report.decoder.bundle import ReportBundle, collate_conditions
from assistant.report.decoder.data import Finding
from assistant.report.decoder.model import DecoderConfig, ReportDecoder
from assistant.report.decoder.train import Example, build_vocabs
from assistant.report.decoder.vocab import encode_condition

SYNTHETIC = [
    (("normal",), "The heart is normal in size. The lungs are clear. No acute disease."),
    (("Cardiomegaly/mild",), "The heart is mildly enlarged. The lungs are clear. "
                             "Mild cardiomegaly."),
    (("Pleural Effusion/left",), "The heart is normal in size. There is a left pleural "
                                 "effusion. Small effusion."),
    (("Cardiomegaly/mild", "Pleural Effusion/left"),
     "The heart is mildly enlarged. There is a left pleural effusion. Cardiomegaly and "
     "effusion."),
]


def synthetic_examples(repeat: int = 8) -> list[Example]:
    return [Example(tuple(Finding.from_code(c) for c in codes), "cough", text)
            for _ in range(repeat) for codes, text in SYNTHETIC]


@pytest.fixture
def tiny_bundle() -> ReportBundle:
    torch.manual_seed(0)
    text, cond = build_vocabs(synthetic_examples(1), min_count=1)
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=2, max_len=40, dropout=0.0)
    return ReportBundle(ReportDecoder(cfg).eval(), text, cond)


def condition_batch(bundle: ReportBundle, n: int = 3) -> dict[str, torch.Tensor]:
    examples = synthetic_examples(1)[:n]
    return collate_conditions([encode_condition(bundle.cond_vocab, e.findings, e.indication)
                               for e in examples])
