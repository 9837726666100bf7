"""YAMNet's log-mel front end in numpy: 16 kHz mono -> log(mel + 0.001) frames.

Frames are 25 ms (400 samples) with a periodic Hann window, 10 ms hop (160 samples), no
padding; the magnitude of a 512-point FFT goes through 64 triangular mel bands between 125 and
7500 Hz on the HTK mel scale (mel = 1127 ln(1 + f / 700)), with triangles laid out in mel, the
DC bin left out and no area normalisation, then ``log(mel + 0.001)``.
Frame ``i`` covers samples ``[i * hop, i * hop + window)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from mvpt.errors import EncoderError

#: Frames per FFT in one chunk: bounds memory for long waves (about 8 MB of float32 per chunk).
_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class LogMelConfig:
    """Parameters of the front end; the defaults are YAMNet's."""

    sample_rate_hz: int = 16000
    window_samples: int = 400
    hop_samples: int = 160
    fft_size: int = 512
    n_mels: int = 64
    fmin_hz: float = 125.0
    fmax_hz: float = 7500.0
    log_offset: float = 0.001

    def to_dict(self) -> dict:
        return asdict(self)


YAMNET_LOGMEL = LogMelConfig()


def hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def _band_edges_mel(config: LogMelConfig) -> np.ndarray:
    """n_mels + 2 equally spaced mel points: band ``b`` rises from edge b, peaks at b+1, falls at b+2."""
    return np.linspace(hz_to_mel(config.fmin_hz), hz_to_mel(config.fmax_hz), config.n_mels + 2)


def mel_band_centres_hz(config: LogMelConfig = YAMNET_LOGMEL) -> np.ndarray:
    """Peak frequency of each mel band, float64 [n_mels]."""
    return mel_to_hz(_band_edges_mel(config)[1:-1])


@lru_cache(maxsize=8)
def mel_filterbank(config: LogMelConfig = YAMNET_LOGMEL) -> np.ndarray:
    """Triangular weights, float32 [fft_size // 2 + 1, n_mels] (rows: FFT bins, DC row zero)."""
    if not 0 <= config.fmin_hz < config.fmax_hz <= config.sample_rate_hz / 2:
        raise EncoderError(
            f"mel range {config.fmin_hz}-{config.fmax_hz} Hz must lie inside 0-Nyquist "
            f"({config.sample_rate_hz / 2} Hz) and be increasing"
        )
    bin_freqs_hz = np.linspace(0.0, config.sample_rate_hz / 2, config.fft_size // 2 + 1)
    bin_mel = hz_to_mel(bin_freqs_hz)[:, None]
    edges = _band_edges_mel(config)
    lower, centre, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no pitch
    weights = weights.astype(np.float32)
    weights.flags.writeable = False  # cached and shared
    return weights


def frame_count(n_samples: int, config: LogMelConfig = YAMNET_LOGMEL) -> int:
    """Number of whole frames in ``n_samples`` (no padding)."""
    if n_samples < config.window_samples:
        return 0
    return 1 + (n_samples - config.window_samples) // config.hop_samples


def periodic_hann(length: int) -> np.ndarray:
    """Hann window of ``length`` samples that tiles with period ``length`` (as in STFTs)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def log_mel_spectrogram(wave: np.ndarray, *, config: LogMelConfig = YAMNET_LOGMEL) -> np.ndarray:
    """wave float [n_samples] in [-1, 1] at ``config.sample_rate_hz`` -> float32 [n_frames, n_mels]."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise EncoderError(f"log-mel front end needs a mono wave [n_samples], got shape {wave.shape}")
    n_frames = frame_count(wave.shape[0], config)
    out = np.empty((n_frames, config.n_mels), dtype=np.float32)
    if n_frames == 0:
        return out
    window = periodic_hann(config.window_samples)
    filterbank = mel_filterbank(config)
    frames = np.lib.stride_tricks.sliding_window_view(wave, config.window_samples)[:: config.hop_samples]
    for start in range(0, n_frames, _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES] * window
        magnitude = np.abs(np.fft.rfft(chunk, n=config.fft_size, axis=1)).astype(np.float32)
        out[start : start + _CHUNK_FRAMES] = np.log(magnitude @ filterbank + config.log_offset)
    return out
