"""Helpers shared by the CLI commands: JSON output and argument types."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="FILE",
        help="write machine-readable JSON to FILE (to stdout when FILE is omitted)",
    )


def emit_json(args: argparse.Namespace, obj) -> bool:
    """Write ``obj`` as JSON where ``--json`` asked; returns True if it went to stdout (so the
    caller should print nothing else there)."""
    target = getattr(args, "json", None)
    if target is None:
        return False
    text = json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return True
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(text)
    return False


def _default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
