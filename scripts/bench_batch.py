"""Batch drafting throughput, side by side in one process on the same folder of real
Br35H images: one study at a time in a loop (``Pipeline.analyze`` per file, each result
written as a JSON line) against ``assistant draft``'s embedded engine and its Ray engine.

Each engine starts with an empty store, so every study is drafted. Drafting times leave
out what each needs once before its first study (the loop and the embedded engine: the
pipeline; Ray: the local cluster, timed apart, and nothing else: its actors load their
pipelines inside the timed run, as they do on every run). Totals with set-up are printed
too. Run with ``OMP_WAIT_POLICY=PASSIVE`` on an otherwise idle machine:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_batch.py --n 200
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from assistant.batch import output
from assistant.batch.engine import EmbeddedEngine, Outcome, Summary
from assistant.batch.inputs import Item, discover
from assistant.batch.store import BatchStore
from assistant.config import Settings
from assistant.malloc import keep_heap
from assistant.pipeline import Pipeline
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

log = logging.getLogger("bench_batch")


@dataclass
class Timing:
    name: str
    setup_s: float
    draft_s: float
    n: int
    cpu_s: float | None = None  # this process's CPU time while drafting (not Ray's actors)

    def row(self, base: Timing) -> str:
        rate = self.n / self.draft_s
        cpu = ("-" if self.cpu_s is None else
               f"{1000 * self.cpu_s / self.n:.1f} / {self.cpu_s / self.draft_s:.2f}")
        return (f"| {self.name} | {self.n} | {self.draft_s:.2f} | {rate:.1f} | "
                f"{base.draft_s / self.draft_s:.2f}x | {cpu} | {self.setup_s:.1f} | "
                f"{self.setup_s + self.draft_s:.1f} |")


def copy_images(settings: Settings, n: int, folder: Path) -> None:
    """n Br35H images, half tumour and half not, test fold first (then the other folds,
    for n > 444), copied into ``folder``."""
    rows = sorted(read_split_manifest(BR35H_SPLIT_PATH), key=lambda r: r.fold != TEST_FOLD)
    picked = [r for r in rows if r.label == 1][: n // 2] + [r for r in rows if r.label == 0][
        : n - n // 2]
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} images for --n {n}")
    for r in picked:
        src = settings.data_dir / r.path
        shutil.copy(src, folder / f"{r.label}-{src.name}")


def write_outcomes(store: BatchStore, items: list[Item], outcomes: dict[int, Outcome],
                   out: Path) -> None:
    rows = (output.Drafted(it.seq, it.source, outcomes[it.seq].error,
                           store.study(outcomes[it.seq].key or "")) for it in items)
    output.write(out, rows, "jsonl")


def run_loop(pipeline: Pipeline, items: list[Item], out: Path, setup_s: float,
             name: str) -> Timing:
    start, cpu = time.perf_counter(), time.process_time()
    with out.open("w") as f:
        for item in items:
            assert item.path is not None
            analysis = pipeline.analyze(item.path)
            f.write(json.dumps({"source": item.source, "status": "done", "error": None,
                                **analysis.to_dict()}) + "\n")
    return Timing(name, setup_s, time.perf_counter() - start, len(items),
                  time.process_time() - cpu)


def run_embedded(pipeline: Pipeline, items: list[Item], work: Path, setup_s: float,
                 batch_size: int, workers: int) -> Timing:
    store = BatchStore(work / "embedded.sqlite3")
    outcomes: dict[int, Outcome] = {}
    summary = Summary()

    def on_outcome(o: Outcome) -> None:
        outcomes[o.item.seq] = o
        summary.add(o)

    start, cpu = time.perf_counter(), time.process_time()
    engine = EmbeddedEngine(pipeline, store, batch_size, workers, torch_threads=1)  # as the CLI
    engine.run(items, on_outcome)
    write_outcomes(store, items, outcomes, work / "embedded.jsonl")
    elapsed = time.perf_counter() - start
    log.info("embedded: %s", summary.text())
    return Timing(f"embedded engine (batch {batch_size}, {engine.workers} in flight)",
                  setup_s, elapsed, len(items), time.process_time() - cpu)


def run_ray_engine(settings: Settings, items: list[Item], work: Path, batch_size: int,
                   actors: int) -> Timing:
    import ray

    from assistant.batch.ray_engine import connect, run_ray

    start = time.perf_counter()
    connect(None, None)
    setup_s = time.perf_counter() - start
    store = BatchStore(work / "ray.sqlite3")
    outcomes: dict[int, Outcome] = {}
    try:
        start = time.perf_counter()
        run_ray(settings, store, items, lambda o: outcomes.__setitem__(o.item.seq, o),
                batch_size, actors)
        write_outcomes(store, items, outcomes, work / "ray.jsonl")
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    return Timing(f"ray engine ({actors} actors, local cluster)", setup_s, elapsed,
                  len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="images (half of each label)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-loop", action="store_true", help="engines only (large --n)")
    parser.add_argument("--malloc", choices=("batch", "default"), default="batch",
                        help="batch: glibc tuned as `assistant draft` tunes it, for every run "
                             "here; default: glibc as it comes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    settings = Settings()
    if args.malloc == "batch":
        keep_heap(settings.batch)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        copy_images(settings, args.n, work / "in")
        items, _ = discover(work / "in")
        start = time.perf_counter()
        pipeline = Pipeline.from_settings(settings, citations=True)
        pipeline.analyze(items[0].path or Path())  # warm: first call, citations searched
        setup_s = time.perf_counter() - start
        threads = torch.get_num_threads()
        loops = []
        if not args.no_loop:
            loops.append(run_loop(pipeline, items, work / "loop.jsonl", setup_s,
                                  f"loop, one study at a time ({threads} torch threads)"))
            torch.set_num_threads(1)
            loops.append(run_loop(pipeline, items, work / "loop1.jsonl", setup_s,
                                  "loop, one study at a time (1 torch thread)"))
            torch.set_num_threads(threads)
        embedded = run_embedded(pipeline, items, work, setup_s, args.batch_size, args.workers)
        ray_t = (None if args.no_ray
                 else run_ray_engine(settings, items, work, args.batch_size, args.actors))
    base = min(loops, key=lambda t: t.draft_s) if loops else embedded
    print(f"\n{args.n} Br35H images, malloc {args.malloc}; ratio: drafting speed against "
          f"{base.name}\n")
    print("| run | studies | drafting s | studies/s | speed vs loop | CPU ms/study / cores "
          "| set-up s | total s |")
    print("|---|---|---|---|---|---|---|---|")
    for t in [*loops, embedded, *([ray_t] if ray_t else [])]:
        print(t.row(base))
    if ray_t is not None:
        total = (ray_t.setup_s + ray_t.draft_s) / (embedded.setup_s + embedded.draft_s)
        print(f"\nray / embedded time: drafting {ray_t.draft_s / embedded.draft_s:.2f}x, "
              f"with set-up {total:.2f}x")


if __name__ == "__main__":
    main()
