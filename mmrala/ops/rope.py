"""2-D rotary position embedding of RAVLT (docs/architecture.md#3-2-d-rope).

Channel j of a head of width d is paired with its neighbour (2m, 2m+1). Pair m turns
by ``row * theta[m]`` for the first d/4 pairs and by ``col * theta[m - d/4]`` for the
last d/4. Only the four small (H or W) x d/4 sin/cos tables are ever built; the fused
kernel reads the same tables, so the reference and the kernel cannot drift apart.
"""
from __future__ import annotations

import torch

ROPE_BASE = 10000.0


def rope_frequencies(head_dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The frequencies theta_m of docs/architecture.md#3-2-d-rope, length head_dim // 4."""
    if head_dim % 4:
        raise ValueError(f'2-D RoPE needs a head dim divisible by 4, got {head_dim}; '
                         'choose embed_dims / num_heads accordingly.')
    return 1.0 / ROPE_BASE ** torch.linspace(0, 1, head_dim // 4, device=device, dtype=dtype)


def rope_angle(head_dim: int, device=None) -> torch.Tensor:
    """The authors' ``RoPE.angle`` buffer: every frequency repeated twice (length d/2)."""
    return rope_frequencies(head_dim, device).repeat_interleave(2)


def rope_tables(height: int, width: int, head_dim: int, device=None, dtype=torch.float32):
    """(cos_row, sin_row) of shape (H, d/4) and (cos_col, sin_col) of shape (W, d/4).

    float32 (or float64 for float64 checks) whatever the model's dtype: the phases reach
    hundreds of radians at detection resolution, where bf16 would lose the angle.
    """
    theta = rope_frequencies(head_dim, device, dtype)
    rows = torch.arange(height, device=device, dtype=dtype)[:, None] * theta
    cols = torch.arange(width, device=device, dtype=dtype)[:, None] * theta
    return rows.cos(), rows.sin(), cols.cos(), cols.sin()


def rope_pair_phases(height: int, width: int, head_dim: int, device=None,
                     dtype=torch.float32):
    """cos and sin per (pair m, token l), shape (d/2, H*W), from the small tables."""
    cos_r, sin_r, cos_c, sin_c = rope_tables(height, width, head_dim, device, dtype)
    quarter = head_dim // 4
    cos = torch.cat([cos_r.T[:, :, None].expand(quarter, height, width),
                     cos_c.T[:, None, :].expand(quarter, height, width)])
    sin = torch.cat([sin_r.T[:, :, None].expand(quarter, height, width),
                     sin_c.T[:, None, :].expand(quarter, height, width)])
    return cos.reshape(head_dim // 2, -1), sin.reshape(head_dim // 2, -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               inverse: bool = False) -> torch.Tensor:
    """Rotate ``x`` of shape (..., d, L) channel-first by per-pair phases (d/2, L).

    The result has the dtype of ``x``; the rotation itself runs in fp32 when ``x`` is a
    half type. ``inverse`` rotates by the negated phase.
    """
    compute = x.to(torch.promote_types(x.dtype, torch.float32))
    cos = cos.to(compute.dtype)
    sin = -sin.to(compute.dtype) if inverse else sin.to(compute.dtype)
    even, odd = compute[..., 0::2, :], compute[..., 1::2, :]
    rot_even = even * cos - odd * sin
    rot_odd = odd * cos + even * sin
    out = torch.stack((rot_even, rot_odd), dim=-2).flatten(-3, -2)
    return out.to(x.dtype)
