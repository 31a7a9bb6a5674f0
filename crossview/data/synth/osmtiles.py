"""OSM class tiles beside the aerial tiles of a VIGOR-layout world: ``<City>/osm/<tile name>``.

For every aerial tile ``<City>/satellite/satellite_<lat>_<lon>.png`` (640x640 zoom-20 Web-Mercator pixels centred
on the lat/lon of its name), the tile of the same name in ``<City>/osm/`` is the OpenStreetMap class raster of
exactly those pixels, rasterized by crossview's own OSM source (:mod:`crossview.maps.osm`) from the town's
``osm.osm`` in EPSG:3857: three uint8 bands of class indices (``areas``, ``ways``, ``nodes``), stored as a
lossless PNG with the legend in its ``CLASSES`` text chunk (:func:`crossview.data.vigor.class_tile_png_bytes`).

Tiles whose centres lie on the global zoom-20 pixel grid (all of ``crossview synth``'s; a name's 8 decimals are
within 0.05 px of it) are snapped to it and cut from one rasterization per block of up to
``BLOCK_PX`` x ``BLOCK_PX`` pixels, which is what a map fetched with ``crossview fetch --source FILE.osm`` and
cropped would hold; a tile off the grid is rasterized on its own exact grid.

``crossview synth`` writes the tiles of every new town; for an existing world::

    python -m crossview.data.synth.osmtiles WORLD [--city NAME ...] [--overwrite] [--workers N]
    crossview synth --out WORLD --osm-tiles-only                     # the same through the synth command

Existing tiles are kept (an interrupted run resumes where it stopped) unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError, CrossviewError

OSM_FILE = "osm.osm"
BLOCK_PX = 4096  # tiles whose top-left corners share a 4096-px block are cut from one raster (<= 4736 px wide)
SNAP_PX = 0.1  # tile centres this close to an integer global zoom-20 pixel are snapped to it

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TileWindow:
    """Where a VIGOR tile lies in the global zoom-20 pixel grid (256-px XYZ tiles)."""

    name: str
    col0: float  # global pixel column of the tile's left edge
    row0: float  # global pixel row of the tile's top edge


def tile_window(name: str) -> TileWindow:
    """The global zoom-20 pixel window of a VIGOR tile (its name's centre, snapped to the grid within SNAP_PX).

    Raises:
        DatasetError: not a ``satellite_<lat>_<lon>.png`` name.
    """
    from crossview.data.vigor import HALF_TILE_PX, WEB_TILE_SIZE_PX, ZOOM, parse_satellite_name
    from crossview.geometry.webmercator import latlon_to_pixel

    centre = parse_satellite_name(name)
    col, row = latlon_to_pixel(lat=centre.lat, lon=centre.lon, zoom=ZOOM, tile_size=WEB_TILE_SIZE_PX)
    col, row = (float(round(v)) if abs(v - round(v)) < SNAP_PX else float(v) for v in (col, row))
    return TileWindow(name, col - HALF_TILE_PX, row - HALF_TILE_PX)


def window_transform(col0: float, row0: float) -> Any:
    """The EPSG:3857 affine transform of a grid whose top-left corner is global zoom-20 pixel (col0, row0)."""
    from affine import Affine

    from crossview.data.vigor import PIXEL_SIZE_M
    from crossview.geometry.webmercator import EARTH_EQUATOR_M

    left = col0 * PIXEL_SIZE_M - EARTH_EQUATOR_M / 2
    top = EARTH_EQUATOR_M / 2 - row0 * PIXEL_SIZE_M
    return Affine(PIXEL_SIZE_M, 0.0, left, 0.0, -PIXEL_SIZE_M, top)


def _blocks(windows: Sequence[TileWindow]) -> list[list[TileWindow]]:
    """Tiles grouped so that each group is cut from one raster (same sub-pixel offset, same block)."""
    groups: dict[tuple, list[TileWindow]] = defaultdict(list)
    for window in windows:
        key = (
            math.floor(window.col0 / BLOCK_PX),
            math.floor(window.row0 / BLOCK_PX),
            round(window.col0 % 1.0, 6),
            round(window.row0 % 1.0, 6),
        )
        groups[key].append(window)
    return [groups[key] for key in sorted(groups)]


def rasterize_tiles(features: Any, names: Sequence[str]) -> Iterator[tuple[str, np.ndarray, str]]:
    """Rasterize the OSM class tile of every VIGOR tile name.

    Args:
        features: OSM features (``crossview.maps.osm.load_osm_features``).
        names: tile names ``satellite_<lat>_<lon>.png``.

    Yields:
        (name, (G, 640, 640) uint8 class indices, legend JSON), block by block.
    """
    from crossview.data.vigor import TILE_SIZE_PX
    from crossview.maps.osm import CLASSES_TAG, rasterize_osm

    projected = features.to_crs("EPSG:3857")  # once, not once per block
    for block in _blocks([tile_window(name) for name in names]):
        col0, row0 = min(w.col0 for w in block), min(w.row0 for w in block)
        width = round(max(w.col0 for w in block) - col0) + TILE_SIZE_PX
        height = round(max(w.row0 for w in block) - row0) + TILE_SIZE_PX
        raster = rasterize_osm(
            projected, crs="EPSG:3857", transform=window_transform(col0, row0), width=width, height=height
        )
        for window in block:
            c, r = round(window.col0 - col0), round(window.row0 - row0)
            tile = raster.array[:, r : r + TILE_SIZE_PX, c : c + TILE_SIZE_PX]
            yield window.name, np.ascontiguousarray(tile), raster.tags[CLASSES_TAG]


def _tile_names(city_dir: Path) -> list[str]:
    satellite = city_dir / "satellite"
    if not satellite.is_dir():
        raise ConfigError(f"{satellite}: folder not found (a VIGOR-layout town has its aerial tiles there)")
    return sorted(p.name for p in satellite.iterdir() if p.name.startswith("satellite_") and p.suffix == ".png")


def write_osm_tiles(
    city_dir: str | Path,
    *,
    source: str | Path | None = None,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``<city_dir>/osm/<name>`` for every aerial tile of a town (see the module docstring).

    Args:
        city_dir: the town's folder (``<world>/<City>``).
        source: OSM data to rasterize (an OSM XML or vector file); default ``<city_dir>/osm.osm``.
        names: tile names; default every ``satellite_*.png`` in ``<city_dir>/satellite/``.
        overwrite: rewrite tiles that exist (default: keep them, write only the missing ones).

    Returns:
        ``{"city", "osm_dir", "written", "kept"}``.

    Raises:
        ConfigError: no ``satellite/`` folder or no OSM file.
        MapReadError, MapError: an unreadable OSM file, or one without features.
    """
    from crossview.data.vigor import CLASS_TILE_DIR, class_tile_png_bytes
    from crossview.fsio import atomic_write_bytes
    from crossview.maps.osm import load_osm_features

    city_dir = Path(city_dir)
    names = sorted(names) if names is not None else _tile_names(city_dir)
    osm_dir = city_dir / CLASS_TILE_DIR
    todo = [n for n in names if overwrite or not (osm_dir / n).is_file()]
    summary = {"city": city_dir.name, "osm_dir": osm_dir, "written": len(todo), "kept": len(names) - len(todo)}
    if not todo:
        return summary
    osm_path = Path(source) if source is not None else city_dir / OSM_FILE
    if not osm_path.is_file():
        raise ConfigError(f"{osm_path}: OSM file not found (the town's vectors are needed to draw its OSM tiles)")
    features = load_osm_features(osm_path)
    osm_dir.mkdir(exist_ok=True)
    for name, classes, legend in rasterize_tiles(features, todo):
        atomic_write_bytes(osm_dir / name, class_tile_png_bytes(classes, legend))
    return summary


def world_cities(world: str | Path, cities: Sequence[str] | None = None) -> list[Path]:
    """The town folders of a world that have aerial tiles and an ``osm.osm`` (or the named ones).

    Raises:
        ConfigError: the world is not a folder, or a named town is not in it.
    """
    world = Path(world)
    if not world.is_dir():
        raise ConfigError(f"{world}: folder not found")
    if cities:
        missing = [c for c in cities if not (world / c / "satellite").is_dir()]
        if missing:
            raise ConfigError(f"{world}: no town {', '.join(missing)} (a folder with satellite/ tiles)")
        return [world / c for c in cities]
    found = sorted(p for p in world.iterdir() if (p / "satellite").is_dir() and (p / OSM_FILE).is_file())
    if not found:
        raise ConfigError(f"{world}: no town folder with satellite/ tiles and an {OSM_FILE}")
    return found


def add_osm_tiles(
    world: str | Path,
    *,
    cities: Sequence[str] | None = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Add ``osm/`` tiles to every town of an existing world (:func:`write_osm_tiles` per town).

    Args:
        world: the world's folder (``crossview synth --out``, or merged worlds).
        cities: town folder names; default every town with ``satellite/`` and ``osm.osm``.
        overwrite: rewrite existing tiles.
        workers: towns processed in parallel (processes).
        progress: called with one line per finished town.

    Returns:
        One :func:`write_osm_tiles` summary per town, in town order.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers {workers!r}: must be a positive integer")
    towns = world_cities(world, cities)
    summaries: list[dict[str, Any]] = []
    if workers == 1:
        results: Iterator[dict[str, Any]] = (write_osm_tiles(town, overwrite=overwrite) for town in towns)
        for summary in results:
            _report(progress, summary, len(summaries) + 1, len(towns))
            summaries.append(summary)
        return summaries
    with ProcessPoolExecutor(max_workers=min(workers, len(towns))) as pool:
        futures = [pool.submit(write_osm_tiles, town, overwrite=overwrite) for town in towns]
        for future in futures:
            summary = future.result()
            _report(progress, summary, len(summaries) + 1, len(towns))
            summaries.append(summary)
    return summaries


def _report(progress: Progress | None, summary: dict[str, Any], done: int, total: int) -> None:
    if progress is not None:
        progress(f"[{done}/{total}] {summary['city']}: {summary['written']} OSM tiles written, {summary['kept']} kept")


# ---- command line ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crossview.data.synth.osmtiles",
        description=(
            "Add OSM class tiles <City>/osm/<tile name> (the OSM raster of each aerial tile, drawn from the town's "
            "osm.osm) to an existing VIGOR-layout world.\n\nexamples:\n"
            "  python -m crossview.data.synth.osmtiles world/\n"
            "  python -m crossview.data.synth.osmtiles world/ --city Bergen --overwrite\n"
            "  python -m crossview.data.synth.osmtiles /data/train --workers 2\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("world", metavar="WORLD", help="the world's folder (<City>/satellite/ and <City>/osm.osm)")
    parser.add_argument("--city", action="append", metavar="NAME", help="only this town (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing tiles (default: keep them)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="towns in parallel (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crossview.data.synth.osmtiles WORLD ...``; exit 0, or 2 with a one-line error on bad input."""
    args = _parser().parse_args(argv)
    try:
        summaries = add_osm_tiles(
            args.world, cities=args.city, overwrite=args.overwrite, workers=args.workers, progress=print
        )
    except CrossviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1 if isinstance(error, OSError) else 2
    written = sum(s["written"] for s in summaries)
    print(f"{written} OSM tiles written in {len(summaries)} town(s) of {args.world}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
