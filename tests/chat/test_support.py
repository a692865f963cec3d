"""Support of a claim by a text, and the terms a question is about."""

from __future__ import annotations

import pytest

from assistant.chat.support import american, covers, focus_terms, needed, support

PASSAGE = ("Glioblastoma is the most common malignant primary brain tumour in adults. "
           "Median survival is about 15 months with surgery, radiotherapy and temozolomide.")


def test_spellings_fold_but_not_latin_names() -> None:
    # the search reads the question so: "Haemophilus" is what MEDLINE and the HPO write
    assert american("What is oedema?") == "What is edema?"
    assert (american("Haemophilus influenzae and haemorrhage")
            == "Haemophilus influenzae and hemorrhage")
    assert american("Schistosoma haematobium") == "Schistosoma haematobium"


def test_spellings_fold_to_american() -> None:
    assert american("Tumours, haemorrhage and oedema") == "tumors, hemorrhage and edema"
    assert american("paediatric Oesophageal") == "pediatric esophageal"


def test_focus_terms_drop_question_words() -> None:
    assert focus_terms("What is a glioblastoma?") == ["glioblastoma"]
    assert focus_terms("Tell me about brain tumours, please") == ["brain", "tumor"]
    assert focus_terms("What is it?") == []


@pytest.mark.parametrize(("count", "need"), [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (8, 6)])
def test_needed_terms(count: int, need: int) -> None:
    assert needed(count) == need


def test_covers() -> None:
    assert covers(["glioblastoma"], PASSAGE)
    assert covers(focus_terms("brain tumor survival"), PASSAGE)
    assert not covers(focus_terms("capital of France"), PASSAGE)
    assert not covers([], PASSAGE)


def test_support_by_containment_and_overlap() -> None:
    quoted = support('"Median survival is about 15 months with surgery,"', PASSAGE)
    assert quoted.contained and quoted.supported
    assert support("glioblastoma is the most common malignant primary brain TUMOR", PASSAGE
                   ).contained  # case, spelling and punctuation do not matter
    reordered = support("In adults glioblastoma is the most common primary malignant brain "
                        "tumour.", PASSAGE)
    assert not reordered.contained and reordered.overlap == 1.0 and reordered.supported
    invented = support("Glioblastoma is cured by aspirin in most children.", PASSAGE)
    assert not invented.supported and invented.overlap < 0.5
