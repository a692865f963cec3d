"""Load test of the running service: POST /v1/analyze (and, with --reports-n8, POST
/v1/reports/draft) at concurrency 1 and 8, GET /v1/search.

Starts ``assistant serve`` on 127.0.0.1 (a free port, rate limit off, index optional),
times start-to-ready, sends real Br35H test-fold images with httpx, and prints p50 / p90
latency, requests per second, the concurrency-8 / concurrency-1 throughput ratio, the mean
model batch size (from /metrics), the CPU per request that the server and this client each
spent (from /proc and the process clock), /v1/search p50 when an index is loaded, and the
server's resident memory. The load is bounded by the request counts and by ``--max-seconds``.
Then, with the server stopped, the ceiling: ``Pipeline.analyze_many`` in this process on
the same images, one at a time and in batches of 8 (no HTTP), images per second.

    .venv/bin/python scripts/bench_service.py --n1 30 --n8 80
    .venv/bin/python scripts/bench_service.py --n1 60 --n8 240 --rounds 8 --no-ceiling
    .venv/bin/python scripts/bench_service.py --n1 0 --reports-n1 20 --reports-n8 64 --no-ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from assistant.config import Settings
from assistant.vision.splits import BR35H_SPLIT_PATH, TEST_FOLD, read_split_manifest

# Distinct, so that each timed search embeds its query (the searcher keeps the vectors of
# the last 256 queries: a repeat would skip most of a search's time).
QUERIES = ("glioblastoma MRI", "brain tumor MRI", "meningioma", "headache", "seizure",
           "normal brain MRI", "pituitary adenoma", "hydrocephalus", "stroke", "epilepsy",
           "acoustic neuroma hearing loss", "low grade glioma seizures",
           "brain metastases radiotherapy", "temozolomide", "IDH mutation glioma",
           "meningioma recurrence", "ventriculoperitoneal shunt", "intracranial hypertension",
           "cerebral edema", "brain abscess", "multiple sclerosis lesions",
           "subarachnoid hemorrhage", "ependymoma in children", "medulloblastoma",
           "craniopharyngioma", "optic pathway glioma", "neurofibromatosis type 1",
           "tuberous sclerosis", "status epilepticus", "primary CNS lymphoma")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_images(count: int) -> list[bytes]:
    """``count`` Br35H test-fold images, tumour and no tumour alternating."""
    data_dir = Settings().data_dir
    rows = [r for r in read_split_manifest(BR35H_SPLIT_PATH) if r.fold == TEST_FOLD]
    by_label = [[r for r in rows if r.label == label] for label in (1, 0)]
    picked = [by_label[i % 2][i // 2] for i in range(count)]
    return [(data_dir / r.path).read_bytes() for r in picked]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(port: int, log_path: Path, index_dir: Path | None
                 ) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "0",
           "ASSISTANT_SERVICE__REQUIRE_INDEX": "false", "OMP_WAIT_POLICY": "PASSIVE",
           "ASSISTANT_LOG_LEVEL": "WARNING"}
    if index_dir is not None:
        env["ASSISTANT_INDEX_DIR"] = str(index_dir)
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - start
        except httpx.TransportError:
            pass
        if time.perf_counter() - start > 180:
            proc.kill()
            raise SystemExit(f"not ready in 180 s:\n{log_path.read_text()}")
        time.sleep(0.05)


Request = tuple[str, dict[str, Any]]  # path, httpx keyword arguments


def draft_bodies(count: int) -> list[dict[str, Any]]:
    """``POST /v1/reports/draft`` bodies from the first ``count`` IU X-ray test reports
    that have codes (the endpoint needs one): their codes (at most the endpoint's 16) and
    indications."""
    from assistant.report.decoder.commands import load_split

    coded = [r for r in load_split(Settings())["test"] if r.findings][:count]
    return [{"findings": [{"code": f.code} for f in r.findings[:16]],
             "indication": r.indication or None} for r in coded]


def analyze_request(image: bytes) -> Request:
    return "/v1/analyze", {"files": {"file": ("image.jpg", image)}}


def draft_request(body: dict[str, Any]) -> Request:
    return "/v1/reports/draft", {"json": body}


def serial(base: str, requests: Sequence[Request], n: int, deadline: float
           ) -> tuple[list[float], float]:
    latencies: list[float] = []
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            if time.perf_counter() > deadline:
                break
            path, kwargs = requests[i % len(requests)]
            t = time.perf_counter()
            client.post(f"{base}{path}", **kwargs).raise_for_status()
            latencies.append(time.perf_counter() - t)
    return latencies, time.perf_counter() - start


async def concurrent(base: str, requests: Sequence[Request], n: int, workers: int,
                     deadline: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            path, kwargs = requests[i % len(requests)]
            t = time.perf_counter()
            response = await client.post(f"{base}{path}", **kwargs)
            response.raise_for_status()
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))
    return latencies, time.perf_counter() - start


def searches(base: str, n: int) -> list[float] | None:
    if httpx.get(f"{base}/readyz").json()["components"].get("retrieval") != "ok":
        return None
    n = min(n, len(QUERIES))  # no repeats: a repeated query's vector is kept
    latencies = []
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            t = time.perf_counter()
            client.get(f"{base}/v1/search", params={"q": QUERIES[i % len(QUERIES)],
                                                    "k": 10}).raise_for_status()
            latencies.append(time.perf_counter() - t)
    return latencies


def batch_sizes(base: str, name: str = "assistant_analyze_batch_size") -> tuple[float, float]:
    """(batches, items) the server has run so far, from the histogram ``name``."""
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        if family.name == name:
            values = {s.name: s.value for s in family.samples}
            return values[f"{name}_count"], values[f"{name}_sum"]
    return 0.0, 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(name: str, server_pid: int, phase: Callable[[], tuple[list[float], float]]
              ) -> tuple[tuple[list[float], float], dict[str, float]]:
    """Runs ``phase()`` (latencies, seconds) and returns its result with the CPU
    milliseconds per request that the server and this load client spent on it and the
    cores each used: the client shares the machine with the server, so what it spends the
    server cannot."""
    server, client, wall = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    result = phase()
    server, client = cpu_seconds(server_pid) - server, time.process_time() - client
    wall = time.perf_counter() - wall
    count = max(len(result[0]), 1)
    row = {"server_cpu_ms": 1000 * server / count, "client_cpu_ms": 1000 * client / count,
           "server_cores": server / wall, "client_cores": client / wall}
    print(f"{name:<16} CPU per request: server {row['server_cpu_ms']:5.1f} ms "
          f"({row['server_cores']:.2f} cores), load client {row['client_cpu_ms']:5.1f} ms "
          f"({row['client_cores']:.2f} cores)")
    return result, row


def load_pair(base: str, requests: Sequence[Request], what: str, metric: str,
              args: argparse.Namespace, n1: int, n8: int, deadline: float,
              server_pid: int) -> dict[str, object]:
    """The same requests at concurrency 1, then at ``args.concurrency``: latencies,
    throughputs, their ratio, the server's mean batch and the CPU each side spent."""
    serial(base, requests, args.warmup, deadline)
    (one, one_s), cpu1 = cpu_share(f"{what} c=1", server_pid,
                                   lambda: serial(base, requests, n1, deadline))
    out: dict[str, object] = {"c1": {**summary(f"{what} c=1", one, one_s), **cpu1}}
    before = batch_sizes(base, metric)
    (many, many_s), cpu8 = cpu_share(
        f"{what} c={args.concurrency}", server_pid,
        lambda: asyncio.run(concurrent(base, requests, n8, args.concurrency, deadline)))
    out[f"c{args.concurrency}"] = {**summary(f"{what} c={args.concurrency}", many, many_s),
                                   **cpu8}
    batches, items = (a - b for a, b in zip(batch_sizes(base, metric), before, strict=True))
    ratio = (len(many) / many_s) / (len(one) / one_s)
    out.update(ratio=ratio, mean_batch=items / max(batches, 1))
    print(f"{what}: throughput ratio c={args.concurrency} / c=1: {ratio:.2f}x "
          f"(mean batch {items / max(batches, 1):.1f})")
    return out


def resident_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of ``pid`` in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def pipeline_ceiling(images: Sequence[bytes], batch: int) -> float:
    """Images per second of the pipeline alone over ``images``, in batches of ``batch``."""
    from assistant.pipeline import Pipeline

    pipeline = Pipeline.from_settings(Settings(), citations=False)
    pipeline.analyze_many(list(images[:batch]))  # warm
    todo = [list(images[i:i + batch]) for i in range(0, len(images), batch)]
    start = time.perf_counter()
    for chunk in todo:
        pipeline.analyze_many(chunk)
    return sum(len(c) for c in todo) / (time.perf_counter() - start)


def summary(name: str, latencies: Sequence[float], seconds: float) -> dict[str, float]:
    out = {"requests": len(latencies), "p50_ms": 1000 * percentile(latencies, 0.5),
           "p90_ms": 1000 * percentile(latencies, 0.9), "req_per_s": len(latencies) / seconds}
    print(f"{name:<16} n={out['requests']:<4.0f} p50 {out['p50_ms']:7.1f} ms   "
          f"p90 {out['p90_ms']:7.1f} ms   {out['req_per_s']:6.1f} req/s")
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    images = test_images(args.images)
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="bench-service-")) / "server.log"
    proc, ready_s = start_server(port, log_path, args.index_dir)
    base = f"http://127.0.0.1:{port}"
    report: dict[str, object] = {"start_to_ready_s": ready_s}
    try:
        print(f"start to ready: {ready_s:.1f} s (log: {log_path})")
        deadline = time.perf_counter() + args.max_seconds
        if args.n1 and args.n8:
            requests = [analyze_request(i) for i in images]
            rounds = [load_pair(base, requests, "analyze", "assistant_analyze_batch_size",
                                args, args.n1, args.n8, deadline, proc.pid)
                      for _ in range(args.rounds)]
            report.update(rounds[0])
            if args.rounds > 1:
                ratios = sorted(float(r["ratio"]) for r in rounds)  # type: ignore[arg-type]
                report.update(rounds=rounds, ratio_median=float(np.median(ratios)))
                print(f"analyze: ratio over {args.rounds} rounds (c=1 and c="
                      f"{args.concurrency} alternating): median {np.median(ratios):.2f}x, "
                      + " ".join(f"{r:.2f}" for r in ratios))
        if args.reports_n1 and args.reports_n8:
            report["reports"] = load_pair(
                base, [draft_request(b) for b in draft_bodies(args.reports_n8)], "draft",
                "assistant_report_batch_size", args, args.reports_n1, args.reports_n8,
                time.perf_counter() + args.max_seconds, proc.pid)
        found = searches(base, args.search_n)
        if found:
            report["search"] = summary("search", found, sum(found))
        else:
            print("search: no literature index loaded, not measured")
        rss, peak = resident_mib(proc.pid)
        report.update(rss_mib=rss, peak_rss_mib=peak)
        print(f"server resident memory: {rss:.0f} MiB (peak {peak:.0f} MiB)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.ceiling:
        ceiling = {f"batch_{b}": pipeline_ceiling(images, b) for b in (1, args.concurrency)}
        report["pipeline_img_per_s"] = ceiling
        print("pipeline alone, no HTTP: " + ", ".join(f"{k.replace('_', ' ')}: {v:.1f} img/s"
                                                      for k, v in ceiling.items()))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=30, help="requests at concurrency 1")
    parser.add_argument("--n8", type=int, default=80, help="requests at the concurrency")
    parser.add_argument("--reports-n1", type=int, default=0,
                        help="report drafts (IU X-ray test findings) at concurrency 1")
    parser.add_argument("--reports-n8", type=int, default=0,
                        help="report drafts at the concurrency (0: drafts not measured)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="analyze load pairs, c=1 then the concurrency, run this many "
                             "times in turn: the ratio's median over them (the machine's "
                             "noise moves one pair's ratio by a fifth)")
    parser.add_argument("--images", type=int, default=32, help="distinct test images")
    parser.add_argument("--search-n", type=int, default=10,
                        help=f"searches timed, at most {len(QUERIES)} (distinct queries)")
    parser.add_argument("--max-seconds", type=float, default=300,
                        help="stop sending analyses after this long")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="ASSISTANT_INDEX_DIR for the server (default: the setting's)")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip timing the pipeline alone")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
