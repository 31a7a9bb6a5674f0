"""The vector model of a synthetic town: streets, blocks, buildings, trees, cars, parks, parking lots and water.

Everything is laid out in the town's local frame (see :mod:`crossview.data.synth.projection`): x = east, y = grid
north, metres, the town centre at (0, 0). The street grid is rotated by a random angle and its nodes jittered, so
blocks are irregular quadrilaterals; buildings are unions of oriented boxes (their walls are what the ground
renderer ray-casts), tree crowns are ellipsoids on trunks, cars are low boxes. ``generate_town`` is a pure
function of its random generator.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Polygon, box
from shapely.ops import unary_union

# ---- road classes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoadClass:
    """Cross-section of a street class: carriageway (kerb to kerb) and one sidewalk, metres."""

    highway: str
    width_m: float
    lanes: int
    sidewalk_m: float
    parking_lane_m: float = 0.0


ROAD_CLASSES: dict[str, RoadClass] = {
    "primary": RoadClass("primary", 13.0, 4, 4.0),
    "secondary": RoadClass("secondary", 11.0, 2, 3.2, parking_lane_m=2.2),
    "residential": RoadClass("residential", 7.0, 2, 2.6),
    "service": RoadClass("service", 4.0, 1, 0.0),
}
FOOTWAY_WIDTH_M = 2.4

STREET_NAMES = (
    "Linden", "Oak", "Maple", "Cedar", "Birch", "Elm", "Willow", "Aspen", "Chestnut", "Poplar", "Alder", "Rowan",
    "Hazel", "Juniper", "Laurel", "Magnolia", "Olive", "Spruce", "Sycamore", "Walnut", "Acacia", "Beech", "Cypress",
    "Fir", "Hawthorn", "Holly", "Larch", "Myrtle", "Pine", "Quince", "Tamarind", "Yew",
)  # fmt: skip


# ---- geometric primitives --------------------------------------------------------------------------------------


def box_frame_coords(
    x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, ax: np.ndarray, ay: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of points (x, y) in the frame of oriented boxes: along the first axis ``(ax, ay)`` and along the
    second ``(-ay, ax)``, from the centre ``(cx, cy)`` (metres; arrays broadcast)."""
    ox, oy = x - cx, y - cy
    return ox * ax + oy * ay, -ox * ay + oy * ax


@dataclass(frozen=True)
class Box:
    """An oriented rectangle: centre, unit axis ``(ax, ay)`` of its first side, half sizes along it and across.

    The second axis is ``(-ay, ax)`` (90 degrees counter-clockwise from the first).
    """

    cx: float
    cy: float
    ax: float
    ay: float
    half_a: float
    half_b: float

    def corners(self) -> np.ndarray:
        """(4, 2) corners, counter-clockwise."""
        a = np.array([self.ax, self.ay]) * self.half_a
        b = np.array([-self.ay, self.ax]) * self.half_b
        c = np.array([self.cx, self.cy])
        return np.stack([c - a - b, c + a - b, c + a + b, c - a + b])

    def polygon(self) -> Polygon:
        return Polygon(self.corners())

    @property
    def radius(self) -> float:
        """Radius of the bounding circle, metres."""
        return math.hypot(self.half_a, self.half_b)


@dataclass(frozen=True)
class Road:
    """A street segment between two nodes (centre line), with its class and marking hints."""

    a: tuple[float, float]
    b: tuple[float, float]
    kind: str
    line_id: int
    name: str
    clear_a_m: float = 0.0  # no lane markings within this distance of end a (the crossing street's edge)
    clear_b_m: float = 0.0
    zebra_a: bool = False
    zebra_b: bool = False
    centre_line: bool = True

    @property
    def cls(self) -> RoadClass:
        return ROAD_CLASSES[self.kind]

    @property
    def length_m(self) -> float:
        return math.hypot(self.b[0] - self.a[0], self.b[1] - self.a[1])

    @property
    def direction(self) -> tuple[float, float]:
        length = max(self.length_m, 1e-9)
        return (self.b[0] - self.a[0]) / length, (self.b[1] - self.a[1]) / length

    def corridor(self, half_width_m: float) -> Polygon:
        return LineString([self.a, self.b]).buffer(half_width_m, cap_style="square", join_style="mitre")


@dataclass(frozen=True)
class Building:
    """A building: one or more boxes extruded to ``height_m``, with its look."""

    parts: tuple[Box, ...]
    height_m: float
    levels: int
    kind: str  # OSM building=*: residential, apartments, commercial, office, house
    wall_rgb: tuple[float, float, float]
    roof_rgb: tuple[float, float, float]
    roof_shape: str  # flat | gabled
    window_rgb: tuple[float, float, float]
    window_width_m: float
    window_spacing_m: float
    window_height_frac: float
    shop_front: bool

    @property
    def floor_height_m(self) -> float:
        return self.height_m / self.levels

    def footprint(self) -> Polygon:
        """Union of the parts, without the near-duplicate vertices where a wing meets the main body."""
        grown = unary_union([part.polygon().buffer(0.005, join_style="mitre") for part in self.parts])
        return shapely.simplify(grown.buffer(-0.005, join_style="mitre"), 0.01)


@dataclass(frozen=True)
class Tree:
    """A tree: trunk (vertical cylinder) under an ellipsoidal crown."""

    x: float
    y: float
    trunk_radius_m: float
    crown_radius_m: float  # horizontal semi-axis
    crown_half_height_m: float  # vertical semi-axis
    crown_center_z_m: float
    rgb: tuple[float, float, float]

    @property
    def height_m(self) -> float:
        return self.crown_center_z_m + self.crown_half_height_m

    @property
    def crown_bottom_m(self) -> float:
        return self.crown_center_z_m - self.crown_half_height_m


CAR_CABIN = (-0.5, 0.35)  # the cabin's extent along the car, as fractions of its half length (front is +)
CAR_BODY_FRACTION = 0.62  # bonnet and boot height relative to the roof


@dataclass(frozen=True)
class Car:
    """A parked car: footprint (first axis along the car, towards its front), roof height and paint colour."""

    box: Box
    height_m: float
    rgb: tuple[float, float, float]

    def parts(self) -> list[tuple[Box, float]]:
        """Boot, cabin and bonnet as three boxes side by side along the car, with their heights."""
        b = self.box
        cuts = (-1.0, *CAR_CABIN, 1.0)
        heights = (CAR_BODY_FRACTION * self.height_m, self.height_m, CAR_BODY_FRACTION * self.height_m)
        parts = []
        for (lo, hi), height in zip(itertools.pairwise(cuts), heights, strict=True):
            mid = 0.5 * (lo + hi) * b.half_a
            part = Box(b.cx + mid * b.ax, b.cy + mid * b.ay, b.ax, b.ay, 0.5 * (hi - lo) * b.half_a, b.half_b)
            parts.append((part, height))
        return parts


@dataclass(frozen=True)
class Fence:
    points: tuple[tuple[float, float], ...]
    height_m: float
    rgb: tuple[float, float, float]
    thickness_m: float = 0.08


@dataclass(frozen=True)
class Area:
    """A ground surface: yard, park (grass), plaza, parking, water, or footway (a buffered path)."""

    polygon: Polygon
    kind: str
    line: tuple[tuple[float, float], ...] = ()  # footway centre line (for OSM)
    stall_origin_uv: tuple[float, float] = (0.0, 0.0)  # parking: origin of the stall pattern (grid frame)


@dataclass(frozen=True)
class TownStyle:
    """Lighting and colour look of a town (drawn once per town)."""

    sun_azimuth_deg: float  # true north, clockwise
    sun_elevation_deg: float
    sun_rgb: tuple[float, float, float]
    ambient_rgb: tuple[float, float, float]
    white_balance: tuple[float, float, float]
    exposure: float
    zenith_rgb: tuple[float, float, float]
    horizon_rgb: tuple[float, float, float]
    cloud_cover: float
    centre_line_rgb: tuple[float, float, float]
    palette_jitter: tuple[float, ...]  # multiplies the ground palette, 3 values per class


@dataclass
class Town:
    """The vector model of one town (local frame, metres)."""

    grid_angle_rad: float
    extent_m: float  # the model covers [-extent_m, extent_m]^2
    core_half_m: float  # panoramas are placed in [-core_half_m, core_half_m]^2
    style: TownStyle
    roads: list[Road] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    cars: list[Car] = field(default_factory=list)
    fences: list[Fence] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)

    def to_grid_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (x, y) -> street-grid frame (u, v) (rotation by -grid_angle)."""
        c, s = math.cos(self.grid_angle_rad), math.sin(self.grid_angle_rad)
        return c * x + s * y, -s * x + c * y


# ---- generation ------------------------------------------------------------------------------------------------


def _rgb(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(values, 0.0, 1.0))  # type: ignore[return-value]


def draw_style(rng: np.random.Generator, *, americas: bool) -> TownStyle:
    """Sun, sky and colour jitter of one town."""
    warm = rng.uniform(0.0, 0.08)
    sun_strength = rng.uniform(0.55, 0.7)
    ambient = rng.uniform(0.5, 0.6)
    return TownStyle(
        sun_azimuth_deg=float(rng.uniform(0.0, 360.0)),
        sun_elevation_deg=float(rng.uniform(28.0, 65.0)),
        sun_rgb=_rgb(sun_strength * np.array([1.0, 0.97 - warm / 2, 0.92 - warm])),
        ambient_rgb=_rgb(ambient * np.array([0.9, 0.95, 1.05]) * rng.uniform(0.95, 1.05, 3)),
        white_balance=_rgb(rng.uniform(0.94, 1.06, 3)),
        exposure=float(rng.uniform(0.92, 1.08)),
        zenith_rgb=_rgb(np.array([0.25, 0.45, 0.80]) + rng.uniform(-0.06, 0.06, 3)),
        horizon_rgb=_rgb(np.array([0.75, 0.82, 0.90]) + rng.uniform(-0.05, 0.05, 3)),
        cloud_cover=float(rng.uniform(0.1, 0.6)),
        centre_line_rgb=(0.85, 0.70, 0.15) if americas else (0.92, 0.92, 0.90),
        palette_jitter=tuple(float(v) for v in rng.uniform(0.92, 1.08, 3 * 16)),
    )


def _to_local(u: float, v: float, angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    return c * u - s * v, s * u + c * v


def _line_positions(rng: np.random.Generator, reach_m: float, lo: float, hi: float) -> np.ndarray:
    """Street positions along one axis: jittered spacings covering [-reach, reach], one line near 0."""
    positions = [rng.uniform(-0.3, 0.3) * lo]
    while positions[-1] < reach_m:
        positions.append(positions[-1] + rng.uniform(lo, hi))
    while positions[0] > -reach_m:
        positions.insert(0, positions[0] - rng.uniform(lo, hi))
    return np.array(positions)


def _line_kinds(rng: np.random.Generator, positions: np.ndarray) -> list[str]:
    centre = int(np.argmin(np.abs(positions)))
    kinds = []
    for index in range(len(positions)):
        if index == centre:
            kinds.append("primary")
        elif abs(index - centre) > 1 and rng.random() < 0.3:
            kinds.append("secondary")
        else:
            kinds.append("residential")
    return kinds


class _StreetGrid:
    """Jittered grid nodes and the segments between them (before blocks are cut)."""

    def __init__(self, rng: np.random.Generator, angle: float, reach_m: float, names: list[str]) -> None:
        self.angle = angle
        self.u_lines = _line_positions(rng, reach_m, 70.0, 120.0)  # streets of constant u (running along v)
        self.v_lines = _line_positions(rng, reach_m, 60.0, 100.0)
        self.u_kinds = _line_kinds(rng, self.u_lines)
        self.v_kinds = _line_kinds(rng, self.v_lines)
        jitter = rng.uniform(-2.5, 2.5, (len(self.u_lines), len(self.v_lines), 2))
        self.nodes = np.zeros((len(self.u_lines), len(self.v_lines), 2))
        for i, u in enumerate(self.u_lines):
            for j, v in enumerate(self.v_lines):
                self.nodes[i, j] = _to_local(u + jitter[i, j, 0], v + jitter[i, j, 1], angle)
        self.names = names
        # segment key -> kind; key ("u", i, j) joins nodes (i, j)-(i, j+1); ("v", i, j) joins (i, j)-(i+1, j)
        self.segments: dict[tuple[str, int, int], str] = {}
        for i in range(len(self.u_lines)):
            for j in range(len(self.v_lines) - 1):
                self.segments[("u", i, j)] = self.u_kinds[i]
        for j in range(len(self.v_lines)):
            for i in range(len(self.u_lines) - 1):
                self.segments[("v", i, j)] = self.v_kinds[j]
        for key, kind in list(self.segments.items()):
            if kind == "residential" and rng.random() < 0.07:
                del self.segments[key]

    def endpoints(self, key: tuple[str, int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        axis, i, j = key
        return ((i, j), (i, j + 1)) if axis == "u" else ((i, j), (i + 1, j))

    def line_of(self, key: tuple[str, int, int]) -> tuple[int, str]:
        axis, i, j = key
        line = i if axis == "u" else len(self.u_lines) + j
        suffix = "Avenue" if axis == "u" else "Street"
        return line, f"{self.names[line % len(self.names)]} {suffix}"


def _node_clearances(grid: _StreetGrid) -> dict[tuple[int, int], list[float]]:
    """For every node, the half widths (carriageway + sidewalk) of the segments meeting there."""
    meeting: dict[tuple[int, int], list[float]] = {}
    for key, kind in grid.segments.items():
        cls = ROAD_CLASSES[kind]
        for node in grid.endpoints(key):
            meeting.setdefault(node, []).append(cls.width_m / 2 + cls.sidewalk_m)
    return meeting


def _build_roads(rng: np.random.Generator, grid: _StreetGrid) -> list[Road]:
    meeting = _node_clearances(grid)
    roads = []
    for key in sorted(grid.segments):
        kind = grid.segments[key]
        cls = ROAD_CLASSES[kind]
        (ia, ja), (ib, jb) = grid.endpoints(key)
        own = cls.width_m / 2 + cls.sidewalk_m
        line_id, name = grid.line_of(key)
        clear, zebra = [], []
        for node in ((ia, ja), (ib, jb)):
            others = list(meeting.get(node, []))
            others.remove(own)
            is_junction = len(others) >= 2
            clear.append((max(others) if others else 0.0) + 0.8)
            chance = 0.75 if kind in ("primary", "secondary") else 0.25
            zebra.append(bool(is_junction and rng.random() < chance))
        roads.append(
            Road(
                a=tuple(grid.nodes[ia, ja]),
                b=tuple(grid.nodes[ib, jb]),
                kind=kind,
                line_id=line_id,
                name=name,
                clear_a_m=clear[0],
                clear_b_m=clear[1],
                zebra_a=zebra[0],
                zebra_b=zebra[1],
                centre_line=kind != "residential" or rng.random() < 0.5,
            )
        )
    return roads


def _add_alleys(rng: np.random.Generator, grid: _StreetGrid, roads: list[Road], extent: Polygon) -> None:
    """Service alleys through some large blocks (between the midpoints of two opposite block sides)."""
    next_line = len(grid.u_lines) + len(grid.v_lines)
    for i in range(len(grid.u_lines) - 1):
        for j in range(len(grid.v_lines) - 1):
            if ("v", i, j) not in grid.segments or ("v", i, j + 1) not in grid.segments:
                continue
            if rng.random() > 0.22:
                continue
            a = 0.5 * (grid.nodes[i, j] + grid.nodes[i + 1, j])
            b = 0.5 * (grid.nodes[i, j + 1] + grid.nodes[i + 1, j + 1])
            if not extent.intersects(LineString([a, b])):
                continue
            host_a = ROAD_CLASSES[grid.segments[("v", i, j)]]
            host_b = ROAD_CLASSES[grid.segments[("v", i, j + 1)]]
            roads.append(
                Road(
                    a=tuple(a),
                    b=tuple(b),
                    kind="service",
                    line_id=next_line,
                    name="",
                    clear_a_m=host_a.width_m / 2 + host_a.sidewalk_m,
                    clear_b_m=host_b.width_m / 2 + host_b.sidewalk_m,
                    centre_line=False,
                )
            )
            next_line += 1


# ---- blocks ----------------------------------------------------------------------------------------------------

WALL_COLOURS = np.array(
    [
        [0.80, 0.74, 0.62],  # sand plaster
        [0.86, 0.84, 0.78],  # off-white
        [0.62, 0.36, 0.28],  # brick red
        [0.55, 0.55, 0.55],  # concrete
        [0.74, 0.62, 0.48],  # ochre
        [0.70, 0.72, 0.70],  # light grey
        [0.52, 0.42, 0.36],  # dark brick
        [0.78, 0.70, 0.70],  # pink plaster
    ]
)
ROOF_COLOURS = np.array(
    [
        [0.42, 0.42, 0.43],  # grey membrane
        [0.30, 0.30, 0.32],  # dark bitumen
        [0.62, 0.33, 0.24],  # terracotta tiles
        [0.66, 0.66, 0.64],  # light gravel
        [0.36, 0.28, 0.25],  # brown tiles
        [0.50, 0.52, 0.50],  # zinc
    ]
)
CAR_COLOURS = np.array(
    [
        [0.9, 0.9, 0.9],
        [0.1, 0.1, 0.12],
        [0.55, 0.56, 0.58],
        [0.65, 0.1, 0.1],
        [0.12, 0.2, 0.45],
        [0.75, 0.75, 0.78],
        [0.25, 0.3, 0.25],
    ]
)


def _draw_building(rng: np.random.Generator, parts: list[Box], height_m: float) -> Building:
    levels = max(1, round(height_m / rng.uniform(3.0, 3.6)))
    tall = height_m > 16.0
    gabled = (not tall) and rng.random() < 0.35
    wall = WALL_COLOURS[rng.integers(len(WALL_COLOURS))] * rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, 3)
    roof = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] * rng.uniform(0.85, 1.15) * rng.uniform(0.97, 1.03, 3)
    kind = rng.choice(["office", "commercial", "apartments"]) if tall else rng.choice(["residential", "house"])
    return Building(
        parts=tuple(parts),
        height_m=float(height_m),
        levels=int(levels),
        kind=str(kind),
        wall_rgb=_rgb(wall),
        roof_rgb=_rgb(roof),
        roof_shape="gabled" if gabled else "flat",
        window_rgb=_rgb(np.array([0.16, 0.2, 0.26]) * rng.uniform(0.8, 1.3, 3)),
        window_width_m=float(rng.uniform(0.9, 1.8)),
        window_spacing_m=float(rng.uniform(2.4, 3.6)),
        window_height_frac=float(rng.uniform(0.4, 0.6)),
        shop_front=bool(tall and rng.random() < 0.6),
    )


def _box_uv(u0: float, u1: float, v0: float, v1: float, angle: float) -> Box:
    cx, cy = _to_local(0.5 * (u0 + u1), 0.5 * (v0 + v1), angle)
    return Box(cx, cy, math.cos(angle), math.sin(angle), 0.5 * (u1 - u0), 0.5 * (v1 - v0))


def _height_for(rng: np.random.Generator, centre_dist_m: float, core_half_m: float) -> float:
    downtown = math.exp(-((centre_dist_m / max(core_half_m, 60.0)) ** 2))
    low, high = 5.0 + 8.0 * downtown, 12.0 + 28.0 * downtown
    return float(rng.uniform(low, high))


def _span(inner: Polygon, axis: int, at: float) -> tuple[float, float] | None:
    """Extent of a block along one grid axis at a fixed coordinate of the other (None if the line misses it)."""
    lo, hi = (inner.bounds[1] - 1, inner.bounds[3] + 1) if axis == 1 else (inner.bounds[0] - 1, inner.bounds[2] + 1)
    line = LineString([(at, lo), (at, hi)]) if axis == 1 else LineString([(lo, at), (hi, at)])
    cut = inner.intersection(line)
    if cut.is_empty:
        return None
    b = cut.bounds
    return (b[1], b[3]) if axis == 1 else (b[0], b[2])


def _fill_buildings(
    rng: np.random.Generator, block_uv: Polygon, angle: float, core_half_m: float
) -> tuple[list[Building], list[Polygon]]:
    """Buildings of a block (grid frame): a row along each side following the block's edge, some with a rear
    wing; detached houses in the middle of suburban blocks; now and then one large hall instead."""
    inner = block_uv.buffer(-0.3)
    if inner.is_empty or not isinstance(inner, Polygon):
        return [], []
    umin, vmin, umax, vmax = inner.bounds
    cx, cy = block_uv.centroid.x, block_uv.centroid.y
    centre_dist = math.hypot(*_to_local(cx, cy, angle))
    dense = centre_dist < 0.9 * core_half_m
    placed: list[tuple[float, float, float, float]] = []  # (u0, u1, v0, v1), all axis-aligned in the grid frame
    buildings = []

    def fits(rect: tuple[float, float, float, float], gap: float = 0.0) -> bool:
        u0, u1, v0, v1 = rect
        if u1 - u0 < 4.0 or v1 - v0 < 4.0:
            return False
        if any(u0 < p[1] + gap and p[0] < u1 + gap and v0 < p[3] + gap and p[2] < v1 + gap for p in placed):
            return False
        if not shapely.contains_xy(inner, [u0, u1, u1, u0], [v0, v0, v1, v1]).all():
            return False
        return bool(inner.contains(box(u0, v0, u1, v1)))

    def place(rects: list[tuple[float, float, float, float]], height_m: float, gap: float = 0.0) -> None:
        if not fits(rects[0], gap):
            return
        parts = []
        for rect in rects:
            if rect is rects[0] or fits(rect, gap):
                parts.append(_box_uv(*rect, angle))
                placed.append(rect)
        buildings.append(_draw_building(rng, parts, height_m))

    if inner.area > 2500 and rng.random() < 0.08:  # one large hall (a market, a school, a depot)
        hall = inner.buffer(-rng.uniform(4.0, 9.0))
        if isinstance(hall, Polygon) and not hall.is_empty:
            u0, v0, u1, v1 = hall.bounds
            shrink = 0.5 * (u1 - u0) * rng.uniform(0.0, 0.3)
            place([(u0 + shrink, u1 - shrink, v0 + 2.0, v1 - 2.0)], float(rng.uniform(7.0, 16.0)))
    for side in range(4):
        _row_along_side(rng, inner, side, dense, place, centre_dist, core_half_m)
    if not dense:
        for _ in range(12):
            w, d = rng.uniform(8.0, 13.0), rng.uniform(8.0, 12.0)
            if umax - umin <= w or vmax - vmin <= d:
                break
            u0, v0 = rng.uniform(umin, umax - w), rng.uniform(vmin, vmax - d)
            place([(u0, u0 + w, v0, v0 + d)], _height_for(rng, centre_dist, core_half_m), gap=4.0)
    return buildings, [box(u0, v0, u1, v1) for u0, u1, v0, v1 in placed]


def _row_along_side(rng, inner: Polygon, side: int, dense: bool, place, centre_dist: float, core_half_m: float):
    """A row of buildings along one side of a block: 0 south, 1 north (rows along u), 2 west, 3 east (along v)."""
    umin, vmin, umax, vmax = inner.bounds
    along_axis_u = side in (0, 1)
    along_lo, along_hi = (umin, umax) if along_axis_u else (vmin, vmax)
    cursor = along_lo + rng.uniform(0.0, 2.0)
    while cursor < along_hi - 6.0:
        width = rng.uniform(10.0, 26.0) if dense else rng.uniform(8.0, 15.0)
        depth = rng.uniform(12.0, 20.0) if dense else rng.uniform(8.0, 12.0)
        setback = rng.uniform(0.0, 0.5) if dense else rng.uniform(1.5, 6.0)
        a0, a1 = cursor, min(cursor + width, along_hi)
        spans = [_span(inner, 1 if along_axis_u else 0, a) for a in (a0, 0.5 * (a0 + a1), a1)]
        cursor = a1 + (rng.uniform(0.0, 0.6) if dense else rng.uniform(2.0, 6.0))
        if any(span is None for span in spans):
            continue
        low = max(span[0] for span in spans) + setback  # the block's edge, wherever it runs
        high = min(span[1] for span in spans) - setback
        wing_depth = rng.uniform(4.0, 8.0)
        with_wing = rng.random() < 0.25
        if side in (0, 2):
            main = (low, low + depth)
            wing = (low + depth, low + depth + wing_depth)
        else:
            main = (high - depth, high)
            wing = (high - depth - wing_depth, high - depth)
        if along_axis_u:
            rects = [(a0, a1, *main)] + ([(a0, a0 + 0.45 * (a1 - a0), *wing)] if with_wing else [])
        else:
            rects = [(*main, a0, a1)] + ([(*wing, a0, a0 + 0.45 * (a1 - a0))] if with_wing else [])
        place(rects, _height_for(rng, centre_dist, core_half_m))


def _tree(rng: np.random.Generator, x: float, y: float, *, street: bool) -> Tree:
    crown_r = rng.uniform(1.8, 3.2) if street else rng.uniform(2.0, 4.5)
    crown_rz = crown_r * rng.uniform(0.9, 1.4)
    bottom = rng.uniform(3.6, 5.0) if street else rng.uniform(1.5, 4.0)
    green = np.array([0.22, 0.36, 0.12]) * rng.uniform(0.8, 1.25) + rng.uniform(-0.03, 0.03, 3)
    return Tree(
        x=float(x),
        y=float(y),
        trunk_radius_m=float(rng.uniform(0.12, 0.25)),
        crown_radius_m=float(crown_r),
        crown_half_height_m=float(crown_rz),
        crown_center_z_m=float(bottom + crown_rz),
        rgb=_rgb(green),
    )


def _scatter_points(
    rng: np.random.Generator, region: Polygon, spacing_m: float, max_points: int
) -> list[tuple[float, float]]:
    """Random points inside a region, at least ``spacing_m`` apart (dart throwing)."""
    if region.is_empty or region.area < 1.0 or max_points <= 0:
        return []
    minx, miny, maxx, maxy = region.bounds
    candidates = rng.uniform([minx, miny], [maxx, maxy], (max_points * 12, 2))
    candidates = candidates[shapely.contains_xy(region, candidates[:, 0], candidates[:, 1])]
    points: list[tuple[float, float]] = []
    for x, y in candidates:
        if len(points) >= max_points:
            break
        if points:
            taken = np.asarray(points)
            if np.min((taken[:, 0] - x) ** 2 + (taken[:, 1] - y) ** 2) < spacing_m**2:
                continue
        points.append((float(x), float(y)))
    return points


def _blob(rng: np.random.Generator, cx: float, cy: float, radius_m: float) -> Polygon:
    angles = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    radius = np.full_like(angles, radius_m)
    for k in (2, 3, 4):
        radius *= 1.0 + rng.uniform(-0.12, 0.12) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
    return Polygon(np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1))


def _make_park(rng: np.random.Generator, town: Town, block: Polygon) -> None:
    park = block.buffer(-0.5)
    if park.is_empty:
        return
    town.areas.append(Area(park, "park"))
    obstacles = []
    if park.area > 1500 and rng.random() < 0.6:
        site = park.buffer(-10.0)
        spots = _scatter_points(rng, site, 1.0, 1)
        if spots:
            pond = _blob(rng, *spots[0], rng.uniform(6.0, 12.0)).intersection(park.buffer(-3.0))
            if not pond.is_empty and pond.area > 20:
                town.areas.append(Area(pond, "water"))
                obstacles.append(pond.buffer(2.0))
    minx, miny, maxx, maxy = park.bounds
    corners = [(minx, miny), (maxx, maxy)] if rng.random() < 0.5 else [(minx, maxy), (maxx, miny)]
    mid = (0.5 * (minx + maxx) + rng.uniform(-8, 8), 0.5 * (miny + maxy) + rng.uniform(-8, 8))
    path_line = LineString([corners[0], mid, corners[1]]).intersection(park)
    if not path_line.is_empty and not any(path_line.intersects(o) for o in obstacles):
        lines = [path_line] if isinstance(path_line, LineString) else list(getattr(path_line, "geoms", []))
        for line in lines:
            if isinstance(line, LineString) and line.length > 5.0:
                town.areas.append(Area(line.buffer(FOOTWAY_WIDTH_M / 2), "footway", line=tuple(line.coords)))
                obstacles.append(line.buffer(FOOTWAY_WIDTH_M / 2 + 1.5))
    free = park.buffer(-2.0)
    for o in obstacles:
        free = free.difference(o)
    for x, y in _scatter_points(rng, free, rng.uniform(6.0, 10.0), int(park.area / 60) + 1):
        town.trees.append(_tree(rng, x, y, street=False))


def _make_parking(rng: np.random.Generator, town: Town, block: Polygon, block_uv: Polygon) -> None:
    lot = block.buffer(-1.0)
    if lot.is_empty or lot.area < 200:
        return
    lot = lot if isinstance(lot, Polygon) else max(lot.geoms, key=lambda g: g.area)
    umin, vmin, _, _ = block_uv.buffer(-1.0).bounds
    origin = (umin + rng.uniform(0.5, 2.0), vmin + rng.uniform(0.5, 2.0))
    town.areas.append(Area(lot, "parking", stall_origin_uv=origin))
    inner_uv = affinity.rotate(lot, -town.grid_angle_rad, origin=(0, 0), use_radians=True).buffer(-0.4)
    umin, vmin, umax, vmax = inner_uv.bounds
    k_u = np.arange(math.floor((umin - origin[0]) / 2.5), math.ceil((umax - origin[0]) / 2.5))
    k_v = np.arange(math.floor((vmin - origin[1]) / 16.0), math.ceil((vmax - origin[1]) / 16.0))
    for kv in k_v:
        for row_offset in (2.5, 7.5):
            v_c = origin[1] + 16.0 * kv + row_offset
            for ku in k_u:
                if rng.random() > 0.45:
                    continue
                u_c = origin[0] + 2.5 * ku + 1.25
                footprint = box(u_c - 0.9, v_c - 2.25, u_c + 0.9, v_c + 2.25)
                if inner_uv.contains(footprint):
                    _add_car(rng, town, u_c, v_c, along_v=True)
    if rng.random() < 0.45:
        ring = list(lot.exterior.coords)
        gap = int(rng.integers(len(ring) - 1))
        points = ring[gap + 1 :] + ring[1 : gap + 1]
        if len(points) >= 2:
            town.fences.append(Fence(tuple(map(tuple, points)), float(rng.uniform(1.1, 1.8)), _rgb([0.3, 0.3, 0.28])))


def _add_car(rng: np.random.Generator, town: Town, u_c: float, v_c: float, *, along_v: bool) -> None:
    angle = town.grid_angle_rad + (math.pi / 2 if along_v else 0.0)
    cx, cy = _to_local(u_c, v_c, town.grid_angle_rad)
    length, width = rng.uniform(4.0, 4.8), rng.uniform(1.7, 1.9)
    colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.9, 1.1)
    town.cars.append(
        Car(Box(cx, cy, math.cos(angle), math.sin(angle), length / 2, width / 2), rng.uniform(1.4, 1.6), _rgb(colour))
    )


def _make_plaza(rng: np.random.Generator, town: Town, block: Polygon) -> None:
    plaza = block.buffer(-0.3)
    if plaza.is_empty:
        return
    town.areas.append(Area(plaza, "plaza"))
    for x, y in _scatter_points(rng, plaza.buffer(-4.0), 9.0, int(plaza.area / 150) + 1):
        town.trees.append(_tree(rng, x, y, street=True))


def _make_building_block(rng: np.random.Generator, town: Town, block: Polygon, block_uv: Polygon) -> None:
    town.areas.append(Area(block, "yard"))
    buildings, placed_uv = _fill_buildings(rng, block_uv, town.grid_angle_rad, town.core_half_m)
    town.buildings.extend(buildings)
    taken = unary_union(placed_uv) if placed_uv else Polygon()
    court_uv = block_uv.buffer(-17.0)
    if not court_uv.is_empty and court_uv.area > 400 and rng.random() < 0.3 and not court_uv.intersects(taken):
        court = affinity.rotate(court_uv, town.grid_angle_rad, origin=(0, 0), use_radians=True)
        _make_parking(rng, town, court.buffer(1.0), court_uv.buffer(1.0))
        taken = taken.union(court_uv)
    free_uv = block_uv.buffer(-2.0).difference(taken.buffer(2.0))
    free = affinity.rotate(free_uv, town.grid_angle_rad, origin=(0, 0), use_radians=True)
    for x, y in _scatter_points(rng, free, 7.0, int(free.area / 120) + 1 if not free.is_empty else 0):
        town.trees.append(_tree(rng, x, y, street=False))


def _street_furniture(rng: np.random.Generator, town: Town, building_union: Polygon) -> None:
    """Street trees on sidewalks and cars parked at the kerb."""
    keep_out = building_union.buffer(1.2) if not building_union.is_empty else None
    for road in town.roads:
        cls = road.cls
        length = road.length_m
        dx, dy = road.direction
        nx, ny = -dy, dx
        start, stop = road.clear_a_m + 3.0, length - road.clear_b_m - 3.0
        if stop <= start:
            continue
        if cls.sidewalk_m >= 2.5 and rng.random() < 0.65:
            for side in (-1.0, 1.0):
                along = start + rng.uniform(0.0, 4.0)
                offset = side * (cls.width_m / 2 + 0.55 * cls.sidewalk_m)
                while along < stop:
                    x = road.a[0] + dx * along + nx * offset
                    y = road.a[1] + dy * along + ny * offset
                    inside = abs(x) < town.extent_m and abs(y) < town.extent_m
                    if inside and (keep_out is None or not shapely.contains_xy(keep_out, x, y)):
                        town.trees.append(_tree(rng, x, y, street=True))
                    along += rng.uniform(7.0, 11.0)
        parking_chance = 0.65 if cls.parking_lane_m > 0 else (0.3 if road.kind == "residential" else 0.0)
        for side in (-1.0, 1.0):
            if rng.random() > parking_chance:
                continue
            offset = side * (cls.width_m / 2 - (cls.parking_lane_m / 2 if cls.parking_lane_m else 1.0))
            along = start + 2.0 + rng.uniform(0.0, 3.0)
            while along < stop - 2.5:
                if rng.random() < 0.6:
                    cx = road.a[0] + dx * along + nx * offset
                    cy = road.a[1] + dy * along + ny * offset
                    length, width = rng.uniform(4.0, 4.8), rng.uniform(1.7, 1.9)
                    colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.9, 1.1)
                    car_box = Box(cx, cy, dx, dy, length / 2, width / 2)
                    town.cars.append(Car(car_box, float(rng.uniform(1.4, 1.6)), _rgb(colour)))
                along += rng.uniform(5.5, 8.0)


def generate_town(rng: np.random.Generator, *, core_half_m: float, extent_m: float, americas: bool) -> Town:
    """Draw a town.

    Args:
        rng: the town's random generator (the town is a pure function of its state).
        core_half_m: half side of the square where panoramas will be placed, metres.
        extent_m: half side of the square the model covers (the aerial image plus what panoramas see beyond).
        americas: yellow centre lines (as in the Americas) instead of white ones.

    Returns:
        The :class:`Town`.
    """
    angle = float(rng.uniform(0.0, math.pi / 2))
    style = draw_style(rng, americas=americas)
    town = Town(grid_angle_rad=angle, extent_m=float(extent_m), core_half_m=float(core_half_m), style=style)
    names = list(STREET_NAMES)
    rng.shuffle(names)
    grid = _StreetGrid(rng, angle, extent_m * math.sqrt(2.0) + 130.0, names)
    extent = box(-extent_m, -extent_m, extent_m, extent_m)
    town.roads = [r for r in _build_roads(rng, grid) if extent.intersects(LineString([r.a, r.b]))]
    _add_alleys(rng, grid, town.roads, extent)
    corridors = unary_union([road.corridor(road.cls.width_m / 2 + road.cls.sidewalk_m) for road in town.roads])
    blocks = extent.difference(corridors)
    block_list = list(blocks.geoms) if isinstance(blocks, MultiPolygon) else [blocks]
    block_list = sorted((b for b in block_list if b.area > 150.0), key=lambda b: (round(b.centroid.y), b.centroid.x))
    for block in block_list:
        block_uv = affinity.rotate(block, -angle, origin=(0, 0), use_radians=True)
        roll = rng.random()
        if roll < 0.13:
            _make_park(rng, town, block)
        elif roll < 0.20:
            _make_parking(rng, town, block, block_uv)
        elif roll < 0.24:
            _make_plaza(rng, town, block)
        else:
            _make_building_block(rng, town, block, block_uv)
    footprints = unary_union([b.footprint() for b in town.buildings]) if town.buildings else Polygon()
    _street_furniture(rng, town, footprints)
    return town
