"""Builders of tiny VIGOR trees for the tests: a zoom-20 ortho with markers, panoramas with a bright column.

The pixel math here is a direct evaluation of the Web Mercator formulas, independent of
``crossview.geometry.webmercator``, so that tests compare the package against an outside reference.

Ortho pattern: R and G are gradients below 200, B is 0 everywhere except on markers. Each panorama gets a white
disk (B = 255) of radius ``MARKER_RADIUS_PX`` at its position and a blue disk (B = 255) ``POINTER_DISTANCE_PX``
away along its ``pointer_azimuth_deg`` (clockwise from north); its panorama image has a bright column at that
same azimuth. Marker centroids are found from the B channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image

from crossview.data.vigor import PanoramaRecord, format_pano_name, write_vigor_city
from crossview.maps.raster import GeoRaster

ZOOM = 20
WORLD_PX = 256 * 2**ZOOM
EQUATOR_M = 2.0 * math.pi * 6378137.0
PIXEL_M = EQUATOR_M / WORLD_PX
GRID_PX = 320
MARKER_RADIUS_PX = 3.0
POINTER_DISTANCE_PX = 40.0
PANO_WIDTH, PANO_HEIGHT = 128, 64


def global_px(lat: float, lon: float) -> tuple[float, float]:
    """(col, row) continuous global zoom-20 pixel of a WGS84 position (spherical Web Mercator formula)."""
    col = (lon + 180.0) / 360.0 * WORLD_PX
    row = (1.0 - math.log(math.tan(math.pi / 4.0 + math.radians(lat) / 2.0)) / math.pi) / 2.0 * WORLD_PX
    return col, row


def latlon_of(col: float, row: float) -> tuple[float, float]:
    """(lat, lon) of a continuous global zoom-20 pixel (inverse formula)."""
    lon = col / WORLD_PX * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * row / WORLD_PX))))
    return lat, lon


@dataclass(frozen=True)
class PanoSpec:
    """A panorama of a test city: id, global zoom-20 pixel position and the azimuth of its pointer marker."""

    pano_id: str
    col: float
    row: float
    pointer_azimuth_deg: float

    @property
    def latlon(self) -> tuple[float, float]:
        return latlon_of(self.col, self.row)

    @property
    def record(self) -> PanoramaRecord:
        lat, lon = self.latlon
        return PanoramaRecord(self.pano_id, lat, lon)

    @property
    def name(self) -> str:
        lat, lon = self.latlon
        return format_pano_name(self.pano_id, lat, lon)


# Offsets (dcol, drow) of panoramas from a city's anchor: >= 150 px apart, inside [-320, 320) so that their
# tiles lie in the ortho, and with fractional parts so that nothing sits on a pixel edge.
OFFSETS_PX = ((-250.3, -200.7), (100.2, -280.9), (-60.6, 150.4), (230.8, 210.1), (-230.45, 60.35))
POINTER_AZIMUTHS_DEG = (30.0, 135.0, 200.0, 290.0, 75.0)


def anchor_px(lat: float, lon: float) -> tuple[int, int]:
    """A multiple of 320 px near a position (the middle of a test city)."""
    col, row = global_px(lat, lon)
    return GRID_PX * math.floor(col / GRID_PX), GRID_PX * math.floor(row / GRID_PX)


def make_ortho(origin_col: int, origin_row: int, size_px: int) -> GeoRaster:
    """A (3, size, size) uint8 EPSG:3857 raster whose top-left corner is global pixel (origin_col, origin_row)."""
    rows, cols = np.mgrid[0:size_px, 0:size_px]
    array = np.zeros((3, size_px, size_px), dtype=np.uint8)
    array[0] = (cols * 7 + rows) % 200
    array[1] = (rows * 5 + 3 * cols) % 200
    transform = Affine(
        PIXEL_M, 0.0, origin_col * PIXEL_M - EQUATOR_M / 2, 0.0, -PIXEL_M, EQUATOR_M / 2 - origin_row * PIXEL_M
    )
    return GeoRaster(array=array, crs="EPSG:3857", transform=transform)


def paint_disk(ortho: GeoRaster, origin: tuple[int, int], col: float, row: float, rgb: tuple[int, int, int]) -> None:
    """Paint the pixels whose centres lie within MARKER_RADIUS_PX of global pixel (col, row)."""
    local_row, local_col = row - origin[1], col - origin[0]
    r0, c0 = int(local_row - MARKER_RADIUS_PX) - 1, int(local_col - MARKER_RADIUS_PX) - 1
    size = int(2 * MARKER_RADIUS_PX) + 3
    rows, cols = np.mgrid[r0 : r0 + size, c0 : c0 + size]
    inside = (rows + 0.5 - local_row) ** 2 + (cols + 0.5 - local_col) ** 2 <= MARKER_RADIUS_PX**2
    for band, value in enumerate(rgb):
        ortho.array[band, rows[inside], cols[inside]] = value


def pointer_px(spec: PanoSpec) -> tuple[float, float]:
    """Global (col, row) of a panorama's pointer marker: north is -row, east is +col."""
    azimuth = math.radians(spec.pointer_azimuth_deg)
    return spec.col + POINTER_DISTANCE_PX * math.sin(azimuth), spec.row - POINTER_DISTANCE_PX * math.cos(azimuth)


def write_pano_image(path: Path, bright_azimuth_deg: float) -> None:
    """A north-aligned PANO_WIDTH x PANO_HEIGHT JPEG, dark, with a 4-px bright column centred on an azimuth."""
    u_centre = (bright_azimuth_deg / 360.0 + 0.5) * PANO_WIDTH  # DESIGN: azimuth = (u / W - 0.5) * 360 (heading 0)
    cols = np.arange(PANO_WIDTH) + 0.5
    distance = np.abs((cols - u_centre + PANO_WIDTH / 2) % PANO_WIDTH - PANO_WIDTH / 2)
    image = np.full((PANO_HEIGHT, PANO_WIDTH, 3), 30, dtype=np.uint8)
    image[:, :, 0] = (np.arange(PANO_HEIGHT)[:, None] % 40).astype(np.uint8)
    image[:, distance < 2.0, :] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def build_city(root: Path, city: str, lat: float, lon: float, count: int, **write_kwargs) -> list[PanoSpec]:
    """Write a test city near (lat, lon) with ``count`` panoramas (at most len(OFFSETS_PX)); return their specs."""
    anchor = anchor_px(lat, lon)
    origin = (anchor[0] - 2 * GRID_PX, anchor[1] - 2 * GRID_PX)
    ortho = make_ortho(*origin, 4 * GRID_PX)
    specs = [
        PanoSpec(f"{city}-p{i}_x", anchor[0] + dcol, anchor[1] + drow, POINTER_AZIMUTHS_DEG[i])
        for i, (dcol, drow) in enumerate(OFFSETS_PX[:count])
    ]
    for spec in specs:
        paint_disk(ortho, origin, spec.col, spec.row, (255, 255, 255))
        paint_disk(ortho, origin, *pointer_px(spec), (0, 0, 255))
    write_vigor_city(root, city, ortho, [spec.record for spec in specs], **write_kwargs)
    for spec in specs:
        write_pano_image(root / city / "panorama" / spec.name, spec.pointer_azimuth_deg)
    return specs


def blue_centroid(image_chw: np.ndarray, row: float, col: float, r_min: float, r_max: float) -> tuple[float, float]:
    """B-weighted centroid (row, col) of the pixel centres at distance [r_min, r_max] from (row, col)."""
    height, width = image_chw.shape[-2:]
    r0, r1 = max(0, int(row - r_max) - 1), min(height, int(row + r_max) + 2)
    c0, c1 = max(0, int(col - r_max) - 1), min(width, int(col + r_max) + 2)
    blue = np.asarray(image_chw[2, r0:r1, c0:c1], dtype=np.float64)
    rows, cols = np.mgrid[r0:r1, c0:c1] + 0.5
    distance = np.hypot(rows - row, cols - col)
    weights = np.where((distance >= r_min) & (distance <= r_max), blue, 0.0)
    if weights.sum() <= 0:
        raise AssertionError(f"no marker within {r_min}..{r_max} px of ({row:.2f}, {col:.2f})")
    return float((weights * rows).sum() / weights.sum()), float((weights * cols).sum() / weights.sum())


def bright_column_u(pano_chw: np.ndarray) -> float:
    """Continuous column u of the bright column of a panorama (circular centroid around the brightest column)."""
    score = np.asarray(pano_chw, dtype=np.float64).mean(axis=(0, 1))
    width = score.shape[0]
    peak = int(np.argmax(score))
    offsets = np.arange(-4, 5)
    weights = np.clip(score[(peak + offsets) % width] - np.median(score), 0.0, None)
    return (peak + 0.5 + float((weights * offsets).sum() / weights.sum())) % width
