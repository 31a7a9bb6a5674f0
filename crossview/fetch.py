"""``crossview fetch``: make a metric map raster of an area from XYZ tiles, a GeoTIFF or OpenStreetMap.

The stage turns a source and an area into one GeoTIFF: north-up, square pixels of ``gsd`` metres, in the local UTM
zone (default), in the source's native grid, or in any EPSG CRS. Python entry point: :func:`fetch_map`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from crossview import __version__
from crossview.cli import Command
from crossview.errors import ConfigError
from crossview.geometry.bbox import BBox
from crossview.geometry.frames import LocalFrame
from crossview.geometry.webmercator import meters_per_pixel
from crossview.maps.raster import GeoRaster, MapError

SourceKind = Literal["xyz", "geotiff", "osm"]

DEFAULT_GSD_M = 0.5
OSM_SUFFIXES = (".osm", ".osm.bz2", ".osm.gz", ".osm.xml", ".geojson", ".gpkg")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class FetchRequest:
    """Everything ``crossview fetch`` needs: a source, an area and the target grid."""

    source: str
    bbox: BBox
    gsd_m: float | None = None
    zoom: int | None = None
    crs: str = "utm"
    cache_dir: Path = Path("tiles")
    offline: bool = False
    max_tiles: int = 10_000
    workers: int = 8
    user_agent: str | None = None
    rate_limit_per_s: float | None = None
    keep_original: bool = False
    overpass_endpoint: str | None = None
    osm_cache_dir: Path | None = None
    progress: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)


def classify_source(text: str) -> SourceKind:
    """Which kind of source ``--source`` names: an XYZ provider/template, a raster, or OSM data."""
    lower = text.lower()
    if lower == "osm" or lower.endswith(OSM_SUFFIXES):
        return "osm"
    if "{z}" in text or "{x}" in text or "{q}" in text:
        return "xyz"
    if lower.startswith("/vsi") or re.match(r"^(https?|s3|gs|file)://", lower):
        return "geotiff"
    if Path(text).exists():
        return "geotiff"
    if lower.endswith(RASTER_SUFFIXES) or "/" in text or "\\" in text:
        raise ConfigError(f"--source {text}: file not found")
    return "xyz"


def target_grid(bbox: BBox, crs_option: str, gsd_m: float) -> tuple[CRS, tuple[float, float, float, float]]:
    """The output CRS and its bounds (left, bottom, right, top), snapped outwards to whole ``gsd_m`` pixels."""
    crs = target_crs(bbox, crs_option)
    bounds = transform_bounds("EPSG:4326", crs, bbox.west, bbox.south, bbox.east, bbox.north, densify_pts=21)
    left, bottom = (np.floor(np.array(bounds[:2]) / gsd_m) * gsd_m).tolist()
    right, top = (np.ceil(np.array(bounds[2:]) / gsd_m) * gsd_m).tolist()
    return crs, (left, bottom, right, top)


def target_crs(bbox: BBox, crs_option: str) -> CRS:
    """``utm`` -> the UTM zone of the box centre; ``EPSG:N`` (or anything rasterio parses) -> that CRS."""
    if crs_option.lower() == "utm":
        center = bbox.center
        return CRS.from_epsg(LocalFrame.from_center(lat=center.lat, lon=center.lon).epsg)
    try:
        crs = CRS.from_user_input(crs_option)
    except Exception:
        raise ConfigError(f"--crs {crs_option}: not a CRS (use utm, native or EPSG:N)") from None
    if not crs.is_projected:
        raise ConfigError(f"--crs {crs_option}: map rasters need a projected metric CRS, not a geographic one")
    return crs


def fetch_map(request: FetchRequest) -> GeoRaster:
    """Build the map raster of ``request`` (no file is written). Raises CrossviewError subclasses on failure."""
    kind = classify_source(request.source)
    if kind == "xyz":
        raster = _fetch_xyz(request)
    elif kind == "geotiff":
        raster = _fetch_geotiff(request)
    else:
        raster = _fetch_osm(request)
    if not raster.valid_mask.any():
        raise MapError(f"empty result: {request.source} has no valid pixels in {_box_text(request.bbox)}")
    raster.tags.update({"crossview_version": __version__, "bbox_wgs84": _box_text(request.bbox), **request.extra_tags})
    return raster


def _fetch_xyz(request: FetchRequest) -> GeoRaster:
    from crossview.tiles.client import TileClient
    from crossview.tiles.fetch import fetch_xyz, zoom_for_request
    from crossview.tiles.sources import resolve_source

    source = resolve_source(request.source)
    zoom = request.zoom if request.zoom is not None else zoom_for_request(source, request.bbox, _gsd(request))
    client_options = {"workers": request.workers, "user_agent": request.user_agent}
    if request.rate_limit_per_s is not None:
        client_options["rate_limit_per_s"] = request.rate_limit_per_s
    native = request.crs.lower() == "native"
    gsd_m = request.gsd_m or meters_per_pixel(lat=request.bbox.center.lat, zoom=zoom, tile_size=source.tile_size)
    fetch_box, crs, bounds = request.bbox, None, None
    if not native:  # fetch what the target grid covers: its rectangle is larger than the rotated request box
        crs, bounds = target_grid(request.bbox, request.crs, gsd_m)
        fetch_box = BBox(*transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21))
    client = None if request.offline else TileClient(**client_options)
    try:
        mosaic = fetch_xyz(
            source,
            fetch_box,
            zoom=zoom,
            cache_dir=str(request.cache_dir),
            offline=request.offline,
            max_tiles=request.max_tiles,
            workers=request.workers,
            client=client,
            progress=request.progress,
        )
    finally:
        if client is not None:
            client.close()
    return mosaic if native else mosaic.reproject(crs, gsd_m, bounds=bounds)


def _fetch_geotiff(request: FetchRequest) -> GeoRaster:
    from crossview.maps.geotiff import geotiff_info, read_geotiff_area

    to_uint8 = not request.keep_original
    info = geotiff_info(request.source)
    bbox = _clip_to_footprint(request, info["bounds_wgs84"])
    if request.crs.lower() == "native":
        crs = CRS.from_user_input(info["crs"])
        gsd = request.gsd_m or float(min(info["res"]))
        wanted = transform_bounds("EPSG:4326", crs, bbox.west, bbox.south, bbox.east, bbox.north, densify_pts=21)
        bounds = (*np.maximum(wanted[:2], info["bounds"][:2]), *np.minimum(wanted[2:], info["bounds"][2:]))
        return read_geotiff_area(request.source, bounds=bounds, crs=crs, gsd_m=gsd, to_uint8_rgb=to_uint8)
    crs, bounds = target_grid(bbox, request.crs, _gsd(request))
    return read_geotiff_area(request.source, bounds=bounds, crs=crs, gsd_m=_gsd(request), to_uint8_rgb=to_uint8)


def _clip_to_footprint(request: FetchRequest, footprint_wgs84: tuple[float, float, float, float]) -> BBox:
    """The requested box cut to a raster's footprint, so a large request reads only what the file holds."""
    box = request.bbox
    west, south = max(box.west, footprint_wgs84[0]), max(box.south, footprint_wgs84[1])
    east, north = min(box.east, footprint_wgs84[2]), min(box.north, footprint_wgs84[3])
    if west >= east or south >= north:
        raise MapError(f"empty result: {request.source} does not cover {_box_text(box)}")
    return BBox(west, south, east, north)


def _fetch_osm(request: FetchRequest) -> GeoRaster:
    from crossview.maps.osm import osm_map

    if request.crs.lower() == "native":
        raise ConfigError("--crs native: OpenStreetMap data has no native grid; use --crs utm or EPSG:N")
    crs, bounds = target_grid(request.bbox, request.crs, _gsd(request))
    return osm_map(
        request.source,
        bounds=bounds,
        crs=crs,
        gsd_m=_gsd(request),
        overpass_endpoint=request.overpass_endpoint,
        cache_dir=request.osm_cache_dir,
    )


def _gsd(request: FetchRequest) -> float:
    return request.gsd_m if request.gsd_m is not None else DEFAULT_GSD_M


def _box_text(bbox: BBox) -> str:
    return f"{bbox.west:.6f},{bbox.south:.6f},{bbox.east:.6f},{bbox.north:.6f}"


# ---- command line ------------------------------------------------------------------------------------------


def parse_area(bbox_text: str | None, center_text: str | None, radius_m: float | None) -> BBox:
    """``--bbox W,S,E,N`` or ``--center LAT,LON --radius M`` -> a BBox (one-line ConfigError otherwise)."""
    if bbox_text is not None:
        if center_text is not None:
            raise ConfigError("give either --bbox or --center/--radius, not both")
        return BBox.from_string(bbox_text)
    if center_text is None:
        raise ConfigError("an area is required: --bbox W,S,E,N or --center LAT,LON --radius M")
    parts = center_text.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--center {center_text!r}: expected LAT,LON in degrees") from None
    if radius_m is None or not radius_m > 0:
        raise ConfigError(f"--radius must be a positive number of metres with --center, got {radius_m}")
    return BBox.from_center(lat=lat, lon=lon, radius_m=radius_m)


def _positive(kind: type, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text!r}")
        return value

    return parse


EXAMPLES = """examples:
  crossview fetch --source Esri.WorldImagery --center 52.5145,13.3501 --radius 300 --gsd 0.3 --out tiergarten.tif
  crossview fetch --source 'https://tile.example.org/{z}/{x}/{y}.png' --bbox 13.37,52.51,13.38,52.52 \\
      --zoom 19 --crs native --out mosaic.tif
  crossview fetch --source orthophoto.tif --bbox -105.01,39.74,-105.00,39.75 --gsd 0.15 --out chip.tif
  crossview fetch --source osm --center 37.8077,-122.3005 --radius 150 --gsd 0.5 --out oakland_osm.tif
  crossview fetch --source extract.osm.bz2 --bbox 10.068,48.135,10.071,48.137 --out osm.tif

SRC is an xyzservices provider name, an XYZ URL template with {z}/{x}/{y} (also {s}, {q}, {r}), a raster file or
URL that rasterio reads (/vsicurl/...), 'osm' (Overpass through osmnx), an OSM XML file (.osm, .osm.bz2, .osm.gz)
or a vector file with OSM tag columns (.geojson, .gpkg). Tiles are cached under --cache-dir and reused.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + "\n\n" + EXAMPLES
    parser.add_argument("--source", required=True, metavar="SRC", help="map source (see below)")
    parser.add_argument("--bbox", metavar="W,S,E,N", help="area as west,south,east,north in degrees")
    parser.add_argument("--center", metavar="LAT,LON", help="area centre in degrees (with --radius)")
    parser.add_argument("--radius", type=_positive(float, "--radius"), metavar="M", help="area radius in metres")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--gsd", type=_positive(float, "--gsd"), metavar="M", help=f"metres per pixel (default {DEFAULT_GSD_M})"
    )
    grid.add_argument("--zoom", type=int, metavar="Z", help="XYZ zoom level (default: from --gsd)")
    parser.add_argument("--crs", default="utm", help="utm (default: local UTM zone), native, or EPSG:N")
    parser.add_argument("--out", required=True, type=Path, help="output GeoTIFF")
    parser.add_argument("--cache-dir", type=Path, default=Path("tiles"), help="tile cache folder (default ./tiles)")
    parser.add_argument("--offline", action="store_true", help="use only cached tiles; name the missing ones")
    parser.add_argument(
        "--max-tiles", type=_positive(int, "--max-tiles"), default=10_000, help="refuse larger requests"
    )
    parser.add_argument("--workers", type=_positive(int, "--workers"), default=8, help="concurrent downloads")
    parser.add_argument("--user-agent", help="HTTP User-Agent for tile requests")
    parser.add_argument("--rate-limit", type=_positive(float, "--rate-limit"), help="max requests per second per host")
    parser.add_argument("--keep-original", action="store_true", help="GeoTIFF sources: keep bands and dtype")
    parser.add_argument("--overpass-endpoint", help="Overpass API URL for --source osm")
    parser.add_argument("--osm-cache-dir", type=Path, help="cache folder for Overpass responses")


def run(args: argparse.Namespace) -> int:
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a folder, expected a .tif file path")
    if not args.out.parent.exists():
        raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
    request = FetchRequest(
        source=args.source,
        bbox=parse_area(args.bbox, args.center, args.radius),
        gsd_m=args.gsd,
        zoom=args.zoom,
        crs=args.crs,
        cache_dir=args.cache_dir,
        offline=args.offline,
        max_tiles=args.max_tiles,
        workers=args.workers,
        user_agent=args.user_agent,
        rate_limit_per_s=args.rate_limit,
        keep_original=args.keep_original,
        overpass_endpoint=args.overpass_endpoint,
        osm_cache_dir=args.osm_cache_dir,
        progress=sys.stderr.isatty(),
    )
    raster = fetch_map(request)
    raster.write(args.out)
    res_x, res_y = raster.res
    print(
        f"wrote {args.out}: {raster.width}x{raster.height} px, {raster.count} bands, {raster.crs.to_string()}, "
        f"{res_x:.3f}x{res_y:.3f} per px; {raster.tags.get('attribution', '')}".rstrip("; ")
    )
    return 0


COMMAND = Command(
    name="fetch",
    description="Fetch map data for an area and write it as one north-up GeoTIFF.",
    add_arguments=add_arguments,
    run=run,
)
