"""A real HTTP tile server on 127.0.0.1 for tests: generated tiles, real tiles from disk, fault injection.

Routes (``<ext>`` is ``png``, ``jpg`` or ``webp``):

- ``/<style>/<z>/<x>/<y>.<ext>``: a generated tile (see :func:`tile_rgb`); ``style`` is ``rgb``, ``rgba`` (the
  north-west quarter fully transparent), ``p`` (palette PNG) or ``l`` (greyscale);
- ``/q/<quadkey>.png``: the generated ``rgb`` tile of a Bing quadkey (decoded with mercantile);
- ``/real/<z>/<x>/<y>.<ext>``: the file ``<real_tiles_dir>/<z>/<x>/<y>.<ext>`` (the robosat tiles of realdata).

Faults (:class:`Fault`) apply to the first ``count`` requests of each path (or to all) whose path contains
``path_contains``: latency, a hang (no answer), an HTTP status (with optional Retry-After), a body cut short of
its Content-Length, a body that is not an image, an empty body, or half of the image (correct length).
The server counts requests per path, records their User-Agent, arrival time, client port and the largest
number of requests in flight at once.
"""

from __future__ import annotations

import functools
import io
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
STYLES = ("rgb", "rgba", "p", "l")
FAULT_KINDS = ("latency", "hang", "status", "truncate", "garbage", "empty", "half_image")

_GENERATED = re.compile(r"^/(rgb|rgba|p|l)/(\d+)/(\d+)/(\d+)\.(png|jpg|webp)$")
_QUADKEY = re.compile(r"^/q/([0-3]*)\.png$")
_REAL = re.compile(r"^/real/(\d+)/(\d+)/(\d+)\.(png|jpg|webp)$")
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1>upstream busy</body></html>"


# ---- generated tiles ---------------------------------------------------------------------------------------


def tile_rgb(x: int, y: int, z: int, tile_size: int = 256) -> np.ndarray:
    """A deterministic (tile_size, tile_size, 3) uint8 image that encodes the tile and each pixel's position.

    red = (13 x + column) mod 256, green = (29 y + row) mod 256, blue = (31 z + 3 column + 5 row) mod 256:
    two tiles or two pixels placed at the wrong spot do not match.
    """
    rows, cols = np.mgrid[0:tile_size, 0:tile_size]
    red = (13 * x + cols) % 256
    green = (29 * y + rows) % 256
    blue = (31 * z + 3 * cols + 5 * rows) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def tile_alpha(tile_size: int = 256) -> np.ndarray:
    """(tile_size, tile_size) uint8 alpha of ``rgba`` tiles: 0 in the north-west quarter, else 255."""
    alpha = np.full((tile_size, tile_size), 255, dtype=np.uint8)
    alpha[: tile_size // 2, : tile_size // 2] = 0
    return alpha


def tile_image(x: int, y: int, z: int, *, tile_size: int = 256, style: str = "rgb") -> Image.Image:
    """The generated tile as a Pillow image of the given style."""
    rgb = tile_rgb(x, y, z, tile_size)
    if style == "rgba":
        return Image.fromarray(np.dstack([rgb, tile_alpha(tile_size)]), mode="RGBA")
    image = Image.fromarray(rgb, mode="RGB")
    if style == "p":
        return image.convert("P", palette=Image.Palette.WEB, dither=Image.Dither.NONE)
    if style == "l":
        return image.convert("L")
    return image


@functools.lru_cache(maxsize=512)
def generated_tile(x: int, y: int, z: int, *, tile_size: int = 256, style: str = "rgb", ext: str = "png") -> bytes:
    """Encoded bytes of a generated tile (PNG and WebP lossless, JPEG quality 90)."""
    image = tile_image(x, y, z, tile_size=tile_size, style=style)
    if ext == "jpg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"webp": {"lossless": True}, "jpg": {"quality": 90}}.get(ext, {})
    image.save(buffer, format=PIL_FORMATS[ext], **options)
    return buffer.getvalue()


# ---- faults and records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A misbehaviour of the server.

    Attributes:
        kind: one of FAULT_KINDS.
        count: apply to the first ``count`` requests of each path; None for every request.
        status: HTTP status of a ``status`` fault.
        retry_after: Retry-After header value sent with a ``status`` fault.
        seconds: delay of ``latency`` and length of a ``hang``.
        path_contains: apply only to paths containing this text.
    """

    kind: str
    count: int | None = None
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    path_contains: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def applies(self, path: str, number: int) -> bool:
        return self.path_contains in path and (self.count is None or number <= self.count)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    path: str
    number: int  # 1 for the first request of this path
    time_s: float  # time.monotonic() on arrival
    user_agent: str | None
    client_port: int


@dataclass
class _State:
    tile_size: int
    real_tiles_dir: Path | None
    faults: list[Fault] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


# ---- HTTP --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: lets tests see the client's connection pooling
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK would add ~40 ms to every response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.counts[path] += 1
            number = state.counts[path]
            state.requests.append(
                Request(path, number, time.monotonic(), self.headers.get("User-Agent"), self.client_address[1])
            )
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            faults = [fault for fault in state.faults if fault.applies(path, number)]
        try:
            self._answer(path, faults)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, path: str, faults: list[Fault]) -> None:
        for fault in faults:
            if fault.kind == "latency":
                self._wait(fault.seconds)
        terminal = next((fault for fault in faults if fault.kind != "latency"), None)
        if terminal is not None and terminal.kind == "hang":
            self._wait(terminal.seconds)
            self.close_connection = True
            return
        if terminal is not None and terminal.kind == "status":
            headers = {"Retry-After": terminal.retry_after} if terminal.retry_after is not None else {}
            self._send(terminal.status, b"error", "text/plain", headers)
            return
        body, content_type = self._tile(path)
        if body is None:
            self._send(404, b"no such tile", "text/plain")
        elif terminal is None:
            self._send(200, body, content_type)
        elif terminal.kind == "truncate":
            self._send_truncated(body, content_type)
        elif terminal.kind == "garbage":
            self._send(200, _GARBAGE, "text/html")
        elif terminal.kind == "empty":
            self._send(200, b"", content_type)
        elif terminal.kind == "half_image":
            self._send(200, body[: len(body) // 2], content_type)

    def _wait(self, seconds: float) -> None:
        self.server.state.stopping.wait(seconds)

    def _tile(self, path: str) -> tuple[bytes | None, str]:
        state = self.server.state
        if match := _GENERATED.match(path):
            style, z, x, y, ext = match.group(1), *map(int, match.group(2, 3, 4)), match.group(5)
            if not (x < 2**z and y < 2**z):
                return None, ""
            return generated_tile(x, y, z, tile_size=state.tile_size, style=style, ext=ext), CONTENT_TYPES[ext]
        if match := _QUADKEY.match(path):
            tile = mercantile.quadkey_to_tile(match.group(1))
            return generated_tile(tile.x, tile.y, tile.z, tile_size=state.tile_size), CONTENT_TYPES["png"]
        if (match := _REAL.match(path)) and state.real_tiles_dir is not None:
            z, x, y, ext = match.group(1, 2, 3, 4)
            file = state.real_tiles_dir / z / x / f"{y}.{ext}"
            if file.is_file():
                return file.read_bytes(), CONTENT_TYPES[ext]
        return None, ""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_truncated(self, body: bytes, content_type: str) -> None:
        """Announce the whole body, send half of it, and close the connection."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: _State

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out and hang up make the handler's writes fail: expected in these tests


class TileServer:
    """The test tile server; use as a context manager (starts on enter, stops on exit).

    Args:
        tile_size: size of generated tiles in pixels.
        real_tiles_dir: folder served under ``/real/`` (``<dir>/<z>/<x>/<y>.<ext>``), or None.
        faults: initial faults (more with :meth:`add_fault`).
    """

    def __init__(self, *, tile_size: int = 256, real_tiles_dir: Path | None = None, faults: tuple = ()) -> None:
        self._state = _State(tile_size=tile_size, real_tiles_dir=real_tiles_dir, faults=list(faults))
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifetime ----
    def start(self) -> TileServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self._state
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()  # ends hangs and latencies at once
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- addresses ----
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def template(self, style: str = "rgb", ext: str = "png") -> str:
        """URL template of generated tiles: ``http://127.0.0.1:<port>/<style>/{z}/{x}/{y}.<ext>``."""
        return f"{self.base_url}/{style}/{{z}}/{{x}}/{{y}}.{ext}"

    def real_template(self, ext: str = "jpg") -> str:
        return f"{self.base_url}/real/{{z}}/{{x}}/{{y}}.{ext}"

    def url(self, x: int, y: int, z: int, *, style: str = "rgb", ext: str = "png") -> str:
        return f"{self.base_url}/{style}/{z}/{x}/{y}.{ext}"

    # ---- faults and records ----
    def add_fault(self, fault: Fault) -> None:
        with self._state.lock:
            self._state.faults.append(fault)

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def count(self, path_or_url: str) -> int:
        """Requests received for a path (or a full URL of this server)."""
        path = path_or_url.removeprefix(self.base_url)
        with self._state.lock:
            return self._state.counts[path]

    @property
    def total(self) -> int:
        with self._state.lock:
            return sum(self._state.counts.values())

    @property
    def requests(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def max_in_flight(self) -> int:
        with self._state.lock:
            return self._state.max_in_flight


@contextmanager
def serve_tiles(**kwargs) -> Iterator[TileServer]:
    """``with serve_tiles(...) as server:`` a running :class:`TileServer` (the pytest fixtures use this)."""
    with TileServer(**kwargs) as server:
        yield server
