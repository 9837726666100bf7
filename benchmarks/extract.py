"""Extraction throughput on realistic media, in media seconds per wall second.

Measures, on one long 640x360 30 fps video with textured, moving content (the Creative Commons
animation of Debian's openboard-common, looped to 12 minutes and cached; or --media FILE):
decode only (frames at 1 per clip + audio), each encoder alone on the decoded data, and the whole
extraction (decode in another process overlapping the encoders, and in-process for reference);
plus the frame encoder's achieved FLOP/s beside a plain matmul FLOP/s measured in the same run.
With --ray, the whole extraction also runs on the Ray engine (a private Ray instance with one
worker per CPU core, started before the clock; the workers' encoder loads are timed), beside the
local engine on the same files.

    python benchmarks/extract.py [--media FILE] [--minutes 12] [--piece-seconds 180] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_flops, realistic_video  # noqa: E402

from mvpt import media  # noqa: E402
from mvpt.clips import ClipConfig, clip_bounds, frame_times  # noqa: E402
from mvpt.encoders import get_encoder  # noqa: E402
from mvpt.extract import Extractor, extract  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def split_library(path: Path, *, piece_s: float) -> list[Path]:
    """``path`` cut into files of ``piece_s`` seconds (stream copy at keyframes), cached."""
    import av

    folder = path.parent / f"{path.stem}_pieces_{piece_s:g}s"
    done = folder / "DONE"
    if not done.exists():
        folder.mkdir(exist_ok=True)
        with av.open(str(path)) as src:
            vin, ain = src.streams.video[0], src.streams.audio[0]
            out = piece = None
            for packet in src.demux(vin, ain):
                if packet.dts is None:
                    continue
                t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                if packet.stream is vin and packet.is_keyframe and (out is None or
                                                                    t >= piece * piece_s + piece_s):
                    if out is not None:
                        out.close()
                    piece = 0 if out is None else piece + 1
                    out = av.open(str(folder / f"piece_{piece:03d}.mp4"), "w")
                    streams = {vin: out.add_stream_from_template(vin),
                               ain: out.add_stream_from_template(ain)}
                    offsets = {}
                if out is None:
                    continue
                offsets.setdefault(packet.stream, packet.dts)
                packet.pts -= offsets[packet.stream]
                packet.dts -= offsets[packet.stream]
                packet.stream = streams[packet.stream]
                out.mux(packet)
            if out is not None:
                out.close()
        done.write_text("ok\n")
    return sorted(folder.glob("piece_*.mp4"))


def ray_extraction(library: list[Path], lib_s: float, extractor: Extractor) -> dict:
    """The whole extraction on a private Ray instance, one worker per CPU core."""
    import logging

    from mvpt.distributed import RayEngine
    from mvpt.distributed.ray_engine import LOOPBACK_ONLY_ENV

    os.environ.update(LOOPBACK_ONLY_ENV)  # a private Ray on 127.0.0.1 only
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=200_000_000,
             logging_level=logging.WARNING, log_to_driver=False)
    start_s = time.perf_counter() - t0
    try:
        engine = RayEngine()
        with tempfile.TemporaryDirectory() as tmp:
            _, t_all = timed(lambda: extract(library, Path(tmp) / "store", extractor=extractor,
                                             shard_size=1, engine=engine, progress=False))
    finally:
        ray.shutdown()
    # Like the local engine's (built before its clock), the workers' encoder loads are left out
    # of the throughput; they are reported beside it.
    return {"whole_extraction_x_ray": lib_s / (t_all - engine.startup_s),
            "whole_extraction_s_ray": t_all, "ray_workers": engine.workers,
            "ray_start_s": start_s, "ray_workers_start_s": engine.startup_s,
            "whole_extraction_x_ray_with_worker_start": lib_s / t_all}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, help="a long video to use instead of the Debian one")
    ap.add_argument("--minutes", type=float, default=12.0, help="length of the looped video")
    ap.add_argument("--piece-seconds", type=float, default=180.0,
                    help="length of the files of the whole extraction (default 180)")
    ap.add_argument("--ray", action="store_true", help="also time the Ray engine")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    path = args.media or realistic_video(minutes=args.minutes)
    info = media.probe(path)
    dur = info.duration_s
    print(f"media: {path} ({dur:.0f} s, {info.width}x{info.height}, {info.fps:.1f} fps), "
          f"{os.cpu_count()} CPU cores")
    video_enc, audio_enc = get_encoder("efficientnet-lite0"), get_encoder("yamnet")
    bounds = clip_bounds(dur, ClipConfig().clip_s)
    figures = {"media_s": dur}

    frames, t_frames = timed(lambda: media.read_frames(path, frame_times(bounds), size=(224, 224)))
    wave, t_audio = timed(lambda: media.read_audio(path, sample_rate_hz=16000,
                                                   end_s=float(bounds[-1, 1])))
    figures["decode_frames_x"] = dur / t_frames
    figures["decode_audio_x"] = dur / t_audio
    figures["decode_only_x"] = dur / (t_frames + t_audio)

    _, t_venc = timed(lambda: video_enc.encode_frames(frames))
    _, t_aenc = timed(lambda: audio_enc.encode_clips(wave, bounds))
    figures["frame_encoder_x"] = dur / t_venc
    figures["audio_encoder_x"] = dur / t_aenc
    figures["frame_encoder_frames_per_s"] = len(frames) / t_venc
    achieved = video_enc.flops_per_frame() * len(frames) / t_venc
    reference = matmul_flops()
    figures["frame_encoder_gflops"] = achieved / 1e9
    figures["matmul_gflops"] = reference / 1e9
    figures["frame_encoder_vs_matmul"] = achieved / reference

    # The whole extraction runs over a library of music-video-length files (the same minutes cut
    # into 3-minute files), so that decoding one file overlaps encoding the previous one. One
    # file per shard, so that the Ray engine has a unit per file to spread.
    extractor = Extractor(video_encoder=video_enc, audio_encoder=audio_enc)
    library = split_library(path, piece_s=args.piece_seconds)
    lib_s = sum(media.probe(p).duration_s for p in library)
    for workers in (1, 0):
        with tempfile.TemporaryDirectory() as tmp:
            _, t_all = timed(lambda: extract(library, Path(tmp) / "store", extractor=extractor,
                                             decode_workers=workers, shard_size=1,
                                             progress=False))
        figures[f"whole_extraction_x_decode_workers_{workers}"] = lib_s / t_all
        figures[f"whole_extraction_s_decode_workers_{workers}"] = t_all
    if args.ray:
        figures.update(ray_extraction(library, lib_s, extractor))
        figures["ray_vs_local"] = (figures["whole_extraction_x_ray"]
                                   / figures["whole_extraction_x_decode_workers_1"])

    print(f"{'stage':44s} {'media s / wall s':>16s}")
    for key in ("decode_frames_x", "decode_audio_x", "decode_only_x", "frame_encoder_x",
                "audio_encoder_x", "whole_extraction_x_decode_workers_1",
                "whole_extraction_x_decode_workers_0", "whole_extraction_x_ray"):
        if key in figures:
            print(f"{key:44s} {figures[key]:16.1f}")
    if args.ray:
        print(f"Ray engine ({figures['ray_workers']} workers; Ray started in "
              f"{figures['ray_start_s']:.1f} s and the workers' encoders loaded in "
              f"{figures['ray_workers_start_s']:.1f} s, both outside the throughput): "
              f"{100 * figures['ray_vs_local']:.0f} % of the local engine's throughput on the same "
              f"{len(library)} files ({figures['whole_extraction_x_ray_with_worker_start']:.1f} "
              f"media s / wall s counting the workers' start)")
    print(f"frame encoder: {figures['frame_encoder_frames_per_s']:.1f} frames/s, "
          f"{figures['frame_encoder_gflops']:.1f} GFLOP/s achieved vs plain matmul "
          f"{figures['matmul_gflops']:.1f} GFLOP/s (ratio {figures['frame_encoder_vs_matmul']:.2f})")
    shares = {"decode": t_frames + t_audio, "frame encoder": t_venc, "audio encoder": t_aenc}
    total = sum(shares.values())
    print("share of sequential time: " + ", ".join(f"{k} {100 * v / total:.0f}%"
                                                    for k, v in shares.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
