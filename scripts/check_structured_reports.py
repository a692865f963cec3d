"""Draft a structured report for every Br35H test-fold image with the released vision model
and count the reports whose text contradicts the diagnosis they were drafted from.

The check (``assistant.report.check``) reads the findings and impression with a
negation-aware rule and compares their stance with the diagnosis: affirmed for tumour,
negated for no tumour, silent when the image was refused as out of scope. It also checks
that every quoted probability is the model's and that every sentence names a source. To
show the check can fail on these very texts, each report is also checked against the
opposite label, where every one should be caught.

    .venv/bin/python scripts/check_structured_reports.py [--jsonl reports.jsonl]

Exit status 1 when any report contradicts its diagnosis.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from assistant.config import Settings
from assistant.data import DataError, require
from assistant.pipeline import Analysis, Pipeline
from assistant.report import SOURCES, check_report
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

BATCH = 32


def test_paths(settings: Settings) -> list[tuple[Path, int]]:
    """(path, label) of the test fold, each file verified against the split manifest."""
    verified = {str(p.relative_to(settings.data_dir)): sha
                for p, sha in require(settings.data_dir, "br35h").items()}
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    for row in rows:
        if verified.get(row.path) != row.sha256:
            raise DataError(f"{row.path} differs from the split manifest")
    return [(settings.data_dir / r.path, r.label) for r in rows]


def draft_all(pipeline: Pipeline, items: list[tuple[Path, int]]) -> list[tuple[Analysis, int]]:
    """(analysis, true label) of every item, drafted in batches."""
    out: list[tuple[Analysis, int]] = []
    for first in range(0, len(items), BATCH):
        batch = items[first:first + BATCH]
        analyses = pipeline.analyze_many([p for p, _ in batch],
                                         study_ids=[p.name for p, _ in batch])
        out += zip(analyses, [label for _, label in batch], strict=True)
    return out


def tally(analyses: list[tuple[Analysis, int]], jsonl: Path | None) -> Counter[str]:
    """Count scope, calls, contradictions and unsourced sentences; print contradictions."""
    counts: Counter[str] = Counter()
    out = jsonl.open("w") if jsonl else None
    for analysis, truth in analyses:
        d = analysis.diagnosis
        verdict = check_report(analysis.report, d, analysis.positive_label)
        counts["reports"] += 1
        counts["in scope" if d.in_scope else "out of scope"] += 1
        counts[f"called {d.label}"] += 1
        counts["correct call"] += d.label == ("tumour" if truth else "no tumour")
        counts["contradicting"] += not verdict.ok
        if d.in_scope:  # the checker must be able to fail: the opposite label is caught
            flipped = replace(d, label="no tumour" if d.label == "tumour" else "tumour")
            counts["caught against the opposite label"] += not check_report(
                analysis.report, flipped, analysis.positive_label).ok
        counts["unsourced sentences"] += sum(not s.sources or not set(s.sources) <= set(SOURCES)
                                             for s in analysis.report.sentences)
        if d.label == "tumour" and analysis.location is not None:
            counts[f"tumour call, heat: {analysis.location.side}"] += 1
        if not verdict.ok:
            print(f"CONTRADICTION {analysis.study_id}: {'; '.join(verdict.problems)}")
        if out is not None:
            out.write(json.dumps({"study_id": analysis.study_id, "truth": truth,
                                  "verdict": asdict(verdict),
                                  "report": analysis.report.to_dict()}) + "\n")
    if out is not None:
        out.close()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsonl", type=Path, help="also write every report and verdict here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    pipeline = Pipeline.from_settings(settings, citations=False)
    start = time.perf_counter()
    analyses = draft_all(pipeline, test_paths(settings))
    seconds = time.perf_counter() - start
    counts = tally(analyses, args.jsonl)
    print(f"Br35H test fold: {counts['reports']} reports drafted in {seconds:.1f} s")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")
    print(f"reports contradicting their diagnosis: {counts['contradicting']} of "
          f"{counts['reports']}; checked against the opposite label instead, "
          f"{counts['caught against the opposite label']} of {counts['in scope']} are caught")
    return 1 if counts["contradicting"] else 0


if __name__ == "__main__":
    sys.exit(main())
