"""Extraction throughput on realistic media, in media seconds per wall second, lever by lever.

Measures, on one long 640x360 30 fps video with textured, moving content (the Creative Commons
animation of Debian's openboard-common, looped to 12 minutes and encoded by x264 with the frame
types it chooses, B-frames included, as for any upload; --no-bframes: the P-frames-only encode
used before 2026-12-01; or --media FILE):
decode only (frames at 1 per clip + audio; with FFmpeg's default threading and single-threaded),
how many frames are non-reference and the frame reader with and without skipping the unreturned
ones (on this video, and on its first minute re-encoded with the B-frames x264 chooses), each
encoder alone on the
decoded data (the frame encoder on PyTorch and on onnxruntime, and their features compared on
these real frames), and the whole extraction once per lever (LEVERS: the PyTorch frame encoder
with one decode process (before), onnxruntime with one decode process on FFmpeg's threads and on
one thread, two single-threaded decode processes (the default), spinning onnxruntime threads,
decoding in-process (no overlap)); plus the frame encoder's achieved FLOP/s beside a
plain matmul FLOP/s measured in the same run. With --int8, int8 builds of the frame encoder
(onnxruntime static quantization, INT8_SETTINGS, calibrated on other frames of the same video or
on generated frames) are timed and their features compared with float32 on the same frames and
on crops of Debian's wallpapers (real pictures of another kind).
With --openvino (needs the openvino package, not a dependency of mvpt), the same ONNX export of
the frame encoder runs on OpenVINO in float32 and in bfloat16, timed and compared with
onnxruntime's features on the same frames.
The whole extraction runs over a library of music-video-length files: the video cut into files
of --piece-seconds (3 minutes), each listed --copies times under another name (3: 12 files), so
that the figure is the engine's steady throughput rather than the start and end of a 4-file
pipeline (with one copy, decoding the first file and encoding the last overlap with nothing).
With --ray, the whole extraction also runs on the Ray engine (a private Ray instance with one
worker per CPU core, started before the clock; the workers' encoder loads are timed), beside the
local engine on the same files, in every round right after the local levers (--repeat N: Ray's
share is printed round by round and fastest against fastest). --levers KEY... times only those
levers of the local engine (the default configuration, ort, always runs).

    python benchmarks/extract.py [--media FILE | --no-bframes] [--minutes 12]
                                 [--piece-seconds 180] [--copies 3] [--ray] [--int8]
                                 [--openvino] [--repeat N] [--levers KEY...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, debian_pictures, matmul_flops, realistic_video  # noqa: E402

import numpy as np  # noqa: E402

from mvpt import media  # noqa: E402
from mvpt.encoders import onnx_cache  # noqa: E402
from mvpt.clips import ClipConfig, clip_bounds, frame_times  # noqa: E402
from mvpt.encoders import get_encoder  # noqa: E402
from mvpt.extract import DEFAULT_DECODE_WORKERS, Extractor, extract  # noqa: E402


def cpu_s() -> float:
    """CPU seconds used so far by this process (all its threads) and its children that ended
    (the decode workers, once their pool has shut down)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn):
    """(fn(), wall seconds, CPU seconds)."""
    t0, c0 = time.perf_counter(), cpu_s()
    out = fn()
    return out, time.perf_counter() - t0, cpu_s() - c0


def record(figures: dict, key: str, media_s: float, wall_s: float, cpu_s_: float) -> None:
    """Media seconds per wall second and per CPU second of one stage."""
    figures[f"{key}_x"] = media_s / wall_s
    figures[f"{key}_cpu_x"] = media_s / cpu_s_


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


def library_copies(pieces: list[Path], copies: int) -> list[Path]:
    """``pieces`` listed ``copies`` times, each copy a hard link under another name (another item
    id; the same bytes), in a folder beside them."""
    if copies <= 1:
        return pieces
    folder = pieces[0].parent.with_name(pieces[0].parent.name + f"_x{copies}")
    folder.mkdir(exist_ok=True)
    out = []
    for k in range(copies):
        for piece in pieces:
            link = folder / f"{piece.stem}_copy{k}{piece.suffix}"
            if not link.exists():
                try:
                    os.link(piece, link)
                except OSError:
                    import shutil

                    shutil.copyfile(piece, link)
            out.append(link)
    return out


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
            _, t_all, _ = timed(lambda: extract(library, Path(tmp) / "store", extractor=extractor,
                                                shard_size=1, engine=engine, progress=False))
    finally:
        ray.shutdown()
    # Like the local engine's (built before its clock), the workers' encoder loads are left out
    # of the throughput; they are reported beside it.
    return {"whole_extraction_x_ray": lib_s / (t_all - engine.startup_s),
            "whole_extraction_s_ray": t_all, "ray_workers": engine.workers,
            "ray_start_s": start_s, "ray_workers_start_s": engine.startup_s,
            "whole_extraction_x_ray_with_worker_start": lib_s / t_all}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def nonref_share(path: Path, *, seconds: float = 60.0) -> tuple[int, int]:
    """(frames decoded with non-reference frames skipped, frames in all) over the first
    ``seconds``: what FFmpeg's skip_frame=NONREF can leave undecoded."""
    import av

    counts = []
    for skip in ("DEFAULT", "NONREF"):
        n = 0
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            video.codec_context.skip_frame = skip
            for frame in container.decode(video):
                if frame.time >= seconds:
                    break
                n += 1
        counts.append(n)
    return counts[1], counts[0]


def bframes_copy(path: Path, *, seconds: float = 60.0) -> Path:
    """The first ``seconds`` of ``path``'s video re-encoded as x264 encodes by default, with the
    B-frames it chooses (the benchmark video has none: it is made from decoded frames, which
    carry their picture type, P, into the encoder), cached."""
    import av

    target = CACHE / f"{path.stem}_bframes_{seconds:g}s.mp4"
    if target.exists():
        return target
    tmp = target.with_suffix(".part.mp4")
    with av.open(str(path)) as src, av.open(str(tmp), "w") as out:
        vin = src.streams.video[0]
        stream = out.add_stream("libx264", rate=vin.average_rate,
                                options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p"
        for k, frame in enumerate(src.decode(vin)):
            if frame.time >= seconds:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = k, 1 / vin.average_rate
            frame.pict_type = av.video.frame.PictureType.NONE  # let x264 choose
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(target)
    return target


def skipping_lever(path: Path, figures: dict) -> None:
    """Frames at clip middles decoded with unreturned non-reference frames skipped and without,
    on ``path`` (the benchmark video) and on its first minute with B-frames."""
    for name, video in (("", path), ("_bframes", bframes_copy(path))):
        video_s = media.probe(video).duration_s
        times = frame_times(clip_bounds(video_s, ClipConfig().clip_s))
        for skip in (True, False):
            media.SKIP_UNSHOWN_NONREF = skip
            _, *t = timed(lambda: media.read_frames(video, times, size=(224, 224)))
            record(figures, f"decode_frames{name}_{'skip' if skip else 'noskip'}", video_s, *t)
        media.SKIP_UNSHOWN_NONREF = True
    figures["bframes_nonref_decoded"], figures["bframes_nonref_total"] = nonref_share(
        bframes_copy(path))


#: The int8 builds --int8 measures: (label, convolutions left in float32 (the first k and the
#: last l), reduced range, calibration frames). "whole" is the earlier best setting (stem and
#: head in float32, 7-bit weights as for CPUs without VNNI); "first-k" leave the first k
#: convolutions in float32 (the error comes from the early layers: float32 in the last 4-12
#: changed nothing in a scratch sweep) with full-range weights (for CPUs with VNNI), calibrated on
#: other frames of the benchmark video ("video") or on frames of mvpt's generator ("generated",
#: what a shipped build could use).
INT8_SETTINGS = (("whole", 1, 1, True, "video"), ("first-6", 6, 0, False, "video"),
                 ("first-6", 6, 0, False, "generated"), ("first-10", 10, 0, False, "generated"))


def generated_frames(n: int) -> np.ndarray:
    """``n`` frames of videos from mvpt's own generator at 224x224 (seed 7)."""
    from mvpt.data.synth.writer import generate_video

    with tempfile.TemporaryDirectory() as tmp:
        batches = []
        for index in range(8):
            generate_video(tmp, index=index, seed=7, size=(224, 224), fps=6.0)
        for path in sorted(Path(tmp, "videos").glob("*.mp4")):
            times = frame_times(clip_bounds(media.probe(path).duration_s, ClipConfig().clip_s))
            batches.append(media.read_frames(path, times[::3], size=(224, 224)))
    return np.concatenate(batches)[:n]


def int8_lever(encoder, frames: np.ndarray, calibration: np.ndarray) -> dict:
    """The float32 ONNX export of ``encoder`` quantised to int8 (QDQ, per-channel int8 weights,
    uint8 activations, MinMax ranges) in each of INT8_SETTINGS, calibrated on ``calibration``
    (other frames of the same video) or on as many generated frames; each timed on ``frames``,
    and its features compared with float32 on ``frames`` and on crops of Debian's wallpapers
    (:func:`common.debian_pictures`: real pictures of another kind)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self, data):
            self.batches = iter([{"frames": data[i:i + 8]} for i in range(0, len(data), 8)])

        def get_next(self):
            return next(self.batches, None)

    pictures = debian_pictures()
    reference = encoder.encode_frames(frames)
    reference_pictures = encoder.encode_frames(pictures)
    calibrations = {"video": calibration, "generated": generated_frames(len(calibration))}
    figures = {"int8_pictures": len(pictures)}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(encoder.onnx_path), str(pre))
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        for label, first, last, reduce, calibrated_on in INT8_SETTINGS:
            key = f"int8_{label}_{calibrated_on}"
            out = Path(tmp) / f"{key}.onnx"
            quantize_static(str(pre), str(out), Frames(calibrations[calibrated_on]),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=convs[:first] + (convs[-last:] if last else []))
            session = onnx_cache.cpu_session(out, threads=encoder.threads)

            def encode(data):
                return np.concatenate([session.run(None, {"frames": data[i:i + 32]})[0]
                                       for i in range(0, len(data), 32)])

            encode(frames[:8])
            int8, t, _ = timed(lambda: encode(frames))
            on_video, on_pictures = cosines(int8, reference), cosines(encode(pictures),
                                                                      reference_pictures)
            figures.update({f"{key}_frames_per_s": len(frames) / t,
                            f"{key}_min_cosine": float(on_video.min()),
                            f"{key}_mean_cosine": float(on_video.mean()),
                            f"{key}_pictures_min_cosine": float(on_pictures.min()),
                            f"{key}_pictures_mean_cosine": float(on_pictures.mean())})
    return figures


def openvino_lever(encoder, frames: np.ndarray) -> dict:
    """The frame encoder's ONNX export on OpenVINO's CPU plugin, float32 and bfloat16 (on a CPU
    with AMX or AVX-512 BF16), with as many threads as onnxruntime; frames per second (wall and
    CPU) and the features' cosine to onnxruntime's on ``frames``. Empty without openvino."""
    try:
        import openvino as ov
    except ImportError:
        print("openvino is not installed: the OpenVINO lever is not measured")
        return {}
    core, out = ov.Core(), {"openvino_version": ov.__version__}
    reference, *t_ort = timed(lambda: encoder.encode_frames(frames))
    out["openvino_ort_frames_per_s"] = len(frames) / t_ort[0]
    out["openvino_ort_frames_per_cpu_s"] = len(frames) / t_ort[1]
    for precision in ("f32", "bf16"):
        compiled = core.compile_model(str(encoder.onnx_path), "CPU", {
            "INFERENCE_NUM_THREADS": encoder.threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision})
        request = compiled.create_infer_request()

        def encode():
            return np.concatenate([request.infer({0: frames[i:i + 32]})[0].copy()
                                   for i in range(0, len(frames), 32)])

        encode()  # the first call shapes the plugin's buffers
        features, wall, cpu = timed(encode)
        cos = cosines(features, reference)
        out.update({f"openvino_{precision}_frames_per_s": len(frames) / wall,
                    f"openvino_{precision}_frames_per_cpu_s": len(frames) / cpu,
                    f"openvino_{precision}_min_cosine": float(cos.min()),
                    f"openvino_{precision}_mean_cosine": float(cos.mean())})
    return out


def whole_extraction(library: list[Path], extractor: Extractor, *, workers: int,
                     decode_threads: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the whole extraction of ``library`` into a new store."""
    os.environ.pop("MVPT_DECODE_THREADS", None)
    if decode_threads:
        os.environ["MVPT_DECODE_THREADS"] = decode_threads
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, wall, cpu = timed(lambda: extract(library, Path(tmp) / "store",
                                                 extractor=extractor, decode_workers=workers,
                                                 shard_size=1, progress=False))
    finally:
        os.environ.pop("MVPT_DECODE_THREADS", None)
    return wall, cpu


#: The whole extraction's levers, one at a time: (key, label, frame encoder backend,
#: decode workers, MVPT_DECODE_THREADS (None: the engine's choice), onnxruntime threads spin).
LEVERS = (
    ("before", "PyTorch frame encoder, one decode process (before)", "torch", 1, None, False),
    ("ort_1_decoder", "onnxruntime frame encoder, one decode process on FFmpeg's threads",
     "onnxruntime", 1, None, False),
    ("ort_1_decoder_1_thread", "onnxruntime, one decode process, single-threaded",
     "onnxruntime", 1, "NONE", False),
    ("ort", "onnxruntime, two single-threaded decode processes (the default)", "onnxruntime",
     DEFAULT_DECODE_WORKERS, None, False),
    ("ort_spinning", "the default with spinning onnxruntime threads", "onnxruntime",
     DEFAULT_DECODE_WORKERS, None, True),
    ("ort_in_process", "onnxruntime, decoding in-process (no overlap)", "onnxruntime", 0, None,
     False),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, help="a long video to use instead of the Debian one")
    ap.add_argument("--minutes", type=float, default=12.0, help="length of the looped video")
    ap.add_argument("--piece-seconds", type=float, default=180.0,
                    help="length of the files of the whole extraction (default 180)")
    ap.add_argument("--no-bframes", action="store_true",
                    help="the video without B-frames (the benchmark's media before 2026-12-01)")
    ap.add_argument("--copies", type=int, default=3,
                    help="times each file is listed in the whole extraction's library (default 3)")
    ap.add_argument("--ray", action="store_true", help="also time the Ray engine")
    ap.add_argument("--int8", action="store_true", help="also time an int8 frame encoder")
    ap.add_argument("--openvino", action="store_true",
                    help="also time the frame encoder on OpenVINO (needs openvino)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the whole extraction's levers; each lever's fastest counts "
                         "(every round's figure is printed and kept as whole_LEVER_rounds_x)")
    ap.add_argument("--levers", nargs="+", choices=[key for key, *_ in LEVERS],
                    default=[key for key, *_ in LEVERS],
                    help="the whole extraction's levers to time (default: all; the default "
                         "configuration, ort, always runs)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    path = args.media or realistic_video(minutes=args.minutes, bframes=not args.no_bframes)
    info = media.probe(path)
    dur = info.duration_s
    print(f"media: {path} ({dur:.0f} s, {info.width}x{info.height}, {info.fps:.1f} fps), "
          f"{os.cpu_count()} CPU cores, load average before: {os.getloadavg()[0]:.1f}")
    video_encs = {b: get_encoder("efficientnet-lite0", backend=b) for b in ("torch", "onnxruntime")}
    audio_enc = get_encoder("yamnet")
    bounds = clip_bounds(dur, ClipConfig().clip_s)
    times = frame_times(bounds)
    figures = {"media_s": dur, "cpu_cores": os.cpu_count()}

    frames, *t_frames = timed(lambda: media.read_frames(path, times, size=(224, 224)))
    os.environ["MVPT_DECODE_THREADS"] = "NONE"
    _, *t_frames_1 = timed(lambda: media.read_frames(path, times, size=(224, 224)))
    os.environ.pop("MVPT_DECODE_THREADS")
    wave, *t_audio = timed(lambda: media.read_audio(path, sample_rate_hz=16000,
                                                    end_s=float(bounds[-1, 1])))
    record(figures, "decode_frames", dur, *t_frames)
    record(figures, "decode_frames_1_thread", dur, *t_frames_1)
    record(figures, "decode_audio", dur, *t_audio)
    record(figures, "decode_only", dur, *np.add(t_frames, t_audio))
    record(figures, "decode_only_1_thread", dur, *np.add(t_frames_1, t_audio))
    figures["nonref_decoded"], figures["nonref_total"] = nonref_share(path)
    skipping_lever(path, figures)

    for backend, enc in video_encs.items():
        features, *t_venc = timed(lambda: enc.encode_frames(frames))
        record(figures, f"frame_encoder_{backend}", dur, *t_venc)
        figures[f"frame_encoder_{backend}_frames_per_s"] = len(frames) / t_venc[0]
        figures[f"frame_encoder_{backend}_gflops"] = (enc.flops_per_frame() * len(frames)
                                                      / t_venc[0] / 1e9)
        if backend == "torch":
            reference = features
    cos = cosines(features, reference)
    figures["ort_vs_torch_max_abs"] = float(np.abs(features - reference).max())
    figures["ort_vs_torch_min_cosine"] = float(cos.min())
    _, *t_aenc = timed(lambda: audio_enc.encode_clips(wave, bounds))
    record(figures, "audio_encoder", dur, *t_aenc)
    figures["matmul_gflops"] = matmul_flops() / 1e9
    if args.int8:
        calibration = media.read_frames(path, times[3::11][:64] + 0.25, size=(224, 224))
        figures.update(int8_lever(video_encs["onnxruntime"], frames[:256], calibration))
    if args.openvino:
        figures.update(openvino_lever(video_encs["onnxruntime"], frames[:256]))

    # The whole extraction runs over a library of music-video-length files (the same minutes cut
    # into 3-minute files), so that decoding one file overlaps encoding the previous one. One
    # file per shard, so that the Ray engine has a unit per file to spread.
    library = library_copies(split_library(path, piece_s=args.piece_seconds), args.copies)
    lib_s = sum(media.probe(p).duration_s for p in library)
    figures.update(library_files=len(library), library_copies=max(1, args.copies),
                   library_media_s=lib_s)
    extractors = {b: Extractor(video_encoder=e, audio_encoder=audio_enc)
                  for b, e in video_encs.items()}
    onnx_cache.ALLOW_SPINNING = True  # a session made now spins
    extractors["spinning"] = Extractor(video_encoder=get_encoder("efficientnet-lite0"),
                                       audio_encoder=audio_enc)
    onnx_cache.ALLOW_SPINNING = False
    levers = [lever for lever in LEVERS if lever[0] in set(args.levers) | {"ort"}]
    for _ in range(args.repeat):  # the levers in turn, each round; the fastest round counts
        for key, _, backend, workers, threads, spinning in levers:
            extractor = extractors["spinning" if spinning else backend]
            wall, cpu = whole_extraction(library, extractor, workers=workers,
                                         decode_threads=threads)
            figures.setdefault(f"whole_{key}_rounds_x", []).append(lib_s / wall)
            if lib_s / wall > figures.get(f"whole_{key}_x", 0.0):
                record(figures, f"whole_{key}", lib_s, wall, cpu)
        if args.ray:  # in every round, so that Ray and the local engine meet the same load
            ray = ray_extraction(library, lib_s, extractors["onnxruntime"])
            figures.setdefault("whole_extraction_x_ray_rounds", []).append(
                ray["whole_extraction_x_ray"])
            figures.setdefault("ray_vs_local_rounds", []).append(
                ray["whole_extraction_x_ray"] / figures["whole_ort_rounds_x"][-1])
            if ray["whole_extraction_x_ray"] > figures.get("whole_extraction_x_ray", 0.0):
                figures.update(ray)
    if args.ray:  # the fastest round of each engine
        figures["ray_vs_local"] = figures["whole_extraction_x_ray"] / figures["whole_ort_x"]
    figures["load_average_after"] = os.getloadavg()[0]
    # The default configuration under the names benchmarks/run_all.py reads.
    figures["whole_extraction_x_local"] = figures["whole_ort_x"]
    if "whole_ort_in_process_x" in figures:
        figures["whole_extraction_x_decode_workers_0"] = figures["whole_ort_in_process_x"]
    figures["frame_encoder_gflops"] = figures["frame_encoder_onnxruntime_gflops"]
    figures["frame_encoder_vs_matmul"] = figures["frame_encoder_gflops"] / figures["matmul_gflops"]
    report(figures, n_files=len(library))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def report(figures: dict, *, n_files: int) -> None:
    print(f"whole extraction: {n_files} files, {figures['library_media_s'] / 60:.0f} minutes "
          f"(each piece listed {figures['library_copies']} times)")
    print(f"{'stage':68s} {'media s / wall s':>16s} {'media s / CPU s':>16s}")
    rows = [("decode only, frames + audio (FFmpeg's threads)", "decode_only_x"),
            ("decode only, frames + audio (single-threaded video)", "decode_only_1_thread_x"),
            ("  frames alone (FFmpeg's threads)", "decode_frames_x"),
            ("  frames alone (single-threaded)", "decode_frames_1_thread_x"),
            ("  audio alone", "decode_audio_x"),
            ("  frames alone, every frame decoded (no skipping)", "decode_frames_noskip_x"),
            ("  frames alone, unreturned non-ref frames skipped (default)", "decode_frames_skip_x"),
            ("  frames of a B-frame copy (first 60 s), every frame decoded",
             "decode_frames_bframes_noskip_x"),
            ("  frames of a B-frame copy (first 60 s), non-ref frames skipped",
             "decode_frames_bframes_skip_x"),
            ("frame encoder alone, PyTorch", "frame_encoder_torch_x"),
            ("frame encoder alone, onnxruntime", "frame_encoder_onnxruntime_x"),
            ("audio encoder alone (YAMNet)", "audio_encoder_x")]
    rows += [(f"whole: {label}", f"whole_{key}_x") for key, label, *_ in LEVERS]
    rows += [("whole: Ray engine, onnxruntime", "whole_extraction_x_ray")]
    for label, key in rows:
        if key in figures:
            cpu = figures.get(key.replace("_x", "_cpu_x"))
            rounds = figures.get(key.replace("_x", "_rounds_x"), figures.get(key + "_rounds", []))
            print(f"{label:68s} {figures[key]:16.1f} " + (f"{cpu:16.1f}" if cpu else "")
                  + (f"   rounds: {', '.join(f'{x:.1f}' for x in rounds)}"
                     if len(rounds) > 1 else ""))
    print(f"frame encoder: PyTorch {figures['frame_encoder_torch_frames_per_s']:.1f} frames/s "
          f"({figures['frame_encoder_torch_gflops']:.1f} GFLOP/s), onnxruntime "
          f"{figures['frame_encoder_onnxruntime_frames_per_s']:.1f} frames/s "
          f"({figures['frame_encoder_onnxruntime_gflops']:.1f} GFLOP/s); plain matmul "
          f"{figures['matmul_gflops']:.1f} GFLOP/s")
    print(f"onnxruntime vs PyTorch features on {int(figures['media_s'])} real frames: max abs "
          f"difference {figures['ort_vs_torch_max_abs']:.2g}, min cosine "
          f"{figures['ort_vs_torch_min_cosine']:.7f}")
    print(f"non-reference frames in the first 60 s: "
          f"{figures['nonref_total'] - figures['nonref_decoded']} of {figures['nonref_total']} "
          f"(what skip_frame=NONREF can leave undecoded); in the B-frame copy: "
          f"{figures['bframes_nonref_total'] - figures['bframes_nonref_decoded']} of "
          f"{figures['bframes_nonref_total']}")
    for key in [f"int8_{label}_{calibrated_on}" for label, *_, calibrated_on in INT8_SETTINGS]:
        if key + "_frames_per_s" in figures:
            print(f"{key} frame encoder: {figures[key + '_frames_per_s']:.1f} frames/s (float32 "
                  f"{figures['frame_encoder_onnxruntime_frames_per_s']:.1f}); cosine to float32 "
                  f"on the video's frames min {figures[key + '_min_cosine']:.3f}, mean "
                  f"{figures[key + '_mean_cosine']:.3f}; on {figures['int8_pictures']} wallpaper "
                  f"crops min {figures[key + '_pictures_min_cosine']:.3f}, mean "
                  f"{figures[key + '_pictures_mean_cosine']:.3f}")
    for precision, name in (("f32", "float32"), ("bf16", "bfloat16")):
        if f"openvino_{precision}_frames_per_s" in figures:
            print(f"OpenVINO {figures['openvino_version']} {name}: "
                  f"{figures[f'openvino_{precision}_frames_per_s']:.1f} frames/s, "
                  f"{figures[f'openvino_{precision}_frames_per_cpu_s']:.1f} per CPU s "
                  f"(onnxruntime in the same run {figures['openvino_ort_frames_per_s']:.1f}, "
                  f"{figures['openvino_ort_frames_per_cpu_s']:.1f}); cosine to onnxruntime min "
                  f"{figures[f'openvino_{precision}_min_cosine']:.4f}, mean "
                  f"{figures[f'openvino_{precision}_mean_cosine']:.4f}")
    if "ray_vs_local" in figures:
        print(f"Ray engine ({figures['ray_workers']} workers; Ray started in "
              f"{figures['ray_start_s']:.1f} s and the workers' encoders loaded in "
              f"{figures['ray_workers_start_s']:.1f} s, both outside the throughput): "
              f"{100 * figures['ray_vs_local']:.0f} % of the local engine's throughput on the same "
              f"{n_files} files, fastest round against fastest round "
              f"({figures['whole_extraction_x_ray_with_worker_start']:.1f} media s / wall s "
              f"counting the workers' start)")
        shares = figures["ray_vs_local_rounds"]
        if len(shares) > 1:
            print(f"  round by round (Ray right after the local engine): "
                  f"{', '.join(f'{100 * r:.0f} %' for r in shares)}; median "
                  f"{100 * float(np.median(shares)):.0f} %")
    print(f"load average after: {figures['load_average_after']:.1f} on {figures['cpu_cores']} "
          "cores (other jobs share the machine)")


if __name__ == "__main__":
    main()
