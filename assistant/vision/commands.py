"""``assistant train vision`` and ``assistant eval vision``: thin glue over the library."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from assistant.config import Settings
from assistant.imaging.preprocess import PreprocessConfig
from assistant.vision import evaluate
from assistant.vision.baselines import BASELINE_THRESHOLD, run_baselines
from assistant.vision.card import render_card
from assistant.vision.checkpoint import RELEASE_NAME, VisionBundle, load_bundle
from assistant.vision.data import LABELS, Dataset, load_br35h
from assistant.vision.experiment import cross_validate, fit_bundle
from assistant.vision.explain import Method
from assistant.vision.infer import VisionModel
from assistant.vision.metrics import evaluate_binary, format_report
from assistant.vision.model import VisionConfig
from assistant.vision.train import TrainConfig

log = logging.getLogger(__name__)

Variant = Literal["hybrid", "vit"]


def model_config(variant: Variant) -> VisionConfig:
    if variant == "vit":
        return VisionConfig(stem="patch", patch_size=16, width=128, depth=4, heads=4)
    return VisionConfig()


def train_vision(settings: Settings, variant: Variant, train_cfg: TrainConfig, val_fold: str,
                 out: Path, progress: bool = True, crop_work_side: int | None = None,
                 antialias: float = 0.0) -> VisionBundle:
    """``crop_work_side``, ``antialias``: see ``PreprocessConfig``."""
    preprocess = PreprocessConfig(image_size=model_config(variant).image_size,
                                  crop_work_side=crop_work_side, antialias=antialias)
    dataset = load_br35h(settings.data_dir, preprocess,
                         restored_copies=train_cfg.restored_copies, seed=train_cfg.seed)
    bundle, result = fit_bundle(dataset, model_config(variant), preprocess, train_cfg,
                                settings.data_dir, val_fold, progress=progress)
    bundle.provenance.update({"name": f"{RELEASE_NAME}-{variant}", "variant": variant,
                              "command": "assistant " + " ".join(sys.argv[1:])})
    sha = bundle.save(out)
    best = result.history[result.best_epoch]
    print(f"saved {out} (sha256 {sha})")
    print(f"best epoch {result.best_epoch}: val loss {best['val_loss']:.4f}, "
          f"val AUC {best['val_auc']:.4f}; temperature {bundle.temperature:.3f}, "
          f"threshold {bundle.threshold:.4f}; {result.seconds:.0f} s")
    return bundle


def _baseline_section(dataset: Dataset, y: np.ndarray, n_boot: int,
                      progress: bool) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    train_mask, val_mask, test_mask = dataset.fold_masks("0")
    probs = run_baselines(dataset, test_mask, train_mask, val_mask, progress=progress)
    results, text = {}, []
    for name, p in probs.items():
        res = evaluate_binary(y, p, BASELINE_THRESHOLD, groups=dataset.groups[test_mask],
                              n_boot=n_boot)
        results[name] = dict(res)
        text.append(format_report(res, f"baseline: {name} (threshold 0.5)",
                                  labels=(LABELS[1], LABELS[0])))
    return results, probs, "\n\n".join(text)


def eval_vision(settings: Settings, checkpoint: Path, out_dir: Path, *, cv: bool,
                baselines: bool, heat_method: Method, n_boot: int, card: Path | None = None,
                progress: bool = True) -> dict[str, Any]:
    bundle = load_bundle(checkpoint)
    train_cfg = _recipe(bundle) if cv else None
    # The re-stored training copies are made only when the cross-validation retrains.
    dataset = load_br35h(settings.data_dir, bundle.preprocess,
                         restored_copies=train_cfg.restored_copies if train_cfg else 0,
                         seed=train_cfg.seed if train_cfg else 0)
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "sha256": bundle.sha256,
                               "name": bundle.name,
                               "command": "assistant " + " ".join(sys.argv[1:])}
    test, y, p, p_raw = evaluate.test_split(bundle, dataset, n_boot)
    results["test"] = test
    print(format_report(test, f"{bundle.name} on the held-out test fold "  # type: ignore[arg-type]
                        f"(threshold {bundle.threshold:.4f})", labels=(LABELS[1], LABELS[0])))
    baseline_probs: dict[str, np.ndarray] = {}
    if baselines:
        results["baselines"], baseline_probs, text = _baseline_section(dataset, y, n_boot,
                                                                       progress)
        print("\n" + text)
    results["plots"] = [str(p) for p in evaluate.write_plots(out_dir, y, p, p_raw,
                                                             baseline_probs)]
    model = VisionModel(bundle, heat_method)
    results["scope"] = evaluate.scope(model, dataset, settings.data_dir)
    results["heatmap"] = evaluate.heatmaps(bundle, dataset, heat_method)
    other: Method = "gradient" if heat_method == "rollout" else "rollout"
    results["heatmap_compared"] = evaluate.heatmaps(bundle, dataset, other)
    results["timing_eager"] = evaluate.timing(bundle.model.eval(),
                                              bundle.model.config.image_size)
    if train_cfg is not None:
        outcomes = cross_validate(dataset, bundle.model.config, bundle.preprocess, train_cfg,
                                  settings.data_dir, progress)
        results["cross_validation"] = evaluate.cv_summary(outcomes)
        # Per-image CV predictions, so threshold policies can be studied without retraining.
        (out_dir / "cv_predictions.json").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "cv_predictions.json").write_text(json.dumps(
            [{"fold": o.fold, "threshold": o.threshold, "labels": o.labels.tolist(),
              "groups": o.groups.tolist(), "p_tumour": o.p_tumour.tolist()}
             for o in outcomes]))
    for key in ("scope", "heatmap", "heatmap_compared", "timing_eager", "cross_validation"):
        if key in results:
            print(f"\n{key}:\n{json.dumps(results[key], indent=1, default=float)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json))
    print(f"\nwrote {out_dir / 'results.json'} and {', '.join(results['plots'])}")
    if card is not None:
        card.write_text(render_card(bundle, results))
        print(f"wrote model card {card}")
    return results


def _recipe(bundle: VisionBundle) -> TrainConfig:
    """The training recipe a checkpoint records, for its cross-validation to repeat."""
    recorded = bundle.provenance.get("train_config")
    if not isinstance(recorded, dict):
        raise ValueError(f"{bundle.name} records no training recipe (provenance "
                         "train_config): its cross-validation cannot repeat it")
    return TrainConfig(**{k: v for k, v in recorded.items() if k != "augment"})


def _json(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
