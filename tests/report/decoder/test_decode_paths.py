"""The decoding fast paths give what the plain paths give: a study's beams sharing its
memory entry, caches reordered with room for the next position, the transposed-weight
linear layers, and batches drafted side by side on threads."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
import torch.nn.functional as F

from assistant.report.decoder.bundle import Drafter, ReportBundle, collate_conditions
from assistant.report.decoder.generate import DecodeConfig, _reorder
from assistant.report.decoder.model import DecoderConfig, ReportDecoder, StepLinear
from assistant.report.decoder.neighbours import ReportNeighbours

from .test_retrieval import TRAIN, _vocabs, codes

STUDIES = ("normal", "Cardiomegaly/mild", "Cardiomegaly/severe", "Pleural Effusion/left",
           "Cardiomegaly/mild", "normal", "Opacity/lung/base/left")


def _drafter() -> Drafter:
    text, cond = _vocabs()
    torch.manual_seed(0)
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=2, max_len=40, dropout=0.0, retrieved=2,
                        retrieved_len=24, copy=True)
    return Drafter(ReportBundle(ReportDecoder(cfg).eval(), text, cond),
                   ReportNeighbours(TRAIN))


def test_beams_sharing_a_memory_entry_step_as_the_plain_full_pass() -> None:
    drafter, k, steps = _drafter(), 3, 6
    model = drafter.bundle.model
    conds = collate_conditions([drafter.condition(codes(c), "cough") for c in STUDIES[:2]])
    torch.manual_seed(1)
    tokens = torch.randint(4, model.config.text_vocab, (2 * k, steps))
    memory = model.encode(conds)
    # The plain path: every row holds its own copy of its study's memory, gradients on.
    full, _ = model.decode(tokens, memory.select(torch.arange(2).repeat_interleave(k)))
    with torch.inference_mode():
        shared = memory.shared(k)  # what beam search does: k rows read one entry
        caches, out = None, []
        for t in range(steps):
            logits, caches = model.decode(tokens[:, t:t + 1], shared, start=t, caches=caches)
            out.append(logits)
            identity = torch.arange(2 * k)
            caches = [(_reorder(kc, identity), _reorder(vc, identity)) for kc, vc in caches]
            assert caches[0][0].shape[2] == t + 2  # room for the next position
        assert torch.allclose(torch.cat(out, dim=1), full, atol=1e-5)
        with pytest.raises(ValueError, match="rows of tokens"):
            model.decode(tokens[:5, :1], shared)


def test_a_reordered_cache_holds_the_chosen_rows() -> None:
    cache = torch.arange(3 * 2 * 4 * 5, dtype=torch.float).view(3, 2, 4, 5)
    out = _reorder(cache, torch.tensor([2, 2, 0]))
    assert out.shape == (3, 2, 5, 5)
    assert torch.equal(out[:, :, :4], cache[torch.tensor([2, 2, 0])])


def test_step_linear_follows_its_weight_and_trains_as_a_linear() -> None:
    torch.manual_seed(0)
    lin, x = StepLinear(6, 4), torch.randn(2, 3, 6)
    with torch.inference_mode():
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-6)
    with torch.no_grad():
        lin.weight.mul_(-2.0)  # as an optimiser step would, in place
    with torch.inference_mode():
        assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-6)
    other = StepLinear(6, 4)
    lin.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(lin(x), other(x), atol=1e-6)
    lin.train()
    lin(x).sum().backward()  # with gradients it is the plain layer
    assert lin.weight.grad is not None
    head = StepLinear(6, 5, bias=False)
    with torch.no_grad():
        assert torch.allclose(head(x), x @ head.weight.t(), atol=1e-6)


def test_draft_many_gives_each_study_its_own_report_in_order() -> None:
    drafter = _drafter()
    findings = [codes(c) for c in STUDIES]
    indications = ["cough", None, "chest pain", None, None, "fever", None]
    decode = DecodeConfig(beam=3, max_tokens=12)
    alone = [drafter.draft([f], [i], None, decode)[0]
             for f, i in zip(findings, indications, strict=True)]
    assert drafter.draft_many(findings, indications, decode, batch=3) == alone
    assert drafter.draft_many(findings, indications, decode, batch=2, workers=2) == alone
    assert drafter.draft_many([], None, decode, workers=2) == []
    with pytest.raises(ValueError, match="at least 1"):
        drafter.draft_many(findings, indications, decode, batch=0)
    with pytest.raises(ValueError, match="indications for"):
        drafter.draft_many(findings, indications[:2], decode)


def test_the_neighbour_cache_is_safe_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.report.decoder import neighbours

    monkeypatch.setattr(neighbours, "CACHE_SIZE", 2)  # constant eviction
    store = ReportNeighbours(TRAIN)
    expected = {c: ReportNeighbours(TRAIN).nearest(codes(c), 2) for c in STUDIES}
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for i in range(300):
                c = STUDIES[(i + offset) % len(STUDIES)]
                assert store.nearest(codes(c), 2) == expected[c]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between almost any two bytecodes
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert len(store._cache) <= 2
