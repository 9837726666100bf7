"""The picture of a synthetic video: shapes, stripes and flashes that follow each section's
sound (:func:`render_frames`)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mvpt.data.synth.styles import Genre, Section, _genre

_FLASH_DECAY_BEATS = 0.3
_CHUNK_FRAMES = 64


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


