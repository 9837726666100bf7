"""Synthetic music videos whose picture and soundtrack share hidden factors that change over time.

A video is a genre plus a sequence of sections. Each section plays one theme of its genre's
palette (five per genre and data set), with its own tempo, key, instrument set, tone brightness
and energy; a video plays every theme once, in its own order, in equally long sections, so that
the order of the sections, not their mix, tells videos of a genre apart. The picture cuts at every
section change and follows the sound:

==================  ==========================================================================
sound               picture
==================  ==========================================================================
beat (tempo)        the shape swells and the frame flashes on every beat; stripes move one
                    period per beat and the shape orbits once per bar (motion follows tempo)
energy (loudness)   frame brightness
key                 hue (within the genre's palette)
tone brightness     stripe density (brighter sound, finer stripes)
instrument set      number of satellite shapes (one per layer beyond the first)
genre               palette, shape, background pattern, instrumentation
==================  ==========================================================================

:func:`generate` writes ``videos/<id>.mp4`` (H.264 + AAC), ``manifest.csv`` (``id,path,split``)
and ``factors.json``. Each video depends only on ``(seed, index)``, so a partial or parallel run
writes the same files. The building blocks (:func:`plan_sections`, :func:`render_music`,
:func:`render_frames`, :func:`write_mp4`, :func:`music_clip`, :func:`speech_like`) are public.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from scipy import signal

from mvpt.errors import UsageError
from mvpt.splits import stable_split

STEPS_PER_BAR = 16
MIN_SECTION_S = 3.0
MAX_SECTIONS = 6
PALETTE_SIZE = 5  # themes per genre and data set
DEFAULT_DURATION_S = (20.0, 40.0)
AAC_RATES_HZ = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_FADE_S = 0.005
_FLASH_DECAY_BEATS = 0.3
_AUDIO_FRAME_SAMPLES = 1024
_CHUNK_FRAMES = 64


# ----------------------------------------------------------------------------------- instruments
@dataclass(frozen=True)
class Voice:
    """A synthesiser patch: oscillator, envelope and colour. Times in seconds."""

    wave: str  # saw, square, tri, sine, fm, noise, metal
    attack_s: float = 0.005
    decay_s: float = 0.5  # time constant of the exponential decay
    detune: float = 0.0  # relative detune of two extra oscillators (supersaw); 0 = one oscillator
    drive: float = 0.0  # tanh distortion gain; 0 = clean
    vibrato: float = 0.0  # relative frequency deviation at 5.5 Hz
    fm_ratio: float = 1.0
    fm_index: float = 0.0
    glide: float = 0.0  # start at (1 + glide) x pitch, falling within 30 ms (kicks, 808s)
    noise: float = 0.0  # mix of white noise
    highpass: int = 0  # number of first differences (each +6 dB/octave)
    accent: float = 0.0  # beat-synchronous swell inside long notes (pads)


VOICES: dict[str, Voice] = {
    # drums: fixed pitch, rendered once per section and re-triggered
    "kick": Voice("sine", decay_s=0.12, glide=2.5, drive=1.5, noise=0.08),
    "snare": Voice("tri", decay_s=0.08, noise=1.4, highpass=1),
    "clap": Voice("noise", decay_s=0.06, highpass=1),
    "hat": Voice("noise", decay_s=0.025, highpass=2),
    "open_hat": Voice("noise", decay_s=0.12, highpass=2),
    "ride": Voice("metal", decay_s=0.1, noise=3.0, highpass=2),
    # chords
    "power_chord": Voice("saw", decay_s=0.6, drive=4.0),
    "supersaw": Voice("saw", decay_s=0.25, detune=0.008),
    "pad": Voice("saw", attack_s=0.4, decay_s=6.0, detune=0.006, accent=0.6),
    "e_piano": Voice("fm", decay_s=0.9, fm_ratio=1.0, fm_index=2.5),
    "keys": Voice("fm", decay_s=1.2, fm_ratio=2.0, fm_index=1.2),
    # bass
    "saw_bass": Voice("saw", decay_s=0.3, drive=1.0),
    "square_bass": Voice("square", decay_s=0.2),
    "pluck_bass": Voice("tri", decay_s=0.35, noise=0.03),
    "sub_808": Voice("sine", decay_s=0.7, glide=0.6, drive=2.5),
    "drone": Voice("tri", attack_s=0.6, decay_s=8.0, detune=0.004),
    # leads
    "lead_guitar": Voice("saw", decay_s=0.5, drive=6.0, vibrato=0.01),
    "saw_lead": Voice("saw", decay_s=0.15, detune=0.005),
    "bell": Voice("fm", decay_s=1.2, fm_ratio=3.5, fm_index=3.0),
    "sax": Voice("square", attack_s=0.04, decay_s=1.0, vibrato=0.012, noise=0.06),
    "flute": Voice("tri", attack_s=0.06, decay_s=1.5, vibrato=0.008, noise=0.08),
}
_METAL_RATIOS = (1.0, 1.4827, 1.8003, 2.4604, 2.6986, 3.8929)  # inharmonic cymbal partials
_DRUM_PITCH_MIDI = {"kick": 33, "snare": 54, "clap": 54, "hat": 90, "open_hat": 90, "ride": 90}


@dataclass(frozen=True)
class Part:
    """One instrument's line: a voice, a 16-step pattern ('x' = hit) and a gain."""

    voice: str
    pattern: str
    gain: float = 1.0

    @property
    def pitch_midi(self) -> int | None:
        """The fixed pitch of a drum; None for parts that follow the harmony."""
        return _DRUM_PITCH_MIDI.get(self.voice)


@dataclass(frozen=True)
class Genre:
    """Instrumentation, rhythm, harmony and visual style of one genre."""

    name: str
    tempo_bpm: tuple[float, float]
    scale: tuple[int, ...]  # semitones of the mode from the root
    progressions: tuple[tuple[int, ...], ...]  # scale degrees, one chord per bar
    chord_steps: tuple[int, ...]  # chord tones as scale-degree steps above the chord root
    drums: tuple[Part, ...]
    bass: Part
    chords: Part
    lead: Part
    arrangements: tuple[tuple[str, ...], ...]  # layer sets a section may use
    swing: tuple[int, float] = (2, 0.0)  # (period in steps, delay of the off-step in steps)
    walking_bass: bool = False
    arpeggio_lead: bool = False
    hue_deg: float = 0.0  # centre of the palette; the key moves it by up to +-25 degrees
    accent_hue_deg: float = 40.0  # shape hue relative to the background hue
    saturation: float = 0.8
    shape: str = "circle"  # circle, square, diamond, ring, cross
    pattern: str = "stripes"  # stripes, checker, rings, waves
    stripe_angle_deg: float = 45.0


_MINOR = (0, 2, 3, 5, 7, 8, 10)
_DORIAN = (0, 2, 3, 5, 7, 9, 10)
_LYDIAN = (0, 2, 4, 6, 7, 9, 11)
_TRIAD, _SEVENTH, _POWER = (0, 2, 4), (0, 2, 4, 6), (0, 4, 7)
_FULL = ("drums", "bass", "chords", "lead")

GENRES: dict[str, Genre] = {
    genre.name: genre
    for genre in (
        Genre(
            name="rock", tempo_bpm=(100, 150), scale=_MINOR, chord_steps=_POWER,
            progressions=((0, 5, 2, 6), (0, 3, 4, 3), (0, 6, 5, 4)),
            drums=(Part("kick", "x.....x.x......."), Part("snare", "....x.......x...", 0.8),
                   Part("hat", "x.x.x.x.x.x.x.x.", 0.3)),
            bass=Part("saw_bass", "x.x.x.x.x.x.x.x.", 0.6),
            chords=Part("power_chord", "x.x.x.x.x.x.x.x.", 0.5),
            lead=Part("lead_guitar", "x...x.x.x...x.x.", 0.4),
            arrangements=(_FULL[:3], _FULL, ("drums", "bass"), ("drums", "chords")),
            hue_deg=5, accent_hue_deg=40, saturation=0.85, shape="diamond", pattern="stripes",
            stripe_angle_deg=60,
        ),
        Genre(
            name="electronic", tempo_bpm=(115, 140), scale=_MINOR, chord_steps=_TRIAD,
            progressions=((0, 5, 2, 6), (0, 0, 5, 5), (0, 3, 5, 4)),
            drums=(Part("kick", "x...x...x...x..."), Part("clap", "....x.......x...", 0.6),
                   Part("open_hat", "..x...x...x...x.", 0.35),
                   Part("hat", "xxxxxxxxxxxxxxxx", 0.15)),
            bass=Part("square_bass", "..x...x...x...x.", 0.6),
            chords=Part("supersaw", "x..x..x...x..x..", 0.4),
            lead=Part("saw_lead", "xxxxxxxxxxxxxxxx", 0.3),
            arrangements=(("drums", "bass", "lead"), _FULL, ("drums", "chords"), ("drums", "bass")),
            arpeggio_lead=True, hue_deg=285, accent_hue_deg=-105, saturation=0.95, shape="ring",
            pattern="checker", stripe_angle_deg=0,
        ),
        Genre(
            name="ambient", tempo_bpm=(60, 90), scale=_LYDIAN, chord_steps=_SEVENTH,
            progressions=((0, 3), (0, 5, 3, 4), (0, 1)),
            drums=(),
            bass=Part("drone", "x...............", 0.5),
            chords=Part("pad", "x...............", 0.6),
            lead=Part("bell", "x...x...x...x...", 0.35),
            arrangements=(("chords", "lead"), _FULL[1:], ("bass", "chords"), ("chords",)),
            arpeggio_lead=True, hue_deg=210, accent_hue_deg=45, saturation=0.45, shape="circle",
            pattern="rings",
        ),
        Genre(
            name="jazz", tempo_bpm=(90, 160), scale=_DORIAN, chord_steps=_SEVENTH,
            progressions=((1, 4, 0, 0), (0, 5, 1, 4), (3, 6, 2, 5)),
            drums=(Part("ride", "x...x.x.x...x.x.", 0.35), Part("hat", "....x.......x...", 0.2),
                   Part("kick", "x.........x.....", 0.4)),
            bass=Part("pluck_bass", "x...x...x...x...", 0.7),
            chords=Part("e_piano", "x.....x...x.....", 0.45),
            lead=Part("sax", "x.x.x.x...x.x...", 0.35),
            arrangements=(_FULL[:3], _FULL, ("drums", "bass", "lead"), ("bass", "chords")),
            swing=(4, 0.67), walking_bass=True, hue_deg=135, accent_hue_deg=150, saturation=0.6,
            shape="square", pattern="waves", stripe_angle_deg=20,
        ),
        Genre(
            name="hiphop", tempo_bpm=(80, 100), scale=_MINOR, chord_steps=_SEVENTH,
            progressions=((0, 5), (0, 3, 5, 4), (5, 4, 0, 0)),
            drums=(Part("kick", "x......x..x....."), Part("snare", "....x.......x...", 0.8),
                   Part("hat", "x.x.x.x.x.x.x.x.", 0.3)),
            bass=Part("sub_808", "x......x..x.....", 0.7),
            chords=Part("keys", "x.......x.......", 0.45),
            lead=Part("flute", "x.....x.x.......", 0.3),
            arrangements=(_FULL[:3], _FULL, ("drums", "bass"), ("drums", "chords", "lead")),
            swing=(2, 0.25), hue_deg=60, accent_hue_deg=-55, saturation=0.75, shape="cross",
            pattern="stripes", stripe_angle_deg=90,
        ),
    )
}
GENRE_NAMES: tuple[str, ...] = tuple(GENRES)


def _genre(name: str) -> Genre:
    if name not in GENRES:
        raise UsageError(f"unknown genre {name!r}; expected one of {', '.join(GENRE_NAMES)}")
    return GENRES[name]


def _midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ---------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Section:
    """One section of a synthetic video: the hidden factors its sound and picture share."""

    start_s: float
    end_s: float
    tempo_bpm: float
    root_midi: int  # bass register, 36-47
    key: str
    progression: tuple[int, ...]
    arrangement: tuple[str, ...]  # active layers: drums, bass, chords, lead
    instruments: tuple[str, ...]  # voices of the active layers
    tone: float  # 0 = dull, 1 = bright (low-pass cut-off of chords and lead)
    cutoff_hz: float
    energy: float  # 0-1
    loudness_db: float  # RMS level in dBFS
    brightness: float  # HSV value of the background, 0-1
    hue_deg: float
    saturation: float
    stripe_period: float  # in frame heights
    motion_heights_per_s: float  # stripe speed; one period per beat
    shape: str
    satellites: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def beat_s(self) -> float:
        return 60.0 / self.tempo_bpm

    def to_dict(self) -> dict:
        return {**asdict(self), "duration_s": round(self.duration_s, 6)}

    @classmethod
    def from_dict(cls, data: dict) -> Section:
        """Inverse of :meth:`to_dict` (also accepts JSON lists for tuples; ignores extra keys)."""
        names = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**values)


def _section_bounds(duration_s: float, n_sections: int, *, fps: float) -> list[float]:
    """Boundaries of ``n_sections`` equally long sections on the frame grid, 0 to ``duration_s``."""
    total_frames = max(1, round(duration_s * fps))
    frames = np.unique(np.round(np.linspace(0, total_frames, n_sections + 1)).astype(int))
    return [int(f) / fps for f in frames]


@dataclass(frozen=True)
class Theme:
    """The hidden factors of one section, without its place in time. A genre's videos draw their
    sections from a small palette of themes (:func:`genre_palette`)."""

    tempo_bpm: float
    pitch_class: int
    progression: tuple[int, ...]
    arrangement: tuple[str, ...]
    tone: float
    energy: float


def genre_palette(genre: str, *, seed: int = 0, size: int = PALETTE_SIZE) -> list[Theme]:
    """The ``size`` themes of ``genre`` in data set ``seed``. Each factor is stratified over its
    range (shuffled independently), so any two themes differ clearly in tempo, key, tone and
    energy (energies at least 0.2 apart)."""
    style = _genre(genre)
    if not 1 <= size <= 9:
        raise UsageError(f"palette size must be between 1 and 9, got {size}")
    rng = np.random.default_rng([seed, GENRE_NAMES.index(genre), 99])

    def strata(low: float, high: float) -> np.ndarray:
        cells = (rng.permutation(size) + rng.uniform(0.3, 0.7, size)) / size
        return low + (high - low) * cells

    tempos, tones = strata(*style.tempo_bpm), strata(0.0, 1.0)
    energies = 0.1 + 0.9 * rng.permutation(size) / max(1, size - 1)
    pitch_classes = rng.choice(12, size=size, replace=False)
    return [
        Theme(tempo_bpm=round(float(tempos[k]), 1), pitch_class=int(pitch_classes[k]),
              progression=style.progressions[rng.integers(len(style.progressions))],
              arrangement=style.arrangements[rng.integers(len(style.arrangements))],
              tone=round(float(tones[k]), 4), energy=round(float(energies[k]), 4))
        for k in range(size)
    ]


def plan_sections(
    genre: str, *, duration_s: float, fps: float = 12.0, rng: np.random.Generator,
    palette: list[Theme] | None = None,
) -> list[Section]:
    """Draw the sections of one video: the themes of ``palette`` (default: the genre's palette of
    data set 0) in a random order, each once, in equally long sections (fewer themes when the
    video is shorter than ``MIN_SECTION_S`` per theme).

    Every video of a genre thus shows the same themes for the same time: the mean of its clips
    says little about which video it is, and only the order of the sections tells two videos
    apart, as in music videos whose sound and picture change together over time."""
    style = _genre(genre)
    palette = genre_palette(genre) if palette is None else palette
    n_sections = int(min(len(palette), MAX_SECTIONS, max(1, duration_s // MIN_SECTION_S)))
    order = rng.permutation(len(palette))[:n_sections]
    bounds = _section_bounds(duration_s, n_sections, fps=fps)
    return [_section(style, palette[k], start_s, end_s)
            for k, start_s, end_s in zip(order, bounds[:-1], bounds[1:])]


def _section(style: Genre, theme: Theme, start_s: float, end_s: float) -> Section:
    """A theme placed at ``[start_s, end_s)``, with the picture factors that follow from it."""
    stripe_period = round(0.5 - 0.35 * theme.tone, 4)
    return Section(
        start_s=round(start_s, 6),
        end_s=round(end_s, 6),
        tempo_bpm=theme.tempo_bpm,
        root_midi=36 + theme.pitch_class,
        key=KEY_NAMES[theme.pitch_class],
        progression=theme.progression,
        arrangement=theme.arrangement,
        instruments=tuple(p.voice for layer in theme.arrangement
                          for p in _layer_parts(style, layer)),
        tone=theme.tone,
        cutoff_hz=round(600.0 * 2.0 ** (3.0 * theme.tone), 1),
        energy=theme.energy,
        loudness_db=round(-32.0 + 18.0 * theme.energy, 2),
        brightness=round(0.15 + 0.7 * theme.energy, 4),
        hue_deg=round((style.hue_deg + (theme.pitch_class - 5.5) * 4.5) % 360.0, 2),
        saturation=style.saturation,
        stripe_period=stripe_period,
        motion_heights_per_s=round(stripe_period * theme.tempo_bpm / 60.0, 4),
        shape=style.shape,
        satellites=len(theme.arrangement) - 1,
    )


def _layer_parts(style: Genre, layer: str) -> tuple[Part, ...]:
    if layer == "drums":
        return style.drums
    return (getattr(style, layer),)


# ---------------------------------------------------------------------------------------- music
def _oscillator(
    voice: Voice, freqs_hz: np.ndarray, t_s: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sum of one oscillator per frequency (three per frequency when detuned)."""
    if voice.wave == "noise":
        return rng.standard_normal(t_s.size)
    if voice.wave == "metal":
        freqs_hz = np.outer(freqs_hz, _METAL_RATIOS).ravel()
    if voice.detune:
        freqs_hz = np.outer(freqs_hz, [1.0 - voice.detune, 1.0, 1.0 + voice.detune]).ravel()
    elapsed_s = t_s
    if voice.glide or voice.vibrato:  # integrate the instantaneous frequency
        vibrato = voice.vibrato * np.sin(2 * np.pi * 5.5 * t_s)
        bend = 1.0 + voice.glide * np.exp(-t_s / 0.03) + vibrato
        elapsed_s = np.concatenate([[0.0], np.cumsum(bend[:-1])]) * (t_s[1] - t_s[0])
    cycles = np.outer(freqs_hz, elapsed_s)  # float64: phase stays exact over long notes
    if voice.wave in ("fm", "sine"):
        index = voice.fm_index * np.exp(-t_s / (0.5 * voice.decay_s))
        angle = (2 * np.pi) * cycles
        if voice.fm_index:
            angle += index * np.sin(voice.fm_ratio * angle)
        return np.sin(angle).sum(axis=0) / math.sqrt(len(freqs_hz))
    frac = np.mod(cycles, 1.0, out=cycles).astype(np.float32)
    if voice.wave == "saw":
        wave = frac.sum(axis=0) * 2.0 - len(freqs_hz)
    elif voice.wave == "tri":
        wave = (np.abs(frac - 0.5).sum(axis=0) * 4.0) - len(freqs_hz)
    else:  # square, metal
        wave = len(freqs_hz) - 2.0 * np.count_nonzero(frac >= 0.5, axis=0)
    return wave / math.sqrt(len(freqs_hz))


def render_note(
    voice: Voice, freqs_hz: np.ndarray, *, duration_s: float, sample_rate_hz: int,
    beat_s: float = 0.5, rng: np.random.Generator,
) -> np.ndarray:
    """One note (or chord: several ``freqs_hz``) of ``voice``, ending in a 10 ms release.

    ``beat_s`` times the swells of voices with an ``accent``. Returns float32 samples.
    """
    n = max(2, int(round(duration_s * sample_rate_hz)))
    t_s = np.arange(n) / sample_rate_hz
    wave = _oscillator(voice, np.atleast_1d(freqs_hz), t_s, rng)
    if voice.noise:
        wave = wave + voice.noise * rng.standard_normal(n)
    for _ in range(voice.highpass):
        wave = np.diff(wave, prepend=wave[0])
    if voice.drive:
        wave = np.tanh(voice.drive * wave) / math.tanh(voice.drive)
    envelope = np.minimum(1.0, t_s / voice.attack_s) * np.exp(-t_s / voice.decay_s)
    if voice.accent:
        swell = np.exp(-(t_s % beat_s) / (0.15 * beat_s))
        envelope *= (1.0 + voice.accent * swell) / (1.0 + voice.accent)
    release_n = min(n, int(0.01 * sample_rate_hz))
    envelope[n - release_n :] *= np.linspace(1.0, 0.0, release_n)
    return (wave * envelope).astype(np.float32)


def _scale_midi(style: Genre, tonic_midi: int, degree: int) -> int:
    """MIDI note of scale ``degree`` (may exceed 7: higher octaves) above ``tonic_midi``."""
    return tonic_midi + style.scale[degree % 7] + 12 * (degree // 7)


def _chord_midis(style: Genre, section: Section, bar: int) -> list[int]:
    """The chord of ``bar`` one octave above the bass register."""
    degree = section.progression[bar % len(section.progression)]
    return [_scale_midi(style, section.root_midi + 12, degree + step) for step in style.chord_steps]


def _pitches(
    style: Genre, layer: str, section: Section, step: int, hit: int, motif: np.ndarray
) -> tuple[int, ...]:
    """MIDI notes that ``layer`` plays at ``step`` (its ``hit``-th note in the section)."""
    bar = step // STEPS_PER_BAR
    chord = _chord_midis(style, section, bar)
    if layer == "chords":
        return tuple(chord)
    if layer == "bass" and style.walking_bass:  # root, third, fifth, approach to the next root
        approach = _chord_midis(style, section, bar + 1)[0] - 1
        return ((chord[0], chord[1], chord[2], approach)[(step % STEPS_PER_BAR) // 4] - 12,)
    if layer == "bass":
        return (chord[0] - 12,)
    if style.arpeggio_lead:
        return (chord[hit % len(chord)] + 12,)
    return (_scale_midi(style, section.root_midi + 24, int(motif[hit % len(motif)])),)


def _part_events(
    style: Genre, layer: str, part: Part, section: Section, motif: np.ndarray
) -> Iterator[tuple[float, float, tuple[int, ...]]]:
    """(onset_s, gate_s, MIDI notes) of every hit of ``part`` in ``section``.

    The gate lasts until the part's next hit; swing delays every off-step of the swing period.
    """
    step_s = section.beat_s / 4.0
    period, delay = style.swing
    hits = [i for i, c in enumerate(part.pattern) if c == "x"]
    gaps = {h: (hits[(k + 1) % len(hits)] - h - 1) % STEPS_PER_BAR + 1 for k, h in enumerate(hits)}
    hit = 0
    for step in range(int(math.ceil(section.duration_s / step_s))):
        position = step % STEPS_PER_BAR
        if part.pattern[position] != "x":
            continue
        onset_s = (step + (delay if step % period == period // 2 else 0.0)) * step_s
        if part.pitch_midi is not None:
            notes: tuple[int, ...] = (part.pitch_midi,)
        else:
            notes = _pitches(style, layer, section, step, hit, motif)
        yield onset_s, gaps[position] * step_s, notes
        hit += 1


def _render_part(
    track: np.ndarray, style: Genre, layer: str, part: Part, section: Section, *,
    sample_rate_hz: int, rng: np.random.Generator,
) -> None:
    """Add every hit of ``part`` to ``track`` (samples from the section start)."""
    voice = VOICES[part.voice]
    motif = rng.integers(0, 8, size=int(rng.integers(3, 7)))  # scale degrees of the lead's riff
    cache: dict[tuple, np.ndarray] = {}  # loops repeat: render each (notes, length) once
    for onset_s, gate_s, notes in _part_events(style, layer, part, section, motif):
        drum = part.pitch_midi is not None
        length_s = 4.0 * voice.decay_s + 0.05 if drum else max(gate_s, 0.08)
        key = (notes, round(length_s, 4))
        if key not in cache:
            cache[key] = part.gain * render_note(
                voice, _midi_to_hz(notes), duration_s=length_s, sample_rate_hz=sample_rate_hz,
                beat_s=section.beat_s, rng=rng,
            )
        start = int(round(onset_s * sample_rate_hz))
        note = cache[key][: max(0, track.size - start)]
        track[start : start + note.size] += note


def _layer_cutoff_hz(layer: str, section: Section) -> float | None:
    """Low-pass cut-off of a layer: the section's tone brightness colours bass, chords and lead."""
    return {"chords": section.cutoff_hz, "lead": 1.5 * section.cutoff_hz,
            "bass": 250.0 + section.cutoff_hz / 4.0}.get(layer)


def _render_section_music(
    section: Section, style: Genre, *, sample_rate_hz: int, rng: np.random.Generator
) -> np.ndarray:
    """One section's mix at ``section.loudness_db`` RMS, with 5 ms fades at both ends."""
    n = int(round(section.duration_s * sample_rate_hz))
    mix = np.zeros(n)
    for layer in section.arrangement:
        track = np.zeros(n)
        for part in _layer_parts(style, layer):
            _render_part(track, style, layer, part, section, sample_rate_hz=sample_rate_hz, rng=rng)
        cutoff_hz = _layer_cutoff_hz(layer, section)
        if cutoff_hz is not None:
            b, a = signal.butter(2, min(cutoff_hz, 0.45 * sample_rate_hz), fs=sample_rate_hz)
            track = signal.lfilter(b, a, track)
        mix += track
    rms = float(np.sqrt(np.mean(mix**2))) or 1.0
    mix *= 10.0 ** (section.loudness_db / 20.0) / rms
    fade_n = min(n // 2, int(_FADE_S * sample_rate_hz))
    if fade_n:
        ramp = np.linspace(0.0, 1.0, fade_n)
        mix[:fade_n] *= ramp
        mix[n - fade_n :] *= ramp[::-1]
    return mix


def render_music(
    sections: list[Section], *, genre: str, duration_s: float, sample_rate_hz: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The soundtrack of ``sections``: float32 mono in (-1, 1), ``round(duration_s * rate)`` long.

    Each section plays on its own beat grid (from its start), at its ``loudness_db``, and is cut
    with 5 ms fades; a tanh soft clipper keeps drum peaks below full scale.
    """
    style = _genre(genre)
    out = np.zeros(int(round(duration_s * sample_rate_hz)))
    for section in sections:
        start = int(round(section.start_s * sample_rate_hz))
        chunk = _render_section_music(section, style, sample_rate_hz=sample_rate_hz, rng=rng)
        chunk = chunk[: max(0, out.size - start)]
        out[start : start + chunk.size] += chunk
    return np.tanh(out).astype(np.float32)


def music_clip(
    genre: str, *, duration_s: float = 10.0, sample_rate_hz: int = 16000, seed: int = 0
) -> np.ndarray:
    """A stand-alone music clip of ``genre``, its sections drawn from ``seed``: float32 mono."""
    if duration_s <= 0:
        raise UsageError(f"duration_s must be positive, got {duration_s}")
    rng = np.random.default_rng([seed, GENRE_NAMES.index(_genre(genre).name)])
    sections = plan_sections(genre, duration_s=duration_s, fps=100.0, rng=rng)
    return render_music(sections, genre=genre, duration_s=duration_s, sample_rate_hz=sample_rate_hz,
                        rng=rng)


# --------------------------------------------------------------------------------------- speech
_VOWEL_FORMANTS_HZ = (
    (730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
    (570, 840, 2410), (660, 1720, 2410), (440, 1020, 2240),
)
_FORMANT_GAINS = (1.0, 0.6, 0.3)
_FORMANT_BLOCK_S = 0.01


def _formant_filter(source: np.ndarray, track_hz: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """A two-pole resonator whose centre follows ``track_hz``, updated every 10 ms."""
    bandwidth_hz = 90.0 + 0.06 * float(track_hz.mean())
    radius = math.exp(-math.pi * bandwidth_hz / sample_rate_hz)
    block = max(1, int(_FORMANT_BLOCK_S * sample_rate_hz))
    out = np.empty_like(source)
    state = np.zeros(2)
    for i in range(0, source.size, block):
        theta = 2 * math.pi * track_hz[i] / sample_rate_hz
        a = [1.0, -2.0 * radius * math.cos(theta), radius * radius]
        piece = source[i : i + block]
        out[i : i + block], state = signal.lfilter([1.0 - radius], a, piece, zi=state)
    return out


def _word(
    n_syllables: int, f0_hz: float, sample_rate_hz: int, rng: np.random.Generator
) -> np.ndarray:
    """Syllables of ~0.2 s: a pitch-accented, jittered glottal source through gliding formants."""
    lengths_s = rng.uniform(0.12, 0.26, n_syllables)
    knots_s = np.concatenate([[0.0], np.cumsum(lengths_s)])
    centres_s = (knots_s[:-1] + knots_s[1:]) / 2
    n = int(knots_s[-1] * sample_rate_hz)
    t_s = np.arange(n) / sample_rate_hz
    accents = np.interp(t_s, centres_s, rng.uniform(-1, 1, n_syllables))
    jitter = signal.lfilter([0.2], [1.0, -0.98], rng.standard_normal(n))
    pitch_hz = f0_hz * (1 + 0.4 * accents - 0.15 * t_s / t_s[-1]) * (1 + 0.02 * jitter)
    pulses = np.diff(np.floor(np.cumsum(pitch_hz) / sample_rate_hz), prepend=0.0)
    source = signal.lfilter([1.0], [1.0, -0.95], pulses)  # glottal spectral tilt
    source = source / (np.abs(source).max() + 1e-9) + 0.15 * rng.standard_normal(n)
    vowels = np.array(_VOWEL_FORMANTS_HZ)[rng.integers(len(_VOWEL_FORMANTS_HZ), size=n_syllables)]
    voiced = sum(
        gain * _formant_filter(source, np.interp(t_s, centres_s, vowels[:, k]), sample_rate_hz)
        for k, gain in enumerate(_FORMANT_GAINS)
    )
    envelope = np.zeros(n)
    for first_s, last_s in zip(knots_s[:-1], knots_s[1:]):
        i, j = int(first_s * sample_rate_hz), int(last_s * sample_rate_hz)
        envelope[i:j] = np.sin(np.linspace(0, np.pi, j - i)) ** 0.7
        if rng.random() < 0.6:  # a fricative consonant opens the syllable
            m = min(n - i, int(rng.uniform(0.04, 0.1) * sample_rate_hz))
            b, a = signal.butter(2, rng.uniform(0.35, 0.7), "high")
            hiss = signal.lfilter(b, a, rng.standard_normal(m)) * np.hanning(m)
            voiced[i : i + m] += 0.3 * rng.uniform(0.3, 1.0) * np.abs(voiced).max() * hiss
    return voiced * np.maximum(envelope, 0.0)


def speech_like(duration_s: float, sample_rate_hz: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like audio (not music): words of 1-4 syllables at about 4 per second, with pauses.

    A formant synthesiser: a glottal pulse train with pitch accents, declination and jitter, plus
    breath noise, through three formants gliding between vowels, and fricative noise bursts.
    YAMNet tags it Speech, not Music. float32 mono, peak 0.5.
    """
    if duration_s <= 0:
        raise UsageError(f"duration_s must be positive, got {duration_s}")
    rng = np.random.default_rng([seed, 7919])
    out = np.zeros(int(round(duration_s * sample_rate_hz)))
    f0_hz = rng.uniform(100, 210)
    t_s = rng.uniform(0.05, 0.3)
    while t_s < duration_s:
        word = _word(int(rng.integers(1, 5)), f0_hz, sample_rate_hz, rng) * rng.uniform(0.6, 1.0)
        start = int(t_s * sample_rate_hz)
        piece = word[: max(0, out.size - start)]
        out[start : start + piece.size] += piece
        t_s += word.size / sample_rate_hz + rng.uniform(0.08, 0.5)
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.5 * out / peak).astype(np.float32)


# -------------------------------------------------------------------------------------- picture
def _disc_mask(distance: np.ndarray, size: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased mask of ``distance < size`` (``size`` broadcasts per frame)."""
    return np.clip((size - distance) / pixel + 0.5, 0.0, 1.0)


def _shape_mask(
    shape: str, du: np.ndarray, dv: np.ndarray, size: np.ndarray, pixel: float
) -> np.ndarray:
    """Anti-aliased mask of ``shape``, half-extent ``size``, at offsets (du, dv) from its centre."""
    ax, ay = np.abs(du), np.abs(dv)
    if shape == "square":
        return _disc_mask(np.maximum(ax, ay), size, pixel)
    if shape == "diamond":
        return _disc_mask((ax + ay) * 0.75, size, pixel)
    if shape == "cross":
        return _disc_mask(np.maximum(np.maximum(ax, ay), 2.5 * np.minimum(ax, ay)), size, pixel)
    radius = np.sqrt(du * du + dv * dv)
    if shape == "ring":
        return _disc_mask(radius, size, pixel) - _disc_mask(radius, 0.55 * size, pixel)
    return _disc_mask(radius, size, pixel)


def _background(
    pattern: str, u: np.ndarray, v: np.ndarray, *, angle_deg: float, period: float,
    phase: np.ndarray,
) -> np.ndarray:
    """Pattern in [0, 1] over (frames, height, width); ``phase`` (cycles, per frame) moves it."""
    angle = math.radians(angle_deg)
    along = (u * math.cos(angle) + v * math.sin(angle)) / period
    across = (v * math.cos(angle) - u * math.sin(angle)) / period
    if pattern == "checker":
        wave = np.sin(2 * np.pi * (along - phase)) * np.sin(2 * np.pi * across)
    elif pattern == "rings":
        wave = np.sin(2 * np.pi * (np.sqrt(u * u + v * v) / period - phase))
    elif pattern == "waves":
        wave = np.sin(2 * np.pi * (along + 0.3 * np.sin(np.pi * across) - phase))
    else:  # stripes
        wave = np.sin(2 * np.pi * (along - phase))
    return 0.5 + 0.5 * wave


def _hsv(hue_deg: float, saturation: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, 1.0)
    return np.array(rgb, dtype=np.float32)


@dataclass(frozen=True)
class _Layout:
    """Where a section's picture sits: drawn once per section, so chunks of it agree."""

    stripe_angle_deg: float
    centre: tuple[float, float]  # (u, v) in frame heights from the frame centre
    orbit_phase: float  # radians

    @classmethod
    def draw(cls, style: Genre, rng: np.random.Generator) -> _Layout:
        angle_deg = style.stripe_angle_deg + rng.uniform(-15, 15)
        centre = rng.uniform([-0.35, -0.15], [0.35, 0.15])
        orbit_phase = rng.uniform(0, 2 * np.pi)
        return cls(float(angle_deg), (float(centre[0]), float(centre[1])), float(orbit_phase))


def _render_section_frames(
    section: Section, style: Genre, layout: _Layout, times_s: np.ndarray, *, size: tuple[int, int]
) -> np.ndarray:
    """uint8 frames (len(times_s), height, width, 3) of one section."""
    width, height = size
    beats = ((times_s - section.start_s) / section.beat_s).astype(np.float32)[:, None, None]
    flash = np.exp(-(beats % 1.0) / _FLASH_DECAY_BEATS)  # 1 on each beat, then fading
    u = ((np.arange(width, dtype=np.float32) - width / 2) / height)[None, None, :]
    v = ((np.arange(height, dtype=np.float32) - height / 2) / height)[None, :, None]
    pattern = _background(style.pattern, u, v, angle_deg=layout.stripe_angle_deg,
                          period=section.stripe_period, phase=beats)
    background = section.brightness * (0.6 + 0.4 * pattern) * (1.0 - 0.3 * v) * (1 + 0.25 * flash)
    # the shape orbits once per bar around a random centre and swells on every beat
    orbit = (2 * np.pi / 4.0) * beats + np.float32(layout.orbit_phase)
    cu = np.float32(layout.centre[0]) + 0.2 * np.cos(orbit)
    cv = np.float32(layout.centre[1]) + 0.12 * np.sin(orbit)
    radius = 0.2 * (1.0 + 0.35 * flash)
    pixel = 1.0 / height
    main = _shape_mask(section.shape, u - cu, v - cv, radius, pixel)
    satellites = np.zeros_like(main)
    for k in range(section.satellites):  # one small disc per instrument layer beyond the first
        angle = 2 * orbit + 2 * np.pi * k / section.satellites
        du, dv = u - (cu + 0.4 * np.cos(angle)), v - (cv + 0.3 * np.sin(angle))
        disc = _disc_mask(np.sqrt(du * du + dv * dv), 0.3 * radius, pixel)
        satellites = np.maximum(satellites, disc)
    main *= 1.0 - satellites
    shape_value = np.minimum(1.0, section.brightness + 0.3 + 0.4 * flash)
    weights = np.stack([(1.0 - main - satellites) * background, main * shape_value,
                        satellites * shape_value], axis=-1)
    accent = _hsv(section.hue_deg + style.accent_hue_deg, min(1.0, section.saturation + 0.1))
    colours = np.stack([_hsv(section.hue_deg, section.saturation), accent, accent[::-1]])
    return np.clip(weights @ (255.0 * colours) + 0.5, 0, 255).astype(np.uint8)


def render_frames(
    sections: list[Section], *, genre: str, duration_s: float, size: tuple[int, int] = (96, 64),
    fps: float = 12.0, rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """The picture of ``sections``, in order, as uint8 blocks (frames, height, width, 3).

    Frame ``k`` shows time ``k / fps``; there are ``round(duration_s * fps)`` frames in all.
    ``size`` is (width, height). Blocks hold at most ``_CHUNK_FRAMES`` frames of one section,
    which bounds memory at large sizes.
    """
    style = _genre(genre)
    n_frames = int(round(duration_s * fps))
    for section in sections:
        layout = _Layout.draw(style, rng)
        first = int(round(section.start_s * fps))
        last = min(n_frames, int(round(section.end_s * fps)))
        for start in range(first, last, _CHUNK_FRAMES):
            times_s = np.arange(start, min(last, start + _CHUNK_FRAMES)) / fps
            yield _render_section_frames(section, style, layout, times_s, size=size)


# -------------------------------------------------------------------------------------- writing
def write_mp4(
    path: str | Path, *, frames: Iterable[np.ndarray], audio: np.ndarray, fps: float,
    sample_rate_hz: int,
) -> None:
    """Write H.264 (yuv420p, ultrafast) + AAC mono (64 kbit/s) to ``path``.

    ``frames`` yields uint8 RGB blocks (frames, height, width, 3), even width and height;
    ``audio`` is float32 mono in [-1, 1].
    """
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4") as container:
        audio_stream = container.add_stream(
            "aac", rate=sample_rate_hz, layout="mono", options={"aac_coder": "fast"}
        )
        audio_stream.bit_rate = 64000
        video_stream = None
        index = 0
        for block in frames:
            if video_stream is None:
                video_stream = container.add_stream(
                    "libx264", rate=rate, options={"preset": "ultrafast", "crf": "20"}
                )
                video_stream.height, video_stream.width = block.shape[1:3]
                video_stream.pix_fmt = "yuv420p"
            for image in block:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, 1 / rate
                index += 1
                container.mux(video_stream.encode(frame))
        if video_stream is not None:
            container.mux(video_stream.encode(None))
        _encode_audio(container, audio_stream, audio, sample_rate_hz)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate_hz: int) -> None:
    """Encode in 1024-sample frames with explicit pts (the muxer then trims the AAC priming)."""
    samples = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
    for start in range(0, samples.shape[1], _AUDIO_FRAME_SAMPLES):
        chunk = samples[:, start : start + _AUDIO_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sample_rate_hz
        frame.pts, frame.time_base = start, Fraction(1, sample_rate_hz)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# ------------------------------------------------------------------------------------ data sets
@dataclass
class SynthResult:
    """What :func:`generate` wrote. ``factors`` maps id to that video's factors."""

    out_dir: Path
    manifest_path: Path
    factors_path: Path
    ids: list[str]
    paths: list[Path]
    factors: dict[str, dict] = field(repr=False)


def video_id(seed: int, index: int) -> str:
    """The id of video ``index`` of the data set generated with ``seed``."""
    return f"s{seed}-{index:05d}"


def split_for_id(video_id: str) -> str:
    """``train`` / ``val`` / ``test`` (80/10/10), stable: it depends on the id alone (the same rule
    as ``mvpt extract`` applies to items without a split)."""
    return stable_split(video_id)


def _genre_for(seed: int, index: int) -> str:
    """Genres come in shuffled blocks: each block of len(GENRES) videos has every genre once."""
    shuffle_rng = np.random.default_rng([seed, index // len(GENRE_NAMES), 1])
    return GENRE_NAMES[shuffle_rng.permutation(len(GENRE_NAMES))[index % len(GENRE_NAMES)]]


def _duration_for(
    duration_s: float | tuple[float, float], equal_length: bool, rng: np.random.Generator
) -> float:
    """A fixed length, one drawn from the range, or (equal_length) the middle of the range."""
    if isinstance(duration_s, (int, float)):
        return float(duration_s)
    low_s, high_s = duration_s
    if equal_length:
        return (low_s + high_s) / 2.0  # 30 s for the default range
    return float(rng.uniform(low_s, high_s))


def generate_video(
    out_dir: str | Path, *, index: int, seed: int = 0,
    duration_s: float | tuple[float, float] = DEFAULT_DURATION_S, equal_length: bool = False,
    size: tuple[int, int] = (96, 64), fps: float = 12.0, audio_rate_hz: int = 16000,
) -> dict:
    """Write video ``index`` of data set ``seed`` to ``out_dir/videos/<id>.mp4``; return factors.

    The file depends only on these arguments, not on which other videos are generated, so
    videos can be made in any order, in parallel, or a few at a time.
    """
    _validate(1, seed, duration_s, size, fps, audio_rate_hz)
    if not isinstance(index, int) or index < 0:
        raise UsageError(f"index must be a non-negative integer, got {index!r}")
    plan_rng, audio_rng, video_rng = (np.random.default_rng([seed, index, k]) for k in range(3))
    genre = _genre_for(seed, index)
    n_frames = max(1, int(round(_duration_for(duration_s, equal_length, plan_rng) * fps)))
    length_s = n_frames / fps
    sections = plan_sections(genre, duration_s=length_s, fps=fps, rng=plan_rng,
                             palette=genre_palette(genre, seed=seed))
    audio = render_music(sections, genre=genre, duration_s=length_s, sample_rate_hz=audio_rate_hz,
                         rng=audio_rng)
    frames = render_frames(sections, genre=genre, duration_s=length_s, size=size, fps=fps,
                           rng=video_rng)
    ident = video_id(seed, index)
    path = Path(out_dir) / "videos" / f"{ident}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{ident}.partial.mp4")
    write_mp4(partial, frames=frames, audio=audio, fps=fps, sample_rate_hz=audio_rate_hz)
    os.replace(partial, path)  # a crash never leaves a truncated video under the final name
    return {"id": ident, "index": index, "genre": genre, "duration_s": round(length_s, 6),
            "sections": [section.to_dict() for section in sections]}


def _validate(n: int, seed: int, duration_s, size, fps: float, audio_rate_hz: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    bounds = (duration_s, duration_s) if isinstance(duration_s, (int, float)) else tuple(duration_s)
    if len(bounds) != 2 or not 1.0 <= bounds[0] <= bounds[1]:
        raise UsageError(f"duration_s must be >= 1 s, or a range (low, high) with "
                         f"1 <= low <= high; got {duration_s!r}")
    width, height = size
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise UsageError(f"size must be (width, height) in pixels, even and >= 16; got {size!r}")
    if not 1.0 <= fps <= 120.0:
        raise UsageError(f"fps must be between 1 and 120, got {fps}")
    if audio_rate_hz not in AAC_RATES_HZ:
        raise UsageError(f"audio_rate_hz must be one of {AAC_RATES_HZ}, got {audio_rate_hz}")


def _write_manifest(path: Path, ids: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "split"])
        for ident in ids:
            writer.writerow([ident, f"videos/{ident}.mp4", split_for_id(ident)])


def generate(
    out_dir: str | Path, *, n: int, seed: int = 0,
    duration_s: float | tuple[float, float] = DEFAULT_DURATION_S, equal_length: bool = False,
    size: tuple[int, int] = (96, 64), fps: float = 12.0, audio_rate_hz: int = 16000,
    progress: bool = False,
) -> SynthResult:
    """Write ``n`` synthetic music videos, ``manifest.csv`` and ``factors.json`` under ``out_dir``.

    ``duration_s`` is one length or a (low, high) range drawn per video. ``equal_length`` gives
    every video the middle of the range (30 s by default), which removes the length shortcut of
    appendix C.6. ``size`` is (width, height) in pixels; ``fps`` and ``audio_rate_hz`` are rates.
    """
    _validate(n, seed, duration_s, size, fps, audio_rate_hz)
    out = Path(out_dir)
    indices: Iterable[int] = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="video")
    factors = {}
    for index in indices:
        info = generate_video(out, index=index, seed=seed, duration_s=duration_s,
                              equal_length=equal_length, size=size, fps=fps,
                              audio_rate_hz=audio_rate_hz)
        factors[info["id"]] = info
    ids = list(factors)
    _write_manifest(out / "manifest.csv", ids)
    params = {"seed": seed, "n": n, "duration_s": duration_s, "equal_length": equal_length,
              "size": list(size), "fps": fps, "audio_rate_hz": audio_rate_hz}
    factors_path = out / "factors.json"
    factors_path.write_text(json.dumps({"params": params, "videos": factors}, indent=1))
    paths = [out / "videos" / f"{ident}.mp4" for ident in ids]
    return SynthResult(out, out / "manifest.csv", factors_path, ids, paths, factors)


def load_factors(out_dir: str | Path) -> dict[str, dict]:
    """Factors of a generated data set, id -> factors, with sections as :class:`Section`."""
    data = json.loads((Path(out_dir) / "factors.json").read_text())
    return {
        ident: {**info, "sections": [Section.from_dict(s) for s in info["sections"]]}
        for ident, info in data["videos"].items()
    }
