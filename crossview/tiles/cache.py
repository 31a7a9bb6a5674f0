"""On-disk tile cache: ``<root>/<slug>/<z>/<x>/<y>.<ext>``, one folder per tile source.

The extension is the image type of the stored bytes (``jpg``, ``png`` or ``webp``, read from their magic bytes),
so cached files open in any viewer whatever the source's URL looks like. Writes are atomic (a temporary file in
the same folder, then ``os.replace``): an interrupted run never leaves a half-written tile. A cached tile that no
longer decodes is deleted on read, so the next fetch downloads it again.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from crossview.errors import CrossviewError
from crossview.fsio import atomic_write_bytes
from crossview.tiles.client import sniff_image_format, tile_image_problem

DEFAULT_CACHE_DIR = "tiles"
"""Default cache root, relative to the working directory (DESIGN: ``tiles/``)."""

CACHE_EXTENSIONS = ("jpg", "png", "webp")
"""Extensions a cached tile may have."""

_SAFE_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class TileCacheError(CrossviewError, OSError):
    """A tile could not be written to the cache (bad data, disk full, permissions)."""


class TileCache:
    """Tiles of one source under ``root/slug``.

    Args:
        root: cache root folder (created on the first write).
        slug: the source's folder name (``XYZSource.slug``): letters, digits, ``.``, ``_``, ``-``.
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CACHE_DIR, slug: str = "default") -> None:
        if not _SAFE_SLUG.fullmatch(slug) or ".." in slug:
            raise TileCacheError(f"cache slug {slug!r} is not a safe folder name")
        self.root = Path(root)
        self.slug = slug

    @property
    def directory(self) -> Path:
        """``root/slug``: where this source's tiles live."""
        return self.root / self.slug

    def __repr__(self) -> str:
        return f"TileCache({str(self.root)!r}, {self.slug!r})"

    def path(self, x: int, y: int, z: int, ext: str) -> Path:
        """Path of tile (x, y, z) stored with extension ``ext``."""
        return self.directory / str(int(z)) / str(int(x)) / f"{int(y)}.{ext}"

    def find(self, x: int, y: int, z: int) -> Path | None:
        """Path of the cached file of tile (x, y, z), or None when it is not cached."""
        for ext in CACHE_EXTENSIONS:
            candidate = self.path(x, y, z, ext)
            if candidate.is_file():
                return candidate
        return None

    def get(self, x: int, y: int, z: int) -> bytes | None:
        """The cached bytes of tile (x, y, z) when they decode as an image, else None.

        A cached file that is not a decodable image (a crash of another program, disk corruption) is deleted.
        """
        path = self.find(x, y, z)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if tile_image_problem(data) is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, x: int, y: int, z: int, data: bytes) -> Path:
        """Store tile (x, y, z) atomically; returns its path.

        Raises:
            TileCacheError: ``data`` is not a JPEG/PNG/WebP file, or the file could not be written.
        """
        ext = sniff_image_format(data)
        if ext is None:
            raise TileCacheError(f"refusing to cache tile {z}/{x}/{y}: the data is not a JPEG, PNG or WebP image")
        path = self.path(x, y, z, ext)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as error:
            raise TileCacheError(f"cannot write tile cache file {path}: {error}") from None
        for other in CACHE_EXTENSIONS:  # a source that changed format: keep one file per tile
            if other != ext:
                with contextlib.suppress(OSError):
                    self.path(x, y, z, other).unlink()
        return path
