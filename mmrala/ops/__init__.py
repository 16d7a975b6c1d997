"""The RALA attention op. Imports only torch (and triton, when it is installed)."""
from __future__ import annotations

import torch

from .rala_reference import rala_attention_reference
from .rope import apply_rope, rope_angle, rope_frequencies, rope_pair_phases, rope_tables

RALA_IMPLS = ('auto', 'torch', 'triton')

__all__ = ['RALA_IMPLS', 'apply_rope', 'rala_attention', 'rala_attention_reference',
           'rope_angle', 'rope_frequencies', 'rope_pair_phases', 'rope_tables']


def _fused_rala_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    # Imported on first use: triton is optional, and slow to import.
    try:
        from . import rala_triton
    except ImportError as err:
        raise RuntimeError(
            "rala_attention(impl='triton') needs the triton package, which failed to import "
            f"({err}); install triton or use impl='torch'.") from err
    return rala_triton.rala_attention_triton(qkv, num_heads)


def _triton_usable(qkv: torch.Tensor) -> bool:
    if not qkv.is_cuda:
        return False
    try:
        from . import rala_triton  # noqa: F401
    except ImportError:
        return False
    return True


def rala_attention(qkv: torch.Tensor, num_heads: int, impl: str = 'auto') -> torch.Tensor:
    """RALA core of RAVLT: ``(B, 3C, H, W) -> (B, C, H, W)``, before ``+ lepe`` and ``* o``.

    Args:
        qkv: the first 3C channels of the qkvo 1x1 conv output, laid out [q | k | v] with
            channel ``head * d + j`` inside each part (the authors' layout). A channel
            slice of the (B, 4C, H, W) conv output can be passed as it is.
        num_heads: number of heads n; d = C / n must be divisible by 4 (2-D RoPE).
        impl: ``'torch'`` for the reference, ``'triton'`` for the fused kernel, ``'auto'``
            for triton on CUDA tensors and the reference otherwise.
    """
    if impl not in RALA_IMPLS:
        raise ValueError(f'unknown RALA impl {impl!r}; choose one of {RALA_IMPLS}.')
    if impl == 'auto':
        impl = 'triton' if _triton_usable(qkv) else 'torch'
    if impl == 'torch':
        return rala_attention_reference(qkv, num_heads)
    return _fused_rala_attention(qkv, num_heads)
