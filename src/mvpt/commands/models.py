"""`mvpt models`: the shipped architecture configs."""

from __future__ import annotations

from mvpt.commands.common import add_json_option, emit_json


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model architectures",
                       description="List the shipped architecture configs (models/configs/*.json): "
                       "name, kind and parameter count for the default encoders' feature "
                       "dimensions (video 1280, audio 1024). `mvpt train --model` takes a name "
                       "or a path to a JSON file of the same form.")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.models.factory import describe_models

    models = describe_models()
    if emit_json(args, models):
        return 0
    rows = [[m["name"], m["kind"], f"{m['parameters']:,}",
             ", ".join(f"{k}={v}" for k, v in m["config"].items() if k not in ("name", "kind"))]
            for m in models]
    header = ["name", "kind", "parameters", "config"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header[:-1])]
    for row in [header, *rows]:
        print("  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]))
    return 0
