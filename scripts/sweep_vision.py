"""Grouped 5-fold cross-validation of training variants of the Br35H classifier, side by
side, each in its own process, on the CPU or a GPU.

    python scripts/sweep_vision.py export --out br35h.npz        # preprocessed images
    python scripts/sweep_vision.py run --npz br35h.npz --device cuda --jobs 8 \
        --variant base={} --variant ema={"ema":0.995} --variant seed1={"seed":1}

A variant is a name and the TrainConfig fields it changes. ``export`` writes the
preprocessed images of the five cross-validation folds (8-bit, so the file can travel;
not the test fold) with labels, groups and folds; ``run``
reads them (or, without ``--npz``, loads Br35H as training does) and prints, per variant,
the cross-validation's mean, spread and per-fold accuracy, AUC, sensitivity and
specificity at each fold's stored threshold. The held-out test fold is never touched.
Compare variants against the base and its seed variants run in the same call: a
difference inside the seeds' spread is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _release_preprocess() -> Any:
    """The release recipe's preprocessing (``assistant train vision``'s defaults)."""
    from assistant.imaging.preprocess import PreprocessConfig
    from assistant.vision import ANTIALIAS, CROP_WORK_SIDE
    from assistant.vision.model import VisionConfig

    return PreprocessConfig(image_size=VisionConfig().image_size, crop_work_side=CROP_WORK_SIDE,
                            antialias=ANTIALIAS)


def _dataset(npz: Path | None, restored_copies: int = 0, seed: int = 0) -> Any:
    from assistant.config import get_settings
    from assistant.vision.data import Dataset, load_br35h

    if npz is None:
        return load_br35h(get_settings().data_dir, _release_preprocess(),
                          restored_copies=restored_copies, seed=seed)
    if restored_copies:
        raise SystemExit("re-stored copies are made from the source files, which an "
                         "exported --npz does not carry: run that variant without --npz")
    z = np.load(npz)
    return Dataset(z["images"].astype(np.float32) / 255.0, z["labels"], z["groups"],
                   z["folds"], tuple(z["paths"]), str(z["split_sha256"]))


def _export(out: Path) -> None:
    from assistant.vision.splits import TEST_FOLD

    d = _dataset(None)
    d = d.select(d.folds != TEST_FOLD)  # the held-out test fold never leaves
    np.savez_compressed(out, images=np.round(d.images * 255).astype(np.uint8),
                        labels=d.labels, groups=d.groups, folds=d.folds,
                        paths=np.array(d.paths), split_sha256=np.array(d.split_sha256))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {len(d.labels)} images)")


def _cv(name: str, changes: dict[str, Any], npz: Path | None, device: str,
        threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from assistant.config import get_settings
    from assistant.vision.evaluate import cv_summary
    from assistant.vision.experiment import cross_validate
    from assistant.vision.model import VisionConfig
    from assistant.vision.train import TrainConfig

    start = time.perf_counter()
    model_cfg = VisionConfig()
    train_cfg = replace(TrainConfig(), **changes)
    outcomes = cross_validate(_dataset(npz, train_cfg.restored_copies, train_cfg.seed),
                              model_cfg, _release_preprocess(), train_cfg,
                              get_settings().data_dir, progress=False, device=device)
    summary = cv_summary(outcomes)
    summary.update(name=name, changes=changes, seconds=round(time.perf_counter() - start, 1))
    return summary


def _run(args: argparse.Namespace) -> None:
    variants = []
    for spec in args.variant:
        name, _, body = spec.partition("=")
        variants.append((name, json.loads(body or "{}")))
    out_lines = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_cv, n, c, args.npz, args.device, args.threads)
                   for n, c in variants]
        for fut in futures:
            s = fut.result()
            out_lines.append(s)
            folds = " ".join(f"{r['accuracy']:.4f}" for r in s["folds"])
            print(f"{s['name']:<14} acc {s['accuracy']['mean']:.4f} "
                  f"(sd {s['accuracy']['std']:.4f}) auc {s['auc']['mean']:.4f} "
                  f"sens {s['sensitivity']['mean']:.4f} spec {s['specificity']['mean']:.4f} "
                  f"epochs {[r['best_epoch'] for r in s['folds']]} folds [{folds}] "
                  f"{s['seconds']:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out_lines, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("run")
    run.add_argument("--npz", type=Path)
    run.add_argument("--device", default="cpu")
    run.add_argument("--jobs", type=int, default=1)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--variant", action="append", default=[], help="name=JSON changes")
    run.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.cmd == "export":
        _export(args.out)
    else:
        if not args.variant:
            sys.exit("name at least one --variant")
        _run(args)


if __name__ == "__main__":
    main()
