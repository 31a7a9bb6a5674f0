"""The VIGOR on-disk format: file names, a writer (used by the synthetic world) and a PyTorch reader.

Layout (VIGOR, CVPR 2021; SliceMatch's corrected labels, CVPR 2023)::

    <root>/<City>/panorama/<id>,<lat>,<lon>,.jpg          north-aligned equirectangular panoramas (2048x1024)
    <root>/<City>/satellite/satellite_<lat>_<lon>.png     640x640 aerial tiles, zoom-20 Web Mercator
    <root>/<City>/osm/satellite_<lat>_<lon>.png           crossview's OSM class tiles of the same tiles (optional)
    <root>/splits/<City>/satellite_list.txt               every tile of the city (the retrieval gallery)
    <root>/splits/<City>/pano_label_balanced.txt          labels of every panorama (cross-area split)
    <root>/splits/<City>/same_area_balanced_{train,test}.txt
    <root>/splits/<City>/<name>__corrected.txt            SliceMatch's corrected labels (same format)

SliceMatch ships its corrected files in ``<root>/splits__corrected/<City>/``; the reader looks there when
``<root>/splits/<City>/`` has no ``__corrected`` file.

Convention (OSM class tiles, crossview's addition): ``<City>/osm/<tile name>`` is the OpenStreetMap class raster of
exactly the aerial tile of the same name (same 640x640 zoom-20 Web-Mercator pixels), as rasterized by
:mod:`crossview.maps.osm`: a lossless PNG whose G channels (``L``, ``LA``, ``RGB`` or ``RGBA``: G = 1..4;
crossview's taxonomy has G = 3, bands ``areas, ways, nodes``) hold uint8 class indices, 0 = nothing, with the
legend (band -> class names, index 1 first; the ``CLASSES`` tag of the GeoTIFFs) as JSON in the PNG text chunk
``CLASSES``. They are written by :mod:`crossview.data.synth.osmtiles`; the reader takes them with
``map="osm"``, resized with nearest-neighbour sampling (the source pixel under each output pixel's centre).

Convention (labels):
    A label line has 13 tokens ``<pano> <sat> dr dc <sat> dr dc <sat> dr dc <sat> dr dc``; the first tile is the
    positive, the other three are semi-positives. The panorama sits at the continuous, edge-based pixel
    (row 320 + dr, col 320 - dc) of the 640x640 tile; the tile's name carries the lat/lon of its centre point
    (the corner shared by pixels 319 and 320 in both axes). In global zoom-20 pixels (256-px tiles),
    ``dr = row_pano - row_centre`` and ``dc = col_centre - col_pano``. Metres per pixel of a 640-px tile come
    from the tile's latitude: ``156543.03392 * cos(lat) / 2**20``; a tile resized to S px has ``640 / S`` times
    that.

Convention (writer):
    Tile centres lie on the global zoom-20 grid at integer multiples of 320 px (a 50% overlap, as in VIGOR), so
    every panorama lies in exactly 4 tiles; the positive holds it in its central quarter [160, 480) x [160, 480).
    The semi-positives follow in the order: the positive's horizontal neighbour (same row of tiles), its
    vertical neighbour (same column of tiles), then the diagonal one. Deltas are computed from the lat/lon as
    written in the names (8 decimals, < 0.05 px), so labels and names agree exactly.

Convention (augmentation, ``heading_deg``):
    ``heading_deg`` is the azimuth of the panorama's centre column measured in the returned aerial tile's frame:
    degrees clockwise from the tile's up direction (towards row 0), in [0, 360). Without augmentation it is 0:
    VIGOR panoramas are north-aligned and tiles north-up. The item is built in this order:

    1. ``random_roll``: the panorama is rolled by s columns (``numpy.roll(pano, s, axis=-1)``, column u moves to
       u + s), so ``heading_deg -= 360 * s / W``.
    2. ``augment`` flip (probability 1/2): the aerial tile is mirrored left-right (col -> S - col) and the
       panorama's columns are reversed (u -> W - u); the scene is mirrored consistently, so
       ``heading_deg = -heading_deg``.
    3. ``augment`` rotation: the aerial tile is rotated by k * 90 degrees clockwise, k uniform in {0, 1, 2, 3}
       (continuous pixel (row, col) -> (col, S - row) per quarter turn); true north then points k * 90 degrees
       clockwise from the tile's up (k = 1: north is to the right), so ``heading_deg += 90 * k``.

    ``pano_px_in_tile`` is transformed with the tile, so the panorama stays on its pixel, and a feature that the
    panorama sees at column u lies, seen from ``pano_px_in_tile``, at tile azimuth
    ``heading_deg + (u / W - 0.5) * 360`` (DESIGN's panorama convention applied in the tile frame).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from crossview.errors import ConfigError, CrossviewError, ImageReadError
from crossview.fsio import atomic_write_bytes
from crossview.geometry.frames import LatLon, wrap_heading_deg
from crossview.geometry.webmercator import (
    EARTH_EQUATOR_M,
    MAX_LATITUDE_DEG,
    latlon_to_pixel,
    meters_per_pixel,
    pixel_to_latlon,
)
from crossview.maps.raster import GeoRaster, MapError

ZOOM = 20
"""Web Mercator zoom of VIGOR's aerial tiles."""

WEB_TILE_SIZE_PX = 256
"""Width of an XYZ tile in the global pixel grid the zoom refers to."""

TILE_SIZE_PX = 640
"""Width and height of a VIGOR aerial tile, pixels."""

HALF_TILE_PX = TILE_SIZE_PX // 2
"""Offset of the tile centre from its edges, pixels (320): the origin of the label deltas."""

TILE_STRIDE_PX = 320
"""Distance between the centres of neighbouring tiles written by :func:`write_vigor_city` (50% overlap)."""

PIXEL_SIZE_M = EARTH_EQUATOR_M / (WEB_TILE_SIZE_PX * 2**ZOOM)
"""Size of a zoom-20 pixel in EPSG:3857 metres (about 0.149 m; ground size is this times cos(lat))."""

MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) the reader decodes: a guard against decompression bombs (VIGOR: 2.1 M)."""

NAME_DECIMALS = 8
"""Decimal places of lat/lon in the names the writer makes: a rounding of <= 5e-9 deg, < 0.05 zoom-20 px."""

DELTA_DECIMALS = 6
"""Decimal places of the label deltas the writer prints (plain decimals, as VIGOR)."""

VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
"""The four cities of VIGOR; the same-area split uses all of them."""

CROSS_AREA_TRAIN_CITIES = ("NewYork", "Seattle")
CROSS_AREA_TEST_CITIES = ("SanFrancisco", "Chicago")

SPLITS_DIR = "splits"
CORRECTED_SPLITS_DIR = "splits__corrected"
CORRECTED_SUFFIX = "__corrected"
SATELLITE_LIST = "satellite_list.txt"
LABELS_ALL = "pano_label_balanced.txt"
LABELS_SAME_AREA_TRAIN = "same_area_balanced_train.txt"
LABELS_SAME_AREA_TEST = "same_area_balanced_test.txt"
LABEL_FILES = (LABELS_ALL, LABELS_SAME_AREA_TRAIN, LABELS_SAME_AREA_TEST)

MAP_FOLDERS = ("satellite", "osm")
"""Tile folders a :class:`VigorDataset` reads (``map=``): aerial RGB tiles or crossview's OSM class tiles."""

CLASS_TILE_DIR = "osm"
"""Folder of the OSM class tiles beside ``satellite/``."""

CLASSES_TEXT_KEY = "CLASSES"
"""PNG text chunk holding a class tile's legend (the same JSON as the ``CLASSES`` tag of OSM GeoTIFFs)."""

_CLASS_TILE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

_TOKENS_PER_LINE = 13
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_PANO_ID_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_PANO_NAME_RE = re.compile(rf"(?P<id>{_PANO_ID_RE.pattern}),(?P<lat>{_NUMBER}),(?P<lon>{_NUMBER}),\.jpg")
_SAT_NAME_RE = re.compile(rf"satellite_(?P<lat>{_NUMBER})_(?P<lon>{_NUMBER})\.png")
_CITY_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")

# What Pillow raises on a file it cannot open or decode.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class DatasetError(CrossviewError, ValueError):
    """A dataset folder or label file is malformed (bad line, bad name, path outside the root, ...)."""


class DatasetFileError(CrossviewError, FileNotFoundError):
    """A file the dataset needs (label file, panorama, aerial tile) does not exist."""


# ---- names -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanoramaRecord:
    """A panorama to write: its id (``[A-Za-z0-9_-][A-Za-z0-9_.-]*``) and WGS84 position in degrees."""

    pano_id: str
    lat: float
    lon: float


def _check_latlon(lat: float, lon: float, what: str) -> tuple[float, float]:
    lat, lon = float(lat), float(lon)
    if not (math.isfinite(lat) and abs(lat) <= MAX_LATITUDE_DEG):
        raise DatasetError(f"{what}: lat={lat!r} must be finite and within +/-{MAX_LATITUDE_DEG:.4f} deg")
    if not (math.isfinite(lon) and abs(lon) <= 180.0):
        raise DatasetError(f"{what}: lon={lon!r} must be finite and within [-180, 180] deg")
    return lat, lon


def format_pano_name(pano_id: str, lat: float, lon: float) -> str:
    """VIGOR panorama file name ``<id>,<lat>,<lon>,.jpg`` with 8 decimals; parses back with :func:`parse_pano_name`.

    Raises:
        DatasetError: an id that is empty or has characters other than letters, digits, ``_``, ``-``, ``.``
            (or starts with ``.``), or a position outside Web Mercator.
    """
    if not isinstance(pano_id, str) or not _PANO_ID_RE.fullmatch(pano_id):
        raise DatasetError(f"bad panorama id {pano_id!r}: expected letters, digits, '_', '-' or '.'")
    lat, lon = _check_latlon(lat, lon, f"panorama {pano_id}")
    return f"{pano_id},{lat:.{NAME_DECIMALS}f},{lon:.{NAME_DECIMALS}f},.jpg"


def format_satellite_name(lat: float, lon: float) -> str:
    """VIGOR aerial tile file name ``satellite_<lat>_<lon>.png`` (tile centre, 8 decimals)."""
    lat, lon = _check_latlon(lat, lon, "satellite tile")
    return f"satellite_{lat:.{NAME_DECIMALS}f}_{lon:.{NAME_DECIMALS}f}.png"


def parse_pano_name(name: str) -> PanoramaRecord:
    """Parse ``<id>,<lat>,<lon>,.jpg`` (any number of decimals, as in VIGOR) into a :class:`PanoramaRecord`.

    Raises:
        DatasetError: the name does not have that form or the position is outside Web Mercator.
    """
    match = _PANO_NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise DatasetError(f"bad panorama name {name!r}: expected '<id>,<lat>,<lon>,.jpg'")
    lat, lon = _check_latlon(float(match["lat"]), float(match["lon"]), f"panorama name {name!r}")
    return PanoramaRecord(match["id"], lat, lon)


def parse_satellite_name(name: str) -> LatLon:
    """Parse ``satellite_<lat>_<lon>.png`` into the tile centre's ``LatLon`` (degrees).

    Raises:
        DatasetError: the name does not have that form or the position is outside Web Mercator.
    """
    match = _SAT_NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise DatasetError(f"bad satellite tile name {name!r}: expected 'satellite_<lat>_<lon>.png'")
    lat, lon = _check_latlon(float(match["lat"]), float(match["lon"]), f"satellite tile name {name!r}")
    return LatLon(lat, lon)


def _check_city(city: str) -> str:
    if not isinstance(city, str) or not _CITY_RE.fullmatch(city):
        raise ConfigError(f"bad city name {city!r}: expected letters, digits, '_', '-' or '.' (a plain folder name)")
    return city


def _check_plain_name(name: str) -> None:
    """Defence in depth behind the name regexes: one path component, never a way out of its folder."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name or os.path.isabs(name):
        raise DatasetError(f"file name {name!r} is not a plain file name")


def corrected_name(label_file: str) -> str:
    """SliceMatch's name for the corrected version of a label file: ``x.txt`` -> ``x__corrected.txt``."""
    stem, suffix = os.path.splitext(label_file)
    return f"{stem}{CORRECTED_SUFFIX}{suffix}"


# ---- writer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OrthoGrid:
    """Where a GeoRaster lies in the global zoom-20 pixel grid."""

    col0: int
    row0: int
    height: int
    width: int


def _ortho_grid(ortho: GeoRaster) -> _OrthoGrid:
    """Check that ``ortho`` is a 3-band uint8 EPSG:3857 raster on the global zoom-20 grid; return its place."""
    if not isinstance(ortho, GeoRaster):
        raise MapError(f"write_vigor_city needs a GeoRaster, got {type(ortho).__name__}")
    if ortho.count != 3 or ortho.array.dtype != np.uint8:
        raise MapError(f"the ortho must be a 3-band uint8 RGB raster, got {ortho.count} bands of {ortho.array.dtype}")
    if ortho.crs.to_epsg() != 3857:
        raise MapError(f"the ortho must be in EPSG:3857 (Web Mercator), got {ortho.crs.to_string()}")
    t = ortho.transform
    if t.b != 0 or t.d != 0 or not math.isclose(t.a, PIXEL_SIZE_M, rel_tol=1e-9):
        raise MapError(f"the ortho must be north-up with {PIXEL_SIZE_M!r} m pixels (zoom 20), got transform {t!r}")
    if not math.isclose(t.e, -PIXEL_SIZE_M, rel_tol=1e-9):
        raise MapError(f"the ortho must be north-up with {PIXEL_SIZE_M!r} m pixels (zoom 20), got transform {t!r}")
    col0 = (t.c + EARTH_EQUATOR_M / 2) / PIXEL_SIZE_M
    row0 = (EARTH_EQUATOR_M / 2 - t.f) / PIXEL_SIZE_M
    if abs(col0 - round(col0)) > 1e-4 or abs(row0 - round(row0)) > 1e-4:
        raise MapError(
            f"the ortho's origin is at global zoom-20 pixel (col {col0:.6f}, row {row0:.6f}): "
            "it must be an integer pixel of the global grid"
        )
    return _OrthoGrid(round(col0), round(row0), ortho.height, ortho.width)


def _axis_tiles(p: float) -> tuple[int, int]:
    """Indices (central, other) of the two tile centres (multiples of the stride) whose tiles hold coordinate p."""
    m = math.floor(p / TILE_STRIDE_PX)
    central_is_m = p - m * TILE_STRIDE_PX < TILE_STRIDE_PX / 2
    return (m, m + 1) if central_is_m else (m + 1, m)


def containing_tiles(col_px: float, row_px: float) -> list[tuple[int, int]]:
    """Global zoom-20 pixel centres (col_c, row_c) of the 4 writer tiles holding a global pixel position.

    Returns:
        [positive, horizontal neighbour, vertical neighbour, diagonal]; the positive holds the point in its
        central quarter, i.e. ``-160 <= col_px - col_c < 160`` and the same for rows.
    """
    col_central, col_other = _axis_tiles(col_px)
    row_central, row_other = _axis_tiles(row_px)
    order = [(col_central, row_central), (col_other, row_central), (col_central, row_other), (col_other, row_other)]
    return [(kc * TILE_STRIDE_PX, kr * TILE_STRIDE_PX) for kc, kr in order]


def _tile_window(grid: _OrthoGrid, centre: tuple[int, int]) -> tuple[int, int] | None:
    """Top-left (row, col) of a tile inside the ortho array, or None when it does not fit."""
    row = centre[1] - HALF_TILE_PX - grid.row0
    col = centre[0] - HALF_TILE_PX - grid.col0
    inside = row >= 0 and row + TILE_SIZE_PX <= grid.height and col >= 0 and col + TILE_SIZE_PX <= grid.width
    return (row, col) if inside else None


def _format_delta(value: float) -> str:
    return f"{value:.{DELTA_DECIMALS}f}"


@dataclass(frozen=True)
class _PanoLabel:
    name: str
    line: str
    tiles: tuple[tuple[int, int], ...]


def _label_for(pano: PanoramaRecord, grid: _OrthoGrid, ortho: GeoRaster, tile_names: dict) -> _PanoLabel:
    """The label line of one panorama; checks that its 4 tiles lie inside the valid part of the ortho."""
    name = format_pano_name(pano.pano_id, pano.lat, pano.lon)
    written = parse_pano_name(name)
    col_p, row_p = latlon_to_pixel(lat=written.lat, lon=written.lon, zoom=ZOOM, tile_size=WEB_TILE_SIZE_PX)
    centres = containing_tiles(col_p, row_p)
    tokens = [name]
    for centre in centres:
        sat_name = tile_names.get(centre) or _tile_name(centre)
        window = _tile_window(grid, centre)
        if window is None:
            raise DatasetError(
                f"panorama {name}: its aerial tile {sat_name} (global zoom-20 cols {centre[0] - HALF_TILE_PX}.."
                f"{centre[0] + HALF_TILE_PX - 1}, rows {centre[1] - HALF_TILE_PX}..{centre[1] + HALF_TILE_PX - 1}) "
                f"is not inside the ortho (cols {grid.col0}..{grid.col0 + grid.width - 1}, "
                f"rows {grid.row0}..{grid.row0 + grid.height - 1})"
            )
        if ortho.valid is not None and not ortho.valid[_window_slice(window)].all():
            raise DatasetError(f"panorama {name}: its aerial tile {sat_name} covers invalid (no-data) ortho pixels")
        tile_names[centre] = sat_name
        sat = parse_satellite_name(sat_name)
        col_c, row_c = latlon_to_pixel(lat=sat.lat, lon=sat.lon, zoom=ZOOM, tile_size=WEB_TILE_SIZE_PX)
        tokens += [sat_name, _format_delta(row_p - row_c), _format_delta(col_c - col_p)]
    return _PanoLabel(name, " ".join(tokens), tuple(centres))


def _tile_name(centre: tuple[int, int]) -> str:
    lat, lon = pixel_to_latlon(centre[0], centre[1], zoom=ZOOM, tile_size=WEB_TILE_SIZE_PX)
    return format_satellite_name(lat, lon)


def _window_slice(window: tuple[int, int]) -> tuple[slice, slice]:
    return slice(window[0], window[0] + TILE_SIZE_PX), slice(window[1], window[1] + TILE_SIZE_PX)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _png_bytes(array_chw: np.ndarray) -> bytes:
    """Encode a (3, H, W) uint8 array as PNG (no timestamp or other metadata: byte-deterministic).

    Compression level 1: four times faster than the default for files about 5% larger.
    """
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(array_chw.transpose(1, 2, 0)), "RGB")
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def class_tile_png_bytes(classes: np.ndarray, legend_json: str) -> bytes:
    """Encode a (G, H, W) uint8 class-index tile (G = 1..4) as a lossless PNG with its legend.

    Byte-deterministic (no timestamp); the legend goes into the text chunk :data:`CLASSES_TEXT_KEY`.

    Raises:
        DatasetError: not a uint8 (G, H, W) array with 1 to 4 bands.
    """
    if not isinstance(classes, np.ndarray) or classes.dtype != np.uint8 or classes.ndim != 3:
        raise DatasetError(f"a class tile must be a (G, H, W) uint8 array, got {getattr(classes, 'shape', classes)!r}")
    mode = _CLASS_TILE_MODES.get(classes.shape[0])
    if mode is None:
        raise DatasetError(f"a class tile PNG holds 1 to 4 bands, got {classes.shape[0]}")
    info = PngImagePlugin.PngInfo()
    info.add_text(CLASSES_TEXT_KEY, legend_json)
    pixels = classes[0] if mode == "L" else np.ascontiguousarray(classes.transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(buffer, format="PNG", compress_level=6, pnginfo=info)
    return buffer.getvalue()


def nearest_indices(source_px: int, target_px: int) -> np.ndarray:
    """(target_px,) source indices of a nearest-neighbour resize: the source pixel under each target pixel centre.

    Convention: target pixel ``i`` has its centre at continuous coordinate ``(i + 0.5) * source_px / target_px`` of
    the source (edge-based, DESIGN's pixel convention), which lies in source pixel ``floor`` of that.
    """
    return np.minimum(((np.arange(target_px) + 0.5) * source_px / target_px).astype(np.int64), source_px - 1)


def load_class_tile(path: Path, size_px: int | None = None) -> tuple[np.ndarray, str | None]:
    """Read an OSM class tile: (G, S, S) uint8 class indices (resized with :func:`nearest_indices`) and its legend.

    Raises:
        ImageReadError: unreadable, too large, or not a class-index PNG (mode ``L``, ``LA``, ``RGB``, ``RGBA``).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageReadError(
                    f"image {path} is {width}x{height} pixels, more than MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS}"
                )
            if image.mode not in _CLASS_TILE_MODES.values():
                raise ImageReadError(f"class tile {path} has PNG mode {image.mode}: expected uint8 class indices")
            legend = image.info.get(CLASSES_TEXT_KEY)
            array = np.asarray(image)
    except ImageReadError:
        raise
    except _IMAGE_ERRORS as error:
        raise ImageReadError(f"cannot read class tile {path}: {error}") from None
    classes = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if size_px is not None and (height, width) != (size_px, size_px):
        rows, cols = nearest_indices(height, size_px), nearest_indices(width, size_px)
        classes = classes[:, rows[:, None], cols[None, :]]
    return np.ascontiguousarray(classes), (legend if isinstance(legend, str) else None)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    _atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def _checked_panoramas(panoramas: Sequence[PanoramaRecord]) -> list[PanoramaRecord]:
    panos = list(panoramas)
    if not panos:
        raise DatasetError("write_vigor_city needs at least one panorama")
    seen: set[str] = set()
    for pano in panos:
        if not isinstance(pano, PanoramaRecord):
            raise DatasetError(f"expected PanoramaRecord items, got {pano!r}")
        if pano.pano_id in seen:
            raise DatasetError(f"duplicate panorama id {pano.pano_id!r}")
        seen.add(pano.pano_id)
    return panos


def _split_train(names: Sequence[str], train_fraction: float, seed: int) -> set[str]:
    """A seeded random subset of round(train_fraction * n) names (names given sorted: deterministic)."""
    count = math.floor(train_fraction * len(names) + 0.5)
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i] for i in order[:count]}


def write_vigor_city(
    root: str | os.PathLike[str],
    city: str,
    ortho: GeoRaster,
    panoramas: Sequence[PanoramaRecord],
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    corrected: bool = False,
) -> dict[str, Any]:
    """Cut VIGOR aerial tiles from an ortho and write one city's tiles, satellite list and label files.

    The panorama images themselves are not written: they belong at
    ``<root>/<city>/panorama/<format_pano_name(id, lat, lon)>`` (the folder is created empty).

    Args:
        root: dataset root (created if needed).
        city: city folder name.
        ortho: (3, H, W) uint8 RGB GeoRaster in EPSG:3857 on the global zoom-20 grid: pixel size
            ``PIXEL_SIZE_M``, north-up, origin at an integer global zoom-20 pixel. Its ``valid`` mask, if any,
            must be True under every tile a panorama needs.
        panoramas: the panoramas (unique ids); each must have its 4 tiles inside the ortho.
        train_fraction: fraction of panoramas in ``same_area_balanced_train.txt`` (the rest in ``_test``).
        seed: seed of the train/test split.
        corrected: also write ``__corrected`` copies of the three label files (identical content).

    Returns:
        Summary: ``city``, ``num_panoramas``, ``num_tiles``, ``num_train``, ``num_test`` and the paths
        ``panorama_dir``, ``satellite_dir``, ``satellite_list``, ``label_files`` (list).

    Raises:
        MapError: the ortho is not an RGB uint8 EPSG:3857 raster on the zoom-20 grid.
        DatasetError: a bad or duplicate panorama id, or a panorama whose tiles do not fit in the valid ortho.
        ConfigError: a bad city name or train fraction.
    """
    _check_city(city)
    if not (isinstance(train_fraction, (int, float)) and 0.0 <= train_fraction <= 1.0):
        raise ConfigError(f"train_fraction={train_fraction!r} must be a number in [0, 1]")
    grid = _ortho_grid(ortho)
    tile_names: dict[tuple[int, int], str] = {}
    labels = sorted((_label_for(p, grid, ortho, tile_names) for p in _checked_panoramas(panoramas)), key=_by_name)
    root = Path(root)
    panorama_dir, satellite_dir, splits_dir = (
        root / city / "panorama",
        root / city / "satellite",
        root / SPLITS_DIR / city,
    )
    panorama_dir.mkdir(parents=True, exist_ok=True)
    used = sorted({centre for label in labels for centre in label.tiles}, key=lambda c: (-c[1], c[0]))
    for centre in used:  # south to north, west to east: VIGOR's (lat, lon) order
        window = _tile_window(grid, centre)
        assert window is not None  # checked by _label_for
        _atomic_write_bytes(
            satellite_dir / tile_names[centre], _png_bytes(ortho.array[(slice(None), *_window_slice(window))])
        )
    _write_lines(splits_dir / SATELLITE_LIST, [tile_names[c] for c in used])
    train = _split_train([label.name for label in labels], float(train_fraction), seed)
    contents = {
        LABELS_ALL: [label.line for label in labels],
        LABELS_SAME_AREA_TRAIN: [label.line for label in labels if label.name in train],
        LABELS_SAME_AREA_TEST: [label.line for label in labels if label.name not in train],
    }
    label_files = []
    for file_name, lines in contents.items():
        for name in (file_name, corrected_name(file_name)) if corrected else (file_name,):
            _write_lines(splits_dir / name, lines)
            label_files.append(splits_dir / name)
    return {
        "city": city,
        "num_panoramas": len(labels),
        "num_tiles": len(used),
        "num_train": len(contents[LABELS_SAME_AREA_TRAIN]),
        "num_test": len(contents[LABELS_SAME_AREA_TEST]),
        "panorama_dir": panorama_dir,
        "satellite_dir": satellite_dir,
        "satellite_list": splits_dir / SATELLITE_LIST,
        "label_files": label_files,
    }


def _by_name(label: _PanoLabel) -> str:
    return label.name


# ---- reader ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VigorRecord:
    """One parsed label line.

    Attributes:
        city: city folder.
        pano_name: panorama file name.
        lat: panorama latitude from its name, degrees.
        lon: panorama longitude from its name, degrees.
        sat_names: the 4 tile names, positive first.
        deltas_px: the 4 (dr, dc) label deltas in 640-px tile pixels.
        label_file: the label file, relative to the root (posix).
        line_no: 1-based line number in ``label_file``.
    """

    city: str
    pano_name: str
    lat: float
    lon: float
    sat_names: tuple[str, str, str, str]
    deltas_px: tuple[tuple[float, float], ...]
    label_file: str
    line_no: int

    def pano_px_in_tile(self, tile: int = 0, tile_size_px: float = TILE_SIZE_PX) -> tuple[float, float]:
        """(row, col) of the panorama in tile ``tile`` (0 = positive) resized to ``tile_size_px``."""
        dr, dc = self.deltas_px[tile]
        scale = tile_size_px / TILE_SIZE_PX
        return (HALF_TILE_PX + dr) * scale, (HALF_TILE_PX - dc) * scale


def _parse_delta(token: str) -> float:
    value = float(token) if _NUMBER_RE.fullmatch(token) else math.nan
    if not math.isfinite(value):
        raise DatasetError(f"bad delta {token!r}: expected a finite plain number")
    return value


def _parse_label_tokens(
    tokens: Sequence[str], city: str, label_file: str, line_no: int, known_tiles: Container[str] = ()
) -> VigorRecord:
    """Parse one label line's tokens; tile names in ``known_tiles`` were parsed already (satellite list)."""
    if len(tokens) != _TOKENS_PER_LINE:
        raise DatasetError(f"expected {_TOKENS_PER_LINE} tokens, got {len(tokens)}")
    pano = parse_pano_name(tokens[0])
    sat_names = tuple(tokens[i] for i in (1, 4, 7, 10))
    for name in sat_names:
        if name not in known_tiles:
            parse_satellite_name(name)
    deltas = tuple((_parse_delta(tokens[i + 1]), _parse_delta(tokens[i + 2])) for i in (1, 4, 7, 10))
    return VigorRecord(city, tokens[0], pano.lat, pano.lon, sat_names, deltas, label_file, line_no)  # type: ignore[arg-type]


def _numbered_lines(path: Path, rel: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, tokens) of the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetFileError(f"label file not found: {rel}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{rel}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DatasetFileError(f"cannot read {rel}: {error.strerror or error}") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens:
            yield line_no, tokens


def _inside(path: Path, root_resolved: Path) -> bool:
    return path.resolve().is_relative_to(root_resolved)


def _list_dir(directory: Path, rel: str, hint: str = "") -> dict[str, bool]:
    """{name: is_symlink} of a folder's entries (one scandir: fast on VIGOR's 100k-file folders)."""
    try:
        with os.scandir(directory) as entries:
            return {entry.name: entry.is_symlink() for entry in entries}
    except FileNotFoundError:
        raise DatasetFileError(f"folder not found: {rel}{hint}") from None
    except OSError as error:
        raise DatasetFileError(f"cannot list {rel}: {error.strerror or error}") from None


def _load_rgb(path: Path, size_wh: tuple[int, int] | None) -> np.ndarray:
    """Decode an image file to a (3, H, W) float32 array in [0, 1], resized (bilinear) to ``size_wh``."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageReadError(
                    f"image {path} is {width}x{height} pixels, more than MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS}"
                )
            if size_wh is not None:
                image.draft("RGB", size_wh)  # JPEG: decode at a reduced scale >= size_wh (fast)
            rgb = image.convert("RGB")
    except ImageReadError:
        raise
    except _IMAGE_ERRORS as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from None
    if size_wh is not None and rgb.size != size_wh:
        rgb = rgb.resize(size_wh, Image.Resampling.BILINEAR)
    # numpy, not torch, for the conversion: several times faster on CPU for one image
    array = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    array *= np.float32(1.0 / 255.0)
    return array


def _check_size(value: Any, name: str, count: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = (value,) if count == 1 else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) != count or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise ConfigError(f"{name}={value!r} must be {'a positive integer' if count == 1 else '(H, W) positive ints'}")
    return values


def flip_tile_px(px_rc: tuple[float, float], size_px: float) -> tuple[float, float]:
    """Continuous (row, col) after mirroring an S x S tile left-right: (row, S - col)."""
    return px_rc[0], size_px - px_rc[1]


def rotate_tile_px(px_rc: tuple[float, float], size_px: float, quarter_turns_cw: int) -> tuple[float, float]:
    """Continuous (row, col) after rotating an S x S tile by ``quarter_turns_cw`` x 90 deg clockwise."""
    row, col = px_rc
    for _ in range(quarter_turns_cw % 4):
        row, col = col, size_px - row
    return row, col


PHOTOMETRIC_RANGES = {
    "gain": (0.7, 1.3),  # brightness multiplier
    "contrast": (0.7, 1.3),  # scale of the deviations from the image mean
    "saturation": (0.4, 1.5),  # scale of the chroma around the luminance
    "hue_deg": (-30.0, 30.0),  # rotation of the chroma plane
}
GRAYSCALE_PROBABILITY = 0.1
LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def photometric_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and hue of an RGB image (or a stack of them), clipped to [0, 1].

    The draws (:data:`PHOTOMETRIC_RANGES`, grayscale with :data:`GRAYSCALE_PROBABILITY`) are shared by every image
    of a stack. Each synthetic town has its own palette and sun, real cities their own seasons and sensors: the
    jitter keeps a model from relying on colours that a new place does not share.

    Args:
        image: (..., 3, H, W) float in [0, 1].
        rng: the item's generator.

    Returns:
        (..., 3, H, W) float32 in [0, 1].
    """
    gain, contrast, saturation, hue_deg = (rng.uniform(*PHOTOMETRIC_RANGES[k]) for k in PHOTOMETRIC_RANGES)
    gray = rng.random() < GRAYSCALE_PROBABILITY
    luma = np.einsum("c,...chw->...hw", LUMA_RGB, image)[..., None, :, :]
    chroma = image - luma
    # Rotate the chroma about the gray axis (Rodrigues' formula about (1, 1, 1) / sqrt 3; the axis part of a
    # chroma vector is small and kept), then scale it.
    angle = np.deg2rad(hue_deg)
    axis = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross
    chroma = np.einsum("dc,...chw->...dhw", rotation.astype(np.float32), chroma)
    out = luma + (0.0 if gray else saturation) * chroma
    mean = out.mean(axis=(-3, -2, -1), keepdims=True)
    out = (mean + contrast * (out - mean)) * gain
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def rotate_tile(image: np.ndarray, quarter_turns_cw: int) -> np.ndarray:
    """Rotate (..., S, S) images by ``quarter_turns_cw`` x 90 degrees clockwise (as displayed, row 0 on top)."""
    return np.rot90(image, -(quarter_turns_cw % 4), axes=(-2, -1))


class VigorDataset(torch.utils.data.Dataset):
    """VIGOR panoramas paired with their aerial tiles (real VIGOR or crossview's synthetic world).

    Items are dicts:

    - ``pano``: (3, H, W) float32 in [0, 1], equirectangular (resized to ``pano_size`` when given).
    - ``aerial``: (3, S, S) float32 in [0, 1], the positive tile (resized to ``aerial_size`` when given); with
      ``map="osm"`` its OSM class tile instead: (G, S, S) uint8 class indices (nearest-neighbour resize).
    - ``semi_aerial``: (3, 3, S, S) the semi-positive tiles (only with ``semi_positives=True``), and
      ``semi_pano_px_in_tile`` (3, 2) float32 the panorama's (row, col) in each of them.
    - ``pano_px_in_tile``: (2,) float32 continuous (row, col) of the panorama in ``aerial``:
      ``(320 + dr, 320 - dc) * S / 640``, then moved with the augmentation.
    - ``mpp``: metres per pixel of ``aerial``, ``156543.03392 * cos(lat_tile) / 2**20 * 640 / S``.
    - ``lat``, ``lon``: the panorama's position (degrees, from its name).
    - ``heading_deg``: azimuth of the panorama's centre column in the aerial tile's frame (module docstring).
    - ``pano_name``, ``sat_name``, ``city``, ``index``.

    Args:
        root: dataset root (holding ``<City>/`` and ``splits/``).
        split: ``"same"`` (same-area: the train or test list of every city) or ``"cross"`` (cross-area:
            ``pano_label_balanced.txt`` of NewYork + Seattle to train, SanFrancisco + Chicago to test).
        train: train or test part of the split.
        cities: cities to read instead of the split's default ones (e.g. a synthetic world's cities).
        corrected: read SliceMatch's ``__corrected`` label files.
        pano_size: (H, W) to resize panoramas to, or None.
        aerial_size: S to resize aerial tiles to, or None (native size, 640 for VIGOR).
        semi_positives: also return the 3 semi-positive tiles.
        augment: paired random flip + rotation by a multiple of 90 degrees (module docstring).
        random_roll: roll the panorama by a random number of columns.
        flip: mirror panorama and tile together with probability 1/2 (heading-preserving for heading 0).
        photometric: independent colour jitter of the panorama and of the tiles (:func:`photometric_jitter`); with
            ``map="osm"`` of the panorama only (class indices are not colours).
        map: the tile folder: ``"satellite"`` (aerial RGB) or ``"osm"`` (crossview's OSM class tiles of the same
            names, see the module docstring); flips and rotations apply to either alike.
        seed: seed of the augmentations (items are then a function of seed, epoch and index); None for fresh
            randomness on every call.
        validate_files: check at construction that every panorama and tile file exists inside the root.

    Raises:
        DatasetError: a malformed label line or name, or a path leaving the root; the message starts with
            ``<label file>:<line>:``.
        DatasetFileError: a missing label file, folder, panorama or tile.
        ConfigError: bad arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: str = "same",
        train: bool = True,
        cities: Sequence[str] | None = None,
        corrected: bool = False,
        pano_size: tuple[int, int] | None = None,
        aerial_size: int | None = None,
        semi_positives: bool = False,
        augment: bool = False,
        random_roll: bool = False,
        flip: bool = False,
        photometric: bool = False,
        seed: int | None = None,
        validate_files: bool = True,
        map: str = "satellite",
    ) -> None:
        self.root = Path(root)
        self._root_resolved = self.root.resolve()
        if not self.root.is_dir():
            raise DatasetFileError(f"dataset root not found: {self.root}")
        if split not in ("same", "cross"):
            raise ConfigError(f"split={split!r} must be 'same' or 'cross'")
        if map not in MAP_FOLDERS:
            raise ConfigError(f"map={map!r} must be one of {', '.join(MAP_FOLDERS)}")
        self.map = map
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed={seed!r} must be a non-negative integer or None")
        self.split, self.train, self.corrected = split, bool(train), bool(corrected)
        self.pano_size = _check_size(pano_size, "pano_size", 2)
        size = _check_size(aerial_size, "aerial_size", 1)
        self.aerial_size = size[0] if size else None
        self.semi_positives, self.augment, self.random_roll = bool(semi_positives), bool(augment), bool(random_roll)
        self.flip, self.photometric = bool(flip), bool(photometric)
        self.seed, self._epoch = seed, 0
        self._cities = self._select_cities(cities)
        self._listings: dict[tuple[str, str], dict[str, bool]] = {}
        self._satellite_city: dict[str, str] = {}
        self._satellite_names: list[str] = []
        records: list[VigorRecord] = []
        for city in self._cities:
            self._check_city_dirs(city, validate_files)
            self._read_satellite_list(city, validate_files)
            records += self._read_labels(city, validate_files)
        self._records = tuple(records)
        self.satellite_index = {name: i for i, name in enumerate(self._satellite_names)}

    # ---- construction ----------------------------------------------------------------------------------------
    def _select_cities(self, cities: Sequence[str] | None) -> tuple[str, ...]:
        if cities is None:
            if self.split == "same":
                return VIGOR_CITIES
            return CROSS_AREA_TRAIN_CITIES if self.train else CROSS_AREA_TEST_CITIES
        selected = (cities,) if isinstance(cities, str) else tuple(cities)
        if not selected or len(set(selected)) != len(selected):
            raise ConfigError(f"cities={cities!r} must be a non-empty list of distinct city names")
        return tuple(_check_city(city) for city in selected)

    @property
    def label_file_name(self) -> str:
        """Name of the label file this split reads in every city."""
        same_area = LABELS_SAME_AREA_TRAIN if self.train else LABELS_SAME_AREA_TEST
        name = LABELS_ALL if self.split == "cross" else same_area
        return corrected_name(name) if self.corrected else name

    def _splits_file(self, city: str, name: str) -> Path:
        """``splits/<City>/<name>``, or SliceMatch's ``splits__corrected/<City>/<name>`` when only that exists."""
        path = self.root / SPLITS_DIR / city / name
        if self.corrected and not path.exists():
            fallback = self.root / CORRECTED_SPLITS_DIR / city / name
            if fallback.exists():
                path = fallback
        if not path.is_file():
            raise DatasetFileError(f"file not found: {self._rel(path)} (dataset root {self.root})")
        if not _inside(path, self._root_resolved):
            raise DatasetError(f"{self._rel(path)} resolves to {path.resolve()}, outside the dataset root {self.root}")
        return path

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def _check_city_dirs(self, city: str, validate_files: bool) -> None:
        for kind in ("panorama", self.map):
            directory = self.root / city / kind
            if not _inside(directory, self._root_resolved):
                raise DatasetError(
                    f"{city}/{kind} resolves to {directory.resolve()}, outside the dataset root {self.root}"
                )
            if validate_files:
                hint = f" (add OSM tiles with: python -m crossview.data.synth.osmtiles {self.root})"
                self._listings[(city, kind)] = _list_dir(directory, f"{city}/{kind}", hint if kind == "osm" else "")

    def _check_file(self, city: str, kind: str, name: str, where: str) -> None:
        """A listed file must exist (when validating) and, if a symlink, stay inside the root."""
        _check_plain_name(name)
        listing = self._listings.get((city, kind))
        if listing is None:
            return
        if name not in listing:
            raise DatasetFileError(f"{where}: {kind} file not found: {city}/{kind}/{name}")
        if listing[name] and not _inside(self.root / city / kind / name, self._root_resolved):
            raise DatasetError(f"{where}: {city}/{kind}/{name} is a symlink leading outside the dataset root")

    def _read_satellite_list(self, city: str, validate_files: bool) -> None:
        path = self._splits_file(city, SATELLITE_LIST)
        rel = self._rel(path)
        for line_no, tokens in _numbered_lines(path, rel):
            where = f"{rel}:{line_no}"
            if len(tokens) != 1:
                raise DatasetError(f"{where}: expected 1 tile name, got {len(tokens)} tokens")
            name = tokens[0]
            try:
                parse_satellite_name(name)
            except DatasetError as error:
                raise DatasetError(f"{where}: {error}") from None
            self._check_file(city, self.map, name, where)
            if name in self._satellite_city:
                raise DatasetError(f"{where}: tile {name} is listed twice (also in {self._satellite_city[name]})")
            self._satellite_city[name] = city
            self._satellite_names.append(name)

    def _read_labels(self, city: str, validate_files: bool) -> list[VigorRecord]:
        path = self._splits_file(city, self.label_file_name)
        rel = self._rel(path)
        records = []
        for line_no, tokens in _numbered_lines(path, rel):
            where = f"{rel}:{line_no}"
            try:
                record = _parse_label_tokens(tokens, city, rel, line_no, self._satellite_city)
            except DatasetError as error:
                raise DatasetError(f"{where}: {error}") from None
            self._check_file(city, "panorama", record.pano_name, where)
            for name in record.sat_names:
                if self._satellite_city.get(name) != city:
                    raise DatasetError(f"{where}: tile {name} is not in {city}'s {SATELLITE_LIST}")
            records.append(record)
        return records

    # ---- public views ----------------------------------------------------------------------------------------
    @property
    def cities(self) -> tuple[str, ...]:
        """The cities read, in order."""
        return self._cities

    @property
    def records(self) -> tuple[VigorRecord, ...]:
        """The parsed label lines, one per item, in item order."""
        return self._records

    @property
    def satellite_names(self) -> list[str]:
        """Every tile in the cities' ``satellite_list.txt`` (the retrieval gallery), in file order."""
        return list(self._satellite_names)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws of a seeded dataset (call once per training epoch)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._records)

    # ---- loading ---------------------------------------------------------------------------------------------
    def _safe_path(self, city: str, kind: str, name: str) -> Path:
        _check_plain_name(name)
        path = self.root / city / kind / name
        if not _inside(path, self._root_resolved):
            raise DatasetError(f"{city}/{kind}/{name} resolves outside the dataset root {self.root}")
        return path

    def load_satellite(self, name: str) -> torch.Tensor:
        """A gallery tile as a (3, S, S) float32 tensor in [0, 1] (resized to ``aerial_size``, not augmented);
        with ``map="osm"`` the tile's OSM class raster, (G, S, S) uint8 class indices."""
        city = self._satellite_city.get(name)
        if city is None:
            raise DatasetError(f"unknown satellite tile {name!r}: not in the satellite lists of {list(self._cities)}")
        return torch.from_numpy(self._load_tile(city, name))

    def map_tags(self) -> dict[str, str]:
        """Tags describing the tiles, for :func:`crossview.encoders.check_map_modality`: ``{}`` for aerial tiles,
        ``{"CLASSES": legend JSON}`` of the first gallery tile for OSM tiles (``{}`` if it has no legend)."""
        if self.map != CLASS_TILE_DIR or not self._satellite_names:
            return {}
        name = self._satellite_names[0]
        _, legend = load_class_tile(self._safe_path(self._satellite_city[name], self.map, name))
        return {} if legend is None else {CLASSES_TEXT_KEY: legend}

    def _load_tile(self, city: str, name: str) -> np.ndarray:
        path = self._safe_path(city, self.map, name)
        if self.map == CLASS_TILE_DIR:
            tile = load_class_tile(path, self.aerial_size)[0]
        else:
            size = (self.aerial_size, self.aerial_size) if self.aerial_size else None
            tile = _load_rgb(path, size)
        if tile.shape[-1] != tile.shape[-2]:
            raise DatasetError(f"aerial tile {path} is {tile.shape[-1]}x{tile.shape[-2]} pixels: expected a square")
        return tile

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self._epoch, index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._records):
            raise IndexError(f"index {index} out of range for a dataset of {len(self._records)} items")
        record = self._records[index]
        pano_size = (self.pano_size[1], self.pano_size[0]) if self.pano_size else None
        pano = _load_rgb(self._safe_path(record.city, "panorama", record.pano_name), pano_size)
        count = 4 if self.semi_positives else 1
        tiles = np.stack([self._load_tile(record.city, name) for name in record.sat_names[:count]])
        size_px = tiles.shape[-1]
        px = [record.pano_px_in_tile(k, size_px) for k in range(count)]
        pano, tiles, px, heading_deg = self._augment(pano, tiles, px, self._rng(index))
        sat = parse_satellite_name(record.sat_names[0])
        item: dict[str, Any] = {
            "pano": torch.from_numpy(pano),
            "aerial": torch.from_numpy(tiles[0]),
            "pano_px_in_tile": torch.tensor(px[0], dtype=torch.float32),
            "mpp": float(meters_per_pixel(lat=sat.lat, zoom=ZOOM)) * TILE_SIZE_PX / size_px,
            "lat": record.lat,
            "lon": record.lon,
            "heading_deg": heading_deg,
            "pano_name": record.pano_name,
            "sat_name": record.sat_names[0],
            "city": record.city,
            "index": index,
        }
        if self.semi_positives:
            item["semi_aerial"] = torch.from_numpy(tiles[1:])
            item["semi_pano_px_in_tile"] = torch.tensor(px[1:], dtype=torch.float32)
        return item

    def _augment(
        self, pano: np.ndarray, tiles: np.ndarray, px: list[tuple[float, float]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]], float]:
        """Roll, flip and rotate as the module docstring says; returns the new views, positions and heading."""
        heading_deg = 0.0
        if self.random_roll:
            shift = int(rng.integers(pano.shape[-1]))
            pano = np.roll(pano, shift, axis=-1)
            heading_deg -= 360.0 * shift / pano.shape[-1]
        if self.augment:
            size_px = tiles.shape[-1]
            if rng.random() < 0.5:
                pano, tiles = pano[..., ::-1], tiles[..., ::-1]
                px = [flip_tile_px(p, size_px) for p in px]
                heading_deg = -heading_deg
            turns = int(rng.integers(4))
            tiles = rotate_tile(tiles, turns)
            px = [rotate_tile_px(p, size_px, turns) for p in px]
            heading_deg += 90.0 * turns
        elif self.flip and rng.random() < 0.5:
            pano, tiles = pano[..., ::-1], tiles[..., ::-1]
            px = [flip_tile_px(p, tiles.shape[-1]) for p in px]
            heading_deg = -heading_deg
        if self.photometric:
            pano = photometric_jitter(pano, rng)
            if self.map != CLASS_TILE_DIR:  # class indices are not colours
                tiles = photometric_jitter(tiles, rng)
        return np.ascontiguousarray(pano), np.ascontiguousarray(tiles), px, float(wrap_heading_deg(heading_deg))
