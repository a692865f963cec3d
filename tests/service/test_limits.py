"""A service that must not report ready (its index is required and missing) and that
rate-limits clients; plus the token bucket itself, on a fake clock."""

import httpx
import pytest

from assistant.service.rate_limit import TokenBuckets
from tests.service.conftest import RATE_BURST, RATE_PER_MINUTE


def test_missing_required_index_is_not_ready(limited_server: str) -> None:
    assert httpx.get(f"{limited_server}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{limited_server}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready" and body["optional"] == []
    assert body["components"]["vision"] == "ok"
    assert body["components"]["retrieval"].startswith("unavailable: no literature index")


def test_rate_limit_is_429_then_probes_still_answer(limited_server: str) -> None:
    statuses = [httpx.get(f"{limited_server}/v1/search", params={"q": "a"}).status_code
                for _ in range(RATE_BURST)]
    assert statuses == [503] * RATE_BURST  # let through (and refused by readiness)
    refused = httpx.get(f"{limited_server}/v1/search", params={"q": "a"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limited"
    assert f"{RATE_PER_MINUTE} a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60 / RATE_PER_MINUTE
    assert httpx.post(f"{limited_server}/v1/analyze").status_code == 429  # before the body
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{limited_server}{probe}").status_code in (200, 503)
    metrics = httpx.get(f"{limited_server}/metrics").text
    assert 'route="unrouted",status="429"' in metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_refill_and_clients() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, burst=2, clock=clock)  # one token a second
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)
    assert buckets.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == pytest.approx(0.5)  # half a token back, not enough
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    clock.now += 100
    assert [buckets.take("a") for _ in range(3)][:2] == [0.0, 0.0]  # capped at the burst


def test_token_bucket_forgets_the_oldest_client() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=1, burst=1, clock=clock, max_clients=2)
    for client in ("a", "b", "c"):
        assert buckets.take(client) == 0.0
    assert buckets.take("a") == 0.0  # "a" was dropped: a new, full bucket
    assert buckets.take("c") > 0


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (1, 0)])
def test_token_bucket_refuses_nonsense(per_minute: int, burst: int) -> None:
    with pytest.raises(ValueError, match="per_minute > 0"):
        TokenBuckets(per_minute, burst)
