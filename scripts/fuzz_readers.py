"""Coverage-guided fuzzing of the image readers with atheris (libFuzzer), bounded.

    python scripts/fuzz_readers.py [--runs 20000] [--seed 1] [--max-len 200000]

The corpus starts from real seeds (PNG and JPEG made here, pydicom's DICOM test files,
plain and compressed) and the crafted hostile inputs of ``tests/malformed.py``. Each input
goes through ``assistant.imaging.read_image``: only ``ImageInputError`` (and its
subclasses) may come out; any other exception, a hang past ``--timeout`` seconds or memory
past ``--rss-mb`` is a crash, which libFuzzer reports (with the input saved) and which
makes this script exit non-zero. At the end it prints how many inputs were tried and
their outcomes by HTTP status the service would answer (200, 413, 415, 422).

libFuzzer runs in a child process (it ends its process when done), which writes its
tally to a JSON file this script reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("fuzz_readers")
TALLY_EVERY = 500


def _child(tally_path: Path, runs: int, libfuzzer_args: list[str]) -> None:
    """Run libFuzzer over ``read_image``; write the tally every TALLY_EVERY inputs."""
    import atheris

    with atheris.instrument_imports(include=["assistant.imaging", "pydicom"]):
        from assistant.imaging import ImageInputError, read_image
        from assistant.service.errors import image_error_status
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    tally: Counter[str] = Counter()

    def write() -> None:
        tally_path.write_text(json.dumps(dict(tally)))

    def one_input(data: bytes) -> None:
        try:
            read_image(data)
            tally["200"] += 1
        except ImageInputError as exc:
            tally[str(image_error_status(exc)[0])] += 1
        tally["inputs"] += 1
        if tally["inputs"] % TALLY_EVERY == 0 or tally["inputs"] >= runs:
            write()

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def _write_corpus(folder: Path) -> int:
    from tests.conftest import data_dir
    from tests.malformed import crafted, seeds

    inputs = {**seeds(data_dir()), **{k: v for k, (v, _) in crafted(data_dir()).items()}}
    for i, data in enumerate(inputs.values()):
        (folder / f"seed-{i:03d}").write_bytes(data)
    return len(inputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000, help="inputs to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=200_000, help="bytes per input")
    parser.add_argument("--timeout", type=int, default=20, help="seconds per input")
    parser.add_argument("--rss-mb", type=int, default=3072, help="memory limit")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        _child(args.child, args.runs, rest)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore")  # pydicom on the crafted inputs
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as tmp:
        corpus, crashes = Path(tmp) / "corpus", REPO / "fuzz-crashes"
        corpus.mkdir()
        n_seeds = _write_corpus(corpus)
        tally_path = Path(tmp) / "tally.json"
        command = [sys.executable, __file__, "--child", str(tally_path),
                   "--runs", str(args.runs), f"-runs={args.runs}", f"-seed={args.seed}",
                   f"-max_len={args.max_len}", f"-timeout={args.timeout}",
                   f"-rss_limit_mb={args.rss_mb}", f"-artifact_prefix={crashes}/",
                   "-print_final_stats=1", str(corpus)]
        crashes.mkdir(exist_ok=True)
        started = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        tally = json.loads(tally_path.read_text()) if tally_path.is_file() else {}
    if not any(crashes.iterdir()):
        crashes.rmdir()
    stats = [line for line in done.stderr.splitlines() if line.startswith("stat::")]
    log.info("atheris %s over read_image: %d seeds, %.0f s", "libFuzzer", n_seeds, elapsed)
    log.info("inputs tried: %d (libFuzzer exit code %d)", tally.get("inputs", 0),
             done.returncode)
    for status in ("200", "413", "415", "422"):
        log.info("  status %s: %d", status, tally.get(status, 0))
    log.info("crashes (an exception other than ImageInputError, a timeout, out of memory):"
             " %d", 0 if done.returncode == 0 else 1)
    for line in stats:
        log.info("  %s", line)
    if done.returncode != 0:
        log.error("libFuzzer output:\n%s", done.stderr[-4000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
