"""`mvpt demo`: the whole pipeline on embedded default data."""

from __future__ import annotations

from mvpt.commands.common import add_json_option, emit_json, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on generated demo data (a few minutes)",
        description="Generate synthetic music videos, extract features with the offline "
        "encoders, train MVPt and the MLP baseline, fit the linear baseline, print their "
        "evaluation table, index the held-out music, recommend music for held-out videos and "
        "write a preview. Re-running reuses finished stages.")
    p.add_argument("--out", default="mvpt-demo", help="output folder (default ./mvpt-demo)")
    p.add_argument("--videos", type=positive_int, default=None,
                   help="number of synthetic videos (default 160)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs for MVPt and the MLP (default 60)")
    p.add_argument("--tiny", action="store_true", help="a much smaller demo (for tests)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from mvpt.demo import DemoSettings, run_demo

    settings = DemoSettings.tiny() if args.tiny else DemoSettings()
    if args.videos:
        settings = replace(settings, n_videos=args.videos)
    if args.epochs:
        settings = replace(settings, epochs=args.epochs)
    quiet = args.json == "-"
    summary = run_demo(args.out, settings, progress=not args.no_progress and not quiet,
                       quiet=quiet)
    emit_json(args, summary)
    return 0
