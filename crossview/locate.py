"""``crossview locate``: geolocate a folder of photos against a map; GeoJSON or CSV out, nothing lost on the way.

Stages (hloc-style, each one replaceable): inputs (:mod:`crossview.inputs`: discovery, decoding in worker
processes, camera and prior per image) -> localization (:mod:`crossview.localize`: encode, retrieve candidate
chips, refine each with LM, keep the best) -> records (:mod:`crossview.export`).

Nothing is lost:

* every finished image (located or failed) is appended to the JSONL sidecar ``<out>.jsonl`` and flushed;
* the run's settings and start time go to ``<out>.run.json`` before the first image; ``--resume`` refuses other
  settings, skips the images already in the sidecar and processes the rest in the same batches as an
  uninterrupted run, so the result is the same file;
* the GeoJSON/CSV is written atomically at the end, and on SIGINT/SIGTERM with the images done so far (exit 130);
* a bad image (missing, empty, truncated, corrupt, too large, not an image) becomes ``status: failed`` with the
  reason and the run goes on; exit 0 unless ``--strict`` and something failed (exit 1);
* an unusable model, map, index or source fails before any image with a one-line message (exit 2, 1 for I/O).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crossview import __version__
from crossview.cli import EXIT_FAILURE, EXIT_OK, Command
from crossview.errors import ConfigError, CrossviewError
from crossview.fsio import atomic_write_json

EXIT_INTERRUPTED = 130
DEFAULT_MODEL = "synth-v7"
DEFAULT_TOP_K = 5
DEFAULT_PRIOR_RADIUS_M = 100.0
DEFAULT_BATCH = 16


class LocateError(CrossviewError, ValueError):
    """Bad settings for locate (conflicting options, a resume with other settings)."""


@dataclass(frozen=True)
class LocateSettings:
    """Everything a locate run depends on (recorded in the output's ``crossview.settings``)."""

    inputs: tuple[str, ...]
    out: str
    model: str = DEFAULT_MODEL
    index: str | None = None
    map: str | None = None
    source: str | None = None
    camera: str = "auto"
    hfov_deg: float | None = None
    camera_height_m: float | None = None
    prior_radius_m: float = DEFAULT_PRIOR_RADIUS_M
    priors: str | None = None
    exif_prior: bool = True
    top_k: int = DEFAULT_TOP_K
    search: str = "dense"
    fmt: str | None = None
    ellipses: bool = False
    device: str = "cpu"
    workers: int = 2
    batch_size: int = DEFAULT_BATCH
    cache_dir: str = "tiles"
    offline: bool = False
    stride_m: float | None = None

    def recorded(self) -> dict[str, Any]:
        """The settings that change results (not workers, batch size or paths of outputs)."""
        skip = {"out", "workers", "device", "fmt", "ellipses"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k not in skip}


@dataclass
class LocateSummary:
    """Counts and timing of a run."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    out: str = ""
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.ok} located", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} already done (--resume)")
        state = "interrupted: " if self.interrupted else ""
        return f"{state}{', '.join(parts)} of {self.total} images in {self.seconds:.1f} s ({rate:.2f} images/s)"


# ---- files of a run ----------------------------------------------------------------------------------------


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """The JSONL sidecar of an output (``results.geojson`` -> ``results.geojson.jsonl``)."""
    out = Path(out)
    return out.with_name(out.name + ".jsonl")


def run_state_path(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".run.json")


def _start_run(settings: LocateSettings, *, resume: bool) -> dict[str, Any]:
    """Write (or, resuming, check) ``<out>.run.json``; returns the output's ``crossview`` metadata."""
    state_path, recorded = run_state_path(settings.out), settings.recorded()
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        before = state.get("settings", {})
        differing = sorted(key for key, value in recorded.items() if before.get(key) != value)
        if differing:
            raise LocateError(f"--resume: {state_path} was written with other settings ({', '.join(differing)})")
        return state
    sidecar_path(settings.out).unlink(missing_ok=True)
    state = {
        "version": __version__,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": recorded,
    }
    atomic_write_json(state_path, state)
    return state


# ---- signals -----------------------------------------------------------------------------------------------


class Interrupted(Exception):  # noqa: N818 (a signal, not an error)
    """SIGINT or SIGTERM arrived."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread (restored afterwards)."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ---- the run -----------------------------------------------------------------------------------------------


def run_locate(settings: LocateSettings, *, resume: bool = False, progress: bool = False) -> LocateSummary:
    """Locate every image of ``settings.inputs`` and write ``settings.out`` (module docstring).

    Returns:
        The run's summary (``interrupted`` is True when a signal stopped it; the output then holds the images
        done so far).

    Raises:
        CrossviewError: unusable model, map, index, source or settings, before any image is processed.
    """
    from crossview.export import append_jsonl, read_jsonl, results_format
    from crossview.inputs import discover_images
    from crossview.localize import build_localizer

    results_format(settings.out, settings.fmt)  # an unknown output format fails now, not after the run
    Path(settings.out).parent.mkdir(parents=True, exist_ok=True)
    images = discover_images(settings.inputs)
    localizer = build_localizer(settings, images)
    meta = _start_run(settings, resume=resume)
    sidecar = sidecar_path(settings.out)
    done = {r.image: r for r in read_jsonl(sidecar)} if resume and sidecar.is_file() else {}
    summary = LocateSummary(total=len(images), skipped=sum(image in done for image in images), out=settings.out)
    started = time.perf_counter()
    bar = _progress_bar(len(images), summary.skipped, enabled=progress)
    try:
        with _stop_on_signals():
            for result in localizer.run(images, skip=set(done)):
                append_jsonl(sidecar, result)
                done[result.image] = result
                _count(summary, result)
                bar.update(1)
    except Interrupted:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
        _write_output(settings, images, done, meta, localizer)
    return summary


def _count(summary: LocateSummary, result: Any) -> None:
    if result.status == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
        summary.failures.append(f"{result.image}: {result.error}")


def _write_output(settings: LocateSettings, images: Sequence[str], done: dict, meta: dict, localizer: Any) -> None:
    from crossview.export import write_results

    ordered = [done[image] for image in images if image in done]
    meta = {**meta, "model": localizer.model_name, "map": localizer.map_name}
    write_results(ordered, settings.out, fmt=settings.fmt, meta=meta, ellipses=settings.ellipses)


def _progress_bar(total: int, initial: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        disable=not (enabled and sys.stderr.isatty()),
        dynamic_ncols=True,
        desc="locate",
    )


# ---- command line ------------------------------------------------------------------------------------------

DESCRIPTION = """\
Geolocate ground-level photos (folders are searched recursively for jpg, png, tif, webp; HEIC with
pillow-heif) against a map: an index built by 'crossview index', a GeoTIFF (chips indexed on the fly around
the images' priors), or a tile source fetched through the cache. Writes GeoJSON (RFC 7946) or CSV with one
record per image: position, heading, uncertainty, score, or the reason it failed.

Priors: EXIF GPS (radius from GPSHPositioningError, else --prior-radius) and heading, or a CSV given with
--priors (columns image,lat,lon[,radius_m][,heading_deg]); without either, the whole map is searched.

examples:
  crossview locate photos/ --map town/map.tif --out results.geojson
  crossview locate photos/ --index area.idx --out results.csv --top-k 8 --ellipses
  crossview locate photos/ --source Esri.WorldImagery --prior-radius 150 --out results.geojson
  crossview locate photos/ --map town/map.tif --out results.geojson --resume
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="an index built by 'crossview index' (its map must be where it was)")
    where.add_argument("--map", help="a map GeoTIFF (aerial RGB or an OSM class raster from 'crossview fetch')")
    where.add_argument("--source", help="a tile source as for 'crossview fetch' (fetched around each prior)")
    parser.add_argument("--out", required=True, help="output file: .geojson/.json (GeoJSON) or .csv")
    parser.add_argument(
        "--format", dest="fmt", choices=("geojson", "csv"), help="output format (default: by extension)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint (default {DEFAULT_MODEL})")
    parser.add_argument("--camera", choices=("auto", "panorama", "pinhole"), default="auto", help="camera model")
    parser.add_argument("--hfov", dest="hfov_deg", type=float, help="pinhole horizontal FoV without EXIF (deg, 90)")
    parser.add_argument(
        "--camera-height", dest="camera_height_m", type=float, help="camera height above the ground, m (default 2)"
    )
    parser.add_argument("--prior-radius", dest="prior_radius_m", type=float, default=DEFAULT_PRIOR_RADIUS_M)
    parser.add_argument("--priors", help="CSV of per-image priors: image,lat,lon[,radius_m][,heading_deg]")
    parser.add_argument("--no-exif-prior", dest="exif_prior", action="store_false", help="ignore EXIF GPS/heading")
    parser.add_argument(
        "--top-k",
        dest="top_k",
        type=int,
        default=DEFAULT_TOP_K,
        help="retrieved chips per image (--search retrieval, or the discs searched densely without a small prior)",
    )
    parser.add_argument(
        "--search",
        choices=("dense", "retrieval"),
        default="dense",
        help="candidate poses: dense matching over the prior disc (default) or retrieved chip centres only",
    )
    parser.add_argument("--stride", dest="stride_m", type=float, help="chip spacing of on-the-fly indexes, m")
    parser.add_argument("--ellipses", action="store_true", help="GeoJSON: add ellipse and heading-line features")
    parser.add_argument("--resume", action="store_true", help="skip the images already in <out>.jsonl")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any image failed")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--workers", type=int, default=2, help="image decoding processes (0: in the main process)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=DEFAULT_BATCH, help="images per batch")
    parser.add_argument("--cache-dir", dest="cache_dir", default="tiles", help="tile cache for --source")
    parser.add_argument("--offline", action="store_true", help="--source: use cached tiles only")


def settings_from_args(args: argparse.Namespace) -> LocateSettings:
    """Validated settings from parsed options."""
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: must be at least 1")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: must be 0 or more")
    if not args.prior_radius_m > 0:
        raise ConfigError(f"--prior-radius {args.prior_radius_m:g}: must be positive metres")
    if args.camera_height_m is not None and not 0 < args.camera_height_m < 100:
        raise ConfigError(f"--camera-height {args.camera_height_m:g}: must be between 0 and 100 m")
    if args.device not in ("cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise ConfigError(f"--device {args.device}: must be cpu or cuda")
    return LocateSettings(
        inputs=tuple(args.inputs),
        out=args.out,
        model=args.model,
        index=args.index,
        map=args.map,
        source=args.source,
        camera=args.camera,
        hfov_deg=args.hfov_deg,
        camera_height_m=args.camera_height_m,
        prior_radius_m=args.prior_radius_m,
        priors=args.priors,
        exif_prior=args.exif_prior,
        top_k=args.top_k,
        search=args.search,
        fmt=args.fmt,
        ellipses=args.ellipses,
        device=args.device,
        workers=args.workers,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        offline=args.offline,
        stride_m=args.stride_m,
    )


def main(args: argparse.Namespace) -> int:
    """Run ``crossview locate``; prints the summary on stderr."""
    settings = settings_from_args(args)
    summary = run_locate(settings, resume=args.resume, progress=True)
    print(summary.line(), file=sys.stderr)
    for failure in summary.failures[:10]:
        print(f"  failed: {failure}", file=sys.stderr)
    if len(summary.failures) > 10:
        print(f"  ... and {len(summary.failures) - 10} more (see {settings.out})", file=sys.stderr)
    print(f"wrote {settings.out}")
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if args.strict and summary.failed else EXIT_OK


COMMAND = Command(name="locate", description=DESCRIPTION, add_arguments=add_arguments, run=main)
