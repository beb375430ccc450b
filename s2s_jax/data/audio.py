"""The speech frontend: WAV decoding and log-mel filterbank features, computed on the host in numpy.

Features are computed when a dataset is loaded (`pipeline.prepare`) and by the translate / evaluate tools for a WAV
path, by the same `AudioFrontend.encode`, so training and inference see identical inputs:
  pre-emphasis 0.97 -> 25 ms Hamming windows every 10 ms -> |FFT|^2 -> `num_mel` triangular mel filters (HTK mel
  scale, 20 Hz to Nyquist) -> log(energy + 1e-6) -> per-utterance mean and variance normalisation of every bin.
SpecAugment masking (time and frequency bands) happens on the device, in training only (`models.Seq2Seq.encode`).

An `AudioFrontend` is a speech dataset's frontend (s2s_jax/data/frontend.py): it is saved as the workdir's
`vocab.src.json` (kind 'audio', mel bins, sample rate) and hashed into provenance.json like a vocabulary.
"""

import dataclasses
import functools
import io

import numpy as np

from s2s_jax.data import saved

WIN_MS, HOP_MS, PREEMPHASIS = 25.0, 10.0, 0.97


@dataclasses.dataclass(frozen=True)
class Clip:
  """Raw audio of one example: a name (a file path or a generated utterance's id), int16 or float samples, a rate."""

  name: str
  samples: np.ndarray
  rate: int


def read_wav(source, name: str = '') -> tuple[np.ndarray, int]:
  """(mono float32 samples in [-1, 1] on the int16 grid, sample rate) from a path or bytes; ValueError naming the
  file if it is unreadable or has NaN / infinite samples."""
  import soundfile  # pylint: disable=g-import-not-at-top  (not at import: config validation reads this module)

  name = name or (source if isinstance(source, str) else '<bytes>')
  try:
    samples, rate = soundfile.read(
      source if isinstance(source, str) else io.BytesIO(source), dtype='float32', always_2d=True
    )
  except (RuntimeError, soundfile.LibsndfileError, OSError, EOFError) as e:
    raise ValueError(f'{name}: not a readable audio file ({e}).') from e
  if not len(samples):
    raise ValueError(f'{name}: the audio file has no samples.')
  if not np.all(np.isfinite(samples)):
    raise ValueError(f'{name}: the audio file has NaN or infinite samples.')
  # On the int16 grid that prepared datasets store, so a float WAV gives the same features in training (stored
  # as int16) and at inference (read here).
  return (np.clip(np.round(samples.mean(axis=1) * 32768.0), -32768, 32767) / 32768.0).astype(np.float32), rate


@functools.lru_cache(maxsize=8)
def mel_filterbank(num_mel: int, n_fft: int, rate: int, fmin: float = 20.0) -> np.ndarray:
  """[n_fft // 2 + 1, num_mel] triangular filters equally spaced on the HTK mel scale, each peaking at 1."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges = hz(np.linspace(mel(fmin), mel(rate / 2), num_mel + 2))
  freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
  lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (freqs[None, :] - lower) / (center - lower)
  down = (upper - freqs[None, :]) / (upper - center)
  return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


def window_and_hop(rate: int) -> tuple[int, int]:
  return int(rate * WIN_MS / 1000), int(rate * HOP_MS / 1000)


def num_frames(num_samples: int, rate: int) -> int:
  """Frames of `num_samples` samples (a clip shorter than one window gives one frame)."""
  win, hop = window_and_hop(rate)
  return 1 + max(0, num_samples - win) // hop


def log_mel(samples: np.ndarray, rate: int, num_mel: int = 40, normalize: bool = True) -> np.ndarray:
  """float32 [frames, num_mel] log-mel features of mono samples (see the module docstring)."""
  win, hop = window_and_hop(rate)
  x = np.asarray(samples, np.float32)
  if np.issubdtype(np.asarray(samples).dtype, np.integer):
    x = x / 32768.0
  if len(x) < win:
    x = np.pad(x, (0, win - len(x)))
  x = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
  n = num_frames(len(x), rate)
  frames = np.lib.stride_tricks.as_strided(x, (n, win), (x.strides[0] * hop, x.strides[0]), writeable=False)
  n_fft = 1 << (win - 1).bit_length()
  power = np.abs(np.fft.rfft(frames * np.hamming(win).astype(np.float32), n=n_fft)) ** 2
  feats = np.log(power.astype(np.float32) @ mel_filterbank(num_mel, n_fft, rate) + 1e-6)
  if normalize:
    feats = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-5)
  return feats.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class AudioFrontend(saved.SavedJson):
  """Clips -> log-mel frames [frames, num_mel]: the frontend of a speech dataset (saved as vocab.src.json)."""

  num_mel: int
  sample_rate: int
  kind: str = 'audio'
  source_kind = 'audio'  # a class attribute, not a field

  @property
  def num_features(self) -> int:
    return self.num_mel

  def encode(self, clip: Clip) -> np.ndarray:
    if clip.rate != self.sample_rate:
      raise ValueError(
        f'{clip.name}: sample rate {clip.rate} Hz, but this model reads {self.sample_rate} Hz audio; '
        'resample it first (e.g. sox in.wav -r RATE out.wav).'
      )
    return log_mel(clip.samples, clip.rate, self.num_mel)

  def read(self, path: str) -> Clip:
    samples, rate = read_wav(path)
    return Clip(path, samples, rate)

  def settings(self) -> dict[str, object]:
    return {'kind': self.kind, 'num_mel': self.num_mel, 'sample_rate': self.sample_rate}

  def to_dict(self) -> dict[str, object]:
    return self.settings()

  @classmethod
  def from_dict(cls, d: dict[str, object]) -> 'AudioFrontend':
    return cls(int(d['num_mel']), int(d['sample_rate']))
