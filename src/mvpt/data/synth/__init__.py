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
:func:`render_frames`, :func:`write_mp4`, :func:`music_clip`) are public.

Modules: :mod:`.styles` (voices, genres, section plans), :mod:`.music` (the soundtrack),
:mod:`.pictures` (the frames), :mod:`.writer` (MP4 files, data sets, manifest and factors).
"""

from mvpt.data.synth.music import music_clip, render_music, render_note
from mvpt.data.synth.pictures import render_frames
from mvpt.data.synth.styles import (
    GENRE_NAMES,
    GENRES,
    KEY_NAMES,
    MAX_SECTIONS,
    MIN_SECTION_S,
    PALETTE_SIZE,
    STEPS_PER_BAR,
    VOICES,
    Genre,
    Part,
    Section,
    Theme,
    Voice,
    genre_palette,
    place_themes,
    plan_sections,
)
from mvpt.data.synth.writer import (
    AAC_RATES_HZ,
    DEFAULT_DURATION_S,
    SynthResult,
    generate,
    generate_video,
    load_factors,
    split_for_id,
    video_id,
    write_mp4,
)

__all__ = [
    "AAC_RATES_HZ", "DEFAULT_DURATION_S", "GENRES", "GENRE_NAMES", "KEY_NAMES", "MAX_SECTIONS",
    "MIN_SECTION_S", "PALETTE_SIZE", "STEPS_PER_BAR", "VOICES", "Genre", "Part", "Section",
    "SynthResult", "Theme", "Voice", "generate", "generate_video", "genre_palette", "load_factors",
    "music_clip", "place_themes", "plan_sections", "render_frames", "render_music", "render_note",
    "split_for_id", "video_id", "write_mp4",
]
