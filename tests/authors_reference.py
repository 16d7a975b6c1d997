"""The authors' formulation of RALA, written out independently of mmrala for the tests:
``k * alpha * L``, the (L, d) RoPE tensors, ``z`` and ``kv`` over ``L`` (spec section 1)."""
import torch
import torch.nn.functional as F


def authors_rope_phase(height, width, head_dim, dtype=torch.float64):
    theta = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, dtype=dtype)
    angle = theta.repeat_interleave(2)                                   # (d/2,)
    rows = torch.arange(height, dtype=dtype)[:, None, None] * angle      # (H, 1, d/2)
    cols = torch.arange(width, dtype=dtype)[None, :, None] * angle       # (1, W, d/2)
    phase = torch.cat([rows.expand(height, width, -1), cols.expand(height, width, -1)], -1)
    return phase.reshape(height * width, head_dim)                       # (L, d)


def authors_rotate(x, phase):
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * phase.cos() + rotated * phase.sin()


def authors_rala(qkv, num_heads):
    """(B, 3C, H, W) -> (B, C, H, W), computed in the dtype of ``qkv``."""
    batch, channels3, height, width = qkv.shape
    channels, length = channels3 // 3, height * width
    head_dim = channels // num_heads
    q, k, v = qkv.reshape(batch, 3, num_heads, head_dim, length).transpose(-1, -2).unbind(1)
    q, k = F.elu(q) + 1, F.elu(k) + 1                                    # (B, n, L, d)
    phase = authors_rope_phase(height, width, head_dim, qkv.dtype)
    q_mean = q.mean(dim=2, keepdim=True)
    alpha = ((q_mean * head_dim ** -0.5) @ k.transpose(-1, -2)).softmax(dim=-1)   # (B, n, 1, L)
    k = k * alpha.transpose(-1, -2) * length
    z = 1 / (q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + 1e-6)
    kv = authors_rotate(k, phase).transpose(-1, -2) @ (v / length)
    out = (authors_rotate(q, phase) @ kv) * z
    return out.transpose(-1, -2).reshape(batch, channels, height, width)
