"""Top-down rendering of a town onto a block of the global zoom-20 pixel grid: ground albedo and orthophoto.

The town's polygons (local metres) are mapped into grid pixels through :class:`TownProjection` and rasterised
there (``rasterio.features.rasterize``: a pixel belongs to a polygon when its centre does), so the aerial image
is drawn directly on the Web-Mercator zoom-20 grid and never resampled. Two images come out:

- ``ground``: what the ground itself looks like under the town's light (albedo x (ambient + sun x unshadowed)),
  with building/tree/car shadows. The ground renderer (:mod:`crossview.data.synth.render`) samples exactly this
  raster where a ray meets the ground, so a ground-level image and the orthophoto agree by construction.
- ``ortho``: ``ground`` with roofs, tree crowns, cars and fences painted on top (a true orthophoto).

Textures come from :func:`crossview.data.synth.noise.fbm_grid` (a function of the global pixel), lane markings,
sidewalk tiles and parking stalls from each pixel's coordinates along/across its street or lot.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import LineString, MultiPoint, Polygon

from crossview.data.synth.noise import fbm_grid, hash_uniform
from crossview.data.synth.projection import PixelGrid, TownProjection
from crossview.data.synth.scene import CAR_CABIN, Town, box_frame_coords

# ---- ground classes --------------------------------------------------------------------------------------------

FIELD, YARD, PARK, PLAZA, PARKING, WATER, FOOTWAY, SIDEWALK, ROAD, BUILDING_BASE = range(10)
CLASS_NAMES = ("field", "yard", "park", "plaza", "parking", "water", "footway", "sidewalk", "road", "building")
_AREA_CLASS = {"yard": YARD, "park": PARK, "plaza": PLAZA, "parking": PARKING, "water": WATER, "footway": FOOTWAY}
_AREA_ORDER = ("yard", "park", "plaza", "parking", "water", "footway")
_ROAD_ORDER = {"service": 0, "residential": 1, "secondary": 2, "primary": 3}
_ID_BITS = 20
_ID_MASK = (1 << _ID_BITS) - 1

PALETTE = np.array(
    [
        [0.36, 0.42, 0.22],  # field
        [0.33, 0.40, 0.20],  # yard
        [0.30, 0.43, 0.18],  # park
        [0.64, 0.60, 0.54],  # plaza
        [0.36, 0.36, 0.37],  # parking
        [0.12, 0.20, 0.24],  # water
        [0.62, 0.56, 0.46],  # footway
        [0.60, 0.59, 0.56],  # sidewalk
        [0.30, 0.30, 0.31],  # road
        [0.45, 0.45, 0.45],  # under buildings
    ],
    dtype=np.float32,
)
MARKING_RGB = np.array([0.92, 0.92, 0.90], dtype=np.float32)
_LUSH = np.array([0.26, 0.40, 0.15], dtype=np.float32)
_PALE = np.array([0.42, 0.48, 0.24], dtype=np.float32)
_DRY = np.array([0.52, 0.47, 0.32], dtype=np.float32)
# per class: texture weights of the coarse and fine noise, and which classes are asphalt or grass
_COARSE_WEIGHT = np.array([0, 0, 0, 0.12, 0.22, 0.15, 0.15, 0.12, 0.22, 0.12], dtype=np.float32)
_FINE_WEIGHT = np.array([0.6, 0.6, 0.6, 0.3, 0.45, 0.3, 0.5, 0.3, 0.45, 0.3], dtype=np.float32)
_PAVED = np.isin(np.arange(len(PALETTE)), [PARKING, ROAD])
_GRASSY = np.isin(np.arange(len(PALETTE)), [FIELD, YARD, PARK])
_TILE_TINT = hash_uniform(np.arange(64)[None, :], np.arange(64)[:, None], 7)  # per paving tile, repeating every 32 m
_CHUNK_ROWS = 256
_RASTERIZE_LOCK = threading.Lock()
_NOISE_COARSE = 11  # noise keys (combined with the town's key)
_NOISE_FINE = 12


@dataclass
class Lighting:
    """Sun and sky light of a town in the local frame (derived from its :class:`TownStyle`)."""

    sun_dir: np.ndarray  # (3,) unit vector towards the sun: (east, grid north, up)
    sun_rgb: np.ndarray  # (3,)
    ambient_rgb: np.ndarray  # (3,)
    gain_rgb: np.ndarray  # (3,) white balance x exposure applied to every colour

    @classmethod
    def from_town(cls, town: Town, convergence_deg: float) -> Lighting:
        style = town.style
        azimuth = math.radians(style.sun_azimuth_deg - convergence_deg)  # grid azimuth of the sun
        elevation = math.radians(style.sun_elevation_deg)
        direction = np.array(
            [math.sin(azimuth) * math.cos(elevation), math.cos(azimuth) * math.cos(elevation), math.sin(elevation)]
        )
        return cls(
            sun_dir=direction,
            sun_rgb=np.array(style.sun_rgb, dtype=np.float32),
            ambient_rgb=np.array(style.ambient_rgb, dtype=np.float32),
            gain_rgb=np.array(style.white_balance, dtype=np.float32) * np.float32(style.exposure),
        )

    def shade(self, cos_sun: np.ndarray, ambient_scale: float | np.ndarray = 1.0) -> np.ndarray:
        """(..., 3) light for surfaces whose normal makes ``cos_sun`` with the sun (<= 0: in shade)."""
        cos_sun = np.clip(np.asarray(cos_sun, dtype=np.float32), 0.0, None)[..., None]
        ambient = np.asarray(ambient_scale, dtype=np.float32)
        ambient = ambient[..., None] if ambient.ndim else ambient
        return (self.ambient_rgb * ambient + self.sun_rgb * cos_sun) * self.gain_rgb


@dataclass
class GroundRasters:
    """Rasters of one grid: colours (H, W, 3) uint8 and the ground classes (H, W) uint8."""

    grid: PixelGrid
    ground: np.ndarray
    ortho: np.ndarray | None
    classes: np.ndarray


def worker_count() -> int:
    """Threads for the data-parallel loops: the CPUs this process may use (at most 8)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


# ---- geometry helpers ------------------------------------------------------------------------------------------


class _GridMapper:
    """Local metres <-> continuous pixel coordinates of one grid."""

    def __init__(self, projection: TownProjection, grid: PixelGrid) -> None:
        self.projection, self.grid = projection, grid

    def geometry_to_grid(self, geometry):
        def convert(coords: np.ndarray) -> np.ndarray:
            col, row = self.projection.to_px(coords[:, 0], coords[:, 1])
            gc, gr = self.grid.to_grid(col, row)
            return np.stack([gc, gr], axis=1)

        return shapely.transform(geometry, convert)

    def local_bounds(self, margin_m: float = 2.0) -> tuple[float, float, float, float]:
        """Local-frame box (xmin, ymin, xmax, ymax) enclosing the grid, plus a margin."""
        g = self.grid
        cols = np.array([g.col0, g.col0 + g.width * g.step] * 2, dtype=np.float64)
        rows = np.array([g.row0] * 2 + [g.row0 + g.height * g.step] * 2, dtype=np.float64)
        x, y = self.projection.to_local(cols, rows)
        return x.min() - margin_m, y.min() - margin_m, x.max() + margin_m, y.max() + margin_m

    def local_of_pixels(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local metres of grid pixel centres (integer row/col arrays)."""
        g = self.grid
        col_px = g.col0 + (cols + 0.5) * g.step
        row_px = g.row0 + (rows + 0.5) * g.step
        return self.projection.to_local(col_px, row_px)


class _ShapeLayer:
    """Geometries in grid pixel coordinates with their burn values, rasterised one band of rows at a time.

    A pixel takes the value of the last geometry that covers its centre (``all_touched``: that touches it).
    """

    def __init__(self, geoms: np.ndarray, values: np.ndarray, width: int, dtype: str, all_touched: bool) -> None:
        self.geoms, self.values, self.width = geoms, values, width
        self.dtype, self.all_touched = dtype, all_touched
        bounds = shapely.bounds(geoms) if geoms.size else np.zeros((0, 4))
        self.row_min, self.row_max = bounds[:, 1], bounds[:, 3]

    def band(self, top: int, rows: int) -> np.ndarray:
        """(rows, width) raster of grid rows [top, top + rows) (rows outside the grid come out empty)."""
        hit = np.nonzero((self.row_max >= top) & (self.row_min <= top + rows))[0]
        if hit.size == 0:
            return np.zeros((rows, self.width), dtype=self.dtype)
        shapes = zip(self.geoms[hit], self.values[hit].tolist(), strict=True)
        transform = Affine(1.0, 0.0, 0.0, 0.0, 1.0, float(top))  # band pixel (col, row) -> grid coordinates
        # rasterio's in-memory datasets are not safe to create from several threads at once (spurious
        # NotGeoreferencedWarnings, at least): rasterise one band at a time, colour the bands in parallel.
        with _RASTERIZE_LOCK:
            return rasterize(
                shapes, out_shape=(rows, self.width), transform=transform, fill=0, dtype=self.dtype,
                all_touched=self.all_touched,
            )  # fmt: skip


def _coverage(distance: np.ndarray, half_width: float, pixel_m: float) -> np.ndarray:
    """Anti-aliased coverage of a stripe of half width ``half_width`` at ``distance`` from its centre line."""
    scale = np.float32(1.0 / pixel_m)
    return np.clip((np.float32(half_width + 0.5 * pixel_m) - np.abs(distance)) * scale, 0.0, 1.0)


def _periodic_distance(value: np.ndarray, period: float, phase: float = 0.0) -> np.ndarray:
    """Distance to the nearest of phase + k * period."""
    shifted = np.mod(value - np.float32(phase), np.float32(period))
    return np.minimum(shifted, np.float32(period) - shifted)


# ---- per-object arrays -----------------------------------------------------------------------------------------


@dataclass
class _RoadArrays:
    ax: np.ndarray
    ay: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    length: np.ndarray
    half_width: np.ndarray
    sidewalk: np.ndarray
    lanes: np.ndarray
    parking: np.ndarray
    start: np.ndarray  # markings run in [start, stop] along the segment
    stop: np.ndarray
    zebra_a: np.ndarray
    zebra_b: np.ndarray
    clear_a: np.ndarray
    clear_b: np.ndarray
    centre_line: np.ndarray
    primary: np.ndarray
    marked: np.ndarray

    def __post_init__(self) -> None:
        lanes_w = (2 * self.half_width - 2 * self.parking) / np.maximum(self.lanes, 1)
        self.edged = self.primary | (self.parking > 0)
        edge = np.where(self.parking > 0, self.half_width - self.parking, self.half_width - 0.4)
        for name, value in (
            ("dx32", self.dx), ("dy32", self.dy), ("half_width32", self.half_width), ("lane_w32", lanes_w),
            ("edge32", edge), ("clear_a32", self.clear_a), ("clear_b32", self.clear_b), ("length32", self.length),
        ):  # fmt: skip
            setattr(self, name, np.asarray(value, dtype=np.float32))

    @classmethod
    def from_town(cls, town: Town) -> _RoadArrays:
        roads = town.roads
        direction = np.array([r.direction for r in roads]).reshape(-1, 2)
        clear_a = np.array([r.clear_a_m for r in roads])
        clear_b = np.array([r.clear_b_m for r in roads])
        zebra_a = np.array([r.zebra_a for r in roads], dtype=bool)
        zebra_b = np.array([r.zebra_b for r in roads], dtype=bool)
        length = np.array([r.length_m for r in roads])
        return cls(
            ax=np.array([r.a[0] for r in roads]),
            ay=np.array([r.a[1] for r in roads]),
            dx=direction[:, 0],
            dy=direction[:, 1],
            length=length,
            half_width=np.array([r.cls.width_m / 2 for r in roads]),
            sidewalk=np.array([r.cls.sidewalk_m for r in roads]),
            lanes=np.array([r.cls.lanes for r in roads]),
            parking=np.array([r.cls.parking_lane_m for r in roads]),
            start=clear_a + np.where(zebra_a, 4.6, 0.0),
            stop=length - clear_b - np.where(zebra_b, 4.6, 0.0),
            zebra_a=zebra_a,
            zebra_b=zebra_b,
            clear_a=clear_a,
            clear_b=clear_b,
            centre_line=np.array([r.centre_line for r in roads], dtype=bool),
            primary=np.array([r.kind == "primary" for r in roads], dtype=bool),
            marked=np.array([r.kind != "service" for r in roads], dtype=bool),
        )


@dataclass
class _BoxArrays:
    cx: np.ndarray
    cy: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    half_a: np.ndarray
    half_b: np.ndarray

    @classmethod
    def from_boxes(cls, boxes) -> _BoxArrays:
        values = np.array([[b.cx, b.cy, b.ax, b.ay, b.half_a, b.half_b] for b in boxes]).reshape(-1, 6)
        return cls(*(values[:, k] for k in range(6)))

    def local_coords(self, index: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (along the first axis, along the second) of points relative to box ``index``."""
        return box_frame_coords(x, y, self.cx[index], self.cy[index], self.ax[index], self.ay[index])


# ---- shadows ---------------------------------------------------------------------------------------------------


def shadow_polygons(town: Town, lighting: Lighting) -> list[Polygon]:
    """Ground shadows of buildings, trees (crown and trunk) and cars, as local-frame polygons."""
    sun = lighting.sun_dir
    horizontal = math.hypot(sun[0], sun[1])
    tan_el = sun[2] / max(horizontal, 1e-6)
    away = -sun[:2] / max(horizontal, 1e-6)  # unit vector along which shadows fall
    polygons = []
    for building in town.buildings:
        for part in building.parts:
            corners = part.corners()
            shifted = corners + away * (building.height_m / tan_el)
            polygons.append(MultiPoint(np.concatenate([corners, shifted])).convex_hull)
    for car in town.cars:
        corners = car.box.corners()
        polygons.append(MultiPoint(np.concatenate([corners, corners + away * (car.height_m / tan_el)])).convex_hull)
    elevation = math.atan(tan_el)
    angles = np.linspace(0.0, 2 * math.pi, 20, endpoint=False)
    perp = np.array([-away[1], away[0]])
    for tree in town.trees:
        centre = np.array([tree.x, tree.y]) + away * (tree.crown_center_z_m / tan_el)
        along = math.hypot(tree.crown_radius_m * math.sin(elevation), tree.crown_half_height_m * math.cos(elevation))
        along /= math.sin(elevation)
        ring = centre + np.outer(np.cos(angles) * along, away) + np.outer(np.sin(angles) * tree.crown_radius_m, perp)
        polygons.append(Polygon(ring))
        trunk_end = np.array([tree.x, tree.y]) + away * (tree.crown_center_z_m / tan_el)
        polygons.append(LineString([(tree.x, tree.y), tuple(trunk_end)]).buffer(tree.trunk_radius_m, cap_style="flat"))
    return polygons


def _soften(mask: np.ndarray, step: int) -> np.ndarray:
    """Blur a 0/1 shadow mask into a penumbra of about 0.3 m (3 zoom-20 pixels)."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    if step == 1:
        tensor = F.avg_pool2d(F.pad(tensor, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return tensor[0, 0].numpy()


# ---- the renderer ----------------------------------------------------------------------------------------------


class AerialRenderer:
    """Rasterises one town onto grids of the global zoom-20 pixel grid.

    Args:
        town: the vector model.
        projection: the town's local frame <-> zoom-20 pixel mapping.
        noise_key: seed of the textures (an integer drawn from the town's generator).
    """

    def __init__(self, town: Town, projection: TownProjection, noise_key: int) -> None:
        self.town, self.projection, self.noise_key = town, projection, int(noise_key)
        self.lighting = Lighting.from_town(town, projection.convergence_deg(lat=projection.lat, lon=projection.lon))
        jitter = np.array(town.style.palette_jitter[: 3 * len(PALETTE)], dtype=np.float32).reshape(-1, 3)
        self.palette = PALETTE * jitter
        self.base_lut = _base_colour_table(self.palette)
        self.ambient_gain = (self.lighting.ambient_rgb * self.lighting.gain_rgb).astype(np.float32)
        self.sun_gain = (self.lighting.sun_rgb * self.lighting.gain_rgb).astype(np.float32)
        self.centre_line_rgb = np.array(town.style.centre_line_rgb, dtype=np.float32)
        self.roads = _RoadArrays.from_town(town)
        self.parts = [(index, part) for index, b in enumerate(town.buildings) for part in b.parts]
        self.part_boxes = _BoxArrays.from_boxes([p for _, p in self.parts])
        self.part_building = np.array([index for index, _ in self.parts], dtype=np.int64)
        buildings = town.buildings
        self.part_roof_rgb = np.array([buildings[i].roof_rgb for i in self.part_building], np.float32).reshape(-1, 3)
        self.part_gabled = np.array([buildings[i].roof_shape == "gabled" for i in self.part_building], dtype=bool)
        self.car_boxes = _BoxArrays.from_boxes([c.box for c in town.cars])
        self.car_rgb = np.array([car.rgb for car in town.cars], dtype=np.float32).reshape(-1, 3)
        trees = town.trees
        self.tree_arrays = (
            np.array([t.x for t in trees]),
            np.array([t.y for t in trees]),
            np.array([t.crown_radius_m for t in trees]),
            np.array([t.crown_half_height_m for t in trees]),
            np.array([t.rgb for t in trees], dtype=np.float32).reshape(-1, 3),
        )
        self.shadows = shadow_polygons(town, self.lighting)

    # ---- rasters ---------------------------------------------------------------------------------------
    def render(self, grid: PixelGrid, *, with_ortho: bool) -> GroundRasters:
        """Ground (and optionally orthophoto) colours of a grid, rendered in bands of rows (bounded memory)."""
        mapper = _GridMapper(self.projection, grid)
        codes = self._layer(mapper, self._ground_shapes(), "int32")
        shadows = self._layer(mapper, [(p, 1) for p in self.shadows], "uint8")
        overlays = self._overlay_layers(mapper) if with_ortho else None
        ground = np.empty((grid.height, grid.width, 3), dtype=np.uint8)
        ortho = np.empty_like(ground) if with_ortho else None
        classes = np.empty((grid.height, grid.width), dtype=np.uint8)

        def render_rows(top: int) -> None:
            count = min(_CHUNK_ROWS, grid.height - top)
            rows = slice(top, top + count)
            band = codes.band(top, count)
            classes[rows] = band >> _ID_BITS
            halo = 1 if grid.step == 1 else 0  # the shadow blur needs one row beyond the band on each side
            shadow = _soften(shadows.band(top - halo, count + 2 * halo), grid.step)[halo : halo + count]
            coarse = self._noise(grid, top, count, _NOISE_COARSE)
            fine = self._noise(grid, top, count, _NOISE_FINE)
            chunk = self._ground_chunk(mapper, band, shadow, top, coarse, fine)
            ground[rows] = _to_u8(chunk)
            if ortho is not None and overlays is not None:
                self._paint_overlays(mapper, chunk, [o.band(top, count) for o in overlays], coarse, fine, top)
                ortho[rows] = _to_u8(chunk)

        # Bands write disjoint rows, and numpy, GDAL and torch release the GIL in their loops: threads use every core.
        with ThreadPoolExecutor(max_workers=worker_count()) as pool:
            list(pool.map(render_rows, range(0, grid.height, _CHUNK_ROWS)))
        return GroundRasters(grid, ground, ortho, classes)

    def obstacle_mask(self, grid: PixelGrid) -> np.ndarray:
        """(H, W) bool: where a camera may not stand (close to walls, trunks, low crowns, cars, fences, water)."""
        shapes: list[tuple[object, int]] = [
            (b.footprint().buffer(1.0, join_style="mitre"), 1) for b in self.town.buildings
        ]
        for tree in self.town.trees:
            reach = tree.crown_radius_m + 0.3 if tree.crown_bottom_m < 3.4 else tree.trunk_radius_m + 0.6
            shapes.append((shapely.Point(tree.x, tree.y).buffer(reach, quad_segs=4), 1))
        shapes += [(car.box.polygon().buffer(0.6, join_style="mitre"), 1) for car in self.town.cars]
        shapes += [(LineString(f.points).buffer(0.5), 1) for f in self.town.fences]
        shapes += [(a.polygon.buffer(0.5), 1) for a in self.town.areas if a.kind == "water"]
        layer = self._layer(_GridMapper(self.projection, grid), shapes, "uint8")
        return layer.band(0, grid.height).astype(bool)

    def _layer(self, mapper: _GridMapper, shapes, dtype: str, all_touched: bool = False) -> _ShapeLayer:
        """(local-frame geometry, value) pairs that reach into a grid, in grid pixel coordinates."""
        geoms = np.array([geom for geom, _ in shapes], dtype=object)
        values = np.array([value for _, value in shapes], dtype=np.int64)
        if geoms.size:
            xmin, ymin, xmax, ymax = mapper.local_bounds()
            bounds = shapely.bounds(geoms)
            keep = (bounds[:, 0] <= xmax) & (bounds[:, 2] >= xmin) & (bounds[:, 1] <= ymax) & (bounds[:, 3] >= ymin)
            keep &= ~shapely.is_empty(geoms)
            geoms, values = geoms[keep], values[keep]
        converted = mapper.geometry_to_grid(geoms) if geoms.size else geoms
        return _ShapeLayer(converted, values, mapper.grid.width, dtype, all_touched)

    def _ground_shapes(self) -> list[tuple[object, int]]:
        """(polygon, ground class << 20 | object index + 1) for areas, sidewalks, roads, buildings: painter's order."""
        shapes: list[tuple[object, int]] = []
        for kind in _AREA_ORDER:
            for index, area in enumerate(self.town.areas):
                if area.kind == kind:
                    shapes.append((area.polygon, (_AREA_CLASS[kind] << _ID_BITS) | (index + 1)))
        order = sorted(range(len(self.town.roads)), key=lambda k: _ROAD_ORDER[self.town.roads[k].kind])
        for k in order:
            road = self.town.roads[k]
            if road.cls.sidewalk_m > 0:
                corridor = road.corridor(road.cls.width_m / 2 + road.cls.sidewalk_m)
                shapes.append((corridor, (SIDEWALK << _ID_BITS) | (k + 1)))
        for k in order:
            road = self.town.roads[k]
            shapes.append((road.corridor(road.cls.width_m / 2), (ROAD << _ID_BITS) | (k + 1)))
        for index, building in enumerate(self.town.buildings):
            shapes.append((building.footprint(), (BUILDING_BASE << _ID_BITS) | (index + 1)))
        return shapes

    # ---- ground colours --------------------------------------------------------------------------------
    def _noise(self, grid: PixelGrid, top: int, rows: int, which: int) -> np.ndarray:
        row0 = grid.row0 + top * grid.step
        if which == _NOISE_COARSE:
            return fbm_grid(
                grid.col0, row0, grid.width, rows, step=grid.step, key=self.noise_key * 31 + which,
                max_spacing_px=512, min_spacing_px=4, persistence=0.62,
            )  # fmt: skip
        return fbm_grid(
            grid.col0, row0, grid.width, rows, step=grid.step, key=self.noise_key * 31 + which,
            max_spacing_px=32, min_spacing_px=1, persistence=0.75,
        )  # fmt: skip

    def _ground_chunk(self, mapper, codes, shadow, top: int, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """Lit ground colours (3, rows, W) float32 of a chunk of rows starting at ``top``."""
        grid = mapper.grid
        cls = codes >> _ID_BITS
        ids = (codes & _ID_MASK) - 1
        # Base colour from a (class, coarse noise) table: constant per class, except grass whose hue follows
        # the coarse noise (lush, pale and dry patches); then a brightness gain from both noises.
        level = np.clip(coarse * 128.0 + 128.0, 0, 255).astype(np.int32)
        albedo = np.take(self.base_lut, cls * 256 + level, axis=1)  # (3, rows, W): channel-planar is faster
        gain = 1.0 + _COARSE_WEIGHT[cls] * coarse + _FINE_WEIGHT[cls] * fine
        gain *= np.where((coarse < -0.22) & _PAVED[cls], np.float32(0.82), np.float32(1.0))
        albedo *= gain
        pixel_m = self.projection.gsd_m * grid.step
        self._streets(mapper, albedo, cls, ids, fine, top, pixel_m)
        self._lots(mapper, albedo, cls, ids, top, pixel_m)
        sunlit = np.float32(self.lighting.sun_dir[2]) * (1.0 - shadow)
        albedo *= self.ambient_gain[:, None, None] + self.sun_gain[:, None, None] * sunlit
        return albedo

    def _streets(self, mapper, albedo, cls, ids, fine, top: int, pixel_m: float) -> None:
        """Sidewalk tiles and kerbs, gutters and lane markings, from each pixel's (along, across) street coordinates."""
        for surface in (SIDEWALK, ROAD):
            r, c = np.nonzero(cls == surface)
            if r.size == 0:
                continue
            x, y = mapper.local_of_pixels(r + top, c)
            k = ids[r, c]
            R = self.roads
            ox = (x - R.ax[k]).astype(np.float32)
            oy = (y - R.ay[k]).astype(np.float32)
            dx, dy = R.dx32[k], R.dy32[k]
            along = ox * dx + oy * dy
            across = oy * dx - ox * dy
            offset = np.abs(across) - R.half_width32[k]  # > 0 on the sidewalk, distance from the kerb
            colour = albedo[:, r, c].T  # (N, 3)
            if surface == SIDEWALK:
                self._sidewalk(colour, along, offset, pixel_m)
            else:
                colour[offset > -0.35] *= np.float32(0.88)  # gutter
                self._markings(colour, k, along, across, fine[r, c], pixel_m)
            albedo[:, r, c] = colour.T

    def _sidewalk(self, colour, along, offset, pixel_m: float) -> None:
        tile = np.float32(0.5)
        ti = np.floor(along / tile).astype(np.int64) & 63
        tj = np.floor(offset / tile).astype(np.int64) & 63
        tint = _TILE_TINT[ti, tj]
        joint = np.maximum(
            _coverage(_periodic_distance(along, 0.5), 0.02, pixel_m),
            _coverage(_periodic_distance(offset, 0.5), 0.02, pixel_m),
        )
        colour *= ((1.0 + 0.06 * tint) * (1.0 - 0.25 * joint))[:, None]
        kerb = offset < 0.25
        colour[kerb] = colour[kerb] * 0.4 + np.float32(0.72 * 0.6)

    def _markings(self, colour, k, along, across, fine, pixel_m: float) -> None:
        """Blend anti-aliased lane markings into road pixels (only pixels near a marking are evaluated)."""
        R = self.roads
        abs_across = np.abs(across)
        near = abs_across < 0.4
        near |= R.primary[k] & (np.abs(abs_across - R.lane_w32[k]) < 0.3)
        near |= R.edged[k] & (np.abs(abs_across - R.edge32[k]) < 0.3)
        near |= R.zebra_a[k] & (along > R.clear_a32[k] - 0.5) & (along < R.clear_a32[k] + 4.5)
        end_b = R.length32[k] - R.clear_b32[k]
        near |= R.zebra_b[k] & (along < end_b + 0.5) & (along > end_b - 4.5)
        near &= R.marked[k]
        idx = np.nonzero(near)[0]
        if idx.size == 0:
            return
        cover, rgb = self._marking_cover(k[idx], along[idx], across[idx], pixel_m)
        wear = np.clip(0.85 + 0.6 * fine[idx], 0.4, 1.0)
        cover = (cover * wear)[:, None]
        colour[idx] = colour[idx] * (1 - cover) + rgb * cover

    def _marking_cover(self, k, along, across, pixel_m) -> tuple[np.ndarray, np.ndarray]:
        """Coverage (N,) of lane markings and their colour (N, 3)."""
        R = self.roads
        run = (along > R.start[k]) & (along < R.stop[k])
        dash = np.clip((1.5 - _periodic_distance(along, 9.0, 1.5)) / pixel_m + 0.5, 0.0, 1.0)
        half = R.half_width[k]
        centre_solid = np.maximum(_coverage(across - 0.15, 0.06, pixel_m), _coverage(across + 0.15, 0.06, pixel_m))
        centre = np.where(R.primary[k], centre_solid, _coverage(across, 0.06, pixel_m) * dash)
        centre = centre * R.centre_line[k] * run
        divider = np.where(R.primary[k], _coverage(np.abs(across) - R.lane_w32[k], 0.06, pixel_m) * dash * run, 0.0)
        edge = _coverage(np.abs(across) - R.edge32[k], 0.06, pixel_m) * run * R.edged[k]
        zebra_stripes = _coverage(_periodic_distance(across, 1.0, 0.25), 0.25, pixel_m) * (np.abs(across) < half - 0.4)
        in_zebra_a = R.zebra_a[k] & (along > R.clear_a[k]) & (along < R.clear_a[k] + 3.0)
        in_zebra_b = R.zebra_b[k] & (along < R.length[k] - R.clear_b[k]) & (along > R.length[k] - R.clear_b[k] - 3.0)
        zebra = zebra_stripes * (in_zebra_a | in_zebra_b)
        stop_a = R.zebra_a[k] & (across < 0) & (np.abs(along - R.clear_a[k] - 3.8) < 0.2)
        stop_b = R.zebra_b[k] & (across > 0) & (np.abs(R.length[k] - along - R.clear_b[k] - 3.8) < 0.2)
        stop = (stop_a | stop_b) & (np.abs(across) < half - 0.4)
        white = np.maximum.reduce([divider, edge, zebra, stop.astype(np.float32)])
        cover = np.maximum(white, centre).astype(np.float32)
        use_centre = (centre > white)[:, None]
        rgb = np.where(use_centre, self.centre_line_rgb, MARKING_RGB).astype(np.float32)
        return cover, rgb

    def _lots(self, mapper, albedo, cls, ids, top: int, pixel_m: float) -> None:
        mask = cls == PARKING
        if not mask.any():
            return
        r, c = np.nonzero(mask)
        x, y = mapper.local_of_pixels(r + top, c)
        u, v = self.town.to_grid_frame(x, y)
        origin = np.array([a.stall_origin_uv for a in self.town.areas] or [(0.0, 0.0)])
        k = ids[r, c]
        u_rel, v_rel = u - origin[k, 0], np.mod(v - origin[k, 1], 16.0)
        in_rows = v_rel < 10.0
        stall_lines = _coverage(_periodic_distance(u_rel, 2.5), 0.06, pixel_m) * in_rows
        row_lines = np.maximum.reduce(
            [_coverage(v_rel - edge, 0.06, pixel_m) for edge in (0.0, 5.0, 10.0)]
            + [_coverage(v_rel - 16.0, 0.06, pixel_m)]
        )
        cover = np.maximum(stall_lines, row_lines).astype(np.float32)
        albedo[:, r, c] = albedo[:, r, c] * (1 - cover) + MARKING_RGB[:, None] * cover

    # ---- orthophoto ------------------------------------------------------------------------------------
    def _overlay_layers(self, mapper: _GridMapper) -> list[_ShapeLayer]:
        """Index layers of roofs (building parts), cars, tree crowns and fences, in painting order."""
        order = sorted(range(len(self.parts)), key=lambda p: self.town.buildings[self.part_building[p]].height_m)
        roofs = self._layer(mapper, [(self.parts[p][1].polygon(), p + 1) for p in order], "int32")
        cars = self._layer(mapper, [(car.box.polygon(), k + 1) for k, car in enumerate(self.town.cars)], "int32")
        tree_order = sorted(range(len(self.town.trees)), key=lambda t: self.town.trees[t].height_m)
        discs = [
            (shapely.Point(t.x, t.y).buffer(t.crown_radius_m, quad_segs=6), k + 1)
            for k in tree_order
            for t in [self.town.trees[k]]
        ]
        crowns = self._layer(mapper, discs, "int32")
        fence_shapes = [(LineString(f.points).buffer(0.05), 1) for f in self.town.fences]
        fences = self._layer(mapper, fence_shapes, "uint8", all_touched=True)
        return [roofs, cars, crowns, fences]

    def _paint_overlays(self, mapper, chunk, overlays, coarse, fine, top) -> None:
        roofs, cars, crowns, fences = overlays
        self._paint_roofs(mapper, chunk, roofs, coarse, fine, top)
        self._paint_cars(mapper, chunk, cars, top)
        fence_rgb = np.array([0.25, 0.25, 0.23], dtype=np.float32) * self.lighting.shade(self.lighting.sun_dir[2])
        chunk[:, fences > 0] = fence_rgb[:, None]
        self._paint_crowns(mapper, chunk, crowns, fine, top)

    def _paint_roofs(self, mapper, chunk, roofs, coarse, fine, top) -> None:
        """Roofs: flat ones with a light parapet and rooftop units, gabled ones shaded per slope (35 deg pitch)."""
        r, c = np.nonzero(roofs)
        if r.size == 0:
            return
        p = roofs[r, c] - 1
        x, y = mapper.local_of_pixels(r + top, c)
        a, b = self.part_boxes.local_coords(p, x, y)
        half_a, half_b = self.part_boxes.half_a[p], self.part_boxes.half_b[p]
        gabled = self.part_gabled[p]
        sun = self.lighting.sun_dir
        # Gabled roofs: the ridge runs along the longer side; the normal tilts across it.
        ridge_along_a = half_a >= half_b
        sign = np.sign(np.where(ridge_along_a, b, a))
        ax, ay = self.part_boxes.ax[p], self.part_boxes.ay[p]
        nx_h = np.where(ridge_along_a, -ay, ax) * sign
        ny_h = np.where(ridge_along_a, ax, ay) * sign
        pitch = math.radians(35.0)
        cos_gable = (nx_h * sun[0] + ny_h * sun[1]) * math.sin(pitch) + sun[2] * math.cos(pitch)
        cos_sun = np.where(gabled, cos_gable, sun[2]).astype(np.float32)
        edge = np.minimum(half_a - np.abs(a), half_b - np.abs(b))
        texture = 1.0 + 0.12 * coarse[r, c] + np.where(gabled, 0.25, 0.1) * fine[r, c]
        rgb = self.part_roof_rgb[p] * texture[:, None].astype(np.float32)
        rgb[~gabled & (edge < 0.35)] *= np.float32(1.15)  # parapet
        # Rooftop units on flat roofs: a 1.6 m box in some 4 m cells of the roof, away from its edge.
        cell_a = np.floor((a + half_a) / 4.0).astype(np.int64)
        cell_b = np.floor((b + half_b) / 4.0).astype(np.int64)
        chosen = _TILE_TINT[(cell_a + 31 * p) & 63, (cell_b + 7 * p) & 63] > 0.55
        in_cell = (np.abs(np.mod(a + half_a, 4.0) - 2.0) < 0.8) & (np.abs(np.mod(b + half_b, 4.0) - 2.0) < 0.8)
        unit = ~gabled & chosen & in_cell & (edge > 1.5)
        rgb[unit] = np.array([0.72, 0.72, 0.7], dtype=np.float32) * texture[unit, None].astype(np.float32)
        chunk[:, r, c] = (rgb * self.lighting.shade(cos_sun)).T

    def _paint_cars(self, mapper, chunk, cars, top) -> None:
        """Cars from above: paint, with the rear window and the windscreen at the ends of the cabin."""
        r, c = np.nonzero(cars)
        if r.size == 0:
            return
        k = cars[r, c] - 1
        x, y = mapper.local_of_pixels(r + top, c)
        a, _ = self.car_boxes.local_coords(k, x, y)
        rel = a / self.car_boxes.half_a[k]
        body = self.car_rgb[k]
        rear, front = CAR_CABIN
        glass = ((rel > rear) & (rel < rear + 0.18)) | ((rel > front - 0.22) & (rel < front))
        body[glass] = np.array([0.08, 0.09, 0.11], dtype=np.float32)
        chunk[:, r, c] = (body * self.lighting.shade(self.lighting.sun_dir[2])).T

    def _paint_crowns(self, mapper, chunk, crowns, fine, top) -> None:
        """Tree crowns from above: the ellipsoid's top lit by the sun, leafy texture, a ragged outline."""
        r, c = np.nonzero(crowns)
        if r.size == 0:
            return
        k = crowns[r, c] - 1
        x, y = mapper.local_of_pixels(r + top, c)
        tree_x, tree_y, radius, half_height, rgb = (a[k] for a in self.tree_arrays)
        dx, dy = (x - tree_x) / radius, (y - tree_y) / radius
        rho2 = dx * dx + dy * dy
        leaf = fine[r, c]
        keep = rho2 < (0.92 + 0.6 * leaf) ** 2 + 0.03
        rz_norm = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
        # Normal of the ellipsoid x^2/r^2 + y^2/r^2 + z^2/rz^2 = 1 on its upper half.
        nx, ny, nz = dx / radius, dy / radius, rz_norm / half_height
        norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-9
        sun = self.lighting.sun_dir
        cos_sun = ((nx * sun[0] + ny * sun[1] + nz * sun[2]) / norm).astype(np.float32)
        colour = rgb * (1.0 + 0.9 * leaf)[:, None].astype(np.float32)
        colour *= self.lighting.shade(cos_sun, 0.7 + 0.3 * rz_norm.astype(np.float32))
        chunk[:, r[keep], c[keep]] = colour[keep].T


def _base_colour_table(palette: np.ndarray) -> np.ndarray:
    """(3, classes * 256) base colours indexed by class * 256 + quantised coarse noise (noise = (q - 128) / 128).

    Grass classes mix lush and pale greens with the noise and turn dry above 0.18, tinted by their class colour
    relative to park grass; the other classes are constant.
    """
    noise = (np.arange(256, dtype=np.float32) - 128.0) / 128.0
    t = np.clip(0.5 + 2.0 * noise, 0.0, 1.0)[:, None]
    d = np.clip((noise - 0.18) * 6.0, 0.0, 1.0)[:, None]
    grass = _LUSH + (_PALE - _LUSH) * t
    grass = grass + (_DRY - grass) * d
    table = np.repeat(palette[:, None, :], 256, axis=1)
    for cls in np.nonzero(_GRASSY)[0]:
        table[cls] = grass * (palette[cls] / PALETTE[PARK])
    return np.ascontiguousarray(table.reshape(-1, 3).T, dtype=np.float32)  # (3, classes * 256)


def _to_u8(planar: np.ndarray) -> np.ndarray:
    """(3, H, W) float colours in [0, 1] -> (H, W, 3) uint8."""
    return np.clip(planar * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8).transpose(1, 2, 0)


def box_downsample(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H/2, W/2, 3) uint8, the rounded mean of 2x2 blocks (H and W even)."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    total = image[0 : 2 * h : 2, 0 : 2 * w : 2].astype(np.uint16)
    total += image[1 : 2 * h : 2, 0 : 2 * w : 2]
    total += image[0 : 2 * h : 2, 1 : 2 * w : 2]
    total += image[1 : 2 * h : 2, 1 : 2 * w : 2]
    total += 2
    total //= 4
    return total.astype(np.uint8)
