"""Command-line entry point: ``crossview <command> [options]``.

Each command lives in the module that does its work and exposes a ``Command`` there: a function adding its
options to an argparse parser and a function running it. :data:`COMMANDS` below names each command's module and
its one-line help, so that ``crossview --help`` and ``--version`` import nothing heavy and a run imports only the
module of its own command (torch, GDAL and osmnx take seconds to import). Errors derived
from :class:`~crossview.errors.CrossviewError` print as one line on stderr with exit code 2 (a traceback only with
``--verbose``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crossview import __version__
from crossview.errors import CrossviewError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args) -> exit code`` does the work."""

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# name -> (module defining ``COMMAND``, one-line help shown by ``crossview --help``), in listing order.
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("crossview.fetch", "make a metric map raster of an area from XYZ tiles, a GeoTIFF or OpenStreetMap"),
    "synth": (
        "crossview.data.synth.command",
        "generate a synthetic VIGOR-style world (towns, aerial maps, OSM, ray-cast panoramas)",
    ),
    "train": ("crossview.train", "train a cross-view encoder on a VIGOR-layout dataset (real or synthetic)"),
    "eval": (
        "crossview.evaluate",
        "evaluate a model's retrieval on a VIGOR-layout dataset (recall@k, hit rate, metre errors)",
    ),
    "index": ("crossview.index", "encode a map's chips with a model into a searchable chip index (FAISS)"),
    "bench": ("crossview.bench", "measure the throughput of crossview's stages on this machine"),
    "locate": (
        "crossview.locate",
        "geolocate photos (position, heading, uncertainty) against a map, index or tile source; GeoJSON/CSV out",
    ),
    "demo": ("crossview.demo", "run the whole pipeline offline on a synthetic town with the shipped model"),
    "plot": ("crossview.plot", "plot located images (heading arrows, uncertainty ellipses, truth) over their map"),
}


def load_command(name: str) -> Command:
    """Import the module of command ``name`` and return its ``COMMAND``."""
    return importlib.import_module(COMMANDS[name][0]).COMMAND


def _selected_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first token that is not an option), if it is one of :data:`COMMANDS`."""
    first = next((token for token in argv if not token.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(commands: Sequence[Command] | None = None, *, selected: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command.

    Args:
        commands: build exactly these commands in full (tests); by default every entry of :data:`COMMANDS`.
        selected: with the default commands, the one whose module is imported and whose options are added;
            the others get their one-line help only.
    """
    parser = argparse.ArgumentParser(
        prog="crossview",
        description="Geolocate ground-level photos (latitude, longitude, heading) against overhead maps.",
        epilog="Run 'crossview COMMAND --help' for the options and examples of a command.",
    )
    parser.add_argument("--version", action="version", version=f"crossview {__version__}")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if commands is not None:
        for command in commands:
            _add_command(subparsers, command, help_text=COMMANDS.get(command.name, ("", ""))[1])
    else:
        for name, (_, help_text) in COMMANDS.items():
            if name == selected:
                _add_command(subparsers, load_command(name), help_text=help_text)
            else:
                subparsers.add_parser(name, help=help_text)
    return parser


# Options whose values may start with '-' (western longitudes, southern latitudes): argparse would take
# "--bbox -106,30,-100,45" for two options, so such values are glued to their option ("--bbox=-106,...").
COORDINATE_OPTIONS = frozenset({"--bbox", "--center"})


def _glue_coordinate_values(argv: Sequence[str]) -> list[str]:
    glued: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in COORDINATE_OPTIONS:
            value = next(tokens, None)
            glued.append(token if value is None else f"{token}={value}")
        else:
            glued.append(token)
    return glued


def _add_command(subparsers, command: Command, *, help_text: str) -> None:
    sub = subparsers.add_parser(
        command.name,
        help=help_text,
        description=command.description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
    command.add_arguments(sub)
    sub.set_defaults(_run=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit code."""
    argv = _glue_coordinate_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser(selected=_selected_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or EXIT_OK)
    except CrossviewError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"crossview {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(error, OSError) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"crossview {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
