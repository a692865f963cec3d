"""The embedded engine on real Br35H images with the release model: every study gets
exactly one outcome, copies and stored studies are skipped, a bad file fails alone with
its reason, and the results are those of ``Pipeline.analyze`` one study at a time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.batch.engine import EmbeddedEngine, Outcome, Summary
from assistant.batch.inputs import Item, discover, study_id
from assistant.batch.store import BatchStore
from assistant.pipeline import Pipeline
from assistant.report import Context
from tests.conftest import MakeFolder

pytestmark = pytest.mark.data


def _run(pipeline: Pipeline, store: BatchStore, items: list[Item], batch_size: int = 4
         ) -> tuple[dict[int, Outcome], Summary]:
    outcomes: dict[int, Outcome] = {}
    summary = Summary()

    def record(outcome: Outcome) -> None:
        assert outcome.item.seq not in outcomes, "two outcomes for one study"
        outcomes[outcome.item.seq] = outcome
        summary.add(outcome)

    EmbeddedEngine(pipeline, store, batch_size, workers=2).run(items, record)
    return outcomes, summary


def test_every_study_once_bad_files_fail_alone(tmp_path: Path, pipeline: Pipeline,
                                               make_folder: MakeFolder) -> None:
    folder = tmp_path / "in"
    copies = make_folder(folder, 9)
    shutil.copy(copies[0], folder / "zz-copy.jpg")  # the same content twice
    (folder / "sub" / "broken.jpg").write_bytes(copies[1].read_bytes()[:300])
    (folder / "text.png").write_text("not an image")
    items, _ = discover(folder)
    store = BatchStore(tmp_path / "s.sqlite3")
    outcomes, summary = _run(pipeline, store, items)
    assert sorted(outcomes) == [i.seq for i in items]
    status = {i.source: outcomes[i.seq].status for i in items}
    assert status.pop("zz-copy.jpg") == "skipped"  # drafted once, under its first name
    assert status.pop("sub/broken.jpg") == "failed" and status.pop("text.png") == "failed"
    assert set(status.values()) == {"done"}
    errors = {i.source: outcomes[i.seq].error for i in items}
    assert "unsupported file format" in str(errors["text.png"])
    assert errors["sub/broken.jpg"]
    assert (summary.done, summary.skipped, summary.failed) == (9, 1, 2)
    assert store.count_studies("done") == 9 and store.count_studies("failed") == 2

    again, summary = _run(pipeline, store, items)  # everything done is skipped
    assert (summary.done, summary.skipped, summary.failed) == (0, 10, 2)
    assert {o.key for o in again.values()} == {o.key for o in outcomes.values()}


def test_results_match_one_study_at_a_time(tmp_path: Path, pipeline: Pipeline,
                                           make_folder: MakeFolder) -> None:
    paths = make_folder(tmp_path / "in", 6)
    context = Context("headache", 61, "male")
    items = [Item(i, p.name, p, context if i % 2 else None) for i, p in enumerate(paths)]
    store = BatchStore(tmp_path / "s.sqlite3")
    outcomes, _ = _run(pipeline, store, items, batch_size=3)
    for item in items:
        key = outcomes[item.seq].key
        assert key is not None
        stored = store.study(key)
        assert stored is not None
        batched = stored.analysis()
        assert batched is not None
        alone = pipeline.analyze(item.path or Path(), item.context, study_id(key)).to_dict()
        assert batched["study_id"] == alone["study_id"] == study_id(key)
        assert batched["context"] == alone["context"]
        assert batched["diagnosis"]["label"] == alone["diagnosis"]["label"]
        assert batched["diagnosis"]["probability"] == pytest.approx(
            alone["diagnosis"]["probability"], abs=1e-5)
        assert batched["report"]["impression"] == alone["report"]["impression"]
        assert batched["citations_note"] == alone["citations_note"]


def test_ctrl_c_keeps_the_batches_running_and_drops_those_not_started(
        tmp_path: Path, pipeline: Pipeline, make_folder: MakeFolder) -> None:
    paths = make_folder(tmp_path / "in", 12)
    items = [Item(i, p.name, p) for i, p in enumerate(paths)]

    def interrupted() -> Iterator[Item]:
        yield from items
        raise KeyboardInterrupt  # Ctrl-C while the last batches are queued or running

    store = BatchStore(tmp_path / "s.sqlite3")
    outcomes: dict[int, Outcome] = {}
    engine = EmbeddedEngine(pipeline, store, batch_size=2, workers=1)
    with pytest.raises(KeyboardInterrupt):
        engine.run(interrupted(), lambda o: outcomes.setdefault(o.item.seq, o))
    # every outcome told was stored, none twice; at least the batch that was running
    assert outcomes and store.count_studies("done") == len(outcomes)
    assert {o.status for o in outcomes.values()} == {"done"}
    again: dict[int, Outcome] = {}
    EmbeddedEngine(pipeline, store, batch_size=2, workers=1).run(
        items, lambda o: again.setdefault(o.item.seq, o))
    assert sorted(again) == list(range(12))
    assert sum(o.status == "skipped" for o in again.values()) == len(outcomes)
