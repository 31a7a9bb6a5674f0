"""A town's vectors as OpenStreetMap XML (API 0.6), readable by osmnx, JOSM and GDAL's OSM driver.

Streets become ``highway=*`` ways (one per street of one class, sharing nodes at junctions), buildings closed ways
with ``building=*``, ``height``, ``building:levels``, ``roof:shape`` and colours, and the ground areas
``leisure=park``, ``landuse=grass``, ``amenity=parking``, ``natural=water``, ``highway=pedestrian`` (plazas) and
``highway=footway``; trees are ``natural=tree`` nodes, fences ``barrier=fence`` ways. Only features that reach
into the given bounds (the orthophoto's) are written, whole, as in an OSM extract.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon

from crossview.data.synth.projection import TownProjection
from crossview.data.synth.scene import Road, Town

COORD_DECIMALS = 8
GENERATOR = "crossview-synth"


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * min(max(c, 0.0), 1.0)):02x}" for c in rgb)


def _metres(value: float) -> str:
    return f"{value:.1f}"


class _OsmBuilder:
    """Collects nodes (deduplicated by local position, 1 mm) and ways."""

    def __init__(self, projection: TownProjection) -> None:
        self.projection = projection
        self.node_ids: dict[tuple[int, int], int] = {}
        self.node_xy: list[tuple[float, float]] = []
        self.node_tags: dict[int, dict[str, str]] = {}
        self.ways: list[tuple[list[int], dict[str, str]]] = []

    def node(self, x: float, y: float, tags: dict[str, str] | None = None) -> int:
        key = (round(x * 1000), round(y * 1000))
        node_id = self.node_ids.get(key) if tags is None else None
        if node_id is None:
            self.node_xy.append((float(x), float(y)))
            node_id = len(self.node_xy)
            if tags is None:
                self.node_ids[key] = node_id
            else:
                self.node_tags[node_id] = tags
        return node_id

    def way(self, coords: Iterable[Sequence[float]], tags: dict[str, str], *, closed: bool = False) -> None:
        refs = [self.node(x, y) for x, y in coords]
        refs = [r for k, r in enumerate(refs) if k == 0 or r != refs[k - 1]]
        if closed:
            if refs[0] == refs[-1]:
                refs = refs[:-1]
            if len(refs) < 3:
                return
            refs.append(refs[0])
        elif len(refs) < 2:
            return
        self.ways.append((refs, tags))

    def polygon(self, geometry, tags: dict[str, str]) -> None:
        parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
        for part in parts:
            if isinstance(part, Polygon) and not part.is_empty and part.area > 1.0:
                self.way(part.exterior.coords, tags, closed=True)

    def to_xml(self) -> str:
        xy = np.array(self.node_xy, dtype=np.float64).reshape(-1, 2)
        lat, lon = self.projection.latlon_of(xy[:, 0], xy[:, 1])
        lines = []
        for index, (la, lo) in enumerate(zip(np.atleast_1d(lat), np.atleast_1d(lon), strict=True), start=1):
            attrs = f'id="{index}" version="1" lat="{la:.{COORD_DECIMALS}f}" lon="{lo:.{COORD_DECIMALS}f}"'
            tags = self.node_tags.get(index)
            if tags:
                lines.append(f"  <node {attrs}>")
                lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items()]
                lines.append("  </node>")
            else:
                lines.append(f"  <node {attrs}/>")
        for index, (refs, tags) in enumerate(self.ways, start=1):
            lines.append(f'  <way id="{index}" version="1">')
            lines += [f'    <nd ref="{r}"/>' for r in refs]
            lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items()]
            lines.append("  </way>")
        return "\n".join(lines)


def _street_ways(roads: list[Road]) -> list[tuple[list[tuple[float, float]], Road]]:
    """Chain consecutive segments of the same street and class into ways."""
    chains: list[tuple[list[tuple[float, float]], Road]] = []
    for road in roads:
        if chains:
            points, first = chains[-1]
            if first.line_id == road.line_id and first.kind == road.kind and points[-1] == road.a:
                points.append(road.b)
                continue
        chains.append(([road.a, road.b], road))
    return chains


def _street_tags(road: Road) -> dict[str, str]:
    cls = road.cls
    tags = {"highway": road.kind}
    if road.name:
        tags["name"] = road.name
    tags["lanes"] = str(cls.lanes)
    tags["width"] = _metres(cls.width_m)
    tags["surface"] = "asphalt"
    tags["sidewalk"] = "both" if cls.sidewalk_m > 0 else "no"
    if cls.parking_lane_m > 0:
        tags["parking:both"] = "lane"
    if road.kind == "service":
        tags["service"] = "alley"
    return tags


def town_to_osm_xml(
    town: Town, projection: TownProjection, area_local: Polygon, bounds_deg: tuple[float, float, float, float]
) -> str:
    """The OSM XML document of a town's features that reach into ``area_local`` (a local-frame polygon).

    Args:
        town: the vector model.
        projection: its local frame.
        area_local: the area to cover (the orthophoto's footprint in the local frame).
        bounds_deg: ``(minlat, minlon, maxlat, maxlon)`` written as ``<bounds>``.
    """
    frame = area_local
    osm = _OsmBuilder(projection)
    for points, road in _street_ways(town.roads):
        if LineString(points).intersects(frame):
            osm.way(points, _street_tags(road))
    for index, building in enumerate(town.buildings):
        footprint = building.footprint()
        if not footprint.intersects(frame):
            continue
        tags = {
            "building": building.kind,
            "height": _metres(building.height_m),
            "building:levels": str(building.levels),
            "roof:shape": building.roof_shape,
            "roof:colour": _hex(building.roof_rgb),
            "building:colour": _hex(building.wall_rgb),
            "ref": f"b{index}",
        }
        osm.polygon(footprint, tags)
    area_tags = {
        "park": {"leisure": "park"},
        "yard": {"landuse": "grass"},
        "plaza": {"highway": "pedestrian", "area": "yes", "surface": "paving_stones"},
        "parking": {"amenity": "parking", "parking": "surface", "surface": "asphalt"},
        "water": {"natural": "water", "water": "pond"},
    }
    for area in town.areas:
        if not area.polygon.intersects(frame):
            continue
        if area.kind == "footway":
            osm.way(area.line, {"highway": "footway", "surface": "gravel"})
        else:
            osm.polygon(area.polygon, dict(area_tags[area.kind]))
    for fence in town.fences:
        if LineString(fence.points).intersects(frame):
            osm.way(fence.points, {"barrier": "fence", "height": _metres(fence.height_m)})
    for tree in town.trees:
        if frame.contains(shapely.Point(tree.x, tree.y)):
            tags = {
                "natural": "tree",
                "height": _metres(tree.height_m),
                "diameter_crown": _metres(2 * tree.crown_radius_m),
                "leaf_type": "broadleaved",
            }
            osm.node(tree.x, tree.y, tags)
    minlat, minlon, maxlat, maxlon = (f"{v:.{COORD_DECIMALS}f}" for v in bounds_deg)
    header = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<osm version="0.6" generator="{GENERATOR}">\n'
        f'  <bounds minlat="{minlat}" minlon="{minlon}" maxlat="{maxlat}" maxlon="{maxlon}"/>\n'
    )
    return header + osm.to_xml() + "\n</osm>\n"


def write_osm(path: str | os.PathLike[str], xml: str) -> Path:
    """Write the document (UTF-8)."""
    path = Path(path)
    path.write_text(xml, encoding="utf-8")
    return path
