"""crossview: geolocate ground-level photos against overhead maps.

Conventions (binding across the package, pinned by ``tests/**/test_convention_*``):

- geographic coordinates are WGS84 degrees, passed by name (``lat=..., lon=...``);
- the map frame is a projected metric CRS (default: UTM zone of the area's centre), x = east, y = north, metres;
- headings are degrees clockwise from true north in [0, 360);
- pixel (row i, col j) has its centre at (i + 0.5, j + 0.5) (GDAL/rasterio; ``grid_sample(align_corners=False)``).
"""

__version__ = "0.1.0"

from crossview.errors import CrossviewError

__all__ = ["CrossviewError", "__version__"]
