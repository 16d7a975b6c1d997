"""The gated RALA attention of a RAVLT block, as one autograd node (docs/rala_kernel.md).

With [q | k | v | o] the (B, 4C, H, W) output of the block's qkvo 1x1 conv and lepe a
depthwise conv of v,

    y = (rala(q, k, v) + lepe(v)) * o

Written as separate ops, autograd hands each channel slice of the conv output (q, k and
v for the core, v again for lepe, o for the gate) a zero-filled gradient the size of the
whole conv output, then sums them; and it keeps every intermediate of the core for the
backward. The fused node writes dq, dk, dv, the lepe input gradient and do into a single
(B, 4C, H, W) buffer, and keeps only qkvo, the gate's other factor ``rala + lepe``, the
lepe weight and the core's per-(image, head) statistics.

This module also holds the choice between the PyTorch reference and the Triton kernels,
shared with :func:`mmrala.ops.rala_attention`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .rala_reference import rala_attention_reference

__all__ = ['RALA_IMPLS', 'rala_gated_attention']

RALA_IMPLS = ('auto', 'torch', 'triton')


def _triton_usable(tensor: torch.Tensor) -> bool:
    if not tensor.is_cuda:
        return False
    try:
        from . import rala_triton  # noqa: F401
    except ImportError:
        return False
    return True


# The largest head dim 'auto' runs on the fused kernels. On an H100 (Triton 3.6,
# 2026-11-23) the GPU tests passed at d = 64 and stopped at d = 96 with an illegal
# shared-memory access in the backward (B1, fp32); until those tests pass, RAVLT-B / L's
# d = 96 stages take the reference, and impl='triton' is the way to try the kernels.
AUTO_MAX_HEAD_DIM = 64


def select_impl(impl: str, tensor: torch.Tensor, head_dim: int) -> str:
    """``'torch'`` or ``'triton'`` for ``impl``; ``'auto'`` is triton on CUDA tensors when
    triton imports and ``head_dim <= AUTO_MAX_HEAD_DIM``, the reference otherwise."""
    if impl not in RALA_IMPLS:
        raise ValueError(f'unknown RALA impl {impl!r}; choose one of {RALA_IMPLS}.')
    if impl == 'auto':
        usable = head_dim <= AUTO_MAX_HEAD_DIM and _triton_usable(tensor)
        return 'triton' if usable else 'torch'
    return impl


def load_kernels(op_name: str):
    """mmrala.ops.rala_triton, imported on first use: triton is optional, and slow to import."""
    try:
        from . import rala_triton
    except ImportError as err:
        raise RuntimeError(
            f"{op_name}(impl='triton') needs the triton package, which failed to import "
            f"({err}); install triton or use impl='torch'.") from err
    return rala_triton


def _check_layer_inputs(qkvo, lepe_weight, num_heads):
    if qkvo.dim() != 4 or qkvo.shape[1] % 4:
        raise ValueError(f'rala_gated_attention expects the qkvo conv output (B, 4C, H, W), '
                         f'got {tuple(qkvo.shape)}.')
    channels = qkvo.shape[1] // 4
    size = lepe_weight.shape[-1]
    if tuple(lepe_weight.shape) != (channels, 1, size, size) or size % 2 == 0:
        raise ValueError(f'lepe_weight must be a depthwise ({channels}, 1, k, k) kernel with '
                         f'odd k for {channels} channels, got {tuple(lepe_weight.shape)}.')
    if channels % num_heads:
        raise ValueError(f'{channels} channels do not split into num_heads={num_heads} heads.')
    return channels, size // 2


def _lepe(value, lepe_weight, lepe_bias, padding):
    # Weights in the activations' dtype, as autocast would give them: the layer then also
    # runs in bf16 / fp16 without autocast (as the tests run it on the CPU).
    bias = None if lepe_bias is None else lepe_bias.to(value.dtype)
    return F.conv2d(value, lepe_weight.to(value.dtype), bias, padding=padding,
                    groups=value.shape[1])


def _reference_layer(qkvo, lepe_weight, lepe_bias, num_heads, padding):
    channels = qkvo.shape[1] // 4
    qkv, gate = qkvo[:, :3 * channels], qkvo[:, 3 * channels:]
    lepe = _lepe(qkv[:, 2 * channels:], lepe_weight, lepe_bias, padding)
    return (rala_attention_reference(qkv, num_heads) + lepe) * gate


class RALAGatedAttentionFunction(torch.autograd.Function):
    """qkvo (B, 4C, H, W) -> (rala(q, k, v) + lepe(v)) * o, (B, C, H, W), on the fused core.

    Saves qkvo, ``rala + lepe`` (B, C, H, W), the lepe weight, and qm, lse and [S | km] per
    (image, head). lepe(v) is never kept: the backward needs only its gradient.
    """

    @staticmethod
    def forward(ctx, qkvo, lepe_weight, lepe_bias, num_heads, padding):
        kernels = load_kernels('rala_gated_attention')
        qkvo = kernels._token_major(qkvo)
        channels = qkvo.shape[1] // 4
        qkv, gate = qkvo[:, :3 * channels], qkvo[:, 3 * channels:]
        geo = kernels.geometry_of(qkv, num_heads)
        with kernels._launch_device(qkvo):
            core, query_mean, log_sum_exp, state = kernels._rala_forward(qkv, geo)
        gated = core.add_(_lepe(qkv[:, 2 * channels:], lepe_weight, lepe_bias, padding))
        ctx.save_for_backward(qkvo, lepe_weight, gated, query_mean, log_sum_exp, state)
        ctx.geometry, ctx.padding = geo, padding
        ctx.bias_dtype = None if lepe_bias is None else lepe_bias.dtype
        return gated * gate

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qkvo, lepe_weight, gated, query_mean, log_sum_exp, state = ctx.saved_tensors
        needs_qkvo, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        kernels = load_kernels('rala_gated_attention')
        channels = qkvo.shape[1] // 4
        qkv, value, gate = (qkvo[:, :3 * channels], qkvo[:, 2 * channels:3 * channels],
                            qkvo[:, 3 * channels:])
        grad_out = kernels._token_major(grad_out.to(qkvo.dtype))
        grad_gated = grad_out * gate        # the gradient of both rala(q, k, v) and lepe(v)

        grad_qkvo = None
        if needs_qkvo:
            # The layer's one full-size buffer: every slice below is written in place.
            grad_qkvo = torch.empty(qkvo.shape, dtype=qkvo.dtype, device=qkvo.device)
            torch.mul(grad_out, gated, out=grad_qkvo[:, 3 * channels:])
            with kernels._launch_device(qkvo):
                kernels._rala_backward(qkv, grad_gated, query_mean, log_sum_exp, state,
                                       ctx.geometry, grad_qkv=grad_qkvo[:, :3 * channels])
        grad_weight = grad_bias = None
        if needs_qkvo or needs_weight or needs_bias:
            # lepe's input, weight and bias gradients from one convolution backward.
            grad_value, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_gated, value, lepe_weight.to(qkvo.dtype), [channels], [1, 1],
                [ctx.padding] * 2, [1, 1], False, [0, 0], channels,
                [needs_qkvo, needs_weight, needs_bias])
            if needs_qkvo:
                grad_qkvo[:, 2 * channels:3 * channels] += grad_value
        if grad_weight is not None:
            grad_weight = grad_weight.to(lepe_weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return grad_qkvo, grad_weight, grad_bias, None, None


def _fused_layer(qkvo, lepe_weight, lepe_bias, num_heads, padding):
    load_kernels('rala_gated_attention')._check_device(qkvo)
    if qkvo.numel() == 0:
        return _reference_layer(qkvo, lepe_weight, lepe_bias, num_heads, padding)
    return RALAGatedAttentionFunction.apply(qkvo, lepe_weight, lepe_bias, num_heads, padding)


@functools.cache
def _fused_layer_outside_compile():
    # Kept out of torch.compile graphs, like rala_attention_triton: the node is already
    # one fused unit. Wrapped on first use, as torch.compiler.disable imports dynamo (and
    # with it triton), seconds that a CPU-only import of mmrala should not pay.
    return torch.compiler.disable(_fused_layer)


def rala_gated_attention(qkvo: torch.Tensor, lepe_weight: torch.Tensor,
                         lepe_bias: torch.Tensor | None, num_heads: int,
                         impl: str = 'auto') -> torch.Tensor:
    """The RALA attention of a RAVLT block up to its output projection.

    Returns ``(rala(q, k, v) + lepe(v)) * o`` of shape (B, C, H, W).

    Args:
        qkvo: the (B, 4C, H, W) output of the qkvo 1x1 conv, laid out [q | k | v | o],
            channel ``head * d + j`` inside each part (the authors' layout).
        lepe_weight, lepe_bias: the depthwise lepe conv, (C, 1, k, k) and (C,) or None;
            cast to qkvo's dtype, as autocast does.
        num_heads: number of heads; d = C / num_heads must be divisible by 4 (2-D RoPE).
        impl: ``'torch'`` composes the reference ops (autograd through each), ``'triton'``
            runs the fused node, ``'auto'`` picks triton on CUDA tensors with d <= 64
            (``AUTO_MAX_HEAD_DIM``) and torch otherwise.
    """
    channels, padding = _check_layer_inputs(qkvo, lepe_weight, num_heads)
    if select_impl(impl, qkvo, channels // num_heads) == 'torch':
        return _reference_layer(qkvo, lepe_weight, lepe_bias, num_heads, padding)
    return _fused_layer_outside_compile()(qkvo, lepe_weight, lepe_bias, num_heads, padding)
