"""Helpers for the training, evaluation and checkpoint tests: a tiny VIGOR tree, a tiny real model, the CLI.

The model is the real ``safa-resnet18-lite`` at tiny image sizes (panoramas 32x64, chips 64, polar 32x64), so a
training step takes a fraction of a second on 2 CPU cores.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR / "data") not in sys.path:
    sys.path.insert(0, str(TESTS_DIR / "data"))

from vigor_fixtures import PanoSpec, build_city  # noqa: E402

from crossview import cli  # noqa: E402

MODEL_NAME = "safa-resnet18-lite"
TINY_SIZES = {"aerial_size": 64, "polar_height": 32, "polar_width": 64, "pano_height": 32, "pano_width": 64}
TINY_MODEL_OVERRIDES = [f"model.{key}={value}" for key, value in TINY_SIZES.items()]
"""``key=value`` overrides that make ``crossview train`` use the tiny model."""

# (name, lat, lon) of the test cities: far apart, on both hemispheres' usual latitudes
CITIES = (("Alpha", 40.7128, -74.006), ("Bravo", 47.6062, -122.3321), ("Charlie", 41.8781, -87.6298))
PANORAMAS_PER_CITY = 5
TRAIN_FRACTION = 0.6  # 3 training and 2 test panoramas per city


def build_tree(root: Path, cities: int = len(CITIES), *, train_fraction: float = TRAIN_FRACTION) -> dict:
    """Write a tiny VIGOR-layout tree; returns {city: [PanoSpec, ...]}.

    vigor_fixtures draws every city alike (panorama k and tile k of each city look the same); here each
    panorama also gets its own sky band (a grey level per panorama) and each city's tiles their own red offset,
    so that no two images look alike.
    """
    specs: dict[str, list[PanoSpec]] = {}
    for number, (name, lat, lon) in enumerate(CITIES[:cities]):
        specs[name] = build_city(root, name, lat, lon, PANORAMAS_PER_CITY, train_fraction=train_fraction)
        for tile in sorted((root / name / "satellite").iterdir()):
            _shift_red(tile, offset=50 * number)
    for number, spec in enumerate(s for city_specs in specs.values() for s in city_specs):
        city = spec.pano_id.split("-")[0]
        _paint_sky_band(root / city / "panorama" / spec.name, grey=40 + 12 * number)
    return specs


def _paint_sky_band(path: Path, grey: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB")).copy()
    array[: array.shape[0] // 4, :, 1] = grey
    Image.fromarray(array).save(path, format="JPEG", quality=95)


def _shift_red(path: Path, offset: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB")).copy()
    array[..., 0] = (array[..., 0].astype(np.int64) + offset) % 256
    Image.fromarray(array).save(path, format="PNG")


def tiny_model(seed: int = 0):
    """The real lite model at tiny sizes, randomly initialised from ``seed``."""
    import torch

    from crossview.encoders import get_model

    torch.manual_seed(seed)
    return get_model(MODEL_NAME, **TINY_SIZES)


def run_cli(argv: Sequence[str]) -> int:
    """Run ``crossview ARGV`` through the real entry point ``crossview.cli.main``."""
    return cli.main(list(argv))


def train_module_args() -> list[str]:
    """``-m crossview train``: how ``python`` / ``torchrun`` start ``crossview train`` through the real CLI."""
    return ["-m", "crossview", "train"]


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats."""
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
