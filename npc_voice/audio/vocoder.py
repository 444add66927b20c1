"""Streaming harmonic-plus-noise vocoder: per-frame features (npc_voice.audio.features) -> PCM.

Source-filter synthesis in the frequency domain, one 256-sample frame per row, batched over
streams and frames (two real FFTs per frame, no per-stream Python):

- Excitation: a pulse train whose phase accumulates f0 sample by sample (f0 ramps linearly
  from the previous frame's centre to this one's, so pitch never jumps). Each pulse is a
  16-tap windowed sinc at its exact fractional position (band-limited, no jitter) with amplitude
  sqrt(period); plus white noise read from a fixed table at an offset hashed from the stream's
  frame counter (the same samples whatever the batch or slot).
- Filter: the minimum-phase spectrum of the envelope (log magnitude from the 60 mel bands,
  phase = its Hilbert transform via the folded real cepstrum, a fixed matrix). Above 1 kHz the bands
  are deconvolved (the band values whose interpolation re-analyses to the features) and sharpened,
  each frame's energy kept: the 60 bands smooth formants, and that cost DNSMOS P.808 0.2 (``_env_to_bins``).
  Minimum phase gives every harmonic its own phase, like a real glottal pulse through a vocal tract, instead
  of the buzz of all harmonics starting in phase.
- Mix: per frequency, periodic power fraction = voicing * voicing control * (1 - aperiodicity)
  * (1 - breathiness * w(f)); the rest is noise; total power follows the envelope (cheaptrick's power
  spectral density: unit-variance noise and sqrt(T0)-amplitude pulses both give |H|^2). w(f) rises
  from 0 at 500 Hz to 1 at 3 kHz (log frequency): breath is aspiration noise above the low
  harmonics, as in a breathy voice. Unshaped (w = 1) breathiness replaced the low harmonics with
  noise too and dropped DNSMOS OVRL from 3.24 to 1.99 at 0.6; shaped, 3.19 (see MODEL_CARD.md).
- Styles (npc_voice.contracts.STYLES): the voicing control 0 makes a whisper (noise through the
  envelope); the tilt control (dB per octave around 1 kHz, minimum phase) brightens a shout.
- Overlap-add: each frame's N_FFT-sample response (frame + decaying filter tail) is added into
  a per-stream tail, so filter ringing crosses frame boundaries smoothly: no clicks.

All per-stream memory lives in the state pool (``state_spec``): stepping K frames in one call or
one frame K times gives the same samples. ``step`` has fixed shapes, no host syncs and no host-to-
device copies, so it can run inside a captured CUDA graph. On CPU the pulse timing runs compiled
(``_pulses_kernel``, numba: the same pulses as the torch ops, ~0.5 ms less per call) and a call's
pulse slots are cut to those it uses.
"""
from __future__ import annotations

import math

import numpy as np
import torch

try:
    import numba
except ImportError:  # a dependency, but the torch path below serves without it
    numba = None  # type: ignore[assignment]

from npc_voice.audio import features as F
from npc_voice.contracts import (
    CONTROL_BREATHINESS,
    CONTROL_FORMANT,
    CONTROL_PITCH,
    CONTROL_RANGES,
    CONTROL_TILT,
    CONTROL_VOICING,
    CONTROL_VOLUME,
    HOP,
    N_CONTROLS,
    NEUTRAL_CONTROLS,
    StateSpec,
)

__all__ = [  # the control names are re-exported: callers of the vocoder read them here
    "CONTROL_BREATHINESS", "CONTROL_FORMANT", "CONTROL_PITCH", "CONTROL_TILT", "CONTROL_VOICING", "CONTROL_VOLUME",
    "HOP", "N_CONTROLS", "NEUTRAL_CONTROLS", "Vocoder",
]

N_FFT = 1024  # response length per frame: 256 samples + up to ~34 ms of filter ring-down
N_BINS = N_FFT // 2 + 1
DELAY = 8  # samples; pulses/noise sit DELAY into the buffer so a pulse's sinc taps before it stay inside
TAIL = N_FFT - HOP
assert N_FFT % HOP == 0, "overlap-add works in whole frames (_overlap_add)"
F0_CLAMP = (20.0, 1000.0)  # Hz, after the pitch control
MAX_PULSES = math.ceil(HOP * F0_CLAMP[1] / F.SAMPLE_RATE) + 1  # pulses that can fall in one frame
FORMANT_CLAMP = CONTROL_RANGES["formant"].value  # what the engine accepts; also guards direct callers
TILT_CLAMP = (-12.0, 12.0)  # dB per octave
TILT_RANGE_HZ = (125.0, 8000.0)  # the tilt is flat outside this range, 0 dB at 1 kHz
BREATH_BAND_HZ = (500.0, 3000.0)  # breathiness weight w(f): 0 below, 1 above, log-linear between
ENV_DETAIL_HZ = (500.0, 1000.0)  # envelope: interpolated below, reconstructed and sharpened above (_env_to_bins)
ENV_SHARPEN = 0.5  # cepstral lifter on the reconstructed envelope above ENV_DETAIL_HZ
ENV_CLAMP = (F.ENV_FLOOR - 10.0, 6.0)  # log amplitude; speech sits around -12..0
NOISE_TABLE = 1 << 16  # samples of stored white noise (3 s), read at a hashed offset per frame
TAPS = 16  # windowed-sinc taps per pulse (fractional placement, band-limited)
WARP_CACHE = 32  # formant values whose warped filter matrix is kept (~250 KiB each)
MAX_WARP_GROUPS = 12  # distinct formants in one batch above which the per-row warp is cheaper
CPU_RESPONSE_ROWS = 128  # frame responses (streams x K) computed at once on CPU (cache-sized: _responses)
_SINC_CUT = 0.92  # pulse bandwidth as a fraction of Nyquist (the window's transition fits under it)


def _min_phase_matrix() -> torch.Tensor:
    """[N_BINS, N_BINS] real matrix P: phase = log_magnitude @ P is the minimum phase (folded cepstrum)."""
    eye = torch.eye(N_BINS, dtype=torch.float64)
    cep = torch.fft.irfft(eye, n=N_FFT)  # [N_BINS, N_FFT] real cepstrum of each basis log-magnitude
    fold = torch.zeros(N_FFT, dtype=torch.float64)
    fold[0] = 1.0
    fold[1:N_FFT // 2] = 2.0
    fold[N_FFT // 2] = 1.0
    return torch.fft.rfft(cep * fold, n=N_FFT).imag.float()


def _lifter(boost: float) -> torch.Tensor:
    """[N_ENV, N_ENV] float64: band values -> band values with cepstral coefficients c2.. scaled by 1 + boost."""
    n = F.N_ENV
    k = np.arange(n)[:, None]
    dct = np.sqrt(2.0 / n) * np.cos(np.pi * k * (np.arange(n)[None, :] + 0.5) / n)  # orthonormal DCT-II rows
    dct[0] /= np.sqrt(2.0)
    gain = np.where(np.arange(n) >= 2, 1.0 + boost, 1.0)
    return torch.tensor(dct.T @ np.diag(gain) @ dct)  # symmetric: env @ L == L @ env


def _env_to_bins() -> torch.Tensor:
    """[N_ENV, N_BINS] float64: the 60 band values -> log|H| on the filter's bins.

    Below ENV_DETAIL_HZ[0], linear interpolation between band centres. Above ENV_DETAIL_HZ[1], the
    consistent reconstruction: the band values v whose interpolation, averaged again under the analysis
    bands (``F.env_filterbank``), gives back the features (v = env A^-1, A = interp @ filterbank^T,
    condition number 3), then the cepstral lifter 1 + ENV_SHARPEN. Plain interpolation smooths every
    formant twice (the analysis triangles, then the interpolation's): 1.83 dB mean error against
    cheaptrick's 513-bin envelope on held-out teacher frames, 1.51 dB reconstructed. Measured on 15
    held-out lines (DNSMOS P.808): teacher resynthesis 3.78 -> 3.95 reconstructed, student 3.53 -> 3.70,
    and with the lifter 3.99 (MODEL_CARD.md). Between the two frequencies a log-frequency crossfade: the
    low bands are only ~30 Hz apart and follow single harmonics, where the sharpening made the voice
    rougher (DNSMOS SIG 3.48 -> 3.43)."""
    interp = F.interp_matrix(F.env_centres_hz(), N_BINS)
    consistent = np.linalg.solve(interp @ F.env_filterbank(N_BINS).T, interp)
    detail = _lifter(ENV_SHARPEN).numpy() @ consistent
    return torch.tensor(interp + _log_freq_ramp(*ENV_DETAIL_HZ) * (detail - interp))


def _log_freq_ramp(lo_hz: float, hi_hz: float) -> np.ndarray:
    """[N_BINS] log2(f / lo) / log2(hi / lo) clipped to [0, 1]."""
    f = np.maximum(np.linspace(0.0, F.NYQUIST, N_BINS), 1e-3)
    return np.clip(np.log2(f / lo_hz) / np.log2(hi_hz / lo_hz), 0.0, 1.0)


def _hash_uniform(index: torch.Tensor) -> torch.Tensor:
    """int64 counter -> float32 uniform in [0, 1): a stateless integer hash (same on CPU and GPU).

    Constants are below 2**31 so every product of 32-bit values fits in int64 without overflow.
    """
    x = (index ^ (index >> 32)) & 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & 0xFFFFFFFF
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x.to(torch.float32) * (1.0 / 4294967296.0)


def _pulses_kernel(f0: np.ndarray, prev_f0: np.ndarray, phase0: np.ndarray, pos: np.ndarray, amp: np.ndarray,
                   phase_end: np.ndarray) -> int:
    """``Vocoder._pulses`` in one pass per stream (numba, CPU): the same float32 operations in the
    same order (the phase sums accumulate in float64 and round per sample, as torch's CPU cumsum
    does), so the same pulses. Writes pos/amp [B, K, MAX_PULSES] (zeros where no pulse) and the
    final phase [B]; returns the most pulses any frame holds (at least 1)."""
    n_rows, n_frames = f0.shape
    hop = HOP
    sr = np.float32(F.SAMPLE_RATE)
    inv_sr = np.float32(1.0 / F.SAMPLE_RATE)
    tiny = np.float32(1e-9)
    half = np.float32(HOP / 2)
    fhop = np.float32(HOP)
    one = np.float32(1.0)
    ramp = np.empty(hop, dtype=np.float32)
    for i in range(hop):
        r = (np.float32(i) + half) / fhop
        ramp[i] = r if r < one else one
    f0_t = np.empty(hop, dtype=np.float32)
    phi = np.empty(hop + 1, dtype=np.float32)
    used = 1
    for b in range(n_rows):
        ph = phase0[b]
        last = prev_f0[b] if prev_f0[b] > 0 else f0[b, 0]
        for k in range(n_frames):
            cur = f0[b, k]
            d = cur - last
            acc = 0.0  # float64, rounded to float32 per sample
            phi[0] = ph
            for i in range(hop):
                f0_t[i] = last + d * ramp[i]
                acc += np.float64(f0_t[i] * inv_sr)
                phi[i + 1] = ph + np.float32(acc)
            end = ph + np.float32(acc)
            n_pulses = 0
            i = 0
            for m in range(MAX_PULSES):
                target = np.float32(m + 1)
                while i <= hop and phi[i] < target:  # searchsorted, left: first i with phi[i] >= target
                    i += 1
                if i > hop:
                    pos[b, k, m] = 0.0
                    amp[b, k, m] = 0.0
                    continue
                i1 = i if i >= 1 else 1
                p1 = phi[i1]
                p0 = phi[i1 - 1]
                span = p1 - p0
                if span < tiny:
                    span = tiny
                pos[b, k, m] = np.float32(i1 - 2) + (target - p0) / span
                j = i1 - 1 if i1 - 1 < hop - 1 else hop - 1
                amp[b, k, m] = np.sqrt((one / f0_t[j]) * sr)  # torch's scalar / tensor: reciprocal, then times
                n_pulses += 1
            if n_pulses > used:
                used = n_pulses
            ph = end - np.float32(np.floor(end))
            last = cur
        phase_end[b] = ph
    return used


_pulses_cpu = numba.njit(cache=True, nogil=True)(_pulses_kernel) if numba is not None else None


def _inputs_kernel(params: np.ndarray, controls: np.ndarray, neutral: np.ndarray, phase_pool: np.ndarray,
                   prev_pool: np.ndarray, counter_pool: np.ndarray, slots: np.ndarray, noise_table: np.ndarray,
                   clean: np.ndarray, clean_controls: np.ndarray, rows: np.ndarray, f0: np.ndarray,
                   prev: np.ndarray, phase0: np.ndarray, noise: np.ndarray) -> None:
    """``Vocoder.step``'s work before the frame responses, on CPU in one pass (numba): the
    parameters cleaned (non-finite -> 0, envelope clamped), the controls (non-finite -> neutral)
    and their clamped per-frame rows, f0 after pitch, each row's state read at its slot, and each
    frame's noise read from the table at its hashed offset. The same float32 operations as the
    torch code, except ``exp`` (libm's, within an ULP of torch's)."""
    n_rows, n_frames, width = params.shape
    n_controls = controls.shape[1]
    env_lo, env_hi = np.float32(ENV_CLAMP[0]), np.float32(ENV_CLAMP[1])
    lf0_lo, lf0_hi = np.float32(math.log(F0_CLAMP[0])), np.float32(math.log(F0_CLAMP[1]))
    f0_lo, f0_hi = np.float32(F0_CLAMP[0]), np.float32(F0_CLAMP[1])
    hop = noise.shape[2]
    scale = np.float32(1.0 / 4294967296.0)
    table = np.float32(NOISE_TABLE)
    mask = np.int64(0xFFFFFFFF)
    for b in range(n_rows):
        for c in range(n_controls):
            v = controls[b, c]
            clean_controls[b, c] = v if np.isfinite(v) else neutral[c]
        pitch = min(max(clean_controls[b, CONTROL_PITCH], np.float32(0.25)), np.float32(4.0))
        for k in range(n_frames):
            row = rows[b * n_frames + k]
            for c in range(n_controls):
                row[c] = clean_controls[b, c]
            row[CONTROL_FORMANT] = min(max(row[CONTROL_FORMANT], np.float32(FORMANT_CLAMP[0])),
                                       np.float32(FORMANT_CLAMP[1]))
            row[CONTROL_BREATHINESS] = min(max(row[CONTROL_BREATHINESS], np.float32(0.0)), np.float32(1.0))
            row[CONTROL_VOICING] = min(max(row[CONTROL_VOICING], np.float32(0.0)), np.float32(1.0))
            row[CONTROL_TILT] = min(max(row[CONTROL_TILT], np.float32(TILT_CLAMP[0])), np.float32(TILT_CLAMP[1]))
            for j in range(width):
                v = params[b, k, j]
                v = v if np.isfinite(v) else np.float32(0.0)
                if F.ENV.start <= j < F.ENV.stop:
                    v = min(max(v, env_lo), env_hi)
                clean[b, k, j] = v
            lf0 = min(max(clean[b, k, F.LF0], lf0_lo), lf0_hi)
            f0[b, k] = min(max(np.float32(np.exp(lf0)) * pitch, f0_lo), f0_hi)
        s = slots[b]
        phase0[b] = phase_pool[s, 0]
        prev[b, 0] = prev_pool[s, 0]
        prev[b, 1] = prev_pool[s, 1]
        counter = counter_pool[s, 0]
        for k in range(n_frames):  # _hash_uniform of the frame's counter, then the offset into the table
            x = counter + k
            x = (x ^ (x >> 32)) & mask
            x = ((x ^ (x >> 16)) * np.int64(0x7FEB352D)) & mask
            x = ((x ^ (x >> 15)) * np.int64(0x2C1B3C6D)) & mask
            x = x ^ (x >> 16)
            offset = int(np.float32(x) * scale * table)
            for i in range(hop):
                noise[b, k, i] = noise_table[offset + i]


def _output_kernel(resp: np.ndarray, clean_controls: np.ndarray, prev: np.ndarray, f0: np.ndarray,
                   phase_end: np.ndarray, slots: np.ndarray, phase_pool: np.ndarray, prev_pool: np.ndarray,
                   tail_pool: np.ndarray, counter_pool: np.ndarray, pcm: np.ndarray) -> None:
    """``Vocoder.step``'s work after the frame responses, on CPU in one pass (numba): overlap-add
    into each row's tail, the volume (ramped over the first frame from the previous one), the
    output clamp, and the state written back at each row's slot. The same float32 sums in the same
    order as ``_overlap_add`` and the torch code: the same samples, bit for bit. Every row's tail
    is read before any is written (padding rows may share the scratch slot, as in torch)."""
    n_rows, n_frames, n_fft = resp.shape
    hop = pcm.shape[1] // n_frames
    tail_len = tail_pool.shape[1]
    tails = np.empty((n_rows, tail_len), dtype=np.float32)
    for b in range(n_rows):
        tails[b] = tail_pool[slots[b]]
    one = np.float32(1.0)
    vols = np.empty(n_rows, dtype=np.float32)
    for b in range(n_rows):
        vol = min(max(clean_controls[b, CONTROL_VOLUME], np.float32(0.0)), np.float32(16.0))
        vols[b] = vol
        last = prev[b, 1]
        step = vol - last
        tail = tails[b]
        for k in range(n_frames):
            r = resp[b, k]
            for i in range(hop):
                v = r[i] + tail[i]
                if k == 0:
                    g = last + step * (np.float32(i + 1) / np.float32(hop))
                else:
                    g = vol
                v = v * g
                v = np.float32(0.0) if np.isnan(v) else v
                pcm[b, k * hop + i] = min(max(v, -one), one)
            for i in range(tail_len - hop):  # T_q = r[q + 1] + T_(q + 1), then the last block alone
                tail[i] = r[hop + i] + tail[hop + i]
            for i in range(tail_len - hop, tail_len):
                tail[i] = r[hop + i]
    for b in range(n_rows):
        s = slots[b]
        phase_pool[s, 0] = phase_end[b]
        prev_pool[s, 0] = f0[b, n_frames - 1]
        prev_pool[s, 1] = vols[b]
        tail_pool[s] = tails[b]
        counter_pool[s, 0] += n_frames


_inputs_cpu = numba.njit(cache=True, nogil=True)(_inputs_kernel) if numba is not None else None
_output_cpu = numba.njit(cache=True, nogil=True)(_output_kernel) if numba is not None else None


def _filter_kernel(spectra: np.ndarray, shift: np.ndarray, formant: np.ndarray, tilt: np.ndarray,
                   lowcut: np.ndarray, tilt_spec: np.ndarray, log_mag: np.ndarray, phase: np.ndarray) -> None:
    """``Vocoder._filter_gather`` after its matrix product and energy change, on CPU in one pass
    (numba): spectra [R, >= 2 * N_BINS] (log|H| | phase), shift [R] (half the log energy change)
    -> the shift, the low cut and the tilt added, the formant warp (linear interpolation at
    bin / formant) -> log_mag, phase [R, N_BINS]. The same float32 operations in the same order
    as the torch code (no fastmath): the same filter, bit for bit."""
    n_rows = spectra.shape[0]
    n_bins = log_mag.shape[1]
    mag = np.empty(n_bins, dtype=np.float32)
    ph = np.empty(n_bins, dtype=np.float32)
    lower = np.empty(n_bins, dtype=np.int64)  # the warp's taps and weights for formant ``last``
    weight = np.empty(n_bins, dtype=np.float32)
    top = np.float32(n_bins - 1)
    last = np.float32(-1.0)  # formants are positive (clamped); not NaN: fastmath assumes no NaN
    for r in range(n_rows):
        t = tilt[r]
        for k in range(n_bins):
            mag[k] = spectra[r, k] - shift[r] + lowcut[0, k] + t * tilt_spec[0, k]
            ph[k] = spectra[r, n_bins + k] + lowcut[1, k] + t * tilt_spec[1, k]
        f = formant[r]
        if f != last:  # a stream's K frames are consecutive rows: most rows keep the previous taps
            last = f
            for k in range(n_bins):
                pos = min(np.float32(k) / f, top)
                lower[k] = min(int(np.floor(pos)), n_bins - 2)
                weight[k] = pos - np.float32(lower[k])
        for k in range(n_bins):
            i0 = lower[k]
            log_mag[r, k] = mag[i0] + (mag[i0 + 1] - mag[i0]) * weight[k]
            phase[r, k] = ph[i0] + (ph[i0 + 1] - ph[i0]) * weight[k]


_filter_cpu = numba.njit(cache=True, nogil=True)(_filter_kernel) if numba is not None else None


def _overlap_add(resp: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """resp [B, K, N_FFT] frame responses, tail [B, TAIL] -> (output frames [B, K, HOP], new tail).

    The same sums in the same order as adding frame after frame into a running tail (so K frames
    in one call equal K calls of one frame, bit for bit), in a few ops for the whole call. In
    blocks of HOP samples (r_j[q]: block q of frame j's response; tail blocks T_0..T_{n-2}, where
    n = N_FFT / HOP), frame j leaves T_{n-2} = r_j[n-1] and T_q = r_j[q+1] + T_{q+1} as it was
    after frame j-1, and outputs r_j[0] + T_0 as it was. Each T_q is computed for all K frames at
    once from T_{q+1} shifted by one frame (the incoming tail in front)."""
    b, k, _ = resp.shape
    n = N_FFT // HOP
    r = resp.view(b, k, n, HOP)
    t = tail.view(b, n - 1, HOP)
    acc = r[:, :, n - 1]  # T_{n-2} after each frame
    new_tail = [acc[:, -1]]
    for q in range(n - 2, -1, -1):  # T_q after each frame; at q = 0 the output frames
        acc = r[:, :, q] + torch.cat([t[:, q : q + 1], acc[:, :-1]], dim=1)
        if q:
            new_tail.append(acc[:, -1])
    return acc, torch.stack(new_tail[::-1], dim=1).reshape(b, TAIL)


class Vocoder(torch.nn.Module):
    """Batched streaming vocoder. No trainable weights; the buffers are fixed tables."""

    _log_spec: torch.Tensor
    _energy_mags: torch.Tensor
    _filter_columns: torch.Tensor
    _plain_mag: torch.Tensor
    _ap_interp: torch.Tensor
    _lowcut_spec: torch.Tensor
    _noise: torch.Tensor
    _tap_offsets: torch.Tensor
    _neutral: torch.Tensor
    _tilt_spec: torch.Tensor
    _breath_shape: torch.Tensor

    def __init__(self, postfilter: float = 0.0) -> None:
        """``postfilter`` > 0 deepens the envelope's formant structure (cepstral lifter 1 + postfilter on
        c2 and up, frame energy kept) on top of the built-in sharpening (ENV_SHARPEN above 1 kHz). 0 = off."""
        super().__init__()
        if not (math.isfinite(postfilter) and 0.0 <= postfilter <= 2.0):
            raise ValueError(f"postfilter must be in [0, 2], got {postfilter!r}")
        self.postfilter = postfilter
        interp = _env_to_bins()  # [N_ENV, N_BINS] bands -> log|H| on bins
        # complex log spectrum of the minimum-phase filter, linear in env: [N_ENV, 2, N_BINS] (log|H|, phase)
        log_spec = torch.cat([interp, interp @ _min_phase_matrix().double()], dim=1)
        self.register_buffer("_plain_mag", torch.tensor(F.interp_matrix(F.env_centres_hz(), N_BINS)).float(),
                             persistent=False)  # [N_ENV, N_BINS] plain interpolation: the level reference
        self.register_buffer("_log_spec", (_lifter(postfilter) @ log_spec).float(), persistent=False)
        self.register_buffer("_energy_mags", 2.0 * torch.cat([self._log_spec[:, :N_BINS], self._plain_mag], dim=1),
                             persistent=False)  # [N_ENV, 2 * N_BINS], doubled: log power (x2 is exact in float)
        self.register_buffer("_filter_columns", torch.cat([self._log_spec, self._energy_mags], dim=1).contiguous(),
                             persistent=False)  # [N_ENV, 4 * N_BINS]: _filter_kernel's one matrix product
        self._warp_cache: dict[float, torch.Tensor] = {}  # formant -> _warped_matrix (CPU path)
        # No DC and little below 40 Hz (a pulse train through an envelope with a DC value drifts). Part of
        # the minimum-phase filter, so it stays causal: a zero-phase notch rings both ways, and its
        # pre-ringing wrapped around the FFT buffer into an echo three frames later.
        freqs = np.linspace(0.0, F.NYQUIST, N_BINS)
        log_cut = torch.tensor(np.log(np.maximum((freqs / 40.0) ** 2, 1e-4)).clip(max=0.0))[None, :]
        self.register_buffer("_lowcut_spec", torch.cat([log_cut, log_cut @ _min_phase_matrix().double()]).float(),
                             persistent=False)  # [2, N_BINS] added to (log|H|, phase)
        self.register_buffer("_ap_interp", torch.tensor(F.interp_matrix(F.ap_centres_hz(), N_BINS),
                                                        dtype=torch.float32), persistent=False)  # [N_AP, N_BINS]
        # A fixed table of unit-variance noise; each frame reads HOP samples at a hashed offset.
        gen = torch.Generator().manual_seed(20261129)
        self.register_buffer("_noise", torch.randn(NOISE_TABLE + HOP, generator=gen), persistent=False)
        self.register_buffer("_neutral", torch.tensor(NEUTRAL_CONTROLS), persistent=False)  # controls for NaN
        # 1 dB/octave of tilt as a minimum-phase (log|H|, phase) pair: 0 dB at 1 kHz, flat outside TILT_RANGE_HZ
        lo, hi = TILT_RANGE_HZ
        octaves = torch.tensor(_log_freq_ramp(lo, hi) * np.log2(hi / lo) - np.log2(1000.0 / lo))[None, :]
        tilt = octaves * (math.log(10.0) / 20.0)
        self.register_buffer("_tilt_spec", torch.cat([tilt, tilt @ _min_phase_matrix().double()]).float(),
                             persistent=False)  # [2, N_BINS]
        self.register_buffer("_breath_shape", torch.tensor(_log_freq_ramp(*BREATH_BAND_HZ), dtype=torch.float32),
                             persistent=False)  # [N_BINS] w(f)
        self.register_buffer("_tap_offsets", torch.arange(-TAPS // 2 + 1, TAPS // 2 + 1, dtype=torch.float32),
                             persistent=False)

    def state_spec(self) -> dict[str, StateSpec]:
        return {
            "voc_phase": StateSpec((1,), torch.float32),  # pulse phase in cycles, [0, 1)
            "voc_prev": StateSpec((2,), torch.float32),  # previous frame's f0 in Hz (0 = none yet), volume
            "voc_tail": StateSpec((TAIL,), torch.float32),  # overlap-add tail of earlier frames' responses
            "voc_counter": StateSpec((1,), torch.int64),  # frames synthesized: seeds the noise
        }

    # -- spectra -------------------------------------------------------------------------------------

    def _filter(self, env: torch.Tensor, formant: torch.Tensor, tilt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """env [R, N_ENV] log amplitude on mel centres, formant [R], tilt [R] dB/octave
        -> minimum-phase filter as (log|H|, phase), each [R, N_BINS].

        Formant warp a: H'(f) = H(f / a), so a > 1 moves formants up (a smaller vocal tract). The
        phase is warped with the magnitude (close to the warped envelope's own minimum phase).

        Exact forms of the same arithmetic: on CPU one matrix product for every row and a compiled
        pass for the energy, the low cut, the tilt and the warp (``_filter_compiled``); without
        numba the warp folded into one matrix per distinct formant value (``_warped_matrix``; a
        batch holds few characters), so each row is one matrix product; elsewhere (CUDA graphs:
        fixed shapes, no host syncs) the warp gathers per row."""
        if env.device.type != "cpu" or env.shape[0] == 0:
            return self._filter_gather(env, formant, tilt)
        if _filter_cpu is not None:
            return self._filter_compiled(env, formant, tilt)
        values, group = torch.unique(formant, return_inverse=True)
        if len(values) > MAX_WARP_GROUPS:
            return self._filter_gather(env, formant, tilt)
        # [env | tilt | 1] @ [warped log spectrum; warped tilt; warped low cut]: the warped (log|H|, phase)
        x = torch.cat([env, tilt[:, None], torch.ones_like(tilt)[:, None]], dim=1)  # [R, N_ENV + 2]
        if len(values) == 1:
            warped = x @ self._warped_matrix(float(values[0]))
        else:  # rows grouped by formant (one gather), one product per group, then back in order
            order = torch.argsort(group, stable=True)
            ends = torch.bincount(group, minlength=len(values)).cumsum(0).tolist()
            xs = x[order]
            parts = [xs[start:end] @ self._warped_matrix(a)
                     for start, end, a in zip([0, *ends[:-1]], ends, values.tolist(), strict=True)]
            warped = torch.empty(env.shape[0], 2 * N_BINS, device=env.device).index_copy_(0, order, torch.cat(parts))
        shift = 0.5 * self._energy_change(env)  # the warp weights sum to 1: a constant shift commutes with it
        return warped[:, :N_BINS] - shift[:, None], warped[:, N_BINS:]

    def _energy_change(self, env: torch.Tensor) -> torch.Tensor:
        """[R] log energy of the reconstructed envelope minus that of the plain interpolation."""
        return self._log_energy_change(env @ self._energy_mags)

    @staticmethod
    def _log_energy_change(both: torch.Tensor) -> torch.Tensor:
        """[R, 2 * N_BINS] 2 log|H| (reconstructed, plain interpolation) -> [R] their log energies' difference."""
        energy = torch.logsumexp(both.reshape(-1, 2, N_BINS), dim=2)  # [R, 2]
        return energy[:, 0] - energy[:, 1]

    def _warped_matrix(self, formant: float) -> torch.Tensor:
        """[N_ENV + 2, 2 * N_BINS]: rows (env, tilt, 1) -> the warped (log|H|, phase), cached per value."""
        m = self._warp_cache.get(formant)
        if m is None or m.device != self._log_spec.device:
            stacked = torch.cat([self._log_spec.view(-1, 2, N_BINS), self._tilt_spec[None], self._lowcut_spec[None]])
            f = torch.full((stacked.shape[0],), formant, device=stacked.device)
            m = self._warp(stacked, f).flatten(1).contiguous()  # [N_ENV + 2, 2 * N_BINS]
            if len(self._warp_cache) >= WARP_CACHE:  # many override values: start over (each op atomic)
                self._warp_cache.clear()
            self._warp_cache[formant] = m
        return m

    @staticmethod
    def _warp(log_spec: torch.Tensor, formant: torch.Tensor) -> torch.Tensor:
        """[R, 2, N_BINS] sampled at bin / formant (linear interpolation), per row."""
        bins = torch.arange(N_BINS, device=log_spec.device, dtype=torch.float32)
        pos = (bins / formant[:, None]).clamp(max=N_BINS - 1)
        i0 = pos.floor().long().clamp(max=N_BINS - 2)  # [R, N_BINS]
        w = (pos - i0)[:, None, :]
        idx = i0[:, None, :].expand(-1, 2, -1)
        lo = torch.gather(log_spec, 2, idx)
        return lo + (torch.gather(log_spec, 2, idx + 1) - lo) * w

    def _filter_compiled(self, env: torch.Tensor, formant: torch.Tensor, tilt: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_filter_gather`` on CPU: one matrix product (spectra and energies of every row at
        once), the log-sum-exp of the energies, then ``_filter_kernel`` for the rest: ~25 ops and
        a product per formant group before."""
        spectra = env.contiguous() @ self._filter_columns  # [R, 4 * N_BINS]
        shift = 0.5 * self._log_energy_change(spectra[:, 2 * N_BINS :])
        r = env.shape[0]
        log_mag = torch.empty(r, N_BINS)
        phase = torch.empty(r, N_BINS)
        _filter_cpu(spectra.numpy(), shift.numpy(), np.ascontiguousarray(formant.numpy(), dtype=np.float32),
                    np.ascontiguousarray(tilt.numpy(), dtype=np.float32), self._lowcut_spec.numpy(),
                    self._tilt_spec.numpy(), log_mag.numpy(), phase.numpy())
        return log_mag, phase

    def _filter_gather(self, env: torch.Tensor, formant: torch.Tensor, tilt: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_filter`` row by row: fixed shapes, no host syncs."""
        log_spec = (env @ self._log_spec.flatten(1)).view(-1, 2, N_BINS)  # [R, 2, N_BINS]
        # keep each frame's energy (the plain interpolation's): shift log|H| by half the log energy change
        log_spec = log_spec - torch.stack([0.5 * self._energy_change(env), torch.zeros_like(tilt)], dim=1)[:, :, None]
        warped = self._warp(log_spec + self._lowcut_spec + tilt[:, None, None] * self._tilt_spec, formant)
        return warped[:, 0], warped[:, 1]

    def _frame_responses(self, feats: torch.Tensor, controls: torch.Tensor, pulse_pos: torch.Tensor,
                         pulse_amp: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Rows R = B*K. feats [R, 68], controls [R, N_CONTROLS], pulse_pos/amp [R, P] (amp 0 = no pulse),
        noise [R, HOP] -> time-domain response [R, N_FFT]."""
        r = feats.shape[0]
        log_mag, phase = self._filter(feats[:, F.ENV], controls[:, CONTROL_FORMANT], controls[:, CONTROL_TILT])
        ap_db = (feats[:, F.AP] @ self._ap_interp).clamp(F.AP_MIN_DB, 0.0)  # [R, N_BINS]
        ap = torch.exp(ap_db * (math.log(10.0) / 10.0))
        voicing = ((feats[:, F.VUV] - 0.25) * 2.0).clamp(0.0, 1.0) * controls[:, CONTROL_VOICING]  # soft decision
        breath = controls[:, CONTROL_BREATHINESS, None] * self._breath_shape  # [R, N_BINS]
        periodic = voicing[:, None] * (1.0 - breath) * (1.0 - ap)  # [R, N_BINS] power fraction
        # excitation in the time domain: windowed-sinc pulses at fractional positions, and noise
        base = pulse_pos.floor()
        taps = base[..., None] + self._tap_offsets  # [R, P, TAPS] sample index of every tap
        x = taps - pulse_pos[..., None]
        kernel = _SINC_CUT * torch.special.sinc(_SINC_CUT * x) * torch.cos(x * (math.pi / (TAPS + 1))) ** 2
        exc = torch.zeros(2, r, N_FFT, device=feats.device)
        exc[0].scatter_add_(1, (taps + DELAY).long().flatten(1), (kernel * pulse_amp[..., None]).flatten(1))
        exc[1, :, DELAY:DELAY + HOP] = noise
        spec = torch.fft.rfft(exc, n=N_FFT)  # [2, R, N_BINS]
        # mix under |H|, then turn by the filter's phase (torch.polar and complex-by-complex products
        # of the mix cost twice as much on CPU)
        gain = torch.exp(log_mag)
        mixed = spec[0] * (gain * periodic.sqrt()) + spec[1] * (gain * (1.0 - periodic).sqrt())
        return torch.fft.irfft(mixed * torch.complex(torch.cos(phase), torch.sin(phase)), n=N_FFT)

    def _responses(self, *rows: torch.Tensor) -> torch.Tensor:
        """``_frame_responses`` of every row (all row-major [R, ...]); on CPU in pieces of
        CPU_RESPONSE_ROWS rows. Its [R, N_BINS] complex temporaries fall out of cache beyond ~128
        rows (64 streams at K = 4: 16.6 ms in one piece, 9.6 in pieces), while the per-stream work
        around it (controls, pulse timing, state, overlap-add) costs per call, so it runs once for
        all the call's streams: 32 streams at K = 8 14.2 -> 12.7 ms against the whole vocoder per
        16 streams (``bench/vocoder_cost.py --against-stream-pieces``)."""
        n = rows[0].shape[0]
        if n <= CPU_RESPONSE_ROWS or rows[0].device.type != "cpu":
            return self._frame_responses(*rows)
        return torch.cat([self._frame_responses(*(t[i : i + CPU_RESPONSE_ROWS] for t in rows))
                          for i in range(0, n, CPU_RESPONSE_ROWS)])

    # -- excitation timing ---------------------------------------------------------------------------

    def _pulses(self, f0: torch.Tensor, prev_f0: torch.Tensor, phase0: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """f0 [B, K] Hz (after pitch), prev_f0 [B] (0 = none), phase0 [B] ->
        pulse positions [B, K, P], amplitudes [B, K, P] (0 where no pulse), final phase [B]."""
        b, k = f0.shape
        prev = torch.cat([torch.where(prev_f0 > 0, prev_f0, f0[:, 0])[:, None], f0[:, :-1]], dim=1)  # [B, K]
        # f0 ramps linearly from the previous frame centre (t = -128) to this one's (t = +128), then holds
        ramp = ((torch.arange(HOP, device=f0.device, dtype=torch.float32) + HOP / 2) / HOP).clamp(max=1.0)
        f0_t = prev[..., None] + (f0 - prev)[..., None] * ramp  # [B, K, HOP]
        cum = torch.cumsum(f0_t * (1.0 / F.SAMPLE_RATE), dim=-1)  # phase advance within the frame
        starts = []
        ph = phase0
        for j in range(k):  # the only sequential part: a [B] carry per frame
            starts.append(ph)
            end = ph + cum[:, j, -1]
            ph = end - end.floor()
        start = torch.stack(starts, dim=1)  # [B, K]
        phi = torch.cat([start[..., None], start[..., None] + cum], dim=-1)  # [B, K, HOP+1]; phi[.., i] at t=i-1
        targets = torch.arange(1, MAX_PULSES + 1, device=f0.device, dtype=torch.float32).expand(b, k, MAX_PULSES)
        idx = torch.searchsorted(phi.contiguous(), targets.contiguous())  # first i with phi[i] >= m
        valid = idx <= HOP
        i1 = idx.clamp(1, HOP)
        p1 = torch.gather(phi, 2, i1)
        p0 = torch.gather(phi, 2, i1 - 1)
        pos = (i1 - 2).to(torch.float32) + (targets - p0) / (p1 - p0).clamp(min=1e-9)
        f0_at = torch.gather(f0_t, 2, (i1 - 1).clamp(max=HOP - 1))
        amp = torch.where(valid, torch.sqrt(F.SAMPLE_RATE / f0_at), torch.zeros_like(f0_at))
        return torch.where(valid, pos, torch.zeros_like(pos)), amp, ph

    @staticmethod
    def _pulses_numba(f0: torch.Tensor, prev_f0: torch.Tensor, phase0: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_pulses`` then ``_used_pulses`` on CPU in one compiled pass (``_pulses_kernel``): the
        ~60 small torch ops of the timing cost ~0.5 ms a call whatever its size, a first piece's
        whole decoder layer."""
        b, k = f0.shape
        pos = np.empty((b, k, MAX_PULSES), dtype=np.float32)
        amp = np.empty((b, k, MAX_PULSES), dtype=np.float32)
        end = np.empty(b, dtype=np.float32)
        f0_np, prev_np, phase_np = (np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in (f0, prev_f0, phase0))
        used = _pulses_cpu(f0_np, prev_np, phase_np, pos, amp, end)
        return torch.from_numpy(pos[..., :used]), torch.from_numpy(amp[..., :used]), torch.from_numpy(end)

    @staticmethod
    def _used_pulses(pos: torch.Tensor, amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """On CPU, pulse slots [B, K, P] cut to the most pulses any frame of the call holds.

        A frame has room for MAX_PULSES (13, for f0 up to 1 kHz) but speech at 80-300 Hz puts 1-4
        pulses in 256 samples; the empty slots (amplitude 0, always the last ones: pulses fill in
        order) still cost their 16 windowed-sinc taps and their scatter. Dropping them leaves the
        same samples bit for bit (only zeros were added). Not on CUDA: it reads a count back to
        the host, and the step must keep fixed shapes for its graphs."""
        if pos.device.type != "cpu" or pos.shape[-1] == 0:
            return pos, amp
        used = max(1, int((amp > 0).sum(dim=-1).max()))
        return pos[..., :used], amp[..., :used]

    # -- public API ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, state: dict[str, torch.Tensor], slots: torch.Tensor, params: torch.Tensor,
             controls: torch.Tensor) -> torch.Tensor:
        """Synthesize K frames for B streams. params [B, K, FEATURE_DIM], controls [B, N_CONTROLS],
        state: name -> [slots, *shape] pool (rows ``slots`` read and written in place).
        Returns PCM [B, K * HOP] float32 in [-1, 1]."""
        b, k, d = params.shape
        if d != F.FEATURE_DIM or controls.shape != (b, N_CONTROLS):
            raise ValueError(f"expected params [B, K, {F.FEATURE_DIM}] and controls [B, {N_CONTROLS}], "
                             f"got {tuple(params.shape)} and {tuple(controls.shape)}")
        if params.device.type == "cpu" and _inputs_cpu is not None and _pulses_cpu is not None and b > 0:
            return self._step_cpu(state, slots, params, controls)
        params = torch.nan_to_num(params.float(), nan=0.0, posinf=0.0, neginf=0.0)
        params[..., F.ENV] = params[..., F.ENV].clamp(ENV_CLAMP[0], ENV_CLAMP[1])
        controls = torch.where(torch.isfinite(controls), controls.float(), self._neutral)
        phase0 = state["voc_phase"][slots, 0]
        prev = state["voc_prev"][slots]  # [B, 2]
        tail = state["voc_tail"][slots]  # [B, TAIL]
        counter = state["voc_counter"][slots, 0]  # [B]

        lf0 = params[..., F.LF0].clamp(math.log(F0_CLAMP[0]), math.log(F0_CLAMP[1]))
        pitch = controls[:, CONTROL_PITCH].clamp(0.25, 4.0)
        f0 = (torch.exp(lf0) * pitch[:, None]).clamp(*F0_CLAMP)  # [B, K]
        if f0.device.type == "cpu" and _pulses_cpu is not None and b > 0:
            pulse_pos, pulse_amp, phase_end = self._pulses_numba(f0, prev[:, 0], phase0)
        else:
            pulse_pos, pulse_amp, phase_end = self._pulses(f0, prev[:, 0], phase0)
            pulse_pos, pulse_amp = self._used_pulses(pulse_pos, pulse_amp)

        ctl = controls.clone()
        ctl[:, CONTROL_FORMANT] = ctl[:, CONTROL_FORMANT].clamp(*FORMANT_CLAMP)
        ctl[:, CONTROL_BREATHINESS] = ctl[:, CONTROL_BREATHINESS].clamp(0.0, 1.0)
        ctl[:, CONTROL_VOICING] = ctl[:, CONTROL_VOICING].clamp(0.0, 1.0)
        ctl[:, CONTROL_TILT] = ctl[:, CONTROL_TILT].clamp(*TILT_CLAMP)
        frame_idx = counter[:, None] + torch.arange(k, device=params.device)  # [B, K]
        offset = (_hash_uniform(frame_idx) * NOISE_TABLE).long()  # counter-based: same for any batch
        noise = self._noise[offset[..., None] + torch.arange(HOP, device=params.device)]  # [B, K, HOP]
        rows = ctl[:, None, :].expand(b, k, N_CONTROLS).reshape(b * k, N_CONTROLS)
        resp = self._responses(params.reshape(b * k, d), rows, pulse_pos.reshape(b * k, -1),
                               pulse_amp.reshape(b * k, -1), noise.reshape(b * k, HOP)).reshape(b, k, N_FFT)

        vol = controls[:, CONTROL_VOLUME].clamp(0.0, 16.0)
        ramp = torch.arange(1, HOP + 1, device=params.device, dtype=torch.float32) / HOP
        gain = prev[:, 1:2] + (vol - prev[:, 1])[:, None] * ramp  # [B, HOP]; from last volume to this one
        frames, tail = _overlap_add(resp, tail)
        scale = torch.cat([gain[:, None], vol[:, None, None].expand(b, k - 1, HOP)], dim=1)  # [B, K, HOP]
        pcm = torch.nan_to_num((frames * scale).reshape(b, k * HOP), nan=0.0).clamp(-1.0, 1.0)

        state["voc_phase"][slots, 0] = phase_end
        state["voc_prev"][slots] = torch.stack([f0[:, -1], vol], dim=1)
        state["voc_tail"][slots] = tail
        state["voc_counter"][slots, 0] = counter + k
        return pcm

    def _step_cpu(self, state: dict[str, torch.Tensor], slots: torch.Tensor, params: torch.Tensor,
                  controls: torch.Tensor) -> torch.Tensor:
        """``step`` on CPU: the per-stream work around the frame responses in two compiled passes
        (``_inputs_kernel``, ``_output_kernel``) and the pulse timing in a third, instead of ~100
        small torch ops (~0.5 ms a call whatever its size, ~1.5 ms at 32 streams). The responses
        (matrix products, FFTs) stay in torch. Same samples as the torch path within float rounding
        (libm's exp for f0); the states read and written in place at ``slots``."""
        b, k, d = params.shape
        pools = [state[name] for name in ("voc_phase", "voc_prev", "voc_counter", "voc_tail")]
        if any(not t.is_contiguous() for t in pools):
            raise ValueError("the vocoder's state pools must be contiguous")
        phase_pool, prev_pool, counter_pool, tail_pool = (t.numpy() for t in pools)
        slots_np = np.ascontiguousarray(slots.numpy(), dtype=np.int64)
        clean = np.empty((b, k, d), dtype=np.float32)
        clean_controls = np.empty((b, N_CONTROLS), dtype=np.float32)
        rows = np.empty((b * k, N_CONTROLS), dtype=np.float32)
        f0 = np.empty((b, k), dtype=np.float32)
        prev = np.empty((b, 2), dtype=np.float32)
        phase0 = np.empty(b, dtype=np.float32)
        noise = np.empty((b, k, HOP), dtype=np.float32)
        _inputs_cpu(np.ascontiguousarray(params.detach().numpy(), dtype=np.float32),
                    np.ascontiguousarray(controls.detach().numpy(), dtype=np.float32), self._neutral.numpy(),
                    phase_pool, prev_pool, counter_pool, slots_np, self._noise.numpy(),
                    clean, clean_controls, rows, f0, prev, phase0, noise)
        pos = np.empty((b, k, MAX_PULSES), dtype=np.float32)
        amp = np.empty((b, k, MAX_PULSES), dtype=np.float32)
        phase_end = np.empty(b, dtype=np.float32)
        used = _pulses_cpu(f0, np.ascontiguousarray(prev[:, 0]), phase0, pos, amp, phase_end)
        resp = self._responses(torch.from_numpy(clean).view(b * k, d), torch.from_numpy(rows),
                               torch.from_numpy(np.ascontiguousarray(pos[..., :used])).view(b * k, used),
                               torch.from_numpy(np.ascontiguousarray(amp[..., :used])).view(b * k, used),
                               torch.from_numpy(noise).view(b * k, HOP)).reshape(b, k, N_FFT)
        pcm = np.empty((b, k * HOP), dtype=np.float32)
        _output_cpu(np.ascontiguousarray(resp.numpy()), clean_controls, prev, f0, phase_end, slots_np,
                    phase_pool, prev_pool, tail_pool, counter_pool, pcm)
        return torch.from_numpy(pcm)

    def new_state(self, slots: int = 1, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """A zeroed state pool with ``slots`` rows (what the engine allocates)."""
        return {name: torch.zeros((slots, *s.shape), dtype=s.dtype, device=device)
                for name, s in self.state_spec().items()}

    def synthesize(self, params: torch.Tensor | np.ndarray, controls: torch.Tensor | None = None) -> torch.Tensor:
        """Whole utterance from a fresh state: params [T, FEATURE_DIM] -> PCM [T * HOP] float32."""
        p = torch.as_tensor(params, dtype=torch.float32, device=self._noise.device)
        if controls is None:
            controls = torch.tensor(NEUTRAL_CONTROLS, device=p.device)
        state = self.new_state(1, p.device)
        state["voc_prev"][:, 1] = controls[CONTROL_VOLUME]  # no fade-in for a whole utterance
        slots = torch.zeros(1, dtype=torch.int64, device=p.device)
        return self.step(state, slots, p[None], controls.float().reshape(1, N_CONTROLS))[0]
