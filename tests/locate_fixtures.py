"""A small synthetic town for the locate, demo and plot tests, and noisy position priors for its images."""

from __future__ import annotations

from pathlib import Path

from crossview.data.synth import generate_world
from crossview.demo import write_noisy_priors

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
    """A ``--priors`` CSV: each true position moved by up to ``offset_m``, searched within ``radius_m``."""
    return write_noisy_priors(town / "poses.csv", out, seed=seed, max_offset_m=offset_m, radius_m=radius_m)
