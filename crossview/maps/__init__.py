"""Map rasters: ``GeoRaster`` (array + CRS + transform + valid mask + tags), the GeoTIFF and OSM sources."""

from crossview.maps.geotiff import geotiff_info, read_geotiff_area
from crossview.maps.raster import GeoRaster, MapError, MapReadError, grid_for_bounds, ground_to_crs_jacobian

__all__ = [
    "GeoRaster",
    "MapError",
    "MapReadError",
    "geotiff_info",
    "grid_for_bounds",
    "ground_to_crs_jacobian",
    "read_geotiff_area",
]
