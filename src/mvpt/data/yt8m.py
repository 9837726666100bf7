"""YouTube-8M's music videos (the YT8M-MusicVideos data set) -> an extract manifest.

Selection: the label whose ``Name`` in YouTube-8M's ``vocabulary.csv`` (columns ``Index,
TrainVideoCount, KnowledgeGraphId, Name, ...``) matches ``label`` (default "Music video",
case-insensitive), applied to the video-level records: TFRecord files of ``tf.train.Example``
with features ``id`` (bytes) and ``labels`` (int64 list). Both the TFRecord framing and the
protobuf are read here without TensorFlow. A plain list of ids can replace the records.

IDs: the public records hold 4-character *pseudo-ids*, not YouTube ids. Turning them into YouTube
ids needs a lookup the user provides (YouTube-8M publishes one per pseudo-id); pass it as a CSV with
columns ``pseudo_id,youtube_id``. Without one, ids are taken to be YouTube ids already.

Getting the media is pluggable (:class:`Downloader`): :class:`LocalFolderSource` finds
``<youtube_id>.*`` in a folder; :class:`YtDlpDownloader` uses ``yt-dlp`` (imported only when used;
not exercised by the tests, UNTESTED), and can also take a channel or playlist URL.

Splits are by video: an item's ``group`` is its YouTube id (the pseudo-id when there is none) and
its ``split`` is hashed from the group, so ids that resolve to one video share a split.

Outputs: ``MANIFEST`` (``id,path,group,split``, available videos only, ready for ``mvpt extract``) and
``<MANIFEST stem>_status.csv`` beside it (every selected id with ``status`` ok / missing /
unavailable and a ``reason``). A rerun skips ids already ``ok`` or ``unavailable``; ``missing``
ids are tried again.
"""

from __future__ import annotations

import csv
import glob
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mvpt.errors import MvptError, UsageError
from mvpt.splits import stable_split

DEFAULT_LABEL = "Music video"
STATUS_FIELDS = ["id", "youtube_id", "group", "split", "path", "status", "reason"]
RESOLVED = ("ok", "unavailable")


# ---------------------------------------------------------------------------- TFRecord framing
def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord framing stores beside a length and a record."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _read_exact(fh: BinaryIO, n: int, path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise UsageError(f"{path}: truncated TFRecord ({what})")
    return data


def read_tfrecords(path: str | Path, *, verify: bool = False) -> Iterator[bytes]:
    """The records of a TFRecord file (uncompressed). ``verify`` checks the CRCs (slow: pure
    Python)."""
    with open(path, "rb") as fh:
        while header := fh.read(12):
            if len(header) != 12:
                raise UsageError(f"{path}: truncated TFRecord (header)")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            data = _read_exact(fh, length, path, "data")
            (data_crc,) = struct.unpack("<I", _read_exact(fh, 4, path, "data CRC"))
            if verify and (length_crc != masked_crc32c(header[:8])
                           or data_crc != masked_crc32c(data)):
                raise UsageError(f"{path}: TFRecord CRC mismatch (corrupt file)")
            yield data


# ---------------------------------------------------------------- tf.train.Example protobuf
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(buf: bytes) -> list:
    values: list = []
    for kind, _, payload in _fields(buf):  # BytesList=1, FloatList=2, Int64List=3
        for _, wire, v in _fields(payload):
            if kind == 1:
                values.append(bytes(v))
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(v) // 4}f", v))
            elif kind == 3 and wire == 0:
                values.append(_signed64(v))
            elif kind == 3:
                pos = 0
                while pos < len(v):
                    item, pos = _varint(v, pos)
                    values.append(_signed64(item))
    return values


def parse_example(data: bytes) -> dict[str, list]:
    """A serialised ``tf.train.Example`` -> feature name -> list of values (bytes, float or int)."""
    features: dict[str, list] = {}
    for number, _, features_msg in _fields(data):
        if number != 1:
            continue
        for _, _, entry in _fields(features_msg):
            key, value = "", b""
            for n, _, v in _fields(entry):
                key, value = (v.decode("utf-8"), value) if n == 1 else (key, v)
            features[key] = _decode_feature(value)
    return features


# --------------------------------------------------------------------------------- selection
def label_indices(vocabulary_csv: str | Path, label: str = DEFAULT_LABEL) -> set[int]:
    """The ``Index`` of every vocabulary row whose ``Name`` equals ``label`` (case-insensitive)."""
    path = Path(vocabulary_csv)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read vocabulary ({exc})") from None
    if rows and not {"Index", "Name"} <= set(rows[0]):
        raise UsageError(f"{path}: a vocabulary needs columns Index and Name")
    found = {int(r["Index"]) for r in rows if r["Name"].strip().lower() == label.strip().lower()}
    if not found:
        raise UsageError(f"{path}: no label named {label!r}")
    return found


def select_ids(record_files: Iterable[str | Path], wanted_labels: set[int]) -> list[str]:
    """Ids (in file order, no repeats) of the records carrying any of ``wanted_labels``."""
    ids: dict[str, None] = {}
    for path in record_files:
        for index, data in enumerate(read_tfrecords(path)):
            try:
                ex = parse_example(data)
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                raise UsageError(f"{path}: record {index} is not a tf.train.Example ({exc})") from None
            if wanted_labels.intersection(ex.get("labels", [])) and ex.get("id"):
                ids[ex["id"][0].decode("utf-8")] = None
    return list(ids)


def expand_globs(patterns: Iterable[str]) -> list[str]:
    """Files matching each pattern (a plain path stays as is), sorted per pattern."""
    files: list[str] = []
    for pattern in patterns:
        files.extend(sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern])
    return files


def read_id_list(path: str | Path) -> list[str]:
    """Ids, one per line ('#' comments and blank lines skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def read_id_map(path: str | Path) -> dict[str, str]:
    """pseudo-id -> YouTube id from a CSV with columns ``pseudo_id,youtube_id``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"pseudo_id", "youtube_id"} <= set(reader.fieldnames or []):
            raise UsageError(f"{path}: an id map needs columns pseudo_id,youtube_id")
        return {r["pseudo_id"].strip(): r["youtube_id"].strip() for r in reader}


# -------------------------------------------------------------------------------- downloaders
@dataclass
class FetchResult:
    status: str  # ok / missing / unavailable
    path: str = ""
    reason: str = ""


class Downloader(Protocol):
    def fetch(self, youtube_id: str) -> FetchResult: ...


class LocalFolderSource:
    """Media already on disk: the first ``<youtube_id>.*`` in ``folder`` (partial downloads
    ``*.part`` ignored)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"{self.folder}: media folder not found")

    def fetch(self, youtube_id: str) -> FetchResult:
        hits = sorted(p for p in self.folder.glob(f"{glob.escape(youtube_id)}.*")
                      if p.is_file() and p.suffix not in (".part", ".ytdl"))
        if not hits:
            return FetchResult("missing", reason=f"no {youtube_id}.* in {self.folder}")
        return FetchResult("ok", str(hits[0].resolve()))


class YtDlpDownloader:
    """Downloads with ``yt-dlp`` into ``folder`` as ``<id>.<ext>`` (UNTESTED: needs network)."""

    def __init__(self, folder: str | Path, *, format_spec: str = "bv*[height<=360]+ba/b[height<=360]/b"):
        self.folder = Path(folder)
        self.format_spec = format_spec
        self._local = None

    def _ydl(self, **extra):
        try:
            import yt_dlp
        except ImportError:
            raise UsageError("the yt-dlp downloader needs yt-dlp: pip install yt-dlp") from None
        opts = {"format": self.format_spec, "outtmpl": str(self.folder / "%(id)s.%(ext)s"),
                "quiet": True, "noprogress": True, **extra}
        return yt_dlp, yt_dlp.YoutubeDL(opts)

    def fetch(self, youtube_id: str) -> FetchResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        yt_dlp, ydl = self._ydl()
        try:
            with ydl:
                ydl.download([f"https://www.youtube.com/watch?v={youtube_id}"])
        except yt_dlp.utils.DownloadError as exc:
            return FetchResult("unavailable", reason=str(exc).splitlines()[0][:300])
        return LocalFolderSource(self.folder).fetch(youtube_id)

    def list_ids(self, url: str) -> list[str]:
        """Video ids of a channel or playlist URL (as the MovieClips channel was fetched)."""
        _, ydl = self._ydl(extract_flat="in_playlist")
        with ydl:
            info = ydl.extract_info(url, download=False)
        return [e["id"] for e in info.get("entries") or [] if e and e.get("id")]


# ------------------------------------------------------------------------------------ driver
def status_path(manifest: str | Path) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}_status.csv")


def _read_status(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["id"]: _by_video(r) for r in csv.DictReader(fh)}


def _by_video(row: dict) -> dict:
    """The row with ``group`` = its video (YouTube id, else its own id) and the split hashed from
    it (also for status tables written before groups)."""
    group = row.get("youtube_id") or row["id"]
    return {**row, "group": group, "split": stable_split(row["id"], group)}


def build_manifest(ids: Iterable[str], manifest: str | Path, *, downloader: Downloader,
                   id_map: dict[str, str] | None = None) -> dict[str, int]:
    """Resolve each id to local media and write the manifest and status table (atomically, after
    every id, so a kill loses at most one). Returns counts per status."""
    from mvpt.data.movieclips import write_csv

    manifest, spath = Path(manifest), status_path(manifest)
    status = _read_status(spath)
    for item_id in ids:
        if status.get(item_id, {}).get("status") in RESOLVED:
            continue
        youtube_id = (id_map or {}).get(item_id, item_id if id_map is None else "")
        if not youtube_id:
            got = FetchResult("missing", reason="pseudo-id not in the id map")
        else:
            try:
                got = downloader.fetch(youtube_id)
            except (MvptError, OSError) as exc:
                got = FetchResult("missing", reason=str(exc).replace("\n", " "))
        status[item_id] = _by_video({"id": item_id, "youtube_id": youtube_id, "path": got.path,
                                     "status": got.status, "reason": got.reason})
        write_csv(spath, STATUS_FIELDS, status.values())
    write_csv(spath, STATUS_FIELDS, status.values())
    write_csv(manifest, ["id", "path", "group", "split"],
              [r for r in status.values() if r["status"] == "ok"])
    counts: dict[str, int] = {}
    for r in status.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts
