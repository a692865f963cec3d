import pytest
from pycocoevalcap.bleu.bleu import Bleu

from assistant.report.decoder.scores import METRICS, _prepare, score

REFS = ["The heart is normal in size. No effusion.", "Mild cardiomegaly. No pneumothorax.",
        "Lungs are clear.", "Left pleural effusion."]
HYPS = ["Heart size is normal. No effusion.", "Cardiomegaly is mild. No pneumothorax seen.",
        "The lungs are clear.", "Small left effusion."]


def test_corpus_bleu_equals_pycocoevalcap() -> None:
    ours = score(REFS, HYPS, n_boot=0, meteor=False).point
    theirs = Bleu(4).compute_score(_prepare(REFS), _prepare(HYPS), verbose=0)[0]
    assert [ours[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(theirs)


def test_identical_texts_score_perfectly_and_intervals_hold_the_point() -> None:
    s = score(REFS, REFS, n_boot=50, meteor=False)
    assert s.point["BLEU-4"] == pytest.approx(1.0) and s.point["ROUGE-L"] == pytest.approx(1.0)
    worse = score(REFS, HYPS, n_boot=200, meteor=False)
    for m in ("BLEU-1", "ROUGE-L", "CIDEr"):
        assert worse.low[m] <= worse.point[m] <= worse.high[m]
        assert worse.point[m] < s.point[m]


@pytest.mark.slow
def test_meteor_runs_the_jar_for_the_point_and_the_resamples() -> None:
    s = score(REFS, HYPS, n_boot=20)
    assert 0 < s.point["METEOR"] < 1 and s.low["METEOR"] <= s.high["METEOR"]
    assert set(s.to_dict()) == {"n", *METRICS}


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="references"):
        score(REFS, HYPS[:2])
