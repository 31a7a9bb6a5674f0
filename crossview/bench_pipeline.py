"""Benchmarks of the learned stages and of the whole pipeline (wired into ``crossview bench``).

* ``encoder``: images per second through the shipped model's ground branch (panoramas, pinholes) and aerial
  branch (chips), batched and one at a time;
* ``dense_search``: the exhaustive search of one image over a 100 m prior disc (64 bird's-eye-view templates
  correlated with the map's finest features; sizes of the shipped model on a VIGOR-size map at 60 deg latitude):
  templates, FFT correlation and peaks, against a direct ``conv2d`` correlation;
* ``locate``: ``crossview locate`` end to end on a synthetic town (index built first, timed separately) with
  100 m priors: images per second over the whole command (start-up included) and over the images alone (the
  rate of a long run), and the peak resident memory of the locate process (run as a subprocess so that the
  figure is its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from crossview.bench import BenchConfig, batch_figures, time_call
from crossview.locate import DEFAULT_MODEL as MODEL


def bench_encoder(config: BenchConfig) -> dict[str, Any]:
    """Ground (panorama 64x256, pinhole 128x170 at 90 degrees) and aerial (128 px chips) images per second."""
    from crossview.checkpoints import load_model

    model = load_model(MODEL, config.device)
    batch = config.batch_size(32, 8)
    device = config.device
    panoramas = torch.rand(batch, 3, model.config["pano_height"], model.config["pano_width"], device=device)
    pinholes = torch.rand(batch, 3, 128, 170, device=device)
    chips = torch.rand(batch, 3, model.config["aerial_size"], model.config["aerial_size"], device=device)
    variants = {}
    with torch.inference_mode():
        cases = {
            "panorama": lambda x: model.encode_ground(x, camera="panorama"),
            "pinhole": lambda x: model.encode_ground(x, camera="pinhole", hfov_deg=90.0),
            "aerial_chip": lambda x: model.encode_aerial(x),
        }
        for (name, fn), images in zip(cases.items(), (panoramas, pinholes, chips), strict=True):
            variants[f"{name}_batched"] = batch_figures(time_call(lambda f=fn, x=images: f(x), config), batch)
            single = images[:1]
            variants[f"{name}_single"] = batch_figures(time_call(lambda f=fn, x=single: f(x), config), 1)
    ratio = variants["aerial_chip_batched"]["per_s"] / variants["aerial_chip_single"]["per_s"]
    return {
        "unit": "images",
        "settings": {"model": MODEL, "batch": batch, "threads": torch.get_num_threads()},
        "variants": variants,
        "ratios": {"aerial_batched_over_single": round(ratio, 2)},
    }


def bench_dense_search(config: BenchConfig) -> dict[str, Any]:
    """Milliseconds per image of the dense search over a 100 m disc (quick: 50 m), FFT against direct."""
    import math

    import torch.nn.functional as F

    from crossview.geometry.cameras import PanoramaCamera
    from crossview.retrieval.dense import DEFAULT_MAX_RANGE_M, bev_templates, correlate, find_peaks

    radius_m, cell_m, channels = (50.0 if config.quick else 100.0), 1.11, 16  # synth-v3's finest level at 60 deg
    headings = torch.arange(64, dtype=torch.float32) * (2 * math.pi / 64)
    generator = torch.Generator().manual_seed(0)
    ground = F.normalize(torch.randn(1, channels, 16, 64, generator=generator), dim=1)
    confidence = torch.rand(1, 1, 16, 64, generator=generator)
    reach = math.ceil(DEFAULT_MAX_RANGE_M / cell_m)
    side = 2 * (math.ceil(radius_m / cell_m) + 1) + 1
    map_features = F.normalize(torch.randn(channels, side, side, generator=generator), dim=0)
    allowed = torch.ones(side, side, dtype=torch.bool)

    def search_fft() -> object:
        templates = bev_templates(ground, confidence, PanoramaCamera(64, 16), 2.0, cell_m=cell_m, headings_rad=headings)
        return find_peaks(correlate(map_features, templates), allowed, 3, min_separation_cells=5)

    templates = bev_templates(ground, confidence, PanoramaCamera(64, 16), 2.0, cell_m=cell_m, headings_rad=headings)

    def correlate_direct() -> object:
        return F.conv2d(map_features[None], templates.features, padding=reach)

    with torch.inference_mode():
        fft = batch_figures(time_call(search_fft, config), 1)
        direct = batch_figures(time_call(correlate_direct, config), 1)
    return {
        "unit": "images",
        "settings": {"radius_m": radius_m, "cell_m": cell_m, "cells": side, "template_cells": 2 * reach + 1},
        "variants": {"fft_search": fft, "direct_conv2d_correlation_only": direct},
        "ratios": {"fft_search_over_direct": round(direct["ms_per_batch"] / fft["ms_per_batch"], 2)},
    }


def bench_locate(config: BenchConfig) -> dict[str, Any]:
    """End to end: a synthetic town on the equator (1 km square, about 1.2 km^2 of map with its margin; quick:
    100 m), its index, then ``crossview locate`` with 100 m priors on its panoramas alone and on its panoramas and
    pinhole views."""
    from crossview.data.synth import generate_world
    from crossview.demo import write_noisy_priors
    from crossview.retrieval import build_index

    size_m, panoramas = (100.0, 8) if config.quick else (1000.0, 40)
    with tempfile.TemporaryDirectory(prefix="crossview-bench-") as tmp:
        root = Path(tmp)
        generate_world(
            root / "world",
            seed=4243,
            cities=["Quito"],
            size_m=size_m,
            panoramas=panoramas,
            pinhole_per_pano=1,
            pano_size=(256, 512),
            pinhole_size=(240, 320),
        )
        town = root / "world" / "Quito"
        started = time.perf_counter()
        index = build_index(town / "map.tif", MODEL, device=config.device, progress=False)
        index_s = time.perf_counter() - started
        index.save(root / "area.idx")
        priors = write_noisy_priors(town / "poses.csv", root / "priors.csv", seed=1)
        common = ["--index", str(root / "area.idx"), "--priors", str(priors), "--device", config.device]
        runs = {
            "locate_panoramas": (panoramas, [str(town / "panorama")]),
            "locate": (2 * panoramas, [str(town / "panorama"), str(town / "pinhole")]),
        }
        timed = {}
        for name, (count, inputs) in runs.items():
            timed[name] = _time_locate([*inputs, *common], root / f"{name}.geojson", count)
        map_km2 = _map_area_km2(town / "map.tif")
    return {
        "unit": "images",
        "settings": {"model": MODEL, "town_size_m": size_m, "map_km2": round(map_km2, 3), "images": 2 * panoramas},
        "variants": {
            "index_build": {"seconds": round(index_s, 2), "chips": len(index), "per_s": round(len(index) / index_s, 1)},
            **timed,
        },
    }


def _time_locate(args: list[str], out: Path, images: int) -> dict[str, Any]:
    """Wall time, images/s and peak memory of one ``crossview locate`` command (interpreter start, model load and
    index load included)."""
    argv = [sys.executable, "-m", "crossview", "locate", *args, "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    stderr, peak_kb = run_measured(argv, env)
    seconds = time.perf_counter() - started
    images_s = summary_seconds(stderr)
    return {
        "seconds": round(seconds, 2),
        "images": images,
        "per_s": round(images / seconds, 2),
        "images_seconds": round(images_s, 2),
        "images_per_s": round(images / images_s, 2) if images_s > 0 else None,  # the summary rounds to 0.1 s
        "peak_rss_mb": round(peak_kb / 1024.0, 1) if peak_kb is not None else None,
        "note": "seconds, per_s: wall time of the whole command, interpreter start and model load included; "
        "images_seconds, images_per_s: from the first image to the last (the rate of a long run), as locate's "
        "summary gives it; peak_rss_mb: the largest resident memory of the command's processes",
    }


def run_measured(argv: list[str], env: dict[str, str], *, poll_s: float = 0.05) -> tuple[str, int | None]:
    """Run a command to its end; its stderr and the peak resident memory (KiB) of its largest process.

    The peak is the high-water mark (``VmHWM``) of the command's processes, read from ``/proc`` every ``poll_s``
    while it runs (None without ``/proc``). ``getrusage``'s ``ru_maxrss`` does not do: a child started by a large
    process (the bench, after building an index) counts that process's memory before its ``exec``.

    Raises:
        subprocess.CalledProcessError: the command failed (with its stderr).
    """
    peak_kb = 0 if Path("/proc").is_dir() else None
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        while process.poll() is None:
            if peak_kb is not None:
                peak_kb = max(peak_kb, _high_water_kb(process.pid))
            time.sleep(poll_s)
        errors.seek(0)
        stderr = errors.read()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, argv, stderr=stderr)
    return stderr, peak_kb


def _high_water_kb(pid: int) -> int:
    """The largest ``VmHWM`` (KiB) of process ``pid`` and its descendants (0 for those already gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return 0
    own = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return max([own, *(_high_water_kb(child) for child in children)])


def summary_seconds(stderr: str) -> float:
    """Seconds spent on the images, read from ``crossview locate``'s summary line (``... images in 9.8 s
    (...)``)."""
    found = re.findall(r" images in ([0-9.]+) s \(", stderr)
    if not found:
        raise RuntimeError(f"no summary line in crossview locate's output: {stderr[-300:]!r}")
    return float(found[-1])


def _map_area_km2(path: Path) -> float:
    """Ground area of a synthetic map (Web Mercator at zoom 20), from its header only."""
    import rasterio
    import rasterio.warp

    from crossview.geometry.webmercator import meters_per_pixel

    with rasterio.open(path) as src:
        _, south, _, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        mpp = meters_per_pixel(lat=(south + north) / 2, zoom=20)
        return src.width * src.height * mpp**2 / 1e6
