"""Parity of the Triton decoder-step kernel with ssm_step_ref, on CPU via TRITON_INTERPRET=1.

Triton picks interpreter or compiler when a ``@triton.jit`` function is decorated,
including triton's own library functions (tl.sigmoid, gluon) at ``import triton``.
So the interpreter needs TRITON_INTERPRET=1 before triton is imported at all, and a
triton imported that way stays interpreted for the whole process. To leave the rest
of the pytest process alone, this module runs itself in a child pytest process with
the variable set (one parent test; the child's per-case report shows on failure).
If the variable is already set for the whole run, the cases run directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from npc_voice_kernels.ssm_step import ssm_step, ssm_step_ref, ssm_step_torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if not INTERPRETED:

    def test_kernel_parity_in_interpreter_subprocess() -> None:
        try:
            import triton  # noqa: F401
        except ImportError as exc:  # pragma: no cover - only where triton is absent
            pytest.skip(f"triton cannot be imported: {exc}")
        env = dict(os.environ, TRITON_INTERPRET="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=240", __file__]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
        assert proc.returncode == 0, f"interpreted kernel tests failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}"
        assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]

    @pytest.mark.parametrize("act", ["fp32", "bf16"])
    def test_kernel_compiles_for_h200_without_a_gpu(act: str) -> None:
        """Ahead-of-time compile to sm_90 PTX/cubin: catches what the interpreter lets through
        (types, layouts, constexpr control flow). Needs triton's bundled ptxas, no GPU."""
        import inspect

        try:
            import triton
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
        except ImportError as exc:  # pragma: no cover - only where triton is absent
            pytest.skip(f"triton cannot be imported: {exc}")
        from npc_voice_kernels.ssm_step_triton import _bc_conv_shift_kernel, _ssm_step_kernel

        def signature(fn: object, pointers: dict[str, str], consts: dict[str, int]) -> dict[str, str]:
            names = inspect.signature(fn.fn).parameters  # type: ignore[attr-defined]
            return {n: "constexpr" if n in consts else pointers.get(n, "i32") for n in names}

        state = {
            n: "*fp32" for n in ("conv_ptr", "ssm_ptr", "conv_w_ptr", "conv_b_ptr", "dt_bias_ptr", "a_log_ptr", "d_ptr")
        }
        acts = {n: f"*{act}" for n in ("xbc_ptr", "dt_ptr", "z_ptr", "out_ptr")}
        shipped = {"HEADDIM": 32, "D_STATE": 16, "D_INNER": 256, "D_CONV": 4, "BLOCK_P": 32, "BLOCK_N": 16}
        target = GPUTarget("cuda", 90, 32)
        try:
            main = triton.compile(
                ASTSource(
                    _ssm_step_kernel,
                    signature(_ssm_step_kernel, {**state, **acts, "slots_ptr": "*i64"}, shipped),
                    shipped,
                ),
                target=target,
                options={"num_warps": 4},
            )
        except RuntimeError as exc:
            if "ptxas" in str(exc).lower() or "nvidia" in str(exc).lower():
                pytest.skip(f"no CUDA backend toolchain in this triton install: {exc}")
            raise
        assert ".entry _ssm_step_kernel" in main.asm["ptx"]
        shift_consts = {"D_INNER": 256, "N_BC": 32, "D_CONV": 4, "BLOCK_BC": 32}
        shift_ptrs = {"xbc_ptr": f"*{act}", "slots_ptr": "*i64", "conv_ptr": "*fp32"}
        shift = triton.compile(
            ASTSource(_bc_conv_shift_kernel, signature(_bc_conv_shift_kernel, shift_ptrs, shift_consts), shift_consts),
            target=target,
            options={"num_warps": 1},
        )
        assert ".entry _bc_conv_shift_kernel" in shift.asm["ptx"]

else:
    try:
        from npc_voice_kernels.ssm_step_triton import ssm_step_triton
    except ImportError as exc:  # pragma: no cover - only where triton is absent
        pytest.skip(f"triton cannot be imported: {exc}", allow_module_level=True)


@dataclass(frozen=True)
class Shapes:
    n_slots: int = 7
    n_layers: int = 2
    nheads: int = 2
    headdim: int = 6  # not a power of two on purpose: exercises the masks
    d_state: int = 4
    d_conv: int = 4

    @property
    def d_inner(self) -> int:
        return self.nheads * self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.d_state


def _weights(s: Shapes, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "conv_w": torch.randn(s.conv_dim, s.d_conv, generator=gen) * 0.5,
        "conv_b": torch.randn(s.conv_dim, generator=gen) * 0.1,
        "dt_bias": torch.randn(s.nheads, generator=gen) - 2.0,  # small dt: slow decay, so errors could accumulate
        "A_log": torch.randn(s.nheads, generator=gen) * 0.5,
        "D": torch.randn(s.nheads, generator=gen),
    }


def _pools(s: Shapes, gen: torch.Generator, conv_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    conv = torch.randn(s.n_slots, s.n_layers, s.d_conv - 1, s.conv_dim, generator=gen).to(conv_dtype)
    ssm = torch.randn(s.n_slots, s.n_layers, s.nheads, s.headdim, s.d_state, generator=gen)
    return conv, ssm


SLOT_PATTERNS = {
    "contiguous": [1, 2, 3, 4],
    "shuffled": [5, 2, 6, 1],
    "padding_at_slot_0": [3, 0, 6, 0],
    "batch_smaller_than_pool": [4],
}
# Per-dtype tolerance on the returned output. State is fp32 in both paths and
# computed from identical inputs, so it is held tighter.
OUT_TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1e-2)}
STATE_TOL = (2e-5, 2e-5)


def _run_both(
    pattern: list[int], dtype: torch.dtype, conv_dtype: torch.dtype, steps: int, layer: int = 1, seed: int = 0
) -> None:
    s = Shapes()
    gen = torch.Generator().manual_seed(seed)
    w = _weights(s, gen)
    conv0, ssm0 = _pools(s, gen, conv_dtype)
    conv_ref, ssm_ref = conv0.clone(), ssm0.clone()
    conv_tri, ssm_tri = conv0.clone(), ssm0.clone()
    slots = torch.tensor(pattern, dtype=torch.int64)
    real = slots != 0
    touched = sorted({int(v) for v in pattern if v != 0})
    untouched = [i for i in range(1, s.n_slots) if i not in touched]
    rtol, atol = OUT_TOL[dtype]
    for step in range(steps):
        xbc = torch.randn(len(pattern), s.conv_dim, generator=gen).to(dtype)
        dt = torch.randn(len(pattern), s.nheads, generator=gen).to(dtype)
        z = torch.randn(len(pattern), s.d_inner, generator=gen).to(dtype)
        args = (slots, layer, w["conv_w"], w["conv_b"], w["dt_bias"], w["A_log"], w["D"])
        out_ref = ssm_step_ref(xbc, dt, z, conv_ref, ssm_ref, *args)
        out_tri = ssm_step_triton(xbc, dt, z, conv_tri, ssm_tri, *args)
        assert out_tri.dtype == dtype and out_tri.shape == (len(pattern), s.d_inner)
        torch.testing.assert_close(out_tri[real], out_ref[real], rtol=rtol, atol=atol, msg=f"output at step {step}")
        # State written in place, every character slot (slot 0 is scratch).
        torch.testing.assert_close(conv_tri[1:], conv_ref[1:], rtol=STATE_TOL[0], atol=STATE_TOL[1])
        torch.testing.assert_close(ssm_tri[1:], ssm_ref[1:], rtol=STATE_TOL[0], atol=STATE_TOL[1])
    # Slots not in the batch and the other layer were not touched at all.
    assert torch.equal(conv_tri[untouched], conv0[untouched])
    assert torch.equal(ssm_tri[untouched], ssm0[untouched])
    other = 1 - layer
    assert torch.equal(conv_tri[:, other], conv0[:, other])
    assert torch.equal(ssm_tri[:, other], ssm0[:, other])
    # And the touched ones did move (the test would notice a no-op kernel).
    assert not torch.equal(ssm_tri[touched], ssm0[touched])


class TestKernelInterpreted:
    """The parity cases; collected only in the interpreter child process."""

    __test__ = INTERPRETED

    @pytest.mark.parametrize("pattern", list(SLOT_PATTERNS), ids=list(SLOT_PATTERNS))
    def test_kernel_matches_reference_fp32(self, pattern: str) -> None:
        _run_both(SLOT_PATTERNS[pattern], torch.float32, torch.float32, steps=20)

    @pytest.mark.parametrize("pattern", ["shuffled", "padding_at_slot_0"])
    def test_kernel_matches_reference_bf16_activations(self, pattern: str) -> None:
        _run_both(SLOT_PATTERNS[pattern], torch.bfloat16, torch.float32, steps=20, seed=1)

    def test_kernel_bf16_conv_state_and_layer_0(self) -> None:
        _run_both([2, 0, 5], torch.bfloat16, torch.bfloat16, steps=8, layer=0, seed=2)

    def test_kernel_int32_slots_and_strided_pools(self) -> None:
        """int32 slot indices, and pools that are views into a wider tensor (non-default strides)."""
        s = Shapes()
        gen = torch.Generator().manual_seed(3)
        w = _weights(s, gen)
        conv_big = torch.randn(s.n_slots, s.n_layers, s.d_conv - 1, s.conv_dim + 5, generator=gen)
        ssm_big = torch.randn(s.n_slots, s.n_layers + 1, s.nheads, s.headdim, s.d_state, generator=gen)
        conv_ref, ssm_ref = conv_big.clone(), ssm_big.clone()
        slots = torch.tensor([6, 3], dtype=torch.int32)
        for _ in range(3):
            xbc = torch.randn(2, s.conv_dim, generator=gen)
            dt = torch.randn(2, s.nheads, generator=gen)
            z = torch.randn(2, s.d_inner, generator=gen)
            args = (1, w["conv_w"], w["conv_b"], w["dt_bias"], w["A_log"], w["D"])
            out_ref = ssm_step_ref(xbc, dt, z, conv_ref[..., : s.conv_dim], ssm_ref[:, 1:], slots.long(), *args)
            out_tri = ssm_step_triton(xbc, dt, z, conv_big[..., : s.conv_dim], ssm_big[:, 1:], slots, *args)
            torch.testing.assert_close(out_tri, out_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv_big, conv_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ssm_big, ssm_ref, rtol=1e-5, atol=1e-5)

    def test_kernel_rejects_bad_shapes_with_the_values(self) -> None:
        s = Shapes()
        gen = torch.Generator().manual_seed(4)
        w = _weights(s, gen)
        conv, ssm = _pools(s, gen, torch.float32)
        slots = torch.tensor([1])
        bad_xbc = torch.randn(1, s.conv_dim + 1)
        dt, z = torch.randn(1, s.nheads), torch.randn(1, s.d_inner)
        with pytest.raises(ValueError, match=str(s.conv_dim + 1)):
            ssm_step_triton(bad_xbc, dt, z, conv, ssm, slots, 0, *w.values())
        with pytest.raises(ValueError, match="layer 5"):
            ssm_step_triton(torch.randn(1, s.conv_dim), dt, z, conv, ssm, slots, 5, *w.values())
        with pytest.raises(ValueError, match="float32"):
            ssm_step_triton(torch.randn(1, s.conv_dim), dt, z, conv, ssm.double(), slots, 0, *w.values())


def test_kernel_dispatch_on_cpu_matches_the_reference() -> None:
    """``ssm_step`` on CPU tensors: the numba loop or the reference, the same values either way."""
    s = Shapes()
    gen = torch.Generator().manual_seed(5)
    w = _weights(s, gen)
    conv_a, ssm_a = _pools(s, gen, torch.float32)
    conv_b, ssm_b = conv_a.clone(), ssm_a.clone()
    xbc, dt, z = torch.randn(2, s.conv_dim), torch.randn(2, s.nheads), torch.randn(2, s.d_inner)
    slots = torch.tensor([2, 4])
    out_a = ssm_step(xbc, dt, z, conv_a, ssm_a, slots, 0, *w.values())
    out_b = ssm_step_ref(xbc, dt, z, conv_b, ssm_b, slots, 0, *w.values())
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ssm_a, ssm_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_torch_step_equals_the_reference(dtype: torch.dtype) -> None:
    """ssm_step_torch (the reference rewritten for CPU speed) computes the reference's math."""
    s = Shapes()
    gen = torch.Generator().manual_seed(6)
    w = _weights(s, gen)
    conv_a, ssm_a = _pools(s, gen, torch.float32)
    conv_b, ssm_b = conv_a.clone(), ssm_a.clone()
    slots = torch.tensor([5, 0, 2, 6, 0], dtype=torch.int64)
    real = slots != 0
    for step in range(25):
        xbc = torch.randn(5, s.conv_dim, generator=gen).to(dtype)
        dt = torch.randn(5, s.nheads, generator=gen).to(dtype)
        z = torch.randn(5, s.d_inner, generator=gen).to(dtype)
        out_a = ssm_step_torch(xbc, dt, z, conv_a, ssm_a, slots, step % 2, *w.values())
        out_b = ssm_step_ref(xbc, dt, z, conv_b, ssm_b, slots, step % 2, *w.values())
        torch.testing.assert_close(out_a[real], out_b[real], rtol=OUT_TOL[dtype][0], atol=OUT_TOL[dtype][1])
    torch.testing.assert_close(conv_a[1:], conv_b[1:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ssm_a[1:], ssm_b[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pattern", list(SLOT_PATTERNS), ids=list(SLOT_PATTERNS))
def test_kernel_cpu_numba_step_matches_reference(pattern: str) -> None:
    """The fused CPU loop (numba) against the reference: outputs and state in place, 24 steps, strided inputs."""
    from npc_voice_kernels.ssm_step_cpu import _kernel, ssm_step_cpu

    if _kernel is None:
        pytest.skip("numba is not installed: ssm_step runs the reference on CPU")
    s = Shapes()
    gen = torch.Generator().manual_seed(7)
    w = _weights(s, gen)
    conv0, ssm0 = _pools(s, gen, torch.float32)
    conv_a, ssm_a, conv_b, ssm_b = conv0.clone(), ssm0.clone(), conv0.clone(), ssm0.clone()
    slots = torch.tensor(SLOT_PATTERNS[pattern])
    real = slots != 0
    n = len(slots)
    for step in range(24):
        packed = torch.randn(n, s.conv_dim + s.nheads + s.d_inner + 3, generator=gen)  # like the model's in_proj split
        xbc, dt = packed[:, : s.conv_dim], packed[:, s.conv_dim : s.conv_dim + s.nheads]
        z = packed[:, s.conv_dim + s.nheads : s.conv_dim + s.nheads + s.d_inner]
        out_a = ssm_step_cpu(xbc, dt, z, conv_a, ssm_a, slots, step % 2, *w.values())
        out_b = ssm_step_ref(xbc, dt, z, conv_b, ssm_b, slots, step % 2, *w.values())
        torch.testing.assert_close(out_a[real], out_b[real], rtol=1e-5, atol=1e-5, msg=f"output at step {step}")
    torch.testing.assert_close(conv_a[1:], conv_b[1:], rtol=0, atol=0)
    torch.testing.assert_close(ssm_a[1:], ssm_b[1:], rtol=1e-5, atol=1e-5)
    untouched = [i for i in range(1, s.n_slots) if i not in SLOT_PATTERNS[pattern]]
    assert torch.equal(ssm_a[untouched], ssm0[untouched]) and torch.equal(conv_a[untouched], conv0[untouched])


def test_kernel_cpu_dispatch_falls_back_to_the_torch_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16, int32 slots, autograd, or NPC_VOICE_CPU_STEP=torch: ssm_step_torch, bit for bit; the
    numba step itself refuses what it cannot take rather than computing something else."""
    s = Shapes()
    gen = torch.Generator().manual_seed(8)
    w = _weights(s, gen)
    conv0, ssm0 = _pools(s, gen, torch.float32)
    slots = torch.tensor([3, 1])
    xbc, dt, z = torch.randn(2, s.conv_dim), torch.randn(2, s.nheads), torch.randn(2, s.d_inner)

    def both(xbc: torch.Tensor, dt: torch.Tensor, z: torch.Tensor, weights: list[torch.Tensor],
             slots: torch.Tensor = slots) -> bool:
        ca, sa, cb, sb = conv0.clone(), ssm0.clone(), conv0.clone(), ssm0.clone()
        out_a = ssm_step(xbc, dt, z, ca, sa, slots, 0, *weights)
        out_b = ssm_step_torch(xbc, dt, z, cb, sb, slots, 0, *weights)
        return torch.equal(out_a, out_b) and torch.equal(sa, sb) and torch.equal(ca, cb)

    weights = list(w.values())
    assert both(xbc.bfloat16(), dt.bfloat16(), z.bfloat16(), weights)
    assert both(xbc, dt, z, weights, slots.int())
    grad_weights = [t.clone().requires_grad_(True) for t in weights]
    assert both(xbc, dt, z, grad_weights)
    from npc_voice_kernels.ssm_step_cpu import _kernel, ssm_step_cpu

    if _kernel is not None:
        with pytest.raises(ValueError, match="bfloat16"):
            ssm_step_cpu(xbc.bfloat16(), dt, z, conv0.clone(), ssm0.clone(), slots, 0, *weights)
    monkeypatch.setenv("NPC_VOICE_CPU_STEP", "torch")
    assert both(xbc, dt, z, weights)


@pytest.mark.parametrize("k", [1, 4, 6])
@pytest.mark.parametrize("pattern", list(SLOT_PATTERNS), ids=list(SLOT_PATTERNS))
def test_kernel_cpu_chunk_equals_k_reference_steps(pattern: str, k: int) -> None:
    """The K-frame CPU path (numba conv and recurrence, torch activations) against K single
    reference steps: outputs and both states in place, over several consecutive chunks."""
    from npc_voice_kernels.ssm_step import ssm_step_chunk, ssm_step_chunk_ref
    from npc_voice_kernels.ssm_step_cpu import _scan_packed

    if _scan_packed is None:
        pytest.skip("numba is not installed: ssm_step_chunk runs single steps on CPU")
    s = Shapes()
    gen = torch.Generator().manual_seed(11)
    w = _weights(s, gen)
    conv0, ssm0 = _pools(s, gen, torch.float32)
    conv_a, ssm_a, conv_b, ssm_b = conv0.clone(), ssm0.clone(), conv0.clone(), ssm0.clone()
    slots = torch.tensor(SLOT_PATTERNS[pattern])
    real = slots != 0
    n = len(slots)
    for chunk in range(5):
        xbc = torch.randn(k, n, s.conv_dim, generator=gen)
        dt, z = torch.randn(k, n, s.nheads, generator=gen), torch.randn(k, n, s.d_inner, generator=gen)
        out_a = ssm_step_chunk(xbc, dt, z, conv_a, ssm_a, slots, chunk % 2, *w.values())
        out_b = ssm_step_chunk_ref(xbc, dt, z, conv_b, ssm_b, slots, chunk % 2, *w.values())
        assert out_a.shape == (k, n, s.d_inner)
        torch.testing.assert_close(out_a[:, real], out_b[:, real], rtol=1e-4, atol=1e-5, msg=f"output, chunk {chunk}")
    torch.testing.assert_close(conv_a[1:], conv_b[1:], rtol=0, atol=0)
    torch.testing.assert_close(ssm_a[1:], ssm_b[1:], rtol=1e-4, atol=1e-5)
    untouched = [i for i in range(1, s.n_slots) if i not in SLOT_PATTERNS[pattern]]
    assert torch.equal(ssm_a[untouched], ssm0[untouched]) and torch.equal(conv_a[untouched], conv0[untouched])


@pytest.mark.parametrize("path", ["numba", "torch"])
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("pattern", list(SLOT_PATTERNS), ids=list(SLOT_PATTERNS))
def test_kernel_packed_chunk_equals_k_reference_steps(pattern: str, k: int, path: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed, batch-major chunk (what SSMBlock.step_chunk calls: the in_proj output as it is)
    against K single reference steps on its split, frame-major pieces: outputs and both states, over
    several consecutive chunks, on the fused numba path and on the fallback."""
    from npc_voice_kernels.ssm_step import ssm_step_chunk_packed, ssm_step_chunk_ref
    from npc_voice_kernels.ssm_step_cpu import _scan_packed

    if path == "numba" and _scan_packed is None:
        pytest.skip("numba is not installed")
    if path == "torch":
        monkeypatch.setenv("NPC_VOICE_CPU_STEP", "torch")
    s = Shapes()
    gen = torch.Generator().manual_seed(12)
    w = _weights(s, gen)
    conv0, ssm0 = _pools(s, gen, torch.float32)
    conv_a, ssm_a, conv_b, ssm_b = conv0.clone(), ssm0.clone(), conv0.clone(), ssm0.clone()
    slots = torch.tensor(SLOT_PATTERNS[pattern])
    real = slots != 0
    n = len(slots)
    for chunk in range(4):
        proj = torch.randn(n, k, s.d_inner + s.conv_dim + s.nheads, generator=gen)  # z | xBC | dt
        z, xbc, dt = torch.split(proj.transpose(0, 1), [s.d_inner, s.conv_dim, s.nheads], dim=-1)
        out_a = ssm_step_chunk_packed(proj, conv_a, ssm_a, slots, chunk % 2, *w.values())
        out_b = ssm_step_chunk_ref(xbc, dt, z, conv_b, ssm_b, slots, chunk % 2, *w.values())  # [K, B, d_inner]
        assert out_a.shape == (n, k, s.d_inner)
        torch.testing.assert_close(out_a[real], out_b.transpose(0, 1)[real], rtol=1e-4, atol=1e-5,
                                   msg=f"output, chunk {chunk}")
    torch.testing.assert_close(conv_a[1:], conv_b[1:], rtol=0, atol=0)
    torch.testing.assert_close(ssm_a[1:], ssm_b[1:], rtol=1e-4, atol=1e-5)
    untouched = [i for i in range(1, s.n_slots) if i not in SLOT_PATTERNS[pattern]]
    assert torch.equal(ssm_a[untouched], ssm0[untouched]) and torch.equal(conv_a[untouched], conv0[untouched])
    assert not torch.equal(ssm_a[1:], ssm0[1:])


def test_kernel_packed_chunk_rejects_a_wrong_width() -> None:
    from npc_voice_kernels.ssm_step_cpu import _scan_packed, ssm_chunk_packed_cpu

    if _scan_packed is None:
        pytest.skip("numba is not installed")
    s = Shapes()
    gen = torch.Generator().manual_seed(13)
    conv, ssm = _pools(s, gen, torch.float32)
    proj = torch.randn(2, 3, s.d_inner + s.conv_dim, generator=gen)  # dt columns missing
    with pytest.raises(ValueError, match="columns"):
        ssm_chunk_packed_cpu(proj, conv, ssm, torch.tensor([1, 2]), 0, *_weights(s, gen).values())
