"""`mvpt study make|analyze`: the human preference study of appendix C.2."""

from __future__ import annotations

from pathlib import Path

from mvpt.commands.common import add_json_option, emit_json, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="human preference study kit (make pages, analyze answers)",
                       description="Blind pairwise study of our model against a baseline.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = actions.add_parser(
        "make", help="write one static study page per participant and the answer key",
        description="OURS and BASELINE are JSON files {\"video_to_music\": {query: top1}, "
        "\"music_to_video\": {query: top1}}; ids become media paths through the templates.")
    make.add_argument("ours", metavar="OURS")
    make.add_argument("baseline", metavar="BASELINE")
    make.add_argument("--out", required=True, help="output folder (pages + key.json)")
    make.add_argument("--participants", type=positive_int, required=True)
    make.add_argument("--per-task", type=positive_int, default=20,
                      help="pairs per task per participant (default 20)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--video-path", default="media/{id}.mp4",
                      help="video path template relative to --out (default media/{id}.mp4)")
    make.add_argument("--audio-path", default="media/{id}.mp4",
                      help="audio path template relative to --out (default media/{id}.mp4)")
    make.add_argument("--name", default="mvpt-study", help="study name written in the answers")
    make.set_defaults(func=run_make)
    recs = actions.add_parser(
        "recs", help="write a run's top-1 recommendations per held-out query (input of make)",
        description="For every track of a store split, the other modality's most similar track "
        "(the query's own pair left out), as the JSON file `mvpt study make` reads.")
    recs.add_argument("run", metavar="RUN")
    recs.add_argument("store", metavar="STORE")
    recs.add_argument("--out", required=True, help="JSON file to write")
    recs.add_argument("--split", default="test")
    recs.add_argument("--which", choices=("best", "last"), default="best")
    recs.add_argument("--include-own", action="store_true",
                      help="allow the query's own pair as its recommendation")
    recs.set_defaults(func=run_recs)
    ana = actions.add_parser("analyze", help="count preferences and run the binomial test")
    ana.add_argument("responses", metavar="RESPONSES", nargs="+", help="downloaded answer files")
    ana.add_argument("--key", required=True, help="key.json written by `mvpt study make`")
    ana.add_argument("--out", default=None, help="also write study.json/.md/.png here")
    add_json_option(ana)
    ana.set_defaults(func=run_analyze)


def run_make(args) -> int:
    from mvpt.analysis.study import make_study

    key = make_study(args.ours, args.baseline, args.out, participants=args.participants,
                     n_per_task=args.per_task, seed=args.seed, video_path=args.video_path,
                     audio_path=args.audio_path, study=args.name)
    print(f"{len(key['pairs'])} pairs for {args.participants} participants in {args.out} "
          f"(open {Path(args.out) / 'index.html'}; keep key.json away from participants)")
    return 0


def run_recs(args) -> int:
    from mvpt.analysis.study import top1_recommendations
    from mvpt.fileio import atomic_write_json

    recs = top1_recommendations(args.run, args.store, split=args.split, which=args.which,
                                exclude_own=not args.include_own)
    atomic_write_json(args.out, recs)
    print(f"top-1 of {len(recs['video_to_music'])} queries per task written to {args.out}")
    return 0


def run_analyze(args) -> int:
    from mvpt.analysis.study import (
        analyze_responses,
        summary_markdown,
        write_study_report,
    )

    result = analyze_responses(args.responses, key=args.key)
    if args.out:
        write_study_report(result, args.out)
    if not emit_json(args, result):
        print(summary_markdown(result))
    return 0
