"""Report decoder speed on this machine: a 100-token report for one study, and drafting
many studies in batches against one at a time, in one process.

    python scripts/bench_report.py [--checkpoint F] [--studies 128] [--threads 1 2]
                                   [--workers 2]

For each torch thread count: the median seconds of a forced 100-token report (greedy and
with the release decoding settings), then reports per second one at a time and batched
(``Drafter.draft_many``: one batch at a time, then ``--workers`` batches side by side on
one torch thread each), and their ratios against one at a time. The service runs torch on
one thread per request, where small decoding steps are faster than on two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from assistant.config import get_settings
from assistant.report.decoder.bundle import Drafter, ReportBundle
from assistant.report.decoder.commands import load_split, release_report_path, report_drafter
from assistant.report.decoder.data import ReportRecord


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--studies", type=int, default=128)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ap.add_argument("--workers", type=int, default=cores or 1,
                    help="batches decoding at once in the last measure (default: the cores)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    settings = get_settings()
    drafter = report_drafter(settings, args.checkpoint or release_report_path(settings))
    bundle = drafter.bundle
    test = load_split(settings)["test"][:args.studies]
    print(f"checkpoint {bundle.name} sha256 {bundle.sha256[:12]}, "
          f"release decoding {bundle.decode.to_dict()}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"-- {threads} torch thread(s)")
        _measure(drafter, bundle, test, args)


def _measure(drafter: Drafter, bundle: ReportBundle, test: list[ReportRecord],
             args: argparse.Namespace) -> None:
    one = [test[0].findings]
    for name, cfg in (("greedy", replace(bundle.decode, beam=1)), ("release", bundle.decode)):
        forced = replace(cfg, max_tokens=100, min_tokens=100, no_repeat_ngram=0,
                         consistent=False)
        drafter.draft(one, None, None, forced)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            drafter.draft(one, None, None, forced)
            times.append(time.perf_counter() - start)
        print(f"100-token report, {name} (beam {cfg.beam}): median "
              f"{statistics.median(times):.3f} s ({100 / statistics.median(times):.0f} tokens/s)")
    findings = [r.findings for r in test]
    indications = [r.indication for r in test]
    for f, ind in zip(findings, indications, strict=True):
        drafter.condition(f, ind)  # every measure below finds the neighbour rankings cached
    start = time.perf_counter()
    for f, ind in zip(findings, indications, strict=True):
        drafter.draft([f], [ind])
    single = time.perf_counter() - start
    start = time.perf_counter()
    drafter.draft_many(findings, indications, batch=args.batch)
    batched = time.perf_counter() - start
    print(f"{len(test)} studies, release decoding: one at a time {len(test) / single:.1f}/s, "
          f"batches of {args.batch} {len(test) / batched:.1f}/s, ratio {single / batched:.2f}x")
    if args.workers > 1 and torch.get_num_threads() == 1:
        start = time.perf_counter()
        drafter.draft_many(findings, indications, batch=args.batch, workers=args.workers)
        side = time.perf_counter() - start
        print(f"  {args.workers} batches of {args.batch} at once: {len(test) / side:.1f}/s, "
              f"ratio {single / side:.2f}x one at a time")


if __name__ == "__main__":
    main()
