"""Ground-level rendering of a town by ray casting: equirectangular panoramas and level pinhole views.

Every column of a panorama or of a level pinhole image is a vertical half-plane of constant azimuth, so the
caster works column by column, vectorised over all columns at once:

- *Prisms* (building parts, trunks, cars, fence segments: footprints extruded from the ground) are intersected
  with each column's horizontal ray exactly (slab test for boxes, ray/circle for trunks), giving entry distances
  ``t``. Sorted by distance, a prism of height h hides the rays whose elevation is below its top,
  ``atan((h - cam_h) / t)`` (``t`` = exit distance for prisms lower than the camera, whose roof is then seen).
  The running maximum of those top elevations along the column is non-decreasing, so the prism a pixel sees is
  found by one ``searchsorted`` of its elevation (all columns at once by offsetting each column's keys).
- *Tree crowns* are ellipsoids, intersected exactly (a quadratic per pixel, only over the rows each crown spans).
- A ray below the horizon that hits nothing earlier meets the flat ground at ``d = cam_h / tan(-elevation)``; its
  colour is the town's *ground raster* (:mod:`crossview.data.synth.aerial`) at that point, sampled bilinearly at
  the ground point's zoom-20 pixel: the very raster the orthophoto is made of, so images and map agree.
- Rays above the horizon that hit nothing see the sky (gradient, clouds, sun glow).

Geometry conventions (DESIGN.md): a panorama column u looks at azimuth ``heading + (u / W - 0.5) * 360``, row v
at elevation ``90 - 180 * v / H``; a pinhole camera has x right, y down, z forward, ``u = fx x / z + cx``. Headings
are true-north; in the local (UTM) frame the grid azimuth is ``true azimuth - convergence``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossview.data.synth.aerial import Lighting
from crossview.data.synth.noise import hash_uniform, sample_texture, tileable_texture
from crossview.data.synth.projection import PixelGrid, TownProjection
from crossview.data.synth.scene import CAR_BODY_FRACTION, Town, box_frame_coords

MAX_DISTANCE_M = 200.0
"""Objects farther than this from the camera are not drawn (the ground still is, fading into haze)."""

WALL, TRUNK, CAR, FENCE = range(4)
HIT_SKY, HIT_GROUND, HIT_PRISM, HIT_CROWN = range(4)
_TWO_PI = 2.0 * math.pi
_MAX_ELEVATION = math.radians(89.9)
_HAZE_START_M = 40.0
_HAZE_SCALE_M = 900.0
_CLOUD_ALTITUDE_M = 1500.0


# ---- scene arrays ----------------------------------------------------------------------------------------------


@dataclass
class PrismArrays:
    """Extruded footprints: boxes (kind 0) and circles (kind 1), flat arrays of length P."""

    kind: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    half_a: np.ndarray
    half_b: np.ndarray
    radius: np.ndarray  # circles; bounding radius for boxes is hypot(half_a, half_b)
    height: np.ndarray
    material: np.ndarray
    obj: np.ndarray  # index into the town's buildings / trees / cars / fences

    @property
    def bound(self) -> np.ndarray:
        return np.where(self.kind == 0, np.hypot(self.half_a, self.half_b), self.radius)

    @classmethod
    def from_town(cls, town: Town) -> PrismArrays:
        rows = []
        for index, building in enumerate(town.buildings):
            for p in building.parts:
                rows.append((0, p.cx, p.cy, p.ax, p.ay, p.half_a, p.half_b, 0.0, building.height_m, WALL, index))
        for index, tree in enumerate(town.trees):
            rows.append(
                (1, tree.x, tree.y, 1.0, 0.0, 0.0, 0.0, tree.trunk_radius_m, tree.crown_center_z_m, TRUNK, index)
            )
        for index, car in enumerate(town.cars):
            for b, height in car.parts():
                rows.append((0, b.cx, b.cy, b.ax, b.ay, b.half_a, b.half_b, 0.0, height, CAR, index))
        for index, fence in enumerate(town.fences):
            for (x0, y0), (x1, y1) in zip(fence.points[:-1], fence.points[1:], strict=True):
                length = math.hypot(x1 - x0, y1 - y0)
                if length < 1e-3:
                    continue
                ax, ay = (x1 - x0) / length, (y1 - y0) / length
                cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
                rows.append((0, cx, cy, ax, ay, length / 2, fence.thickness_m / 2, 0.0, fence.height_m, FENCE, index))
        table = np.array(rows, dtype=np.float64).reshape(-1, 11)
        return cls(
            kind=table[:, 0].astype(np.int8),
            cx=table[:, 1],
            cy=table[:, 2],
            ax=table[:, 3],
            ay=table[:, 4],
            half_a=table[:, 5],
            half_b=table[:, 6],
            radius=table[:, 7],
            height=table[:, 8],
            material=table[:, 9].astype(np.int8),
            obj=table[:, 10].astype(np.int64),
        )


@dataclass
class CrownArrays:
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    radius: np.ndarray
    half_height: np.ndarray
    rgb: np.ndarray  # (N, 3)

    @classmethod
    def from_town(cls, town: Town) -> CrownArrays:
        t = town.trees
        return cls(
            x=np.array([tree.x for tree in t]),
            y=np.array([tree.y for tree in t]),
            z=np.array([tree.crown_center_z_m for tree in t]),
            radius=np.array([tree.crown_radius_m for tree in t]),
            half_height=np.array([tree.crown_half_height_m for tree in t]),
            rgb=np.array([tree.rgb for tree in t], dtype=np.float32).reshape(-1, 3),
        )


class SceneGeometry:
    """The solid parts of a town for ray casting: prisms (walls, trunks, cars, fences) and tree crowns."""

    def __init__(self, town: Town) -> None:
        self.prisms = PrismArrays.from_town(town)
        self.crowns = CrownArrays.from_town(town)


@dataclass
class GroundLevel:
    """A ground colour raster on a zoom-20 pixel grid (finest first)."""

    grid: PixelGrid
    image: np.ndarray  # (H, W, 3) uint8

    def __post_init__(self) -> None:
        self.packed = _pack_rgb(self.image)


class GroundScene:
    """Everything the ground renderer needs about one town.

    Args:
        town: the vector model.
        projection: local frame <-> zoom-20 pixels.
        lighting: the town's light (shared with the aerial renderer).
        levels: ground rasters of the aerial image, finest first (zoom-20 pixels, then 2x, 4x coarser).
        outer: a coarse ground raster covering everything the cameras can see beyond the aerial image.
        texture_seed: seed of the facade/foliage/cloud textures.
    """

    def __init__(
        self,
        town: Town,
        projection: TownProjection,
        lighting: Lighting,
        levels: list[GroundLevel],
        outer: GroundLevel,
        texture_seed: int,
    ) -> None:
        self.town, self.projection, self.lighting = town, projection, lighting
        self.levels, self.outer = levels, outer
        self.geometry = SceneGeometry(town)
        self.prisms, self.crowns = self.geometry.prisms, self.geometry.crowns
        rng = np.random.default_rng(texture_seed)
        self.texture = tileable_texture(rng, 256, beta=2.2)
        self.grain = tileable_texture(rng, 256, beta=0.8)
        self.clouds = tileable_texture(rng, 256, beta=2.6)
        b = town.buildings
        self.wall_rgb = np.array([x.wall_rgb for x in b], dtype=np.float32).reshape(-1, 3)
        self.window_rgb = np.array([x.window_rgb for x in b], dtype=np.float32).reshape(-1, 3)
        self.window_width = np.array([x.window_width_m for x in b])
        self.window_spacing = np.array([x.window_spacing_m for x in b])
        self.window_frac = np.array([x.window_height_frac for x in b])
        self.floor_height = np.array([x.floor_height_m for x in b])
        self.building_height = np.array([x.height_m for x in b])
        self.shop_front = np.array([x.shop_front for x in b], dtype=bool)
        self.car_rgb = np.array([c.rgb for c in town.cars], dtype=np.float32).reshape(-1, 3)
        self.car_height = np.array([c.height_m for c in town.cars])
        self.fence_rgb = np.array([f.rgb for f in town.fences], dtype=np.float32).reshape(-1, 3)
        self.fallback_rgb = outer.image[::8, ::8].reshape(-1, 3).mean(axis=0).astype(np.float32) / 255.0
        self.gsd_m = projection.gsd_m
        self.cloud_cover = town.style.cloud_cover
        self.zenith_rgb = np.array(town.style.zenith_rgb, dtype=np.float32)
        self.horizon_rgb = np.array(town.style.horizon_rgb, dtype=np.float32)


# ---- views -----------------------------------------------------------------------------------------------------


@dataclass
class View:
    """The rays of an image: per-column grid azimuths and per-pixel elevations (a level camera).

    Attributes:
        azimuth_rad: (W,) grid azimuth of each column (clockwise from the local frame's +y).
        elevation_rad: (H, W) elevation of each pixel centre.
        pixel_angle_rad: angular size of a pixel (for texture filtering).
    """

    azimuth_rad: np.ndarray
    elevation_rad: np.ndarray
    pixel_angle_rad: float
    sky_key: tuple | None = None  # views with equal keys see the same sky (panoramas of one heading)

    @property
    def shape(self) -> tuple[int, int]:
        return self.elevation_rad.shape


def panorama_view(width: int, height: int, grid_heading_deg: float) -> View:
    """Rays of an equirectangular panorama (DESIGN: column u at heading + (u/W - 0.5) 360, row v at 90 - 180 v/H)."""
    u = np.arange(width) + 0.5
    v = np.arange(height) + 0.5
    azimuth = np.radians(grid_heading_deg + (u / width - 0.5) * 360.0)
    elevation = np.radians(90.0 - 180.0 * v / height)
    # Panoramas of a town differ in heading by a few thousandths of a degree (the convergence): one sky for all.
    sky_key = ("panorama", width, height, round(grid_heading_deg, 1))
    return View(azimuth, np.broadcast_to(elevation[:, None], (height, width)), _TWO_PI / width, sky_key)


def pinhole_view(width: int, height: int, hfov_deg: float, grid_heading_deg: float) -> View:
    """Rays of a level, centred pinhole camera with square pixels (x right, y down, z forward)."""
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    x = (np.arange(width) + 0.5 - width / 2) / focal
    y = (np.arange(height) + 0.5 - height / 2) / focal
    azimuth = math.radians(grid_heading_deg) + np.arctan(x)  # atan2(x, z) with z = 1
    elevation = np.arctan2(-y[:, None], np.sqrt(1.0 + x[None, :] ** 2))  # atan2(-y, hypot(x, z))
    return View(azimuth, elevation, 1.0 / focal)


# ---- the caster ------------------------------------------------------------------------------------------------


def _column_pairs(rel_az: np.ndarray, lo: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object, column) pairs for objects covering relative azimuths [lo, lo + span] (wrapping at 2 pi).

    ``rel_az`` (W,) is ascending in [0, 2 pi); ``lo`` in [0, 2 pi).
    """
    hi = lo + span
    start = np.searchsorted(rel_az, lo, side="left")
    stop = np.searchsorted(rel_az, np.minimum(hi, _TWO_PI), side="right")
    wrap_stop = np.where(hi >= _TWO_PI, np.searchsorted(rel_az, hi - _TWO_PI, side="right"), 0)
    objects = np.arange(len(lo))
    obj1, col1 = _expand(objects, start, stop)
    obj2, col2 = _expand(objects, np.zeros_like(wrap_stop), wrap_stop)
    return np.concatenate([obj1, obj2]), np.concatenate([col1, col2])


def _expand(ids: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (id, j) for j in [start, stop) of each id."""
    counts = np.maximum(stop - start, 0)
    total = int(counts.sum())
    rep = np.repeat(ids, counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return rep, np.repeat(start, counts) + (np.arange(total) - offsets)


@dataclass
class _Hits:
    """Per-pixel results in column-major flat order (index u * H + v)."""

    kind: np.ndarray
    distance: np.ndarray  # horizontal distance to the hit, metres (inf for the sky)
    prism: np.ndarray  # prism index (HIT_PRISM)
    face_axis: np.ndarray  # 0: the face normal is along the box's first axis, 1: second; 2: roof
    face_sign: np.ndarray
    crown: np.ndarray  # crown index (HIT_CROWN)


class RayCaster:
    """Finds what every ray of a view hits first (no colours): the geometric half of the renderer."""

    def __init__(self, geometry: SceneGeometry) -> None:
        self.prisms, self.crowns = geometry.prisms, geometry.crowns

    def hits(self, view: View, cam_x: float, cam_y: float, cam_h: float) -> tuple[np.ndarray, np.ndarray]:
        """Hit kind (HIT_SKY, HIT_GROUND, HIT_PRISM, HIT_CROWN) and horizontal hit distance (m) per pixel, (H, W)."""
        height, width = view.shape
        elevation = np.clip(view.elevation_rad, -_MAX_ELEVATION, _MAX_ELEVATION).T.ravel()
        column = np.repeat(np.arange(width), height)
        hits = self.cast(view.azimuth_rad, elevation, np.tan(elevation), column, cam_x, cam_y, cam_h, height)
        return hits.kind.reshape(width, height).T.copy(), hits.distance.reshape(width, height).T.copy()

    def cast(self, azimuth, elevation, tan_e, column, cam_x, cam_y, cam_h, height) -> _Hits:
        """First hit of every ray; arrays are flat in column-major pixel order (index = u * H + v).

        Args:
            azimuth: (W,) grid azimuth of each column, radians.
            elevation, tan_e: (W * H,) elevation of each pixel (radians) and its tangent.
            column: (W * H,) column of each pixel.
            cam_x, cam_y: camera position in the town's local frame, metres.
            cam_h: camera height above the ground, metres.
            height: H, pixels per column.
        """
        n_pix = len(elevation)
        prism_t, prism_idx, axis, sign = self._cast_prisms(
            azimuth, elevation, tan_e, column, cam_x, cam_y, cam_h, height
        )
        ground_t = np.where(tan_e < 0, cam_h / np.maximum(-tan_e, 1e-12), np.inf)
        crown_t, crown_idx = self._cast_crowns(azimuth, elevation, tan_e, cam_x, cam_y, cam_h, height)
        distance = np.minimum(np.minimum(prism_t, ground_t), crown_t)
        kind = np.full(n_pix, HIT_SKY, dtype=np.uint8)
        finite = np.isfinite(distance)
        kind[finite & (distance == ground_t)] = HIT_GROUND
        kind[finite & (distance == crown_t)] = HIT_CROWN
        kind[finite & (distance == prism_t)] = HIT_PRISM
        return _Hits(kind, distance, prism_idx, axis, sign, crown_idx)

    def _cast_prisms(self, azimuth, elevation, tan_e, column, cam_x, cam_y, cam_h, height):
        n_pix = len(elevation)
        out_t = np.full(n_pix, np.inf)
        out_idx = np.zeros(n_pix, dtype=np.int64)
        out_axis = np.zeros(n_pix, dtype=np.int8)
        out_sign = np.zeros(n_pix, dtype=np.float64)
        P = self.prisms
        fx, fy = cam_x - P.cx, cam_y - P.cy
        dist = np.hypot(fx, fy)
        bound = P.bound
        near = np.nonzero(dist - bound < MAX_DISTANCE_M)[0]
        if near.size == 0:
            return out_t, out_idx, out_axis, out_sign
        az0 = azimuth[0]
        rel_az = np.mod(azimuth - az0, _TWO_PI)
        centre_az = np.arctan2(-fx[near], -fy[near])
        half = np.where(
            dist[near] > bound[near], np.arcsin(np.clip(bound[near] / np.maximum(dist[near], 1e-9), 0, 1)), math.pi
        )
        lo = np.mod(centre_az - half - az0, _TWO_PI)
        obj, col = _column_pairs(rel_az, lo, 2 * half + 1e-9)
        p = near[obj]
        dx, dy = np.sin(azimuth[col]), np.cos(azimuth[col])
        t_in, t_out, face_axis, face_sign = _intersect_prisms(P, p, fx[p], fy[p], dx, dy)
        hit = (t_in < t_out) & (t_in > 1e-6) & (t_in < MAX_DISTANCE_M)
        p, col, t_in, t_out, face_axis, face_sign = (
            p[hit],
            col[hit],
            t_in[hit],
            t_out[hit],
            face_axis[hit],
            face_sign[hit],
        )
        if p.size == 0:
            return out_t, out_idx, out_axis, out_sign
        h = P.height[p]
        top_t = np.where(h >= cam_h, t_in, t_out)
        top_elev = np.arctan2(h - cam_h, top_t)
        order = np.lexsort((t_in, col))
        p, col, t_in, h, face_axis, face_sign, top_elev = (
            a[order] for a in (p, col, t_in, h, face_axis, face_sign, top_elev)
        )
        key = np.maximum.accumulate(col * 4.0 + top_elev)
        query = column * 4.0 + elevation
        idx = np.searchsorted(key, query, side="left")
        safe = np.minimum(idx, len(key) - 1)
        found = (idx < len(key)) & (col[safe] == column)
        t_hit = np.where(found, t_in[safe], np.inf)
        z_hit = cam_h + t_hit * tan_e
        roof = found & (z_hit > h[safe])
        t_roof = (h[safe] - cam_h) / np.where(tan_e < 0, tan_e, -1.0)
        t_hit = np.where(roof, t_roof, t_hit)
        below_ground = found & ~roof & (z_hit < 0)
        t_hit = np.where(below_ground, np.inf, t_hit)
        out_t = t_hit
        out_idx = np.where(found, p[safe], 0)
        out_axis = np.where(roof, 2, face_axis[safe]).astype(np.int8)
        out_sign = face_sign[safe]
        return out_t, out_idx, out_axis, out_sign

    def _cast_crowns(self, azimuth, elevation, tan_e, cam_x, cam_y, cam_h, height):
        n_pix = len(elevation)
        crown_t = np.full(n_pix, np.inf)
        crown_idx = np.zeros(n_pix, dtype=np.int64)
        C = self.crowns
        if len(C.x) == 0:
            return crown_t, crown_idx
        fx, fy = C.x - cam_x, C.y - cam_y
        dist = np.hypot(fx, fy)
        near = np.nonzero(dist - C.radius < MAX_DISTANCE_M)[0]
        if near.size == 0:
            return crown_t, crown_idx
        az0 = azimuth[0]
        rel_az = np.mod(azimuth - az0, _TWO_PI)
        r = C.radius[near]
        half = np.where(dist[near] > r, np.arcsin(np.clip(r / np.maximum(dist[near], 1e-9), 0, 1)), math.pi)
        lo = np.mod(np.arctan2(fx[near], fy[near]) - half - az0, _TWO_PI)
        obj, col = _column_pairs(rel_az, lo, 2 * half + 1e-9)
        c = near[obj]
        dx, dy = np.sin(azimuth[col]), np.cos(azimuth[col])
        t0 = dx * fx[c] + dy * fy[c]
        offset = dx * fy[c] - dy * fx[c]
        radius = C.radius[c]
        keep = (np.abs(offset) < radius) & (t0 > -radius)
        c, col, t0, offset, radius = c[keep], col[keep], t0[keep], offset[keep], radius[keep]
        rho = np.sqrt(radius**2 - offset**2)
        rho_z = C.half_height[c] * rho / radius
        zc = C.z[c] - cam_h
        # Elevation span of the crown's section in the column plane (bounding box corners).
        t_near = t0 - rho
        corners_t = np.stack([t_near, t_near, t0 + rho, t0 + rho])
        corners_z = np.stack([zc - rho_z, zc + rho_z, zc - rho_z, zc + rho_z])
        corner_e = np.arctan2(corners_z, np.maximum(corners_t, 1e-6))
        inside = t_near < 0.3
        e_lo = np.where(inside, -math.pi / 2, corner_e.min(axis=0))
        e_hi = np.where(inside, math.pi / 2, corner_e.max(axis=0))
        # Pixels of column `col` with elevation in [e_lo, e_hi]: elevations descend along each column.
        key = np.repeat(np.arange(len(azimuth)), height) * 4.0 - elevation
        start = np.searchsorted(key, col * 4.0 - e_hi, side="left")
        stop = np.searchsorted(key, col * 4.0 - e_lo, side="right")
        pair, flat = _expand(np.arange(len(c)), start, stop)
        if flat.size == 0:
            return crown_t, crown_idx
        tau = tan_e[flat]
        inv_r2 = 1.0 / rho[pair] ** 2
        inv_z2 = 1.0 / rho_z[pair] ** 2
        z_rel = -zc[pair]  # camera height relative to the crown centre
        a = inv_r2 + tau * tau * inv_z2
        b = -2.0 * t0[pair] * inv_r2 + 2.0 * tau * z_rel * inv_z2
        cc = t0[pair] ** 2 * inv_r2 + z_rel**2 * inv_z2 - 1.0
        disc = b * b - 4.0 * a * cc
        ok = disc >= 0
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        ok &= t > 0.05
        flat, t, pair = flat[ok], t[ok], pair[ok]
        np.minimum.at(crown_t, flat, t)
        win = t == crown_t[flat]
        crown_idx[flat[win]] = c[pair[win]]
        return crown_t, crown_idx


class GroundRenderer:
    """Renders images of a :class:`GroundScene` from a camera at (x, y) local metres, ``cam_h`` above ground."""

    def __init__(self, scene: GroundScene) -> None:
        self.scene = scene
        self.caster = RayCaster(scene.geometry)
        self._sky_cache: dict[tuple, np.ndarray] = {}

    def render(self, view: View, cam_x: float, cam_y: float, cam_h: float) -> tuple[np.ndarray, np.ndarray]:
        """Colour the rays of a view.

        Returns:
            rgb: (H, W, 3) float32 in [0, 1].
            kind: (H, W) uint8 hit kind per pixel (HIT_SKY, HIT_GROUND, HIT_PRISM, HIT_CROWN).
        """
        height, width = view.shape
        azimuth = view.azimuth_rad
        elevation = np.clip(view.elevation_rad, -_MAX_ELEVATION, _MAX_ELEVATION).T.ravel()  # column-major
        tan_e = np.tan(elevation)
        column = np.repeat(np.arange(width), height)
        dir_x, dir_y = np.sin(azimuth), np.cos(azimuth)
        hits = self.caster.cast(azimuth, elevation, tan_e, column, cam_x, cam_y, cam_h, height)
        rgb = np.empty((width * height, 3), dtype=np.float32)
        for kind, shade in (
            (HIT_GROUND, self._shade_ground),
            (HIT_PRISM, self._shade_prisms),
            (HIT_CROWN, self._shade_crowns),
        ):
            idx = np.nonzero(hits.kind == kind)[0]
            if idx.size:
                distance, col = hits.distance[idx], column[idx]
                x, y = cam_x + distance * dir_x[col], cam_y + distance * dir_y[col]
                rgb[idx] = shade(hits, idx, x, y, cam_h + distance * tan_e[idx], view, cam_h)
        sky = np.nonzero(hits.kind == HIT_SKY)[0]
        if sky.size:
            rgb[sky] = self._sky(view, dir_x, dir_y, column, elevation)[sky]
        far = np.nonzero(np.isfinite(hits.distance) & (hits.distance > _HAZE_START_M))[0]
        if far.size:
            haze = (1.0 - np.exp(-(hits.distance[far] - _HAZE_START_M) / _HAZE_SCALE_M)).astype(np.float32)
            haze_rgb = self.scene.horizon_rgb * self.scene.lighting.gain_rgb
            rgb[far] += (haze_rgb - rgb[far]) * haze[:, None]
        image = rgb.reshape(width, height, 3).transpose(1, 0, 2)
        return np.ascontiguousarray(image), hits.kind.reshape(width, height).T.copy()

    def _sky(self, view: View, dir_x, dir_y, column, elevation) -> np.ndarray:
        """Sky colours of every pixel (column-major). Panoramas of one (rounded) heading share one sky, computed
        for that canonical heading, so the result never depends on which panorama asked first."""
        key = view.sky_key
        if key is None:
            return self._shade_sky(dir_x[column], dir_y[column], elevation)
        cached = self._sky_cache.get(key)
        if cached is None:
            _, width, height, heading_deg = key
            canonical = panorama_view(width, height, heading_deg)
            az = canonical.azimuth_rad[column]
            cached = self._shade_sky(np.sin(az), np.cos(az), elevation)
            self._sky_cache[key] = cached
        return cached

    # ---- shading -------------------------------------------------------------------------------------------
    def _shade_ground(self, hits, mask, x, y, z, view: View, cam_h: float) -> np.ndarray:
        distance = hits.distance[mask]
        col_px, row_px = self.scene.projection.to_px(x, y)
        footprint_m = distance**1.5 * view.pixel_angle_rad / math.sqrt(cam_h)
        ratio = footprint_m / self.scene.gsd_m
        level = np.where(ratio < 3.0, 0, np.where(ratio < 6.0, 1, 2))
        level = np.minimum(level, len(self.scene.levels) - 1)
        rgb = np.empty((len(x), 3), dtype=np.float32)
        done = np.zeros(len(x), dtype=bool)
        for k, ground in enumerate(self.scene.levels):
            m = (level == k) & ~done
            if m.any():
                values, inside = sample_ground(ground, col_px[m], row_px[m])
                idx = np.nonzero(m)[0][inside]
                rgb[idx] = values[inside]
                done[idx] = True
        rest = ~done
        if rest.any():
            values, inside = sample_ground(self.scene.outer, col_px[rest], row_px[rest])
            values[~inside] = self.scene.fallback_rgb
            rgb[rest] = values
        return rgb

    def _shade_prisms(self, hits, mask, x, y, z, view: View, cam_h: float) -> np.ndarray:
        P = self.scene.prisms
        p = hits.prism[mask]
        axis = hits.face_axis[mask]
        sign = hits.face_sign[mask]
        material = P.material[p]
        # Outward normal (horizontal) of the face hit, and the coordinate along it.
        ax, ay = P.ax[p], P.ay[p]
        is_box = P.kind[p] == 0
        nx = np.where(axis == 0, ax, -ay) * sign
        ny = np.where(axis == 0, ay, ax) * sign
        circle_nx = (x - P.cx[p]) / np.maximum(P.radius[p], 1e-6)
        circle_ny = (y - P.cy[p]) / np.maximum(P.radius[p], 1e-6)
        nx = np.where(is_box, nx, circle_nx)
        ny = np.where(is_box, ny, circle_ny)
        along_a, along_b = box_frame_coords(x, y, P.cx[p], P.cy[p], ax, ay)
        s = np.where(axis == 0, along_b + P.half_b[p], along_a + P.half_a[p])
        width = np.where(axis == 0, 2 * P.half_b[p], 2 * P.half_a[p])
        sun = self.scene.lighting.sun_dir
        cos_sun = nx * sun[0] + ny * sun[1]
        roof = axis == 2
        cos_sun = np.where(roof, sun[2], cos_sun)
        albedo = np.empty((len(p), 3), dtype=np.float32)
        for material_id, shade in ((WALL, self._wall), (TRUNK, self._trunk), (CAR, self._car), (FENCE, self._fence)):
            m = material == material_id
            if m.any():
                albedo[m] = shade(P.obj[p[m]], p[m], s[m], z[m], width[m], roof[m], axis[m], sign[m], along_a[m])
        ambient = np.where(roof, 1.0, 0.8).astype(np.float32)
        return albedo * self.scene.lighting.shade(cos_sun.astype(np.float32), ambient)

    def _wall(self, b, p, s, z, width, roof, axis, sign, along_a) -> np.ndarray:
        S = self.scene
        spacing_nominal = S.window_spacing[b]
        count = np.maximum(1.0, np.round(width / spacing_nominal))
        spacing = width / count
        column = np.floor(s / spacing)
        s_local = s - (column + 0.5) * spacing
        win_w = np.minimum(S.window_width[b], 0.75 * spacing)
        floor_h = S.floor_height[b]
        level = np.floor(z / floor_h)
        z_local = z - level * floor_h
        sill = 0.3 * floor_h
        in_row = (z_local > sill) & (z_local < sill + S.window_frac[b] * floor_h)
        top_ok = z < S.building_height[b] - 0.6
        window = (np.abs(s_local) < win_w / 2) & in_row & (level >= 1) & top_ok
        frame = (
            (np.abs(s_local) < win_w / 2 + 0.1)
            & (z_local > sill - 0.1)
            & (z_local < sill + S.window_frac[b] * floor_h + 0.1)
            & (level >= 1)
            & top_ok
            & ~window
        )
        shop = S.shop_front[b] & (level == 0) & (z > 0.5) & (z < 0.8 * floor_h) & (np.abs(s_local) < 0.42 * spacing)
        window |= shop
        face_id = p * 4 + (axis.astype(np.int64) * 2 + (sign > 0))
        texture = (
            1.0 + 0.1 * sample_texture(S.texture, s * 2.0, z * 2.0) + 0.05 * sample_texture(S.grain, s * 12, z * 12)
        )
        colour = S.wall_rgb[b] * texture[:, None].astype(np.float32)
        colour[z < 0.5] *= np.float32(0.72)
        colour[frame] = colour[frame] * 0.5 + np.float32(0.85) * 0.5
        if window.any():
            tint = hash_uniform(
                face_id[window] * 131 + column[window].astype(np.int64), level[window].astype(np.int64), 5
            )
            glass = S.window_rgb[b[window]] * (1.0 + 0.35 * tint)[:, None]
            reflection = np.clip((z_local[window] - sill[window]) / (S.window_frac[b[window]] * floor_h[window]), 0, 1)
            glass = glass + (S.horizon_rgb * 0.35 - glass) * (0.5 * reflection)[:, None].astype(np.float32)
            colour[window] = glass
        return colour

    def _trunk(self, index, p, s, z, width, roof, axis, sign, along_a) -> np.ndarray:
        S = self.scene
        base = np.array([0.30, 0.24, 0.18], dtype=np.float32)
        texture = 1.0 + 0.25 * sample_texture(S.grain, s * 20.0, z * 4.0)
        return base * texture[:, None].astype(np.float32)

    def _car(self, index, p, s, z, width, roof, axis, sign, along_a) -> np.ndarray:
        S = self.scene
        part_h = S.prisms.height[p]
        cabin = part_h >= S.car_height[index] - 1e-9
        colour = S.car_rgb[index].copy()
        glass = cabin & ~roof & (z > CAR_BODY_FRACTION * part_h + 0.04) & (z < 0.95 * part_h)
        colour[glass] = np.array([0.07, 0.08, 0.1], dtype=np.float32)
        colour[z < 0.3] = np.array([0.04, 0.04, 0.04], dtype=np.float32)  # wheels and the shade under the car
        return colour

    def _fence(self, index, p, s, z, width, roof, axis, sign, along_a) -> np.ndarray:
        S = self.scene
        slats = 0.8 + 0.2 * (np.mod(s, 0.15) < 0.1)
        return S.fence_rgb[index] * slats[:, None].astype(np.float32)

    def _shade_crowns(self, hits, mask, x, y, z, view: View, cam_h: float) -> np.ndarray:
        S = self.scene
        C = S.crowns
        c = hits.crown[mask]
        nx = (x - C.x[c]) / C.radius[c] ** 2
        ny = (y - C.y[c]) / C.radius[c] ** 2
        nz = (z - C.z[c]) / C.half_height[c] ** 2
        norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
        nx, ny, nz = nx / norm, ny / norm, nz / norm
        sun = S.lighting.sun_dir
        cos_sun = (nx * sun[0] + ny * sun[1] + nz * sun[2]).astype(np.float32)
        around = np.arctan2(y - C.y[c], x - C.x[c]) * C.radius[c]
        leaf = (
            sample_texture(S.texture, around * 3.0 + c * 37.0, z * 3.0) * 0.6
            + sample_texture(S.grain, around * 10.0, z * 10.0) * 0.4
        )
        colour = C.rgb[c] * (1.0 + 0.35 * leaf)[:, None].astype(np.float32)
        ambient = (0.55 + 0.35 * (nz + 1.0) / 2.0).astype(np.float32)
        return colour * S.lighting.shade(cos_sun * (0.75 + 0.25 * (leaf > -0.5)), ambient)

    def _shade_sky(self, dir_x, dir_y, elevation) -> np.ndarray:
        S = self.scene
        up = np.clip(np.sin(elevation), 0.0, 1.0)
        t = np.sqrt(up)[:, None].astype(np.float32)
        colour = S.horizon_rgb + (S.zenith_rgb - S.horizon_rgb) * t
        reach = _CLOUD_ALTITUDE_M / np.maximum(np.tan(np.maximum(elevation, 0.02)), 0.02)
        cx, cy = dir_x * reach / 120.0, dir_y * reach / 120.0
        density = sample_texture(S.clouds, cx, cy) * 0.75 + sample_texture(S.clouds, cx * 3.1, cy * 3.1) * 0.25
        threshold = 1.2 - 2.0 * S.cloud_cover
        cloud = np.clip((density - threshold) * 1.5, 0.0, 1.0) * np.clip((up - 0.02) * 8.0, 0.0, 1.0)
        shade = (0.95 - 0.25 * np.clip(density - threshold - 0.5, 0.0, 1.0))[:, None]
        cloud_rgb = np.float32(0.96) * shade
        colour = colour + (cloud_rgb - colour) * cloud[:, None].astype(np.float32)
        sun = S.lighting.sun_dir
        cos_angle = dir_x * np.cos(elevation) * sun[0] + dir_y * np.cos(elevation) * sun[1] + np.sin(elevation) * sun[2]
        glow = (0.35 * np.exp((cos_angle - 1.0) * 30.0) + 0.6 * (cos_angle > 0.9995))[:, None].astype(np.float32)
        colour = colour + glow * (np.float32(1.0) - colour)
        return colour * S.lighting.gain_rgb


def _intersect_prisms(P: PrismArrays, p, fx, fy, dx, dy):
    """Entry/exit distances of horizontal rays (camera at ``(fx, fy)`` from the prism centre, direction (dx, dy)).

    Returns (t_in, t_out, face_axis, face_sign): face_axis 0 if the ray enters through a face normal to the box's
    first axis, 1 for the second axis; face_sign the sign of that outward normal along the axis.
    """
    ax, ay = P.ax[p], P.ay[p]
    # Box frame: coordinates along (ax, ay) and (-ay, ax).
    o_a, o_b = fx * ax + fy * ay, -fx * ay + fy * ax
    d_a, d_b = dx * ax + dy * ay, -dx * ay + dy * ax
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_a = 1.0 / np.where(np.abs(d_a) < 1e-12, 1e-12, d_a)
        inv_b = 1.0 / np.where(np.abs(d_b) < 1e-12, 1e-12, d_b)
        ta1, ta2 = (-P.half_a[p] - o_a) * inv_a, (P.half_a[p] - o_a) * inv_a
        tb1, tb2 = (-P.half_b[p] - o_b) * inv_b, (P.half_b[p] - o_b) * inv_b
    tmin_a, tmax_a = np.minimum(ta1, ta2), np.maximum(ta1, ta2)
    tmin_b, tmax_b = np.minimum(tb1, tb2), np.maximum(tb1, tb2)
    box_in = np.maximum(tmin_a, tmin_b)
    box_out = np.minimum(tmax_a, tmax_b)
    axis = np.where(tmin_a >= tmin_b, 0, 1).astype(np.int8)
    sign = np.where(axis == 0, -np.sign(d_a), -np.sign(d_b))
    # Circles: |f + t d|^2 = r^2.
    b = fx * dx + fy * dy
    disc = b * b - (fx * fx + fy * fy - P.radius[p] ** 2)
    root = np.sqrt(np.maximum(disc, 0.0))
    circle_in = np.where(disc > 0, -b - root, np.inf)
    circle_out = np.where(disc > 0, -b + root, -np.inf)
    is_box = P.kind[p] == 0
    return (
        np.where(is_box, box_in, circle_in),
        np.where(is_box, box_out, circle_out),
        axis,
        sign,
    )


def _pack_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H * W,) uint32 with R, G, B in bits 0-7, 8-15, 16-23 (one gather per pixel)."""
    flat = image.reshape(-1, 3)
    packed = flat[:, 0].astype(np.uint32)
    packed |= flat[:, 1].astype(np.uint32) << np.uint32(8)
    packed |= flat[:, 2].astype(np.uint32) << np.uint32(16)
    return packed


def sample_ground(level: GroundLevel, col_px: np.ndarray, row_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear colours (N, 3) float32 in [0, 1] of a ground raster at global pixel positions; and inside (N,)."""
    g = level.grid
    gc, gr = g.to_grid(col_px, row_px)
    u, v = gc - 0.5, gr - 0.5  # pixel-centre coordinates
    inside = (u >= 0) & (v >= 0) & (u <= g.width - 1) & (v <= g.height - 1)
    u = np.clip(u, 0, g.width - 1.000001)
    v = np.clip(v, 0, g.height - 1.000001)
    c0, r0 = u.astype(np.int64), v.astype(np.int64)
    fu, fv = (u - c0).astype(np.float32), (v - r0).astype(np.float32)
    base = r0 * g.width + c0
    corners = [level.packed[i] for i in (base, base + 1, base + g.width, base + g.width + 1)]
    weights = [(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv]
    out = np.empty((len(base), 3), dtype=np.float32)
    for channel in range(3):
        shift = np.uint32(8 * channel)
        value = sum(((c >> shift) & np.uint32(255)) * w for c, w in zip(corners, weights, strict=True))
        out[:, channel] = value
    out *= np.float32(1.0 / 255.0)
    return out, inside
