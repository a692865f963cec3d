"""A user's own paired images and reports: `assistant train report --pairs` trains an
image-conditioned decoder end to end (the real command, the release vision encoder),
and the drafts then follow the image."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from assistant.config import Settings
from assistant.report.decoder.bundle import Drafter, load_report_bundle
from assistant.report.decoder.paired import image_tokens, read_pairs
from assistant.vision.checkpoint import load_bundle, release_path

LESION, CLEAR = "A bright round lesion is seen on the left.", "No lesion is seen."


def _head(path: Path, lesion: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.zeros((160, 160), np.uint8)
    cv2.ellipse(img, (80, 80), (60, 70), 0, 0, 360, 90, -1)
    img = cv2.add(img, rng.integers(0, 20, img.shape, dtype=np.uint8))
    if lesion:
        cv2.circle(img, (55 + int(rng.integers(-5, 5)), 75), 16, 250, -1)
    cv2.imwrite(str(path), img)


def _paired_set(folder: Path, n: int = 16) -> Path:
    rows = []
    for i in range(n):
        lesion = i % 2 == 0
        _head(folder / f"img{i}.png", lesion, i)
        rows.append({"image": f"img{i}.png", "findings": LESION if lesion else CLEAR,
                     "impression": "Abnormal." if lesion else "Normal.", "codes": "",
                     "indication": "headache"})
    path = folder / "pairs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.slow
def test_train_report_pairs_learns_to_follow_the_image(tmp_path: Path) -> None:
    pairs = _paired_set(tmp_path)
    out = tmp_path / "paired.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "assistant", "train", "report", "--pairs", str(pairs),
           "--out", str(out), "--epochs", "60", "--width", "64", "--layers", "2",
           "--lr", "3e-3", "--no-tune"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    bundle = load_report_bundle(out)
    assert bundle.model.config.image_dim is not None
    assert bundle.provenance["image_encoder"]["sha256"]
    settings = Settings()
    vision = load_bundle(release_path(settings))
    _head(tmp_path / "new_lesion.png", True, 101)
    _head(tmp_path / "new_clear.png", False, 102)
    tokens = image_tokens(vision, [tmp_path / "new_lesion.png", tmp_path / "new_clear.png"],
                          settings)
    texts = Drafter(bundle).draft([(), ()], ["headache", "headache"], tokens)
    assert texts == [f"{LESION} Abnormal.", f"{CLEAR} Normal."]


def test_a_paired_set_with_a_missing_column_or_image_is_refused(tmp_path: Path) -> None:
    from assistant.data.manifest import DataError

    bad = tmp_path / "bad.csv"
    bad.write_text("image,findings\nx.png,text\n")
    with pytest.raises(DataError, match="missing column"):
        read_pairs(bad)
    bad.write_text("image,findings,impression\nnope.png,text,imp\n")
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(bad)
