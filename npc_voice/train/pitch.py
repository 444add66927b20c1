"""Pitch and voicing of the teacher's audio: short-window NCCF candidates + a Viterbi path.

Why not WORLD's own trackers: the teacher (Piper joe) speaks many vowels in a low, creaky
register (~80 Hz, irregular pulses). harvest and d4c call those frames unvoiced and dio doubles
them to ~160 Hz, so a third of the vowels were labelled as noise and the student learnt to
whisper. A normalized cross-correlation over a window of about one period still finds the
pulse-to-pulse similarity of creak; a dynamic-programming path over the candidates then
prefers continuous pitch (octave jumps cost) and few voicing switches, as RAPT does.

``track(x)`` -> f0 [n] in Hz (0 = unvoiced) at the centres of the 256-sample frames, ready to
be refined by WORLD's stonemask and used by cheaptrick/d4c.
"""
from __future__ import annotations

import numpy as np

from npc_voice.audio.features import F0_MAX_HZ, F0_MIN_HZ, HOP, SAMPLE_RATE

WINDOW = 256  # samples correlated per lag (11.6 ms): about one period of a low voice
N_CAND = 4  # voiced candidates per frame
MIN_R = 0.25  # a lag whose NCCF is below this is no candidate
LAG_WEIGHT = 0.15  # cost per (lag / longest lag): among equal peaks prefer the shortest period
OCTAVE_COST = 1.5  # transition cost per octave of pitch change between voiced frames
SWITCH_COST = 0.6  # transition cost of a voiced <-> unvoiced change
VOICED_R = 0.5  # NCCF at which voiced and unvoiced cost the same (before energy and spectrum terms)
SILENCE_DB = -50.0  # frames this far below the loudest frame are unvoiced (cost)
HIGH_BAND_HZ = 2500.0


def _lags() -> tuple[int, int]:
    return int(np.floor(SAMPLE_RATE / F0_MAX_HZ)), int(np.ceil(SAMPLE_RATE / F0_MIN_HZ))


def nccf(x: np.ndarray, n_frames: int) -> np.ndarray:
    """[n_frames, lmax + 1] normalized cross-correlation of each frame's window with itself shifted by L.

    The reference window starts half a typical period before the frame centre so that the
    correlated stretch is centred on the frame for a ~120 Hz voice."""
    lmin, lmax = _lags()
    off = WINDOW // 2 + 92
    span = WINDOW + lmax
    pad = off + span
    xp = np.pad(np.asarray(x, dtype=np.float64), (pad, pad))
    starts = np.arange(n_frames) * HOP + HOP // 2 + pad - off
    y = xp[starts[:, None] + np.arange(span)[None, :]]  # [n, span]
    nfft = 1 << int(np.ceil(np.log2(span + WINDOW)))
    num = np.fft.irfft(np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(y[:, :WINDOW], nfft)), nfft)[:, : lmax + 1]
    cs = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(y * y, axis=1)], axis=1)
    e_lag = cs[:, WINDOW: WINDOW + lmax + 1] - cs[:, : lmax + 1]  # energy of the window shifted by L
    r = num / np.sqrt(e_lag[:, :1] * e_lag + 1e-12)
    r[:, :lmin] = 0.0
    return r


def _candidates(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top N_CAND local maxima per frame -> (fractional lags [n, K], their NCCF [n, K]; lag 0 = none)."""
    lmin, lmax = _lags()
    n = r.shape[0]
    mid = r[:, 1:-1]
    peak = (mid > r[:, :-2]) & (mid >= r[:, 2:]) & (mid > MIN_R)
    peak[:, : lmin - 1] = False
    score = np.where(peak, mid, -np.inf)
    order = np.argsort(-score, axis=1)[:, :N_CAND]
    rows = np.arange(n)[:, None]
    best = score[rows, order]
    lag = (order + 1).astype(np.float64)
    ok = np.isfinite(best)
    # parabolic interpolation of the peak
    li = np.clip(order + 1, 1, lmax - 1)
    a, b, c = r[rows, li - 1], r[rows, li], r[rows, li + 1]
    denom = a - 2 * b + c
    delta = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(np.abs(denom) > 1e-9, denom, 1.0), 0.0)
    lag = np.where(ok, lag + np.clip(delta, -0.5, 0.5), 0.0)
    return lag, np.where(ok, best, 0.0)


def _frame_terms(x: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(level in dB relative to the loudest frame [n], fraction of energy above HIGH_BAND_HZ [n])."""
    seg = np.zeros((n_frames, 512))
    xp = np.pad(np.asarray(x, dtype=np.float64), (128, 512))
    idx = np.arange(n_frames) * HOP
    seg = xp[idx[:, None] + np.arange(512)[None, :]] * np.hanning(512)
    p = np.abs(np.fft.rfft(seg, axis=1)) ** 2
    total = p.sum(axis=1) + 1e-12
    db = 10 * np.log10(total)
    hi = p[:, int(HIGH_BAND_HZ / SAMPLE_RATE * 512):].sum(axis=1) / total
    return db - db.max(), hi


def track(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] at 22050 Hz -> f0 [len(x) // HOP] in Hz, 0 where unvoiced."""
    n = len(x) // HOP
    if n == 0:
        return np.zeros(0)
    _, lmax = _lags()
    r = nccf(x, n)
    lag, rv = _candidates(r)  # [n, K]
    level, hi = _frame_terms(x, n)
    valid = lag > 0
    f = np.where(valid, SAMPLE_RATE / np.maximum(lag, 1.0), 0.0)
    # local costs: K voiced candidates + 1 unvoiced state
    cost_v = np.where(valid, (1.0 - rv) + LAG_WEIGHT * lag / lmax, np.inf)
    r_max = rv[:, 0]
    cost_u = (r_max - VOICED_R) + (1.0 - VOICED_R)  # equals the best voiced cost at r = VOICED_R (no lag term)
    cost_u = cost_u - 1.0 * np.clip((SILENCE_DB - level) / 10.0, 0.0, 1.0)  # silence: unvoiced
    cost_u = cost_u - 0.6 * np.clip((hi - 0.5) / 0.3, 0.0, 1.0)  # mostly high-band energy: fricative
    local = np.concatenate([cost_v, cost_u[:, None]], axis=1)  # [n, K+1]
    K = lag.shape[1]
    logf = np.log2(np.maximum(f, 1.0))
    acc = local[0].copy()
    back = np.zeros((n, K + 1), dtype=np.int64)
    for i in range(1, n):
        trans = np.empty((K + 1, K + 1))  # [to, from]
        trans[:K, :K] = OCTAVE_COST * np.abs(logf[i][:, None] - logf[i - 1][None, :])
        trans[:K, K] = SWITCH_COST
        trans[K, :K] = SWITCH_COST
        trans[K, K] = 0.0
        tot = acc[None, :] + trans
        back[i] = np.argmin(tot, axis=1)
        acc = tot[np.arange(K + 1), back[i]] + local[i]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmin(acc))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    f0 = np.where(path < K, f[np.arange(n), np.minimum(path, K - 1)], 0.0)
    return f0
