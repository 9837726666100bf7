"""`mvpt encoders`: the registered per-clip encoders."""

from __future__ import annotations

from mvpt.commands.common import add_json_option, emit_json


def add_parser(sub) -> None:
    p = sub.add_parser("encoders", help="list the per-clip encoders",
                       description="List the registered encoders: name, modality, output "
                       "dimension, version, licence as its package states it, weights present.")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.encoders import list_encoders

    infos = [i.to_dict() for i in list_encoders()]
    if emit_json(args, infos):
        return 0
    cols = ["name", "modality", "dim", "version", "weights_present", "licence"]
    table = [[str(i[c]) for c in cols] for i in infos]
    widths = [max(len(c), *(len(r[k]) for r in table)) for k, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    return 0
