"""Map rasters: ``GeoRaster`` (array + CRS + transform + valid mask + tags), GeoTIFF and OSM sources."""

from crossview.maps.raster import GeoRaster, MapError, MapReadError

__all__ = ["GeoRaster", "MapError", "MapReadError"]
