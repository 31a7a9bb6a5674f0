"""``crossview demo``: the whole pipeline, offline, on the embedded default: a synthetic town and the shipped model.

1. ``crossview synth``: a held-out town (:data:`DEMO_SEED`, a seed no shipped model was trained on) with
   panoramas and pinhole views and their true poses;
2. ``crossview index``: the town's map indexed with the shipped model;
3. position priors like a phone's GPS: each true position moved by up to :data:`PRIOR_OFFSET_M` in a random
   direction, searched within :data:`PRIOR_RADIUS_M`;
4. ``crossview locate`` with that index -> ``results.geojson``;
5. ``crossview plot`` with the true poses -> ``figure.png``;
6. errors against the truth -> ``summary.json`` and a table on the terminal.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from crossview.cli import EXIT_OK, Command
from crossview.errors import ConfigError
from crossview.fsio import atomic_write_json
from crossview.locate import DEFAULT_MODEL

DEMO_SEED = 4242
DEMO_TOWN = "Bergen"  # never in the shipped models' training towns; UTM zone 32V, convergence -3.2 degrees
PRIOR_RADIUS_M = 100.0
PRIOR_OFFSET_M = 50.0
WITHIN_M = 5.0


def write_noisy_priors(
    poses_csv: Path,
    out: Path,
    *,
    seed: int,
    max_offset_m: float = PRIOR_OFFSET_M,
    radius_m: float = PRIOR_RADIUS_M,
) -> Path:
    """A ``--priors`` CSV for every image of ``poses_csv``, like a phone's GPS: the truth moved by a uniform random
    offset in a disc of ``max_offset_m``, searched within ``radius_m``, with the true camera height (a rig's
    height is known)."""
    rng = random.Random(seed)
    with poses_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "lat", "lon", "radius_m", "camera_height_m"])
        for row in rows:
            lat, lon = float(row["lat"]), float(row["lon"])
            distance, angle = max_offset_m * math.sqrt(rng.random()), rng.uniform(0.0, 2.0 * math.pi)
            dlat = distance * math.cos(angle) / 111_320.0
            dlon = distance * math.sin(angle) / (111_320.0 * math.cos(math.radians(lat)))
            writer.writerow([row["image"], f"{lat + dlat:.8f}", f"{lon + dlon:.8f}", radius_m, row["camera_height_m"]])
    return out


def run_demo(
    out: Path,
    *,
    model: str = DEFAULT_MODEL,
    seed: int = DEMO_SEED,
    size_m: float = 150.0,
    panoramas: int = 12,
    pinholes: int = 1,
    workers: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """Run the demo into ``out`` (see the module docstring); returns the summary written to summary.json."""
    from crossview.accuracy import pose_errors, summarize
    from crossview.data.synth import generate_world
    from crossview.export import read_results
    from crossview.locate import LocateSettings, run_locate
    from crossview.plot import plot_results
    from crossview.retrieval import build_index

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = out / "world"
    if not (world / DEMO_TOWN / "poses.csv").is_file():
        log(f"1/5 synthetic town {DEMO_TOWN} (seed {seed}), {panoramas} panoramas + {panoramas * pinholes} pinholes")
        generate_world(
            world,
            seed=seed,
            cities=[DEMO_TOWN],
            size_m=size_m,
            panoramas=panoramas,
            pinhole_per_pano=pinholes,
            pano_size=(256, 512),
            pinhole_size=(240, 320),
            overwrite=True,
        )
    town = world / DEMO_TOWN
    log(f"2/5 index of {town / 'map.tif'} with model {model}")
    index = build_index(town / "map.tif", model, progress=False)
    index.save(out / "area.idx")
    priors = write_noisy_priors(town / "poses.csv", out / "priors.csv", seed=seed)
    log(
        f"3/5 locate {panoramas * (1 + pinholes)} images "
        f"(priors: {PRIOR_OFFSET_M:g} m off, radius {PRIOR_RADIUS_M:g} m)"
    )
    settings = LocateSettings(
        inputs=(str(town / "panorama"), str(town / "pinhole")) if pinholes else (str(town / "panorama"),),
        out=str(out / "results.geojson"),
        model=model,
        index=str(out / "area.idx"),
        priors=str(priors),
        ellipses=True,
        workers=workers,
    )
    located = time.perf_counter()
    summary_run = run_locate(settings)
    locate_s = time.perf_counter() - located
    log("4/5 figure")
    plot_results(out / "results.geojson", town / "map.tif", out / "figure.png", truth_path=town / "poses.csv")
    results, _ = read_results(out / "results.geojson")
    errors = pose_errors(results, town / "poses.csv")
    summary = {
        "town": DEMO_TOWN,
        "seed": seed,
        "model": model,
        "all": summarize(errors, within_m=WITHIN_M, seconds=locate_s),
        "panorama": summarize([e for e in errors if e.camera == "panorama"], within_m=WITHIN_M),
        "pinhole": summarize([e for e in errors if e.camera == "pinhole"], within_m=WITHIN_M),
        "failed": summary_run.failed,
        "locate_seconds": round(locate_s, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "prior": {"offset_m": PRIOR_OFFSET_M, "radius_m": PRIOR_RADIUS_M},
    }
    atomic_write_json(out / "summary.json", summary)
    log("5/5 summary")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's table: one row per camera kind that has images and one for all images."""
    header = f"{'images':<10}{'n':>4}{f'recall@1 ({WITHIN_M:g} m)':>16}{'median m':>10}{'p90 m':>8}{'heading':>9}"
    lines = [header, "-" * len(header)]
    for key in ("panorama", "pinhole", "all"):
        s = summary[key]
        if not s["images"]:
            continue
        lines.append(
            f"{key:<10}{s['images']:>4}{s[f'recall_{WITHIN_M:g}m']:>16.0%}{s['median_position_error_m']:>10.1f}"
            f"{s['p90_position_error_m']:>8.1f}{s['median_heading_error_deg']:>8.1f}°"
        )
    lines.append(
        f"{summary['all'].get('images_per_s', float('nan')):.2f} images/s (locate), "
        f"{summary['total_seconds']:.0f} s in all"
    )
    return "\n".join(lines)


DESCRIPTION = """\
Run the whole pipeline offline on the embedded default: a synthetic town never used in training, its map
indexed with the shipped model, its panoramas and pinhole views located with GPS-like priors. Writes
DIR/results.geojson, DIR/figure.png and DIR/summary.json and prints the accuracy.

examples:
  crossview demo
  crossview demo --out demo-out --panoramas 20
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint (default {DEFAULT_MODEL})")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"town seed (default {DEMO_SEED})")
    parser.add_argument("--size-m", dest="size_m", type=float, default=150.0, help="town size, m (default 150)")
    parser.add_argument("--panoramas", type=int, default=12, help="panoramas (default 12)")
    parser.add_argument("--pinholes", type=int, default=1, help="pinhole views cut from each panorama (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="image decoding processes (default 1)")


def main(args: argparse.Namespace) -> int:
    from crossview.data.synth.world import MAX_PINHOLES

    if args.panoramas < 1:
        raise ConfigError(f"--panoramas {args.panoramas}: must be at least 1")
    if not 0 <= args.pinholes <= MAX_PINHOLES:
        raise ConfigError(f"--pinholes {args.pinholes}: must be between 0 and {MAX_PINHOLES}")
    summary = run_demo(
        Path(args.out),
        model=args.model,
        seed=args.seed,
        size_m=args.size_m,
        panoramas=args.panoramas,
        pinholes=args.pinholes,
        workers=args.workers,
        log=lambda text: print(text, file=sys.stderr),
    )
    print(format_summary(summary))
    print(f"wrote {args.out}/results.geojson, {args.out}/figure.png, {args.out}/summary.json")
    return EXIT_OK


COMMAND = Command(name="demo", description=DESCRIPTION, add_arguments=add_arguments, run=main)
