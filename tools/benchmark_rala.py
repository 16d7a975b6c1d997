#!/usr/bin/env python
"""Benchmark the RALA core on a CUDA GPU: fused Triton kernel against PyTorch.

Default mode, per workload (B, heads, d, H, W) and variant, times the forward pass,
the backward pass (a forward + backward step minus the forward) and measures peak and
kept memory. Variants:

    fused           mmrala.ops.rala_attention(impl='triton')
    reference       mmrala.ops.rala_attention_reference, eager
    compiled        torch.compile(rala_attention_reference, dynamic=True)
    authors         the authors' formulation, eager: k * alpha * L, their (L, d) RoPE
                    tensors and their z (written out below)

Each time is also given as a multiple of the memory-bound limit: the bytes a fused
kernel must move (forward: read Q0 twice, K0, V, write O; backward: read Q0 and G
twice, K0 and V, write dQ0, dK0, dV) divided by the copy bandwidth measured in the
same run. Half-precision runs are under torch.autocast, as in the model.

``--backbone`` instead times a RAVLT-S training step (forward + backward) at 1344 x 800,
batch 2, under autocast, with rala_impl='triton' and 'torch'.

    python tools/benchmark_rala.py --csv rala.csv --plot rala.png
    python tools/benchmark_rala.py --backbone
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}

# (batch, heads, head dim, H, W). RAVLT-S stages 1 and 2 for Mask R-CNN at 1344 x 800,
# the same sizes with the d = 96 of RAVLT-B / L, and ImageNet-style 224 px training.
WORKLOADS = [
    (2, 1, 64, 200, 336),
    (2, 2, 64, 100, 168),
    (2, 1, 96, 200, 336),
    (2, 2, 96, 100, 168),
    (128, 1, 64, 56, 56),
]
QUICK_WORKLOADS = [WORKLOADS[0], WORKLOADS[1], WORKLOADS[4]]
VARIANTS = ('fused', 'reference', 'compiled', 'authors')


def _import_mmrala():
    try:
        import mmrala  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def progress(message: str):
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


# ---------------------------------------------------------------------------------------
# The authors' formulation (RAVLT.md section 1), for comparison only.
# ---------------------------------------------------------------------------------------

def authors_rope_tensors(height, width, head_dim, device):
    """Their per-stage (L, d) sin and cos, built once per stage and shared by its blocks
    (so outside the timed region here)."""
    from mmrala.ops import rope_angle

    angle = rope_angle(head_dim, device)                                   # (d/2,) fp32
    rows = torch.arange(height, device=device)[:, None, None] * angle
    cols = torch.arange(width, device=device)[None, :, None] * angle
    phase = torch.cat([rows.expand(height, width, -1), cols.expand(height, width, -1)], -1)
    phase = phase.reshape(height * width, head_dim)
    return phase.sin(), phase.cos()


def authors_rala(qkv, num_heads, sin, cos):
    batch, channels3, height, width = qkv.shape
    channels = channels3 // 3
    head_dim = channels // num_heads
    tokens = height * width
    q, k, v = qkv.reshape(batch, 3, num_heads, head_dim, tokens).transpose(-1, -2).unbind(1)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    q_mean = q.mean(dim=-2, keepdim=True)
    eff = head_dim ** -0.5 * q_mean @ k.transpose(-1, -2)
    eff = torch.softmax(eff, dim=-1).transpose(-1, -2)
    k = k * eff * tokens

    def theta_shift(x):
        rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
        return x * cos + rotated * sin

    q_rope, k_rope = theta_shift(q), theta_shift(k)
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k_rope.transpose(-2, -1) * tokens ** -0.5) @ (v * tokens ** -0.5)
    out = q_rope @ kv * z
    return out.transpose(-1, -2).reshape(batch, channels, height, width)


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------

@dataclass
class Row:
    batch: int
    heads: int
    head_dim: int
    height: int
    width: int
    dtype: str
    variant: str
    tokens: int = 0
    fwd_ms: float = math.nan
    bwd_ms: float = math.nan
    step_ms: float = math.nan
    peak_mib: float = math.nan
    kept_mib: float = math.nan
    bound_fwd_ms: float = math.nan
    bound_bwd_ms: float = math.nan
    fwd_x_bound: float = math.nan
    bwd_x_bound: float = math.nan
    status: str = 'ok'


def copy_bandwidth(do_bench) -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write)."""
    src = torch.empty(2 ** 28, dtype=torch.float32, device='cuda')
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src))
    return 2 * 2 ** 30 / (ms * 1e-3)


def fused_bytes(batch, heads, head_dim, height, width, element_size):
    volume = batch * heads * head_dim * height * width * element_size
    return 5 * volume, 9 * volume


def make_variant(name, heads, height, width, head_dim):
    from mmrala.ops import rala_attention, rala_attention_reference

    if name == 'fused':
        return lambda qkv: rala_attention(qkv, heads, impl='triton')
    if name == 'reference':
        return lambda qkv: rala_attention_reference(qkv, heads)
    if name == 'compiled':
        compiled = make_variant.compiled
        return lambda qkv: compiled(qkv, heads)
    if name == 'authors':
        sin, cos = authors_rope_tensors(height, width, head_dim, 'cuda')
        return lambda qkv: authors_rala(qkv, heads, sin, cos)
    raise ValueError(name)


def measure(row: Row, fn, dtype, do_bench, bandwidth):
    channels = row.heads * row.head_dim
    autocast = torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32)
    conv_out = torch.randn(row.batch, 4 * channels, row.height, row.width, device='cuda',
                           dtype=dtype, requires_grad=True)
    grad = torch.randn(row.batch, channels, row.height, row.width, device='cuda', dtype=dtype)

    def forward():
        with autocast:
            return fn(conv_out[:, :3 * channels])

    def step():
        out = forward()
        out.backward(grad.to(out.dtype))   # autocast may hand back another dtype

    step()                       # compile, autotune, allocate
    torch.cuda.synchronize()
    conv_out.grad = None
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = forward()
    torch.cuda.synchronize()
    row.kept_mib = (torch.cuda.memory_allocated() - baseline
                    - out.numel() * out.element_size()) / 2 ** 20
    out.backward(grad.to(out.dtype))
    torch.cuda.synchronize()
    row.peak_mib = (torch.cuda.max_memory_allocated() - baseline) / 2 ** 20
    del out
    conv_out.grad = None

    row.fwd_ms = do_bench(forward, grad_to_none=[conv_out])
    row.step_ms = do_bench(step, grad_to_none=[conv_out])
    row.bwd_ms = row.step_ms - row.fwd_ms
    bytes_fwd, bytes_bwd = fused_bytes(row.batch, row.heads, row.head_dim, row.height,
                                       row.width, conv_out.element_size())
    row.bound_fwd_ms = bytes_fwd / bandwidth * 1e3
    row.bound_bwd_ms = bytes_bwd / bandwidth * 1e3
    row.fwd_x_bound = row.fwd_ms / row.bound_fwd_ms
    row.bwd_x_bound = row.bwd_ms / row.bound_bwd_ms


def run_kernels(args, do_bench):
    from mmrala.ops import rala_attention_reference

    dtype = DTYPES[args.dtype]
    variants = [v for v in VARIANTS if v not in args.skip]
    if 'compiled' in variants:
        make_variant.compiled = torch.compile(rala_attention_reference, dynamic=True)
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS

    progress('measuring copy bandwidth (1 GiB device-to-device copy)')
    bandwidth = copy_bandwidth(do_bench)
    progress(f'copy bandwidth: {bandwidth / 1e9:.0f} GB/s')

    rows = []
    total = len(workloads) * len(variants)
    for index, (batch, heads, head_dim, height, width) in enumerate(workloads):
        for vindex, variant in enumerate(variants):
            row = Row(batch, heads, head_dim, height, width, args.dtype, variant,
                      tokens=batch * height * width)
            step = index * len(variants) + vindex + 1
            progress(f'[{step}/{total}] B={batch} {height}x{width} heads={heads} '
                     f'd={head_dim} {variant}')
            try:
                measure(row, make_variant(variant, heads, height, width, head_dim), dtype,
                        do_bench, bandwidth)
            except torch.cuda.OutOfMemoryError:
                row.status = 'out of memory'
            except Exception as err:  # a variant failing must not end the whole run
                row.status = f'failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}'
            torch.cuda.empty_cache()
            rows.append(row)
            progress(f'    fwd {row.fwd_ms:.3f} ms  bwd {row.bwd_ms:.3f} ms  '
                     f'peak {row.peak_mib:.1f} MiB  {row.status}')
    return rows, bandwidth


def print_table(rows, bandwidth):
    header = (f'{"B":>4} {"H x W":>10} {"n":>2} {"d":>3} {"variant":>10} {"fwd ms":>9} '
              f'{"x bound":>8} {"bwd ms":>9} {"x bound":>8} {"peak MiB":>9} {"kept MiB":>9}')
    print(f'\ncopy bandwidth {bandwidth / 1e9:.0f} GB/s; "x bound" = time / (bytes a fused '
          'kernel must move / bandwidth)')
    print(header)
    print('-' * len(header))
    for r in rows:
        size = f'{r.height}x{r.width}'
        if r.status != 'ok':
            print(f'{r.batch:>4} {size:>10} {r.heads:>2} {r.head_dim:>3} {r.variant:>10}  '
                  f'{r.status}')
            continue
        print(f'{r.batch:>4} {size:>10} {r.heads:>2} {r.head_dim:>3} {r.variant:>10} '
              f'{r.fwd_ms:>9.3f} {r.fwd_x_bound:>8.1f} {r.bwd_ms:>9.3f} {r.bwd_x_bound:>8.1f} '
              f'{r.peak_mib:>9.1f} {r.kept_mib:>9.2f}')


def write_csv(rows, path, bandwidth):
    fields = list(asdict(rows[0])) + ['copy_gbps']
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            record = asdict(r)
            record['copy_gbps'] = round(bandwidth / 1e9, 1)
            writer.writerow(record)
    progress(f'wrote {path}')


def plot(rows, path, title):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        progress(f'matplotlib is not installed: no plot written to {path} '
                 '(pip install matplotlib)')
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, name in ((axes[0], 'fwd_ms', 'forward'), (axes[1], 'bwd_ms', 'backward')):
        for head_dim in sorted({r.head_dim for r in rows}):
            for variant in VARIANTS:
                points = sorted((r.tokens, getattr(r, key)) for r in rows
                                if r.variant == variant and r.head_dim == head_dim
                                and r.status == 'ok')
                if points:
                    ax.plot(*zip(*points), marker='o',
                            linestyle='-' if head_dim == 64 else '--',
                            label=f'{variant} d={head_dim}')
        # The memory bound of the fused kernel, per workload (heads and d included).
        bound = sorted((r.tokens, getattr(r, 'bound_' + key))
                       for r in rows if r.variant == 'fused' and r.status == 'ok')
        if bound:
            ax.plot(*zip(*bound), color='black', linestyle=':', label='memory bound')
        ax.set(xscale='log', yscale='log', xlabel='tokens (B * H * W)',
               ylabel='ms', title=f'RALA core {name}')
        ax.grid(True, which='both', alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    progress(f'wrote {path}')


# ---------------------------------------------------------------------------------------
# Backbone mode
# ---------------------------------------------------------------------------------------

def time_backbone_step(impl, images, dtype, steps, warmup):
    """Mean time and peak memory of a RAVLT-S forward + backward with rala_impl=impl."""
    from mmrala.models import RAVLT

    progress(f'RAVLT-S, rala_impl={impl!r}: building')
    torch.manual_seed(0)
    model = RAVLT(arch='s', out_indices=(0, 1, 2, 3), rala_impl=impl).cuda().train()
    autocast = torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32)

    def train_step():
        with autocast:
            features = model(images)
        loss = sum(f.float().mean() for f in features)
        loss.backward()
        model.zero_grad(set_to_none=True)

    progress(f'RAVLT-S, rala_impl={impl!r}: {warmup} warm-up steps')
    for _ in range(warmup):
        train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    progress(f'RAVLT-S, rala_impl={impl!r}: timing {steps} steps')
    start.record()
    for _ in range(steps):
        train_step()
    end.record()
    torch.cuda.synchronize()
    with torch.no_grad(), autocast:
        features = [f.float() for f in model(images)]
    return dict(step_ms=start.elapsed_time(end) / steps,
                peak_mib=(torch.cuda.max_memory_allocated() - baseline) / 2 ** 20,
                features=features)


def run_backbone(args):
    dtype = DTYPES[args.dtype]
    steps, warmup = (5, 2) if args.quick else (20, 5)
    images = torch.randn(2, 3, 800, 1344, device='cuda')
    results = {}
    for impl in ('triton', 'torch'):
        results[impl] = time_backbone_step(impl, images, dtype, steps, warmup)
        torch.cuda.empty_cache()

    print(f'\nRAVLT-S training step (forward + backward), 2 x 3 x 800 x 1344, {args.dtype} '
          f'autocast, mean of {steps} steps')
    print(f'{"rala_impl":>10} {"step ms":>9} {"peak MiB":>9}')
    for impl, result in results.items():
        print(f'{impl:>10} {result["step_ms"]:>9.1f} {result["peak_mib"]:>9.0f}')
    speedup = results['torch']['step_ms'] / results['triton']['step_ms']
    print(f'the triton step takes {1 / speedup:.2f}x the time of the torch step '
          f'({speedup:.2f}x speed-up)')
    for level, (a, b) in enumerate(zip(results['triton']['features'],
                                       results['torch']['features'])):
        diff = ((a - b).norm() / b.norm()).item()
        print(f'stage {level + 1} features {tuple(a.shape)}: relative difference {diff:.2e}')
    if args.csv:
        with open(args.csv, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(['rala_impl', 'dtype', 'step_ms', 'peak_mib'])
            for impl, result in results.items():
                writer.writerow([impl, args.dtype, round(result['step_ms'], 3),
                                 round(result['peak_mib'], 1)])
        progress(f'wrote {args.csv}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Needs a CUDA GPU. Times are medians of triton.testing.do_bench '
               '(kernels) or means over CUDA events (backbone).')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bf16',
                        help='input dtype; bf16 / fp16 run under torch.autocast (default bf16)')
    parser.add_argument('--csv', metavar='PATH', help='write the results as CSV')
    parser.add_argument('--plot', metavar='PATH',
                        help='write a PNG of time against tokens (needs matplotlib)')
    parser.add_argument('--quick', action='store_true',
                        help='fewer workloads and repetitions, for a smoke run')
    parser.add_argument('--skip', nargs='*', default=[], choices=VARIANTS, metavar='VARIANT',
                        help=f'variants to leave out, of {", ".join(VARIANTS)}')
    parser.add_argument('--backbone', action='store_true',
                        help='time a RAVLT-S training step at 1344 x 800 instead, with '
                             "rala_impl='triton' and 'torch'")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit('benchmark_rala.py needs a CUDA GPU: the fused kernel and the timings it '
                 'is compared with only mean something there. No GPU was found '
                 '(torch.cuda.is_available() is False).')
    _import_mmrala()
    import triton.testing

    progress(f'device: {torch.cuda.get_device_name()}, torch {torch.__version__}, '
             f'triton {triton.__version__}')
    if args.backbone:
        run_backbone(args)
        return

    warmup, rep = (5, 20) if args.quick else (25, 100)

    def do_bench(fn, grad_to_none=None):
        return triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none,
                                       return_mode='median')

    rows, bandwidth = run_kernels(args, do_bench)
    print_table(rows, bandwidth)
    if args.csv:
        write_csv(rows, args.csv, bandwidth)
    if args.plot:
        plot(rows, args.plot, f'{torch.cuda.get_device_name()}, {args.dtype}')


if __name__ == '__main__':
    main()
