"""PyTorch reference of the RALA core, in the convex form of docs/rala_kernel.md.

Per (image, head), with phi = elu + 1 and c = d ** -0.5:

    Q = phi(Q0), K = phi(K0), qm = mean_i Q_i
    a  = softmax_j(c * K_j . qm)                 (logits and softmax in fp32)
    S  = sum_j a_j rope(K_j)^T V_j,  km = sum_j a_j K_j
    O_i = rope(Q_i) S / (Q_i . km + 1e-6)

This equals the authors' ``k * alpha * L`` formulation exactly, but S and km are convex
combinations, so nothing overflows in fp16. It is the ground truth the fused kernel is
tested against and the path taken on the CPU.

:func:`rala_attention_authors` is the authors' own formulation, written out with its
own RoPE (not :mod:`.rope`), so that it checks this file and the kernels independently
and serves as the baseline the benchmark times.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rope import apply_rope, rope_pair_phases

RALA_EPS = 1e-6


def split_qkv(qkv: torch.Tensor, num_heads: int):
    """Views (B, n, d, L) of q, k and v in the authors' [q | k | v] channel layout."""
    if qkv.dim() != 4:
        raise ValueError(f'rala_attention expects qkv of shape (B, 3C, H, W), got {tuple(qkv.shape)}')
    batch, channels3, height, width = qkv.shape
    if channels3 % (3 * num_heads):
        raise ValueError(f'qkv has {channels3} channels, which is not 3 * C with C divisible by '
                         f'num_heads={num_heads}; pass the first 3C channels of the qkvo conv.')
    head_dim = channels3 // (3 * num_heads)
    q, k, v = qkv.reshape(batch, 3, num_heads, head_dim, height * width).unbind(1)
    return q, k, v


def rala_attention_reference(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """RALA core output (B, C, H, W) for ``qkv`` (B, 3C, H, W), before ``+ lepe`` and ``* o``."""
    batch, channels3, height, width = qkv.shape
    q0, k0, v = split_qkv(qkv, num_heads)
    head_dim = q0.shape[2]
    table_dtype = torch.promote_types(qkv.dtype, torch.float32)
    cos, sin = rope_pair_phases(height, width, head_dim, qkv.device, table_dtype)

    q = F.elu(q0) + 1.0
    k = F.elu(k0) + 1.0
    global_query = q.to(table_dtype).mean(dim=-1)                       # (B, n, d)
    logits = torch.einsum('bhdl,bhd->bhl', k.to(table_dtype), global_query) * head_dim ** -0.5
    weights = logits.softmax(dim=-1).to(q.dtype)                        # (B, n, L)

    k_rot = apply_rope(k, cos, sin)
    state = torch.einsum('bhdl,bhel->bhde', k_rot * weights[:, :, None], v)   # S, (B, n, d, d)
    key_mean = torch.einsum('bhdl,bhl->bhd', k, weights)                 # km
    normaliser = torch.einsum('bhdl,bhd->bhl', q, key_mean) + RALA_EPS
    out = torch.einsum('bhdl,bhde->bhel', apply_rope(q, cos, sin), state) / normaliser[:, :, None]
    return out.reshape(batch, channels3 // 3, height, width)


def authors_rope_phase(height: int, width: int, head_dim: int, dtype=torch.float64,
                       device=None) -> torch.Tensor:
    """The authors' (L, d) RoPE phase: rows on the first d/2 channels, columns on the rest,
    each pair of channels sharing the angle ``10000 ** -linspace(0, 1, d/4)``."""
    theta = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, dtype=dtype, device=device)
    angle = theta.repeat_interleave(2)                                         # (d/2,)
    rows = torch.arange(height, dtype=dtype, device=device)[:, None, None] * angle
    cols = torch.arange(width, dtype=dtype, device=device)[None, :, None] * angle
    phase = torch.cat([rows.expand(height, width, -1), cols.expand(height, width, -1)], -1)
    return phase.reshape(height * width, head_dim)


def _authors_rotate(x, phase):
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * phase.cos() + rotated * phase.sin()


def rala_attention_authors(qkv: torch.Tensor, num_heads: int,
                           phase: torch.Tensor | None = None) -> torch.Tensor:
    """The authors' RALA core, ``k * alpha * L`` with (L, d) RoPE tensors, in qkv's dtype.

    ``phase`` is :func:`authors_rope_phase` for qkv's size; the authors build it once per
    stage, so a benchmark passes it in to keep it out of the timed region.
    """
    batch, channels3, height, width = qkv.shape
    channels, length = channels3 // 3, height * width
    head_dim = channels // num_heads
    q, k, v = qkv.reshape(batch, 3, num_heads, head_dim, length).transpose(-1, -2).unbind(1)
    q, k = F.elu(q) + 1, F.elu(k) + 1                                          # (B, n, L, d)
    if phase is None:
        phase = authors_rope_phase(height, width, head_dim, qkv.dtype, qkv.device)
    q_mean = q.mean(dim=2, keepdim=True)
    alpha = ((q_mean * head_dim ** -0.5) @ k.transpose(-1, -2)).softmax(dim=-1)  # (B, n, 1, L)
    k = k * alpha.transpose(-1, -2) * length
    z = 1 / (q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + RALA_EPS)
    kv = _authors_rotate(k, phase).transpose(-1, -2) @ (v / length)
    out = (_authors_rotate(q, phase) @ kv) * z
    return out.transpose(-1, -2).reshape(batch, channels, height, width)
