"""The per-frame vocoder parameter layout: what the decoder predicts and the vocoder consumes.

One frame = HOP (256) samples at 22050 Hz; frame i covers output samples [i*256, (i+1)*256).
An utterance of n samples (a multiple of 256) has exactly n // 256 frames.

Columns of a ``[n_frames, FEATURE_DIM]`` float32 array:

- ``LF0``  natural log of f0 in Hz; through unvoiced frames linearly interpolated between the
  neighbouring voiced frames (held constant before the first / after the last voiced frame;
  ``LF0_DEFAULT`` if the utterance has no voiced frame at all).
- ``VUV``  1.0 voiced / 0.0 unvoiced (the model outputs a probability; the vocoder treats it
  as a soft voicing weight).
- ``ENV``  N_ENV log-amplitude spectral envelope values (natural log of |H(f)|, audio scaled to
  [-1, 1]) on mel-spaced band centres ``env_centres_hz()`` from 0 to 11025 Hz, each the average
  of the log envelope under a triangular band (see ``env_filterbank``). Synthesis interpolates
  linearly between centres.
- ``AP``   N_AP aperiodicity bands in dB (10*log10 of aperiodic / total power), clipped to
  [AP_MIN_DB, 0]: 0 dB = pure noise, -60 dB = perfectly periodic. Band edges ``AP_EDGES_HZ``;
  synthesis interpolates linearly (in dB) between band centres.

This module imports only numpy and npc_voice.contracts, so the model, vocoder and analysis share it.
"""
from __future__ import annotations

import numpy as np

from npc_voice.contracts import HOP as HOP  # re-exported: one frame of the layout below
from npc_voice.contracts import SAMPLE_RATE

NYQUIST = SAMPLE_RATE / 2.0

N_ENV = 60
N_AP = 6
FEATURE_DIM = 2 + N_ENV + N_AP  # 68

LF0 = 0
VUV = 1
ENV = slice(2, 2 + N_ENV)  # 2:62
AP = slice(2 + N_ENV, 2 + N_ENV + N_AP)  # 62:68

F0_MIN_HZ = 60.0  # analysis range; the teacher (joe) speaks around 90-200 Hz
F0_MAX_HZ = 400.0
LF0_DEFAULT = float(np.log(120.0))  # lf0 for an utterance with no voiced frame
AP_MIN_DB = -60.0
# Aperiodicity band edges (Hz): finer where voicing structure matters (low), coarse above 4 kHz
# where speech is mostly noise anyway.
AP_EDGES_HZ: tuple[float, ...] = (0.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0, NYQUIST)
ENV_FLOOR = -20.0  # log-amplitude floor (natural log) for silence; about -174 dB


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.0)


def env_centres_hz() -> np.ndarray:
    """[N_ENV] band centres, equally spaced on the mel scale, first 0 Hz, last 11025 Hz."""
    return mel_to_hz(np.linspace(0.0, float(hz_to_mel(NYQUIST)), N_ENV))


def ap_centres_hz() -> np.ndarray:
    """[N_AP] centres of the aperiodicity bands (midpoints of AP_EDGES_HZ)."""
    e = np.asarray(AP_EDGES_HZ)
    return 0.5 * (e[:-1] + e[1:])


def env_filterbank(n_bins: int) -> np.ndarray:
    """[N_ENV, n_bins] triangular weights over linear bins 0..NYQUIST, each row sums to 1.

    Triangle k rises from centre k-1 to centre k and falls to centre k+1 (the end bands are
    half triangles), so averaging a log envelope with these rows and interpolating back
    linearly between centres is a close-to-identity round trip on a smooth envelope.
    """
    freqs = np.linspace(0.0, NYQUIST, n_bins)
    c = env_centres_hz()
    w = np.zeros((N_ENV, n_bins))
    for k in range(N_ENV):
        lo = c[k - 1] if k > 0 else c[0]
        hi = c[k + 1] if k < N_ENV - 1 else c[-1]
        up = (freqs - lo) / max(c[k] - lo, 1e-9)
        down = (hi - freqs) / max(hi - c[k], 1e-9)
        tri = np.clip(np.minimum(up if k > 0 else np.ones_like(freqs), down if k < N_ENV - 1 else np.ones_like(freqs)),
                      0.0, 1.0)
        tri[(freqs < lo) | (freqs > hi)] = 0.0
        if not tri.any():  # a band narrower than one bin: take the nearest bin
            tri[int(np.argmin(np.abs(freqs - c[k])))] = 1.0
        w[k] = tri / tri.sum()
    return w


def interp_matrix(centres_hz: np.ndarray, n_bins: int) -> np.ndarray:
    """[len(centres), n_bins] matrix M so that ``values @ M`` interpolates band values linearly
    onto n_bins linear bins 0..NYQUIST (held flat outside the first/last centre)."""
    freqs = np.linspace(0.0, NYQUIST, n_bins)
    eye = np.eye(len(centres_hz))
    return np.stack([np.interp(freqs, centres_hz, eye[k]) for k in range(len(centres_hz))])
