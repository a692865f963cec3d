import pytest

from assistant.report.decoder.data import Finding
from assistant.report.decoder.findings import (
    NORMAL_CLASS,
    asserted,
    code_classes,
    consistency,
    finding_class,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("No pleural effusion or pneumothorax.", {NORMAL_CLASS}),
    ("There is a small left pleural effusion.", {"pleural effusion"}),
    ("Mild cardiomegaly. No focal airspace disease.", {"cardiomegaly"}),
    ("The heart is mildly enlarged.", {"cardiomegaly"}),
    ("Heart size is normal. Lungs are clear.", {NORMAL_CLASS}),
    ("No effusion, but there is right basilar atelectasis.", {"atelectasis"}),
    ("Calcified granuloma in the right upper lobe.", {"granuloma"}),
    ("Aortic calcification. Pneumothorax has resolved.", {"calcinosis"}),
    ("Low lung volumes. Degenerative changes of the thoracic spine.",
     {"hypoinflation", "degenerative spine"}),
    ("Without focal consolidation. Negative for pneumonia.", {NORMAL_CLASS}),
    # word ends: "consistent" holds no stent, "tuberculosis" no tube
    ("Opacity consistent with prior tuberculosis.", {"opacity"}),
    ("Chest tube in place. Coronary stent.", {"device"}),
    # removal, hedges and recommendations are not assertions
    ("The right PICC has been removed. Removal of the chest tube.", {NORMAL_CLASS}),
    ("Opacity which may represent atelectasis.", {"opacity"}),
    ("Calcifications suggest a previous granulomatous process.", {"calcinosis"}),
    ("Recommend CT with contrast for further evaluation.", {NORMAL_CLASS}),
    # wordings of enlargement and low volumes
    ("The cardiac silhouette appears mildly enlarged.", {"cardiomegaly"}),
    ("Heart size is borderline enlarged. Lung volumes are slightly low.",
     {"cardiomegaly", "hypoinflation"}),
    ("The heart is not enlarged. Obscuration of the left heart border.",
     {"obscured structure"}),
    # words that only look like the new cues
    ("The heart is largely unchanged. Heart size is borderline normal.", {NORMAL_CLASS}),
    ("Considerable cardiomegaly.", {"cardiomegaly"}),
    ("Favorable position of the left chest tube.", {"device"}),
    ("Follow-up radiograph shows a left pleural effusion.", {"pleural effusion"}),
])
def test_asserted_reads_negation(text: str, expected: set[str]) -> None:
    assert asserted(text) == expected


def test_code_classes_follow_modifiers_and_normal() -> None:
    assert finding_class(Finding.from_code("Lung/hypoinflation/mild")) == "hypoinflation"
    assert finding_class(Finding.from_code("Lung/hyperdistention")) == "hyperinflation"
    assert finding_class(Finding.from_code("Lung/base")) is None  # a location only
    # hidden, not enlarged
    assert finding_class(Finding.from_code("Heart/right/obscured")) == "obscured structure"
    assert code_classes([Finding.from_code("normal")]) == {NORMAL_CLASS}
    assert code_classes([Finding.from_code("normal"), Finding.from_code("Cardiomegaly")]) == {
        "cardiomegaly"}


def test_consistency_counts_hits_misses_and_extras() -> None:
    conds = [[Finding.from_code("Cardiomegaly")], [Finding.from_code("normal")],
             [Finding.from_code("Pleural Effusion/left"), Finding.from_code("Rare Thing")]]
    texts = ["Cardiomegaly.", "There is atelectasis.", "No effusion."]
    c = consistency(texts, conds)
    # hits: cardiomegaly; extras: atelectasis, normal (3rd asserts nothing);
    # misses: normal (2nd), effusion (3rd)
    assert (c.precision, c.recall) == pytest.approx((1 / 3, 1 / 3))
    assert c.coverage == pytest.approx(2 / 3)  # "Rare Thing" has no class
    with pytest.raises(ValueError, match="texts for"):
        consistency(texts[:1], conds)


def test_mentions_tell_denied_from_hedged() -> None:
    from assistant.report.decoder.findings import mentions

    assert mentions("No pleural effusion. Opacity may represent atelectasis.") == (
        {"opacity"}, {"pleural effusion"})
    # asserted in one place, denied in another: asserted
    assert mentions("Small left effusion. No right effusion.") == ({"pleural effusion"}, set())


def test_normal_statements_deny_without_asserting() -> None:
    from assistant.report.decoder.findings import mentions

    found, denied = mentions("Heart size is within normal limits. Lungs are clear.")
    assert found == set() and {"cardiomegaly", "opacity"} <= denied
    assert asserted("Heart size is within normal limits. Lungs are clear.") == {NORMAL_CLASS}
    # "otherwise clear" leaves the finding beside it alone; a new line ends a clause
    assert "opacity" not in mentions("Left basilar opacity, lungs otherwise clear.")[1]
    assert mentions("No effusion\nHeart is enlarged") == ({"cardiomegaly"},
                                                          {"pleural effusion"})
    assert "pleural effusion" not in mentions("Small left effusion is not excluded.")[1]
