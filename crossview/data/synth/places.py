"""Where the synthetic towns lie: real places spread over both hemispheres and several UTM zones.

The names deliberately differ from VIGOR's four cities (NewYork, Seattle, SanFrancisco, Chicago) so a synthetic
world can never be mistaken for, or mixed into, the real dataset's folders.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

from crossview.errors import ConfigError


@dataclass(frozen=True)
class Place:
    """A town centre: folder name and WGS84 position (degrees)."""

    name: str
    lat: float
    lon: float


PLACES: tuple[Place, ...] = (
    Place("Berlin", 52.5200, 13.4050),  # north-east; UTM 33N, 1.3 deg west of its central meridian
    Place("Sydney", -33.8688, 151.2093),  # south-east; UTM 56S
    Place("Denver", 39.7392, -104.9903),  # north-west; UTM 13N
    Place("SaoPaulo", -23.5505, -46.6333),  # south-west; UTM 23S
    Place("Tokyo", 35.6762, 139.6503),  # north-east; UTM 54N
    Place("Nairobi", -1.2921, 36.8219),  # just south of the equator; UTM 37S
    Place("Bergen", 60.3913, 5.3221),  # Norway's UTM exception: zone 32V, not 31; convergence about -3.2 deg
    Place("Quito", -0.1807, -78.4678),  # on the equator, west; UTM 17S
)
"""The towns in generation order: ``--cities K`` takes the first K."""


def select_places(cities: int | str | list[str] | tuple[str, ...]) -> list[Place]:
    """The places of a world: the first ``cities`` of :data:`PLACES`, or the named ones (case-insensitive).

    Raises:
        ConfigError: a count outside [1, len(PLACES)], an unknown or repeated name.
    """
    if isinstance(cities, bool):
        raise ConfigError(f"cities={cities!r} must be a count or a list of town names")
    if isinstance(cities, int):
        if not 1 <= cities <= len(PLACES):
            raise ConfigError(f"--cities {cities}: must be between 1 and {len(PLACES)}")
        return list(PLACES[:cities])
    names = [cities] if isinstance(cities, str) else list(cities)
    by_name = {place.name.lower(): place for place in PLACES}
    chosen = []
    for name in names:
        place = by_name.get(str(name).lower())
        if place is None:
            raise ConfigError(f"unknown town {name!r}: choose from {', '.join(p.name for p in PLACES)}")
        if place in chosen:
            raise ConfigError(f"town {place.name!r} is given twice")
        chosen.append(place)
    if not chosen:
        raise ConfigError("no town given: pass a count or at least one town name")
    return chosen


SEED_OFFSET_STEP_M = 400.0
"""Spacing of the seed-dependent town offsets (more than a town's 300 m core plus margin is not needed: towns of
different seeds may overlap in space, only their tile names must differ, and they do when the centres differ)."""
SEED_OFFSET_STEPS = 20
"""Offsets reach +/- 20 steps (8 km) east and north: enough for 1681 distinct centres per place, small enough to
keep each place's character (Bergen's convergence stays below -3.0 degrees)."""


def place_for_seed(place: Place, seed: int) -> Place:
    """The place moved by a seed-dependent offset of whole ``SEED_OFFSET_STEP_M`` steps east and north.

    Worlds made with different seeds then have different panorama and tile names (they carry coordinates), so
    several worlds can be merged into one training set. Seed 0 keeps the place's own centre.
    """
    if seed == 0:
        return place
    digest = hashlib.sha256(f"{place.name}:{seed}".encode()).digest()
    span = 2 * SEED_OFFSET_STEPS + 1
    east_m = (digest[0] * 256 + digest[1]) % span - SEED_OFFSET_STEPS
    north_m = (digest[2] * 256 + digest[3]) % span - SEED_OFFSET_STEPS
    east_m, north_m = east_m * SEED_OFFSET_STEP_M, north_m * SEED_OFFSET_STEP_M
    lat = place.lat + math.degrees(north_m / 6_371_008.8)
    lon = place.lon + math.degrees(east_m / (6_371_008.8 * math.cos(math.radians(place.lat))))
    return replace(place, lat=round(lat, 6), lon=round(lon, 6))
