"""XYZ map tiles: sources (xyzservices providers, URL templates), an HTTP client, an on-disk cache, mosaics.

Typical use::

    from crossview.geometry.bbox import BBox
    from crossview.tiles import fetch_xyz, resolve_source, zoom_for_request

    source = resolve_source("Esri.WorldImagery")
    bbox = BBox(-122.305, 37.806, -122.298, 37.809)
    raster = fetch_xyz(source, bbox, zoom=zoom_for_request(source, bbox, gsd_m=0.5))  # EPSG:3857 GeoRaster
"""

from __future__ import annotations

from crossview.tiles.cache import DEFAULT_CACHE_DIR, TileCache, TileCacheError
from crossview.tiles.client import DEFAULT_USER_AGENT, RateLimiter, TileClient, TileFetchError
from crossview.tiles.fetch import (
    DEFAULT_MAX_TILES,
    check_tile_budget,
    crop_pixels,
    fetch_tiles,
    fetch_xyz,
    mosaic_tiles,
    plan_tiles,
    zoom_for_request,
)
from crossview.tiles.sources import XYZSource, provider_names, resolve_source

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MAX_TILES",
    "DEFAULT_USER_AGENT",
    "RateLimiter",
    "TileCache",
    "TileCacheError",
    "TileClient",
    "TileFetchError",
    "XYZSource",
    "check_tile_budget",
    "crop_pixels",
    "fetch_tiles",
    "fetch_xyz",
    "mosaic_tiles",
    "plan_tiles",
    "provider_names",
    "resolve_source",
    "zoom_for_request",
]
