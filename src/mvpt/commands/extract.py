"""`mvpt extract INPUT... --out STORE`: media -> per-clip features in a feature store."""

from __future__ import annotations

import sys

from mvpt.commands.common import add_json_option, emit_json, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="extract per-clip features of media files into a feature store",
        description="Extract per-clip video and audio features into a feature store. Resumes "
        "where a previous run stopped, skips items already in the store, records failed files "
        "with their reason and goes on. Exit 0 unless every attempted item failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="media files, folders, or manifest CSVs "
                   "(id,path[,group][,split][,start_s,end_s]; a group shares one split)")
    p.add_argument("--out", required=True, metavar="STORE", help="feature store folder")
    p.add_argument("--video-encoder", default=None, help="frame encoder name (see `mvpt encoders`)")
    p.add_argument("--audio-encoder", default=None, help="audio encoder name")
    p.add_argument("--video-weights", default=None,
                   help="local folder or hub id of the frame encoder's weights (CLIP)")
    p.add_argument("--audio-weights", default=None,
                   help="local folder or hub id of the audio encoder's weights (CLAP)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where the encoders run: auto (default) uses a GPU where the encoder's "
                   "runtime has one (a CUDA torch, onnxruntime-gpu), else the CPU; with --engine "
                   "ray and --gpus-per-worker each encoding worker sees its own GPUs")
    p.add_argument("--clip-seconds", type=positive_float, default=1.0,
                   help="clip length t in seconds (default 1.0)")
    p.add_argument("--max-clips", type=positive_int, default=30,
                   help="K: at most this many clips per window seen by a model (default 30)")
    p.add_argument("--frames-per-clip", type=positive_int, default=1,
                   help="frames sampled per clip and averaged (default 1: the clip's middle)")
    p.add_argument("--shard-size", type=positive_int, default=16,
                   help="items per shard, the unit of resumption (default 16)")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="processes decoding ahead of the encoders (default 2; 0: decode "
                   "in-process; with 2 or more each decodes on one thread)")
    p.add_argument("--decode-timeout", type=positive_float, default=600.0, metavar="SECONDS",
                   help="record a file as failed when decoding it takes longer (default 600)")
    add_engine_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def add_engine_options(p) -> None:
    """--engine/--address/--gpus-per-worker (also used by `mvpt index`)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the shards are extracted: this process (default) or a Ray "
                   "cluster (needs `pip install 'mvpt[ray]'`)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="with --engine ray: the cluster to join (`auto`: the one `ray start` "
                   "made on this machine); default: a private Ray instance for this run")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="N",
                   help="with --engine ray: GPUs per encoding worker; decoding then runs on "
                   "CPU workers (default 0: each worker decodes and encodes on one CPU)")


def engine_from_args(args):
    from mvpt.distributed import make_engine

    return make_engine(args.engine, address=args.address, gpus_per_worker=args.gpus_per_worker,
                       decode_workers=args.decode_workers,
                       decode_timeout_s=getattr(args, "decode_timeout", None))


def run(args) -> int:
    from mvpt.clips import ClipConfig
    from mvpt.extract import Extractor, extract

    clip = ClipConfig(clip_s=args.clip_seconds, max_clips=args.max_clips,
                      frames_per_clip=args.frames_per_clip)
    options = {"video": {"model": args.video_weights} if args.video_weights else {},
               "audio": {"model": args.audio_weights} if args.audio_weights else {}}
    if args.device != "auto":  # (an encoder's own default; a plug-in may take no device)
        for modality_options in options.values():
            modality_options["device"] = args.device
    extractor = Extractor(video_encoder=args.video_encoder, audio_encoder=args.audio_encoder,
                          clip=clip, encoder_options=options)
    summary = extract(args.inputs, args.out, extractor=extractor, shard_size=args.shard_size,
                      progress=not args.no_progress, engine=engine_from_args(args))
    to_stdout = emit_json(args, summary.to_dict())
    out = sys.stderr if to_stdout else sys.stdout
    for f in summary.failures:
        print(f"failed: {f['error']}", file=sys.stderr)
    print(f"extract: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped "
          f"(already in {args.out})", file=out)
    if summary.attempted and summary.done == 0:
        print(f"mvpt extract: error: every attempted item failed ({summary.failed})",
              file=sys.stderr)
        return 1
    return 0
