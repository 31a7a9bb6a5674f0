"""``crossview bench``: throughput of the pipeline's stages on this machine, as a table and optionally JSON.

Stages register in :data:`STAGES` (name -> function taking a :class:`BenchConfig` and returning a JSON-ready
dict with ``unit``, ``settings`` and ``variants``: ``{variant: {"batch", "repeats", "ms_per_batch", "per_s",
"best_ms_per_batch", "best_per_s"}}``, see :func:`batch_figures`), so later stages (encoder, index, refiner, end
to end) only add a function and an entry. Figures are medians (and bests) over repeats after a warm-up.

torch is imported inside the functions: the command line builds every command's parser, and ``crossview --help``
should not pay for importing torch.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossview import __version__
from crossview.cli import Command
from crossview.errors import ConfigError
from crossview.fsio import atomic_write_json

POLAR_CHIP_PX = 640
POLAR_OUTPUT_HW = (128, 512)


@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every stage.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        quick: smaller batches and fewer repeats (well under a minute on 2 CPU cores).
        batch: overrides each stage's batch size when not None (tests use tiny batches).
    """

    device: str = "cpu"
    quick: bool = False
    batch: int | None = None
    osm_file: Path | None = None

    @property
    def warmup(self) -> int:
        return 1 if self.quick else 2

    @property
    def repeats(self) -> int:
        return 3 if self.quick else 10

    def batch_size(self, full: int, quick: int) -> int:
        if self.batch is not None:
            return self.batch
        return quick if self.quick else full


def time_call(fn: Callable[[], object], config: BenchConfig) -> list[float]:
    """Seconds per call of ``fn`` over ``config.repeats`` calls, after ``config.warmup`` untimed calls."""
    import torch

    def synchronize() -> None:
        if config.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(config.warmup):
        fn()
    seconds = []
    for _ in range(config.repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def batch_figures(seconds: list[float], batch: int) -> dict[str, float | int]:
    """Median (and best) milliseconds per batch and items per second.

    The best is worth keeping next to the median on shared or virtual machines, where other tenants make
    single calls many times slower.
    """
    median_s, best_s = statistics.median(seconds), min(seconds)
    return {
        "batch": batch,
        "repeats": len(seconds),
        "ms_per_batch": round(1000.0 * median_s, 3),
        "per_s": round(batch / median_s, 1),
        "best_ms_per_batch": round(1000.0 * best_s, 3),
        "best_per_s": round(batch / best_s, 1),
    }


def bench_polar_transform(config: BenchConfig) -> dict[str, Any]:
    """SAFA polar transform of 3x640x640 chips to 128x512, uint8 and float32 inputs."""
    import torch

    from crossview.geometry.polar import polar_transform

    batch = config.batch_size(full=64, quick=16)
    height, width = POLAR_OUTPUT_HW
    generator = torch.Generator().manual_seed(0)
    chips_u8 = torch.randint(0, 256, (batch, 3, POLAR_CHIP_PX, POLAR_CHIP_PX), dtype=torch.uint8, generator=generator)
    inputs = {"uint8": chips_u8.to(config.device), "float32": chips_u8.to(config.device, torch.float32)}
    variants = {}
    with torch.no_grad():
        for name, chips in inputs.items():
            seconds = time_call(lambda chips=chips: polar_transform(chips, height, width), config)
            variants[name] = batch_figures(seconds, batch)
    settings = {"chip": [3, POLAR_CHIP_PX, POLAR_CHIP_PX], "output": [height, width], "device": config.device}
    return {"unit": "chips", "settings": settings, "variants": variants}


TILE_LATENCY_S = 0.020


def bench_tile_fetch(config: BenchConfig) -> dict[str, Any]:
    """XYZ tiles per second from a local server with 20 ms latency: 1 vs 16 workers, and cache hits."""
    from crossview.tiles.cache import TileCache
    from crossview.tiles.client import TileClient
    from crossview.tiles.fetch import fetch_tiles
    from crossview.tiles.localserver import serve_tiles
    from crossview.tiles.sources import resolve_source

    count = config.batch_size(full=96, quick=32)
    tiles = [(x, 0, 10) for x in range(count)]
    tile_config = BenchConfig(config.device, quick=True, batch=config.batch)  # 1 warm-up, 3 repeats
    variants: dict[str, Any] = {}
    with serve_tiles(latency_s=TILE_LATENCY_S) as template, tempfile.TemporaryDirectory() as cache_dir:
        source = resolve_source(template)
        for workers in (1, 16):
            with TileClient(workers=workers, rate_limit_per_s=None, trust_env=False) as client:
                seconds = time_call(
                    lambda c=client, w=workers: fetch_tiles(source, tiles, cache=None, client=c, workers=w), tile_config
                )
            variants[f"download_{workers}_workers"] = batch_figures(seconds, count)
        cache = TileCache(cache_dir, source.slug)
        with TileClient(workers=16, rate_limit_per_s=None, trust_env=False) as client:
            fetch_tiles(source, tiles, cache=cache, client=client, workers=16)
        seconds = time_call(lambda: fetch_tiles(source, tiles, cache=cache, offline=True, workers=8), tile_config)
        variants["cache_hit"] = batch_figures(seconds, count)
    speedup = variants["download_16_workers"]["per_s"] / variants["download_1_workers"]["per_s"]
    settings = {"latency_ms": TILE_LATENCY_S * 1000, "tiles": count, "speedup_16_vs_1": round(speedup, 2)}
    return {"unit": "tiles", "settings": settings, "variants": variants}


# The shared real-data folder beside a development checkout (absent in a user's clone: the stage is skipped).
DEFAULT_OSM_FILE = Path("../shared/realdata/osm/monaco.osm.gz")
# Monaco (the principality, not the extract's far-reaching relations), W,S,E,N in degrees.
MONACO_BBOX = (7.4091, 43.7247, 7.4398, 43.7519)


def bench_osm_rasterize(config: BenchConfig) -> dict[str, Any]:
    """Seconds to parse ``monaco.osm.gz`` and rasterize it at 0.5 m in local UTM (skipped without the file)."""
    from crossview.fetch import target_grid
    from crossview.geometry.bbox import BBox
    from crossview.maps.osm import load_osm_features, osm_grid, rasterize_osm

    path = config.osm_file
    if path is None or not Path(path).is_file():
        return {"skipped": f"no OSM extract at {path} (pass --osm-file monaco.osm.gz)"}
    bbox = BBox(*MONACO_BBOX)
    crs, bounds = target_grid(bbox, "utm", 0.5)
    transform, width, height = osm_grid(bounds, 0.5)
    parse_s, raster_s = [], []
    for _ in range(1 if config.quick else 3):
        start = time.perf_counter()
        features = load_osm_features(path, bbox=bbox)
        parse_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        rasterize_osm(features, crs=crs, transform=transform, width=width, height=height)
        raster_s.append(time.perf_counter() - start)
    variants = {"parse": batch_figures(parse_s, 1), "rasterize_0.5m": batch_figures(raster_s, 1)}
    settings = {
        "file": Path(path).name,
        "bbox": list(MONACO_BBOX),
        "raster_px": [height, width],
        "features": len(features),
    }
    return {"unit": "runs", "settings": settings, "variants": variants}


def bench_synth(config: BenchConfig) -> dict[str, Any]:
    """Seconds to generate a synthetic town: 300 m with 100 panoramas 1024x512 (quick: 150 m, 20 panoramas)."""
    from crossview.data.synth.world import generate_world

    size_m, panoramas = (150.0, 20) if config.quick else (300.0, 100)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(1 if config.quick else 2):
            start = time.perf_counter()
            generate_world(Path(folder) / f"world{repeat}", seed=repeat, cities=1, size_m=size_m, panoramas=panoramas)
            seconds.append(time.perf_counter() - start)
    settings = {"size_m": size_m, "panoramas": panoramas, "pano_size": [512, 1024], "pinhole_per_pano": 0}
    return {"unit": "towns", "settings": settings, "variants": {"town": batch_figures(seconds, 1)}}


def _lazy(module: str, name: str) -> Callable[[BenchConfig], dict[str, Any]]:
    """A stage defined in another module (imported when the stage runs: those modules import this one)."""

    def stage(config: BenchConfig) -> dict[str, Any]:
        return getattr(importlib.import_module(module), name)(config)

    stage.__doc__ = f"{module}.{name}"
    return stage


STAGES: dict[str, Callable[[BenchConfig], dict[str, Any]]] = {
    "polar_transform": bench_polar_transform,
    "tile_fetch": bench_tile_fetch,
    "osm_rasterize": bench_osm_rasterize,
    "synth": bench_synth,
    "encoder": _lazy("crossview.bench_pipeline", "bench_encoder"),
    "index_build": _lazy("crossview.retrieval.benchmark", "bench_index_build"),
    "index_query": _lazy("crossview.retrieval.benchmark", "bench_index_query"),
    "refiner": _lazy("crossview.refinement.benchmark", "bench_refiner"),
    "dense_search": _lazy("crossview.bench_pipeline", "bench_dense_search"),
    "locate": _lazy("crossview.bench_pipeline", "bench_locate"),
}


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, core and thread counts, library versions, GPU name (CUDA only) and the UTC date."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "crossview": __version__,
        "device": device,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_benchmarks(config: BenchConfig, stage_names: list[str]) -> dict[str, Any]:
    """Run the named stages; returns ``{"crossview": ..., "machine": ..., "stages": {name: figures}}``."""
    stages = {name: STAGES[name](config) for name in stage_names}
    settings = {"quick": config.quick, "device": config.device, "stages": stage_names}
    if config.batch is not None:
        settings["batch"] = config.batch
    return {
        "crossview": {"version": __version__, "command": "bench", "settings": settings},
        "machine": machine_info(config.device),
        "stages": stages,
    }


def _figure_cells(f: dict[str, Any], unit: str) -> tuple[str, str, str, str]:
    """Batch, ms per batch, median and best rates of one variant ('' where a stage does not report them)."""

    def number(key: str, text: str) -> str:
        value = f.get(key)
        return text.format(value) if isinstance(value, (int, float)) else ""

    return (
        number("batch", "{}"),
        number("ms_per_batch", "{:.1f}") or number("seconds", "{:.1f} s"),
        number("per_s", "{:.1f} " + unit + "/s"),
        number("best_per_s", "{:.1f} " + unit + "/s"),
    )


def format_table(report: dict[str, Any]) -> str:
    """A plain aligned table: one row per stage and variant."""
    machine = report["machine"]
    header = (
        f"crossview {machine['crossview']}, torch {machine['torch']}, {machine['cpu']}, "
        f"{machine['logical_cores']} cores, {machine['torch_threads']} threads"
        + (f", {machine['gpu']}" if "gpu" in machine else "")
    )
    rows = [("stage", "variant", "device", "batch", "ms/batch", "rate (median)", "rate (best)")]
    for stage, figures in report["stages"].items():
        if "skipped" in figures:
            rows.append((stage, "skipped", "", "", "", figures["skipped"], ""))
            continue
        unit = figures["unit"]
        for variant, f in figures["variants"].items():
            device = figures["settings"].get("device", "cpu")
            rows.append((stage, variant, device, *_figure_cells(f, unit)))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    right_aligned = {3, 4, 5, 6}  # the numbers
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if k in right_aligned else cell.ljust(width)
            for k, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join([header, *(line.rstrip() for line in lines)])


def parse_stages(text: str | None) -> list[str]:
    """``"polar_transform,..."`` -> stage names (all when None); unknown names raise ConfigError."""
    if text is None:
        return list(STAGES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise ConfigError(f"--stages {text!r}: unknown stage(s) {unknown}; available: {', '.join(STAGES)}")
    return names


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available")


def main(args: argparse.Namespace) -> int:
    """Run ``crossview bench``: print the table, write JSON when ``--out`` is given."""
    stage_names = parse_stages(args.stages)
    out = Path(args.out) if args.out is not None else None
    if out is not None and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch {args.batch}: must be at least 1")
    check_device(args.device)
    osm_file = args.osm_file if args.osm_file is not None else DEFAULT_OSM_FILE
    config = BenchConfig(device=args.device, quick=args.quick, batch=args.batch, osm_file=osm_file)
    report = run_benchmarks(config, stage_names)
    print(format_table(report))
    if out is not None:
        atomic_write_json(out, report)
        print(f"wrote {out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="BENCH.json", help="also write the figures and the machine as JSON")
    parser.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats (under a minute)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument(
        "--stages",
        metavar="NAME[,NAME...]",
        help=f"comma-separated stages to run (default: all): {', '.join(STAGES)}",
    )
    parser.add_argument(
        "--osm-file",
        type=Path,
        help=f"OSM extract for the osm_rasterize stage (default: {DEFAULT_OSM_FILE} when present)",
    )
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)  # tests: a tiny batch for every stage


COMMAND = Command(
    name="bench",
    description=(
        "Measure the throughput of crossview's stages (median over repeats after a warm-up) and record the\n"
        "machine (CPU, cores, threads, torch and crossview versions, GPU, date).\n\n"
        f"stages: {', '.join(STAGES)}\n\n"
        "examples:\n"
        "  crossview bench --quick\n"
        "  crossview bench --out bench.json\n"
        "  crossview bench --device cuda --stages polar_transform --out bench-gpu.json\n"
    ),
    add_arguments=add_arguments,
    run=main,
)
