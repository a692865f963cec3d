"""The committed release weights: they load without training, carry their provenance,
and give the same diagnosis whatever lossless file format the same pixels arrive in."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings
from assistant.imaging import read_image
from assistant.vision.checkpoint import RELEASE_NAME, as_batch, load_bundle, release_path
from assistant.vision.explain import patch_heat
from assistant.vision.infer import VisionModel
from assistant.vision.splits import BR35H_SPLIT_PATH, manifest_sha256, read_split_manifest
from tests.encodings import FROM_FETCHED_LOSSLESS, LOSSLESS, grey_levels

pytestmark = pytest.mark.data

WEIGHTS = release_path(Settings())
CARD = WEIGHTS.with_suffix(".md")


@pytest.fixture(scope="module")
def model() -> VisionModel:
    return VisionModel(load_bundle(WEIGHTS))


def test_release_is_small_documented_and_traceable(model: VisionModel) -> None:
    assert WEIGHTS.stat().st_size < 50 * 1024 * 1024
    sha = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert model.bundle.sha256 == sha
    assert sha in CARD.read_text(), "the model card must name the weights it describes"
    assert model.bundle.provenance["split_sha256"] == manifest_sha256(BR35H_SPLIT_PATH)
    assert model.bundle.name.startswith(RELEASE_NAME)


def _encodings(path: Path) -> dict[str, bytes]:
    original = path.read_bytes()
    grey = grey_levels(original)
    return {"original": original, **{name: encode(grey) for name, encode in LOSSLESS.items()},
            **{name: encode(original) for name, encode in FROM_FETCHED_LOSSLESS.items()}}


def test_diagnosis_does_not_change_with_the_file_format(model: VisionModel) -> None:
    settings = Settings()
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == "test"]
    picked = rows[::37]  # a spread of test-fold images of both labels
    assert {r.label for r in picked} == {0, 1}
    for row in picked:
        encoded = _encodings(settings.data_dir / row.path)
        results = {name: model.diagnose([model.prepare(read_image(data).pixels)])[0]
                   for name, data in encoded.items()}
        reference = results["original"]
        for name, diagnosis in results.items():
            assert diagnosis.in_scope == reference.in_scope, (row.path, name)
            assert diagnosis.label == reference.label, (row.path, name)
            if reference.probability is not None:
                assert diagnosis.probability == pytest.approx(reference.probability, abs=1e-3), (
                    row.path, name)


def test_out_of_scope_images_get_no_diagnosis(model: VisionModel) -> None:
    settings = Settings()
    xray = sorted((settings.data_dir / "kermany").glob("*.jpeg"))[0]
    verdict = model.diagnose([model.prepare(read_image(xray).pixels)])[0]
    assert not verdict.in_scope and verdict.label is None and verdict.probability is None
    assert verdict.scope_reason


def test_one_pass_heatmap_equals_the_two_pass_one(model: VisionModel) -> None:
    """diagnose(heatmap=True) takes probability, scope distance and rollout heat from one
    forward pass; they must equal the scorer's and patch_heat's own."""
    rng = np.random.default_rng(0)
    size = model.bundle.model.config.image_size
    images = rng.random((4, size, size)).astype(np.float32)
    x = as_batch(images)
    probs, dists = model._scores(x)
    heat = patch_heat(model.bundle.model, x, "rollout")
    one_probs, one_dists, one_heat = model._scores_and_rollout(x)
    assert np.allclose(one_probs, probs, atol=1e-6) and np.allclose(one_dists, dists)
    assert np.allclose(one_heat, heat, atol=1e-6) and heat.std() > 0


def test_the_traced_release_gives_the_eager_diagnoses(model: VisionModel) -> None:
    """VisionModel(fast=True): both scorers traced and frozen, within 1e-5 of the eager
    model (batch norms folded), with the same labels and scope decisions."""
    fast = VisionModel(model.bundle, fast=True)
    rng = np.random.default_rng(1)
    size = model.bundle.model.config.image_size
    images = list(rng.random((3, size, size)).astype(np.float32))
    x = as_batch(np.stack(images))
    eager_out, fast_out = model._scores_and_rollout(x), fast._scores_and_rollout(x)
    assert np.allclose(fast_out[0], eager_out[0], atol=1e-5)
    assert np.allclose(fast_out[1], eager_out[1], rtol=1e-4)
    assert np.allclose(fast_out[2], eager_out[2], atol=1e-4) and eager_out[2].std() > 0
    assert np.allclose(fast._scores(x)[0], model._scores(x)[0], atol=1e-5)
    assert ([(d.in_scope, d.label) for d in fast.diagnose(images, heatmap=True)]
            == [(d.in_scope, d.label) for d in model.diagnose(images, heatmap=True)])
