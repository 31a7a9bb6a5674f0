"""``generate_world``: a synthetic VIGOR-style dataset, deterministic in its seed.

For every town (see :mod:`crossview.data.synth.places`) it writes::

    <out>/<City>/map.tif                  orthophoto, EPSG:3857, zoom-20 pixels on the global grid
    <out>/<City>/osm.osm                  the town's vectors as OSM XML
    <out>/<City>/panorama/<id>,<lat>,<lon>,.jpg   north-aligned 360-degree panoramas (ray cast)
    <out>/<City>/pinhole/<id>_<k>.jpg     level pinhole views from the panoramas' positions (optional), with
                                          EXIF FocalLengthIn35mmFilm as a phone writes it (their field of view)
    <out>/<City>/poses.csv                image,lat,lon,heading_deg,camera,fov_deg,camera_height_m
    <out>/<City>/satellite/..., <out>/splits/<City>/...   VIGOR tiles and labels (crossview.data.vigor)
    <out>/<City>/osm/...                  the OSM class tile of every aerial tile (crossview.data.synth.osmtiles)
    <out>/synth.json                      the settings and a summary of every town

The whole world is first written into a temporary sibling folder and renamed into place at the end, so an
interrupted run never leaves a half-written world that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from shapely.geometry import Polygon

from crossview import __version__
from crossview.data.synth.aerial import ROAD, SIDEWALK, AerialRenderer, GroundRasters, box_downsample, worker_count
from crossview.data.synth.osmtiles import write_osm_tiles
from crossview.data.synth.osmxml import town_to_osm_xml, write_osm
from crossview.data.synth.places import Place, place_for_seed, select_places
from crossview.data.synth.projection import PixelGrid, TownProjection
from crossview.data.synth.render import GroundLevel, GroundRenderer, GroundScene, panorama_view, pinhole_view
from crossview.data.synth.scene import Town, generate_town
from crossview.data.vigor import NAME_DECIMALS, PanoramaRecord, format_pano_name, write_vigor_city
from crossview.errors import ConfigError
from crossview.geometry.webmercator import meters_per_pixel, pixel_to_latlon
from crossview.maps.raster import GeoRaster

EXIF_IFD, FOCAL_LENGTH_35MM_TAG = 0x8769, 0xA405
POSES_HEADER = ("image", "lat", "lon", "heading_deg", "camera", "fov_deg", "camera_height_m")
TILE_MARGIN_PX = 640  # every VIGOR tile holding a panorama lies within 640 px of it
TILE_ALIGN_PX = 320  # the ortho's edges sit on multiples of the tile stride
VIEW_MARGIN_M = 150.0  # the coarse outer ground extends this far beyond the ortho (what cameras see beyond it)
OUTER_STEP = 4  # the outer ground raster has 4x4 zoom-20 pixels per pixel
CAMERA_HEIGHT_M = (1.5, 3.0)
PINHOLE_HFOV_DEG = (60.0, 110.0)
JPEG_QUALITY = 90
SIZE_RANGE_M = (50.0, 1000.0)  # about 16 bytes of memory per zoom-20 pixel of the map: 1 km in Bergen is 3.5 GB
MAX_PANORAMAS = 1_000_000
MAX_PINHOLES = 32

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorldSettings:
    """Validated settings of a world (see :func:`generate_world`)."""

    seed: int
    places: tuple[Place, ...]
    size_m: float
    panoramas: int
    pinhole_per_pano: int
    pano_size: tuple[int, int]  # (H, W)
    pinhole_size: tuple[int, int]  # (H, W)


def _positive_int(value: Any, option: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{option} {value!r}: must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{option} {value}: must be at least {minimum}{upper}")
    return int(value)


def _image_size(value: Any, option: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r}: must be (height, width) in pixels") from None
    if not (8 <= height <= 8192 and 8 <= width <= 16384):
        raise ConfigError(f"{option} {width}x{height}: width must be in [8, 16384] and height in [8, 8192] pixels")
    return height, width


def check_settings(
    *,
    seed: int,
    cities: int | Sequence[str],
    size_m: float,
    panoramas: int,
    pinhole_per_pano: int,
    pano_size: tuple[int, int],
    pinhole_size: tuple[int, int],
) -> WorldSettings:
    """Validate the options of :func:`generate_world`.

    Raises:
        ConfigError: one line naming the command-line option (``--panoramas 0: must be at least 1``).
    """
    seed = _positive_int(seed, "--seed", minimum=0, maximum=2**63 - 1)
    try:
        size = float(size_m)
    except (TypeError, ValueError):
        raise ConfigError(f"--size-m {size_m!r}: must be a number of metres") from None
    if not (math.isfinite(size) and SIZE_RANGE_M[0] <= size <= SIZE_RANGE_M[1]):
        low, high = SIZE_RANGE_M
        raise ConfigError(f"--size-m {size_m!r}: must be between {low:g} and {high:g} metres")
    return WorldSettings(
        seed=seed,
        places=tuple(place_for_seed(place, seed) for place in select_places(cities)),
        size_m=size,
        panoramas=_positive_int(panoramas, "--panoramas", maximum=MAX_PANORAMAS),
        pinhole_per_pano=_positive_int(pinhole_per_pano, "--pinhole-per-pano", minimum=0, maximum=MAX_PINHOLES),
        pano_size=_image_size(pano_size, "--pano-size"),
        pinhole_size=_image_size(pinhole_size, "--pinhole-size"),
    )


# ---- grids -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CityLayout:
    """Where a town's rasters lie on the global zoom-20 grid, and how far its model extends."""

    ortho: PixelGrid
    outer: PixelGrid
    core: PixelGrid  # the pixels of the square where panoramas are placed
    extent_m: float  # the vector model covers [-extent_m, extent_m]^2 (local metres)


def plan_layout(place: Place, size_m: float) -> CityLayout:
    """The ortho covers the panorama square plus a 640-px tile margin, with edges on multiples of 320 px."""
    gsd_m = float(meters_per_pixel(lat=place.lat, zoom=20))
    probe = TownProjection(lat=place.lat, lon=place.lon, half_extent_m=size_m)
    half = size_m / 2
    edge = np.linspace(-half, half, 9)
    xs = np.concatenate([edge, edge, np.full(9, -half), np.full(9, half)])
    ys = np.concatenate([np.full(9, -half), np.full(9, half), edge, edge])
    cols, rows = probe.exact_to_px(xs, ys)
    col0 = math.floor((cols.min() - TILE_MARGIN_PX) / TILE_ALIGN_PX) * TILE_ALIGN_PX
    row0 = math.floor((rows.min() - TILE_MARGIN_PX) / TILE_ALIGN_PX) * TILE_ALIGN_PX
    col1 = math.ceil((cols.max() + TILE_MARGIN_PX) / TILE_ALIGN_PX) * TILE_ALIGN_PX
    row1 = math.ceil((rows.max() + TILE_MARGIN_PX) / TILE_ALIGN_PX) * TILE_ALIGN_PX
    ortho = PixelGrid(col0, row0, col1 - col0, row1 - row0)
    core_c0, core_r0 = math.floor(cols.min()) - 2, math.floor(rows.min()) - 2
    core = PixelGrid(core_c0, core_r0, math.ceil(cols.max()) + 2 - core_c0, math.ceil(rows.max()) + 2 - core_r0)
    margin_px = math.ceil(VIEW_MARGIN_M / gsd_m / OUTER_STEP) * OUTER_STEP
    outer = PixelGrid(
        col0 - margin_px,
        row0 - margin_px,
        (ortho.width + 2 * margin_px) // OUTER_STEP,
        (ortho.height + 2 * margin_px) // OUTER_STEP,
        OUTER_STEP,
    )
    corners_c = np.array([outer.col0, outer.col0 + outer.width * OUTER_STEP] * 2, dtype=np.float64)
    corners_r = np.array([outer.row0] * 2 + [outer.row0 + outer.height * OUTER_STEP] * 2, dtype=np.float64)
    x, y = probe.exact_to_local(corners_c, corners_r)
    extent = float(max(np.abs(x).max(), np.abs(y).max())) + 10.0
    return CityLayout(ortho, outer, core, extent)


# ---- panoramas ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    image: str
    lat: float
    lon: float
    heading_deg: float
    camera: str
    fov_deg: float
    camera_height_m: float

    def row(self) -> list[str]:
        return [
            self.image,
            f"{self.lat:.{NAME_DECIMALS}f}",
            f"{self.lon:.{NAME_DECIMALS}f}",
            f"{self.heading_deg:.2f}",
            self.camera,
            f"{self.fov_deg:.2f}",
            f"{self.camera_height_m:.2f}",
        ]


def place_cameras(
    rng: np.random.Generator,
    count: int,
    half_m: float,
    rasters: GroundRasters,
    obstacles: np.ndarray,
    obstacle_grid: PixelGrid,
    projection: TownProjection,
) -> np.ndarray:
    """``count`` camera positions (local metres) on streets or sidewalks, spread out with a minimum spacing.

    Args:
        rng: the poses' generator.
        count: how many.
        half_m: positions lie in [-half_m, half_m]^2 (local metres).
        rasters: the aerial rasters (their ground classes say where streets and sidewalks are).
        obstacles: (H, W) bool mask of ``obstacle_grid`` where a camera may not stand.
        obstacle_grid: the grid of ``obstacles``.
        projection: the town's local frame.

    Raises:
        ConfigError: the town has too little free street area for that many panoramas.
    """
    candidates = rng.uniform(-half_m, half_m, (max(4000, 40 * count), 2))
    col, row = projection.to_px(candidates[:, 0], candidates[:, 1])
    ok = np.ones(len(candidates), dtype=bool)
    walkable = (rasters.classes == ROAD) | (rasters.classes == SIDEWALK)
    for grid, allowed in ((rasters.grid, walkable), (obstacle_grid, ~obstacles)):
        gc, gr = grid.to_grid(col, row)
        ci, ri = np.floor(gc).astype(np.int64), np.floor(gr).astype(np.int64)
        ok &= (ci >= 0) & (ri >= 0) & (ci < grid.width) & (ri < grid.height)
        ok[ok] = allowed[ri[ok], ci[ok]]
    candidates = candidates[ok]
    free_area = (2 * half_m) ** 2 * max(ok.mean(), 1e-6)
    spacing = min(15.0, max(1.0, 0.7 * math.sqrt(free_area / count)))
    chosen: list[np.ndarray] = []
    while len(chosen) < count:
        chosen = _poisson_pick(candidates, chosen, spacing, count)
        if len(chosen) < count:
            spacing *= 0.75
            if spacing < 0.4:
                raise ConfigError(
                    f"cannot place {count} panoramas {0.4:g} m apart on the streets of a {2 * half_m:g} m town: "
                    "use a larger --size-m or fewer --panoramas"
                )
    return np.array(chosen)


def _poisson_pick(candidates: np.ndarray, chosen: list[np.ndarray], spacing: float, count: int) -> list[np.ndarray]:
    cells: dict[tuple[int, int], list[np.ndarray]] = {}
    for point in chosen:
        cells.setdefault((int(point[0] // spacing), int(point[1] // spacing)), []).append(point)
    picked = list(chosen)
    for point in candidates:
        if len(picked) >= count:
            break
        cx, cy = int(point[0] // spacing), int(point[1] // spacing)
        near = (q for dx in (-1, 0, 1) for dy in (-1, 0, 1) for q in cells.get((cx + dx, cy + dy), ()))
        if any((q[0] - point[0]) ** 2 + (q[1] - point[1]) ** 2 < spacing**2 for q in near):
            continue
        picked.append(point)
        cells.setdefault((cx, cy), []).append(point)
    return picked


def _jpeg_bytes(rgb: np.ndarray, hfov_deg: float | None = None) -> bytes:
    """JPEG of an (H, W, 3) image in [0, 1]; with ``hfov_deg``, EXIF FocalLengthIn35mmFilm (whole millimetres,
    18 mm / tan(hfov / 2) across the long side, as phones write it)."""
    buffer = io.BytesIO()
    image = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    extra = {}
    if hfov_deg is not None:
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[FOCAL_LENGTH_35MM_TAG] = round(18.0 / math.tan(math.radians(hfov_deg) / 2.0))
        extra["exif"] = exif
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, **extra)
    return buffer.getvalue()


# ---- one city ----------------------------------------------------------------------------------------------


def _city_seed(seed: int, place: Place) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, sum(ord(c) * 131**k for k, c in enumerate(place.name)) % 2**32])


@dataclass
class CityModel:
    """A town's deterministic model: layout on the zoom-20 grid, local frame, vectors and the seeds of the rest."""

    place: Place
    layout: CityLayout
    projection: TownProjection
    town: Town
    noise_key: int
    texture_seed: int
    pose_seed: np.random.SeedSequence


def city_model(place: Place, *, seed: int, size_m: float) -> CityModel:
    """Rebuild a town's model exactly as :func:`generate_world` does for (seed, size_m) (no rendering)."""
    town_seq, pose_seq, texture_seq = _city_seed(seed, place).spawn(3)
    town_rng = np.random.default_rng(town_seq)
    layout = plan_layout(place, size_m)
    projection = TownProjection(lat=place.lat, lon=place.lon, half_extent_m=layout.extent_m + 20.0)
    town = generate_town(town_rng, core_half_m=size_m / 2, extent_m=layout.extent_m, americas=place.lon < -30.0)
    return CityModel(
        place=place,
        layout=layout,
        projection=projection,
        town=town,
        noise_key=int(town_rng.integers(2**31)),
        texture_seed=int(np.random.default_rng(texture_seq).integers(2**31)),
        pose_seed=pose_seq,
    )


def build_city(root: Path, place: Place, settings: WorldSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Generate and write one town into ``root/<City>`` (and its VIGOR splits); returns its summary."""
    clock = _StageClock()
    model = city_model(place, seed=settings.seed, size_m=settings.size_m)
    clock.lap("model")
    layout, projection, town = model.layout, model.projection, model.town
    aerial = AerialRenderer(town, projection, noise_key=model.noise_key)
    _report(progress, f"{place.name}: aerial image {layout.ortho.width}x{layout.ortho.height} px")
    fine = aerial.render(layout.ortho, with_ortho=True)
    clock.lap("aerial")
    outer = aerial.render(layout.outer, with_ortho=False)
    obstacles = aerial.obstacle_mask(layout.core)  # before the map is written: GDAL work stays on one thread
    clock.lap("outer_ground")
    city_dir = root / place.name
    city_dir.mkdir(parents=True)
    ortho = GeoRaster(
        array=np.ascontiguousarray(fine.ortho.transpose(2, 0, 1)),
        crs="EPSG:3857",
        transform=layout.ortho.transform,
        band_names=("red", "green", "blue"),
        tags={"source": "crossview-synth", "seed": str(settings.seed), "city": place.name, "zoom": "20"},
    )
    fine.ortho = None  # the GeoRaster holds the only copy from here on
    # File writing (deflate, PNG) runs in the background while the CPU-bound rendering goes on.
    with ThreadPoolExecutor(max_workers=1) as background:
        map_written = background.submit(ortho.write, city_dir / "map.tif")
        levels = [GroundLevel(layout.ortho, fine.ground)]
        for factor in (2, 4):
            levels.append(GroundLevel(layout.ortho.coarsened(factor), box_downsample(levels[-1].image)))
        scene = GroundScene(
            town, projection, aerial.lighting, levels, GroundLevel(layout.outer, outer.ground), model.texture_seed
        )
        pose_rng = np.random.default_rng(model.pose_seed)
        positions = place_cameras(
            pose_rng, settings.panoramas, settings.size_m / 2, fine, obstacles, layout.core, projection
        )
        shots, records = plan_shots(place, projection, positions, pose_rng, settings)
        clock.lap("placement")
        tiles_written = background.submit(
            write_vigor_city, root, place.name, ortho, records, train_fraction=0.5, seed=settings.seed
        )
        _render_cameras(city_dir, scene, shots, settings, progress, place.name)
        _write_poses(city_dir / "poses.csv", [shot.pose for shot in shots])
        clock.lap("images")
        area, bounds = _ortho_footprint(projection, layout.ortho)
        write_osm(city_dir / "osm.osm", town_to_osm_xml(town, projection, area, bounds))
        map_written.result()
        vigor = tiles_written.result()
        clock.lap("osm_and_waiting_for_map_and_tiles")
    osm_tiles = write_osm_tiles(city_dir)  # from osm.osm, for every tile in satellite/
    clock.lap("osm_tiles")
    centre = _grid_centre_latlon(layout.ortho)
    return {
        "name": place.name,
        "lat": place.lat,
        "lon": place.lon,
        "utm_epsg": projection.frame.epsg,
        "convergence_deg": round(projection.convergence_deg(lat=place.lat, lon=place.lon), 6),
        "map_center": {"lat": round(centre[0], 8), "lon": round(centre[1], 8)},
        "map_size_px": [layout.ortho.height, layout.ortho.width],
        "panoramas": len(records),
        "pinholes": len(shots) - len(records),
        "tiles": vigor.get("num_tiles"),
        "osm_tiles": osm_tiles["written"],
        "buildings": len(town.buildings),
        "trees": len(town.trees),
        "cars": len(town.cars),
        "seconds": clock.total(),
        "stage_seconds": clock.laps,
    }


@dataclass(frozen=True)
class _Shot:
    """One image to render: where, which camera, and where it goes."""

    image: str
    cam_xy: tuple[float, float]
    cam_h: float
    lat: float
    lon: float
    heading_deg: float  # true north
    grid_heading_deg: float
    camera: str
    fov_deg: float

    @property
    def pose(self) -> Pose:
        return Pose(self.image, self.lat, self.lon, self.heading_deg, self.camera, self.fov_deg, self.cam_h)


def plan_shots(
    place: Place, projection: TownProjection, positions: np.ndarray, rng: np.random.Generator, settings: WorldSettings
) -> tuple[list[_Shot], list[PanoramaRecord]]:
    """Every image of a town (panoramas, then their pinholes), with all random draws made here, in order."""
    heights = np.round(rng.uniform(*CAMERA_HEIGHT_M, len(positions)), 2)
    lat, lon = projection.latlon_of(positions[:, 0], positions[:, 1])
    lat, lon = np.round(lat, NAME_DECIMALS), np.round(lon, NAME_DECIMALS)  # the names' precision...
    xs, ys = projection.local_of(lat=lat, lon=lon)  # ...and the images are rendered exactly where recorded
    convergence = np.asarray(projection.frame.convergence_deg(lat=lat, lon=lon))
    shots: list[_Shot] = []
    records: list[PanoramaRecord] = []
    for index in range(len(positions)):
        la, lo, cam_h = float(lat[index]), float(lon[index]), float(heights[index])
        cam_xy, conv = (float(xs[index]), float(ys[index])), float(convergence[index])
        pano_id = f"{place.name}_{index:05d}"
        name = format_pano_name(pano_id, la, lo)
        records.append(PanoramaRecord(pano_id, la, lo))
        shots.append(_Shot(f"panorama/{name}", cam_xy, cam_h, la, lo, 0.0, -conv, "panorama", 360.0))
        for k in range(settings.pinhole_per_pano):
            heading = round(float(rng.uniform(0.0, 360.0)), 2) % 360.0
            hfov = round(float(rng.uniform(*PINHOLE_HFOV_DEG)), 2)
            image = f"pinhole/{pano_id}_{k}.jpg"
            shots.append(_Shot(image, cam_xy, cam_h, la, lo, heading, heading - conv, "pinhole", hfov))
    return shots, records


class _StageClock:
    """Wall-clock seconds per stage (for the summary; never written to disk)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def _render_cameras(city_dir: Path, scene: GroundScene, shots: list[_Shot], settings, progress, name: str) -> None:
    renderer = GroundRenderer(scene)
    (city_dir / "panorama").mkdir(exist_ok=True)  # the VIGOR writer may have made it already
    if settings.pinhole_per_pano:
        (city_dir / "pinhole").mkdir()
    pano_h, pano_w = settings.pano_size
    pin_h, pin_w = settings.pinhole_size

    def render(shot: _Shot) -> None:
        if shot.camera == "panorama":
            view = panorama_view(pano_w, pano_h, shot.grid_heading_deg)
        else:
            view = pinhole_view(pin_w, pin_h, shot.fov_deg, shot.grid_heading_deg)
        rgb, _ = renderer.render(view, shot.cam_xy[0], shot.cam_xy[1], shot.cam_h)
        (city_dir / shot.image).write_bytes(_jpeg_bytes(rgb, None if shot.camera == "panorama" else shot.fov_deg))

    # Each image is a pure function of its shot and goes to its own file; numpy and Pillow release the GIL.
    with ThreadPoolExecutor(max_workers=worker_count()) as pool:
        for done, _ in enumerate(pool.map(render, shots), start=1):
            if done % 20 == 0 or done == len(shots):
                _report(progress, f"{name}: images {done}/{len(shots)}")


def _write_poses(path: Path, poses: list[Pose]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(POSES_HEADER)
        writer.writerows(pose.row() for pose in poses)


def _ortho_footprint(projection: TownProjection, grid: PixelGrid) -> tuple[Polygon, tuple[float, float, float, float]]:
    """The ortho's footprint as a local-frame polygon, and its WGS84 bounds (minlat, minlon, maxlat, maxlon)."""
    cols = np.array([grid.col0, grid.col0 + grid.width, grid.col0 + grid.width, grid.col0], dtype=np.float64)
    rows = np.array([grid.row0, grid.row0, grid.row0 + grid.height, grid.row0 + grid.height], dtype=np.float64)
    x, y = projection.exact_to_local(cols, rows)
    lat, lon = pixel_to_latlon(cols, rows, zoom=20)
    return Polygon(np.stack([x, y], axis=1)), (float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max()))


def _grid_centre_latlon(grid: PixelGrid) -> tuple[float, float]:
    lat, lon = pixel_to_latlon(grid.col0 + grid.width / 2, grid.row0 + grid.height / 2, zoom=20)
    return float(lat), float(lon)


def _report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# ---- the world ---------------------------------------------------------------------------------------------


def generate_world(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    cities: int | Sequence[str] = 1,
    size_m: float = 300.0,
    panoramas: int = 100,
    pinhole_per_pano: int = 0,
    pano_size: tuple[int, int] = (512, 1024),
    pinhole_size: tuple[int, int] = (480, 640),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate a synthetic VIGOR-style world into ``out_dir`` (byte-identical for the same arguments).

    Args:
        out_dir: the world's folder; must not exist or be empty unless ``overwrite``.
        seed: the random seed (non-negative integer).
        cities: how many towns (the first ones of :data:`~crossview.data.synth.places.PLACES`), or their names.
        size_m: side of each town's square where panoramas are placed, metres (the map extends beyond it).
        panoramas: panoramas per town.
        pinhole_per_pano: pinhole views per panorama (random heading, hfov 60-110 degrees).
        pano_size: (height, width) of the panoramas, pixels.
        pinhole_size: (height, width) of the pinhole views, pixels.
        overwrite: replace an existing non-empty ``out_dir``.
        progress: called with short progress messages.

    Returns:
        A summary: ``out``, ``settings`` and one dict per town (``name``, ``lat``, ``lon``, ``utm_epsg``,
        ``convergence_deg``, ``map_center``, ``map_size_px``, ``panoramas``, ``pinholes``, ``tiles``, counts of
        buildings, trees and cars, and ``seconds``); the same without timings is written to ``synth.json``.

    Raises:
        ConfigError: invalid settings, or ``out_dir`` exists and is not empty (without ``overwrite``).
    """
    settings = check_settings(
        seed=seed,
        cities=cities,
        size_m=size_m,
        panoramas=panoramas,
        pinhole_per_pano=pinhole_per_pano,
        pano_size=pano_size,
        pinhole_size=pinhole_size,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: folder exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.synth-{secrets.token_hex(4)}"
    temp.mkdir()  # default permissions (mkdtemp would make the world private)
    try:
        towns = [build_city(temp, place, settings, progress) for place in settings.places]
        summary = _summary(out, settings, towns)
        timing_keys = ("seconds", "stage_seconds")
        record = {**summary, "towns": [{k: v for k, v in t.items() if k not in timing_keys} for t in towns]}
        record.pop("out")
        (temp / "synth.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _move_into_place(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return summary


def _summary(out: Path, settings: WorldSettings, towns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "out": str(out),
        "generator": f"crossview {__version__} synth",
        "settings": {
            "seed": settings.seed,
            "cities": [p.name for p in settings.places],
            "size_m": settings.size_m,
            "panoramas": settings.panoramas,
            "pinhole_per_pano": settings.pinhole_per_pano,
            "pano_size": list(settings.pano_size),
            "pinhole_size": list(settings.pinhole_size),
        },
        "towns": towns,
    }


def _move_into_place(temp: Path, out: Path) -> None:
    """Rename the finished temp folder to ``out`` (replacing an old ``out`` only once the new one is complete)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(temp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, out)
