"""A tiny hand-made OSM scene laid out in metres in a UTM frame, written as OSM XML or as an Overpass JSON reply.

All corners sit on whole metres of the frame, so at 0.5 m pixels every edge falls on a pixel boundary and every
pixel centre is at least 0.25 m from an edge: the expected pixels follow from the geometry alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from crossview.geometry.frames import LocalFrame

SCENE_LAT, SCENE_LON = 48.0, 11.0
GSD_M = 0.5
DIAGONAL_ANGLE_DEG = 30.0
DIAGONAL_LENGTH_M = 60.0

# node id -> (x, y) metres relative to the scene origin (x = east, y = north)
SCENE_NODES: dict[int, tuple[float, float]] = {
    1: (10.0, 10.0),  # building 10 m x 10 m
    2: (20.0, 10.0),
    3: (20.0, 20.0),
    4: (10.0, 20.0),
    5: (5.0, 5.0),  # park 25 m x 25 m around the building
    6: (30.0, 5.0),
    7: (30.0, 30.0),
    8: (5.0, 30.0),
    9: (0.0, 40.0),  # highway=residential, 60 m along x
    10: (60.0, 40.0),
    11: (0.0, 70.0),  # highway=residential lanes=4
    12: (60.0, 70.0),
    13: (40.0, 15.0),  # natural=tree
    14: (0.0, -10.0),  # barrier=fence, 40 m along x
    15: (40.0, -10.0),
    16: (10.0, 100.0),  # highway=residential at 30 degrees from east
    17: (
        10.0 + DIAGONAL_LENGTH_M * math.cos(math.radians(DIAGONAL_ANGLE_DEG)),
        100.0 + DIAGONAL_LENGTH_M * math.sin(math.radians(DIAGONAL_ANGLE_DEG)),
    ),
}
SCENE_NODE_TAGS: dict[int, dict[str, str]] = {13: {"natural": "tree"}}
SCENE_WAYS: list[tuple[int, list[int], dict[str, str]]] = [
    (101, [1, 2, 3, 4, 1], {"building": "yes"}),
    (102, [5, 6, 7, 8, 5], {"leisure": "park"}),
    (103, [9, 10], {"highway": "residential"}),
    (104, [11, 12], {"highway": "residential", "lanes": "4"}),
    (105, [14, 15], {"barrier": "fence"}),
    (106, [16, 17], {"highway": "residential"}),
]
# local bounds (left, bottom, right, top) of the test grid, metres
SCENE_BOUNDS_LOCAL = (-10.0, -20.0, 90.0, 140.0)


@dataclass(frozen=True)
class Scene:
    """The scene placed in the UTM frame of (SCENE_LAT, SCENE_LON), origin on whole metres."""

    frame: LocalFrame = field(default_factory=lambda: LocalFrame.from_center(lat=SCENE_LAT, lon=SCENE_LON))

    @property
    def origin_m(self) -> tuple[float, float]:
        x_m, y_m = self.frame.to_xy(lat=SCENE_LAT, lon=SCENE_LON)
        return float(round(x_m)), float(round(y_m))

    def xy(self, local_x_m: float, local_y_m: float) -> tuple[float, float]:
        """Frame coordinates of a local point."""
        x0, y0 = self.origin_m
        return x0 + local_x_m, y0 + local_y_m

    def latlon(self, node_id: int) -> tuple[float, float]:
        lat, lon = self.frame.to_latlon(*self.xy(*SCENE_NODES[node_id]))
        return float(lat), float(lon)

    def bounds(self) -> tuple[float, float, float, float]:
        left, bottom, right, top = SCENE_BOUNDS_LOCAL
        return (*self.xy(left, bottom), *self.xy(right, top))

    def to_osm_xml(self) -> str:
        """The scene as an OSM XML document (API 0.6 layout)."""
        lines = ["<?xml version='1.0' encoding='UTF-8'?>", '<osm version="0.6" generator="crossview tests">']
        for node_id in SCENE_NODES:
            lat, lon = self.latlon(node_id)
            tags = SCENE_NODE_TAGS.get(node_id, {})
            head = f'  <node id="{node_id}" visible="true" version="1" lat="{lat:.10f}" lon="{lon:.10f}"'
            if not tags:
                lines.append(head + "/>")
                continue
            lines.append(head + ">")
            lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items()]
            lines.append("  </node>")
        for way_id, refs, tags in SCENE_WAYS:
            lines.append(f'  <way id="{way_id}" visible="true" version="1">')
            lines += [f'    <nd ref="{ref}"/>' for ref in refs]
            lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items()]
            lines.append("  </way>")
        lines.append("</osm>")
        return "\n".join(lines) + "\n"

    def to_overpass_json(self) -> dict:
        """The scene as the Overpass API answers ``[out:json]...;out;`` (elements with tags, way node lists)."""
        elements: list[dict] = []
        for node_id in SCENE_NODES:
            lat, lon = self.latlon(node_id)
            element = {"type": "node", "id": node_id, "lat": round(lat, 10), "lon": round(lon, 10)}
            if node_id in SCENE_NODE_TAGS:
                element["tags"] = dict(SCENE_NODE_TAGS[node_id])
            elements.append(element)
        elements += [{"type": "way", "id": i, "nodes": list(refs), "tags": dict(tags)} for i, refs, tags in SCENE_WAYS]
        return {
            "version": 0.6,
            "generator": "Overpass API (crossview test double)",
            "osm3s": {"timestamp_osm_base": "2024-01-01T00:00:00Z", "copyright": "ODbL 1.0"},
            "elements": elements,
        }
