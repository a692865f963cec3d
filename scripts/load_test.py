"""A bounded load test of the service on loopback: mixed endpoints, latency percentiles per
endpoint, errors, and the server's resident memory over the run.

    python scripts/load_test.py [--requests 2000] [--concurrency 16]
                                [--mix analyze=40,search=25,chat=20,healthz=15]
                                [--url URL --pid PID] [--json FILE]

Without ``--url`` it starts ``assistant serve`` on a free 127.0.0.1 port with the settings
from the environment (the built literature index, the release model), its stores and audit
log in a temporary folder and the per-client rate limit off (one client sends everything
here; with the default limit most requests would be 429s), and waits for ``/readyz``.

Requests: ``/v1/analyze`` with real Br35H test-fold images (as uploads, with a context),
``/v1/search`` with clinical queries, ``/v1/chat/completions`` (knowledge questions, and
one in four about an attached image), ``/healthz``. First a warm-up (64 requests at the
full concurrency, not counted), then ``--requests`` requests, at most ``--concurrency`` in
flight. An error is any answer but 200, or no answer. Memory: the server's VmRSS every
0.5 s; growth is from the end of the warm-up to the end of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("load_test")

QUERIES = ("glioblastoma MRI", "meningioma surgery outcome", "brain tumour seizures",
           "pituitary adenoma", "radiotherapy glioma survival", "headache red flags",
           "paediatric medulloblastoma", "contrast enhancement MRI lesion")
QUESTIONS = ("What is a glioma?", "What is a meningioma?", "What causes hydrocephalus?",
             "What is Dravet syndrome?", "How is glioblastoma treated?")
START_TIMEOUT_S = 300


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process, MiB, from /proc: ``VmRSS`` (all of it), ``RssAnon``
    (the heap: what a leak grows) or ``RssFile`` (pages of mapped files: the index)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, env: dict[str, str]) -> Server:
    """``assistant serve`` on a free loopback port, its stores in ``folder``; ready."""
    port = _free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
                "ASSISTANT_CHAT__DB_PATH": str(folder / "chat.sqlite3"),
                "ASSISTANT_BATCH__DB_PATH": str(folder / "batches.sqlite3"),
                "ASSISTANT_BATCH__UPLOAD_DIR": str(folder / "uploads"),
                "ASSISTANT_SECURITY__AUDIT_LOG": str(folder / "audit.jsonl"),
                "ASSISTANT_SECURITY__STUDY_HASH_KEY_FILE": str(folder / "study-hash.key"),
                "ASSISTANT_LOG_LEVEL": "WARNING", **env}
    log_path = folder / "server.log"
    with log_path.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--host",
                                    "127.0.0.1", "--port", str(port)], env=full_env,
                                   stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def br35h_images(n: int = 60) -> list[bytes]:
    from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest
    from tests.conftest import data_dir

    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    random.Random(0).shuffle(rows)
    return [(data_dir() / r.path).read_bytes() for r in rows[:n]]


def make_request(kind: str, rng: random.Random, images: list[bytes]) -> dict[str, Any]:
    """httpx keyword arguments (method and url path included) for one request."""
    if kind == "analyze":
        return {"method": "POST", "url": "/v1/analyze",
                "files": {"file": ("scan.jpg", rng.choice(images), "image/jpeg")},
                "data": {"indication": "headache", "age": str(rng.randint(20, 80))}}
    if kind == "search":
        return {"method": "GET", "url": "/v1/search",
                "params": {"q": rng.choice(QUERIES), "k": 10}}
    if kind == "chat":
        content: Any = rng.choice(QUESTIONS)
        if rng.random() < 0.25:
            url = "data:image/jpeg;base64," + base64.b64encode(rng.choice(images)).decode()
            content = [{"type": "text", "text": "Is there a tumour?"},
                       {"type": "image_url", "image_url": {"url": url}}]
        return {"method": "POST", "url": "/v1/chat/completions",
                "json": {"model": "assistant",
                         "messages": [{"role": "user", "content": content}]}}
    return {"method": "GET", "url": "/healthz"}


async def run_load(base: str, plan: list[tuple[str, dict[str, Any]]], concurrency: int
                   ) -> list[tuple[str, float, int | str]]:
    """Send the plan with ``concurrency`` workers: (kind, seconds, status or error)."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results: list[tuple[str, float, int | str]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                kind, kwargs = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.request(**kwargs)
                    outcome: int | str = response.status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                results.append((kind, time.perf_counter() - started, outcome))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


class MemorySampler(threading.Thread):
    """VmRSS of ``pid`` every ``period`` seconds, until stopped."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float, float]] = []  # (s, VmRSS, RssAnon)
        self._stop_event = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic() - self._start, rss_mib(self.pid),
                                 rss_mib(self.pid, "RssAnon")))
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarise(results: list[tuple[str, float, int | str]], wall: float) -> dict[str, Any]:
    by_kind: dict[str, list[tuple[float, int | str]]] = defaultdict(list)
    for kind, seconds, outcome in results:
        by_kind[kind].append((seconds, outcome))
    table = {}
    for kind, rows in sorted(by_kind.items()):
        ms = [s * 1000 for s, _ in rows]
        errors = [o for _, o in rows if o != 200]
        table[kind] = {"requests": len(rows), "errors": len(errors),
                       "error_kinds": sorted({str(e) for e in errors}),
                       "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
                       "p99_ms": percentile(ms, 99), "max_ms": max(ms),
                       "mean_ms": statistics.fmean(ms)}
    return {"requests": len(results), "errors": sum(t["errors"] for t in table.values()),
            "seconds": wall, "requests_per_s": len(results) / wall, "endpoints": table}


def _growth(values: list[float], prefix: str) -> dict[str, Any]:
    start, end = values[0], values[-1]
    return {f"{prefix}_start_mib": start, f"{prefix}_end_mib": end,
            f"{prefix}_max_mib": max(values), f"{prefix}_growth_pct": 100 * (end - start) / start,
            f"{prefix}_max_growth_pct": 100 * (max(values) - start) / start,
            f"{prefix}_timeline_mib": [round(values[round(i * (len(values) - 1) / 10)])
                                       for i in range(11)]}


def memory_summary(samples: list[tuple[float, float, float]], warm_end: float
                   ) -> dict[str, Any]:
    after = [s for s in samples if s[0] >= warm_end] or samples[-1:]
    return {**_growth([s[1] for s in after], "rss"), **_growth([s[2] for s in after], "anon")}


def _plan(n: int, mix: dict[str, int], rng: random.Random, images: list[bytes]
          ) -> list[tuple[str, dict[str, Any]]]:
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=n)
    return [(kind, make_request(kind, rng, images)) for kind in kinds]


def _print(report: dict[str, Any]) -> None:
    log.info("%d requests at concurrency %d in %.1f s (%.1f req/s), errors: %d",
             report["requests"], report["concurrency"], report["seconds"],
             report["requests_per_s"], report["errors"])
    log.info("%-10s %8s %7s %9s %9s %9s %9s", "endpoint", "requests", "errors", "p50 ms",
             "p95 ms", "p99 ms", "max ms")
    for kind, row in report["endpoints"].items():
        log.info("%-10s %8d %7d %9.0f %9.0f %9.0f %9.0f  %s", kind, row["requests"],
                 row["errors"], row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"],
                 ", ".join(row["error_kinds"]))
    mem = report["memory"]
    for prefix, what in (("rss", "RSS (VmRSS)"), ("anon", "heap (RssAnon)")):
        log.info("server %s: %.0f MiB after warm-up -> %.0f MiB at the end (max %.0f): "
                 "growth %.1f%% (max %.1f%%); over the run: %s MiB", what,
                 mem[f"{prefix}_start_mib"], mem[f"{prefix}_end_mib"],
                 mem[f"{prefix}_max_mib"], mem[f"{prefix}_growth_pct"],
                 mem[f"{prefix}_max_growth_pct"], mem[f"{prefix}_timeline_mib"])


def measure(base: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    rng = random.Random(args.seed)
    images = br35h_images()
    sampler = MemorySampler(pid)
    sampler.start()
    asyncio.run(run_load(base, _plan(64, mix, rng, images), args.concurrency))  # warm-up
    warm_end = time.monotonic() - sampler._start
    started = time.perf_counter()
    results = asyncio.run(run_load(base, _plan(args.requests, mix, rng, images),
                                   args.concurrency))
    wall = time.perf_counter() - started
    time.sleep(1.0)  # one more sample after the last answer
    sampler.stop()
    report = summarise(results, wall)
    report.update(concurrency=args.concurrency, mix=mix,
                  memory=memory_summary(sampler.samples, warm_end))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mix", default="analyze=40,search=25,chat=20,healthz=15")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="a running server (then --pid for its memory)")
    parser.add_argument("--pid", type=int)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        server = None if args.url else start_server(
            Path(tmp), {"ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "0"})
        base = args.url or server.base  # type: ignore[union-attr]
        pid = args.pid or (server.process.pid if server else None)
        if pid is None:
            parser.error("--url needs --pid (the server's process, for its memory)")
        try:
            report = measure(base, pid, args)
        finally:
            if server is not None:
                server.stop()
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return int(report["errors"] > 0)


if __name__ == "__main__":
    sys.exit(main())
