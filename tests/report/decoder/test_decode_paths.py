"""The decoding fast paths give what the plain paths give: a study's beams sharing its
memory entry, caches reordered with room for the next position, the transposed-weight
linear layers, and batches drafted side by side on threads."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
import torch.nn.functional as F

from assistant.report.decoder.bundle import collate_conditions
from assistant.report.decoder.generate import DecodeConfig, _reorder
from assistant.report.decoder.model import KV, Memory, ReportDecoder, StepLinear
from assistant.report.decoder.neighbours import ReportNeighbours

from .test_retrieval import TRAIN, codes, tiny_copy_drafter

STUDIES = ("normal", "Cardiomegaly/mild", "Cardiomegaly/severe", "Pleural Effusion/left",
           "Cardiomegaly/mild", "normal", "Opacity/lung/base/left")


def test_beams_sharing_a_memory_entry_step_as_the_plain_full_pass() -> None:
    drafter, k, steps = tiny_copy_drafter(), 3, 6
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


def test_reordered_beams_and_a_study_leaving_match_the_plain_path() -> None:
    """Beam search's moves (beams swapping histories, a finished study leaving the batch)
    on the shared memory with in-place caches, against per-row memory copies with
    appended caches and the rows picked by advanced indexing, as decoding was before."""
    drafter, k = tiny_copy_drafter(), 2
    model = drafter.bundle.model
    conds = collate_conditions([drafter.condition(codes(c), None) for c in STUDIES[:3]])
    torch.manual_seed(2)
    tokens = torch.randint(4, model.config.text_vocab, (3 * k, 5))
    # rows after each step: beams swap within a study; after step 2 study 0 leaves
    moves = [torch.tensor([1, 0, 2, 3, 5, 4]), torch.tensor([0, 0, 3, 2, 4, 5]),
             torch.tensor([2, 3, 5, 5]), torch.tensor([1, 0, 2, 3])]
    keep_after = {2: torch.tensor([1, 2])}  # the studies still decoding
    with torch.inference_mode():
        memory = model.encode(conds)
        fast_mem, plain_mem = memory.shared(k), memory.select(
            torch.arange(3).repeat_interleave(k))
        fast_caches = plain_caches = None
        seqs = tokens[:, :1]
        for step in range(4):
            fast, fast_caches = model.decode(seqs[:, -1:], fast_mem, start=step,
                                             caches=fast_caches)
            plain, plain_caches = _plain_decode(model, seqs[:, -1:], plain_mem, step,
                                                plain_caches)
            assert torch.allclose(fast, plain, atol=1e-5)
            index = moves[step]
            if step in keep_after:
                fast_mem = fast_mem.select(keep_after[step])
                plain_mem = plain_mem.select(index)
            else:
                plain_mem = plain_mem.select(index)
            fast_caches = [(_reorder(kc, index), _reorder(vc, index)) for kc, vc in fast_caches]
            plain_caches = [(kc[index], vc[index]) for kc, vc in plain_caches]
            seqs = torch.cat([seqs[index], tokens[:len(index), step + 1:step + 2]], dim=1)


def _plain_decode(model: ReportDecoder, tokens: torch.Tensor, memory: Memory, start: int,
                  caches: list[KV] | None) -> tuple[torch.Tensor, list[KV]]:
    """One step in training mode (dropout is 0 here), so the plain linear layers and the
    fused attention kernel run, each row reading its own memory copy (group 1), caches
    appended."""
    assert memory.group == 1 and model.config.dropout == 0.0
    model.train()
    try:
        return model.decode(tokens, memory, start=start, caches=caches)
    finally:
        model.eval()


def test_a_reordered_cache_holds_the_chosen_rows() -> None:
    cache = torch.arange(3 * 2 * 4 * 5, dtype=torch.float).view(3, 2, 4, 5)
    out = _reorder(cache, torch.tensor([2, 2, 0]))
    assert out.shape == (3, 2, 5, 5)
    assert torch.equal(out[:, :, :4], cache[torch.tensor([2, 2, 0])])


def test_step_linear_follows_its_weight_and_trains_as_a_linear() -> None:
    torch.manual_seed(0)
    lin, x = StepLinear(6, 4).eval(), torch.randn(2, 3, 6)

    def plain() -> torch.Tensor:
        return F.linear(x, lin.weight, lin.bias)

    with torch.inference_mode():
        assert torch.allclose(lin(x), plain(), atol=1e-6)
    assert lin._t is not None  # the transposed copy is in use
    with torch.no_grad():
        lin.weight.mul_(-2.0)  # as an optimiser step would, in place
    with torch.inference_mode():
        assert torch.allclose(lin(x), plain(), atol=1e-6)
    lin.load_state_dict(StepLinear(6, 4).state_dict())
    assert lin._t is None
    with torch.inference_mode():
        assert torch.allclose(lin(x), plain(), atol=1e-6)
    with torch.no_grad():
        lin.weight.data.add_(1.0)  # unseen by the version counter: train() drops the copy
    lin.train().eval()
    with torch.inference_mode():
        assert torch.allclose(lin(x), plain(), atol=1e-6)
    lin.double()  # a dtype change drops the copy
    with torch.inference_mode():
        assert torch.allclose(lin(x.double()), F.linear(x.double(), lin.weight, lin.bias))
    lin.float().train()
    lin(x).sum().backward()  # with gradients it is the plain layer
    assert lin.weight.grad is not None
    with torch.inference_mode():  # a layer made in inference mode works as a plain one
        made = StepLinear(6, 5, bias=False).eval()
        assert torch.allclose(made(x), x @ made.weight.t(), atol=1e-6)
    head = StepLinear(6, 5, bias=False).eval()
    with torch.inference_mode():
        assert torch.allclose(head(x), x @ head.weight.t(), atol=1e-6)


def test_draft_many_gives_each_study_its_own_report_in_order() -> None:
    drafter = tiny_copy_drafter()
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
            for i in range(1000):
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
