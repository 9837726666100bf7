"""The soundtrack of a synthetic video: notes of the genre's voices, one section after another
(:func:`render_music`), and a stand-alone clip of a genre (:func:`music_clip`)."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from scipy import signal

from mvpt.data.synth.styles import (
    GENRE_NAMES,
    STEPS_PER_BAR,
    VOICES,
    Genre,
    Part,
    Section,
    Voice,
    _genre,
    _layer_parts,
    _midi_to_hz,
    plan_sections,
)
from mvpt.errors import UsageError

_FADE_S = 0.005
_METAL_RATIOS = (1.0, 1.4827, 1.8003, 2.4604, 2.6986, 3.8929)  # inharmonic cymbal partials


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


