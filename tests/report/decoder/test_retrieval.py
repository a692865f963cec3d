"""The retrieval decoder: the neighbour ranking it reads, how neighbours enter the memory,
and that a trained decoder follows the neighbour it is given."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from assistant.report.decoder.baselines import NearestNeighbour
from assistant.report.decoder.bundle import Drafter, ReportBundle, collate_conditions
from assistant.report.decoder.data import Finding, ReportRecord
from assistant.report.decoder.generate import DecodeConfig, generate
from assistant.report.decoder.model import DecoderConfig, ReportDecoder
from assistant.report.decoder.neighbours import ReportNeighbours
from assistant.report.decoder.train import Example, TrainReportConfig, train_decoder
from assistant.report.decoder.vocab import (
    Vocab,
    detokenize,
    encode_condition,
    encode_neighbours,
    tokenize,
)
from tests.conftest import data_dir


def record(uid: str, codes: tuple[str, ...], text: str) -> ReportRecord:
    return ReportRecord(uid, tuple(Finding.from_code(c) for c in codes), "", text, "")


TRAIN = [
    record("CXR1", ("normal",), "Lungs are clear. No effusion."),
    record("CXR2", ("normal",), "Lungs are clear. No effusion. Heart normal."),
    record("CXR3", ("normal",), "Clear lungs. Normal heart."),
    record("CXR4", ("Cardiomegaly/mild",), "Mild cardiomegaly. Lungs are clear."),
    record("CXR5", ("Cardiomegaly/severe",), "Severe cardiomegaly."),
    record("CXR6", ("Cardiomegaly/mild", "Pleural Effusion/left"),
           "Mild cardiomegaly. Left effusion."),
]


def codes(*c: str) -> tuple[Finding, ...]:
    return tuple(Finding.from_code(x) for x in c)


def test_nearest_ranks_by_codes_then_terms_then_typicality() -> None:
    store = ReportNeighbours(TRAIN)
    # Three reports share "normal"; the second shares most words with the other two.
    assert store.nearest(codes("normal"), 3) == [
        "Lungs are clear. No effusion. Heart normal.", "Lungs are clear. No effusion.",
        "Clear lungs. Normal heart."]
    # Same code first, then the same term with another modifier, then a partial match.
    assert store.nearest(codes("Cardiomegaly/mild"), 3) == [
        "Mild cardiomegaly. Lungs are clear.", "Mild cardiomegaly. Left effusion.",
        "Severe cardiomegaly."]
    assert NearestNeighbour(TRAIN)(codes("Cardiomegaly/severe")) == "Severe cardiomegaly."


def test_the_ranking_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.report.decoder import neighbours

    monkeypatch.setattr(neighbours, "CACHE_SIZE", 3)
    store = ReportNeighbours(TRAIN)
    for i in range(10):
        store.nearest(codes(f"Finding{i}"))
    assert len(store._cache) == 3
    assert store.nearest(codes("Cardiomegaly/severe")) == ["Severe cardiomegaly."]


def test_a_training_report_never_gets_itself_and_texts_are_distinct() -> None:
    store = ReportNeighbours([*TRAIN, record("CXR7", ("normal",), "Clear lungs. Normal heart.")])
    got = store.nearest(codes("Cardiomegaly/severe"), 2, exclude="CXR5")
    assert "Severe cardiomegaly." not in got and len(got) == 2
    everything = store.nearest(codes("normal"), 10)
    assert len(everything) == len(set(everything)) == 6  # CXR7 repeats CXR3's text


def with_indication(rec: ReportRecord, indication: str) -> ReportRecord:
    return replace(rec, indication=indication)


STYLED = [  # two reporting practices: the same codes, each its own indication style and template
    with_indication(record("CXR1", ("normal",), "Lungs are clear. No effusion."),
                    "XXXX-year-old male with chest pain."),
    with_indication(record("CXR2", ("normal",), "Heart size normal. Lungs clear."), "Chest pain"),
    with_indication(record("CXR3", ("normal",), "Lungs are clear. No effusion."),
                    "XXXX-year-old female with cough."),
    with_indication(record("CXR4", ("Cardiomegaly/mild",), "Mild cardiomegaly."),
                    "XXXX-year-old male with dyspnea."),
]


def test_the_indications_wording_picks_among_reports_with_the_same_codes() -> None:
    by_codes = ReportNeighbours(STYLED)
    styled = ReportNeighbours(STYLED, indication_weight=0.3)
    normal = codes("normal")
    # By codes alone the most typical normal text comes first, whatever the indication.
    assert by_codes.nearest(normal, 1, indication="Chest pain") == [
        "Lungs are clear. No effusion."]
    # Its wording, as written, says which practice the study comes from.
    assert styled.nearest(normal, 1, indication="Chest pain") == [
        "Heart size normal. Lungs clear."]
    assert styled.nearest(normal, 2, indication="XXXX-year-old male with fever.") == [
        "Lungs are clear. No effusion.", "Heart size normal. Lungs clear."]
    # A similar indication does not outweigh a full match of the codes: it adds 0.3 at most,
    # the codes and terms 1.5.
    assert styled.nearest(normal, 1, indication="XXXX-year-old male with dyspnea.") == [
        "Lungs are clear. No effusion."]
    assert styled.nearest(codes("Cardiomegaly/mild"), 1, indication="Chest pain") == [
        "Mild cardiomegaly."]
    # No indication, or none of its words seen: the codes and terms decide, the most
    # typical wording among ties; the study itself is still left out.
    assert styled.nearest(normal, 1) == styled.nearest(normal, 1, indication="Syncope") == [
        "Lungs are clear. No effusion."]
    assert styled.nearest(normal, 1, exclude="CXR1", indication="Chest pain") == [
        "Heart size normal. Lungs clear."]
    assert styled.nearest(normal, 1, exclude="CXR2", indication="Chest pain") == [
        "Lungs are clear. No effusion."]
    # Without a weight the indication is not read.
    assert by_codes.nearest(normal, 2, indication="Chest pain") == by_codes.nearest(normal, 2)
    # With one, a study without an indication gets the codes-only ranking: codes, then
    # terms; with one, the sum (codes + 0.5 terms + 0.3 cosine) ranks. P shares a term
    # more, Q a full code more: codes first puts Q first, the sum P (0.83 against 0.75).
    p = record("CXRP", ("A/y", "B"), "P.")
    q = record("CXRQ", ("A/x", "B", "C/z", "D"), "Q.")
    two = ReportNeighbours([with_indication(p, "Cough"), with_indication(q, "Fever")], 0.3)
    assert two.nearest(codes("A/x", "B"), 1) == ["Q."]
    assert two.nearest(codes("A/x", "B"), 1, indication="Syncope") == ["P."]
    assert two.nearest(codes("A/x", "B"), 1, indication="Cough") == ["P."]


def test_indication_similarity_without_any_words_and_weights_out_of_range() -> None:
    store = ReportNeighbours([with_indication(r, "") for r in STYLED], indication_weight=0.3)
    assert store.nearest(codes("normal"), 1, indication="Chest pain") == [
        "Lungs are clear. No effusion."]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="indication_weight"):
            ReportNeighbours(STYLED, indication_weight=bad)


def test_a_drafter_reads_and_offers_the_neighbours_its_indication_picks() -> None:
    text = Vocab.build([tokenize(r.target) for r in STYLED], min_count=1)
    cond = Vocab.build([["T:normal", "T:cardiomegaly", "M:mild"]], min_count=1)
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=1, max_len=40, dropout=0.0, retrieved=1,
                        retrieved_len=16, retrieved_indication=0.3)
    bundle = ReportBundle(ReportDecoder(cfg).eval(), text, cond,
                          DecodeConfig(beam=1, max_tokens=8, neighbour_candidates=1))
    drafter = Drafter(bundle, ReportNeighbours(STYLED, cfg.retrieved_indication))
    normal = codes("normal")
    assert drafter.condition(normal, "Chest pain").retrieved == encode_neighbours(
        text, ["Heart size normal. Lungs clear."], 16)
    assert drafter.condition(normal, None).retrieved == encode_neighbours(
        text, ["Lungs are clear. No effusion."], 16)
    # The candidate offered beside the beams, and the provenance flag, follow it too.
    assert drafter.choose(["Mild cardiomegaly."], normal, bundle.decode, "Chest pain") == (
        "Heart size normal. Lungs clear.")
    assert drafter.from_training_report("Heart size normal. Lungs clear.", normal, "Chest pain")
    assert not drafter.from_training_report("Heart size normal. Lungs clear.", normal)
    assert DecoderConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                    if k != "retrieved_indication"}).retrieved_indication == 0.0


def test_neighbours_enter_as_word_ids_each_ended_and_within_the_limit() -> None:
    vocab = Vocab.build([tokenize(r.target) for r in TRAIN], min_count=1)
    ids = encode_neighbours(vocab, ["Severe cardiomegaly.", "Lungs are clear."], 64)
    assert detokenize(vocab.decode(ids)) == "Severe cardiomegaly."  # decode stops at the end
    assert ids.count(2) == 2 and ids[-1] == 2
    cut = encode_neighbours(vocab, ["Lungs are clear. No effusion. Heart normal."] * 2, 6)
    assert len(cut) == 6 and cut[2] == 2 and cut[5] == 2  # an equal share each
    assert encode_neighbours(vocab, [], 10) == ()


def _vocabs() -> tuple[Vocab, Vocab]:
    text = Vocab.build([tokenize(r.target) for r in TRAIN], min_count=1)
    cond = Vocab.build([["T:normal", "T:cardiomegaly", "M:mild"]], min_count=1)
    return text, cond


def test_a_retrieval_decoder_needs_its_neighbours() -> None:
    text, cond = _vocabs()
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=1, max_len=40, dropout=0.0, retrieved=1, retrieved_len=16)
    bundle = ReportBundle(ReportDecoder(cfg).eval(), text, cond)
    with pytest.raises(ValueError, match="neighbours"):
        Drafter(bundle)
    plain = collate_conditions([encode_condition(cond, codes("normal"), None)])
    with pytest.raises(ValueError, match="neighbour"):
        bundle.model.encode(plain)
    store = ReportNeighbours(TRAIN)
    drafter = Drafter(bundle, store)
    c = drafter.condition(codes("Cardiomegaly/severe"), None)
    assert c.retrieved == encode_neighbours(text, ["Severe cardiomegaly."], 16)
    memory = bundle.model.encode(collate_conditions([c]))
    assert memory.states.shape[1] == len(c.ids) + len(c.retrieved)
    assert isinstance(drafter.draft([codes("normal")])[0], str)


@pytest.mark.parametrize("copy", [False, True])
def test_the_trained_decoder_follows_the_neighbour_it_reads(copy: bool) -> None:
    """Same codes, two wordings: only the neighbour says which one to write."""
    a, b = "Lungs are clear. No effusion.", "Clear lungs. Normal heart."
    normal = codes("normal")
    train = [Example(normal, "", t, neighbours=(t,)) for t in (a, b) for _ in range(16)]
    cfg = TrainReportConfig(width=64, heads=2, encoder_layers=1, decoder_layers=2,
                            dropout=0.0, epochs=60, batch_size=8, lr=3e-3, warmup_steps=5,
                            patience=60, label_smoothing=0.0, drop_indication=0.0,
                            min_count=1, max_len=40, retrieved=1, retrieved_len=16, copy=copy)
    bundle = train_decoder(train, train[:2] + train[-2:], cfg, {"name": "tiny-retrieval"},
                           progress=False)
    assert bundle.model.config.retrieved == 1 and bundle.model.config.copy == copy
    conds = [encode_condition(bundle.cond_vocab, normal, "",
                              encode_neighbours(bundle.text_vocab, [t], 16)) for t in (a, b)]
    with torch.no_grad():
        ids = generate(bundle.model, bundle.model.encode(collate_conditions(conds)),
                       DecodeConfig(beam=2, max_tokens=20))
    assert [detokenize(bundle.text_vocab.decode(s)) for s in ids] == [a, b]
    with pytest.raises(ValueError, match="neighbours"):
        train_decoder([Example(normal, "", a)] * 4, [Example(normal, "", a)], cfg,
                      progress=False)


def tiny_copy_drafter() -> Drafter:
    """An untrained two-neighbour copying decoder (seed 0) over ``TRAIN``."""
    text, cond = _vocabs()
    torch.manual_seed(0)
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=2, max_len=40, dropout=0.0, retrieved=2,
                        retrieved_len=24, copy=True)
    return Drafter(ReportBundle(ReportDecoder(cfg).eval(), text, cond),
                   ReportNeighbours(TRAIN))


def test_copying_gives_a_distribution_and_the_cache_matches_the_full_pass() -> None:
    drafter = tiny_copy_drafter()
    model, text = drafter.bundle.model, drafter.bundle.text_vocab
    conds = [drafter.condition(codes(c), None) for c in ("normal", "Cardiomegaly/mild")]
    memory = model.encode(collate_conditions(conds))
    assert memory.copy_ids is not None and memory.copy_keys is not None
    tokens = torch.randint(4, len(text), (2, 6))
    full, _ = model.decode(tokens, memory)
    assert torch.allclose(full.exp().sum(-1), torch.ones(2, 6), atol=1e-5)
    caches, steps = None, []
    for t in range(tokens.shape[1]):
        logits, caches = model.decode(tokens[:, t:t + 1], memory, start=t, caches=caches)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    beams = memory.select(torch.tensor([1, 1, 0]))
    assert beams.copy_ids is not None and torch.equal(beams.copy_ids[2], memory.copy_ids[0])
    with pytest.raises(ValueError, match="copying needs"):
        DecoderConfig(10, 10, copy=True)


def _retrieval_checkpoint(path: Path, provenance: dict[str, object]) -> None:
    text, cond = _vocabs()
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=1, max_len=40, dropout=0.0, retrieved=1,
                        retrieved_len=16, copy=True)
    ReportBundle(ReportDecoder(cfg), text, cond, provenance=provenance).save(path)


def test_a_retrieval_checkpoint_loads_its_neighbours_or_says_why_not(tmp_path: Path) -> None:
    from assistant.config import Settings
    from assistant.data.manifest import DataError
    from assistant.report.decoder.commands import report_drafter
    from assistant.report.decoder.data import manifest_sha256

    ours = tmp_path / "ours.pt"
    _retrieval_checkpoint(ours, {"split_manifest_sha256": manifest_sha256(),
                                 "train_examples": 2749})
    with pytest.raises(DataError, match="missing"):  # nothing fetched in this folder
        report_drafter(Settings(data_dir=tmp_path / "empty"), ours)
    other = tmp_path / "other.pt"
    _retrieval_checkpoint(other, {"split_manifest_sha256": "0" * 64, "train_examples": 2749})
    with pytest.raises(DataError, match="another split manifest"):
        report_drafter(Settings(data_dir=tmp_path / "empty"), other)


@pytest.mark.data
def test_a_retrieval_checkpoint_reads_the_fetched_training_reports(tmp_path: Path) -> None:
    from assistant.config import Settings
    from assistant.report.decoder.commands import load_split, report_drafter
    from assistant.report.decoder.data import manifest_sha256

    settings = Settings(data_dir=data_dir())
    train = load_split(settings)["train"]
    path = tmp_path / "r.pt"
    _retrieval_checkpoint(path, {"split_manifest_sha256": manifest_sha256(),
                                 "train_examples": len(train)})
    drafter = report_drafter(settings, path)
    assert drafter.neighbours is not None and len(drafter.neighbours) == len(train)
    nearest = drafter.neighbours.nearest(codes("Cardiomegaly/mild"))[0]
    assert nearest in {r.target for r in train}
    _retrieval_checkpoint(path, {"split_manifest_sha256": manifest_sha256(),
                                 "train_examples": len(train) + 1})
    with pytest.raises(Exception, match="trained beside"):
        report_drafter(settings, path)


@pytest.mark.parametrize(("args", "words"), [
    (["--copy"], "--copy needs --retrieved"),
    (["--retrieved", "2", "--pairs", "pairs.csv", "--out", "x.pt"], "does not apply to --pairs"),
])
def test_the_training_command_refuses_retrieval_options_that_cannot_apply(
        tmp_path: Path, args: list[str], words: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "assistant", "train", "report", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in " ".join(done.stderr.replace("│", " ").split())  # the box rich draws


def test_a_neighbour_is_kept_only_where_it_agrees_better_than_every_beam() -> None:
    drafter = tiny_copy_drafter()
    cfg = DecodeConfig(beam=2, max_tokens=12, neighbour_candidates=1)
    mild = codes("Cardiomegaly/mild")
    # No beam asserts cardiomegaly; the nearest training report does: it is kept.
    assert drafter.choose(["Lungs are clear.", "No effusion."], mild, cfg) == (
        "Mild cardiomegaly. Lungs are clear.")
    # A beam agreeing as well wins the tie; without neighbour candidates the beams alone.
    assert drafter.choose(["Mild cardiomegaly.", "Lungs are clear."], mild, cfg) == (
        "Mild cardiomegaly.")
    assert drafter.choose(["Lungs are clear.", "No effusion."], mild,
                          replace(cfg, neighbour_candidates=0)) == "Lungs are clear."
    # Two candidates: the second nearest (cardiomegaly and a left effusion) fits better.
    both = codes("Cardiomegaly/mild", "Pleural Effusion/left")
    assert drafter.choose(["Lungs are clear."], both, replace(cfg, neighbour_candidates=2)
                          ) == "Mild cardiomegaly. Left effusion."
    # Not consistency-ranked: the first beam, whatever the neighbours say.
    assert drafter.choose(["Lungs are clear.", "No effusion."], mild,
                          replace(cfg, consistent=False)) == "Lungs are clear."
    assert drafter.from_training_report("mild  cardiomegaly, lungs are clear", mild)
    assert not drafter.from_training_report("Mild cardiomegaly.", mild)
    # Drafting a batch chooses per study as ``choose`` does over the decoded candidates.
    studies = [mild, both, codes("normal")]
    pools = drafter.decoded_candidates(studies, None, None, cfg)
    assert drafter.draft(studies, None, None, cfg) == [
        drafter.choose(p, f, cfg) for p, f in zip(pools, studies, strict=True)]
    assert drafter.candidates_many(studies, None, cfg, batch=2, workers=2) == pools


def test_neighbour_candidates_need_the_training_reports() -> None:
    text, cond = _vocabs()
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=1, max_len=40, dropout=0.0)
    bundle = ReportBundle(ReportDecoder(cfg).eval(), text, cond,
                          DecodeConfig(beam=2, max_tokens=8, neighbour_candidates=1))
    with pytest.raises(ValueError, match="neighbours"):
        Drafter(bundle)
    plain = Drafter(ReportBundle(bundle.model, text, cond, DecodeConfig(beam=2, max_tokens=8)))
    with pytest.raises(ValueError, match="training reports"):
        plain.choose(["Lungs are clear."], codes("normal"), bundle.decode)
    with pytest.raises(ValueError, match="negative"):
        DecodeConfig(neighbour_candidates=-1)


def test_tuning_scores_each_setting_as_drafting_with_it_scores() -> None:
    from assistant.report.decoder.evaluate import TuneGrid, tune_decoding
    from assistant.report.decoder.scores import score

    drafter = tiny_copy_drafter()
    val = [record("V1", ("Cardiomegaly/mild",), "Mild cardiomegaly. Lungs are clear."),
           record("V2", ("normal",), "Lungs are clear. No effusion."),
           record("V3", ("Cardiomegaly/mild", "Pleural Effusion/left"),
                  "Mild cardiomegaly. Left effusion.")]
    grid = TuneGrid(beams=(1, 2), length_penalties=(0.5, 2.0), neighbour_candidates=(0, 1))
    best, trials = tune_decoding(drafter, val, grid)
    # Greedy once (its length penalty 1.0), beam 2 at each penalty; each with 0 and 1
    # neighbour candidates.
    assert [(t["beam"], t["length_penalty"], t["neighbour_candidates"]) for t in trials] == [
        (1, 1.0, 0), (1, 1.0, 1), (2, 0.5, 0), (2, 0.5, 1), (2, 2.0, 0), (2, 2.0, 1)]
    for t in trials:
        cfg = replace(drafter.bundle.decode, beam=t["beam"], length_penalty=t["length_penalty"],
                      neighbour_candidates=t["neighbour_candidates"])
        drafted = drafter.draft([r.findings for r in val], [r.indication for r in val],
                                None, cfg)
        s = score([r.target for r in val], drafted, n_boot=0, meteor=False).point
        assert t["BLEU-4"] == pytest.approx(s["BLEU-4"]) and t["CIDEr"] == pytest.approx(
            s["CIDEr"])
    top = max(trials, key=lambda t: t["objective"])
    assert (best.beam, best.length_penalty, best.neighbour_candidates) == (
        top["beam"], top["length_penalty"], top["neighbour_candidates"])
    # The untrained decoder's beams never match; the training reports do, so the best
    # setting takes them as candidates.
    assert best.neighbour_candidates == 1
    assert torch.get_num_threads() >= 1  # the thread count is given back


@pytest.mark.data
def test_retuning_refuses_a_decoder_of_another_split(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "other.pt"
    text, cond = _vocabs()
    cfg = DecoderConfig(len(text), len(cond), width=32, heads=2, encoder_layers=1,
                        decoder_layers=1, max_len=40, dropout=0.0)
    ReportBundle(ReportDecoder(cfg), text, cond,
                 provenance={"split_manifest_sha256": "0" * 64}).save(path)
    done = subprocess.run([sys.executable, "-m", "assistant", "train", "report-decoding",
                           "--checkpoint", str(path), "--out", str(tmp_path / "new.pt")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ,
                               "ASSISTANT_DATA_DIR": str(data_dir())})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "another split manifest" in done.stderr
    assert not (tmp_path / "new.pt").exists()


@pytest.mark.data
def test_the_indication_weight_is_set_on_trained_weights_without_touching_them(
        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from assistant.report.decoder.bundle import load_report_bundle

    release = Path(__file__).resolve().parents[3] / "assistant" / "weights" / "report-iu-xray.pt"
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir())}

    def retune(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "assistant", "train", "report-decoding",
                               *args], capture_output=True, text=True, timeout=300, env=env)

    out = tmp_path / "styled.pt"
    done = retune("--checkpoint", str(release), "--retrieved-indication", "0.3", "--no-tune",
                  "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    before, after = load_report_bundle(release), load_report_bundle(out)
    assert after.model.config == replace(before.model.config, retrieved_indication=0.3)
    assert after.decode == before.decode
    old, new = before.model.state_dict(), after.model.state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert after.provenance["decoding_retuned"]["retrieved_indication_before"] == (
        before.model.config.retrieved_indication)
    assert after.provenance["decoding_retuned"]["tuned"] is False
    # The neighbour candidates alone, the rest of the decoding kept.
    k1 = tmp_path / "k1.pt"
    done = retune("--checkpoint", str(out), "--no-tune", "--neighbour-candidates", "1",
                  "--out", str(k1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_report_bundle(k1).decode == replace(before.decode, neighbour_candidates=1)
    assert load_report_bundle(k1).model.config.retrieved_indication == 0.3
    # Completion alone, the rest of the decoding and the weights kept.
    done_k1 = tmp_path / "complete.pt"
    done = retune("--checkpoint", str(k1), "--no-tune", "--complete", "--out", str(done_k1))
    assert done.returncode == 0, done.stdout + done.stderr
    completed = load_report_bundle(done_k1)
    assert completed.decode == replace(before.decode, neighbour_candidates=1, complete=True)
    assert all(torch.equal(old[k], v) for k, v in completed.model.state_dict().items())
    # Usage errors: nothing to do, a weight out of range, candidates while tuning or below
    # 0; a decoder without neighbours.
    for args in (("--no-tune",), ("--retrieved-indication", "2"),
                 ("--neighbour-candidates", "1"),
                 ("--no-tune", "--neighbour-candidates", "-1")):
        assert retune(*args, "--out", str(tmp_path / "x.pt")).returncode == 2, args
    text, cond = _vocabs()
    plain = tmp_path / "plain.pt"
    from assistant.report.decoder.data import manifest_sha256

    ReportBundle(ReportDecoder(DecoderConfig(len(text), len(cond), width=32, heads=2,
                                             encoder_layers=1, decoder_layers=1, max_len=40)),
                 text, cond, provenance={"split_manifest_sha256": manifest_sha256()}
                 ).save(plain)
    refused = retune("--checkpoint", str(plain), "--retrieved-indication", "0.3", "--no-tune",
                     "--out", str(tmp_path / "x.pt"))
    assert refused.returncode == 1 and "reads no neighbour reports" in refused.stderr
    assert not (tmp_path / "x.pt").exists()
