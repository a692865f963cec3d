"""Time non-local means denoising against no denoising on synthetic 224x224 phantoms.

Reports ms/image for ``denoise_nlm`` alone and for the whole ``preprocess`` with
``denoise="none"`` and ``denoise="nlm"``. Figures, not a test.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python scripts/bench_denoise.py --count 100
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import cv2
import numpy as np

from assistant.imaging.preprocess import PreprocessConfig, denoise_nlm, preprocess

log = logging.getLogger("bench_denoise")


def make_phantoms(count: int, size: int, seed: int) -> list[np.ndarray]:
    """Random bright ellipses with darker insides on black, plus Gaussian noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    phantoms = []
    for _ in range(count):
        img = np.zeros((size, size), np.float32)
        centre = (int(rng.integers(size // 3, 2 * size // 3)),) * 2
        axes = (int(rng.integers(size // 5, size // 3)), int(rng.integers(size // 5, size // 3)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, 0.8, -1)
        inner = (axes[0] // 2, axes[1] // 2)
        cv2.ellipse(img, centre, inner, float(rng.uniform(0, 180)), 0, 360, 0.5, -1)
        noisy = img + rng.normal(0.0, float(rng.uniform(0.02, 0.1)), img.shape)
        phantoms.append(np.clip(noisy, 0.0, 1.0).astype(np.float32))
    return phantoms


def ms_per_image(fn: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray]) -> float:
    """Mean wall-clock milliseconds of ``fn`` over ``images`` (after one warm-up call)."""
    fn(images[0])
    start = time.perf_counter()
    for img in images:
        fn(img)
    return 1000.0 * (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="number of phantom images")
    parser.add_argument("--size", type=int, default=224, help="phantom side in pixels")
    parser.add_argument("--strength", type=float, default=0.05, help="NLM strength")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    images = make_phantoms(args.count, args.size, args.seed)
    plain = PreprocessConfig(image_size=args.size, denoise="none")
    nlm = PreprocessConfig(image_size=args.size, denoise="nlm", denoise_strength=args.strength)
    nlm_only = ms_per_image(lambda img: denoise_nlm(img, strength=args.strength), images)
    pre_none = ms_per_image(lambda img: preprocess(img, plain), images)
    pre_nlm = ms_per_image(lambda img: preprocess(img, nlm), images)

    log.info(
        "%d images %dx%d, cv2 threads %d", args.count, args.size, args.size, cv2.getNumThreads()
    )
    log.info("denoise_nlm alone:            %8.2f ms/image", nlm_only)
    log.info("preprocess, denoise='none':   %8.2f ms/image", pre_none)
    log.info("preprocess, denoise='nlm':    %8.2f ms/image", pre_nlm)
    log.info("ratio nlm / none (preprocess): %7.1fx", pre_nlm / pre_none)


if __name__ == "__main__":
    main()
