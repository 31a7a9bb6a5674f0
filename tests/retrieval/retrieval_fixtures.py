"""Test helpers of the retrieval index: a textured map written with rasterio directly, a tiny real model.

The map is a Web-Mercator (EPSG:3857) RGB GeoTIFF like the synthetic world's, with an internal mask that marks
its south-west corner invalid. The model is the real ``safa-resnet18-lite`` at tiny sizes (64 px chips, polar
32x64), randomly initialised: a chip encodes in a few milliseconds on 2 CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from pyproj import Transformer

MAP_LAT, MAP_LON = 48.0, 7.8  # UTM zone 32 north (EPSG:32632)
MAP_SIDE_M = 160.0  # ground metres
MAP_GSD_M = 0.5  # ground metres per pixel at the map's centre
INVALID_CORNER_FRACTION = 0.3  # the south-west 30% x 30% of the map is nodata (mask 0)
TINY_SIZES = {"aerial_size": 64, "polar_height": 32, "polar_width": 64, "pano_height": 32, "pano_width": 64}


def textured_rgb(size: int, *, seed: int = 0) -> np.ndarray:
    """(3, size, size) uint8: smooth random colour fields at two scales plus fine noise (structure everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for cells, weight in ((6, 0.5), (24, 0.35)):
        coarse = torch.rand(1, 3, cells, cells, generator=generator)
        layers.append(weight * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0])
    fine = 0.15 * torch.rand(3, size, size, generator=generator)
    return (255 * (sum(layers) + fine)).clamp(0, 255).round().to(torch.uint8).numpy()


def mercator_transform(*, lat: float, lon: float, side_m: float, gsd_m: float) -> tuple[Affine, int]:
    """North-up EPSG:3857 grid of ``side_m`` ground metres centred at (lat, lon): (transform, size in px).

    Web Mercator metres are ground metres / cos(lat) (spherical scale, as XYZ tiles use).
    """
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
    size = round(side_m / gsd_m)
    pixel = gsd_m / math.cos(math.radians(lat))
    return Affine(pixel, 0.0, x - size * pixel / 2, 0.0, -pixel, y + size * pixel / 2), size


def write_map(
    path: Path, *, seed: int = 0, lat: float = MAP_LAT, lon: float = MAP_LON, invalid_corner: bool = True
) -> Path:
    """Write the test map with rasterio (internal mask band; the south-west corner masked when asked)."""
    transform, size = mercator_transform(lat=lat, lon=lon, side_m=MAP_SIDE_M, gsd_m=MAP_GSD_M)
    rgb = textured_rgb(size, seed=seed)
    mask = np.full((size, size), 255, dtype=np.uint8)
    if invalid_corner:
        corner = round(size * INVALID_CORNER_FRACTION)
        mask[size - corner :, :corner] = 0
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": transform,
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb)
        dst.write_mask(mask)
    return path


def tiny_model(seed: int = 0):
    """The real lite model at tiny sizes, randomly initialised from ``seed``, in eval mode."""
    from crossview.encoders import get_model

    torch.manual_seed(seed)
    return get_model("safa-resnet18-lite", **TINY_SIZES).eval()


def vigor_tile_extent_m(lat: float) -> float:
    """A 640-px zoom-20 tile's ground side: 640 * 156543.03392 * cos(lat) / 2**20 (VIGOR's metres per pixel)."""
    return 640 * 156543.03392 * math.cos(math.radians(lat)) / 2**20
