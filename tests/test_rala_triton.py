"""The fused RALA kernels (mmrala/ops/rala_triton.py), run on the CPU by Triton's interpreter.

Triton decides interpreter or compiler when ``triton.jit`` decorates a function: its own
standard library (tl.zeros, tl.sum, ...) when triton is imported, our kernels when
mmrala.ops.rala_triton is. Once anything in a process has imported triton normally,
the interpreter cannot be switched on there, and an interpreted triton cannot compile
for the GPU. So, unless TRITON_INTERPRET=1 was set before triton was imported, the
kernel tests below (marked @interpreted) run for real in one child pytest process
started with TRITON_INTERPRET=1, and each reports here the outcome it had there. The
suite may then run in one process next to the GPU tests and anything importing triton.

Compared against the float64 convex-form reference (and once against the authors'
``k * alpha * L`` formulation, mmrala.ops.rala_attention_authors), fed the same rounded
inputs.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip('triton')

from triton_interpreter import (  # noqa: E402, F401
    IN_INTERPRETER,
    interpreted,
    run_interpreted_tests,
)

import mmrala.ops as rala_ops  # noqa: E402
from mmrala.ops import (  # noqa: E402
    rala_attention,
    rala_attention_authors,
    rala_attention_reference,
)

KERNEL_MODULE = 'mmrala.ops.rala_triton'

# Relative RMS error allowed against float64, per input dtype. Measured in the
# interpreter (fp32 maths, dot operands rounded to the input dtype): fp32 ~1.5e-6,
# bf16 ~4e-3 and fp16 ~4e-4, mostly the rounding of the output itself (the
# interpreter's fp32 -> bf16 store truncates). The fp32 limit is loose enough for the
# summation order of a different tile size.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


@pytest.fixture(scope='module')
def kernels():
    """mmrala.ops.rala_triton, its kernels built for the interpreter."""
    module = importlib.import_module(KERNEL_MODULE)
    if IN_INTERPRETER and not module.KERNELS_INTERPRETED:
        # Imported while TRITON_INTERPRET was unset: build its kernels again.
        module = importlib.reload(module)
    return module


def _rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()


def _conv_output(batch, heads, head_dim, height, width, dtype, seed=0):
    """A (B, 4C, H, W) tensor like the qkvo conv output; its first 3C channels are qkv."""
    gen = torch.Generator().manual_seed(seed)
    channels = heads * head_dim
    return torch.randn(batch, 4 * channels, height, width, generator=gen).to(dtype)


def _run_triton(conv_out: torch.Tensor, heads: int, grad: torch.Tensor):
    """Output and gradient of the whole conv output (zero on the o channels)."""
    leaf = conv_out.detach().clone().requires_grad_()
    channels3 = 3 * conv_out.shape[1] // 4
    out = rala_attention(leaf[:, :channels3], heads, impl='triton')
    out.backward(grad)
    return out.detach(), leaf.grad


def _run_float64(fn, qkv: torch.Tensor, heads: int, grad: torch.Tensor):
    leaf = qkv.detach().double().requires_grad_()
    out = fn(leaf, heads)
    out.backward(grad.double())
    return out.detach(), leaf.grad


# heads = 1: 19 x 29 = 551 tokens, five chunks of 128 (the last one 39 tokens), tiles
# of 64 with a ragged tail. heads = 3: 7 x 9 = 63 tokens, a single partial tile. Both
# have an odd H * W, so the kernels take unaligned token rows (ALIGN = 1). heads = 2:
# 8 x 26 = 208 tokens, a multiple of every vector width (ALIGN > 1, strides passed in
# vectors), two chunks, the second a whole tile and a masked tail of 16.
CASES = [(1, (19, 29)), (3, (7, 9)), (2, (8, 26))]
CASE_IDS = ['1head-19x29', '3heads-7x9', '2heads-8x26-aligned']


DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# The quick tier runs each dtype, head dim and case at least once; the full tier all 18.
QUICK = {('fp32', 64, 0), ('bf16', 96, 1), ('fp16', 64, 2), ('bf16', 64, 0),
         ('fp16', 96, 0), ('fp32', 96, 2)}
REFERENCE_CASES = [
    pytest.param(DTYPES[dtype], head_dim, *CASES[case],
                 id=f'{dtype}-{head_dim}-{CASE_IDS[case]}',
                 marks=() if (dtype, head_dim, case) in QUICK else pytest.mark.slow)
    for dtype in DTYPES for head_dim in (64, 96) for case in range(len(CASES))]


@pytest.mark.parametrize('dtype,head_dim,heads,size', REFERENCE_CASES)
@interpreted
def test_matches_float64_reference(dtype, head_dim, heads, size):
    _check_against_float64_reference(dtype, head_dim, heads, size)


def _check_against_float64_reference(dtype, head_dim, heads, size):
    conv_out = _conv_output(2, heads, head_dim, *size, dtype)
    channels = heads * head_dim
    grad = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1)).to(dtype)

    out, grad_conv = _run_triton(conv_out, heads, grad)
    ref_out, ref_grad = _run_float64(rala_attention_reference, conv_out[:, :3 * channels],
                                     heads, grad)

    assert out.dtype == dtype and out.shape == (2, channels, *size)
    assert grad_conv.dtype == dtype
    tol = TOLERANCE[dtype]
    errors = {'out': _rel_rms(out, ref_out)}
    for index, name in enumerate(('dq', 'dk', 'dv')):
        part = slice(index * channels, (index + 1) * channels)
        errors[name] = _rel_rms(grad_conv[:, part], ref_grad[:, part])
    assert all(err < tol for err in errors.values()), errors
    assert torch.count_nonzero(grad_conv[:, 3 * channels:]) == 0


@pytest.mark.parametrize('head_dim', [64, pytest.param(96, marks=pytest.mark.slow)])
@interpreted
def test_sums_over_chunks_in_several_rounds_of_loads(kernels, monkeypatch, head_dim):
    """The combines and the last programs of F1 and B2 load up to COMBINE_CHUNK_BLOCK
    chunk partials a round: at the sizes above, every chunk at once. Two a round make
    the five chunks of 19 x 29 take three rounds, as RAVLT-S's stage 1 takes two in the
    last programs and any L of 2^21 tokens or more in the combines."""
    monkeypatch.setattr(kernels, 'COMBINE_CHUNK_BLOCK', 2)
    _check_against_float64_reference(torch.float32, head_dim, *CASES[0])


def test_authors_formulation_equals_convex_form():
    """The convex form the kernel implements is the authors' layer, exactly."""
    conv_out = _conv_output(2, 2, 32, 6, 11, torch.float64)
    qkv = conv_out[:, :192]
    grad = torch.randn(2, 64, 6, 11, dtype=torch.float64)
    ref = _run_float64(rala_attention_reference, qkv, 2, grad)
    authors = _run_float64(rala_attention_authors, qkv, 2, grad)
    assert _rel_rms(ref[0], authors[0]) < 1e-12
    assert _rel_rms(ref[1], authors[1]) < 1e-12


@interpreted
def test_matches_authors_formulation():
    conv_out = _conv_output(1, 1, 64, 11, 17, torch.float32, seed=3)
    grad = torch.randn(1, 64, 11, 17)
    out, grad_conv = _run_triton(conv_out, 1, grad)
    ref_out, ref_grad = _run_float64(rala_attention_authors, conv_out[:, :192], 1, grad)
    assert _rel_rms(out, ref_out) < TOLERANCE[torch.float32]
    assert _rel_rms(grad_conv[:, :192], ref_grad) < TOLERANCE[torch.float32]


@interpreted
def test_repeated_runs_are_bitwise_identical():
    conv_out = _conv_output(2, 1, 64, 19, 29, torch.bfloat16, seed=4)
    grad = torch.randn(2, 64, 19, 29).to(torch.bfloat16)
    first = _run_triton(conv_out, 1, grad)
    second = _run_triton(conv_out, 1, grad)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


@interpreted
def test_tickets_are_left_at_zero(kernels):
    """The last program of F1 and of B2 sets its ticket back to zero, so the op keeps one
    set of tickets per stream and never fills them: all are zero after every forward and
    backward, and the next call is right whatever its chunk count (5, then 2, then 5)
    and number of (image, head) pairs (2, then 4)."""
    for heads, size in (CASES[0], CASES[2], CASES[0]):
        _check_against_float64_reference(torch.float32, 64, heads, size)
        assert not kernels._TICKETS[torch.device('cpu'), 0].any()


@interpreted
def test_reads_channel_slices_in_place(kernels):
    """A slice of the 4C conv output is read with its strides, not copied; a contiguous
    3C tensor and a channels-last one (which is copied) give bitwise the same result."""
    conv_out = _conv_output(2, 1, 64, 9, 13, torch.float32, seed=5)
    leaf = conv_out.clone().requires_grad_()
    qkv = leaf[:, :192]
    out = rala_attention(qkv, 1, impl='triton')

    saved_qkv, query_mean, log_sum_exp, state = out.grad_fn.saved_tensors
    assert saved_qkv.data_ptr() == qkv.data_ptr() and saved_qkv.stride() == qkv.stride()
    # Beyond its input the op keeps qm, lse and [S | km] per (image, head), nothing else.
    assert query_mean.shape == (2, 64) and log_sum_exp.shape == (2,)
    assert state.shape == (2, 64 * 64 + 64)

    grad = torch.randn_like(out)
    out.backward(grad)
    for variant in (conv_out[:, :192].contiguous(),
                    conv_out[:, :192].contiguous(memory_format=torch.channels_last)):
        variant = variant.clone().requires_grad_()
        other = rala_attention(variant, 1, impl='triton')
        other.backward(grad)
        assert torch.equal(other, out)
        assert torch.equal(variant.grad, leaf.grad[:, :192])


@interpreted
def test_fp16_state_gradients_beyond_fp16_range():
    """Same-sign upstream gradients of 7000 (a loss scaler makes such) drive dS to about
    7.6e4, past the fp16 maximum, while dQ0, dK0 and dV stay near 1.3e4. Without the
    power-of-two scaling of the state operands, the fp16 dots of B2 and B3 give inf."""
    conv_out = 0.3 * _conv_output(1, 1, 64, 19, 29, torch.float32, seed=6)
    conv_out = conv_out.to(torch.float16)
    grad = torch.full((1, 64, 19, 29), 7000.0, dtype=torch.float16)
    _, grad_conv = _run_triton(conv_out, 1, grad)
    _, ref_grad = _run_float64(rala_attention_reference, conv_out[:, :192], 1, grad)
    assert torch.isfinite(grad_conv).all()
    assert _rel_rms(grad_conv[:, :192], ref_grad) < TOLERANCE[torch.float16]


@interpreted
def test_fp16_value_gradients_of_tiny_attention_weights():
    """dV_j = a_j dS^T rope(K_j). At L = 67,200 every weight a_j ~ 1/L is below fp16's
    smallest normal (6.1e-5); here spread logits give such weights at a small L. The
    dV operand is scaled by an exact power of two per key, so these gradients keep
    fp16's relative precision instead of a subnormal's few bits."""
    conv_out = _conv_output(1, 1, 64, 19, 29, torch.float32, seed=7)
    conv_out[:, 64:128] *= 4.0                       # K0: logits spread over ~e^+-10
    conv_out = conv_out.to(torch.float16)
    grad = torch.randn(1, 64, 19, 29, generator=torch.Generator().manual_seed(8))
    grad = grad.to(torch.float16)
    _, grad_conv = _run_triton(conv_out, 1, grad)
    _, ref_grad = _run_float64(rala_attention_reference, conv_out[:, :192], 1, grad)

    qkv = conv_out[:, :192].double()
    query_mean = (F.elu(qkv[:, :64]) + 1).flatten(2).mean(-1)
    logits = torch.einsum('bdl,bd->bl', (F.elu(qkv[:, 64:128]) + 1).flatten(2), query_mean)
    weights = (logits / 8).softmax(-1).reshape(1, 19, 29)
    tiny = (weights >= 1e-7) & (weights < 6.1e-5)
    assert tiny.sum() > 100 and weights.max() > 1e-2
    # Per key, against the float64 gradient rounded to fp16: the best an fp16 dV can be
    # (such dV are themselves subnormal in fp16). Without the scaling: 2e-3 and 3e-2.
    dv = grad_conv[:, 128:192].double().permute(0, 2, 3, 1)[tiny]
    ref_dv = ref_grad[:, 128:192].permute(0, 2, 3, 1)[tiny]
    errors = (dv - ref_dv.half().double()).norm(dim=-1) / ref_dv.norm(dim=-1)
    assert errors.mean() < 1e-3 and errors.max() < 1e-2, (errors.mean(), errors.max())


def test_chunking_depends_on_tokens_only(kernels):
    for tokens in (1, 63, 255, 256, 551, 3136, 16_800, 67_200, 10**7):
        chunk = kernels.chunk_tokens_for(tokens)
        assert chunk & (chunk - 1) == 0
        assert kernels.MIN_CHUNK_TOKENS <= chunk <= kernels.MAX_CHUNK_TOKENS
        # Whole tiles of every BLOCK_L in use.
        assert all(chunk % block == 0 for table in (kernels.PASS_TILING,
                                                    kernels.ALIGNED_ROWS_TILING)
                   for options in table.values() for block, _, _ in options.values())


def test_auto_stays_on_torch_on_cpu():
    qkv = _conv_output(1, 1, 64, 5, 7, torch.float32)[:, :192]
    assert not rala_ops._triton_usable(qkv)
    assert torch.equal(rala_attention(qkv, 1), rala_attention_reference(qkv, 1))


def test_auto_takes_the_kernels_only_up_to_the_gpu_tested_head_dim(monkeypatch):
    """Where the kernels are usable, 'auto' picks them for d <= 64 only; an explicit
    impl is always obeyed."""
    from mmrala.ops import rala_layer
    monkeypatch.setattr(rala_layer, '_triton_usable', lambda tensor: True)
    qkv = torch.empty(1, 3 * 96, 4, 4)
    assert rala_layer.select_impl('auto', qkv, 64) == 'triton'
    assert rala_layer.select_impl('auto', qkv, rala_ops.AUTO_MAX_HEAD_DIM + 1) == 'torch'
    assert rala_layer.select_impl('triton', qkv, 96) == 'triton'
    assert rala_layer.select_impl('torch', qkv, 32) == 'torch'


@interpreted
def test_clear_errors(kernels, monkeypatch):
    qkv = _conv_output(1, 1, 64, 5, 7, torch.float32)[:, :192]
    with pytest.raises(ValueError, match='head dims'):
        rala_attention(_conv_output(1, 1, 8, 5, 7, torch.float32)[:, :24], 1, impl='triton')

    # Kernels built for the GPU, a CPU tensor given.
    monkeypatch.setattr(kernels, 'KERNELS_INTERPRETED', False)
    monkeypatch.delenv('TRITON_INTERPRET')
    with pytest.raises(RuntimeError, match='CUDA tensors'):
        rala_attention(qkv, 1, impl='triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    with pytest.raises(RuntimeError, match='set after'):
        rala_attention(qkv, 1, impl='triton')
    monkeypatch.undo()

    # triton not importable.
    monkeypatch.delattr(rala_ops, 'rala_triton', raising=False)
    monkeypatch.setitem(sys.modules, KERNEL_MODULE, None)
    with pytest.raises(RuntimeError, match='needs the triton package'):
        rala_attention(qkv, 1, impl='triton')


def test_import_without_triton():
    """mmrala.ops imports and runs the reference when triton cannot be imported."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, mmrala.ops as ops\n"
            "qkv = torch.randn(1, 192, 5, 7)\n"
            "assert ops.rala_attention(qkv, 1).shape == (1, 64, 5, 7)\n"
            "try:\n"
            "    ops.rala_attention(qkv, 1, impl='triton')\n"
            "except RuntimeError as err:\n"
            "    assert 'triton' in str(err)\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Ahead-of-time compilation for a GPU: the static proof. The interpreter does not
# type-check like the compiler does, and only a compiled kernel shows its registers,
# spills and access widths. mmrala.ops.kernel_report compiles every launch of a forward
# and backward pass for sm_90 / sm_80 without a GPU (ptxas and cuobjdump ship with
# triton) and reads them off the binaries.
# ---------------------------------------------------------------------------------------

def _kernel_report():
    from mmrala.ops import kernel_report
    if not kernel_report.nvidia_toolchain_available():
        pytest.skip('triton without its CUDA backend tools (ptxas, cuobjdump)')
    return kernel_report


_compiles = pytest.mark.skipif(
    IN_INTERPRETER, reason='compiling needs triton imported without the interpreter')

# Programs per SM that RAVLT-S's stage-1 grid gives a 132-SM GPU (test_grid_fills_...).
# A half-precision token pass at d <= 64 must hold that many at once: with fewer, the
# grid would run in two waves, as the first kernels timed on an H100 did (255 registers
# at eight warps, one program per SM).
GRID_PROGRAMS_PER_SM = 2


def _assert_lean(rows):
    """No spills anywhere; no 2-byte global access in half precision with aligned rows."""
    spilling = [(r.arch, r.dtype, r.head_dim, r.kernel, r.config, r.spill_bytes)
                for r in rows if r.spill_bytes]
    assert not spilling, spilling
    narrow = [(r.arch, r.dtype, r.head_dim, r.kernel, r.config, r.loads, r.stores)
              for r in rows if r.aligned and r.dtype != 'fp32' and r.narrow_accesses]
    assert not narrow, narrow
    too_big = [(r.arch, r.kernel, r.shared_bytes) for r in rows if not r.fits_shared_memory]
    assert not too_big, too_big
    two_waves = [(r.arch, r.dtype, r.aligned, r.kernel, r.registers, r.programs_per_sm)
                 for r in rows if r.dtype != 'fp32' and r.head_dim <= 64
                 and r.tokens_per_iteration and r.programs_per_sm < GRID_PROGRAMS_PER_SM]
    assert not two_waves, two_waves


@_compiles
def test_launches_compile_lean_for_sm90_bf16():
    """The quick tier's representative: every launch of the common case (bf16, d = 64,
    aligned rows) compiles for sm_90 spill-free with 16-byte token accesses."""
    report = _kernel_report()
    rows = report.collect(archs=('sm_90',), dtypes=('bf16',), head_dims=(64,),
                          alignments=(True,))
    assert {row.kernel for row in rows} == set(report.PASS_NAMES) | {
        '_rala_combine_chunks_kernel'}
    _assert_lean(rows)
    token_passes = [row for row in rows if row.kernel in report.PASS_NAMES]
    assert all(row.loads.get(16, 0) > 0 for row in token_passes), token_passes
    # Every token pass has a tile loop for the report to read its length from.
    assert all(row.instructions_per_token > 0 for row in token_passes), token_passes


@pytest.mark.slow
@_compiles
@pytest.mark.parametrize('arch', ['sm_90', 'sm_80'])
def test_static_proof_every_dtype_head_dim(arch):
    """The static proof of the full tier, per architecture: bf16 and fp16, d = 64 and
    96, aligned and unaligned rows, every launch with the options the op launches it."""
    rows = _kernel_report().collect(archs=(arch,), alignments=(True, False))
    assert len({(r.dtype, r.head_dim, r.aligned) for r in rows}) == 8
    _assert_lean(rows)


@pytest.mark.slow
@_compiles
def test_fp32_kernels_compile_lean():
    """fp32 runs at d <= 64, spill-free and within the shared memory of sm_90 and sm_80;
    above 64 the op refuses it (its 3xTF32 operands would need about 280 KB) and the
    report skips it."""
    report = _kernel_report()
    rows = report.collect(archs=('sm_90', 'sm_80'), dtypes=('fp32',), head_dims=(64, 96),
                          alignments=(True, False))
    assert len(rows) == 32 and {r.head_dim for r in rows} == {64}
    _assert_lean(rows)
    qkv = torch.empty(2, 3 * 96, 16, 24, device='meta')
    with pytest.raises(ValueError, match='fp32 at head dim 96'):
        report.gpu_build()._Geometry(qkv, 1)


def test_programs_per_sm():
    """The occupancy arithmetic of the static proof: registers a warp in units of 256
    within one quarter of the register file, shared memory plus 1 KB a program, at most
    64 warps and 32 programs an SM."""
    from mmrala.ops.kernel_report import programs_per_sm
    assert programs_per_sm('sm_90', 168, 4, 25600) == 3       # 5376 a warp, 3 a quarter
    assert programs_per_sm('sm_90', 169, 4, 25600) == 2       # 5632 a warp (176 a thread)
    assert programs_per_sm('sm_90', 128, 4, 2048) == 4
    assert programs_per_sm('sm_90', 255, 8, 0) == 1
    assert programs_per_sm('sm_90', 32, 4, 0) == 16           # the 64-warp limit
    assert programs_per_sm('sm_90', 32, 1, 0) == 32           # the 32-program limit
    assert programs_per_sm('sm_90', 64, 4, 100 * 1024) == 2   # 228 KB of shared memory
    assert programs_per_sm('sm_80', 64, 4, 100 * 1024) == 1   # 164 KB


def test_sass_access_widths():
    """The SASS reading the static proof rests on, on known instructions."""
    from mmrala.ops import kernel_report
    sass = """
        /*0100*/                   LDG.E.U16 R4, desc[UR6][R2.64] ;
        /*0110*/              @!P0 LDG.E.128 R8, desc[UR6][R2.64] ;
        /*0120*/                   LDG.E.64.CONSTANT R12, desc[UR6][R2.64] ;
        /*0130*/                   LDG.E R5, desc[UR6][R2.64] ;
        /*0140*/                   STG.E.U16 desc[UR6][R2.64], R4 ;
        /*0150*/                   STG.E.128 desc[UR6][R2.64], R8 ;
        /*0160*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR6][R4.64] ;
        /*0170*/                   STL.64 [R1], R6 ;
        /*0180*/                   LDL R7, [R1+0x8] ;
        /*0190*/                   LDS.128 R8, [R3] ;
    """
    loads, stores, spill_stores, spill_loads = kernel_report.sass_memory_counts(sass)
    assert loads == {2: 1, 16: 2, 8: 1, 4: 1}
    assert stores == {2: 1, 16: 1}
    assert (spill_stores, spill_loads) == (8, 4)


def test_sass_loop_length():
    """The main-loop reading of the static proof: the longest backward branch, in
    16-byte instructions from its target to itself; forward branches and the trailing
    self-branch are not loops."""
    from mmrala.ops import kernel_report
    sass = """
        /*0100*/                   MOV R1, c[0x0][0x28] ;
        /*0110*/              @P0 BRA 0x200 ;
        /*0120*/                   FADD R2, R2, R3 ;
        /*0130*/                   FMUL R2, R2, R3 ;
        /*0140*/             @!P1 BRA 0x120 ;
        /*0150*/                   FADD R2, R2, R3 ;
        /*0160*/              @P2 BRA.U 0x150 ;
        /*0170*/                   EXIT ;
        /*0180*/                   BRA 0x180;
    """
    assert kernel_report.loop_instruction_count(sass) == 3
    assert kernel_report.loop_instruction_count('/*0000*/ EXIT ;') == 0


def test_passes_have_one_launch_option_per_tiling_class(kernels):
    """Tile size and warps are pinned per (pass, tiling class, GPU architecture), never
    tuned: the order of the sums, and so every bit of the result, cannot depend on the
    process or on which GPU of one architecture runs it."""
    import triton as triton_module
    for name in ('_rala_fwd_query_sum_kernel', '_rala_fwd_state_kernel',
                 '_rala_fwd_output_kernel', '_rala_bwd_state_grad_kernel',
                 '_rala_bwd_key_value_kernel', '_rala_bwd_query_kernel'):
        assert not isinstance(getattr(kernels, name), triton_module.runtime.Autotuner), name
    for tiling, options in kernels.PASS_TILING.items():
        assert set(options) == {'F1', 'F2', 'F3', 'B1', 'B2', 'B3'}, tiling
    arch_tables = list(kernels.ARCH_TILING.values())
    for table in (kernels.PASS_TILING, kernels.ALIGNED_ROWS_TILING, *arch_tables):
        for options in table.values():
            for block, warps, stages in options.values():
                assert block & (block - 1) == 0 and kernels.MIN_CHUNK_TOKENS % block == 0
                assert warps in (4, 8) and stages in (1, 2, 3)
    assert kernels.tiling_class(torch.bfloat16, 64) == kernels.tiling_class(torch.float16, 32)
    assert kernels.tiling_class(torch.float32, 96) not in kernels.PASS_TILING
    # Aligned rows may change the tiles only of passes whose outputs are per token (no
    # sum over tokens), so that no bit depends on the inputs' alignment.
    for tiling, options in kernels.ALIGNED_ROWS_TILING.items():
        assert tiling in kernels.PASS_TILING and set(options) <= {'F3', 'B3'}, tiling
    for capability, table in kernels.ARCH_TILING.items():
        assert len(capability) == 2 and set(table) <= set(kernels.PASS_TILING), capability


@pytest.mark.parametrize('capability', [(8, 0), (9, 0)], ids=['sm_80', 'sm_90'])
def test_architecture_and_aligned_rows_take_their_own_options(kernels, monkeypatch,
                                                               capability):
    """PASS_TILING's option, unless ARCH_TILING has one for the GPU, unless the rows are
    aligned and ALIGNED_ROWS_TILING has one."""
    monkeypatch.setattr(kernels, 'KERNELS_INTERPRETED', False)
    half = kernels.tiling_class(torch.bfloat16, 64)
    for name in ('F1', 'F2', 'F3', 'B1', 'B2', 'B3'):
        unaligned = kernels._pass_options(name, half, False, capability)
        aligned = kernels._pass_options(name, half, True, capability)
        expected = kernels.PASS_TILING[half][name]
        expected = kernels.ARCH_TILING.get(capability, {}).get(half, {}).get(name, expected)
        assert tuple(unaligned.values()) == expected
        expected = kernels.ALIGNED_ROWS_TILING[half].get(name, expected)
        assert tuple(aligned.values()) == expected
    sm_90_passes = set(kernels.ARCH_TILING[(9, 0)][half])
    differs = {name for name in sm_90_passes
               if kernels._pass_options(name, half, False, (9, 0))
               != kernels._pass_options(name, half, False, (8, 0))}
    assert differs == sm_90_passes


def test_grid_fills_108_and_132_sm_gpus(kernels):
    """RAVLT-S stages 1 and 2 of Mask R-CNN at 1344 x 800, batch 2: at least
    GRID_PROGRAMS_PER_SM programs per SM of a 132-SM H100 (and so of a 108-SM A100) in
    every token pass."""
    for heads, height, width in ((1, 200, 336), (2, 100, 168)):
        qkv = torch.empty(2, 3 * 64 * heads, height, width, device='meta')
        geometry = kernels._Geometry(qkv, heads)
        programs = geometry.grid[0] * geometry.grid[1]
        assert programs >= GRID_PROGRAMS_PER_SM * 132, (heads, programs)
        assert geometry.chunk_tokens == kernels.chunk_tokens_for(height * width)


def test_geometry_is_built_once_per_shape_layout_and_precision(kernels):
    """The op reuses a launch geometry for the same shape, strides, dtype, device and
    fp32 matmul precision, and builds a new one when any of them changes."""
    conv_out = torch.zeros(2, 256, 16, 20)
    qkv = conv_out[:, :192]
    first = kernels.geometry_of(qkv, 1)
    assert kernels.geometry_of(conv_out[:, 64:].clone()[:, :192], 1) is not first
    assert kernels.geometry_of(conv_out.clone()[:, :192], 1) is first
    assert kernels.geometry_of(qkv, 2) is not first
    assert kernels.geometry_of(qkv.to(torch.bfloat16), 1) is not first
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('high' if precision == 'highest' else 'highest')
        assert kernels.geometry_of(qkv, 1) is not first
    finally:
        torch.set_float32_matmul_precision(precision)
    assert kernels.geometry_of(qkv, 1) is first


def test_vector_width_is_the_only_alignment_specialisation(kernels):
    conv_out = torch.zeros(2, 256, 16, 20, dtype=torch.bfloat16)
    assert kernels._vector_width(320, conv_out[:, :192]) == 8
    assert kernels._vector_width(320, conv_out[:, :192].float()) == 4
    odd = torch.zeros(2, 256, 15, 21, dtype=torch.bfloat16)
    assert kernels._vector_width(315, odd[:, :192]) == 1
    # A base pointer off a 16-byte boundary disables vectors.
    shifted = torch.zeros(2 * 256 * 320 + 1, dtype=torch.bfloat16)[1:].view(2, 256, 16, 20)
    assert kernels._vector_width(320, shifted[:, :192]) == 1
