"""The fused RALA layer (mmrala/ops/rala_layer.py) against the reference composition, and
tools/benchmark_rala.py run on the CPU.

``rala_gated_attention`` computes ``(rala(q, k, v) + lepe(v)) * o`` from the qkvo conv
output. Its fused node runs here in Triton's interpreter (see triton_interpreter.py):
its output and every gradient against the reference autograd composition in float64,
what it keeps for the backward (at most half of what the composition keeps), and what
its backward allocates (one full-size buffer, no zero-filled slice gradients).
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip('triton')

from conftest import REPO, TOOLS, load_tool, tool_env  # noqa: E402
from triton_interpreter import interpreted, run_interpreted_tests  # noqa: E402, F401

# The measuring tools the benchmark prints with: saved_tensors_hooks, a dispatch-mode
# recorder of the tensors ops create, and the float64 comparison.
benchmark_tool = load_tool('benchmark_rala')
(TOLERANCE, AllocationRecorder, gradients, layer_inputs, layer_memory, rel_rms,
 saved_tensor_bytes) = (getattr(benchmark_tool, name) for name in (
    'TOLERANCE', 'AllocationRecorder', 'gradients', 'layer_inputs', 'layer_memory', 'rel_rms',
    'saved_tensor_bytes'))

from mmrala.ops import rala_gated_attention  # noqa: E402

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# (batch, heads, head dim, H, W): odd, non-square sizes; 273 tokens are several tiles
# with a ragged tail, 63 a single partial tile. Kept small: the interpreter is slow.
WORKLOADS = {'d64-13x21': (1, 1, 64, 13, 21), '2images-2heads-d32-7x9': (2, 2, 32, 7, 9)}
# The memory tests: two tiles, one of them ragged.
MEMORY_WORKLOAD = (1, 1, 64, 9, 13)


def _layer(impl, heads):
    return lambda qkvo, weight, bias: rala_gated_attention(qkvo, weight, bias, heads, impl=impl)


@pytest.mark.parametrize('dtype', list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize('workload', list(WORKLOADS.values()), ids=list(WORKLOADS))
@interpreted
def test_matches_reference_composition(dtype, workload):
    heads = workload[1]
    qkvo, weight, bias, grad = layer_inputs(workload, dtype, 'cpu')
    out, (grad_qkvo, grad_weight, grad_bias) = gradients(
        _layer('triton', heads), [qkvo, weight, bias], grad)
    ref_out, (ref_qkvo, ref_weight, ref_bias) = gradients(
        _layer('torch', heads), [qkvo.double(), weight.double(), bias.double()], grad)

    assert out.dtype == grad_qkvo.dtype == dtype
    assert grad_weight.dtype == grad_bias.dtype == torch.float32     # the parameters' own
    channels = grad.shape[1]
    errors = {'out': rel_rms(out, ref_out), 'weight': rel_rms(grad_weight, ref_weight),
              'bias': rel_rms(grad_bias, ref_bias)}
    for index, name in enumerate('qkvo'):
        part = slice(index * channels, (index + 1) * channels)
        errors[f'd{name}'] = rel_rms(grad_qkvo[:, part], ref_qkvo[:, part])
    assert max(errors.values()) < TOLERANCE[dtype], errors


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
@interpreted
def test_keeps_at_most_half_of_the_reference(dtype):
    workload = MEMORY_WORKLOAD
    reference = layer_memory(workload, dtype, 'torch', 'cpu')
    fused = layer_memory(workload, dtype, 'triton', 'cpu')
    full_size = fused['full_size']
    assert fused['saved'] <= 0.5 * reference['saved'], (fused, reference)
    # What it keeps: qkvo, one (B, C, H, W) tensor (rala + lepe) and a few KiB of
    # per-(image, head) statistics and the lepe weight.
    assert full_size <= fused['saved'] <= 1.25 * full_size + 64 * 1024, fused


def test_saved_bytes_count_each_storage_once():
    base = torch.randn(4, 1000, requires_grad=True)
    # Two views of one leaf: mul saves both operands, one 16 KB storage.
    saved, _ = saved_tensor_bytes(lambda: base[:2] * base[2:])
    assert saved == base.numel() * base.element_size()


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
@interpreted
def test_backward_allocates_one_full_size_buffer(dtype):
    workload = MEMORY_WORKLOAD
    heads = workload[1]
    qkvo, weight, bias, grad = layer_inputs(workload, dtype, 'cpu')
    full_size = qkvo.numel() * qkvo.element_size()
    slice_size = full_size // 4

    recorders = {}
    for impl in ('torch', 'triton'):
        leaves = [t.detach().clone().requires_grad_() for t in (qkvo, weight, bias)]
        out = _layer(impl, heads)(*leaves)
        with AllocationRecorder() as recorders[impl]:
            grads = torch.autograd.grad(out, leaves, grad)

    fused = recorders['triton']
    created = fused.at_least(full_size)
    assert len(created) == 1, created
    _, shape, _, address = created[0]
    assert shape == tuple(qkvo.shape)
    assert address == grads[0].untyped_storage().data_ptr()   # it is the qkvo gradient
    assert not fused.zero_filled_at_least(slice_size), fused.zero_filled
    # The recorder does see what the composition does: zero-filled slice gradients of
    # the conv output's size, summed into further full-size tensors.
    reference = recorders['torch']
    assert reference.zero_filled_at_least(full_size)
    assert len(reference.at_least(full_size)) >= 2


@interpreted
def test_ravlt_attention_runs_the_fused_node():
    from mmrala.models.ravlt import RAVLTAttention

    torch.manual_seed(0)
    modules = {impl: RAVLTAttention(64, 2, 'rala', rala_impl=impl) for impl in ('torch', 'triton')}
    modules['triton'].load_state_dict(modules['torch'].state_dict())
    x = torch.randn(1, 64, 9, 13)
    grad = torch.randn(1, 64, 9, 13)
    results = {}
    for impl, module in modules.items():
        out = module(x)
        out.backward(grad)
        results[impl] = (out.detach(), {n: p.grad for n, p in module.named_parameters()})

    names, frontier = [], [modules['triton'](x).grad_fn]
    while frontier:
        node = frontier.pop()
        names.append(type(node).__name__)
        frontier += [fn for fn, _ in node.next_functions if fn is not None]
    assert 'RALAGatedAttentionFunctionBackward' in names
    assert rel_rms(results['triton'][0], results['torch'][0]) < TOLERANCE[torch.float32]
    for name, grad_ref in results['torch'][1].items():
        assert rel_rms(results['triton'][1][name], grad_ref) < TOLERANCE[torch.float32], name


def test_auto_is_the_reference_on_cpu():
    qkvo, weight, bias, _ = layer_inputs(MEMORY_WORKLOAD, torch.float32, 'cpu')
    assert torch.equal(rala_gated_attention(qkvo, weight, bias, 1),
                       rala_gated_attention(qkvo, weight, bias, 1, impl='torch'))


def test_clear_errors():
    qkvo, weight, bias, _ = layer_inputs(MEMORY_WORKLOAD, torch.float32, 'cpu')
    with pytest.raises(ValueError, match='unknown RALA impl'):
        rala_gated_attention(qkvo, weight, bias, 1, impl='cuda')
    with pytest.raises(ValueError, match=r'\(B, 4C, H, W\)'):
        rala_gated_attention(qkvo[:, 1:], weight, bias, 1)
    with pytest.raises(ValueError, match='depthwise'):
        rala_gated_attention(qkvo, weight[:, :, :4, :4], bias, 1)
    with pytest.raises(ValueError, match='heads'):
        rala_gated_attention(qkvo, weight, bias, 5)


# ---------------------------------------------------------------------------------------
# tools/benchmark_rala.py on the CPU (fused path in the interpreter, which it switches on)
# ---------------------------------------------------------------------------------------

def _benchmark(*args) -> dict:
    """Runs the tool as a user would; returns title -> [header, *rows] of every table it
    printed, each row a list of cells."""
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, 'benchmark_rala.py'),
                           *map(str, args)], cwd=REPO, env=tool_env(), capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables, lines = {}, proc.stdout.splitlines()
    for i, line in enumerate(lines[:-2]):
        if re.fullmatch(r'-[- ]*', lines[i + 2]):
            header = re.split(r'\s{2,}', lines[i + 1].strip())
            rows = [re.split(r'\s{2,}', row.strip()) for row in lines[i + 3:]]
            # A table ends at the first line that is not one of its rows.
            count = next((n for n, row in enumerate(rows) if len(row) != len(header)),
                         len(rows))
            tables[line] = [header] + rows[:count]
    return tables


def _table(tables, prefix):
    matches = [rows for title, rows in tables.items() if title.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(tables))
    return matches[0]


def test_benchmark_quick_on_cpu():
    tables = _benchmark('--quick', '--skip', 'authors-compiled')

    correctness = _table(tables, 'Correctness')
    assert [row[1] for row in correctness[1:]] == ['core', 'layer']
    assert all(row[-1] == 'ok' for row in correctness[1:])

    core = _table(tables, 'RALA core')
    assert core[0] == ['workload', 'variant', 'fwd ms', 'x bound', 'fwd host ms', 'bwd ms',
                       'x bound', 'bwd host ms', 'status']
    rows = {row[1]: row for row in core[1:]}
    assert list(rows) == ['fused', 'reference', 'authors', 'fla']
    for variant in ('fused', 'reference', 'authors'):
        assert rows[variant][-1] == 'ok'
        # On the CPU the whole call is host work: one measurement fills both columns.
        forward, forward_host, backward, backward_host = (
            float(rows[variant][column]) for column in (2, 4, 5, 7))
        assert forward > 0 and backward > 0
        assert (forward_host, backward_host) == (forward, backward)
    assert rows['fla'][-1].startswith('skipped: ')

    passes = _table(tables, 'Fused passes')
    assert passes[0][3:5] == ['ms', 'model MB']
    token_passes = [row for row in passes[1:] if not row[0].startswith('combine')]
    assert [row[0] for row in token_passes] == ['F1', 'F2', 'F3', 'sum forward',
                                                'B1', 'B2', 'B3', 'sum backward']
    assert all(float(row[3]) > 0 for row in passes[1:])
    assert all(float(row[4]) > 0 for row in token_passes)

    layer = _table(tables, 'RALA layer')
    assert layer[0][-3:] == ['ratio', 'full-size tensors', 'zero-filled slices']
    (row,) = layer[1:]
    assert float(row[-3]) <= 0.5
    assert row[-2].endswith('/ 1') and row[-1].endswith('/ 0')


def test_benchmark_sweep_on_cpu():
    """--sweep replays a pass at other launch options and checks each against the
    pinned one. The interpreter takes BLOCK_L from the option (not warps or stages), so
    a smaller tile sums B2's dqm in another order: a small change, not none."""
    tables = _benchmark('--sweep', 'B2', '--options', '16,4,1', '16,4,1,128', '256,4,1')
    sweep = _table(tables, 'Sweep of B2')
    assert sweep[0] == ['option', 'ms', 'x pinned', 'regs', 'spills', 'programs / SM',
                        'change', 'status']
    rows = {row[0]: row for row in sweep[1:]}
    pinned = next(option for option in rows if option.endswith('(pinned)'))
    assert list(rows) == [pinned, '16,4,1', '16,4,1,128', '256,4,1']
    assert rows[pinned][2:] == ['1.00', '-', '-', '-', '0.0e+00', 'ok']
    assert rows['16,4,1'][-1] == 'ok' and 0 < float(rows['16,4,1'][-2]) < 2e-5
    # The interpreter has no registers to cap: the same sums in the same order.
    assert rows['16,4,1,128'][-2:] == rows['16,4,1'][-2:]
    assert rows['256,4,1'][-1].endswith('not whole tiles')

    (summary,) = _table(tables, 'Sweep summary')[1:]
    assert summary[0] == 'B2' and summary[1] == pinned.split()[0]


def test_sweep_options_and_target_chunks():
    """A --sweep option is BLOCK_L,W,S with an optional register cap; --target-chunks
    rechunks every later call: 384 tokens are three chunks of 128 by default, two of 256
    when the chunking aims at one program per (image, head)."""
    from mmrala.ops import load_kernels

    assert benchmark_tool.parse_option('32,4,2') == (32, 4, 2)
    assert benchmark_tool.launch_options((32, 4, 2, 168)) == dict(
        BLOCK_L=32, num_warps=4, num_stages=2, maxnreg=168)
    for text in ('32,4', '32,4,2,168,1', '32,four,2'):
        with pytest.raises(benchmark_tool.argparse.ArgumentTypeError, match='BLOCK_L'):
            benchmark_tool.parse_option(text)

    kernels = load_kernels('test')
    qkv = torch.empty(2, 192, 16, 24, device='meta')
    default = kernels.TARGET_CHUNKS
    assert kernels.geometry_of(qkv, 1).chunk_tokens == 128
    try:
        benchmark_tool.set_target_chunks(1)
        assert kernels.geometry_of(qkv, 1).chunk_tokens == 256
    finally:
        benchmark_tool.set_target_chunks(default)
    assert kernels.geometry_of(qkv, 1).chunk_tokens == 128


def test_benchmark_scaling_on_cpu(tmp_path):
    csv_path, png_path = tmp_path / 'scaling.csv', tmp_path / 'scaling.png'
    # Batch 2 at 48 px: stage 4 is 2 x 2 tokens; at 32 px the CPU convolutions' workspace
    # outweighs the activations.
    tables = _benchmark('--scaling', '--quick', '--arch', 't', '--batch', '2', '--sizes', '48',
                        '64', '--csv', csv_path, '--plot', png_path)
    table = _table(tables, 'RAVLT-T backbone forward + backward')
    assert table[0] == ['attn types', 'op', 'size', 'pixels', 'step ms', 'peak MiB', 'status']
    assert [(row[0], row[1], row[2]) for row in table[1:]] == [
        ('released', 'reference', '48x48'), ('released', 'reference', '64x64'),
        ('all-rala', 'reference', '48x48'), ('all-rala', 'reference', '64x64')]

    with open(csv_path) as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 4 and all(r['status'] == 'ok' for r in records)
    assert [int(r['pixels']) for r in records] == [2 * 48 * 48, 2 * 64 * 64] * 2
    assert all(float(r['step_ms']) > 0 for r in records)
    for config in ('released', 'all-rala'):
        peaks = [float(r['peak_mib']) for r in records if r['attn_types'] == config]
        assert 0 < peaks[0] < peaks[1], peaks      # more pixels, more memory
    assert png_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_benchmark_compiles_the_authors_op_on_cpu():
    """The slow CPU path of the benchmark: the authors' op under torch.compile."""
    core = _table(_benchmark('--quick'), 'RALA core')
    assert {row[1]: row[-1] for row in core[1:]}['authors-compiled'] == 'ok'
