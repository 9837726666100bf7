"""YouTube-8M music-video selection: TFRecord + tf.train.Example reading, manifest, resume."""

import csv

import pytest

from mvpt.data import yt8m
from mvpt.errors import UsageError
from mvpt.splits import stable_split
from tests.fixtures.tfrecord import encode_example, write_tfrecords

VOCAB = """Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl,Vertical1
0,788288,/m/03bt1gh,Game,https://en.wikipedia.org/wiki/Game,Games
1,539945,/m/01mw1,Video game,https://en.wikipedia.org/wiki/Video_game,Games
2,415890,/m/064t9,Music video,https://en.wikipedia.org/wiki/Music_video,Arts & Entertainment
3,378135,/m/07yv9,Vehicle,https://en.wikipedia.org/wiki/Vehicle,Autos & Vehicles
"""

# id -> labels; ids with label 2 ("Music video") are the music videos.
VIDEOS = {"Ab12": [2, 0], "Cd34": [1], "Ef56": [2], "Gh78": [3, 0], "Ij90": [0, 2, 3]}
MUSIC = ["Ab12", "Ef56", "Ij90"]


def test_crc32c_known_value():
    assert yt8m.crc32c(b"123456789") == 0xE3069283


def test_example_round_trip_with_all_feature_kinds():
    features = {"id": [b"Ab12"], "labels": [2, 0, 3862, -5], "mean_rgb": [0.5, -1.25]}
    decoded = yt8m.parse_example(encode_example(features))
    assert decoded == features


def _records(tmp_path, videos=VIDEOS, shards=2):
    items = list(videos.items())
    paths = []
    for k in range(shards):
        path = tmp_path / f"train{k:04d}.tfrecord"
        write_tfrecords(path, [encode_example({"id": [vid.encode()], "labels": labels,
                                               "mean_audio": [0.1] * 4})
                               for vid, labels in items[k::shards]])
        paths.append(path)
    return paths


def test_records_read_back_with_crc_check(tmp_path):
    (path,) = _records(tmp_path, shards=1)
    ids = [yt8m.parse_example(r)["id"][0].decode() for r in yt8m.read_tfrecords(path, verify=True)]
    assert ids == list(VIDEOS)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="CRC"):
        list(yt8m.read_tfrecords(path, verify=True))


def test_selects_exactly_the_music_videos(tmp_path):
    vocab = tmp_path / "vocabulary.csv"
    vocab.write_text(VOCAB)
    wanted = yt8m.label_indices(vocab, "music VIDEO")
    assert wanted == {2}
    assert sorted(yt8m.select_ids(_records(tmp_path), wanted)) == MUSIC
    with pytest.raises(UsageError, match="no label named"):
        yt8m.label_indices(vocab, "Polka")


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_command_survives_missing_media_and_resumes(tmp_path, capsys):
    from mvpt.cli import main

    vocab = tmp_path / "vocabulary.csv"
    vocab.write_text(VOCAB)
    _records(tmp_path)
    media = tmp_path / "media"
    media.mkdir()
    (media / "Ab12.mp4").write_bytes(b"x")
    (media / "Ef56.webm.part").write_bytes(b"x")  # partial download: not available
    (media / "Cd34.mp4").write_bytes(b"x")  # not a music video: never selected
    out = tmp_path / "m" / "yt8m.csv"
    args = ["data", "yt8m", "--records", str(tmp_path / "train*.tfrecord"), "--vocabulary",
            str(vocab), "--media", str(media), "--out", str(out)]
    assert main(args) == 0
    status = {r["id"]: r for r in _read(tmp_path / "m" / "yt8m_status.csv")}
    assert sorted(status) == MUSIC
    assert status["Ab12"]["status"] == "ok" and status["Ef56"]["status"] == "missing"
    assert "no Ef56.*" in status["Ef56"]["reason"]
    manifest = _read(out)
    assert [(r["id"], r["split"]) for r in manifest] == [("Ab12", stable_split("Ab12"))]
    assert manifest[0]["path"] == str((media / "Ab12.mp4").resolve())

    (media / "Ij90.mkv").write_bytes(b"x")  # arrives later; rerun picks it up
    assert main(args) == 0
    assert sorted(r["id"] for r in _read(out)) == ["Ab12", "Ij90"]
    from mvpt.extract import collect_items

    assert [it.id for it in collect_items([out])] == ["Ab12", "Ij90"]


def test_id_list_with_pseudo_id_map(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# pseudo ids\nAb12\nCd34\n\n")
    id_map = tmp_path / "map.csv"
    id_map.write_text("pseudo_id,youtube_id\nAb12,dQw4w9WgXcQ\n")
    media = tmp_path / "media"
    media.mkdir()
    (media / "dQw4w9WgXcQ.mp4").write_bytes(b"x")
    out = tmp_path / "m.csv"
    counts = yt8m.build_manifest(yt8m.read_id_list(ids), out,
                                 downloader=yt8m.LocalFolderSource(media),
                                 id_map=yt8m.read_id_map(id_map))
    assert counts == {"ok": 1, "missing": 1}
    status = {r["id"]: r for r in _read(yt8m.status_path(out))}
    assert status["Ab12"]["youtube_id"] == "dQw4w9WgXcQ"
    assert status["Cd34"]["reason"] == "pseudo-id not in the id map"


class _Unavailable:
    calls = 0

    def fetch(self, youtube_id):
        self.calls += 1
        return yt8m.FetchResult("unavailable", reason="Video unavailable")


def test_unavailable_ids_are_not_retried(tmp_path):
    source = _Unavailable()
    out = tmp_path / "m.csv"
    assert yt8m.build_manifest(["a", "b"], out, downloader=source) == {"unavailable": 2}
    assert yt8m.build_manifest(["a", "b"], out, downloader=source) == {"unavailable": 2}
    assert source.calls == 2
    assert _read(out) == []


def test_split_is_hashed_by_the_video_so_one_video_has_one_split(tmp_path):
    """Pseudo-ids that resolve to one YouTube video are one group: same split, whatever the
    pseudo-ids hash to."""
    pseudo = [f"p{k:03d}" for k in range(30)]
    id_map = {p: "dQw4w9WgXcQ" if k < 15 else "9bZkp7q19f0" for k, p in enumerate(pseudo)}
    media = tmp_path / "media"
    media.mkdir()
    for youtube_id in set(id_map.values()):
        (media / f"{youtube_id}.mp4").write_bytes(b"x")
    out = tmp_path / "m.csv"
    yt8m.build_manifest(pseudo, out, downloader=yt8m.LocalFolderSource(media), id_map=id_map)
    rows = _read(out)
    assert len(rows) == 30
    for youtube_id in set(id_map.values()):
        mine = [r for r in rows if id_map[r["id"]] == youtube_id]
        assert {r["group"] for r in mine} == {youtube_id}
        assert {r["split"] for r in mine} == {stable_split(youtube_id)}
