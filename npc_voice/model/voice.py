"""``SSMVoice``: the streaming voice the engine drives (implements api.VoiceModel).

prepare   phonemes -> encoder + durations -> frame conditioning + marks   (once per line)
step      cond [B, K, d] -> K decoder steps against the state pool -> vocoder -> PCM
render_prepared   a prepared line -> PCM with a private state (evaluation; text: npc_voice.say.render_text)

The model takes phonemes, never text: the frontend sits above it (docs/ARCHITECTURE.md, "Layers").
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from npc_voice_kernels.decoder_cpu import DecoderArrays, decoder_step_cpu, fused_step_available, pack_decoder

from npc_voice.audio.vocoder import Vocoder
from npc_voice.contracts import (
    CONTROL_RANGES,
    HOP,
    N_CONTROLS,
    NEUTRAL_CONTROLS,
    SAMPLE_RATE,
    PhonemeInput,
    StateSpec,
    TextError,
)
from npc_voice.model import marks
from npc_voice.model.api import PreparedLine
from npc_voice.model.encoder import durations_from_log
from npc_voice.model.net import VUV, VoiceNet

MIN_SPEED, MAX_SPEED = CONTROL_RANGES["speed"].value
DEFAULT_CONTROLS = NEUTRAL_CONTROLS  # pitch, formant, breathiness, volume, voicing, tilt
PAUSE_SYMBOLS = (".", ",", " ")  # silence_cond is taken from the first one the voice knows


def _shorten(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class SSMVoice:
    """A loaded voice. Thread-compatible: the engine calls it from one thread."""

    sample_rate = SAMPLE_RATE
    hop = HOP

    def __init__(self, net: VoiceNet, symbols: Sequence[str], *, name: str, version: str,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.cfg = net.cfg
        self.symbols = tuple(symbols)
        self.symbol_id = {s: i for i, s in enumerate(self.symbols)}
        self.name = name
        self.version = version
        self.d_cond = self.cfg.d_model
        self.vocoder = Vocoder().to(self.device)
        self._silence = self._make_silence_cond()
        # (the decoder's tensors, their versions, the arrays packed from them): _decoder_arrays
        self._fused: tuple[tuple[torch.Tensor, ...], tuple[tuple[int, int], ...], DecoderArrays] | None = None

    # -- line preparation ---------------------------------------------------------------------
    def _ids(self, ph: PhonemeInput) -> list[int]:
        if not ph.symbols:
            raise TextError(f"nothing to say in {_shorten(ph.text)!r}: no phoneme symbols")
        unknown = sorted({s for s in ph.symbols if s not in self.symbol_id})
        if unknown:
            raise TextError(f"voice {self.name!r} does not know the symbols {unknown} in {_shorten(ph.text)!r}")
        return [self.symbol_id[s] for s in ph.symbols]

    def prepare(self, phonemes: PhonemeInput, *, speed: float = 1.0,
                durations: Sequence[int] | None = None) -> PreparedLine:
        """See api.VoiceModel.prepare. ``durations`` (frames per symbol) replaces the predicted
        ones, e.g. the teacher's, for aligned evaluation."""
        return self.prepare_batch([phonemes], speeds=[speed],
                                  durations=None if durations is None else [durations])[0]

    @torch.inference_mode()
    def prepare_batch(self, phonemes: list[PhonemeInput], *, speeds: list[float],
                      durations: list[Sequence[int]] | None = None) -> list[PreparedLine]:
        if len(speeds) != len(phonemes):
            raise ValueError(f"{len(phonemes)} lines but {len(speeds)} speeds")
        for s in speeds:
            if not (math.isfinite(s) and MIN_SPEED <= s <= MAX_SPEED):
                raise ValueError(f"speed {s!r} outside [{MIN_SPEED}, {MAX_SPEED}]")
        if not phonemes:
            return []
        id_lists = [self._ids(p) for p in phonemes]
        S = max(len(x) for x in id_lists)
        ids = torch.zeros(len(id_lists), S, dtype=torch.long)
        mask = torch.zeros(len(id_lists), S, dtype=torch.bool)
        for i, x in enumerate(id_lists):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        enc, log_dur = self.net.encode(ids, mask)
        durs: list[torch.Tensor] = []
        for i, x in enumerate(id_lists):
            if durations is not None:
                d = torch.as_tensor(list(durations[i]), dtype=torch.long, device=self.device)
                if d.shape != (len(x),) or bool((d < 0).any()):
                    raise ValueError(f"durations for line {i} must be {len(x)} non-negative ints, got {d.tolist()}")
            else:
                d = durations_from_log(log_dur[i, : len(x)], mask[i, : len(x)].float(), speeds[i])
            if int(d.sum()) == 0:  # never an empty line: one frame on the longest symbol
                d = d.clone()
                d[int(torch.argmax(log_dur[i, : len(x)]))] = 1
            durs.append(d)
        cond, _ = self.net.conditioner(enc, mask, durs)
        out = []
        for i, ph in enumerate(phonemes):
            d_list = [int(v) for v in durs[i].tolist()]
            n = sum(d_list)
            out.append(PreparedLine(
                text=ph.text,
                cond=cond[i, :n].float().clone(),
                phonemes=marks.phoneme_marks(ph.symbols, d_list),
                visemes=marks.viseme_marks(ph.visemes, d_list),
                words=marks.word_marks(ph, d_list),
            ))
        return out

    def _make_silence_cond(self) -> torch.Tensor:
        sym = next((s for s in PAUSE_SYMBOLS if s in self.symbol_id), None)
        if sym is None:
            return torch.zeros(self.d_cond, device=self.device)
        line = PhonemeInput(text=sym, symbols=(sym,), word_of=(-1,), visemes=("sil",), words=())
        cond = self.prepare(line, durations=[9]).cond
        return cond[4].clone()  # the middle frame: far from both edges of the conv receptive field

    def silence_cond(self) -> torch.Tensor:
        return self._silence

    # -- streaming ------------------------------------------------------------------------------
    def state_spec(self) -> dict[str, StateSpec]:
        c = self.cfg
        spec = {
            "dec_conv": StateSpec((c.n_layers, c.d_conv - 1, c.conv_dim), torch.float32),
            "dec_ssm": StateSpec((c.n_layers, c.nheads, c.headdim, c.d_state), torch.float32),
        }
        spec.update(self.vocoder.state_spec())
        return spec

    def new_state(self, slots: int) -> dict[str, torch.Tensor]:
        """A zeroed state pool with ``slots`` rows (slot 0 is the scratch row)."""
        return {k: torch.zeros((slots, *s.shape), dtype=s.dtype, device=self.device)
                for k, s in self.state_spec().items()}

    @torch.inference_mode()
    def step_params(self, state: dict[str, torch.Tensor], slots: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Decoder only: cond [B, K, d] -> vocoder parameters [B, K, 68]; decoder state updated."""
        conv, ssm = state["dec_conv"], state["dec_ssm"]
        if fused_step_available(cond, conv, ssm):  # on CPU: compiled passes between BLAS projections
            return decoder_step_cpu(self._decoder_arrays(), cond, conv, ssm, slots)
        # K frames layer by layer (one projection matmul over B*K rows; only the state walks frames)
        return self.net.denormalize(self.net.decoder.step_chunk(cond, conv, ssm, slots))

    def _decoder_arrays(self) -> DecoderArrays:
        """The decoder's weights packed for ``decoder_step_cpu``, packed again when one of the
        tensors they came from changed (its version counter: an optimizer step, ``copy_``,
        ``load_state_dict``) or its storage (``.data =``). The tensors are listed once per
        packing: walking the modules on every call cost ~1.5 % of the engine thread."""
        if self._fused is not None:
            tensors, version, arrays = self._fused
            if tuple((t.data_ptr(), t._version) for t in tensors) == version:
                return arrays
        dec = self.net.decoder
        tensors = (*dec.parameters(), self.net.feat_mean, self.net.feat_std)
        version = tuple((t.data_ptr(), t._version) for t in tensors)
        arrays = pack_decoder(dec.blocks, dec.norm, dec.head, self.net.feat_mean, self.net.feat_std, VUV)
        self._fused = (tensors, version, arrays)
        return arrays

    @torch.inference_mode()
    def step(self, state: dict[str, torch.Tensor], slots: torch.Tensor, cond: torch.Tensor,
             controls: torch.Tensor) -> torch.Tensor:
        params = self.step_params(state, slots, cond)
        return self.vocoder.step(state, slots, params, controls)  # on CPU its responses run in cache-sized pieces

    # -- whole lines ------------------------------------------------------------------------------
    def render_prepared(self, line: PreparedLine, controls: Sequence[float] | torch.Tensor | None = None,
                        chunk: int = 64) -> np.ndarray:
        """PCM float32 [n_frames * hop] for one prepared line from a fresh state."""
        ctl = torch.as_tensor(DEFAULT_CONTROLS if controls is None else controls, dtype=torch.float32)
        if ctl.shape != (N_CONTROLS,):
            raise ValueError(f"controls must have {N_CONTROLS} values (pitch, formant, breathiness, volume, "
                             f"voicing, tilt), got {ctl.tolist()}")
        state = self.new_state(2)
        slots = torch.tensor([1], device=self.device)
        ctl = ctl.to(self.device)[None]
        pcm = [self.step(state, slots, line.cond[None, t: t + chunk], ctl)[0]
               for t in range(0, line.n_frames, chunk)]
        return torch.cat(pcm).cpu().numpy().astype(np.float32)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def state_bytes(self) -> int:
        """Bytes of per-stream state (decoder + vocoder)."""
        return sum(s.nbytes for s in self.state_spec().values())
