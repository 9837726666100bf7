"""The tagger abstraction: what a frame-wise AudioSet tagger returns (:class:`FrameProbs`), the
:class:`Tagger` protocol, where a tagger's classes sit (:class:`ClassLayout`: the Music subtree, the
singing classes and Silence) and the YAMNet tagger (:class:`YamnetTagger`).

The music-region finder (:mod:`mvpt.data.movieclips`) and the PANNs CNN14 tagger
(:mod:`mvpt.data.panns`) both import this module; neither imports the other at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mvpt.errors import EncoderError

MUSIC_FIRST, MUSIC_LAST = 132, 276  # "Music" .. "Scary music" in YAMNet order
VOCAL_FIRST, VOCAL_LAST = 24, 31  # "Singing" .. "Rapping"
SILENCE_INDEX = 494
N_YAMNET_CLASSES = 521
_PATCH_CHUNK = 1024  # patches per model call batch group


@dataclass(frozen=True)
class ClassLayout:
    """Where a tagger's classes sit: ``music`` (the Music subtree), ``vocal`` (the singing
    classes) and ``silence`` (or None), as column indices of its [n_frames, n_classes] output."""

    n_classes: int
    music: tuple[int, ...]
    vocal: tuple[int, ...]
    silence: int | None

    def music_indices(self, *, include_vocal: bool = True) -> np.ndarray:
        indices = (self.vocal if include_vocal else ()) + self.music
        return np.asarray(indices, dtype=np.int64)


YAMNET_LAYOUT = ClassLayout(N_YAMNET_CLASSES, tuple(range(MUSIC_FIRST, MUSIC_LAST + 1)),
                            tuple(range(VOCAL_FIRST, VOCAL_LAST + 1)), SILENCE_INDEX)
#: The anchors of the class sets: mid -> display name (AudioSet ontology).
ANCHOR_MIDS = {"music": ("/m/04rlf", "Music"), "music_last": ("/t/dd00037", "Scary music"),
               "vocal": ("/m/015lz1", "Singing"), "vocal_last": ("/m/06bxc", "Rapping"),
               "silence": ("/m/028v0c", "Silence")}


def layout_from_labels(mids: tuple[str, ...], names: tuple[str, ...], *,
                       source: str | Path = "labels") -> ClassLayout:
    """The class sets of an AudioSet class list (mids and display names in output order): each
    anchor is found by mid and must carry its display name; Music and singing are the runs between
    their anchors."""
    where = {}
    for key, (mid, name) in ANCHOR_MIDS.items():
        if mid not in mids:
            raise EncoderError(f"{source}: no class {mid} ({name!r}); is it AudioSet's list?")
        where[key] = mids.index(mid)
        if names[where[key]] != name:
            raise EncoderError(f"{source}: class {where[key]} ({mid}) is "
                               f"{names[where[key]]!r}, expected {name!r}")
    if where["music_last"] < where["music"] or where["vocal_last"] < where["vocal"]:
        raise EncoderError(f"{source}: the Music or singing classes are not in ontology order")
    return ClassLayout(len(mids), tuple(range(where["music"], where["music_last"] + 1)),
                       tuple(range(where["vocal"], where["vocal_last"] + 1)), where["silence"])


def check_yamnet_layout(names: tuple[str, ...]) -> None:
    """Raise when the class names do not have the layout the index ranges assume."""
    expected = {MUSIC_FIRST: "Music", MUSIC_LAST: "Scary music", VOCAL_FIRST: "Singing",
                VOCAL_LAST: "Rapping", SILENCE_INDEX: "Silence"}
    for index, name in expected.items():
        if names[index] != name:
            raise EncoderError(f"class {index} is {names[index]!r}, expected {name!r}")


@dataclass
class FrameProbs:
    """A tagger's output: probabilities [n_frames, n_classes], the frame grid in seconds, and
    where its classes sit (None: YAMNet's 521)."""

    probs: np.ndarray
    frame_s: float
    offset_s: float
    layout: ClassLayout | None = None


class Tagger(Protocol):
    sample_rate_hz: int

    def frame_probabilities(self, wave: np.ndarray) -> FrameProbs: ...


class YamnetTagger:
    """YAMNet class probabilities on patches every ``hop_s`` seconds."""

    sample_rate_hz = 16000

    def __init__(self, *, hop_s: float = 0.24, model_path: str | Path | None = None):
        from mvpt.encoders.yamnet import YamnetEncoder, class_names

        check_yamnet_layout(class_names())
        self._encoder = YamnetEncoder(model_path=model_path, patch_hop_s=hop_s)
        self.hop_s = self._encoder.patch_hop_s

    def frame_probabilities(self, wave: np.ndarray) -> FrameProbs:
        from mvpt.encoders.logmel import log_mel_spectrogram
        from mvpt.encoders.yamnet import PATCH_FRAMES, patch_grid, patch_hop_frames

        centres_s, padded = patch_grid(len(wave), patch_hop_s=self.hop_s)
        log_mel = log_mel_spectrogram(np.pad(np.asarray(wave, np.float32), (0, padded - len(wave))))
        starts = np.arange(len(centres_s)) * patch_hop_frames(self.hop_s)
        probs = np.empty((len(starts), N_YAMNET_CLASSES), np.float32)
        for first in range(0, len(starts), _PATCH_CHUNK):  # bounded memory for long films
            chunk = starts[first:first + _PATCH_CHUNK]
            _, probs[first:first + len(chunk)] = self._encoder.encode_patches(
                log_mel[chunk[:, None] + np.arange(PATCH_FRAMES)])
        return FrameProbs(probs, self.hop_s, float(centres_s[0]) - self.hop_s / 2)
