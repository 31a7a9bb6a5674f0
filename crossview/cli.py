"""Command-line entry point: ``crossview <command> [options]``.

Each command lives in the module that does its work and registers itself here through a ``Command``: a name,
a one-line help, a function adding its options to an argparse parser and a function running it. Errors derived
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
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# Modules that define a module-level ``COMMAND: Command``; imported lazily so `crossview --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "crossview.fetch",
    "crossview.data.synth.command",
    "crossview.train",
    "crossview.evaluate",
    "crossview.bench",
)


def _load_commands() -> list[Command]:
    return [importlib.import_module(name).COMMAND for name in COMMAND_MODULES]


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="crossview",
        description="Geolocate ground-level photos (latitude, longitude, heading) against overhead maps.",
        epilog="Run 'crossview COMMAND --help' for the options and examples of a command.",
    )
    parser.add_argument("--version", action="version", version=f"crossview {__version__}")
    parser.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands if commands is not None else _load_commands():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--verbose", action="store_true", help="print full tracebacks on errors")
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(_glue_coordinate_values(sys.argv[1:] if argv is None else argv))
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
