"""``assistant eval report``: the decoder on the held-out IU X-ray reports, beside the
nearest-neighbour and fixed-normal baselines and an ablation without the indication,
with 95% bootstrap intervals, findings consistency and a leakage check.

Leakage: a test report whose text (as scoring words) appears word for word among the
training reports can be reproduced by copying; every method is also scored without
those reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from assistant.report.decoder.baselines import NearestNeighbour, fixed_normal_report
from assistant.report.decoder.bundle import Drafter
from assistant.report.decoder.data import ReportRecord
from assistant.report.decoder.findings import consistency
from assistant.report.decoder.generate import DecodeConfig
from assistant.report.decoder.scores import METRICS, score
from assistant.report.decoder.vocab import words

log = logging.getLogger(__name__)
BATCH = 32
MBR_SAMPLES = 8  # the minimum-Bayes-risk variant evaluated beside the release decoding


@dataclass(frozen=True)
class TuneGrid:
    """Decoding settings tried on the validation reports; beam 1 (greedy) once, at length
    penalty 1.0 (the penalty only ranks beams)."""
    beams: tuple[int, ...] = (1, 3, 5)
    length_penalties: tuple[float, ...] = (0.6, 1.0, 1.6, 2.2, 3.0)
    neighbour_candidates: tuple[int, ...] = (0,)


TRAIN_GRID = TuneGrid()  # what ``assistant train report`` tunes (the release's decoding)
# ``assistant train report-decoding``: wider beams (8: a forced 100-token report about
# 0.5 s on one thread) and the nearest training reports as candidates.
RETUNE_GRID = TuneGrid((1, 3, 5, 8), (1.0, 1.3, 1.6, 1.9, 2.2), (0, 1, 2))
TARGETS = {"BLEU-4": 0.18, "METEOR": 0.20, "ROUGE-L": 0.38, "CIDEr": 1.0}
# The second nearest-neighbour baseline's weight of the indications' wording (chosen on
# the training reports left out one at a time; ``neighbours``).
NEIGHBOUR_INDICATION = 0.3


def draft_all(drafter: Drafter, records: Sequence[ReportRecord],
              decode: DecodeConfig | None = None, indication: bool = True) -> list[str]:
    return drafter.draft_many([r.findings for r in records],
                              [r.indication if indication else None for r in records],
                              decode, BATCH)


def tune_decoding(drafter: Drafter, val: Sequence[ReportRecord], grid: TuneGrid = TRAIN_GRID,
                  ) -> tuple[DecodeConfig, list[dict[str, Any]]]:
    """The decoding settings that score best on the validation reports (never the test
    reports): mean of BLEU-4, ROUGE-L and CIDEr, each over its target. Each beam width and
    length penalty decodes once; the neighbour candidates only change the choice among
    the decoded candidates. Torch's threads are spent as batches side by side (one thread
    each), as ``Drafter.draft_many`` recommends."""
    refs = [r.target for r in val]
    findings, indications = [r.findings for r in val], [r.indication for r in val]
    neighbour_counts = grid.neighbour_candidates if drafter.neighbours is not None else (0,)
    trials: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for beam, lp in [(b, p) for b in grid.beams
                         for p in (grid.length_penalties if b > 1 else (1.0,))]:
            decoded = replace(drafter.bundle.decode, beam=beam, length_penalty=lp)
            pools = drafter.candidates_many(findings, indications, decoded, BATCH, threads)
            for count in neighbour_counts:
                cfg = replace(decoded, neighbour_candidates=count)
                hyps = [drafter.finish(drafter.choose(p, f, cfg, ind), f, cfg, ind).text
                        for p, f, ind in zip(pools, findings, indications, strict=True)]
                s = score(refs, hyps, n_boot=0, meteor=False).point
                objective = sum(s[m] / TARGETS[m] for m in ("BLEU-4", "ROUGE-L", "CIDEr")) / 3
                trials.append({"beam": beam, "length_penalty": lp,
                               "neighbour_candidates": count, "objective": objective,
                               **{m: s[m] for m in ("BLEU-4", "ROUGE-L", "CIDEr")}})
                log.info("decoding beam %d, length penalty %.1f, %d neighbour candidates: "
                         "%.4f", beam, lp, count, objective)
    finally:
        torch.set_num_threads(threads)
    best = max(trials, key=lambda t: t["objective"])
    return replace(drafter.bundle.decode, beam=int(best["beam"]),
                   length_penalty=float(best["length_penalty"]),
                   neighbour_candidates=int(best["neighbour_candidates"])), trials


def leaked(train: Sequence[ReportRecord], test: Sequence[ReportRecord]) -> list[bool]:
    seen = {" ".join(words(r.target)) for r in train}
    return [" ".join(words(r.target)) in seen for r in test]


def _scored(refs: list[str], hyps: list[str], records: Sequence[ReportRecord],
            keep: list[bool], n_boot: int) -> dict[str, Any]:
    kept = [i for i, k in enumerate(keep) if k]
    return {"all": score(refs, hyps, n_boot=n_boot).to_dict(),
            "without_leaked": score([refs[i] for i in kept], [hyps[i] for i in kept],
                                    n_boot=n_boot).to_dict(),
            "consistency": consistency(hyps, [r.findings for r in records]).to_dict()}


def evaluate(drafter: Drafter, split: dict[str, list[ReportRecord]], n_boot: int = 1000,
             ) -> dict[str, Any]:
    train, test = split["train"], split["test"]
    refs = [r.target for r in test]
    is_leaked = leaked(train, test)
    keep = [not x for x in is_leaked]
    nearest = NearestNeighbour(train)
    styled = NearestNeighbour(train, NEIGHBOUR_INDICATION)
    normal = fixed_normal_report(train)
    methods: dict[str, Callable[[], list[str]]] = {
        "decoder": lambda: draft_all(drafter, test),
        "decoder without indication": lambda: draft_all(drafter, test, indication=False),
    }
    if drafter.neighbours is not None:  # the other side of completion (``complete.py``)
        flip = not drafter.bundle.decode.complete
        methods[f"decoder {'with' if flip else 'without'} completion"] = lambda: draft_all(
            drafter, test, replace(drafter.bundle.decode, complete=flip))
    methods |= {
        f"decoder, MBR over {MBR_SAMPLES} samples": lambda: draft_all(
            drafter, test, replace(drafter.bundle.decode, samples=MBR_SAMPLES)),
        "nearest neighbour": lambda: [nearest(r.findings) for r in test],
        "nearest neighbour, codes + indication": lambda: [
            styled(r.findings, r.indication) for r in test],
        "fixed normal report": lambda: [normal] * len(test),
    }
    results: dict[str, Any] = {"test_reports": len(test), "leaked": sum(is_leaked),
                               "methods": {}}
    drafted: dict[str, list[str]] = {}
    for name, run in methods.items():
        start = time.monotonic()
        hyps = drafted[name] = run()
        results["methods"][name] = {**_scored(refs, hyps, test, keep, n_boot),
                                    "seconds": round(time.monotonic() - start, 1)}
        log.info("%s: BLEU-4 %.4f", name, results["methods"][name]["all"]["BLEU-4"]["value"])
    results["matcher_on_references"] = consistency(refs, [r.findings for r in test]).to_dict()
    results["examples"] = [{"uid": r.uid, "codes": [f.code for f in r.findings],
                            "generated": h} for r, h in
                           zip(test[:5], drafted["decoder"][:5], strict=True)]
    return results


def table(results: dict[str, Any], subset: str = "all") -> str:
    """Markdown: one row per method, value (95% interval) per metric."""
    head = "| method | " + " | ".join(METRICS) + " | findings F1 |"
    rows = [head, "|" + "---|" * (len(METRICS) + 2)]
    for name, r in results["methods"].items():
        s = r[subset]
        cells = [f"{s[m]['value']:.3f} ({s[m]['low']:.3f}-{s[m]['high']:.3f})" for m in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {r['consistency']['f1']:.3f} |")
    return "\n".join(rows)
