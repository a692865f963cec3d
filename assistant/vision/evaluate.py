"""Evaluation of a vision bundle: the held-out test fold with bootstrap intervals and
calibration, out-of-scope rejection, heatmap faithfulness, and cross-validation summaries.
Every function returns plain data (JSON-ready) plus, where useful, printable text."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.vision.checkpoint import VisionBundle, as_batch, predict_proba
from assistant.vision.data import Dataset
from assistant.vision.experiment import FoldOutcome
from assistant.vision.explain import (
    Method,
    deletion_curve,
    foreground_mask,
    heat_share_in_mask,
    patch_heat,
)
from assistant.vision.infer import VisionModel
from assistant.vision.metrics import (
    confusion,
    evaluate_binary,
    reliability_bins,
    roc_auc,
    roc_curve,
)
from assistant.vision.plots import plot_reliability, plot_roc
from assistant.vision.probes import out_of_scope_probes

log = logging.getLogger(__name__)


def test_split(bundle: VisionBundle, dataset: Dataset, n_boot: int = 2000,
               ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Metrics on the test fold; returns (result, labels, calibrated p(tumour),
    uncalibrated p(tumour))."""
    mask = dataset.folds == "test"
    y, groups = dataset.labels[mask], dataset.groups[mask]
    p = predict_proba(bundle, dataset.images[mask])[:, 1]
    raw = VisionBundle(bundle.model, bundle.preprocess, bundle.labels, 1.0, bundle.threshold,
                       bundle.ood, bundle.provenance)
    p_raw = predict_proba(raw, dataset.images[mask])[:, 1]
    result = evaluate_binary(y, p, bundle.threshold, groups=groups, n_boot=n_boot,
                             p_uncalibrated=p_raw)
    return dict(result), y, p, p_raw


def write_plots(out_dir: Path, y: np.ndarray, p: np.ndarray, p_raw: np.ndarray,
                baselines: dict[str, np.ndarray]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {"ours": (*roc_curve(y, p)[:2], roc_auc(y, p))}
    for name, pb in baselines.items():
        curves[name] = (*roc_curve(y, pb)[:2], roc_auc(y, pb))
    roc_path, rel_path = out_dir / "roc.png", out_dir / "reliability.png"
    plot_roc(curves, roc_path, "Br35H test fold: ROC")
    before, after = reliability_bins(y, p_raw), reliability_bins(y, p)
    plot_reliability(before, after, rel_path, "Br35H test fold: reliability",
                     before.ece, after.ece)
    return [roc_path, rel_path]


def scope(model: VisionModel, dataset: Dataset, data_dir: Path) -> dict[str, Any]:
    """Rejection rate on images that are not brain MRI; false rejection on the test fold."""
    probes = out_of_scope_probes(data_dir)
    verdicts = model.diagnose([model.prepare(p.pixels) for p in probes])
    kinds: dict[str, list[int]] = {}
    missed = []
    for probe, verdict in zip(probes, verdicts, strict=True):
        kinds.setdefault(probe.kind, []).append(int(not verdict.in_scope))
        if verdict.in_scope:
            missed.append(f"{probe.name} ({probe.kind})")
    test = dataset.images[dataset.folds == "test"]
    in_domain = model.diagnose(list(test))
    false_rejections = sum(not d.in_scope for d in in_domain)
    return {
        "out_of_scope_images": len(probes),
        "rejected": sum(sum(v) for v in kinds.values()),
        "rejected_by_kind": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(kinds.items())},
        "accepted_out_of_scope": missed,
        "in_domain_test_images": len(test),
        "false_rejections": false_rejections,
    }


def heatmaps(bundle: VisionBundle, dataset: Dataset, method: Method, seed: int = 0,
             ) -> dict[str, Any]:
    """On tumour test images: heat share on the head's foreground, and the deletion test."""
    mask = (dataset.folds == "test") & (dataset.labels == 1)
    images = dataset.images[mask]
    x = as_batch(images)
    heat = patch_heat(bundle.model, x, method)
    shares = [heat_share_in_mask(h, foreground_mask(img))
              for h, img in zip(heat, images, strict=True)]
    rng = np.random.default_rng(seed)
    hot_auc, random_auc = [], []
    for i in range(len(images)):
        hot = np.argsort(-heat[i].ravel(), kind="stable")
        hot_auc.append(float(deletion_curve(bundle.model, x[i:i + 1], hot).mean()))
        rand = [float(deletion_curve(bundle.model, x[i:i + 1],
                                     rng.permutation(hot.size)).mean()) for _ in range(3)]
        random_auc.append(float(np.mean(rand)))
    hot_arr, rand_arr = np.array(hot_auc), np.array(random_auc)
    return {
        "method": method, "tumour_test_images": int(mask.sum()),
        "foreground_share_mean": float(np.nanmean(shares)),
        "foreground_share_median": float(np.nanmedian(shares)),
        "deletion_auc_hottest_first": float(hot_arr.mean()),
        "deletion_auc_random_order": float(rand_arr.mean()),
        "images_where_hottest_first_drops_faster": int((hot_arr < rand_arr).sum()),
    }


def cv_summary(outcomes: list[FoldOutcome]) -> dict[str, Any]:
    """Per-fold metrics at each fold's own stored threshold; mean and sample std."""
    rows = []
    for o in outcomes:
        cm = confusion(o.labels, o.p_tumour >= o.threshold)
        rows.append({"fold": o.fold, "n": len(o.labels), "auc": roc_auc(o.labels, o.p_tumour),
                     "accuracy": cm.accuracy, "sensitivity": cm.sensitivity,
                     "specificity": cm.specificity, "f1": cm.f1, "threshold": o.threshold,
                     "best_epoch": o.best_epoch, "seconds": round(o.seconds, 1)})
    summary: dict[str, Any] = {"folds": rows}
    for key in ("accuracy", "auc", "sensitivity", "specificity", "f1"):
        values = np.array([r[key] for r in rows], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()),
                        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "min": float(values.min()), "max": float(values.max())}
    return summary


def timing(run: Callable[[torch.Tensor], object], size: int, repeats: int = 50,
           ) -> dict[str, float]:
    """Latency at batch 1 and throughput at batch 32 of ``run`` on random (B, 1, size, size)
    inputs, after a warm-up, in this process."""
    x1, x32 = torch.rand(1, 1, size, size), torch.rand(32, 1, size, size)
    batches = max(3, repeats // 10)
    with torch.no_grad():
        for _ in range(10):
            run(x1)
        start = time.perf_counter()
        for _ in range(repeats):
            run(x1)
        latency = (time.perf_counter() - start) / repeats
        run(x32)
        start = time.perf_counter()
        for _ in range(batches):
            run(x32)
        throughput = batches * 32 / (time.perf_counter() - start)
    return {"latency_ms_batch1": latency * 1000, "images_per_s_batch32": throughput}
