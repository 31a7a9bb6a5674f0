"""``GeoRaster``: an in-memory map raster (bands + CRS + affine transform + valid mask + tags) and its GeoTIFF I/O.

Convention:
    Pixel coordinates are continuous and edge-based (GDAL/rasterio): ``transform * (col, row)`` is the world position
    of the point (col, row); pixel (row i, col j) has its centre at (i + 0.5, j + 0.5). Map rasters written by
    crossview are north-up (no rotation terms in the transform).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from crossview.errors import CrossviewError


class MapError(CrossviewError, ValueError):
    """A map raster is unusable (bad shape, unknown CRS, unreadable file, empty area)."""


class MapReadError(CrossviewError, OSError):
    """A map file could not be read or written."""


@dataclass
class GeoRaster:
    """A georeferenced raster held in memory.

    Attributes:
        array: (C, H, W) pixel values (any numeric dtype).
        crs: coordinate reference system of the transform (anything ``CRS.from_user_input`` accepts).
        transform: affine transform from (col, row) pixel coordinates to CRS coordinates.
        valid: optional (H, W) bool mask, True where pixels hold data; ``None`` means every pixel is valid.
        nodata: optional nodata value of the bands (informative; ``valid`` is authoritative).
        band_names: one name per band (GeoTIFF band descriptions), default ``band_1``...
        tags: dataset metadata written as GeoTIFF tags: ``source``, ``attribution``, ``time``, ``CLASSES``, ...
    """

    array: np.ndarray
    crs: Any
    transform: Affine
    valid: np.ndarray | None = None
    nodata: float | None = None
    band_names: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise MapError(f"GeoRaster expects a (C, H, W) array, got shape {self.array.shape}")
        try:
            self.crs = CRS.from_user_input(self.crs)
        except Exception as error:
            raise MapError(f"unknown CRS {self.crs!r}: {error}") from None
        if self.valid is not None:
            self.valid = np.asarray(self.valid, dtype=bool)
            if self.valid.shape != self.array.shape[1:]:
                raise MapError(f"valid mask shape {self.valid.shape} does not match raster {self.array.shape[1:]}")
        names = tuple(self.band_names) or tuple(f"band_{i + 1}" for i in range(self.count))
        if len(names) != self.count:
            raise MapError(f"{len(names)} band names for {self.count} bands")
        self.band_names = names
        self.tags = {str(k): str(v) for k, v in dict(self.tags).items()}

    # ---- shape and grid ------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units (positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def valid_mask(self) -> np.ndarray:
        """(H, W) bool mask of valid pixels (all True when ``valid`` is None)."""
        return self.valid if self.valid is not None else np.ones(self.array.shape[1:], dtype=bool)

    def pixel_to_world(self, col: np.ndarray | float, row: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates (col, row) -> CRS coordinates (x, y)."""
        col, row = np.asarray(col, dtype=np.float64), np.asarray(row, dtype=np.float64)
        t = self.transform
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    def world_to_pixel(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """CRS coordinates (x, y) -> continuous pixel coordinates (col, row)."""
        inverse = ~self.transform
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f

    def bounds(self, crs: Any = None) -> BoundingBox:
        """(left, bottom, right, top) in the raster's CRS, or in ``crs`` (densified edges: encloses the raster)."""
        xs, ys = self.pixel_to_world(np.array([0, self.width]), np.array([0, self.height]))
        box = BoundingBox(min(xs), min(ys), max(xs), max(ys))
        if crs is None:
            return box
        return BoundingBox(*transform_bounds(self.crs, CRS.from_user_input(crs), *box, densify_pts=21))

    # ---- GeoTIFF I/O ---------------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, *, compress: str = "deflate", blocksize: int = 256) -> Path:
        """Write a tiled, compressed GeoTIFF atomically (temp file in the same folder, then rename).

        Band names become band descriptions, ``tags`` dataset tags, ``valid`` an internal mask band.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = self._profile(compress, blocksize)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp_name, "w", **profile) as dst:
                dst.write(self.array)
                for index, name in enumerate(self.band_names, start=1):
                    dst.set_band_description(index, name)
                dst.update_tags(**self.tags)
                if self.valid is not None:
                    dst.write_mask(self.valid.astype(np.uint8) * 255)
            os.replace(tmp_name, path)
        except (RasterioError, OSError) as error:
            Path(tmp_name).unlink(missing_ok=True)
            raise MapReadError(f"cannot write {path}: {error}") from None
        return path

    def _profile(self, compress: str, blocksize: int) -> dict[str, Any]:
        tiled = self.width >= blocksize and self.height >= blocksize
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtype": self.array.dtype.name,
            "crs": self.crs,
            "transform": self.transform,
            "compress": compress,
            "tiled": tiled,
            "BIGTIFF": "IF_SAFER",
        }
        if tiled:
            profile.update(blockxsize=blocksize, blockysize=blocksize)
        if self.nodata is not None:
            profile["nodata"] = self.nodata
        return profile

    @classmethod
    def read(cls, path: str | os.PathLike) -> GeoRaster:
        """Read a whole raster file; its dataset mask (mask band, alpha or nodata) becomes ``valid``."""
        try:
            with rasterio.open(path) as src:
                array = src.read()
                mask = src.dataset_mask() > 0
                names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
                return cls(
                    array=array,
                    crs=src.crs,
                    transform=src.transform,
                    valid=None if mask.all() else mask,
                    nodata=src.nodata,
                    band_names=names,
                    tags=src.tags(),
                )
        except RasterioError as error:
            raise MapReadError(f"cannot read raster {path}: {error}") from None
