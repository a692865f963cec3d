import random

import torch

from assistant.report.decoder.bundle import Drafter, load_report_bundle
from assistant.report.decoder.data import Finding
from assistant.report.decoder.generate import DecodeConfig
from assistant.report.decoder.select import most_consistent
from assistant.report.decoder.train import TrainReportConfig, length_batches, train_decoder

from .conftest import SYNTHETIC, synthetic_examples

TINY = TrainReportConfig(width=64, heads=2, encoder_layers=1, decoder_layers=2, dropout=0.0,
                         epochs=60, batch_size=8, lr=3e-3, warmup_steps=5, patience=40,
                         label_smoothing=0.0, drop_indication=0.0, min_count=1, max_len=40)


def test_length_batches_cover_every_example_once() -> None:
    examples = synthetic_examples(5)
    batches = length_batches(examples, 6, random.Random(0))
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
    assert all(len(b) <= 6 for b in batches)


def test_training_learns_the_reports_and_the_checkpoint_round_trips(tmp_path) -> None:
    bundle = train_decoder(synthetic_examples(), synthetic_examples(1), TINY,
                           {"name": "tiny"}, DecodeConfig(beam=2, max_tokens=30),
                           progress=False)
    history = bundle.provenance["history"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    drafter = Drafter(bundle)
    conds = [tuple(Finding.from_code(c) for c in codes) for codes, _ in SYNTHETIC]
    texts = drafter.draft(conds, ["cough"] * len(conds))
    assert texts == [text for _, text in SYNTHETIC]
    sha = bundle.save(tmp_path / "r.pt")
    loaded = load_report_bundle(tmp_path / "r.pt")
    assert loaded.sha256 == sha and loaded.provenance["name"] == "tiny"
    assert Drafter(loaded).draft(conds, ["cough"] * len(conds)) == texts


def test_bfloat16_steps_learn_the_reports_and_keep_float32_weights() -> None:
    from dataclasses import replace

    bundle = train_decoder(synthetic_examples(), synthetic_examples(1),
                           replace(TINY, bf16=True), {"name": "tiny-bf16"},
                           DecodeConfig(beam=2, max_tokens=30), progress=False)
    history = bundle.provenance["history"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    assert bundle.provenance["train_config"]["bf16"] is True
    assert {p.dtype for p in bundle.model.parameters()} == {torch.float32}
    conds = [tuple(Finding.from_code(c) for c in codes) for codes, _ in SYNTHETIC]
    assert Drafter(bundle).draft(conds, ["cough"] * len(conds)) == [
        text for _, text in SYNTHETIC]


def test_most_consistent_prefers_the_text_that_agrees_with_the_codes() -> None:
    codes = [Finding.from_code("Pleural Effusion/left")]
    beams = ["No effusion. Lungs are clear.", "Small left pleural effusion."]
    assert most_consistent(beams, codes) == beams[1]
    assert most_consistent(beams[::-1], codes) == beams[1]
    same = ["Left effusion.", "Effusion on the left."]
    assert most_consistent(same, codes) == same[0]  # ties keep the beam order


def test_a_corrupt_checkpoint_is_refused(tmp_path) -> None:
    import pytest

    from assistant.report.decoder.bundle import ReportCheckpointError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ReportCheckpointError, match="not a readable"):
        load_report_bundle(bad)
    torch.save({"format": "other"}, bad)
    with pytest.raises(ReportCheckpointError, match="is not a"):
        load_report_bundle(bad)
