"""Extraction: media files -> per-clip features in a feature store.

Inputs are files, folders (searched recursively for media) or a manifest CSV with columns
``id,path[,group][,split][,start_s,end_s]`` (an item without a split takes the one its group
hashes to, :func:`mvpt.splits.stable_split`, so a film's regions share a split; the store keeps
both). Work is cut into shards of items; a shard is written only when all its items are
processed, with its DONE marker last, so a killed run resumes by redoing only the unfinished
shard. Items already in the store (done or failed) are skipped, so adding new files to
an existing store extracts only them. A file that fails is recorded with its reason and the run
goes on.

Decoding runs in other processes (``decode_workers``, two by default) while this process
encodes, so the two overlap. With two or more decode processes each decodes on one thread (the
processes are the parallelism; FFmpeg's frame threads cost CPU, README "Extraction"), unless
``MVPT_DECODE_THREADS`` says otherwise. A decoder that crashes or hangs on a file costs that file
only: an item that takes longer than ``decode_timeout_s`` is recorded as failed (timed out) and
its worker killed; when a worker dies (a crash in FFmpeg, the OOM killer), the pool is replaced
and the items that were in flight are decoded again one at a time, so the one that kills its
decoder again is recorded as failed with that reason and a rerun skips it.

One extraction per store at a time: the store's lock is held for the whole run, and a second
``mvpt extract`` on the same store is refused with the first one's pid.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import itertools
import multiprocessing
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from mvpt import media
from mvpt.clips import ClipConfig, clip_bounds, frame_times
from mvpt.encoders import AudioEncoder, FrameEncoder, default_encoder_name, get_encoder
from mvpt.errors import MediaError, MvptError, UsageError
from mvpt.splits import stable_split  # noqa: F401  (re-exported)
from mvpt.store import FeatureStore, ItemResult

DEFAULT_DECODE_WORKERS = 2
"""Decode processes of the local engine: on 2 cores, two single-threaded decoders beside the
encoders went 1.26-1.30x as fast as one decoder on FFmpeg's threads (README "Extraction")."""
DEFAULT_DECODE_TIMEOUT_S = 600.0
POOL_START_S = 120.0
MEDIA_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv",
    ".ts", ".3gp",
}


@dataclass(frozen=True)
class Item:
    """One unit to extract: a file, or a region [start_s, end_s) of it."""

    id: str
    path: str
    split: str
    start_s: float = 0.0
    end_s: float | None = None
    named: bool = False  # the id was given (manifest CSV), not derived from the file name
    group: str | None = None  # items of one group (a film's regions) share a split


@dataclass
class ExtractSummary:
    store: str
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    engine: dict = field(default_factory=dict)  # which engine ran, and what it retried

    @property
    def attempted(self) -> int:
        return self.done + self.failed

    def to_dict(self) -> dict:
        return {"store": self.store, "total": self.total, "done": self.done,
                "failed": self.failed, "skipped": self.skipped, "failures": self.failures,
                "engine": self.engine}


# ------------------------------------------------------------------------------ inputs
def _float_or_none(text: str | None) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def read_manifest_csv(path: Path) -> list[Item]:
    """Items of a manifest CSV; relative paths are relative to the CSV's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            if not {"id", "path"} <= fields:
                raise UsageError(f"{path}: a manifest CSV needs columns id,path "
                                 f"(optionally group,split,start_s,end_s); found {sorted(fields)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read manifest CSV ({exc})") from None
    items = []
    for line, row in enumerate(rows, start=2):
        try:
            start, end = _float_or_none(row.get("start_s")), _float_or_none(row.get("end_s"))
        except ValueError:
            raise UsageError(f"{path}:{line}: start_s/end_s must be numbers in seconds") from None
        if start is not None and end is not None and end <= start:
            raise UsageError(f"{path}:{line}: end_s ({end}) must be after start_s ({start})")
        p = Path(row["path"])
        p = p if p.is_absolute() else path.parent / p
        group = (row.get("group") or "").strip() or None
        split = (row.get("split") or "").strip() or stable_split(row["id"], group)
        items.append(Item(row["id"], str(p), split, start or 0.0, end, named=True, group=group))
    return items


def _path_id(path: Path, base: Path | None) -> str:
    rel = path.relative_to(base) if base else Path(path.name)
    return rel.with_suffix("").as_posix()


def collect_items(inputs: Iterable[str | Path]) -> list[Item]:
    """Items from files, folders and manifest CSVs, in a stable order; ids are unique (a repeated
    id gets a suffix from its path's hash). A missing path becomes an item that will fail with a
    clear reason rather than stopping the batch."""
    items: list[Item] = []
    for raw in inputs:
        p = Path(raw)
        if p.suffix.lower() == ".csv" and p.is_file():
            items.extend(read_manifest_csv(p))
        elif p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()
                            and q.suffix.lower() in MEDIA_EXTENSIONS | {".m4a", ".mp3", ".ogg",
                                                                         ".wav", ".flac", ".opus"}):
                iid = _path_id(f, p)
                items.append(Item(iid, str(f), stable_split(iid)))
        else:
            iid = _path_id(p, None)
            items.append(Item(iid, str(p), stable_split(iid)))
    # Absolute, resolved paths: a store or index stays usable from any working directory.
    return _unique_ids([replace(it, path=str(Path(it.path).resolve())) for it in items], {})


def _unique_ids(items: list[Item], known_paths: dict[str, str]) -> list[Item]:
    """Make ids unique. ``known_paths`` maps ids already in the store to their source paths.
    A file listed twice is kept once; an id derived from a file name that another file already
    has (in this list or in the store) gets a suffix from its path's hash; an id given twice in a
    manifest is an error."""
    taken = dict(known_paths)
    listed: set[str] = set()
    unique = []
    for it in items:
        owner = taken.get(it.id)
        if owner is not None and owner != it.path:
            if it.named:
                if it.id in listed:
                    raise UsageError(f"id {it.id!r} is given to two files ({owner}, {it.path})")
            else:
                iid = f"{it.id}~{hashlib.sha1(it.path.encode()).hexdigest()[:8]}"
                it = Item(iid, it.path, stable_split(iid), it.start_s, it.end_s)
        elif it.id in listed:
            continue  # the same file (or manifest row) twice
        taken.setdefault(it.id, it.path)
        listed.add(it.id)
        unique.append(it)
    return unique


# ------------------------------------------------------------------------------ decoding
@dataclass
class DecodeSpec:
    """What to decode for each item (picklable, sent to decode workers)."""

    clip: ClipConfig
    frame_size: tuple[int, int] | None  # None: no video wanted
    resize_mode: str
    audio_rate_hz: int | None  # None: no audio wanted


@dataclass
class Decoded:
    item: Item
    bounds_s: np.ndarray | None = None  # absolute clip bounds in seconds
    frames: np.ndarray | None = None
    wave: np.ndarray | None = None
    duration_s: float = 0.0
    title: str | None = None
    error: str | None = None


def decode_item(item: Item, spec: DecodeSpec) -> Decoded:
    """Probe and decode one item's frames (per clip) and audio; errors become ``Decoded.error``."""
    try:
        info = media.probe(item.path)
        if spec.frame_size and not info.has_video:
            raise MediaError(item.path, "no video stream")
        if spec.audio_rate_hz and not info.has_audio:
            raise MediaError(item.path, "no audio stream")
        start = max(0.0, item.start_s)
        end = info.duration_s if item.end_s is None else min(item.end_s, info.duration_s)
        if start >= end:
            raise MediaError(item.path, f"region {start:.2f}-{end:.2f} s is outside the media "
                                        f"({info.duration_s:.2f} s long)")
        bounds = clip_bounds(end - start, spec.clip.clip_s, start_s=start)
        if len(bounds) == 0:
            raise MediaError(item.path, f"shorter than one clip ({end - start:.2f} s < "
                                        f"{spec.clip.clip_s} s)")
        frames = wave = None
        if spec.frame_size:
            times = frame_times(bounds, spec.clip.frames_per_clip)
            frames = media.read_frames(item.path, times, size=spec.frame_size,
                                       resize_mode=spec.resize_mode, info=info)
        if spec.audio_rate_hz:
            wave = media.read_audio(item.path, sample_rate_hz=spec.audio_rate_hz,
                                    start_s=start, end_s=float(bounds[-1, 1]), info=info)
        return Decoded(item, bounds, frames, wave, float(bounds[-1, 1] - start), info.title)
    except MvptError as exc:
        return Decoded(item, error=str(exc))
    except Exception as exc:  # a decoder bug must not stop the batch
        return Decoded(item, error=f"{item.path}: unexpected {type(exc).__name__}: {exc}")


def _start_decode_worker(parent_pid: int, environment: dict[str, str]) -> None:
    """Pool initializer: ``environment`` set in this worker, then :func:`exit_with_parent`."""
    os.environ.update(environment)
    exit_with_parent(parent_pid)


def exit_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """Pool initializer: end this worker process when ``parent_pid`` is no longer its parent (the
    parent was killed), so a killed extraction leaves no decoder behind."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


Decoder = Callable[[Item, DecodeSpec], Decoded]


class _DecodePool:
    """A spawn process pool whose workers can be killed (a hung decoder cannot be cancelled).
    Until its first result, a wait gets ``POOL_START_S`` more: starting a worker (a fresh Python
    importing the decoders) can take long on a busy machine and is not the item's fault.
    With two or more workers each decodes video on one thread (module docstring)."""

    def __init__(self, workers: int):
        self.workers = workers
        ctx = multiprocessing.get_context("spawn")
        environment = {}
        if workers >= 2 and not os.environ.get("MVPT_DECODE_THREADS", "").strip():
            environment["MVPT_DECODE_THREADS"] = "NONE"
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                           initializer=_start_decode_worker,
                                           initargs=(os.getpid(), environment))
        self.started = False

    def submit(self, decode: Decoder, item: Item, spec: DecodeSpec) -> cf.Future:
        return self.pool.submit(decode, item, spec)

    def result(self, future: cf.Future, timeout_s: float | None) -> Decoded:
        """The future's result; cf.TimeoutError or BrokenProcessPool as the pool raises them."""
        if timeout_s is not None and not self.started:
            timeout_s += POOL_START_S
        decoded = future.result(timeout=timeout_s)
        self.started = True
        return decoded

    def close(self, *, kill: bool = False) -> None:
        if kill:  # the executor has no public way to stop a running task (Python < 3.14)
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


class DecodePoolKeeper:
    """Keeps a stream's decode pool alive for the next stream of the same process (a Ray worker
    decodes unit after unit): starting one costs a fresh Python and its decoders' imports, about a
    CPU second. A stream that ends with nothing in flight gives its pool back; one stopped early
    kills it, and a pool whose worker crashed or hung is replaced as within a stream."""

    def __init__(self):
        self._pool: _DecodePool | None = None

    def take(self, workers: int) -> _DecodePool:
        pool, self._pool = self._pool, None
        if pool is not None and pool.workers == workers:
            return pool
        if pool is not None:
            pool.close()
        return _DecodePool(workers)

    def keep(self, pool: _DecodePool) -> None:
        self.close()
        self._pool = pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _timed_out(item: Item, timeout_s: float) -> Decoded:
    return Decoded(item, error=f"{item.path}: decoding took longer than {timeout_s:g} s "
                               "(timed out; the decoder was stopped)")


def _crashed(item: Item) -> Decoded:
    return Decoded(item, error=f"{item.path}: the decoder crashed on this file (its process "
                               "died while decoding it)")


def _decoded_stream(items: list[Item], spec: DecodeSpec, workers: int, *, prefetch: int = 2,
                    timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
                    decode: Decoder = decode_item,
                    keeper: DecodePoolKeeper | None = None) -> Iterator[Decoded]:
    """Decoded items in order; with workers > 0, decoding runs ahead in other processes, with
    ``timeout_s`` per item (None: no limit) and crashed workers replaced (module docstring);
    ``keeper`` lends the pool and keeps it for the next stream. In-process decoding (workers
    <= 0) has no timeout."""
    if workers <= 0:
        for it in items:
            yield decode(it, spec)
        return
    queue, pending = deque(items), deque()
    pool = keeper.take(workers) if keeper is not None else _DecodePool(workers)
    try:
        while queue or pending:
            while queue and len(pending) <= workers + prefetch:
                it = queue.popleft()
                pending.append((it, pool.submit(decode, it, spec)))
            it, future = pending.popleft()
            try:
                yield pool.result(future, timeout_s)
                continue
            except cf.TimeoutError:
                yield _timed_out(it, timeout_s)
                queue.extendleft(reversed([i for i, _ in pending]))  # decoded again in order
                suspects = []
            except BrokenProcessPool:
                suspects = [it, *(i for i, _ in pending)]
            pending.clear()
            pool.close(kill=True)
            yield from _one_at_a_time(suspects, spec, timeout_s, decode)
            pool = _DecodePool(workers)
    finally:
        if keeper is not None and not pending:
            keeper.keep(pool)
        else:
            pool.close(kill=bool(pending))  # items still in flight: the consumer stopped early


def _one_at_a_time(items: list[Item], spec: DecodeSpec, timeout_s: float | None,
                   decode: Decoder) -> Iterator[Decoded]:
    """Decode ``items`` alone in a worker each in turn, after a crash that one of them caused:
    the one that crashes its worker again is the culprit."""
    pool = None
    try:
        for it in items:
            pool = pool or _DecodePool(1)
            try:
                yield pool.result(pool.submit(decode, it, spec), timeout_s)
                continue
            except cf.TimeoutError:
                yield _timed_out(it, timeout_s)
            except BrokenProcessPool:
                yield _crashed(it)
            pool.close(kill=True)
            pool = None
    finally:
        if pool is not None:
            pool.close(kill=True)


# ------------------------------------------------------------------------------ encoding
class Extractor:
    """Holds the encoders and turns decoded items into store rows. ``modalities`` limits the
    work to "video" or "audio" alone (a music library needs only its audio)."""

    def __init__(self, *, video_encoder: str | FrameEncoder | None = None,
                 audio_encoder: str | AudioEncoder | None = None,
                 clip: ClipConfig = ClipConfig(), encoder_options: dict | None = None,
                 modalities: tuple[str, ...] = ("video", "audio")):
        opts = encoder_options or {}
        if not modalities or set(modalities) - {"video", "audio"}:
            raise UsageError(f"modalities must be 'video' and/or 'audio', got {modalities!r}")
        self.recipe = {  # picklable arguments that rebuild this extractor in another process
            "video_encoder": getattr(video_encoder, "name", video_encoder),
            "audio_encoder": getattr(audio_encoder, "name", audio_encoder),
            "clip": clip, "encoder_options": opts, "modalities": tuple(modalities)}
        self.video = (_as_encoder(video_encoder, "video", opts.get("video", {}))
                      if "video" in modalities else None)
        self.audio = (_as_encoder(audio_encoder, "audio", opts.get("audio", {}))
                      if "audio" in modalities else None)
        self.clip = clip

    decoder = staticmethod(decode_item)  # a module-level function: sent to spawn workers

    def manifest(self) -> dict:
        encoders = {m: e.manifest() for m, e in (("video", self.video), ("audio", self.audio)) if e}
        return {
            **self.clip.to_dict(),
            "encoders": encoders,
            "windows": {"train": "random", "test": "center"},
            "frame_time": "middle of each clip" if self.clip.frames_per_clip == 1 else
                          f"{self.clip.frames_per_clip} evenly spaced frames per clip, averaged",
        }

    def decode_spec(self) -> DecodeSpec:
        return DecodeSpec(
            self.clip,
            tuple(self.video.image_size) if self.video else None,
            self.video.resize_mode if self.video else "crop",
            int(self.audio.sample_rate_hz) if self.audio else None,
        )

    def extract_file(self, path: str | Path, *, item_id: str | None = None,
                     start_s: float = 0.0, end_s: float | None = None) -> ItemResult:
        """Decode and encode one file in this process, without a store (for queries).
        Raises the item's error instead of recording it."""
        item = Item(item_id or Path(path).stem, str(path), "query", start_s, end_s)
        result = self.encode(decode_item(item, self.decode_spec()))
        if result.status != "done":
            reason = result.error.removeprefix(f"{path}: ")
            raise MediaError(path, reason)
        return result

    def encode(self, dec: Decoded) -> ItemResult:
        it = dec.item
        base = dict(id=it.id, source_path=it.path, split=it.split, group=it.group,
                    start_s=it.start_s, end_s=float("nan") if it.end_s is None else it.end_s)
        if dec.error:
            return ItemResult(**base, status="failed", error=dec.error)
        try:
            arrays = {}
            if self.video:
                vec = self.video.encode_frames(dec.frames)
                n = len(dec.bounds_s)
                arrays["video"] = vec.reshape(n, self.clip.frames_per_clip, -1).mean(axis=1)
            if self.audio:
                rel = dec.bounds_s - dec.bounds_s[0, 0]
                audio = self.audio.encode_clips(dec.wave, rel)
                arrays["audio"] = audio["embedding"]
                arrays.update({f"audio_{k}": v for k, v in audio.items() if k != "embedding"})
        except MvptError as exc:
            return ItemResult(**base, status="failed", error=str(exc))
        except Exception as exc:
            return ItemResult(**base, status="failed",
                              error=f"{it.path}: encoding failed: {type(exc).__name__}: {exc}")
        base["end_s"] = float(dec.bounds_s[-1, 1])
        return ItemResult(**base, status="done", duration_s=dec.duration_s, title=dec.title,
                          arrays=arrays)


def _as_encoder(enc, modality: str, options: dict):
    if enc is None or isinstance(enc, str):
        enc = get_encoder(enc or default_encoder_name(modality), **options)
    if enc.modality != modality:
        raise UsageError(f"encoder {enc.name!r} is a {enc.modality} encoder, not {modality}")
    return enc


# ------------------------------------------------------------------------------ shard units
@dataclass(frozen=True)
class ShardUnit:
    """The unit of work: the items of one shard. An engine runs units wherever it likes;
    :func:`process_unit` turns one into its results and :meth:`FeatureStore.write_shard` (in the
    process that owns the store) writes them, so every engine writes the same shards."""

    index: int  # position among this run's units
    items: tuple[Item, ...]


def plan_units(items: list[Item], shard_size: int) -> list[ShardUnit]:
    return [ShardUnit(k, tuple(items[i:i + shard_size]))
            for k, i in enumerate(range(0, len(items), shard_size))]


def process_unit(extractor: Extractor, decoded: Iterable[Decoded], *, node: str,
                 on_item=None) -> list[ItemResult]:
    """Encode a unit's decoded items into store rows tagged with ``node`` (the machine that did
    the work); ``on_item(result)`` is called after each item."""
    results = []
    for dec in decoded:
        result = extractor.encode(dec)
        result.node = node
        results.append(result)
        if on_item:
            on_item(result)
    return results


class LocalEngine:
    """Runs the units in this process, with decoding running ahead in ``decode_workers`` other
    processes (0: in-process). Yields ``(unit, results)`` in order."""

    name = "local"

    def __init__(self, *, decode_workers: int = DEFAULT_DECODE_WORKERS,
                 decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S):
        self.decode_workers, self.decode_timeout_s = decode_workers, decode_timeout_s

    def run(self, units: list[ShardUnit], extractor: Extractor, *, on_item=None):
        node = socket.gethostname()
        stream = _decoded_stream([it for u in units for it in u.items], extractor.decode_spec(),
                                 self.decode_workers, timeout_s=self.decode_timeout_s,
                                 decode=extractor.decoder)
        try:
            for unit in units:
                decoded = itertools.islice(stream, len(unit.items))
                yield unit, process_unit(extractor, decoded, node=node, on_item=on_item)
        finally:
            stream.close()


# ------------------------------------------------------------------------------ the run
def extract(
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    extractor: Extractor | None = None,
    shard_size: int = 16,
    decode_workers: int = DEFAULT_DECODE_WORKERS,
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    progress: bool = True,
    max_shards: int | None = None,
    engine=None,
) -> ExtractSummary:
    """Extract every input not yet in the store ``out``; returns counts and the failures.
    Holds the store's lock throughout (StoreError when another process writes it).

    ``engine`` decides where the shard units run: None (a :class:`LocalEngine` with
    ``decode_workers`` and ``decode_timeout_s``, which limits each item's decoding in a worker;
    None: no limit) or e.g. :class:`mvpt.distributed.RayEngine`. Shards are written here, as
    their units finish. ``max_shards`` stops after that many new shards (for tests and partial
    runs)."""
    if shard_size < 1:
        raise UsageError(f"shard_size must be >= 1, got {shard_size}")
    extractor = extractor or Extractor()
    engine = engine or LocalEngine(decode_workers=decode_workers,
                                   decode_timeout_s=decode_timeout_s)
    with FeatureStore.writing(out, extractor.manifest()) as store:
        return _extract_into(store, list(inputs), extractor, engine, shard_size=shard_size,
                             progress=progress, max_shards=max_shards)


def _extract_into(store: FeatureStore, inputs: list, extractor: Extractor, engine, *,
                  shard_size: int, progress: bool, max_shards: int | None) -> ExtractSummary:
    out = store.path
    rows = store.all_rows()
    items = _unique_ids(collect_items(inputs), dict(zip(rows["id"], rows["source_path"])))
    known = set(rows["id"])
    todo = [it for it in items if it.id not in known]
    units = plan_units(todo, shard_size)
    summary = ExtractSummary(store=str(out), total=len(items), skipped=len(items) - len(todo))
    bar = _progress(total=len(items), initial=summary.skipped, enabled=progress)

    def on_item(result: ItemResult) -> None:
        _count(summary, result)
        bar.update(1)
        bar.set_postfix(done=summary.done, failed=summary.failed)

    runs = engine.run(units, extractor, on_item=on_item)
    try:
        for shards_written, (_, results) in enumerate(runs, start=1):
            store.write_shard(results)
            if max_shards is not None and shards_written >= max_shards:
                break
    finally:
        runs.close()
        bar.close()
    summary.engine = getattr(engine, "report", lambda: {"name": engine.name})()
    return summary


def _count(summary: ExtractSummary, result: ItemResult) -> None:
    if result.status == "done":
        summary.done += 1
    else:
        summary.failed += 1
        summary.failures.append({"id": result.id, "path": result.source_path,
                                 "error": result.error})


def _progress(*, total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="file", desc="extract", disable=not enabled,
                dynamic_ncols=True)
