"""crossview's synthetic VIGOR-style world: procedural towns at real places, their aerial orthophotos (zoom-20
Web Mercator GeoTIFFs), OSM vectors, and ground-level panoramas and pinhole views ray cast from the same 2.5-D
scene, so that every image agrees with the map to the pixel.

Modules: ``places`` (where the towns are), ``scene`` (the vector town model), ``projection`` (local metres <->
zoom-20 pixels), ``noise`` (textures), ``aerial`` (top-down rendering), ``render`` (the ray caster), ``osmxml``
(OSM XML writer), ``world`` (``generate_world``) and ``command`` (``crossview synth``).

``generate_world`` and ``city_model`` are imported lazily: the command line imports this package to build its
parser and should not pay for numpy, torch and GDAL then.
"""

from __future__ import annotations

from typing import Any

from crossview.data.synth.places import PLACES, Place, select_places

__all__ = ["PLACES", "POSES_HEADER", "Place", "city_model", "generate_world", "select_places"]

_LAZY = {"POSES_HEADER", "city_model", "generate_world"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from crossview.data.synth import world

        return getattr(world, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
