"""The hidden factors of the synthetic videos: synthesiser voices, genres (instrumentation,
rhythm, harmony, visual style) and the plan of a video's sections (:func:`plan_sections`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from mvpt.errors import UsageError

STEPS_PER_BAR = 16
MIN_SECTION_S = 3.0
MAX_SECTIONS = 6
PALETTE_SIZE = 5  # themes per genre and data set
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


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
    palette = genre_palette(genre) if palette is None else palette
    n_sections = int(min(len(palette), MAX_SECTIONS, max(1, duration_s // MIN_SECTION_S)))
    order = rng.permutation(len(palette))[:n_sections]
    bounds = _section_bounds(duration_s, n_sections, fps=fps)
    return place_themes(genre, [palette[k] for k in order], bounds)


def place_themes(genre: str, themes: list[Theme], bounds_s: list[float]) -> list[Section]:
    """Sections of ``genre`` playing ``themes`` in order, the k-th over ``[bounds_s[k],
    bounds_s[k + 1])`` seconds (so ``len(bounds_s) == len(themes) + 1``, increasing)."""
    if len(bounds_s) != len(themes) + 1 or any(b <= a for a, b in zip(bounds_s, bounds_s[1:])):
        raise UsageError(f"need {len(themes) + 1} increasing section bounds for {len(themes)} "
                         f"themes, got {bounds_s!r}")
    style = _genre(genre)
    return [_section(style, theme, start_s, end_s)
            for theme, start_s, end_s in zip(themes, bounds_s[:-1], bounds_s[1:])]


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


