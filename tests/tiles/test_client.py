"""TileClient against a real local HTTP server: retries per fault type, give-up, 404, Retry-After, rate limit."""

from __future__ import annotations

import email.utils
import io
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image
from tileserver import Fault, TileServer, generated_tile, serve_tiles

from crossview import __version__
from crossview.errors import CrossviewError
from crossview.tiles.client import (
    DEFAULT_USER_AGENT,
    RateLimiter,
    TileClient,
    TileFetchError,
    parse_retry_after,
    sniff_image_format,
    tile_image_problem,
)

SEED = 1234


@pytest.fixture
def server() -> Iterator[TileServer]:
    with serve_tiles() as running:
        yield running


class Sleeps(list):
    """A ``sleep`` that records the requested seconds instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(sleeps: Sleeps | None = None, **kwargs) -> TileClient:
    options = {
        "sleep": sleeps if sleeps is not None else Sleeps(),
        "rng": random.Random(SEED),
        "rate_limit_per_s": None,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "trust_env": False,  # no proxy from the environment: tests talk to 127.0.0.1 only
    }
    return TileClient(**{**options, **kwargs})


def expected_jitter(count: int, base_s: float = 0.5, cap_s: float = 30.0) -> list[float]:
    """Full-jitter backoff (AWS architecture blog, "Exponential Backoff And Jitter") with the same seed."""
    rng = random.Random(SEED)
    return [rng.uniform(0.0, min(cap_s, base_s * 2**k)) for k in range(count)]


# ---- success -----------------------------------------------------------------------------------------------


def test_get_tile_returns_the_servers_bytes_and_sends_the_user_agent(server: TileServer) -> None:
    with make_client() as client:
        body = client.get_tile(server.url(1, 2, 3))
    assert body == generated_tile(1, 2, 3)
    assert [request.user_agent for request in server.requests] == [DEFAULT_USER_AGENT]
    assert DEFAULT_USER_AGENT.startswith(f"crossview/{__version__} ")


def test_custom_user_agent(server: TileServer) -> None:
    with make_client(user_agent="my-app/2.0 (me@example.com)") as client:
        client.get_tile(server.url(0, 0, 0))
    assert server.requests[0].user_agent == "my-app/2.0 (me@example.com)"


def test_one_pooled_connection_serves_sequential_requests(server: TileServer) -> None:
    with make_client(workers=2) as client:
        for x in range(6):
            client.get_tile(server.url(x, 0, 3))
    assert len({request.client_port for request in server.requests}) == 1  # keep-alive: one connection


# ---- retries -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_with_full_jitter_backoff(server: TileServer, status: int) -> None:
    server.add_fault(Fault("status", count=2, status=status))
    sleeps = Sleeps()
    with make_client(sleeps) as client:
        body = client.get_tile(server.url(1, 1, 2))
    assert body == generated_tile(1, 1, 2)
    assert server.count(server.url(1, 1, 2)) == 3
    assert sleeps == pytest.approx(expected_jitter(2))
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0


def test_429_honours_retry_after_seconds(server: TileServer) -> None:
    server.add_fault(Fault("status", count=2, status=429, retry_after="3"))
    sleeps = Sleeps()
    with make_client(sleeps) as client:
        client.get_tile(server.url(0, 0, 1))
    assert sleeps == [3.0, 3.0]
    assert server.total == 3
    assert len({request.client_port for request in server.requests}) == 1  # error bodies drained: kept alive


def test_429_honours_retry_after_http_date(server: TileServer) -> None:
    now_s = 1_700_000_000.0
    server.add_fault(Fault("status", count=1, status=429, retry_after=email.utils.formatdate(now_s + 7, usegmt=True)))
    sleeps = Sleeps()
    with make_client(sleeps, wall_clock=lambda: now_s) as client:
        client.get_tile(server.url(0, 0, 1))
    assert sleeps == [pytest.approx(7.0)]


def test_retry_after_is_capped(server: TileServer) -> None:
    server.add_fault(Fault("status", count=1, status=429, retry_after="86400"))
    sleeps = Sleeps()
    with make_client(sleeps, max_retry_after_s=2.5) as client:
        client.get_tile(server.url(0, 0, 1))
    assert sleeps == [2.5]


def test_429_without_retry_after_backs_off(server: TileServer) -> None:
    server.add_fault(Fault("status", count=1, status=429))
    sleeps = Sleeps()
    with make_client(sleeps) as client:
        client.get_tile(server.url(0, 0, 1))
    assert sleeps == pytest.approx(expected_jitter(1))


@pytest.mark.parametrize(
    ("kind", "count"),
    [("truncate", 2), ("garbage", 1), ("empty", 2), ("half_image", 1)],
)
def test_bad_bodies_are_retried(server: TileServer, kind: str, count: int) -> None:
    server.add_fault(Fault(kind, count=count))
    sleeps = Sleeps()
    with make_client(sleeps) as client:
        body = client.get_tile(server.url(2, 1, 2))
    assert body == generated_tile(2, 1, 2)
    assert server.count(server.url(2, 1, 2)) == count + 1
    assert len(sleeps) == count


def test_hang_longer_than_the_timeout_is_retried(server: TileServer) -> None:
    server.add_fault(Fault("hang", count=1, seconds=5.0))
    started = time.monotonic()
    with make_client(timeout_s=0.3) as client:
        body = client.get_tile(server.url(0, 1, 1))
    assert body == generated_tile(0, 1, 1)
    assert server.count(server.url(0, 1, 1)) == 2
    assert time.monotonic() - started < 3.0  # the client timed out; it did not wait for the hang


def test_latency_below_the_timeout_is_not_an_error(server: TileServer) -> None:
    server.add_fault(Fault("latency", seconds=0.02))
    with make_client() as client:
        assert client.get_tile(server.url(1, 0, 1)) == generated_tile(1, 0, 1)
    assert server.total == 1


# ---- giving up ---------------------------------------------------------------------------------------------


def test_gives_up_after_max_attempts_naming_the_url(server: TileServer) -> None:
    server.add_fault(Fault("status", status=503))
    url = server.url(3, 3, 3)
    sleeps = Sleeps()
    with make_client(sleeps, max_attempts=3) as client, pytest.raises(TileFetchError) as info:
        client.get_tile(url)
    assert url in str(info.value) and "503" in str(info.value) and "3 attempts" in str(info.value)
    assert info.value.url == url and info.value.status_code == 503
    assert isinstance(info.value, OSError) and isinstance(info.value, CrossviewError)
    assert server.count(url) == 3 and len(sleeps) == 2


def test_gives_up_on_a_body_that_is_never_an_image(server: TileServer) -> None:
    server.add_fault(Fault("garbage"))
    with make_client(max_attempts=2) as client, pytest.raises(TileFetchError, match="not a decodable"):
        client.get_tile(server.url(0, 0, 0))
    assert server.total == 2


def test_404_is_not_retried(server: TileServer) -> None:
    url = f"{server.base_url}/rgb/3/9/9.png"  # x = 9 does not exist at zoom 3: the server answers 404
    sleeps = Sleeps()
    with make_client(sleeps) as client, pytest.raises(TileFetchError) as info:
        client.get_tile(url)
    assert info.value.status_code == 404 and "404" in str(info.value) and url in str(info.value)
    assert server.count(url) == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 403, 410])
def test_other_4xx_are_not_retried(server: TileServer, status: int) -> None:
    server.add_fault(Fault("status", status=status))
    url = server.url(1, 1, 3)
    sleeps = Sleeps()
    with make_client(sleeps) as client, pytest.raises(TileFetchError) as info:
        client.get_tile(url)
    assert info.value.status_code == status and str(status) in str(info.value)
    assert server.count(url) == 1 and sleeps == []


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a free port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/rgb/0/0/0.png"
    sleeps = Sleeps()
    with make_client(sleeps, max_attempts=3) as client, pytest.raises(TileFetchError) as info:
        client.get_tile(url)
    assert url in str(info.value) and "Connect" in str(info.value)
    assert len(sleeps) == 2


# ---- rate limit --------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def test_token_bucket_spaces_requests_with_an_injected_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, burst=2, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(6):
        limiter.acquire()
        times.append(clock.now_s)
    assert times[:2] == [100.0, 100.0]  # the burst
    assert [b - a for a, b in itertools.pairwise(times[1:])] == pytest.approx([0.25] * 4)
    clock.now_s += 10.0  # idle: the bucket refills to the burst, not beyond
    start = clock.now_s
    for _ in range(3):
        limiter.acquire()
    assert clock.now_s - start == pytest.approx(0.25)


def test_token_bucket_is_thread_safe() -> None:
    limiter = RateLimiter(100.0)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 19 / 100.0 - 0.005  # 20 tokens, the first free


def test_client_rate_limit_per_host_is_respected(server: TileServer) -> None:
    rate_per_s, count = 10.0, 5
    with TileClient(workers=4, rate_limit_per_s=rate_per_s, trust_env=False) as client:
        threads = [threading.Thread(target=client.get_tile, args=(server.url(x, 0, 3),)) for x in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    arrivals = sorted(request.time_s for request in server.requests)
    assert len(arrivals) == count
    span_s = arrivals[-1] - arrivals[0]
    assert (count - 1) / rate_per_s - 0.06 <= span_s < 3.0  # 0.06 s: scheduling noise between send and arrival


# ---- helpers -----------------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now_s = 1_445_412_480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after("120", now_s=now_s) == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_s=now_s) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now_s=now_s) == 0.0
    assert parse_retry_after("soon", now_s=now_s) is None
    assert parse_retry_after(None, now_s=now_s) is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_tile_images_are_recognised(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format=fmt)
    data = buffer.getvalue()
    assert tile_image_problem(data) is None
    assert sniff_image_format(data) == {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
    assert tile_image_problem(data[: len(data) // 2]) is not None


def test_non_tile_bodies_are_problems() -> None:
    assert tile_image_problem(b"") == "empty body"
    assert "not a decodable" in tile_image_problem(b"<html>oops</html>")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    assert tile_image_problem(buffer.getvalue()) is not None  # not a tile format
    assert sniff_image_format(b"GIF89a") is None
