"""A small synthetic town for the locate, demo and plot tests, and noisy position priors for its images."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from crossview.data.synth import generate_world

TOWN = "Quito"  # on the equator: the coarsest zoom-20 pixels, so the smallest map for a given area
SIZE_M = 60.0


def make_town(root: Path, *, seed: int = 5, panoramas: int = 4, pinholes: int = 1) -> Path:
    """Generate the town; returns its folder (``map.tif``, ``poses.csv``, ``panorama/``, ``pinhole/``)."""
    generate_world(
        root,
        seed=seed,
        cities=[TOWN],
        size_m=SIZE_M,
        panoramas=panoramas,
        pinhole_per_pano=pinholes,
        pano_size=(128, 256),
        pinhole_size=(96, 128),
    )
    return root / TOWN


def write_priors(town: Path, out: Path, *, offset_m: float = 10.0, radius_m: float = 30.0, seed: int = 0) -> Path:
    """A ``--priors`` CSV: each true position moved by ``offset_m`` in a random direction, with the true camera
    height (a camera rig's height is known; its GPS position is not exact)."""
    rng = random.Random(seed)
    with (town / "poses.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "lat", "lon", "radius_m", "camera_height_m"])
        for row in rows:
            lat, lon = float(row["lat"]), float(row["lon"])
            angle = rng.uniform(0, 2 * math.pi)
            dlat = offset_m * math.cos(angle) / 111_320.0
            dlon = offset_m * math.sin(angle) / (111_320.0 * math.cos(math.radians(lat)))
            writer.writerow([row["image"], f"{lat + dlat:.8f}", f"{lon + dlon:.8f}", radius_m, row["camera_height_m"]])
    return out
