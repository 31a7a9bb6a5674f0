"""``crossview index``: encode a map's chips with a model's aerial branch into a searchable chip index file.

The heavy work lives in :mod:`crossview.retrieval`; this module parses options, checks an existing output and
reports. An existing ``--out`` is never replaced silently: if it was built from the same map and model with the
same settings the command says so and stops; otherwise it fails (another model or map: exit 2, an unreadable
file: exit 1) unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from crossview.cli import Command
from crossview.errors import ConfigError

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", required=True, metavar="MAP.tif", help="map raster (GeoTIFF, any CRS, RGB)")
    parser.add_argument("--model", required=True, metavar="NAME|CKPT", help="registry name or checkpoint file")
    parser.add_argument("--out", required=True, metavar="AREA.idx", help="index file to write")
    parser.add_argument(
        "--stride", type=float, default=None, metavar="M", help="distance between chip centres, metres (default 10)"
    )
    parser.add_argument(
        "--index-type",
        choices=INDEX_TYPES,
        default="auto",
        help="FAISS index: exact flat, HNSW or IVF; auto = flat up to 50,000 chips, HNSW above (default auto)",
    )
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="chips per forward pass (default 64)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")
    parser.add_argument(
        "--chip-extent-m",
        type=float,
        metavar="M",
        help="ground side of a chip, metres (default: the model's; VIGOR tile footprint at the map's latitude)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _check_args(args: argparse.Namespace) -> None:
    if args.stride is not None and not (math.isfinite(args.stride) and args.stride > 0):
        raise ConfigError(f"--stride {args.stride}: must be a number of metres > 0")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.chip_extent_m is not None and not (math.isfinite(args.chip_extent_m) and args.chip_extent_m > 0):
        raise ConfigError(f"--chip-extent-m {args.chip_extent_m}: must be a number of metres > 0")
    if not Path(args.map).is_file():
        raise ConfigError(f"--map {args.map}: file not found")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder, expected an index file path (area.idx)")


def _select_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available")
    return requested


def _check_existing(args: argparse.Namespace, out: Path, checkpoint: Any, raster: Any) -> None:
    """Pass when ``out`` already holds this map's index for this model with these settings.

    Raises:
        IndexFileError: ``out`` is not a readable index.
        IndexMismatchError: ``out`` belongs to another model or map.
        ConfigError: same model and map, other settings.
    """
    from crossview.retrieval import ChipIndex, IndexFileError, IndexMismatchError, map_fingerprint
    from crossview.retrieval.chips import DEFAULT_STRIDE_M

    try:
        index = ChipIndex.load(out, model_sha256=checkpoint.sha256, map_fingerprint=map_fingerprint(raster))
    except (IndexFileError, IndexMismatchError) as error:
        raise type(error)(f"{error} (or pass --overwrite to replace it)") from None
    wanted = {
        "stride_m": args.stride if args.stride is not None else DEFAULT_STRIDE_M,
        "extent_m": args.chip_extent_m,
        "index type": None if args.index_type == "auto" else args.index_type,
    }
    stored = {"stride_m": index.meta["chips"].get("stride_m"), "extent_m": index.geometry.extent_m}
    stored["index type"] = index.index_type
    differing = [k for k, v in wanted.items() if v is not None and not _same(v, stored[k])]
    if differing:
        settings = ", ".join(f"{k} {stored[k]}" for k in differing)
        raise ConfigError(f"--out {out} exists with other settings ({settings}): pass --overwrite to rebuild it")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def run(args: argparse.Namespace) -> int:
    """``crossview index``: build, save and summarise the index."""
    from crossview.checkpoints import load_checkpoint
    from crossview.maps.raster import GeoRaster
    from crossview.retrieval import build_index
    from crossview.retrieval.chips import DEFAULT_STRIDE_M

    _check_args(args)
    out = Path(args.out)
    device = _select_device(args.device)
    checkpoint = load_checkpoint(args.model)
    raster = GeoRaster.read(args.map)
    if out.exists() and not args.overwrite:
        _check_existing(args, out, checkpoint, raster)
        print(f"{out} is up to date (same map, model and settings); pass --overwrite to rebuild it")
        return 0
    stride_m = args.stride if args.stride is not None else DEFAULT_STRIDE_M
    index = build_index(
        raster,
        checkpoint,
        stride_m=stride_m,
        index_type=args.index_type,
        batch_size=args.batch_size,
        device=device,
        chip_extent_m=args.chip_extent_m,
    )
    index.meta["map"]["path"] = str(args.map)
    out.parent.mkdir(parents=True, exist_ok=True)
    index.save(out)
    print(_summary(index, out))
    return 0


def _summary(index: Any, out: Path) -> str:
    chips, build, model = index.meta["chips"], index.meta["build"], index.meta["model"]
    size_mb = out.stat().st_size / 1e6
    raster = index.feature_raster
    features = (
        f", the map's dense-search features ({raster.size}x{raster.size} cells of {raster.cell_m:.2f} m) in "
        f"{build.get('feature_raster_seconds', 0.0):.1f} s"
        if raster is not None
        else ""
    )
    return (
        f"indexed {len(index)} chips ({chips['size_px']} px over {chips['extent_m']:.1f} m, every "
        f"{chips['stride_m']:g} m, frame EPSG:{chips['frame_epsg']}) with {model['name']} in "
        f"{build['encode_seconds']:.1f} s ({build['chips_per_s']:.1f} chips/s){features}; {index.index_type} "
        f"index, wrote {out} ({size_mb:.1f} MB)"
    )


DESCRIPTION = """\
Cut chips on a square lattice over a map's valid area (true-north-up, the model's input size over its ground
footprint: a 640-px zoom-20 VIGOR tile at the map's latitude unless the model says otherwise), encode them with
the model's aerial branch and write a FAISS index of their descriptors with the chip centres (UTM of the map's
centre and WGS84), the map's fingerprint and the model's SHA-256, so that 'crossview locate --index' refuses a
map or model the index was not built from. A map of up to 16 km^2 also gets its finest refinement features
(the dense search's map, 4 to 16 MB per km^2 from the equator to 60 degrees of latitude): 'locate --index' then
encodes no map, and reads the map file only for retrieval (priors wider than 250 m, no prior on a large map,
--search retrieval). An existing --out is kept when it is up to date and never replaced without --overwrite.

examples:
  crossview index --map world/Berlin/map.tif --model synth-v1 --out berlin.idx
  crossview index --map area.tif --model runs/vigor/last.pt --out area.idx --stride 5 --device cuda
  crossview index --map city.tif --model synth-v1 --out city.idx --index-type hnsw --overwrite
"""

COMMAND = Command(name="index", description=DESCRIPTION, add_arguments=add_arguments, run=run)
