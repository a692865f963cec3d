"""Malformed requests against a real server on loopback, bounded, with counts.

    python scripts/fuzz_service.py [--inputs 6000] [--schemathesis-examples 100]
                                   [--concurrency 4] [--seed 1] [--url URL]

Without ``--url`` it starts ``assistant serve`` on a free 127.0.0.1 port (the settings from
the environment; no rate limit, its stores and audit log in a temporary folder). Then:

1. every crafted hostile input of ``tests/malformed.py`` to ``/v1/images/inspect`` and
   ``/v1/analyze``;
2. ``--inputs`` random requests: mutated real images (PNG, JPEG, DICOM) to inspect,
   analyze (with random form fields and ``format``) and chat (as data URLs of random media
   types), random search queries, garbage bodies with wrong content types, and mutated zip
   archives to ``/v1/batches``;
3. schemathesis over the OpenAPI schema, ``--schemathesis-examples`` per operation.

It prints the requests sent, their statuses by route, the 5xx responses and the transport
failures (a dropped connection would mean a crashed worker), whether the server is still
alive and its memory; it exits non-zero on any 5xx, transport failure or dead server.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from load_test import rss_mib, start_server  # noqa: E402

from tests.conftest import data_dir  # noqa: E402
from tests.malformed import crafted, mutate, seeds  # noqa: E402

log = logging.getLogger("fuzz_service")

Request = tuple[str, str, dict[str, object]]  # route label, method + path, httpx kwargs
MEDIA = ("image/png", "image/jpeg", "application/dicom", "application/octet-stream",
         "image/gif", "text/plain", "", "image/png;charset=utf-8")
WORDS = ("glioma", "MRI", "tumour", "oedema", "'; DROP TABLE x;--", "\x00", "\u202e", "é" * 50,
         "%00", "../../etc/passwd", "a" * 2000, "{}", "<script>", "AND OR NOT", "*", "\t\n")


def _field(rng: random.Random) -> str | None:
    return rng.choice([None, "", "61", "-3", "1e9", "nan", "female", "unknown", "x" * 3000,
                       '{"age": 40, "sex": "male"}', '{"age": []}', "[1,2]", "\x00\x01",
                       rng.randbytes(8).decode("latin-1")])


def _image_request(rng: random.Random, pool: list[bytes]) -> Request:
    data = mutate(rng, rng.choice(pool), pool)
    route = rng.choice(["/v1/images/inspect", "/v1/analyze", "/v1/analyze"])
    files = {"file": (rng.choice(["a.png", "b.dcm", "c", "d.jpg"]), data, rng.choice(MEDIA))}
    if route == "/v1/images/inspect":
        return route, f"POST {route}", {"files": files}
    form = {k: v for k in ("indication", "age", "sex", "context")
            if (v := _field(rng)) is not None and rng.random() < 0.4}
    params = {"format": rng.choice(["json", "fhir", "json", "xml"])}
    return route, f"POST {route}", {"files": files, "data": form, "params": params}


def _chat_request(rng: random.Random, pool: list[bytes]) -> Request:
    data = mutate(rng, rng.choice(pool), pool)
    url = f"data:{rng.choice(MEDIA) or 'image/png'};base64," + base64.b64encode(data).decode()
    if rng.random() < 0.1:
        url = url[: rng.randrange(len(url))]
    content: object = [{"type": "text", "text": rng.choice(WORDS)},
                       {"type": "image_url", "image_url": {"url": url}}]
    if rng.random() < 0.2:
        content = rng.choice([None, 5, {"type": "image_url"}, [{"type": "audio"}], "hi"])
    body = {"model": "m", "stream": rng.random() < 0.3,
            "messages": [{"role": rng.choice(["user", "user", "system", "bot"]),
                          "content": content}]}
    return "/v1/chat/completions", "POST /v1/chat/completions", {"json": body}


def _search_request(rng: random.Random, _: list[bytes]) -> Request:
    params: dict[str, object] = {"q": " ".join(rng.choices(WORDS, k=rng.randint(0, 4)))}
    if rng.random() < 0.5:
        params.update({"k": rng.choice([0, 1, 10, 50, 51, -1, "x"]),
                       "mode": rng.choice(["dense", "bm25", "hybrid", "magic"]),
                       "source": rng.choice(["medline", "hpo", "nope"]),
                       "year_from": rng.choice([1900, 2020, -5, "y"])})
    return "/v1/search", "GET /v1/search", {"params": params}


def _garbage_request(rng: random.Random, pool: list[bytes]) -> Request:
    route = rng.choice(["/v1/analyze", "/v1/images/inspect", "/v1/chat/completions",
                        "/v1/batches"])
    ctype = rng.choice(["application/json", "multipart/form-data; boundary=zz",
                        "multipart/form-data", "application/zip", "text/plain",
                        "application/x-www-form-urlencoded", "image/png"])
    body = rng.choice([b"", rng.randbytes(rng.randint(1, 2048)), b"{", b'{"a": 1}',
                       b"--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"
                       + rng.choice(pool)[:500]])
    return route, f"POST {route}", {"content": body, "headers": {"Content-Type": ctype}}


def _zip_request(rng: random.Random, pool: list[bytes]) -> Request:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(rng.randint(0, 3)):
            zf.writestr(rng.choice([f"s{i}.png", f"../s{i}.dcm", f"d/s{i}", ".hidden"]),
                        mutate(rng, rng.choice(pool), pool))
    data = archive.getvalue()
    if rng.random() < 0.5:
        data = mutate(rng, data)
    return "/v1/batches", "POST /v1/batches", {"files": {"file": ("x.zip", data)}}


KINDS: tuple[tuple[Callable[[random.Random, list[bytes]], Request], float], ...] = (
    (_image_request, 0.55), (_chat_request, 0.2), (_search_request, 0.12),
    (_garbage_request, 0.11), (_zip_request, 0.02))


def _send(client: httpx.Client, base: str, request: Request) -> tuple[str, int | str]:
    route, method_path, kwargs = request
    method, path = method_path.split(" ", 1)
    try:
        response = client.request(method, f"{base}{path}", **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        return route, f"transport: {type(exc).__name__}"
    return route, response.status_code


def _requests(rng: random.Random, n: int, pool: list[bytes]) -> list[Request]:
    out: list[Request] = []
    for name, (data, _) in crafted(data_dir()).items():
        for route in ("/v1/images/inspect", "/v1/analyze"):
            out.append((route, f"POST {route}", {"files": {"file": (name, data)}}))
    makers, weights = zip(*KINDS, strict=True)
    out += [rng.choices(makers, weights)[0](rng, pool) for _ in range(n)]
    return out


def fuzz_http(base: str, n: int, seed: int, concurrency: int) -> Counter[tuple[str, str]]:
    pool = list(seeds(data_dir()).values())
    requests = _requests(random.Random(seed), n, pool)
    tally: Counter[tuple[str, str]] = Counter()
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(concurrency) as pool_:
        for i, (route, status) in enumerate(
                pool_.map(lambda r: _send(client, base, r), requests), 1):
            tally[(route, str(status))] += 1
            if i % 1000 == 0:
                log.info("  %d / %d requests", i, len(requests))
    return tally


def run_schemathesis(base: str, examples: int, seed: int, folder: Path) -> dict[str, object]:
    report = folder / "schemathesis.json"
    command = [str(Path(sys.executable).with_name("schemathesis")), "run",
               f"{base}/openapi.json", "--checks", "not_a_server_error", "--max-examples",
               str(examples), "--workers", "1", "--seed", str(seed), "--no-color",
               "--generation-database", "none", "--request-timeout", "120",
               "--report", "json", "--report-json-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    if not report.is_file():
        raise RuntimeError(f"schemathesis wrote no report:\n{done.stdout[-3000:]}")
    result: dict[str, object] = json.loads(report.read_text())
    if result.get("failures"):
        log.error("schemathesis failures:\n%s", done.stdout[-6000:])
    return result


def _report(tally: Counter[tuple[str, str]], st_report: dict[str, object] | None) -> int:
    routes = sorted({route for route, _ in tally})
    log.info("\n%-24s %7s  statuses", "route", "sent")
    for route in routes:
        counts = {s: c for (r, s), c in tally.items() if r == route}
        log.info("%-24s %7d  %s", route, sum(counts.values()),
                 ", ".join(f"{s}: {c}" for s, c in sorted(counts.items())))
    sent = sum(tally.values())
    server_errors = sum(c for (_, s), c in tally.items() if s.startswith("5") and s != "503")
    busy = sum(c for (_, s), c in tally.items() if s == "503")
    transport = sum(c for (_, s), c in tally.items() if s.startswith("transport"))
    generated = failures = 0
    if st_report is not None:
        cases = st_report["test_cases"]
        assert isinstance(cases, dict)
        generated, failures = int(cases["generated"]), int(cases["with_failures"])
    log.info("\nmalformed requests sent: %d; schemathesis cases: %d; total %d", sent,
             generated, sent + generated)
    log.info("5xx (503 not ready/busy counted apart: %d): %d; transport failures: %d; "
             "schemathesis failures: %d", busy, server_errors, transport, failures)
    return int(server_errors > 0 or transport > 0 or failures > 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=6000)
    parser.add_argument("--schemathesis-examples", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="a running server instead of starting one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # pydicom and zipfile, making the inputs
    with tempfile.TemporaryDirectory(prefix="fuzz-service-") as tmp:
        folder = Path(tmp)
        server = None if args.url else start_server(folder, {
            "ASSISTANT_LIMITS__REQUESTS_PER_MINUTE": "0"})
        base = args.url or server.base  # type: ignore[union-attr]
        try:
            started = time.perf_counter()
            tally = fuzz_http(base, args.inputs, args.seed, args.concurrency)
            st_report = (run_schemathesis(base, args.schemathesis_examples, args.seed, folder)
                         if args.schemathesis_examples else None)
            log.info("ran in %.0f s", time.perf_counter() - started)
            alive = httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            log.info("server alive at the end: %s%s", alive, "" if server is None else
                     f"; resident memory {rss_mib(server.process.pid):.0f} MiB")
            return _report(tally, st_report) or int(not alive)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    sys.exit(main())
