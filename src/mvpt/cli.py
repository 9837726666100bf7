"""The `mvpt` command line: parses, calls the Python API, prints.

Each command family lives in :mod:`mvpt.commands` as a module with ``add_parser(subparsers)``;
the parser it adds sets ``func(args) -> int``. Exit codes: 0 success, 1 failure (one line on stderr
saying what and where), 2 bad usage. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mvpt import __version__
from mvpt.errors import MvptError, UsageError

# Order shown in --help.
COMMAND_MODULES = [
    "demo", "synth", "extract", "encoders", "models", "train", "eval", "index", "recommend", "serve",
    "data",
    "analyze", "study", "store",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvpt",
        description="Recommend music for a video and video for music (MVPt, CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"mvpt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mvpt.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mvpt.commands.{name}":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"mvpt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MvptError as exc:
        if args.debug:
            raise
        print(f"mvpt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mvpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
