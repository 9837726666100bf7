"""`mvpt synth --out DIR --n N --seed S`: synthetic music videos with shared hidden factors."""

from __future__ import annotations

from mvpt.commands.common import add_json_option, emit_json, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate synthetic music videos (mp4, H.264 + AAC)",
        description="Generate music videos whose picture and soundtrack share hidden factors "
        "that change over time (sections with their own tempo, timbre, brightness, colour, "
        "motion). Writes DIR/videos/*.mp4, DIR/manifest.csv and DIR/factors.json.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=positive_int, default=20, help="number of videos (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--min-seconds", type=positive_float, default=20.0,
                   help="shortest duration in seconds (default 20)")
    p.add_argument("--max-seconds", type=positive_float, default=40.0,
                   help="longest duration in seconds (default 40)")
    p.add_argument("--equal-length", action="store_true",
                   help="every video lasts --seconds (so length cannot pair video and music)")
    p.add_argument("--seconds", type=positive_float, default=30.0,
                   help="duration in seconds with --equal-length (default 30)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.data.synth import generate
    from mvpt.errors import UsageError

    if args.min_seconds > args.max_seconds:
        raise UsageError(f"--min-seconds ({args.min_seconds}) exceeds --max-seconds "
                         f"({args.max_seconds})")
    duration = args.seconds if args.equal_length else (args.min_seconds, args.max_seconds)
    result = generate(args.out, n=args.n, seed=args.seed, duration_s=duration,
                      equal_length=args.equal_length, progress=not args.no_progress)
    summary = {"out": str(args.out), "videos": len(result.ids),
               "manifest": str(result.manifest_path)}
    if not emit_json(args, summary):
        print(f"synth: wrote {len(result.ids)} videos and {result.manifest_path}")
    return 0
