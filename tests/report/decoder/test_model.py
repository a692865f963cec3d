import itertools

import pytest
import torch

from assistant.report.decoder.bundle import ReportBundle
from assistant.report.decoder.generate import DecodeConfig, _banned_ngrams, candidates, generate
from assistant.report.decoder.model import DecoderConfig, ReportDecoder

from .conftest import condition_batch


def test_forward_shapes(tiny_bundle: ReportBundle) -> None:
    cond = condition_batch(tiny_bundle)
    tokens = torch.randint(4, tiny_bundle.model.config.text_vocab, (3, 7))
    logits = tiny_bundle.model(cond, tokens)
    assert logits.shape == (3, 7, tiny_bundle.model.config.text_vocab)


def test_cached_steps_equal_the_full_causal_pass(tiny_bundle: ReportBundle) -> None:
    model, cond = tiny_bundle.model, condition_batch(tiny_bundle)
    tokens = torch.randint(4, model.config.text_vocab, (3, 6))
    memory = model.encode(cond)
    full, _ = model.decode(tokens, memory)
    caches, steps = None, []
    for t in range(tokens.shape[1]):
        logits, caches = model.decode(tokens[:, t:t + 1], memory, start=t, caches=caches)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_a_later_token_does_not_change_earlier_logits(tiny_bundle: ReportBundle) -> None:
    model, cond = tiny_bundle.model, condition_batch(tiny_bundle)
    a = torch.randint(4, model.config.text_vocab, (3, 5))
    b = a.clone()
    b[:, -1] = (b[:, -1] + 1) % model.config.text_vocab
    memory = model.encode(cond)
    assert torch.allclose(model.decode(a, memory)[0][:, :-1], model.decode(b, memory)[0][:, :-1],
                          atol=1e-6)


def test_image_tokens_need_a_model_trained_with_images(tiny_bundle: ReportBundle) -> None:
    with pytest.raises(ValueError, match="without images"):
        tiny_bundle.model.encode(condition_batch(tiny_bundle), torch.zeros(3, 4, 8))
    cfg = DecoderConfig(20, 20, width=32, heads=2, encoder_layers=1, decoder_layers=1,
                        image_dim=8)
    model = ReportDecoder(cfg)
    memory = model.encode(condition_batch(tiny_bundle), torch.zeros(3, 4, 8))
    assert memory.states.shape[1] == condition_batch(tiny_bundle)["ids"].shape[1] + 4


def test_config_refuses_a_width_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="multiple of heads"):
        DecoderConfig(10, 10, width=30, heads=4)


@pytest.mark.parametrize(("beam", "length_penalty"), [(1, 1.0), (3, 1.0), (3, 1.6)])
def test_generation_respects_the_cap_the_bans_and_the_batch(tiny_bundle: ReportBundle,
                                                           beam: int, length_penalty: float,
                                                           ) -> None:
    model, cond = tiny_bundle.model, condition_batch(tiny_bundle)
    cfg = DecodeConfig(beam=beam, max_tokens=12, no_repeat_ngram=2,
                       length_penalty=length_penalty)
    memory = model.encode(cond)
    out = generate(model, memory, cfg)
    assert len(out) == 3
    for seq in out:
        assert len(seq) <= 12 and not {0, 1, 2, 3} & set(seq)
        bigrams = list(itertools.pairwise(seq))
        assert len(bigrams) == len(set(bigrams))  # no repeated 2-gram
    # Batched decoding gives each study what it gets alone (a study leaves the batch
    # when it is done instead of decoding on beside the others).
    for i in range(3):
        alone = model.encode({k: v[i:i + 1] for k, v in cond.items()})
        assert generate(model, alone, cfg)[0] == out[i]


def test_beam_candidates_are_best_first(tiny_bundle: ReportBundle) -> None:
    model, cond = tiny_bundle.model, condition_batch(tiny_bundle, 1)
    found = candidates(model, model.encode(cond), DecodeConfig(beam=4, max_tokens=10))
    assert 1 <= len(found[0]) <= 4
    assert generate(model, model.encode(cond), DecodeConfig(beam=4, max_tokens=10))[0] == \
        found[0][0]


def test_banned_ngrams_finds_the_completions() -> None:
    seqs = torch.tensor([[1, 5, 6, 7, 5, 6], [1, 5, 6, 5, 6, 5], [1, 2, 3, 4, 5, 6]])
    rows, toks = _banned_ngrams(seqs, 3)
    assert sorted(zip(rows.tolist(), toks.tolist(), strict=True)) == [(0, 7), (1, 6)]
    rows, toks = _banned_ngrams(seqs, 2)  # row 1 ends in 5: 5 was followed by 6 twice
    assert sorted(zip(rows.tolist(), toks.tolist(), strict=True)) == [(0, 7), (1, 6), (1, 6)]
    assert _banned_ngrams(seqs, 0)[0].numel() == 0
    assert _banned_ngrams(seqs[:, :2], 3)[0].numel() == 0


def test_min_tokens_holds_the_end_back(tiny_bundle: ReportBundle) -> None:
    model, cond = tiny_bundle.model, condition_batch(tiny_bundle)
    out = generate(model, model.encode(cond), DecodeConfig(beam=2, max_tokens=20,
                                                           min_tokens=20, no_repeat_ngram=0))
    assert all(len(seq) == 20 for seq in out)
    with pytest.raises(ValueError, match="min_tokens"):
        DecodeConfig(max_tokens=5, min_tokens=6)


def test_sampling_is_seeded_and_mbr_picks_a_candidate(tiny_bundle: ReportBundle) -> None:
    from assistant.report.decoder.generate import sample
    from assistant.report.decoder.select import consensus, sentence_bleu

    model, cond = tiny_bundle.model, condition_batch(tiny_bundle, 2)
    cfg = DecodeConfig(samples=4, max_tokens=10, seed=3)
    first = sample(model, model.encode(cond), cfg)
    assert first == sample(model, model.encode(cond), cfg)
    assert [len(group) for group in first] == [4, 4]
    assert all(len(seq) <= 10 and 2 not in seq for group in first for seq in group)
    texts = ["the heart is normal", "the heart is normal in size", "lungs clear"]
    assert consensus(texts) == texts[0]  # closest to the others
    assert sentence_bleu(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == pytest.approx(1.0)
    assert sentence_bleu(["x"], ["a"]) == 0.0
