"""HTTP client for map tiles: one pooled ``httpx.Client``, a per-host rate limit, retries with backoff.

What is retried (up to ``max_attempts`` attempts in all): timeouts, connection errors, bodies cut short of their
``Content-Length``, HTTP 429 and 5xx, and 200 answers whose body is empty or not a decodable JPEG/PNG/WebP
image (servers under load answer with HTML error pages). The wait before the next attempt is the server's
``Retry-After`` (seconds or an HTTP date, capped at ``max_retry_after_s``) when it sent one, else exponential
backoff with full jitter: ``uniform(0, min(backoff_max_s, backoff_base_s * 2**(attempt - 1)))`` seconds.
Other 4xx answers (404: the tile does not exist) fail at once.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from PIL import Image, UnidentifiedImageError

from crossview import __version__
from crossview.errors import ConfigError, CrossviewError

DEFAULT_USER_AGENT = f"crossview/{__version__} (+https://github.com/crossview)"
"""User-Agent sent with every tile request unless the caller gives its own (tile policies require one)."""

DEFAULT_RATE_LIMIT_PER_S = 20.0
"""Default cap on requests per second to one host (None in ``TileClient`` turns the limit off)."""

TILE_FORMATS = ("JPEG", "PNG", "WEBP")
"""Pillow format names accepted as tile images."""

MAX_TILE_BYTES = 32 * 2**20
"""Largest tile body read (bytes); anything longer is not a map tile."""

MAX_TILE_PIXELS = 4096 * 4096
"""Largest decoded tile (pixels): guards against decompression bombs."""

_MAX_DRAINED_BYTES = 64 * 1024
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))


class TileFetchError(CrossviewError, OSError):
    """A tile (or a set of tiles) could not be obtained: HTTP error, network failure, bad body, not cached.

    Attributes:
        url: the tile URL of a single-tile failure (None for a summary of several tiles).
        status_code: the last HTTP status received, when there was one.
    """

    def __init__(self, message: str, *, url: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


# ---- tile bodies -------------------------------------------------------------------------------------------


def sniff_image_format(data: bytes) -> str | None:
    """File extension (``jpg``, ``png``, ``webp``) of a tile body from its magic bytes, None when unknown."""
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def tile_image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a usable tile image, or None when it decodes fully as JPEG, PNG or WebP.

    Decodes the whole image (``Image.load``): a header alone does not reveal a truncated file.
    """
    if not data:
        return "empty body"
    try:
        with Image.open(io.BytesIO(data), formats=TILE_FORMATS) as image:
            if image.width * image.height > MAX_TILE_PIXELS:
                return f"image of {image.width}x{image.height} pixels is too large for a tile"
            image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... on corrupt data
        detail = "unknown format" if isinstance(error, UnidentifiedImageError) else f"{type(error).__name__}: {error}"
        reason = f"not a decodable JPEG/PNG/WebP image ({detail}"
        if sniff_image_format(data) is None:  # an HTML or JSON error page: its first words say what went wrong
            reason += f"; body starts {data[:40].decode('utf-8', 'replace')!r}"
        return reason + ")"
    return None


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 section 10.2.3).

    Args:
        value: the header value, or None.
        now_s: current Unix time (seconds), to turn a date into a delay.

    Returns:
        Non-negative seconds (0 for a date in the past), or None when the header is absent or malformed.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now_s)


# ---- rate limit --------------------------------------------------------------------------------------------


class RateLimiter:
    """Thread-safe token bucket: at most ``burst`` requests at once, refilled at ``rate_per_s``.

    Each ``acquire`` reserves the next token under a lock and then sleeps outside it until the token is due,
    so concurrent callers are spaced ``1 / rate_per_s`` seconds apart in the order they arrived.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_per_s > 0 or not burst >= 1:
            raise ConfigError(f"rate limit needs rate_per_s > 0 and burst >= 1, got {rate_per_s!r}, {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated_s = clock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is available. Returns the seconds waited (0 when none)."""
        with self._lock:
            now_s = self._clock()
            self._tokens = min(self.burst, self._tokens + (now_s - self._updated_s) * self.rate_per_s)
            self._updated_s = now_s
            self._tokens -= 1.0  # may go negative: a debt later callers wait for
            wait_s = -self._tokens / self.rate_per_s if self._tokens < 0 else 0.0
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


# ---- client ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: why, whether to try again, and the server's requested wait."""

    reason: str
    retryable: bool
    status_code: int | None = None
    retry_after_s: float | None = None


class TileClient:
    """Fetches tile images over HTTP(S) through one pooled, thread-safe ``httpx.Client``.

    Args:
        workers: threads that will share the client; sizes the connection pool.
        timeout_s: read/write timeout per request, seconds.
        connect_timeout_s: connection timeout, seconds.
        user_agent: User-Agent header (default ``DEFAULT_USER_AGENT``).
        rate_limit_per_s: most requests per second to one host (token bucket); None for no limit.
        rate_limit_burst: requests one host may receive at once before the rate applies.
        max_attempts: attempts per tile, first one included (>= 1).
        backoff_base_s: first backoff ceiling, doubled per attempt, seconds.
        backoff_max_s: largest backoff ceiling, seconds.
        max_retry_after_s: cap on a server's ``Retry-After``, seconds.
        headers: extra request headers (e.g. ``Referer`` for providers that want one).
        sleep: ``sleep(seconds)``; injectable so tests run fast.
        rng: random source of the jitter; injectable so tests are deterministic.
        clock: monotonic clock of the rate limiter.
        wall_clock: Unix time, to read ``Retry-After`` dates.
        trust_env: honour proxy settings and certificates from the environment (httpx's ``trust_env``).
        transport: an httpx transport (tests, custom TLS); None for httpx's default.
    """

    def __init__(
        self,
        *,
        workers: int = 8,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 10.0,
        user_agent: str | None = None,
        rate_limit_per_s: float | None = DEFAULT_RATE_LIMIT_PER_S,
        rate_limit_burst: float = 1.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        trust_env: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_attempts < 1 or workers < 1:
            raise ConfigError(f"TileClient needs max_attempts >= 1 and workers >= 1, got {max_attempts}, {workers}")
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.max_attempts = int(max_attempts)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.rate_limit_per_s = rate_limit_per_s
        self.rate_limit_burst = rate_limit_burst
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall_clock = wall_clock
        self._limiters: dict[str, RateLimiter] = {}
        self._limiters_lock = threading.Lock()
        self._http = httpx.Client(
            headers={**(headers or {}), "User-Agent": self.user_agent},
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=None),
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            follow_redirects=True,
            trust_env=trust_env,
            transport=transport,
        )

    # ---- lifetime ----
    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> TileClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- fetching ----
    def get_tile(self, url: str) -> bytes:
        """Download one tile image, retrying transient failures.

        Args:
            url: the tile's URL.

        Returns:
            The body: bytes that decode as a JPEG, PNG or WebP image.

        Raises:
            TileFetchError: naming the URL and the last reason, after a non-retryable answer (404, 403, ...) or
                after ``max_attempts`` failed attempts.
        """
        failure = _Failure("no attempt made", retryable=False)
        for attempt in range(1, self.max_attempts + 1):
            self._limiter(url).acquire()
            outcome = self._attempt(url)
            if isinstance(outcome, bytes):
                return outcome
            failure = outcome
            if not failure.retryable:
                raise TileFetchError(f"tile {url}: {failure.reason}", url=url, status_code=failure.status_code)
            if attempt < self.max_attempts:
                self._sleep(self._delay_s(attempt, failure.retry_after_s))
        raise TileFetchError(
            f"tile {url}: giving up after {self.max_attempts} attempts; last error: {failure.reason}",
            url=url,
            status_code=failure.status_code,
        )

    def _limiter(self, url: str) -> _NoLimit | RateLimiter:
        if self.rate_limit_per_s is None:
            return _NO_LIMIT
        host = httpx.URL(url).netloc.decode("ascii", "replace")
        with self._limiters_lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(
                    self.rate_limit_per_s, burst=self.rate_limit_burst, clock=self._clock, sleep=self._sleep
                )
            return self._limiters[host]

    def _delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        ceiling_s = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling_s)

    def _attempt(self, url: str) -> bytes | _Failure:
        """One request: the validated body, or why it failed."""
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    _drain_small_body(response)
                    return self._status_failure(response)
                body = _read_limited(response)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as error:
            return _Failure(f"{type(error).__name__}: {error}", retryable=False)
        except httpx.TimeoutException as error:
            return _Failure(f"timed out ({type(error).__name__})", retryable=True)
        except httpx.RemoteProtocolError as error:
            return _Failure(f"connection closed early, body truncated? ({error})", retryable=True)
        except (httpx.TransportError, httpx.DecodingError) as error:
            return _Failure(f"{type(error).__name__}: {error}", retryable=True)
        if isinstance(body, _Failure):
            return body
        problem = tile_image_problem(body)
        return _Failure(problem, retryable=True, status_code=200) if problem else body

    def _status_failure(self, response: httpx.Response) -> _Failure:
        status = response.status_code
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status == 429 or status >= 500:
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"), now_s=self._wall_clock())
            return _Failure(reason, retryable=True, status_code=status, retry_after_s=retry_after_s)
        if status == 404:
            reason += " (the server has no such tile)"
        return _Failure(reason, retryable=False, status_code=status)


class _NoLimit:
    def acquire(self) -> float:
        return 0.0


_NO_LIMIT = _NoLimit()


def _drain_small_body(response: httpx.Response) -> None:
    """Read a short error body so that its keep-alive connection can serve the next request."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) <= _MAX_DRAINED_BYTES:
        with contextlib.suppress(httpx.HTTPError):
            response.read()


def _read_limited(response: httpx.Response) -> bytes | _Failure:
    """The whole body, or a failure when it is longer than MAX_TILE_BYTES or shorter than its Content-Length."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_TILE_BYTES:
            return _Failure(f"body longer than {MAX_TILE_BYTES} bytes: not a tile", retryable=False, status_code=200)
        chunks.append(chunk)
    body = b"".join(chunks)
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and "Content-Encoding" not in response.headers and len(body) < int(declared):
        return _Failure(f"body truncated: {len(body)} of {declared} bytes", retryable=True, status_code=200)
    return body
