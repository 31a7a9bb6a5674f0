"""A minimal XYZ tile server on 127.0.0.1, for benchmarks and offline demos (never exposed beyond loopback).

Every ``/<z>/<x>/<y>.png`` request is answered, after an optional latency, with a PNG made for that tile.
"""

from __future__ import annotations

import functools
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=4096)
def tile_png(x: int, y: int, z: int, tile_size: int = 256) -> bytes:
    """A small textured PNG that differs from tile to tile (cached: the server should cost the client nothing)."""
    rng = np.random.default_rng((x * 73856093) ^ (y * 19349663) ^ (z * 83492791))
    pixels = rng.integers(0, 256, size=(tile_size // 8, tile_size // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((tile_size, tile_size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections, as with real tile servers

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK stall each response 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # quiet: benchmarks print their own table
        pass

    def do_GET(self) -> None:
        parts = self.path.strip("/").removesuffix(".png").split("/")
        try:
            z, x, y = (int(p) for p in parts[-3:])
        except ValueError:
            self.send_error(404)
            return
        time.sleep(self.server.latency_s)
        body = tile_png(x, y, z, self.server.tile_size)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops concurrent connects
    latency_s: float = 0.0
    tile_size: int = 256


@contextmanager
def serve_tiles(*, latency_s: float = 0.0, tile_size: int = 256) -> Iterator[str]:
    """Run the server for the duration of the block; yields its URL template ``http://127.0.0.1:P/{z}/{x}/{y}.png``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.latency_s, server.tile_size = latency_s, tile_size
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
