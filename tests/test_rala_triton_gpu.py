"""The fused RALA kernels on a CUDA GPU, at the sizes RAVLT meets in detection.

Skipped without CUDA. The CPU module (test_rala_triton.py) runs the same checks at
small sizes in Triton's interpreter; only here do programs run concurrently, so this
is the test of the launch geometry and of anything that could race.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip('triton')

from mmrala.ops import rala_attention, rala_attention_reference  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
    pytest.mark.skipif(os.environ.get('TRITON_INTERPRET', '0') not in ('', '0'),
                       reason='TRITON_INTERPRET is set: the kernels would be interpreted'),
]

# Relative RMS error against float64. fp32 runs its dots as 3xTF32. bf16 / fp16 round
# the dot operands to the input dtype and the output once; the CPU interpreter, which
# emulates that rounding, measures about 4e-3 (bf16) and 4e-4 (fp16).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}

# (batch, heads, head dim, H, W): RAVLT-S stages 1 and 2 of Mask R-CNN at 1344 x 800,
# and ragged odd sizes.
WORKLOADS = [
    (2, 1, 64, 200, 336),
    (2, 2, 64, 100, 168),
    (3, 3, 64, 57, 91),
    (1, 1, 64, 1, 1),
]
# The d = 96 stages of RAVLT-B / L. Tested last, in their own test: on an H100 (Triton
# 3.6, 2026-11-23) fp32 at d = 96 stopped with an illegal shared-memory access, which
# leaves the CUDA context unusable for every test after it.
WORKLOADS_ABOVE_64 = [
    (2, 1, 96, 200, 336),
    (2, 2, 96, 100, 168),
]


def _rel_rms(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()


def _conv_output(batch, heads, head_dim, height, width, dtype, seed=0):
    gen = torch.Generator(device='cuda').manual_seed(seed)
    return torch.randn(batch, 4 * heads * head_dim, height, width, generator=gen,
                       device='cuda').to(dtype)


def _run(conv_out, heads, grad, impl='triton'):
    leaf = conv_out.detach().clone().requires_grad_()
    out = rala_attention(leaf[:, :3 * conv_out.shape[1] // 4], heads, impl=impl)
    out.backward(grad)
    return out.detach(), leaf.grad


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16],
                         ids=['fp32', 'bf16', 'fp16'])
@pytest.mark.parametrize('batch,heads,head_dim,height,width', WORKLOADS,
                         ids=lambda v: str(v))
def test_matches_float64_reference(dtype, batch, heads, head_dim, height, width):
    _check_against_float64(dtype, batch, heads, head_dim, height, width)


def _check_against_float64(dtype, batch, heads, head_dim, height, width):
    conv_out = _conv_output(batch, heads, head_dim, height, width, dtype)
    channels = heads * head_dim
    grad = torch.randn(batch, channels, height, width, device='cuda').to(dtype)
    out, grad_conv = _run(conv_out, heads, grad)

    ref_leaf = conv_out[:, :3 * channels].double().requires_grad_()
    ref_out = rala_attention_reference(ref_leaf, heads)
    ref_out.backward(grad.double())

    errors = {'out': _rel_rms(out, ref_out)}
    for index, name in enumerate(('dq', 'dk', 'dv')):
        part = slice(index * channels, (index + 1) * channels)
        errors[name] = _rel_rms(grad_conv[:, part], ref_leaf.grad[:, part])
    assert all(err < TOLERANCE[dtype] for err in errors.values()), errors
    assert torch.count_nonzero(grad_conv[:, 3 * channels:]) == 0


@pytest.mark.parametrize('batch,heads,head_dim,height,width', WORKLOADS[:2],
                         ids=lambda v: str(v))
def test_repeated_runs_are_bitwise_identical(batch, heads, head_dim, height, width):
    conv_out = _conv_output(batch, heads, head_dim, height, width, torch.bfloat16, seed=1)
    grad = torch.randn(batch, heads * head_dim, height, width, device='cuda')
    grad = grad.to(torch.bfloat16)
    first = _run(conv_out, heads, grad)
    for _ in range(3):
        again = _run(conv_out, heads, grad)
        assert torch.equal(first[0], again[0])
        assert torch.equal(first[1], again[1])


def test_auto_picks_triton_on_cuda():
    qkv = _conv_output(2, 1, 64, 37, 53, torch.bfloat16)[:, :192]
    assert torch.equal(rala_attention(qkv, 1), rala_attention(qkv, 1, impl='triton'))


def test_keeps_only_a_small_state():
    """Memory kept for backward beyond the input: qm, lse and [S | km] per (image, head)."""
    conv_out = _conv_output(2, 1, 64, 200, 336, torch.bfloat16).requires_grad_()
    with torch.no_grad():   # builds and caches the RoPE table of this size
        rala_attention(conv_out[:, :192], 1, impl='triton')
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = rala_attention(conv_out[:, :192], 1, impl='triton')
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
    # 2 x (64 + 1 + 64 * 64 + 64) fp32 values, rounded up by the caching allocator.
    assert kept <= 64 * 1024, kept


def test_under_autocast_through_a_conv():
    """bf16 autocast: conv -> channel slice -> RALA; triton and torch gradients agree."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 256, 1).cuda()
    x = torch.randn(2, 64, 100, 168, device='cuda')
    grads = {}
    for impl in ('triton', 'torch'):
        conv.zero_grad()
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = rala_attention(conv(x)[:, :192], 1, impl=impl)
        out.float().square().mean().backward()
        grads[impl] = conv.weight.grad.clone()
    assert _rel_rms(grads['triton'], grads['torch']) < 5e-2


def test_new_image_sizes_do_not_recompile():
    """L, H and W are not specialised: a stream of new detection sizes reuses one binary
    per kernel (up to the divisibility variants of the channel stride)."""
    from mmrala.ops import rala_triton

    for height, width in ((64, 96), (65, 97), (71, 113), (80, 120), (91, 127)):
        qkv = _conv_output(1, 1, 64, height, width, torch.bfloat16)[:, :192]
        rala_attention(qkv.requires_grad_(), 1, impl='triton').sum().backward()
    # JITFunction.device_caches: device -> (kernel_cache, ...), one entry per binary:
    # one with 16-byte aligned token rows (64 x 96, 80 x 120) and one without.
    kernel = rala_triton._rala_fwd_output_kernel
    compiled = sum(len(caches[0]) for caches in kernel.device_caches.values())
    assert compiled <= 2, compiled


@pytest.mark.parametrize('stages', [1, 2, 3])
def test_pipelining_depth_does_not_change_a_bit(monkeypatch, stages):
    """Each pass's tile size and warps are pinned per tiling class; its pipelining depth only
    reorders loads. Forcing every depth on every pass gives bitwise the same result."""
    from mmrala.ops import rala_triton

    conv_out = _conv_output(2, 1, 64, 100, 168, torch.bfloat16, seed=2)
    grad = torch.randn(2, 64, 100, 168, device='cuda').to(torch.bfloat16)
    pinned = _run(conv_out, 1, grad)
    def forced(table):
        return {tiling: {name: (block, warps, stages)
                         for name, (block, warps, _) in options.items()}
                for tiling, options in table.items()}

    monkeypatch.setattr(rala_triton, 'PASS_TILING', forced(rala_triton.PASS_TILING))
    monkeypatch.setattr(rala_triton, 'ALIGNED_ROWS_TILING',
                        forced(rala_triton.ALIGNED_ROWS_TILING))
    monkeypatch.setattr(rala_triton, 'ARCH_TILING', {
        capability: forced(table) for capability, table in rala_triton.ARCH_TILING.items()})
    again = _run(conv_out, 1, grad)
    assert torch.equal(pinned[0], again[0])
    assert torch.equal(pinned[1], again[1])


def test_alignment_does_not_change_a_bit():
    """Aligned token rows take larger tiles in F3 and B3 (ALIGNED_ROWS_TILING), whose
    outputs are per token: the same inputs one element off a 16-byte boundary (every
    pass on PASS_TILING's options, narrower accesses) give bitwise the same result."""
    conv_out = _conv_output(2, 1, 64, 100, 168, torch.bfloat16, seed=3)
    grad = torch.randn(2, 64, 100, 168, device='cuda').to(torch.bfloat16)
    aligned = _run(conv_out, 1, grad)
    storage = torch.zeros(conv_out.numel() + 1, device='cuda', dtype=conv_out.dtype)
    storage[1:].copy_(conv_out.flatten())
    storage.requires_grad_()
    shifted = storage[1:].view_as(conv_out)
    assert shifted.data_ptr() % 16
    out = rala_attention(shifted[:, :192], 1, impl='triton')
    out.backward(grad)
    assert torch.equal(aligned[0], out.detach())
    assert torch.equal(aligned[1], storage.grad[1:].view_as(conv_out))


def test_fp32_above_head_dim_64_is_refused():
    conv_out = _conv_output(1, 1, 96, 16, 24, torch.float32)
    with pytest.raises(ValueError, match='fp32 at head dim 96'):
        rala_attention(conv_out[:, :288], 1, impl='triton')


# Last in this file: see WORKLOADS_ABOVE_64.
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('batch,heads,head_dim,height,width', WORKLOADS_ABOVE_64,
                         ids=lambda v: str(v))
def test_head_dims_above_64_match_float64_reference(dtype, batch, heads, head_dim, height,
                                                    width):
    _check_against_float64(dtype, batch, heads, head_dim, height, width)
