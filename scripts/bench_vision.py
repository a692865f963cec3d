"""Vision model speed on this CPU: eager fp32 (the baseline), TorchScript-frozen fp32
(channels-last; and the earlier MKL-DNN path) and dynamic int8,
all in one process; with --accuracy, the test-fold accuracy of each. glibc's allocator is
tuned as ``assistant draft`` tunes it unless ``--malloc default``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_vision.py [--checkpoint PATH]

Prints latency at batch 1, throughput at batch 32, and each one's ratio to eager fp32.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from assistant.config import Settings
from assistant.malloc import keep_heap
from assistant.vision.checkpoint import VisionBundle, load_bundle, release_path
from assistant.vision.evaluate import timing
from assistant.vision.infer import _Scorer, compile_scorer

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _int8(bundle: VisionBundle) -> Runner:
    scorer = _Scorer(bundle).eval()
    return torch.ao.quantization.quantize_dynamic(scorer, {torch.nn.Linear}, dtype=torch.qint8)


def _accuracy(run: Runner, bundle: VisionBundle, settings: Settings) -> float:
    from assistant.vision.data import load_br35h

    data = load_br35h(settings.data_dir, bundle.preprocess)
    mask = data.folds == "test"
    x = torch.from_numpy(data.images[mask]).unsqueeze(1)
    with torch.no_grad():
        p = torch.cat([run(x[i:i + 64])[0] for i in range(0, len(x), 64)]).numpy()
    return float(((p >= bundle.threshold) == data.labels[mask]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="torch thread counts to measure, the first is the baseline's")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--malloc", choices=("batch", "default"), default="batch",
                        help="batch: glibc tuned as `assistant draft` tunes it (freed "
                             "activations reused from the heap); default: glibc as it comes")
    args = parser.parse_args()
    settings = Settings()
    if args.malloc == "batch":
        keep_heap(settings.batch)
    bundle = load_bundle(args.checkpoint or release_path(settings))
    size = bundle.model.config.image_size
    runners: dict[str, Runner] = {"eager fp32": _Scorer(bundle).eval(),
                                  "torchscript fp32": compile_scorer(bundle),
                                  "torchscript mkldnn": compile_scorer(bundle, mkldnn=True),
                                  "dynamic int8 (Linear)": _int8(bundle)}
    base: tuple[float, float] | None = None
    print(f"{bundle.name} ({bundle.sha256[:12]}), input {size} px, malloc {args.malloc}; "
          "ratios against the first line (eager fp32)")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, run in runners.items():
            figures = timing(run, size, args.repeats)
            latency, throughput = figures["latency_ms_batch1"], figures["images_per_s_batch32"]
            base = base or (latency, throughput)
            line = (f"{name:22s} {threads} thread(s)  batch 1: {latency:6.2f} ms "
                    f"({base[0] / latency:4.2f}x)   batch 32: {throughput:6.1f} img/s "
                    f"({throughput / base[1]:4.2f}x)")
            if args.accuracy:
                line += f"   test accuracy {_accuracy(run, bundle, settings):.4f}"
            print(line, flush=True)
    print(f"numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
