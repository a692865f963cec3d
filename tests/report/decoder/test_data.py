"""The IU X-ray reports as fetched, and the committed split manifest."""

from __future__ import annotations

import pytest

from assistant.config import Settings
from assistant.report.decoder.baselines import NearestNeighbour
from assistant.report.decoder.commands import ARCHIVE
from assistant.report.decoder.data import (
    SPLIT_MANIFEST,
    ReportRecord,
    make_split,
    read_reports,
    read_split,
    split_records,
)
from assistant.report.decoder.evaluate import leaked

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def records() -> list[ReportRecord]:
    return read_reports(Settings().data_dir / ARCHIVE)


def test_reports_with_findings_or_impression_are_all_read(records: list[ReportRecord]) -> None:
    assert len(records) == 3927
    assert all(r.target for r in records)
    assert sum(r.is_normal for r in records) > 1000


def test_the_committed_split_is_the_seeded_70_10_20_split_and_holds_no_text(
        records: list[ReportRecord]) -> None:
    split = read_split()
    assert split == make_split([r.uid for r in records])
    parts = split_records(records, split)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [2749, 393, 785]
    assert SPLIT_MANIFEST.read_text().splitlines()[0] == "uid,split"
    assert all(len(line.split(",")) == 2 for line in SPLIT_MANIFEST.read_text().splitlines())


def test_nearest_neighbour_returns_a_training_report_with_the_same_codes(
        records: list[ReportRecord]) -> None:
    parts = split_records(records, read_split())
    nn = NearestNeighbour(parts["train"])
    train_texts = {r.target: r for r in parts["train"]}
    for rec in parts["test"][:20]:
        text = nn(rec.findings)
        assert text in train_texts
        if any({f.code.lower() for f in rec.findings} == {f.code.lower() for f in t.findings}
               for t in parts["train"]):
            assert {f.code.lower() for f in train_texts[text].findings} == {
                f.code.lower() for f in rec.findings}
    # Word-for-word copies of training reports exist among the test reports.
    assert 0 < sum(leaked(parts["train"], parts["test"])) < len(parts["test"])
