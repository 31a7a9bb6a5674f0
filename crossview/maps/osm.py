"""OpenStreetMap map source: load OSM features and rasterize them into a three-band class raster.

Sources (``load_osm_features``):
    * ``'osm'``: the Overpass API through osmnx (a bbox is required; endpoint, cache folder and timeout are
      arguments, osmnx's global settings are only changed inside a context manager and restored afterwards);
    * an OSM XML file: ``.osm``, ``.osm.xml``, ``.xml``, ``.osm.bz2``, ``.osm.gz`` (osmnx decompresses ``.bz2``
      and ``.gz`` itself, by suffix);
    * a vector file whose columns are OSM tags: GeoJSON (``.geojson``, ``.json``), GeoPackage (``.gpkg``),
      FlatGeobuf (``.fgb``) or Shapefile (``.shp``), read with geopandas.

Raster (``rasterize_osm``): uint8, three bands named ``areas``, ``ways``, ``nodes`` holding class indices
(0 = nothing) of the taxonomy ``OSM_CLASSES`` (OrienterNet's classes plus a few street-furniture nodes).
The legend is stored as JSON in the raster tag ``CLASSES``: band name -> class names in index order from 1
(``read_classes`` parses it back).

Taxonomy (``OSM_CLASSES``; a rule ``key=value`` matches that exact value or one item of a ``;`` list,
``key=*`` matches any value except ``no``):

    ======  =====  ================  =================================================================
    band    index  class             OSM tags
    ======  =====  ================  =================================================================
    areas   1      building          building=*
    areas   2      parking           amenity=parking|motorcycle_parking
    areas   3      playground        leisure=playground
    areas   4      grass             landuse=grass|meadow|village_green|recreation_ground,
                                     natural=grassland
    areas   5      park              leisure=park|garden|pitch|golf_course|dog_park
    areas   6      forest            landuse=forest, natural=wood|scrub
    areas   7      water             natural=water, waterway=riverbank, landuse=reservoir|basin,
                                     leisure=swimming_pool
    ways    1      fence             barrier=fence|guard_rail
    ways    2      wall              barrier=wall|retaining_wall|city_wall
    ways    3      hedge             barrier=hedge
    ways    4      kerb              barrier=kerb
    ways    5      building_outline  building=* (the outline of building polygons)
    ways    6      cycleway          highway=cycleway
    ways    7      path              highway=footway|path|pedestrian|steps|bridleway
    ways    8      road              highway=motorway|trunk|primary|secondary|tertiary|unclassified|
                                     residential|living_street|service|road|track|*_link
    ways    9      busway            highway=busway|bus_guideway
    ways    10     tree_row          natural=tree_row
    nodes   1..12  tree, crossing, lamp, traffic_signal, bus_stop, bench, post_box, waste_basket, bollard,
                   fire_hydrant, vending_machine, bicycle_parking (see the table)
    ======  =====  ================  =================================================================

Geometry per band: ``areas`` takes polygons only (filled); ``ways`` takes lines and the boundaries of
polygons (a polygonal ``highway=*`` with ``area=yes`` is filled instead), buffered to the way's width with
flat caps; ``nodes`` takes points, drawn as disks of ``NODE_RADIUS_M``.

Widths (``way_width_m``): roads and busways: the ``width`` tag when present and parseable, else
``lanes`` × ``LANE_WIDTH_M``, else the default lane count of their ``highway`` value (``ROAD_DEFAULT_LANES``,
halved for ``oneway`` roads) × ``LANE_WIDTH_M``. Paths and cycleways: ``width`` tag or ``WAY_WIDTH_M``. Other
ways: ``WAY_WIDTH_M``. Widths are metres on the ground, converted to CRS units with the projection's scale
factor at the raster centre, and widened to at least ``MIN_WIDTH_PX`` pixels so thin ways stay connected at
coarse resolution.

Priority (``CLASS_PRIORITY``): where two classes of one band overlap, the one listed first in
``CLASS_PRIORITY[band]`` wins (it is drawn last). A feature matching several classes of one band takes the
one of highest priority. Buildings win in ``areas``; thin barriers and outlines win over wide roads in
``ways`` so roads do not erase them.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError
from xml.sax import SAXException

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MergeAlg
from rasterio.warp import transform_bounds

from crossview.errors import ConfigError, CoordinateError
from crossview.geometry.bbox import BBox
from crossview.geometry.frames import LocalFrame
from crossview.maps.raster import GeoRaster, MapError, MapReadError

BAND_NAMES: tuple[str, str, str] = ("areas", "ways", "nodes")
ATTRIBUTION = "© OpenStreetMap contributors, ODbL 1.0"
CLASSES_TAG = "CLASSES"

# band -> class -> tag rules; the class index is its position in the band (from 1). Order = legend order.
OSM_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "areas": {
        "building": ("building=*",),
        "parking": ("amenity=parking", "amenity=motorcycle_parking"),
        "playground": ("leisure=playground",),
        "grass": (
            "landuse=grass",
            "landuse=meadow",
            "landuse=village_green",
            "landuse=recreation_ground",
            "natural=grassland",
        ),
        "park": ("leisure=park", "leisure=garden", "leisure=pitch", "leisure=golf_course", "leisure=dog_park"),
        "forest": ("landuse=forest", "natural=wood", "natural=scrub"),
        "water": (
            "natural=water",
            "waterway=riverbank",
            "landuse=reservoir",
            "landuse=basin",
            "leisure=swimming_pool",
        ),
    },
    "ways": {
        "fence": ("barrier=fence", "barrier=guard_rail"),
        "wall": ("barrier=wall", "barrier=retaining_wall", "barrier=city_wall"),
        "hedge": ("barrier=hedge",),
        "kerb": ("barrier=kerb",),
        "building_outline": ("building=*",),
        "cycleway": ("highway=cycleway",),
        "path": ("highway=footway", "highway=path", "highway=pedestrian", "highway=steps", "highway=bridleway"),
        "road": (
            "highway=motorway",
            "highway=trunk",
            "highway=primary",
            "highway=secondary",
            "highway=tertiary",
            "highway=unclassified",
            "highway=residential",
            "highway=living_street",
            "highway=service",
            "highway=road",
            "highway=track",
            "highway=motorway_link",
            "highway=trunk_link",
            "highway=primary_link",
            "highway=secondary_link",
            "highway=tertiary_link",
        ),
        "busway": ("highway=busway", "highway=bus_guideway"),
        "tree_row": ("natural=tree_row",),
    },
    "nodes": {
        "tree": ("natural=tree",),
        "crossing": ("highway=crossing",),
        "lamp": ("highway=street_lamp",),
        "traffic_signal": ("highway=traffic_signals",),
        "bus_stop": ("highway=bus_stop",),
        "bench": ("amenity=bench",),
        "post_box": ("amenity=post_box",),
        "waste_basket": ("amenity=waste_basket",),
        "bollard": ("barrier=bollard",),
        "fire_hydrant": ("emergency=fire_hydrant",),
        "vending_machine": ("amenity=vending_machine",),
        "bicycle_parking": ("amenity=bicycle_parking",),
    },
}

# Legend: band -> class names in index order (index 1 first).
CLASS_NAMES: dict[str, tuple[str, ...]] = {band: tuple(classes) for band, classes in OSM_CLASSES.items()}

# band -> classes from highest to lowest priority (the first wins where classes overlap).
CLASS_PRIORITY: dict[str, tuple[str, ...]] = {
    "areas": ("building", "parking", "playground", "water", "forest", "grass", "park"),
    "ways": (
        "building_outline",
        "wall",
        "fence",
        "hedge",
        "kerb",
        "tree_row",
        "cycleway",
        "path",
        "busway",
        "road",
    ),
    "nodes": (
        "traffic_signal",
        "crossing",
        "bus_stop",
        "lamp",
        "bollard",
        "fire_hydrant",
        "post_box",
        "bench",
        "waste_basket",
        "vending_machine",
        "bicycle_parking",
        "tree",
    ),
}

LANE_WIDTH_M = 3.0
# Default number of lanes (both directions) by highway=* value, for roads and busways without width/lanes tags.
ROAD_DEFAULT_LANES: dict[str, float] = {
    "motorway": 4,
    "trunk": 4,
    "primary": 2,
    "secondary": 2,
    "tertiary": 2,
    "unclassified": 2,
    "residential": 2,
    "living_street": 2,
    "road": 2,
    "motorway_link": 2,
    "trunk_link": 2,
    "primary_link": 2,
    "secondary_link": 2,
    "tertiary_link": 2,
    "service": 1,
    "track": 1,
    "busway": 1,
    "bus_guideway": 1,
}
# Full width (metres) of ways whose width does not come from tags (and the fallback of those whose does).
WAY_WIDTH_M: dict[str, float] = {
    "fence": 1.0,
    "wall": 1.0,
    "hedge": 1.5,
    "kerb": 1.0,
    "building_outline": 1.0,
    "cycleway": 2.0,
    "path": 2.0,
    "road": 2 * LANE_WIDTH_M,
    "busway": LANE_WIDTH_M,
    "tree_row": 4.0,
}
WIDTH_TAG_CLASSES = frozenset({"road", "busway", "cycleway", "path"})  # honour width=*
LANE_CLASSES = frozenset({"road", "busway"})  # honour lanes=* and ROAD_DEFAULT_LANES
MAX_WIDTH_TAG_M = 100.0  # larger width=* values are taken as mistakes and ignored
NODE_RADIUS_M = 1.0
MIN_WIDTH_PX = 1.5  # thinner ways would break into dashes when pixel centres fall outside them
MIN_NODE_RADIUS_PX = 0.75  # > half the pixel diagonal: a disk always covers at least one pixel centre
BBOX_MARGIN_M = 50.0  # osm_map loads this much beyond the raster so ways just outside still draw their width
MAX_PIXELS = 1 << 30

OSM_XML_SUFFIXES = (".osm", ".xml", ".osm.bz2", ".osm.gz", ".xml.bz2", ".xml.gz")
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".fgb", ".shp")

_AREA_TYPES = frozenset({"Polygon", "MultiPolygon"})
_WAY_TYPES = frozenset({"LineString", "MultiLineString", "LinearRing", "Polygon", "MultiPolygon"})
_NODE_TYPES = frozenset({"Point", "MultiPoint"})
_BAND_GEOMETRY_TYPES = {"areas": _AREA_TYPES, "ways": _WAY_TYPES, "nodes": _NODE_TYPES}
_WIDTH_TAG_KEYS = ("highway", "width", "lanes", "oneway", "area")  # the tags way widths depend on
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*(m|ft|')?\s*$", re.IGNORECASE)
_FEET_TO_M = 0.3048
_MAX_LISTED_VALUES = 8  # overpass_query_tags asks for any value of keys with more values


# ---- loading ---------------------------------------------------------------------------------------------------


def load_osm_features(
    source: str | Path,
    *,
    bbox: BBox | Sequence[float] | None = None,
    overpass_endpoint: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 180,
) -> gpd.GeoDataFrame:
    """Load OSM features (tagged nodes, ways and multipolygon relations) from Overpass or a file.

    Args:
        source: ``'osm'`` for the Overpass API, or the path of an OSM XML file or of a vector file with OSM
            tag columns (see the module docstring for the suffixes).
        bbox: area to load (W, S, E, N degrees); required for ``'osm'``, optional filter for files (features
            intersecting it are kept).
        overpass_endpoint: Overpass API base URL (``.../api``), default osmnx's (``overpass-api.de``).
        cache_dir: folder of osmnx's response cache for ``'osm'``; ``None`` disables the cache.
        timeout_s: Overpass request timeout, seconds.

    Returns:
        GeoDataFrame in EPSG:4326, one row per feature, columns = OSM tags plus ``geometry``, indexed by
        (``element``, ``id``) where known. ``attrs['source']`` records the source.

    Raises:
        ConfigError: ``'osm'`` without a bbox, a non-positive timeout or an unknown file type.
        MapReadError: a missing or unparseable file, or a failed Overpass request (naming the file or URL).
        MapError: no OSM features in the file or area.
    """
    box = _as_bbox(bbox)
    if isinstance(source, str) and source.strip().lower() == "osm":
        if box is None:
            raise ConfigError("source 'osm' (Overpass) needs a bbox (--bbox W,S,E,N or --center/--radius)")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s={timeout_s!r} must be positive")
        features = _load_overpass(box, overpass_endpoint, cache_dir, float(timeout_s))
        label = f"osm ({overpass_endpoint or 'overpass default'})"
    else:
        path = Path(source)
        features = _load_file(path, box)
        label = str(path)
    features.attrs["source"] = label
    return features


def _as_bbox(bbox: BBox | Sequence[float] | None) -> BBox | None:
    if bbox is None or isinstance(bbox, BBox):
        return bbox
    try:
        west, south, east, north = bbox
    except (TypeError, ValueError):
        raise ConfigError(f"bbox={bbox!r} must be a BBox or (west, south, east, north)") from None
    return BBox(west, south, east, north)


def overpass_query_tags() -> dict[str, bool | list[str]]:
    """The osmnx ``tags`` query covering every rule of ``OSM_CLASSES``.

    A key becomes ``True`` (any value) when a rule takes any value or when it has many listed values (a short
    query is worth the extra features); otherwise it lists its values.
    """
    listed: dict[str, set[str]] = {}
    for classes in OSM_CLASSES.values():
        for rules in classes.values():
            for key, value in map(_split_rule, rules):
                listed.setdefault(key, set()).add(value)
    return {
        key: True if "*" in values or len(values) > _MAX_LISTED_VALUES else sorted(values)
        for key, values in listed.items()
    }


@contextmanager
def osmnx_settings(**values: Any) -> Iterator[None]:
    """Set ``osmnx.settings`` attributes for the duration of a ``with`` block, then restore them.

    Also restores ``socket.getaddrinfo``, which osmnx replaces process-wide to pin the Overpass host's IP.
    """
    import osmnx

    unknown = [name for name in values if not hasattr(osmnx.settings, name)]
    if unknown:
        raise ConfigError(f"unknown osmnx settings: {', '.join(unknown)}")
    saved = {name: getattr(osmnx.settings, name) for name in values}
    saved_getaddrinfo = socket.getaddrinfo
    try:
        for name, value in values.items():
            setattr(osmnx.settings, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(osmnx.settings, name, value)
        socket.getaddrinfo = saved_getaddrinfo


def _load_overpass(box: BBox, endpoint: str | None, cache_dir: Path | None, timeout_s: float) -> gpd.GeoDataFrame:
    import osmnx
    import requests
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    settings: dict[str, Any] = {
        "requests_timeout": timeout_s,
        "overpass_rate_limit": False,  # no call to the server's /status endpoint before each query
        "use_cache": cache_dir is not None,
        "cache_only_mode": False,
    }
    if endpoint is not None:
        settings["overpass_url"] = endpoint.rstrip("/")
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        settings["cache_folder"] = str(cache_dir)
    area = f"bbox (W,S,E,N) = ({box.west}, {box.south}, {box.east}, {box.north})"
    with osmnx_settings(**settings):
        url = osmnx.settings.overpass_url
        try:
            features = osmnx.features.features_from_bbox(
                (box.west, box.south, box.east, box.north), tags=overpass_query_tags()
            )
        except InsufficientResponseError:
            raise MapError(f"no OSM features in {area} (Overpass {url})") from None
        except (requests.RequestException, ResponseStatusCodeError, KeyError, OSError) as error:
            raise MapReadError(f"Overpass request to {url} failed for {area}: {error!r}") from None
    if features.empty:
        raise MapError(f"no OSM features in {area} (Overpass {url})")
    return features


def _load_file(path: Path, box: BBox | None) -> gpd.GeoDataFrame:
    name = path.name.lower()
    if name.endswith(VECTOR_SUFFIXES):
        loader = _read_vector
    elif name.endswith(OSM_XML_SUFFIXES):
        loader = _read_osm_xml
    else:
        raise ConfigError(
            f"unknown OSM source {str(path)!r}: expected 'osm', an OSM XML file ({', '.join(OSM_XML_SUFFIXES)}) "
            f"or a vector file with OSM tag columns ({', '.join(VECTOR_SUFFIXES)})"
        )
    if not path.is_file():
        raise MapReadError(f"OSM file not found: {path}")
    features = loader(path, box)
    if features.empty:
        where = "" if box is None else f" within bbox (W,S,E,N) = ({box.west}, {box.south}, {box.east}, {box.north})"
        raise MapError(f"no OSM features in {path}{where}")
    return features


def _read_osm_xml(path: Path, box: BBox | None) -> gpd.GeoDataFrame:
    import osmnx
    from osmnx._errors import InsufficientResponseError

    polygon = None if box is None else shapely.box(box.west, box.south, box.east, box.north)
    try:
        return osmnx.features.features_from_xml(path, polygon=polygon)
    except InsufficientResponseError:
        raise MapError(f"no OSM features in {path}") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, ParseError, SAXException) as error:
        raise MapReadError(f"cannot read OSM XML {path}: {error}") from None


def _read_vector(path: Path, box: BBox | None) -> gpd.GeoDataFrame:
    try:
        features = gpd.read_file(path)
    except (OSError, RuntimeError, ValueError) as error:
        raise MapReadError(f"cannot read vector file {path}: {error}") from None
    if features.crs is None:
        features = features.set_crs("EPSG:4326")  # GeoJSON (RFC 7946) is always WGS84
    features = features.to_crs("EPSG:4326")
    if {"element", "id"} <= set(features.columns):
        features = features.set_index(["element", "id"]).sort_index()
    features = features[features.geometry.notna() & ~features.geometry.is_empty]
    if box is not None:
        features = features[features.intersects(shapely.box(box.west, box.south, box.east, box.north))]
    return features


# ---- classification --------------------------------------------------------------------------------------------


def _split_rule(rule: str) -> tuple[str, str]:
    key, _, value = rule.partition("=")
    return key, value or "*"


def _tag_mask(features: pd.DataFrame, key: str, value: str) -> np.ndarray:
    """(N,) bool: rows whose tag ``key`` matches ``value`` (``*``: any value except ``no``; ``a;b`` lists)."""
    if key not in features.columns:
        return np.zeros(len(features), dtype=bool)
    column = features[key]
    present = column.notna().to_numpy()
    text = column.astype(str).str.strip()
    if value == "*":
        return present & (text != "no").to_numpy()
    match = np.array(text == value, dtype=bool)
    listed = present & text.str.contains(";", regex=False).to_numpy()
    for row in np.flatnonzero(listed):
        match[row] = value in (item.strip() for item in text.iloc[row].split(";"))
    return present & match


def classify_features(features: gpd.GeoDataFrame) -> pd.DataFrame:
    """Class index of every feature in each band (0 = not in the band).

    A feature's geometry must suit the band (areas: polygons; ways: lines or polygon outlines; nodes: points).
    Where a feature matches several classes of one band, the class of highest ``CLASS_PRIORITY`` wins.

    Args:
        features: (N rows) OSM features with tag columns and a geometry column (any CRS).

    Returns:
        DataFrame with the index of ``features`` and uint8 columns ``areas``, ``ways``, ``nodes``.
    """
    geometry_types = features.geometry.geom_type.to_numpy()
    non_empty = (features.geometry.notna() & ~features.geometry.is_empty).to_numpy()
    result = {}
    for band in BAND_NAMES:
        index = np.zeros(len(features), dtype=np.uint8)
        suitable = non_empty & np.isin(geometry_types, list(_BAND_GEOMETRY_TYPES[band]))
        for name in reversed(CLASS_PRIORITY[band]):  # lowest priority first: later classes overwrite
            matched = np.zeros(len(features), dtype=bool)
            for key, value in map(_split_rule, OSM_CLASSES[band][name]):
                matched |= _tag_mask(features, key, value)
            index[matched & suitable] = CLASS_NAMES[band].index(name) + 1
        result[band] = index
    return pd.DataFrame(result, index=features.index)


# ---- widths ----------------------------------------------------------------------------------------------------


def parse_width_m(value: Any) -> float | None:
    """Metres from an OSM ``width`` value (``'7'``, ``'7.5 m'``, ``'3,5'``, ``'12 ft'``, ``"12'"``), else None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    found = _NUMBER_UNIT.match(str(value))
    if found is None:
        return None
    number = float(found.group(1).replace(",", "."))
    unit = (found.group(2) or "m").lower()
    metres = number * (_FEET_TO_M if unit in ("ft", "'") else 1.0)
    return metres if 0.0 < metres <= MAX_WIDTH_TAG_M else None


def parse_lanes(value: Any) -> float | None:
    """Lane count from an OSM ``lanes`` value (a positive number), else None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        lanes = float(str(value).strip())
    except ValueError:
        return None
    return lanes if 0 < lanes <= 50 else None


def _is_oneway(tags: Mapping[str, Any]) -> bool:
    return str(tags.get("oneway", "")).strip().lower() in ("yes", "true", "1", "-1")


def way_width_m(class_name: str, tags: Mapping[str, Any]) -> float:
    """Ground width (metres) of a way of class ``class_name`` with OSM ``tags`` (see the module docstring).

    Example: ``highway=residential`` -> 2 lanes × 3 m = 6 m; with ``lanes=4`` -> 12 m; with ``width=7.5`` -> 7.5 m.
    """
    if class_name not in WAY_WIDTH_M:
        raise MapError(f"{class_name!r} is not a class of the ways band ({', '.join(CLASS_NAMES['ways'])})")
    if class_name in WIDTH_TAG_CLASSES:
        width = parse_width_m(tags.get("width"))
        if width is not None:
            return width
    if class_name in LANE_CLASSES:
        lanes = parse_lanes(tags.get("lanes"))
        if lanes is None and str(tags.get("highway")) in ROAD_DEFAULT_LANES:
            lanes = ROAD_DEFAULT_LANES[str(tags.get("highway"))]
            lanes = max(1.0, lanes / 2) if _is_oneway(tags) else lanes
        if lanes is not None:
            return lanes * LANE_WIDTH_M
    return WAY_WIDTH_M[class_name]


# ---- rasterization ---------------------------------------------------------------------------------------------


def _pixel_size(transform: Affine) -> float:
    return math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))


def _crs_units_per_metre(crs: CRS, transform: Affine, width: int, height: int) -> float:
    """Grid units per ground metre at the raster centre (UTM: ~0.9996; Web Mercator: 1 / cos(lat))."""
    try:
        frame = LocalFrame.from_crs(crs.to_wkt())
    except CoordinateError as error:
        raise MapError(f"cannot rasterize OSM features in {crs}: {error}") from None
    x, y = transform @ (width / 2, height / 2)
    lat, lon = frame.to_latlon(x, y)
    return float(frame.scale_factor(lat=lat, lon=lon))


def _way_lines(geometry: Any, tags: Mapping[str, Any], class_name: str) -> tuple[Any, bool]:
    """(geometry to buffer, filled): polygon outlines for ways, the polygon itself for highway areas."""
    if geometry.geom_type in _AREA_TYPES:
        filled = class_name in WIDTH_TAG_CLASSES and str(tags.get("area", "")).strip().lower() == "yes"
        return (geometry, True) if filled else (geometry.boundary, False)
    return geometry, False


def _band_shapes(
    features: gpd.GeoDataFrame, classes: np.ndarray, band: str, units_per_m: float, pixel: float
) -> list[tuple[Any, int]]:
    """(geometry, class index) pairs of one band in drawing order (lowest priority first)."""
    rank = {CLASS_NAMES[band].index(name) + 1: r for r, name in enumerate(reversed(CLASS_PRIORITY[band]))}
    rows = sorted(np.flatnonzero(classes), key=lambda row: rank[int(classes[row])])
    geometries = features.geometry.to_numpy()[rows]
    values = [int(classes[row]) for row in rows]
    if band == "nodes":
        radius = max(NODE_RADIUS_M * units_per_m, MIN_NODE_RADIUS_PX * pixel)
        geometries = shapely.buffer(geometries, radius)
    elif band == "ways":
        geometries = _way_shapes(features, rows, geometries, values, units_per_m, pixel)
    return list(zip(geometries, values, strict=True))


def _way_shapes(
    features: gpd.GeoDataFrame,
    rows: Sequence[int],
    geometries: np.ndarray,
    values: Sequence[int],
    units_per_m: float,
    pixel: float,
) -> np.ndarray:
    """Ways buffered to their width (flat caps), or highway areas as they are."""
    columns = {key: features[key].to_numpy() for key in _WIDTH_TAG_KEYS if key in features.columns}
    lines = np.empty(len(rows), dtype=object)
    half_widths = np.zeros(len(rows))
    filled = np.zeros(len(rows), dtype=bool)
    for i, (row, value) in enumerate(zip(rows, values, strict=True)):
        class_name = CLASS_NAMES["ways"][value - 1]
        tags = {key: column[row] for key, column in columns.items() if not _is_missing(column[row])}
        lines[i], filled[i] = _way_lines(geometries[i], tags, class_name)
        half_widths[i] = max(way_width_m(class_name, tags) * units_per_m, MIN_WIDTH_PX * pixel) / 2
    buffered = shapely.buffer(lines, half_widths, cap_style="flat", join_style="round")
    return np.where(filled, lines, buffered)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def rasterize_osm(
    features: gpd.GeoDataFrame,
    *,
    crs: Any,
    transform: Affine,
    width: int,
    height: int,
    source: str | None = None,
) -> GeoRaster:
    """Rasterize OSM features onto a grid: three uint8 bands of class indices (``areas``, ``ways``, ``nodes``).

    Features are reprojected to ``crs`` first (a GeoDataFrame without a CRS is taken as EPSG:4326). A pixel
    takes a class when its centre lies inside the class's shape (rasterio, ``all_touched=False``).

    Args:
        features: OSM features with tag columns (as from ``load_osm_features``).
        crs: the grid's projected CRS (anything rasterio's ``CRS.from_user_input`` accepts).
        transform: affine transform (col, row) -> CRS coordinates of the grid.
        width, height: grid size in pixels.
        source: the ``source`` tag; default ``features.attrs['source']`` or ``'OpenStreetMap'``.

    Returns:
        GeoRaster with a (3, height, width) uint8 array and tags ``CLASSES`` (JSON legend), ``source``,
        ``attribution`` and ``time`` (UTC, ISO 8601).

    Raises:
        MapError: a non-projected CRS or a bad grid size.
    """
    width, height = _check_grid(width, height)
    grid_crs = _grid_crs(crs)
    label = source or features.attrs.get("source") or "OpenStreetMap"
    units_per_m = _crs_units_per_metre(grid_crs, transform, width, height)
    if features.crs is None:
        features = features.set_crs("EPSG:4326")
    projected = features.to_crs(grid_crs)
    projected = _near_grid(projected, transform, width, height, BBOX_MARGIN_M * units_per_m)
    classes = classify_features(projected)
    array = np.zeros((len(BAND_NAMES), height, width), dtype=np.uint8)
    for band_index, band in enumerate(BAND_NAMES):
        shapes = _band_shapes(projected, classes[band].to_numpy(), band, units_per_m, _pixel_size(transform))
        if shapes:
            rasterio.features.rasterize(
                shapes,
                out=array[band_index],
                transform=transform,
                all_touched=False,
                merge_alg=MergeAlg.replace,
            )
    tags = {
        CLASSES_TAG: json.dumps({band: list(CLASS_NAMES[band]) for band in BAND_NAMES}),
        "source": label,
        "attribution": ATTRIBUTION,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return GeoRaster(array=array, crs=grid_crs, transform=transform, band_names=BAND_NAMES, tags=tags)


def _grid_crs(crs: Any) -> CRS:
    try:
        return CRS.from_user_input(crs)
    except Exception as error:
        raise MapError(f"unknown CRS {crs!r}: {error}") from None


def _check_grid(width: int, height: int) -> tuple[int, int]:
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise MapError(f"grid size {width} x {height} pixels must be positive integers")
    if width * height > MAX_PIXELS:
        raise MapError(f"grid of {width} x {height} pixels is too large (more than {MAX_PIXELS} pixels)")
    return int(width), int(height)


def _near_grid(features: gpd.GeoDataFrame, transform: Affine, width: int, height: int, margin: float) -> Any:
    """Only the features within ``margin`` CRS units of the grid (drawing the rest would change nothing)."""
    xs, ys = zip(*(transform @ corner for corner in ((0, 0), (width, 0), (0, height), (width, height))), strict=True)
    area = shapely.box(min(xs), min(ys), max(xs), max(ys)).buffer(margin, join_style="mitre")
    rows = features.sindex.query(area, predicate="intersects")
    return features.iloc[np.sort(rows)]


def read_classes(raster: GeoRaster) -> dict[str, list[str]]:
    """The legend of an OSM class raster: band name -> class names in index order (index 1 first).

    Raises:
        MapError: the raster has no ``CLASSES`` tag or it is not such a JSON object.
    """
    text = raster.tags.get(CLASSES_TAG)
    if text is None:
        raise MapError(f"raster has no {CLASSES_TAG} tag: not an OSM class raster")
    try:
        legend = json.loads(text)
    except json.JSONDecodeError as error:
        raise MapError(f"raster tag {CLASSES_TAG} is not valid JSON: {error}") from None
    valid = isinstance(legend, dict) and all(
        isinstance(names, list) and all(isinstance(name, str) for name in names) for names in legend.values()
    )
    if not valid:
        raise MapError(f"raster tag {CLASSES_TAG} must map band names to lists of class names, got {text[:200]!r}")
    return {str(band): list(names) for band, names in legend.items()}


# ---- one call: source -> raster ---------------------------------------------------------------------------------


def osm_grid(bounds: Sequence[float], gsd_m: float) -> tuple[Affine, int, int]:
    """North-up grid of square ``gsd_m`` pixels whose top-left corner is (left, top), covering ``bounds``.

    Args:
        bounds: (left, bottom, right, top) in the map CRS.
        gsd_m: pixel size in CRS units (metres in a metric frame).

    Returns:
        (transform, width, height).
    """
    left, bottom, right, top = (float(v) for v in bounds)
    if not (math.isfinite(gsd_m) and gsd_m > 0):
        raise ConfigError(f"gsd_m={gsd_m!r} must be a positive number of metres")
    if not all(math.isfinite(v) for v in (left, bottom, right, top)) or left >= right or bottom >= top:
        raise ConfigError(f"bounds (left, bottom, right, top) = {tuple(bounds)!r} must be finite with left < right")
    width = max(1, math.ceil((right - left) / gsd_m - 1e-9))
    height = max(1, math.ceil((top - bottom) / gsd_m - 1e-9))
    return Affine(gsd_m, 0.0, left, 0.0, -gsd_m, top), width, height


def _load_bbox(bounds: Sequence[float], crs: Any) -> BBox:
    """WGS84 box around ``bounds`` (in ``crs``), widened by ``BBOX_MARGIN_M``."""
    west, south, east, north = transform_bounds(CRS.from_user_input(crs), "EPSG:4326", *bounds, densify_pts=21)
    dlat = BBOX_MARGIN_M / 111_320.0
    dlon = dlat / max(math.cos(math.radians((south + north) / 2)), 1e-6)
    return BBox(max(west - dlon, -180.0), max(south - dlat, -90.0), min(east + dlon, 180.0), min(north + dlat, 90.0))


def osm_map(
    source: str | Path,
    *,
    bounds: Sequence[float],
    crs: Any,
    gsd_m: float,
    overpass_endpoint: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 180,
) -> GeoRaster:
    """Load OSM features around ``bounds`` and rasterize them on a north-up grid of ``gsd_m`` pixels.

    Args:
        source: ``'osm'`` or an OSM XML / vector file (see ``load_osm_features``).
        bounds: (left, bottom, right, top) of the map in ``crs``.
        crs: projected map CRS (e.g. the local UTM zone).
        gsd_m: pixel size, metres.
        overpass_endpoint, cache_dir, timeout_s: passed to ``load_osm_features``.

    Returns:
        The (3, H, W) uint8 class raster (see ``rasterize_osm``).
    """
    transform, width, height = osm_grid(bounds, gsd_m)
    _check_grid(width, height)
    _crs_units_per_metre(_grid_crs(crs), transform, width, height)  # a CRS we cannot draw in fails before loading
    bbox = _load_bbox(bounds, crs)
    features = load_osm_features(
        source, bbox=bbox, overpass_endpoint=overpass_endpoint, cache_dir=cache_dir, timeout_s=timeout_s
    )
    return rasterize_osm(features, crs=crs, transform=transform, width=width, height=height)
