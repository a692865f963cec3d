"""The Ray engine on a local Ray cluster (2 CPUs, 2 actors) gives the embedded engine's
results: the same studies, outcomes, ids, diagnoses and reports, in the same output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assistant.batch.commands import DraftOptions, run_draft
from assistant.config import Settings
from tests.conftest import MakeFolder

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_gives_the_embedded_engines_results(tmp_path: Path, settings: Settings,
                                                make_folder: MakeFolder) -> None:
    make_folder(tmp_path / "in", 8)
    (tmp_path / "in" / "sub" / "bad.jpg").write_bytes(b"\xff\xd8\xff broken")
    summaries = {}
    for engine in ("embedded", "ray"):
        options = DraftOptions(tmp_path / f"{engine}.jsonl", engine=engine,  # type: ignore[arg-type]
                               db=tmp_path / f"{engine}.sqlite3", batch_size=3, workers=2,
                               progress=False)
        summaries[engine] = run_draft(settings, tmp_path / "in", options)
    assert summaries["ray"] == summaries["embedded"]
    assert (summaries["ray"].done, summaries["ray"].failed) == (8, 1)
    embedded, ray = _lines(tmp_path / "embedded.jsonl"), _lines(tmp_path / "ray.jsonl")
    assert [x["source"] for x in ray] == [x["source"] for x in embedded]
    for a, b in zip(embedded, ray, strict=True):
        assert (a["status"], a["error"]) == (b["status"], b["error"])
        if a["status"] == "failed":
            continue
        for field in ("study_id", "image_sha256", "in_scope", "context", "citations",
                      "citations_query", "citations_note", "models", "image"):
            assert a[field] == b[field], field
        assert a["diagnosis"]["label"] == b["diagnosis"]["label"]
        assert a["diagnosis"]["probability"] == pytest.approx(b["diagnosis"]["probability"],
                                                             abs=1e-5)
        assert a["report"]["text"] == b["report"]["text"]
        assert (a["heatmap"] is None) == (b["heatmap"] is None)
