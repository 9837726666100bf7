"""PANNs CNN14 (Kong et al., 2020), the AudioSet tagger of appendix A.2, in plain torch.

Written from the published description; the module names follow the released checkpoints
(``Cnn14_mAP=0.431.pth``, a dict whose key ``"model"`` holds the state dict), so those load with
strict key matching:

* front end (32 kHz mono): ``spectrogram_extractor.stft.conv_{real,imag}.weight`` [513, 1, 1024],
  the periodic-Hann-windowed DFT as two strided 1-d convolutions (window 1024, hop 320 samples,
  centred frames with reflect padding), power spectrum, then ``logmel_extractor.melW`` [513, 64]
  (Slaney mel filters 50-14000 Hz, as ``librosa.filters.mel``) and ``10 log10(max(mel, 1e-10))``;
* ``bn0``: a BatchNorm over the 64 mel bins;
* ``conv_block1`` .. ``conv_block6`` (64, 128, 256, 512, 1024, 2048 channels), each two 3x3
  convolutions without bias (``conv1``, ``conv2``) with BatchNorm (``bn1``, ``bn2``) and ReLU,
  then 2x2 average pooling (the last block pools 1x1, as published);
* mean over frequency, max plus mean over time, ``fc1`` (2048) + ReLU, ``fc_audioset`` (527) and a
  sigmoid. Dropout and SpecAugment act only in training and are left out.

:class:`PannsTagger` runs it framewise for the music-region finder: the log-mel of the whole wave
is computed once and cut into windows of ``window_s`` (0.96 s, as YAMNet's patches) every
``hop_s`` (the same grid as the YAMNet tagger, 0.24 s by default); each window's clip-level
output is the class probabilities of one frame. The class list is read from AudioSet's
``class_labels_indices.csv`` (index,mid,display_name), which must list the checkpoint's classes
in its output order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mvpt.data.taggers import FrameProbs, layout_from_labels
from mvpt.errors import EncoderError

SAMPLE_RATE_HZ = 32000
WINDOW_SAMPLES = 1024
HOP_SAMPLES = 320
N_MELS = 64
FMIN_HZ, FMAX_HZ = 50.0, 14000.0
N_CLASSES = 527
CHANNELS = (64, 128, 256, 512, 1024, 2048)
AMIN = 1e-10
DEFAULT_WINDOW_S = 0.96
LABELS_FILE = "class_labels_indices.csv"
_WINDOW_BATCH = 32  # windows per forward pass: bounds memory on long films


# ------------------------------------------------------------------------------- front end
def dft_kernels(n_fft: int = WINDOW_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary DFT rows times a periodic Hann window, float32 [n_fft//2+1, 1, n_fft]:
    ``cos(2 pi k n / N) w[n]`` and ``-sin(2 pi k n / N) w[n]``."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)
    angle = 2.0 * np.pi * np.outer(np.arange(n_fft // 2 + 1), n) / n_fft
    real = (np.cos(angle) * window)[:, None, :]
    imag = (-np.sin(angle) * window)[:, None, :]
    return real.astype(np.float32), imag.astype(np.float32)


def _hz_to_slaney_mel(freq_hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    mel = freq_hz * 3.0 / 200.0
    log_step = np.log(6.4) / 27.0
    above = freq_hz >= 1000.0
    return np.where(above, 15.0 + np.log(np.maximum(freq_hz, 1e-12) / 1000.0) / log_step, mel)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(sample_rate_hz: int = SAMPLE_RATE_HZ, n_fft: int = WINDOW_SAMPLES,
                   n_mels: int = N_MELS, fmin_hz: float = FMIN_HZ,
                   fmax_hz: float = FMAX_HZ) -> np.ndarray:
    """Triangular filters on the Slaney mel scale with Slaney area normalisation (the defaults of
    ``librosa.filters.mel``), float32 [n_fft//2+1, n_mels] (the layout of ``melW``)."""
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, n_fft // 2 + 1)
    edges_hz = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin_hz),
                                             _hz_to_slaney_mel(fmax_hz), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


class _STFT(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        real, imag = dft_kernels(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real))
            self.conv_imag.weight.copy_(torch.from_numpy(imag))
        for p in self.parameters():
            p.requires_grad_(False)


class _Spectrogram(nn.Module):
    """Power spectrogram of centred frames: [batch, samples] -> [batch, 1, frames, bins]."""

    def __init__(self, n_fft: int = WINDOW_SAMPLES, hop: int = HOP_SAMPLES):
        super().__init__()
        self.n_fft = n_fft
        self.stft = _STFT(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)
        return (real ** 2 + imag ** 2).transpose(1, 2)[:, None]


class _LogMel(nn.Module):
    def __init__(self):
        super().__init__()
        self.melW = nn.Parameter(torch.from_numpy(mel_filterbank()), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


class _ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """CNN14 with the published module names. ``channels`` (the six block widths; fc1 is as wide
    as the last) and ``n_classes`` default to the published sizes; smaller widths exist for
    tests."""

    def __init__(self, *, channels: tuple[int, ...] = CHANNELS, n_classes: int = N_CLASSES):
        super().__init__()
        if len(channels) != 6:
            raise EncoderError(f"CNN14 has 6 conv blocks, got widths {channels}")
        self.channels = tuple(int(c) for c in channels)
        self.n_classes = int(n_classes)
        self.spectrogram_extractor = _Spectrogram()
        self.logmel_extractor = _LogMel()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        widths = (1,) + self.channels
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(self.channels[-1], self.channels[-1])
        self.fc_audioset = nn.Linear(self.channels[-1], self.n_classes)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[batch, samples] at 32 kHz -> log-mel [batch, 1, frames, 64]; frame ``i`` is centred
        on sample ``i * 320``."""
        return self.logmel_extractor(self.spectrogram_extractor(wave))

    def forward_log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [batch, 1, frames, 64] -> class probabilities [batch, n_classes]."""
        x = self.bn0(log_mel.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        x = F.relu(self.fc1(x))
        return torch.sigmoid(self.fc_audioset(x))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Clip-level probabilities [batch, n_classes] of waves [batch, samples] at 32 kHz."""
        return self.forward_log_mel(self.log_mel(wave))


# ---------------------------------------------------------------------------------- loading
def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise EncoderError(f"{path}: PANNs CNN14 weights not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(f"{path}: not a torch checkpoint readable with weights_only=True "
                           f"({reason[:200]})") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{path}: not a PANNs checkpoint (expected a dict whose key 'model' "
                           "holds a state dict of tensors)")
    return state


def load_cnn14(path: str | Path) -> Cnn14:
    """A CNN14 from a PANNs checkpoint, strict: every key and shape must match the published
    layout (block widths are read from the checkpoint, so a narrower test model loads too)."""
    path = Path(path)
    state = _read_checkpoint(path)
    try:
        channels = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 7))
        n_classes = int(state["fc_audioset.weight"].shape[0])
    except KeyError as exc:
        raise EncoderError(f"{path}: not a CNN14 state dict (no key {exc.args[0]!r})") from None
    model = Cnn14(channels=channels, n_classes=n_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise EncoderError(f"{path}: CNN14 keys do not match: missing {missing[:3]}"
                           f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                           f"{' ...' if len(unexpected) > 3 else ''}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise EncoderError(f"{path}: {key} has shape {tuple(state[key].shape)}, CNN14 "
                               f"needs {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_audioset_labels(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(mids, display names) in index order from AudioSet's ``class_labels_indices.csv``
    (header ``index,mid,display_name``; indices 0 .. n-1, each once)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"{path}: AudioSet labels CSV not found (index,mid,display_name; "
                           "give --labels)")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"index", "mid", "display_name"} <= set(reader.fieldnames or ()):
                raise EncoderError(f"{path}: labels CSV needs columns index,mid,display_name, "
                                   f"got {reader.fieldnames}")
            rows = [(int(r["index"]), r["mid"].strip(), r["display_name"].strip())
                    for r in reader]
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncoderError(f"{path}: unreadable labels CSV ({exc})") from None
    rows.sort()
    if [r[0] for r in rows] != list(range(len(rows))):
        raise EncoderError(f"{path}: label indices must be 0..{len(rows) - 1}, each once")
    return tuple(r[1] for r in rows), tuple(r[2] for r in rows)


def _device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PannsTagger:
    """CNN14 class probabilities on windows of ``window_s`` every ``hop_s`` seconds (32 kHz)."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(self, weights: str | Path, *, labels: str | Path | None = None,
                 hop_s: float = 0.24, window_s: float = DEFAULT_WINDOW_S,
                 device: str | None = None):
        weights = Path(weights)
        labels = Path(labels) if labels is not None else weights.with_name(LABELS_FILE)
        self.hop_frames = round(hop_s * SAMPLE_RATE_HZ / HOP_SAMPLES)
        self.window_frames = round(window_s * SAMPLE_RATE_HZ / HOP_SAMPLES)
        if self.hop_frames < 1 or self.window_frames < 32 or self.hop_frames > self.window_frames:
            raise EncoderError(f"need 0.01 <= hop_s <= window_s and window_s >= 0.32, got "
                               f"hop_s={hop_s}, window_s={window_s}")
        self.hop_s = self.hop_frames * HOP_SAMPLES / SAMPLE_RATE_HZ
        self.window_s = self.window_frames * HOP_SAMPLES / SAMPLE_RATE_HZ
        self.device = _device(device)
        self.model = load_cnn14(weights).to(self.device)
        mids, names = read_audioset_labels(labels)
        if len(names) != self.model.n_classes:
            raise EncoderError(f"{labels}: {len(names)} classes, but the checkpoint {weights.name} "
                               f"predicts {self.model.n_classes}")
        self.class_names = names
        self.layout = layout_from_labels(mids, names, source=labels)

    def window_grid(self, n_samples: int) -> tuple[int, int]:
        """(number of windows, log-mel frames they need) to cover ``n_samples``."""
        n_frames = 1 + n_samples // HOP_SAMPLES
        n_windows = 1 + max(0, -(-(n_frames - self.window_frames) // self.hop_frames))
        return n_windows, (n_windows - 1) * self.hop_frames + self.window_frames

    @torch.no_grad()
    def frame_probabilities(self, wave: np.ndarray):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        n_windows, need_frames = self.window_grid(len(wave))
        padded = max(len(wave), (need_frames - 1) * HOP_SAMPLES, WINDOW_SAMPLES)
        wave = np.pad(wave, (0, padded - len(wave)))  # zeros past the end, as the YAMNet tagger
        log_mel = self.model.log_mel(torch.from_numpy(wave)[None].to(self.device))[0, 0]
        starts = np.arange(n_windows) * self.hop_frames
        probs = np.empty((n_windows, self.model.n_classes), np.float32)
        offsets = torch.arange(self.window_frames, device=self.device)
        for first in range(0, n_windows, _WINDOW_BATCH):
            chunk = torch.as_tensor(starts[first:first + _WINDOW_BATCH], device=self.device)
            windows = log_mel[chunk[:, None] + offsets[None, :]][:, None]
            probs[first:first + len(chunk)] = self.model.forward_log_mel(windows).float().cpu()
        # window k's frames are centred on k*hop .. k*hop + (W-1) frames: centre in the middle
        centre0_s = (self.window_frames - 1) / 2 * HOP_SAMPLES / SAMPLE_RATE_HZ
        return FrameProbs(probs, self.hop_s, centre0_s - self.hop_s / 2, layout=self.layout)
