"""Re-stored training copies (JPEG, resampled) and the views that start from them."""

import cv2
import numpy as np
import torch

from assistant.imaging.preprocess import PreprocessConfig, preprocess
from assistant.vision.augment import AugmentConfig
from assistant.vision.data import Dataset
from assistant.vision.restore import restore, restored_copies
from assistant.vision.train import TrainConfig, _view_source, feature_bank

CFG = PreprocessConfig(image_size=64, crop_work_side=160)


def _head(height: int = 150, width: int = 130) -> np.ndarray:
    """A synthetic slice: a textured ellipse on black with a bright lesion."""
    rng = np.random.default_rng(1)
    img = np.zeros((height, width), np.uint8)
    cv2.ellipse(img, (width // 2, height // 2), (width // 3, height // 3 + 5), 0, 0, 360,
                110, -1)
    img = np.where(img > 0, img + rng.integers(0, 40, img.shape), 0).astype(np.uint8)
    cv2.circle(img, (width // 2 + 15, height // 2 - 10), 9, 230, -1)
    return img


def _png(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def test_restored_copies_are_reproducible_and_stay_close_to_the_image() -> None:
    head = _head()
    clean = preprocess(head.astype(np.float32) / 255, CFG)
    copies = restored_copies(_png(head), CFG, 6, seed=0, index=3)
    assert copies.shape == (6, 64, 64) and copies.dtype == np.float32
    assert np.array_equal(copies, restored_copies(_png(head), CFG, 6, seed=0, index=3))
    assert not np.array_equal(copies, restored_copies(_png(head), CFG, 6, seed=0, index=4))
    assert copies.min() >= 0.0 and copies.max() <= 1.0
    diffs = np.abs(copies - clean[None]).mean(axis=(1, 2))
    assert (diffs > 0).all()  # every copy is stored differently from the image
    assert (diffs < 0.06).all(), diffs  # and is still the same slice


def test_restore_draws_jpeg_resampled_and_both() -> None:
    head = _head()
    rng = np.random.default_rng(0)
    outs = [restore(head, rng) for _ in range(60)]
    same_size = [o for o in outs if o.shape == head.shape]
    resized = [o for o in outs if o.shape != head.shape]
    assert same_size and resized
    assert all(not np.array_equal(o, head) for o in same_size)  # JPEG at <= 95 is lossy
    sides = [o.shape[0] / head.shape[0] for o in resized]
    assert min(sides) < 0.8 and max(sides) > 1.3  # both smaller and larger copies
    assert min(sides) >= 0.49 and max(sides) <= 2.01


def test_views_start_from_copies_only_when_asked() -> None:
    images = torch.rand(16, 1, 8, 8)
    copies = torch.rand(16, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    # Without copies the generator is left alone, so the recipe before them is unchanged.
    assert _view_source(images, None, TrainConfig(), gen) is images
    assert torch.equal(gen.get_state(), state)
    assert torch.equal(_view_source(images, copies, TrainConfig(restored_share=0.0), gen),
                       images)
    every = _view_source(images, copies, TrainConfig(restored_share=1.0), gen)
    for i in range(16):
        assert any(torch.equal(every[i, 0], copies[i, k]) for k in range(3))
    half = _view_source(images, copies, TrainConfig(restored_share=0.5),
                        torch.Generator().manual_seed(1))
    from_image = sum(torch.equal(half[i], images[i]) for i in range(16))
    assert 0 < from_image < 16


def test_dataset_selection_keeps_the_copies_with_their_images() -> None:
    n = 6
    images = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    restored = np.repeat(images[:, None], 2, axis=1) + 0.5
    data = Dataset(images, np.zeros(n, np.int64), np.arange(n, dtype=np.int64),
                   np.array(["0"] * n), tuple(map(str, range(n))), "0" * 64, restored)
    picked = data.select(np.array([False, True, False, True, True, False]))
    assert picked.restored is not None
    assert np.array_equal(picked.restored[:, 0, 0, 0], picked.images[:, 0, 0] + 0.5)


def test_the_feature_bank_views_come_from_the_copies() -> None:
    """With augmentation that changes nothing and every view from a copy, the cached
    views are the copies (the stem here is the identity)."""
    images = torch.rand(10, 1, 8, 8)
    copies = torch.rand(10, 2, 8, 8)
    still = AugmentConfig(flip=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0,
                          gamma=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0,
                          noise_std=0.0)
    cfg = TrainConfig(restored_share=1.0, augment=still)
    bank = feature_bank(torch.nn.Identity(), images, 3, cfg, torch.Generator().manual_seed(0),
                        progress=False, restored=copies).float()
    assert bank.shape == (10, 4, 1, 8, 8)
    assert torch.allclose(bank[:, 0], (images - 0.5) / 0.5, atol=2e-3)
    for i in range(10):
        for v in range(1, 4):
            assert any(torch.allclose(bank[i, v, 0], (copies[i, k] - 0.5) / 0.5, atol=2e-3)
                       for k in range(2))


def test_the_model_card_says_how_the_views_were_made() -> None:
    from assistant.vision.card import _restored

    assert _restored({}) == "augmented views start from the images as fetched"
    line = _restored({"restored_copies": 4, "restored_share": 0.5})
    assert line.startswith("4 re-stored copies") and "JPEG at quality 40-95" in line
    assert "50% of the augmented views" in line


def test_the_model_card_says_whether_the_crop_was_low_pass_filtered() -> None:
    from types import SimpleNamespace

    from assistant.vision.card import _preprocessing

    plain = _preprocessing(SimpleNamespace(preprocess=CFG))  # type: ignore[arg-type]
    assert "low-pass" not in plain and plain.endswith("resized and padded to 64 px")
    filtered = _preprocessing(SimpleNamespace(  # type: ignore[arg-type]
        preprocess=PreprocessConfig(image_size=64, crop_work_side=160, antialias=0.8)))
    assert "low-pass filtered (strength 0.8" in filtered
    assert filtered.endswith("resized and padded to 64 px")
