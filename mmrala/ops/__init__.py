"""The RALA attention ops: the core and the gated layer. Imports only torch (and triton)."""
from __future__ import annotations

import torch

from .rala_layer import (
    AUTO_MAX_HEAD_DIM,
    RALA_IMPLS,
    _triton_usable,  # noqa: F401  (what 'auto' asks; tests probe it)
    load_kernels,
    rala_gated_attention,
    select_impl,
)
from .rala_reference import authors_rope_phase, rala_attention_authors, rala_attention_reference
from .rope import apply_rope, rope_angle, rope_frequencies, rope_pair_phases, rope_tables

__all__ = ['AUTO_MAX_HEAD_DIM', 'RALA_IMPLS', 'apply_rope', 'authors_rope_phase',
           'rala_attention', 'rala_attention_authors', 'rala_attention_reference',
           'rala_gated_attention', 'rope_angle', 'rope_frequencies', 'rope_pair_phases',
           'rope_tables']


def rala_attention(qkv: torch.Tensor, num_heads: int, impl: str = 'auto') -> torch.Tensor:
    """RALA core of RAVLT: ``(B, 3C, H, W) -> (B, C, H, W)``, before ``+ lepe`` and ``* o``.

    Args:
        qkv: the first 3C channels of the qkvo 1x1 conv output, laid out [q | k | v] with
            channel ``head * d + j`` inside each part (the authors' layout). A channel
            slice of the (B, 4C, H, W) conv output can be passed as it is.
        num_heads: number of heads n; d = C / n must be divisible by 4 (2-D RoPE).
        impl: ``'torch'`` for the reference, ``'triton'`` for the fused kernel, ``'auto'``
            for triton on CUDA tensors with d <= 64 (``AUTO_MAX_HEAD_DIM``) and the
            reference otherwise.
    """
    if select_impl(impl, qkv, qkv.shape[1] // (3 * num_heads)) == 'torch':
        return rala_attention_reference(qkv, num_heads)
    return load_kernels('rala_attention').rala_attention_triton(qkv, num_heads)
