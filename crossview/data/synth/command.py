"""``crossview synth``: generate a synthetic VIGOR-style world (see :mod:`crossview.data.synth.world`)."""

from __future__ import annotations

import argparse
import re
import sys

from crossview.cli import Command
from crossview.data.synth.places import PLACES
from crossview.errors import ConfigError

_SIZE_RE = re.compile(r"(\d+)[xX](\d+)")


def parse_image_size(text: str, option: str) -> tuple[int, int]:
    """``"WxH"`` -> (H, W).

    Raises:
        ConfigError: the text is not two positive integers joined by 'x'.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{option} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1024x512")
    return int(match[2]), int(match[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="the world's folder (must not exist or be empty)")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed (default 0): same seed, same bytes"
    )
    towns = parser.add_mutually_exclusive_group()
    towns.add_argument(
        "--cities", type=int, metavar="K", help=f"number of towns, 1-{len(PLACES)} (default 1), taken in this order: "
        + ", ".join(p.name for p in PLACES),
    )  # fmt: skip
    towns.add_argument("--city", action="append", metavar="NAME", help="a town by name (repeatable)")
    parser.add_argument(
        "--size-m", type=float, default=300.0, metavar="M",
        help="side of the square of each town where panoramas are placed, metres (default 300; the map adds a "
        "margin of 640 zoom-20 pixels for the aerial tiles)",
    )  # fmt: skip
    parser.add_argument("--panoramas", type=int, default=100, metavar="N", help="panoramas per town (default 100)")
    parser.add_argument(
        "--pinhole-per-pano", type=int, default=0, metavar="P",
        help="pinhole views per panorama: random heading, horizontal FoV 60-110 deg (default 0)",
    )  # fmt: skip
    parser.add_argument("--pano-size", default="1024x512", metavar="WxH", help="panorama size (default 1024x512)")
    parser.add_argument("--pinhole-size", default="640x480", metavar="WxH", help="pinhole size (default 640x480)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists and is not empty")
    parser.add_argument(
        "--osm-tiles-only", action="store_true",
        help="generate nothing: add the OSM class tiles <City>/osm/ to the existing world in --out (its towns' "
        "satellite/ tiles and osm.osm; with --city, only those towns; --overwrite rewrites existing tiles)",
    )  # fmt: skip


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(message: str) -> None:
        print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    return show


def _add_osm_tiles(args: argparse.Namespace) -> int:
    from crossview.data.synth.osmtiles import add_osm_tiles

    progress = _progress_printer()
    summaries = add_osm_tiles(args.out, cities=args.city, overwrite=args.overwrite, progress=progress)
    if progress is not None:
        print(file=sys.stderr)
    for summary in summaries:
        print(f"{summary['city']}: {summary['written']} OSM tiles written, {summary['kept']} kept")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.osm_tiles_only:
        return _add_osm_tiles(args)
    from crossview.data.synth.world import generate_world  # heavy imports only when the command runs

    cities = args.city if args.city else (args.cities if args.cities is not None else 1)
    progress = _progress_printer()
    summary = generate_world(
        args.out,
        seed=args.seed,
        cities=cities,
        size_m=args.size_m,
        panoramas=args.panoramas,
        pinhole_per_pano=args.pinhole_per_pano,
        pano_size=parse_image_size(args.pano_size, "--pano-size"),
        pinhole_size=parse_image_size(args.pinhole_size, "--pinhole-size"),
        overwrite=args.overwrite,
        progress=progress,
    )
    if progress is not None:
        print(file=sys.stderr)
    for town in summary["towns"]:
        height, width = town["map_size_px"]
        print(
            f"{town['name']}: {town['panoramas']} panoramas, {town['pinholes']} pinhole views, "
            f"{town['tiles']} aerial tiles, map {width}x{height} px ({town['seconds']:.1f} s)"
        )
    print(f"wrote {summary['out']}")
    return 0


COMMAND = Command(
    name="synth",
    description=(
        "Generate a synthetic world in the VIGOR layout, deterministically from --seed: for each town (real\n"
        "latitudes and longitudes on both hemispheres) an aerial orthophoto <City>/map.tif (EPSG:3857, zoom-20\n"
        "pixels on the global grid), its vectors <City>/osm.osm (OSM XML), north-aligned 360-degree panoramas\n"
        "<City>/panorama/<id>,<lat>,<lon>,.jpg and optional pinhole views ray cast from the same 2.5-D scene,\n"
        "their poses <City>/poses.csv, VIGOR's aerial tiles and split files, and the OSM class tile of every\n"
        "aerial tile <City>/osm/<tile name> (drawn from osm.osm; --osm-tiles-only adds them to an older world).\n\n"
        f"towns: {', '.join(p.name for p in PLACES)}\n\n"
        "examples:\n"
        "  crossview synth --out world\n"
        "  crossview synth --out world --seed 7 --cities 4 --size-m 400 --panoramas 300\n"
        "  crossview synth --out tiny --city Bergen --size-m 80 --panoramas 10 --pano-size 512x256\n"
        "  crossview synth --out world --pinhole-per-pano 2 --pinhole-size 640x480 --overwrite\n"
        "  crossview synth --out old-world --osm-tiles-only\n"
    ),
    add_arguments=add_arguments,
    run=main,
)
