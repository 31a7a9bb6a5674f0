"""Fetch the XYZ tiles of an area (cache first, then HTTP, in threads) and mosaic them into a ``GeoRaster``.

Convention:
    The mosaic is the source's native Web-Mercator grid at one zoom: EPSG:3857, north-up, tile pixels placed
    unchanged, pixel size ``2 * pi * 6378137 / (tile_size * 2**zoom)`` metres, origin at the north-west corner of
    the north-west tile (``mercantile.xy_bounds``). Cropping to a box keeps whole pixels, so every pixel of the
    result is a pixel of a tile. Tiles are named ``z/x/y`` in messages.
"""

from __future__ import annotations

import datetime
import io
import math
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
from affine import Affine
from PIL import Image

from crossview.errors import ConfigError, ImageReadError
from crossview.geometry.bbox import BBox
from crossview.geometry.webmercator import (
    EARTH_EQUATOR_M,
    MAX_LATITUDE_DEG,
    count_tiles,
    latlon_to_pixel,
    tile_bounds_mercator,
    tiles_for_bbox,
    zoom_for_gsd,
)
from crossview.maps.raster import GeoRaster, MapError
from crossview.tiles.cache import DEFAULT_CACHE_DIR, TileCache, TileCacheError
from crossview.tiles.client import TileClient, TileFetchError
from crossview.tiles.sources import XYZSource, resolve_source

Tile = tuple[int, int, int]
"""An XYZ tile ``(x, y, z)``."""

DEFAULT_MAX_TILES = 10_000
"""Default ``--max-tiles``: the most tiles one request may need."""

BAND_NAMES = ("red", "green", "blue")

_LISTED_TILES = 10  # tiles named in an error message before "... and N more"
_PIXEL_EPS = 1e-6  # pixels: a box edge this close to a pixel edge counts as on it (float round-off)


# ---- planning ----------------------------------------------------------------------------------------------


def check_tile_budget(bbox: BBox, zoom: int, max_tiles: int = DEFAULT_MAX_TILES) -> int:
    """The number of tiles covering ``bbox`` at ``zoom``, after checking it is at most ``max_tiles``.

    Counts in O(1) (:func:`~crossview.geometry.webmercator.count_tiles`): a huge request is refused without
    listing its tiles and before any download.

    Raises:
        ConfigError: too many tiles, with the count and what to change.
    """
    if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 1:
        raise ConfigError(f"--max-tiles {max_tiles!r} must be a positive integer")
    count = count_tiles(bbox, zoom)
    if count > max_tiles:
        raise ConfigError(
            f"the area needs {count} tiles at zoom {zoom}, more than --max-tiles {max_tiles}: use a lower --zoom "
            "(or a larger --gsd), a smaller area, or raise --max-tiles"
        )
    return count


def plan_tiles(bbox: BBox, zoom: int) -> list[Tile]:
    """The tiles ``(x, y, z)`` covering ``bbox`` at ``zoom``, rows north to south, west to east in a row."""
    return sorted(tiles_for_bbox(bbox, zoom), key=lambda tile: (tile[1], tile[0]))


def zoom_for_request(source: XYZSource, bbox: BBox, gsd_m: float) -> int:
    """The coarsest zoom of ``source`` whose pixels are at least as fine as ``gsd_m`` at the box's centre.

    Clamped to the source's zoom range: at ``max_zoom`` the pixels may still be coarser than ``gsd_m``.
    """
    lat = min(max(bbox.center.lat, -MAX_LATITUDE_DEG), MAX_LATITUDE_DEG)
    zoom = zoom_for_gsd(gsd_m, lat=lat, tile_size=source.tile_size, max_zoom=source.max_zoom)
    return max(zoom, source.min_zoom)


# ---- fetching ----------------------------------------------------------------------------------------------


def fetch_tiles(
    source: XYZSource,
    tiles: Iterable[Tile],
    *,
    cache: TileCache | None,
    client: TileClient | None = None,
    workers: int = 8,
    offline: bool = False,
    progress: bool = False,
) -> dict[Tile, bytes]:
    """Image bytes of each tile: from the cache when it holds the tile, else downloaded and cached.

    Args:
        source: the tile source.
        tiles: ``(x, y, z)`` tiles (duplicates are fetched once).
        cache: the tile cache (None: download everything, store nothing).
        client: the HTTP client; None creates one for ``workers`` threads (closed on return).
        workers: download threads.
        offline: read only the cache; never touch the network.
        progress: print a progress line on stderr (only when it is a terminal).

    Returns:
        ``{(x, y, z): bytes}`` in the order of ``tiles``.

    Raises:
        TileFetchError: offline with tiles missing from the cache, or tiles that failed after all retries;
            names the first tiles and the count. Tiles obtained before the failure stay cached.
    """
    wanted = list(dict.fromkeys((int(x), int(y), int(z)) for x, y, z in tiles))
    for tile in wanted:
        source.url(*tile)  # validates the tile before any work
    if workers < 1:
        raise ConfigError(f"workers={workers!r} must be at least 1")
    if offline:
        if cache is None:
            raise ConfigError("offline tile fetching needs a tile cache")
        return _read_cache_only(source, wanted, cache, workers, progress)
    owned = client is None
    client = client or TileClient(workers=workers)
    try:
        results, failures = _run(wanted, workers, progress, lambda tile: _obtain(source, cache, client, tile))
    finally:
        if owned:
            client.close()
    if failures:
        where = f" (the other {len(results)} tiles are in the cache {cache.directory})" if cache else ""
        raise TileFetchError(
            f"{len(failures)} of {len(wanted)} tiles of {source.name!r} could not be fetched{where}: "
            + _list_failures(failures)
        )
    return {tile: results[tile] for tile in wanted}


def _obtain(source: XYZSource, cache: TileCache | None, client: TileClient, tile: Tile) -> bytes:
    cached = cache.get(*tile) if cache is not None else None
    if cached is not None:
        return cached
    data = client.get_tile(source.url(*tile))
    if cache is not None:
        cache.put(*tile, data)
    return data


def _read_cache_only(
    source: XYZSource, wanted: list[Tile], cache: TileCache, workers: int, progress: bool
) -> dict[Tile, bytes]:
    def read(tile: Tile) -> bytes:
        data = cache.get(*tile)
        if data is None:
            raise TileFetchError(f"tile {_name(tile)} is not cached")
        return data

    results, failures = _run(wanted, workers, progress, read)
    if failures:
        missing = [tile for tile in wanted if tile in failures]
        raise TileFetchError(
            f"offline: {len(missing)} of {len(wanted)} tiles of {source.name!r} are not in the cache "
            f"{cache.directory}: {_list_tiles(missing)}; run once without --offline to download them"
        )
    return {tile: results[tile] for tile in wanted}


def _run(wanted: list[Tile], workers: int, progress: bool, task) -> tuple[dict[Tile, bytes], dict[Tile, str]]:
    """Run ``task(tile)`` for every tile in a thread pool; returns the results and the failure reasons."""
    results: dict[Tile, bytes] = {}
    failures: dict[Tile, str] = {}
    meter = _Progress(len(wanted), enabled=progress)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted))), thread_name_prefix="tiles")
    try:
        futures = {pool.submit(task, tile): tile for tile in wanted}
        for future in as_completed(futures):
            tile = futures[future]
            try:
                results[tile] = future.result()
            except (TileFetchError, TileCacheError) as error:
                failures[tile] = str(error)
            meter.step()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: stop queued downloads now
        raise
    finally:
        meter.close()
    pool.shutdown(wait=True)
    return results, failures


class _Progress:
    """``tiles 12/40`` on stderr, rewritten in place; silent when disabled or stderr is not a terminal."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty() and total > 0

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            sys.stderr.write(f"\rtiles {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _name(tile: Tile) -> str:
    x, y, z = tile
    return f"{z}/{x}/{y}"


def _list_tiles(tiles: list[Tile]) -> str:
    text = ", ".join(_name(tile) for tile in tiles[:_LISTED_TILES])
    return text + (f" and {len(tiles) - _LISTED_TILES} more" if len(tiles) > _LISTED_TILES else "")


def _list_failures(failures: dict[Tile, str]) -> str:
    tiles = sorted(failures, key=lambda tile: (tile[2], tile[1], tile[0]))
    text = "; ".join(failures[tile] for tile in tiles[:_LISTED_TILES])
    return text + (f"; and {len(tiles) - _LISTED_TILES} more" if len(tiles) > _LISTED_TILES else "")


# ---- mosaic ------------------------------------------------------------------------------------------------


def _decode_tile(tile: Tile, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 RGB and an (H, W) bool mask of opaque pixels (None when the tile has no alpha)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            if has_alpha:
                rgba = np.asarray(image.convert("RGBA"))
                return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 0
            return np.asarray(image.convert("RGB")), None
    except Exception as error:  # Pillow raises many types on corrupt data
        raise ImageReadError(f"tile {_name(tile)} is not a decodable image: {error}") from None


def _tile_size(decoded: Mapping[Tile, tuple[np.ndarray, np.ndarray | None]]) -> int:
    shapes = {tile: rgb.shape[:2] for tile, (rgb, _) in decoded.items()}
    sizes = set(shapes.values())
    if len(sizes) != 1:
        detail = ", ".join(f"{_name(tile)}: {w}x{h}" for tile, (h, w) in list(shapes.items())[:_LISTED_TILES])
        raise MapError(f"tiles of one mosaic must all have the same size, got {detail}")
    height, width = sizes.pop()
    if height != width:
        raise MapError(f"tiles must be square, got {width}x{height} pixels")
    return int(width)


def _mosaic(source: XYZSource, tiles_bytes: Mapping[Tile, bytes], zoom: int) -> tuple[GeoRaster, int, int, int]:
    """The mosaic, its tile size and the (x, y) of its north-west tile."""
    if not tiles_bytes:
        raise MapError(f"no tiles of {source.name!r} to mosaic")
    other_zooms = sorted({z for _, _, z in tiles_bytes if z != zoom})
    if other_zooms:
        raise MapError(f"mosaic at zoom {zoom} was given tiles of zoom {other_zooms[0]}")
    decoded = {tile: _decode_tile(tile, data) for tile, data in tiles_bytes.items()}
    size = _tile_size(decoded)
    x0, y0 = min(x for x, _, _ in decoded), min(y for _, y, _ in decoded)
    columns = max(x for x, _, _ in decoded) - x0 + 1
    rows = max(y for _, y, _ in decoded) - y0 + 1
    array = np.zeros((3, rows * size, columns * size), dtype=np.uint8)
    valid = np.zeros((rows * size, columns * size), dtype=bool)
    for (x, y, _), (rgb, opaque) in decoded.items():
        window = (slice((y - y0) * size, (y - y0 + 1) * size), slice((x - x0) * size, (x - x0 + 1) * size))
        array[(slice(None), *window)] = rgb.transpose(2, 0, 1)
        valid[window] = True if opaque is None else opaque
    left_m, _, _, top_m = tile_bounds_mercator(x0, y0, zoom)
    pixel_m = EARTH_EQUATOR_M / (size * 2**zoom)
    raster = GeoRaster(
        array=array,
        crs="EPSG:3857",
        transform=Affine(pixel_m, 0.0, left_m, 0.0, -pixel_m, top_m),
        valid=None if valid.all() else valid,
        band_names=BAND_NAMES,
        tags={
            "source": source.name,
            "attribution": source.attribution,
            "zoom": str(zoom),
            "tile_size": str(size),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return raster, size, x0, y0


def mosaic_tiles(source: XYZSource, tiles_bytes: Mapping[Tile, bytes], zoom: int) -> GeoRaster:
    """Place tiles side by side on the native Web-Mercator grid of ``zoom``.

    Args:
        source: where the tiles came from (for the ``source`` and ``attribution`` tags).
        tiles_bytes: ``{(x, y, zoom): image bytes}``; JPEG, PNG or WebP, all of one square size (256 or 512).
        zoom: the tiles' zoom.

    Returns:
        A GeoRaster in EPSG:3857: (3, rows * tile_size, columns * tile_size) uint8 RGB covering the tiles'
        bounding rectangle; ``valid`` marks pixels of transparent parts (alpha 0) and of tiles absent from the
        rectangle as invalid (None when all are valid). Tags: source, attribution, zoom, tile_size, time (UTC).

    Raises:
        ImageReadError: a tile does not decode.
        MapError: no tiles, tiles of another zoom, or tiles of different sizes.
    """
    return _mosaic(source, tiles_bytes, zoom)[0]


def _pixel_window(bbox: BBox, zoom: int, size: int, x0: int, y0: int) -> tuple[int, int, int, int]:
    """(col_start, row_start, col_stop, row_stop) in the mosaic of the whole pixels covering ``bbox``."""
    north = min(bbox.north, MAX_LATITUDE_DEG)
    south = max(bbox.south, -MAX_LATITUDE_DEG)
    west_px, north_px = latlon_to_pixel(lat=north, lon=bbox.west, zoom=zoom, tile_size=size)
    east_px, south_px = latlon_to_pixel(lat=south, lon=bbox.east, zoom=zoom, tile_size=size)
    col0 = math.floor(west_px - x0 * size + _PIXEL_EPS)
    row0 = math.floor(north_px - y0 * size + _PIXEL_EPS)
    col1 = max(math.ceil(east_px - x0 * size - _PIXEL_EPS), col0 + 1)
    row1 = max(math.ceil(south_px - y0 * size - _PIXEL_EPS), row0 + 1)
    return col0, row0, col1, row1


def crop_pixels(raster: GeoRaster, col0: int, row0: int, col1: int, row1: int) -> GeoRaster:
    """The pixels [row0, row1) x [col0, col1) of ``raster`` (clipped to it), with the matching transform."""
    col0, col1 = max(0, col0), min(raster.width, col1)
    row0, row1 = max(0, row0), min(raster.height, row1)
    if col1 <= col0 or row1 <= row0:
        raise MapError(f"pixel window cols {col0}..{col1}, rows {row0}..{row1} is empty in the raster")
    valid = None if raster.valid is None else raster.valid[row0:row1, col0:col1].copy()
    return GeoRaster(
        array=raster.array[:, row0:row1, col0:col1].copy(),
        crs=raster.crs,
        transform=raster.transform @ Affine.translation(col0, row0),
        valid=valid,
        nodata=raster.nodata,
        band_names=raster.band_names,
        tags=raster.tags,
    )


def fetch_xyz(
    source: XYZSource | str,
    bbox: BBox,
    *,
    zoom: int,
    cache_dir: str = DEFAULT_CACHE_DIR,
    offline: bool = False,
    max_tiles: int = DEFAULT_MAX_TILES,
    workers: int = 8,
    client: TileClient | None = None,
    progress: bool = False,
) -> GeoRaster:
    """The native Web-Mercator raster of an area from an XYZ source, through the tile cache.

    Checks the tile budget first, then fetches (cache, then network), mosaics, and crops the mosaic to the
    whole pixels covering ``bbox`` (tile pixels are not resampled).

    Args:
        source: an ``XYZSource`` or the ``--source`` text (provider name or URL template).
        bbox: the area, WGS84 degrees.
        zoom: tile zoom, within the source's zoom range.
        cache_dir: tile cache root; tiles go to ``cache_dir/<source slug>/z/x/y.ext``.
        offline: use only cached tiles.
        max_tiles: refuse (ConfigError) a request needing more tiles than this.
        workers: download threads.
        client: HTTP client (None: a default one for ``workers`` threads).
        progress: progress line on stderr when it is a terminal.

    Returns:
        GeoRaster in EPSG:3857 (3, H, W) uint8 RGB with tags source, attribution, zoom, tile_size, time, bbox.

    Raises:
        ConfigError: unknown source, zoom outside the source's range, too many tiles.
        TileFetchError: tiles that could not be fetched (or are not cached, offline).
    """
    if not isinstance(source, XYZSource):
        source = resolve_source(source)
    source.check_zoom(zoom)
    check_tile_budget(bbox, zoom, max_tiles)
    tiles = plan_tiles(bbox, zoom)
    cache = TileCache(cache_dir, source.slug)
    tiles_bytes = fetch_tiles(
        source, tiles, cache=cache, client=client, workers=workers, offline=offline, progress=progress
    )
    mosaic, size, x0, y0 = _mosaic(source, tiles_bytes, zoom)
    cropped = crop_pixels(mosaic, *_pixel_window(bbox, zoom, size, x0, y0))
    cropped.tags = {**cropped.tags, "bbox": ",".join(repr(value) for value in bbox.to_geojson_bbox())}
    return cropped
