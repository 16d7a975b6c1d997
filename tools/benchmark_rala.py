#!/usr/bin/env python
"""Benchmark the RALA attention: the fused Triton kernels against PyTorch.

Default mode, per workload (batch, heads, head dim, H, W):

1. Correctness, before any timing: the fused core and the fused layer against the float64
   reference, output and every gradient. The run stops here if either is off.
2. The core, forward and backward each timed on its own. The backward is
   ``torch.autograd.grad`` of the op's output with respect to its own leaf input, with
   the graph kept: no forward and no slice glue in it. Variants:

       fused             mmrala.ops.rala_attention(impl='triton')
       reference         mmrala.ops.rala_attention_reference (the convex form), eager
       authors           mmrala.ops.rala_attention_authors (k * alpha * L), eager
       authors-compiled  the same under torch.compile
       fla               flash-linear-attention's chunked (causal) linear attention on the
                         same q, k, v, token-major copies made outside the timed region

   "x bound" is the time over the memory-bound time: the bytes the fused passes must
   move (the byte model of mmrala.ops.kernel_report, docs/rala_kernel.md) divided by
   the copy bandwidth measured in the same run. "host ms" is how long the call takes to
   return when the GPU starts idle: the Python, allocations and launches that queue
   the work. Where it comes near the time, the GPU was waiting on the host.
3. The fused passes one by one (F1, F2, combine, F3, B1, combine, B2, B3): every kernel
   launch of a forward and a backward, recorded and then replayed alone, with its bytes
   and its own "x bound".
4. The layer (``rala_gated_attention``: core + lepe, times the gate), reference autograd
   composition against the fused node: the bytes autograd keeps for the backward
   (saved_tensors_hooks) and the full-size (B, 4C, H, W) tensors the backward creates.

``--sweep [PASS ...]`` times each token pass alone (on the first workload) at other launch
options (``--options BLOCK_L,W,S[,MAXNREG] ...``; by default 24 of them), each checked
against the pinned option's outputs, with its registers, spills and resident programs per
SM where the device reports them: the measurements the pinned options (PASS_TILING,
ARCH_TILING) come from.
``--target-chunks N`` chunks the token axis for N programs per (image, head) in any mode.

``--scaling`` times a RAVLT-S (or ``--arch``) backbone forward + backward at growing
input sizes, with the released attention types and with RALA in every stage, each on
the fused and on the reference op, and writes the cost against pixels as CSV and PNG.

With no CUDA GPU everything runs on the CPU at small sizes: the PyTorch ops as they
are, the fused path in Triton's interpreter (TRITON_INTERPRET=1 is set unless already
given). Those figures check the tool and the shape of the curves, not the kernels' speed.

    python tools/benchmark_rala.py --quick
    python tools/benchmark_rala.py --scaling --csv scaling.csv --plot scaling.png
"""
from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}

# Relative RMS error against float64 that the fused op must meet (as in the tests).
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}

# (batch, heads, head dim, H, W). GPU: RAVLT-S stages 1 and 2 for Mask R-CNN at
# 1344 x 800, the same with the d = 96 of RAVLT-B / L, and ImageNet-style 224 px
# training. CPU: ragged sizes the interpreter gets through in seconds (--quick: the
# first, a single partial tile of tokens).
GPU_WORKLOADS = [(2, 1, 64, 200, 336), (2, 2, 64, 100, 168), (2, 1, 96, 200, 336),
                 (2, 2, 96, 100, 168), (128, 1, 64, 56, 56)]
CPU_WORKLOADS = [(1, 1, 32, 7, 9), (2, 1, 64, 13, 21)]
VARIANTS = ('fused', 'reference', 'authors', 'authors-compiled', 'fla')
PASSES = ('F1', 'F2', 'F3', 'B1', 'B2', 'B3')

BACKBONE_ATTN_TYPES = {'released': ('rala', 'rala', 'softmax', 'softmax'),
                       'all-rala': ('rala',) * 4}
GPU_SIZES = (512, 768, 1024, 1536, 2048)
CPU_SIZES = (64, 96, 128)
IMPL_NAMES = {'triton': 'fused', 'torch': 'reference'}


def progress(message: str):
    print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def print_table(title: str, header, rows):
    """A plain-text table: the title, the header, a rule, one line per row."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f'\n{title}')
    print('  '.join(h.rjust(w) for h, w in zip(cells[0], widths)))
    print('  '.join('-' * w for w in widths))
    for row in cells[1:]:
        print('  '.join(c.rjust(w) for c, w in zip(row, widths)))


def fmt(value, spec='.3f'):
    """A table cell: '-' for a figure that was not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return format(value, spec)


# ---------------------------------------------------------------------------------------
# Measuring tools, shared with tests/test_rala_layer.py
# ---------------------------------------------------------------------------------------

def saved_tensor_bytes(fn):
    """(bytes, fn()): the distinct storages autograd keeps for the backward of ``fn()``.

    Each storage counts once and whole, however many views of it are saved: a saved
    channel slice keeps the whole conv output alive.
    """
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return sum(storages.values()), out


# Ops that fill a tensor with zeros; autograd's slice backward is one of them.
ZERO_FILLING_OPS = ('aten.slice_backward', 'aten.zeros', 'aten.zeros_like', 'aten.new_zeros',
                    'aten.zero_', 'aten.fill_')


class AllocationRecorder(TorchDispatchMode):
    """Records, while active, the tensors that ops create in new memory (not views, not
    in-place results) as (op, shape, storage bytes, storage address), and separately
    every zero-filling op with the bytes it fills.

    Triton's interpreter copies kernel arguments to host buffers outside the dispatcher;
    those are not seen, as they have no counterpart on a GPU.
    """

    def __init__(self):
        super().__init__()
        self.created, self.zero_filled = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Looked up after the call, so that in-place results count as their input.
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        name = str(func)
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            if name.startswith(ZERO_FILLING_OPS):
                self.zero_filled.append((name, tuple(tensor.shape), storage.nbytes()))
            if storage.data_ptr() not in inputs:
                self.created.append((name, tuple(tensor.shape), storage.nbytes(),
                                     storage.data_ptr()))
        return out

    def at_least(self, nbytes: int):
        return [record for record in self.created if record[2] >= nbytes]

    def zero_filled_at_least(self, nbytes: int):
        return [record for record in self.zero_filled if record[2] >= nbytes]


# ---------------------------------------------------------------------------------------
# Devices and timers
# ---------------------------------------------------------------------------------------

@dataclass
class Bench:
    device: torch.device
    quick: bool

    @property
    def on_gpu(self) -> bool:
        return self.device.type == 'cuda'

    def time_ms(self, fn) -> float:
        """Median milliseconds of ``fn()``: triton's do_bench on a GPU, wall clock on CPU."""
        if self.on_gpu:
            import triton.testing
            warmup, rep = (5, 20) if self.quick else (25, 100)
            return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode='median')
        return self.host_ms(fn)

    def host_ms(self, fn) -> float:
        """Median milliseconds until ``fn()`` returns, from an idle device: on a GPU the
        host's work of queueing it (its Python, allocations and launches), on the CPU
        the whole call. A GPU time near it means the GPU waited on the host."""
        fn()
        times = []
        quick_reps, full_reps = (5, 20) if self.on_gpu else (1, 5)
        for _ in range(quick_reps if self.quick else full_reps):
            if self.on_gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        if self.on_gpu:
            torch.cuda.synchronize()
        return statistics.median(times)

    def time_and_host_ms(self, fn):
        """(time_ms, host_ms) of ``fn``; one measurement on the CPU, where they are one."""
        timed = self.time_ms(fn)
        return timed, (self.host_ms(fn) if self.on_gpu else timed)

    def copy_bandwidth(self) -> float:
        """Bytes per second of a device copy (read + write): 1 GiB on a GPU, 64 MiB on CPU."""
        src = torch.empty((2 ** 28 if self.on_gpu else 2 ** 24), device=self.device)
        dst = torch.empty_like(src)
        seconds = self.time_ms(lambda: dst.copy_(src)) * 1e-3
        return 2 * src.numel() * src.element_size() / seconds

    def peak_bytes(self, fn) -> int:
        """Peak bytes allocated by ``fn()`` above what was allocated before it."""
        if self.on_gpu:
            torch.cuda.synchronize()
            baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - baseline
        # The CPU allocator keeps no statistics: replay the profiler's allocation and
        # free events (each '[memory]' event is one, signed) in time order.
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == '[memory]')
        live = peak = 0
        for _, delta in events:
            live += delta
            peak = max(peak, live)
        return peak

    def autocast(self, dtype):
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()


def describe(workload) -> str:
    batch, heads, head_dim, height, width = workload
    return f'B={batch} n={heads} d={head_dim} {height}x{width}'


def layer_inputs(workload, dtype, device, seed=0):
    """qkvo (B, 4C, H, W), lepe weight and bias, and an output gradient (B, C, H, W)."""
    batch, heads, head_dim, height, width = workload
    channels = heads * head_dim
    gen = torch.Generator().manual_seed(seed)
    qkvo = torch.randn(batch, 4 * channels, height, width, generator=gen)
    weight = 0.2 * torch.randn(channels, 1, 5, 5, generator=gen)
    bias = torch.randn(channels, generator=gen)
    grad = torch.randn(batch, channels, height, width, generator=gen)
    return (qkvo.to(device, dtype), weight.to(device), bias.to(device), grad.to(device, dtype))


def gradients(fn, leaves, grad):
    leaves = [leaf.detach().requires_grad_() for leaf in leaves]
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, grad.to(out.dtype))


# ---------------------------------------------------------------------------------------
# 1. Correctness
# ---------------------------------------------------------------------------------------

def fused_and_reference_ops(workload, dtype, device):
    """{op: (fused fn, reference fn, leaves)} for the core and the layer, and the output
    gradient."""
    from mmrala.ops import rala_attention, rala_attention_reference, rala_gated_attention

    heads = workload[1]
    qkvo, weight, bias, grad = layer_inputs(workload, dtype, device)
    qkv = qkvo[:, :3 * qkvo.shape[1] // 4]
    ops = {
        'core': (lambda x: rala_attention(x, heads, impl='triton'),
                 lambda x: rala_attention_reference(x, heads), [qkv]),
        'layer': (lambda x, w, b: rala_gated_attention(x, w, b, heads, impl='triton'),
                  lambda x, w, b: rala_gated_attention(x, w, b, heads, impl='torch'),
                  [qkvo, weight, bias]),
    }
    return ops, grad


def check_correctness(workloads, dtype, device):
    """Fused core and layer against float64; False if any error is over TOLERANCE."""
    rows, ok = [], True
    for workload in workloads:
        ops, grad = fused_and_reference_ops(workload, dtype, device)
        for name, (fused, reference, leaves) in ops.items():
            out, grads = gradients(fused, leaves, grad)
            ref_out, ref_grads = gradients(reference, [leaf.double() for leaf in leaves], grad)
            errors = [rel_rms(out, ref_out)] + [rel_rms(g, r) for g, r in zip(grads, ref_grads)]
            passed = max(errors) < TOLERANCE[dtype]
            ok &= passed
            rows.append((describe(workload), name, fmt(errors[0], '.2e'),
                         fmt(max(errors[1:]), '.2e'), fmt(TOLERANCE[dtype], '.1e'),
                         'ok' if passed else 'FAILED'))
    print_table('Correctness: relative RMS error against the float64 reference',
                ('workload', 'op', 'output', 'worst gradient', 'tolerance', 'result'), rows)
    return ok


# ---------------------------------------------------------------------------------------
# 2. The core, forward and backward
# ---------------------------------------------------------------------------------------

def fla_linear_attention(bench: Bench):
    """flash-linear-attention's chunked linear attention, or the reason it cannot run."""
    if not bench.on_gpu:
        return None, 'fla runs on CUDA GPUs only'
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except ImportError as err:
        return None, f'fla does not import ({err}); pip install flash-linear-attention'
    return chunk_linear_attn, ''


def core_variant(name, workload, qkv, bench: Bench, compiled):
    """(leaves, fn) with fn(*leaves) -> output, or a str saying why the variant cannot run."""
    from mmrala.ops import (
        authors_rope_phase,
        rala_attention,
        rala_attention_authors,
        rala_attention_reference,
    )

    batch, heads, head_dim, height, width = workload
    if name == 'fused':
        return [qkv], lambda x: rala_attention(x, heads, impl='triton')
    if name == 'reference':
        return [qkv], lambda x: rala_attention_reference(x, heads)
    if name in ('authors', 'authors-compiled'):
        # The authors build their RoPE phase once per stage: outside the timed region.
        phase = authors_rope_phase(height, width, head_dim, torch.float32, qkv.device)
        op = compiled if name == 'authors-compiled' else rala_attention_authors
        return [qkv], lambda x: op(x, heads, phase)
    if name == 'fla':
        chunk_linear_attn, reason = fla_linear_attention(bench)
        if chunk_linear_attn is None:
            return reason
        q, k, v = (part.reshape(batch, heads, head_dim, height * width).permute(0, 3, 1, 2)
                   .contiguous() for part in qkv.chunk(3, dim=1))       # (B, L, n, d)
        return [q, k, v], lambda *qkv_: chunk_linear_attn(*qkv_, normalize=False)[0]
    raise ValueError(f'unknown variant {name!r}; choose from {VARIANTS}')


@dataclass
class CoreRow:
    workload: str
    variant: str
    fwd_ms: float = math.nan
    fwd_x_bound: float = math.nan
    fwd_host_ms: float = math.nan
    bwd_ms: float = math.nan
    bwd_x_bound: float = math.nan
    bwd_host_ms: float = math.nan
    status: str = 'ok'


def time_forward_and_backward(fn, leaves, grad, dtype, bench: Bench):
    """((forward ms, host ms), (backward ms, host ms)) of fn(*leaves); the backward is
    the op's own alone."""
    leaves = [leaf.detach().requires_grad_() for leaf in leaves]
    with bench.autocast(dtype):
        forward = bench.time_and_host_ms(lambda: fn(*leaves))
        out = fn(*leaves)
    out_grad = grad.reshape(out.shape).to(out.dtype)    # fla's output is token-major
    # The graph is kept and reused: each call runs the op's backward and nothing else.
    backward = bench.time_and_host_ms(
        lambda: torch.autograd.grad(out, leaves, out_grad, retain_graph=True))
    return forward, backward


def time_core(workloads, variants, dtype, bench: Bench, bandwidth, bound_bytes):
    """Times the core variants; bound_bytes[workload] = the byte model's (forward,
    backward) bytes."""
    from mmrala.ops import rala_attention_authors

    compiled = (torch.compile(rala_attention_authors, dynamic=False)
                if 'authors-compiled' in variants else None)
    rows = []
    for workload in workloads:
        qkvo, _, _, grad = layer_inputs(workload, dtype, bench.device)
        qkv = qkvo[:, :3 * qkvo.shape[1] // 4].contiguous()
        for name in variants:
            progress(f'core {describe(workload)} {name}')
            row = CoreRow(describe(workload), name)
            rows.append(row)
            variant = core_variant(name, workload, qkv, bench, compiled)
            if isinstance(variant, str):
                row.status = f'skipped: {variant}'
                continue
            leaves, fn = variant
            try:
                ((row.fwd_ms, row.fwd_host_ms),
                 (row.bwd_ms, row.bwd_host_ms)) = time_forward_and_backward(fn, leaves, grad,
                                                                            dtype, bench)
            except Exception as err:  # one variant failing must not end the run
                row.status = f'failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}'
                continue
            finally:
                if bench.on_gpu:
                    torch.cuda.empty_cache()
            forward_bytes, backward_bytes = bound_bytes[workload]
            row.fwd_x_bound = row.fwd_ms * 1e-3 / (forward_bytes / bandwidth)
            row.bwd_x_bound = row.bwd_ms * 1e-3 / (backward_bytes / bandwidth)
    print_table(
        f'RALA core, {bench.device.type}: median ms; x bound = time / (byte model of the '
        'fused passes / copy bandwidth); host ms = until the call returns, from an idle '
        'device (the op is host-bound where it nears ms)',
        ('workload', 'variant', 'fwd ms', 'x bound', 'fwd host ms', 'bwd ms', 'x bound',
         'bwd host ms', 'status'),
        [(r.workload, r.variant, fmt(r.fwd_ms), fmt(r.fwd_x_bound, '.1f'), fmt(r.fwd_host_ms),
          fmt(r.bwd_ms), fmt(r.bwd_x_bound, '.1f'), fmt(r.bwd_host_ms), r.status)
         for r in rows])
    return rows


# ---------------------------------------------------------------------------------------
# 3. The fused passes one by one
# ---------------------------------------------------------------------------------------

@contextmanager
def recording_launches(kernels, launches: list):
    """Replaces every kernel of ``kernels`` by a stand-in that launches it and records
    (kernel name, kernel, grid, args, kwargs), for the launch to be replayed alone."""
    names = [name for name in dir(kernels) if name.startswith('_rala_') and
             name.endswith('_kernel')]
    originals = {name: getattr(kernels, name) for name in names}

    class Recording:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((self.name, self.kernel, grid, args, kwargs))
                return self.kernel[grid](*args, **kwargs)
            return launch

    for name, kernel in originals.items():
        setattr(kernels, name, Recording(name, kernel))
    try:
        yield
    finally:
        for name, kernel in originals.items():
            setattr(kernels, name, kernel)


def record_op_launches(workload, dtype, bench: Bench):
    """(kernels module, qkv, geometry, forward launches, backward launches) of one fused
    forward and backward on the workload, each launch as recording_launches keeps it."""
    from mmrala.ops import load_kernels

    kernels = load_kernels('benchmark_rala')
    qkvo, _, _, grad = layer_inputs(workload, dtype, bench.device)
    qkv = qkvo[:, :3 * qkvo.shape[1] // 4]
    geo = kernels._Geometry(qkv, workload[1])
    forward, backward = [], []
    with kernels._launch_device(qkv):
        with recording_launches(kernels, forward):
            _, query_mean, log_sum_exp, state = kernels._rala_forward(qkv, geo)
        with recording_launches(kernels, backward):
            kernels._rala_backward(qkv, grad, query_mean, log_sum_exp, state, geo)
    return kernels, qkv, geo, forward, backward


def time_passes(workload, dtype, bench: Bench, bandwidth):
    """Times every launch of one fused forward and backward alone; prints the table and
    returns the byte model's (forward, backward) bytes."""
    from mmrala.ops.kernel_report import pass_bytes

    kernels, qkv, geo, forward, backward = record_op_launches(workload, dtype, bench)
    model = pass_bytes(geo, qkv.element_size())
    if len(model) != len(forward) + len(backward):
        raise RuntimeError(f'the byte model has {len(model)} passes, the op launched '
                           f'{len(forward) + len(backward)} kernels: update '
                           'mmrala.ops.kernel_report.pass_bytes with the kernels.')

    rows, totals = [], []
    for direction, launches, passes in (('forward', forward, model[:len(forward)]),
                                        ('backward', backward, model[len(forward):])):
        total_ms = total_bytes = 0.0
        for (name, kernel, grid, args, kwargs), (label, nbytes, distinct, _) in zip(launches,
                                                                                   passes):
            progress(f'pass {describe(workload)} {label}')
            with kernels._launch_device(qkv):
                ms = bench.time_ms(functools.partial(kernel[grid], *args, **kwargs))
            total_ms += ms
            total_bytes += nbytes
            rows.append((label, name, 'x'.join(map(str, grid)), fmt(ms, '.4f'),
                         fmt(nbytes / 1e6, '.2f'), fmt(distinct / 1e6, '.2f'),
                         fmt(nbytes / (ms * 1e-3) / 1e9, '.1f'),
                         fmt(ms * 1e-3 / (nbytes / bandwidth) if nbytes else None, '.1f')))
        totals.append(total_bytes)
        rows.append((f'sum {direction}', 'all launches', len(launches), fmt(total_ms, '.4f'),
                     fmt(total_bytes / 1e6, '.2f'),
                     fmt(sum(p[2] for p in passes) / 1e6, '.2f'),
                     fmt(total_bytes / (total_ms * 1e-3) / 1e9, '.1f'),
                     fmt(total_ms * 1e-3 / (total_bytes / bandwidth), '.1f')))
    print_table(f'Fused passes, {describe(workload)} {dtype_name(dtype)}, each launch alone; '
                'model MB = token tensors only, distinct MB = with partials, tables and '
                f'state (copy bandwidth {bandwidth / 1e9:.1f} GB/s)',
                ('pass', 'kernel', 'grid', 'ms', 'model MB', 'distinct MB', 'GB/s', 'x bound'),
                rows)
    return tuple(totals)


def dtype_name(dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


# ---------------------------------------------------------------------------------------
# --sweep: each token pass at other launch options
# ---------------------------------------------------------------------------------------

# (BLOCK_L, num_warps, num_stages) that --sweep tries per pass unless --options names others.
SWEEP_OPTIONS = tuple((block, warps, stages) for block in (16, 32, 64, 128)
                      for warps in (2, 4, 8) for stages in (1, 2))


def parse_option(text: str):
    """'32,4,2' -> (32, 4, 2): BLOCK_L, num_warps, num_stages; '32,4,2,168' -> (32, 4, 2,
    168), with a cap on registers per thread (triton's maxnreg), which buys resident
    programs per SM for what the compiler then spills or recomputes."""
    try:
        option = tuple(int(part) for part in text.split(','))
    except ValueError:
        option = ()
    if len(option) not in (3, 4):
        raise argparse.ArgumentTypeError(
            'a launch option is BLOCK_L,num_warps,num_stages such as 32,4,2, or with a '
            f'register cap BLOCK_L,num_warps,num_stages,maxnreg such as 32,4,2,168; got {text!r}')
    return option


def launch_options(option) -> dict:
    """The kernel keywords of a --sweep option."""
    block, warps, stages, *cap = option
    return dict(BLOCK_L=block, num_warps=warps, num_stages=stages,
                **({'maxnreg': cap[0]} if cap else {}))


def device_programs_per_sm(compiled, device):
    """Resident programs per SM of a compiled kernel on ``device`` (sm_80 and sm_90, the
    architectures the static proof knows); None elsewhere and in the interpreter."""
    from mmrala.ops.kernel_report import SHARED_MEMORY_PER_SM, programs_per_sm

    if device.type != 'cuda' or getattr(compiled, 'n_regs', None) is None:
        return None
    major, minor = torch.cuda.get_device_capability(device)
    arch = f'sm_{major}{minor}'
    if arch not in SHARED_MEMORY_PER_SM:
        return None
    return programs_per_sm(arch, compiled.n_regs, compiled.metadata.num_warps,
                           compiled.metadata.shared)


def relative_change(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """rel_rms, and 0 where both are all zeros."""
    if not expected.any():
        return 0.0 if not actual.any() else math.inf
    return rel_rms(actual, expected)


def sweep_pass(kernels, launch, geo, option, expected, dtype, bench: Bench):
    """(ms, regs, spills, programs per SM, change, status) of one recorded launch
    replayed at ``option``.

    ``expected`` holds the launch's floating-point tensor arguments after a replay at
    its pinned option; ``change`` is the largest relative change of any of them, i.e.
    of the pass's outputs, whose sums run in another order at another option.
    """
    name, kernel, grid, args, kwargs = launch
    if geo.chunk_tokens % option[0]:
        return (None,) * 5 + (f'chunks of {geo.chunk_tokens} tokens are not whole tiles',)
    options = {**kwargs, **launch_options(option)}
    try:
        compiled = kernel[grid](*args, **options)
    except Exception as err:  # a compile error or a shared-memory overflow: not a candidate
        reason = str(err).strip().splitlines()[-1][:80] if str(err).strip() else ''
        return (None,) * 5 + (f'does not build: {type(err).__name__} {reason}',)
    outputs = [arg for arg in args if isinstance(arg, torch.Tensor) and arg.is_floating_point()]
    change = max(relative_change(out, ref) for out, ref in zip(outputs, expected))
    if change > TOLERANCE[dtype]:
        return None, None, None, None, change, 'WRONG'
    ms = bench.time_ms(functools.partial(kernel[grid], *args, **options))
    # A compiled kernel knows its registers and spills; the interpreter has none.
    return (ms, getattr(compiled, 'n_regs', None), getattr(compiled, 'n_spills', None),
            device_programs_per_sm(compiled, bench.device), change, 'ok')


def sweep_launch_options(workload, dtype, bench: Bench, passes, options):
    """Times each token pass of ``passes`` alone at each launch option, against its
    pinned option on this GPU, each option's outputs checked against the pinned
    one's; prints one table per pass and a summary."""
    from mmrala.ops.kernel_report import PASS_NAMES

    kernels, qkv, geo, forward, backward = record_op_launches(workload, dtype, bench)
    launches = {PASS_NAMES[launch[0]]: launch for launch in forward + backward
                if launch[0] in PASS_NAMES}
    summary = []
    for pass_name in passes:
        launch = launches[pass_name]
        kernel_name, kernel, grid, args, kwargs = launch
        pinned = (kwargs['BLOCK_L'], kwargs['num_warps'], kwargs['num_stages'])
        with kernels._launch_device(qkv):
            # Replayed first, so that every output holds the pinned option's result.
            kernel[grid](*args, **kwargs)
            expected = [arg.clone() for arg in args
                        if isinstance(arg, torch.Tensor) and arg.is_floating_point()]
            results = {}
            for option in dict.fromkeys((pinned, *options)):
                progress(f'sweep {pass_name} {option}')
                results[option] = sweep_pass(kernels, launch, geo, option, expected, dtype,
                                             bench)
        pinned_ms = results[pinned][0]
        rows = [(','.join(map(str, option)) + (' (pinned)' if option == pinned else ''),
                 fmt(ms, '.4f'), fmt(ms / pinned_ms if ms and pinned_ms else None, '.2f'),
                 fmt(regs, 'd'), fmt(spills, 'd'), fmt(programs, 'd'), fmt(change, '.1e'),
                 status)
                for option, (ms, regs, spills, programs, change, status) in results.items()]
        print_table(f'Sweep of {pass_name} ({kernel_name}), {describe(workload)} '
                    f'{dtype_name(dtype)}, {geo.num_chunks} chunks of {geo.chunk_tokens} '
                    'tokens: each launch option alone; change = largest relative change of '
                    'its outputs against the pinned option\'s',
                    ('option', 'ms', 'x pinned', 'regs', 'spills', 'programs / SM', 'change',
                     'status'), rows)
        timed = {option: result for option, result in results.items() if result[0] is not None}
        spill_free = {option: result for option, result in timed.items() if not result[2]}
        fastest = min(spill_free, key=lambda option: spill_free[option][0], default=None)
        summary.append((pass_name, ','.join(map(str, pinned)), fmt(pinned_ms, '.4f'),
                        ','.join(map(str, fastest)) if fastest else '-',
                        fmt(spill_free[fastest][0] if fastest else None, '.4f')))
    print_table(f'Sweep summary, {describe(workload)} {dtype_name(dtype)}: the fastest '
                'option without spills on this device, against the pinned one (the static '
                'proof, tools/rala_kernel_report.py, also asks sm_80 and sm_90 of it)',
                ('pass', 'pinned', 'ms', 'fastest spill-free', 'ms'), summary)
    return summary


# ---------------------------------------------------------------------------------------
# 4. The layer: what it keeps for the backward and what its backward allocates
# ---------------------------------------------------------------------------------------

def layer_memory(workload, dtype, impl, device):
    """Saved bytes, and the full-size tensors and zero-filled slices of the backward, of
    rala_gated_attention with ``impl`` on the workload."""
    from mmrala.ops import rala_gated_attention

    qkvo, weight, bias, grad = layer_inputs(workload, dtype, device)
    leaves = [t.requires_grad_() for t in (qkvo, weight, bias)]
    saved, out = saved_tensor_bytes(
        lambda: rala_gated_attention(*leaves, workload[1], impl=impl))
    with AllocationRecorder() as recorder:
        torch.autograd.grad(out, leaves, grad)
    full_size = qkvo.numel() * qkvo.element_size()
    return dict(saved=saved, full_size=full_size,
                full_size_created=len(recorder.at_least(full_size)),
                zero_filled=len(recorder.zero_filled_at_least(full_size // 4)))


def report_layer_memory(workloads, dtype, bench: Bench):
    rows = []
    for workload in workloads:
        progress(f'layer memory {describe(workload)}')
        reference = layer_memory(workload, dtype, 'torch', bench.device)
        fused = layer_memory(workload, dtype, 'triton', bench.device)
        rows.append((describe(workload), dtype_name(dtype),
                     fmt(reference['full_size'] / 2 ** 20, '.2f'),
                     fmt(reference['saved'] / 2 ** 20, '.2f'),
                     fmt(fused['saved'] / 2 ** 20, '.2f'),
                     fmt(fused['saved'] / reference['saved'], '.2f'),
                     f"{reference['full_size_created']} / {fused['full_size_created']}",
                     f"{reference['zero_filled']} / {fused['zero_filled']}"))
    print_table('RALA layer (core + lepe, gated): kept for backward (saved_tensors_hooks, '
                'distinct storages) and backward allocations, reference / fused',
                ('workload', 'dtype', 'qkvo MiB', 'reference MiB', 'fused MiB', 'ratio',
                 'full-size tensors', 'zero-filled slices'), rows)
    return rows


# ---------------------------------------------------------------------------------------
# Scaling mode: a RAVLT-S backbone, forward + backward, against the input size
# ---------------------------------------------------------------------------------------

@dataclass
class ScalingRow:
    device: str
    arch: str
    dtype: str
    batch: int
    size: int
    pixels: int
    attn_types: str
    impl: str
    step_ms: float = math.nan
    peak_mib: float = math.nan
    status: str = 'ok'


def backbone_step(model, images, dtype, bench: Bench):
    """One forward + backward of the backbone, gradients dropped."""
    with bench.autocast(dtype):
        features = model(images)
    sum(f.float().mean() for f in features).backward()
    model.zero_grad(set_to_none=True)


def run_scaling(args, bench: Bench):
    from mmrala.models import RAVLT

    arch = f'RAVLT-{args.arch.upper()}'
    dtype = DTYPES[args.dtype]
    sizes = args.sizes or (GPU_SIZES if bench.on_gpu else CPU_SIZES)
    impls = args.impls or (list(IMPL_NAMES) if bench.on_gpu else ['torch'])
    rows = []
    for config in args.configs:
        attn_types = BACKBONE_ATTN_TYPES[config]
        for impl in impls:
            torch.manual_seed(0)
            model = RAVLT(args.arch, attn_types=attn_types, rala_impl=impl)
            model = model.to(bench.device).train()
            for size in sizes:
                progress(f'{arch} {config} {IMPL_NAMES[impl]} {size}x{size}')
                row = ScalingRow(device_name(bench), arch, args.dtype, args.batch, size,
                                 args.batch * size * size, config, IMPL_NAMES[impl])
                rows.append(row)
                images = torch.randn(args.batch, 3, size, size, device=bench.device)
                train_step = functools.partial(backbone_step, model, images, dtype, bench)
                try:
                    # Timed first: its warm-up takes the one-off allocations (lazily built
                    # caches) out of the peak.
                    row.step_ms = bench.time_ms(train_step)
                    row.peak_mib = bench.peak_bytes(train_step) / 2 ** 20
                except torch.cuda.OutOfMemoryError:
                    row.status = 'out of memory'
                    model.zero_grad(set_to_none=True)
                if bench.on_gpu:
                    torch.cuda.empty_cache()
    print_table(f'{arch} backbone forward + backward, batch {args.batch}, {args.dtype}, '
                f'{bench.device.type}',
                ('attn types', 'op', 'size', 'pixels', 'step ms', 'peak MiB', 'status'),
                [(r.attn_types, r.impl, f'{r.size}x{r.size}', r.pixels, fmt(r.step_ms, '.1f'),
                  fmt(r.peak_mib, '.1f'), r.status) for r in rows])
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        plot_scaling(rows, args.plot, f'{arch} forward + backward, {device_name(bench)}, '
                                      f'{args.dtype}, batch {args.batch}')
    return rows


def write_csv(rows, path):
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    progress(f'wrote {path}')


def plot_scaling(rows, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], 'step_ms', 'ms per step'),
                           (axes[1], 'peak_mib', 'peak MiB')):
        for config in BACKBONE_ATTN_TYPES:
            for impl in IMPL_NAMES.values():
                points = sorted((r.pixels, getattr(r, key)) for r in rows
                                if r.attn_types == config and r.impl == impl
                                and r.status == 'ok')
                if points:
                    ax.plot(*zip(*points), marker='o',
                            linestyle='-' if impl == 'fused' else '--',
                            label=f'{config}, {impl} op')
        ax.set(xscale='log', yscale='log', xlabel='pixels (batch x H x W)', ylabel=label)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    progress(f'wrote {path}')


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

def device_name(bench: Bench) -> str:
    if bench.on_gpu:
        return torch.cuda.get_device_name(bench.device)
    interpreted = os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')
    return 'CPU' + (' (fused path in the Triton interpreter)' if interpreted else '')


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def set_target_chunks(count: int):
    """The op chunks the token axis for ``count`` programs per (image, head) from here on."""
    from mmrala.ops import load_kernels

    kernels = load_kernels('benchmark_rala')
    kernels.TARGET_CHUNKS = count
    kernels._GEOMETRIES.clear()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='On a GPU, times are medians of triton.testing.do_bench; on the CPU, medians '
               'of wall-clock runs, which check the tool and not the kernels.')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default=None,
                        help='input dtype (default: bf16 on a GPU, fp32 on the CPU); '
                             'the PyTorch ops run under torch.autocast in half precision')
    parser.add_argument('--quick', action='store_true',
                        help='the first workload only, and fewer repetitions')
    parser.add_argument('--skip', nargs='*', default=[], choices=VARIANTS, metavar='VARIANT',
                        help=f'core variants to leave out, of {", ".join(VARIANTS)}')
    parser.add_argument('--sweep', nargs='*', choices=PASSES, metavar='PASS',
                        help='time the token passes named (default all six, of '
                             f'{", ".join(PASSES)}) alone at each launch option of --options '
                             'against the pinned one, on the first workload')
    parser.add_argument('--options', nargs='*', type=parse_option,
                        metavar='BLOCK_L,W,S[,MAXNREG]',
                        help='--sweep: launch options, BLOCK_L,num_warps,num_stages and '
                             'optionally a cap on registers per thread (default '
                             f'{len(SWEEP_OPTIONS)}: BLOCK_L 16 to 128, 2 to 8 warps, 1 or 2 '
                             'stages, no cap)')
    parser.add_argument('--target-chunks', type=positive_int, metavar='N',
                        help='chunk the token axis for N programs per (image, head) instead of '
                             'the op\'s TARGET_CHUNKS, for this run: the trade of more resident '
                             'programs against more partials to sum (beyond 256 chunks the sums '
                             'take two rounds of loads)')
    parser.add_argument('--scaling', action='store_true',
                        help='time a RAVLT-S backbone forward + backward against input size')
    parser.add_argument('--sizes', nargs='*', type=int,
                        help=f'--scaling: square input sizes (default {GPU_SIZES} on a GPU, '
                             f'{CPU_SIZES} on the CPU)')
    parser.add_argument('--arch', default='s', choices=('t', 's', 'b', 'l'),
                        help='--scaling: the RAVLT variant (default s)')
    parser.add_argument('--batch', type=int, default=1, help='--scaling: images per step')
    parser.add_argument('--configs', nargs='*', choices=list(BACKBONE_ATTN_TYPES),
                        default=list(BACKBONE_ATTN_TYPES),
                        help='--scaling: attention types per stage, the released ones and/or '
                             'RALA everywhere (default both)')
    parser.add_argument('--impls', nargs='*', choices=list(IMPL_NAMES),
                        help='--scaling: RALA ops to compare (default: both on a GPU; on the '
                             'CPU only torch, as the interpreted fused op takes minutes a step)')
    parser.add_argument('--csv', metavar='PATH', help='--scaling: write the rows as CSV')
    parser.add_argument('--plot', metavar='PATH',
                        help='--scaling: write a PNG of cost against pixels (matplotlib)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # Read when triton is imported, so before anything imports it.
        os.environ.setdefault('TRITON_INTERPRET', '1')
    import triton

    bench = Bench(torch.device('cuda' if on_gpu else 'cpu'), args.quick)
    args.dtype = args.dtype or ('bf16' if on_gpu else 'fp32')
    dtype = DTYPES[args.dtype]
    print(f'device: {device_name(bench)}; torch {torch.__version__}, triton {triton.__version__}'
          f', {args.dtype}')
    if args.target_chunks:
        set_target_chunks(args.target_chunks)
        print(f'chunking for {args.target_chunks} programs per (image, head) (--target-chunks)')
    if args.scaling:
        run_scaling(args, bench)
        return

    workloads = GPU_WORKLOADS if on_gpu else CPU_WORKLOADS
    workloads = workloads[:1] if args.quick or args.sweep is not None else workloads
    if not check_correctness(workloads, dtype, bench.device):
        sys.exit('the fused op is off the float64 reference: no timings taken.')
    if args.sweep is not None:
        sweep_launch_options(workloads[0], dtype, bench, args.sweep or PASSES,
                             args.options or SWEEP_OPTIONS)
        return
    bandwidth = bench.copy_bandwidth()
    print(f'copy bandwidth: {bandwidth / 1e9:.1f} GB/s')
    bound_bytes = {workload: time_passes(workload, dtype, bench, bandwidth)
                   for workload in workloads}
    time_core(workloads, [v for v in VARIANTS if v not in args.skip], dtype, bench, bandwidth,
              bound_bytes)
    report_layer_memory(workloads, dtype, bench)


if __name__ == '__main__':
    main()
