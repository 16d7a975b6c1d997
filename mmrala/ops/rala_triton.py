"""Fused Triton kernels for the RALA core (spec RALA_KERNEL.md), forward and backward.

Per (image, head), with phi = elu + 1 and c = d ** -0.5, the convex form is

    Q = phi(Q0), K = phi(K0), qm = mean_i Q_i
    a = softmax_j(c * K_j . qm)
    S = sum_j a_j rope(K_j)^T V_j,  km = sum_j a_j K_j
    O_i = rope(Q_i) S / (Q_i . km + 1e-6)

Every pass streams tokens in their channel-first layout straight out of the qkvo conv
output, one (image, head, chunk of tokens) per program:

    forward   F1  Q0        -> per-chunk sums of Q               (qm)
              F2  K0, V     -> per-chunk online-softmax partials (S, km, max, sum)
              combine       -> S, km, lse in a fixed chunk order
              F3  Q0        -> O
    backward  B1  Q0, G     -> per-chunk partials of dS, dkm
              combine       -> dS, dkm
              B2  K0, V     -> dK0, dV, per-chunk partials of dqm
              B3  Q0, G     -> dQ0

Layout. A head's d channels are read as two strided (d/2 x BLOCK_L) tiles, the even and
the odd channels, so RoPE is a pair of elementwise rotations and never a shuffle. The
(d x d) state S is kept as its even-row and odd-row blocks; saved vectors (qm, km) are
stored de-interleaved, [even channels | odd channels].

Numerics. Elementwise maths and every accumulator are fp32. ``tl.dot`` takes operands
in the input dtype for bf16 / fp16 inputs, and 3xTF32 (or TF32 when torch's fp32 matmul
precision allows it) for fp32 inputs; see _dot_config. The small state matrices enter
a dot scaled by an exact power of two, so that fp16 operands cannot overflow however
large dS grows under a loss scaler.

Determinism. The chunking is a function of L alone, every chunk writes its own
partial and the partials are combined in a fixed order: no float atomics anywhere, so
repeated runs are bitwise identical. Nothing is specialised on L, H or W (they are
``do_not_specialize``); the autotune key is the head dim and a power-of-two bucket of L.

Under ``TRITON_INTERPRET=1`` (read by ``triton.jit`` when this module is imported),
the kernels run on the CPU for testing: a single autotune config, and dot operands
rounded to the input dtype but multiplied in fp32, because the interpreter computes
bf16 dots and arithmetic on raw bits.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

from .rope import rope_tables

__all__ = ['KERNELS_INTERPRETED', 'RALAAttentionFunction', 'chunk_tokens_for',
           'rala_attention_triton']

# Added to the denominator Q_i . km, as in the authors' layer.
RALA_EPS = tl.constexpr(1e-6)

# Fixed when the decorators below run (triton.jit reads TRITON_INTERPRET then), and for
# triton's own tl.* functions when triton is imported: see _check_device.
KERNELS_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MIN_HEAD_DIM, MAX_HEAD_DIM = 32, 128

# Chunking of the token axis: about TARGET_CHUNKS programs per (image, head), so that a
# single high-resolution image still fills a GPU, each program streaming at least
# MIN_CHUNK_TOKENS tokens so that the (d x d) partials stay small next to the tokens
# read. A power of two and a function of L only: same L, same chunks, same rounding.
TARGET_CHUNKS = 128
MIN_CHUNK_TOKENS = 256
MAX_CHUNK_TOKENS = 8192

# The combine kernels read this many chunk partials per load, which keeps loads in
# flight instead of one dependent load per chunk.
COMBINE_CHUNK_BLOCK = 16
COMBINE_BLOCK_FLAT = 256

# Arguments that change with the image size. Left unspecialised, a new H x W never
# triggers a recompile (detection sees a new one almost every image).
_SHAPE_ARGS = ['num_tokens', 'height', 'width', 'chunk_tokens', 'num_chunks', 'l_bucket',
               'stride_qkv_b', 'stride_out_b', 'stride_grad_b']


def _token_pass_configs():
    if KERNELS_INTERPRETED:
        # The interpreter cannot benchmark (no driver); one config skips autotuning.
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=warps, num_stages=stages)
            for warps in (4, 8) for stages in (1, 2)]


def _token_pass(fn):
    """Autotune only warps and stages: the tile size is fixed per head dim so that the
    order of the in-chunk sums, and so the rounding, does not depend on the winner."""
    jitted = triton.jit(fn, do_not_specialize=[name for name in _SHAPE_ARGS
                                                if name in fn.__code__.co_varnames])
    return triton.autotune(configs=_token_pass_configs(), key=['HEAD_DIM', 'l_bucket'])(jitted)


# ---------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------

@triton.jit
def _phi(x):
    """elu(x) + 1, the positive feature map; exp only sees x <= 0 so it cannot overflow."""
    return tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))


@triton.jit
def _phi_grad(x):
    return tl.where(x > 0, 1.0, tl.exp(tl.minimum(x, 0.0)))


@triton.jit
def _load_pair_rows(base, stride_c, pairs, tokens, mask):
    """The even and the odd channels of a head as two (PAIRS_PAD, BLOCK_L) fp32 tiles."""
    offsets = (2 * pairs)[:, None] * stride_c + tokens[None, :]
    even = tl.load(base + offsets, mask=mask, other=0.0).to(tl.float32)
    odd = tl.load(base + offsets + stride_c, mask=mask, other=0.0).to(tl.float32)
    return even, odd


@triton.jit
def _store_pair_rows(base, stride_c, pairs, tokens, mask, even, odd):
    offsets = (2 * pairs)[:, None] * stride_c + tokens[None, :]
    tl.store(base + offsets, even.to(base.dtype.element_ty), mask=mask)
    tl.store(base + offsets + stride_c, odd.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _rope_phases(table, pairs, tokens, mask, height, width, QUARTER: tl.constexpr):
    """cos and sin per (pair, token), gathered from the packed (H + W, 2, d/4) table.

    Pairs below d/4 turn with the token's row, the others with its column.
    """
    row = tokens // width
    col = tokens - row * width
    by_row = pairs < QUARTER
    position = tl.where(by_row[:, None], row[None, :], height + col[None, :])
    frequency = tl.where(by_row, pairs, pairs - QUARTER)
    cos_ptrs = table + position * (2 * QUARTER) + frequency[:, None]
    cos = tl.load(cos_ptrs, mask=mask, other=0.0)
    sin = tl.load(cos_ptrs + QUARTER, mask=mask, other=0.0)
    return cos, sin


@triton.jit
def _power_of_two_scale(x):
    """2 ** floor(log2(max |x|)), exactly, read off the exponent bits (1 for x == 0).

    Dividing a state matrix by it before a half-precision dot and multiplying the
    product back is exact, and keeps fp16 operands in range.
    """
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    exponent_bits = amax.to(tl.int32, bitcast=True) & 0x7F800000
    scale = exponent_bits.to(tl.float32, bitcast=True)
    return tl.where(scale > 0.0, scale, 1.0)


@triton.jit
def _round_to_dtype_of(x, like_ptr):
    """x rounded to nearest-even in like_ptr's half dtype, kept as fp32 (interpreter only).

    The interpreter's own fp32 -> bf16 cast truncates, so bf16 is rounded on the bits.
    """
    if like_ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        return bits.to(tl.float32, bitcast=True)
    else:
        return x.to(like_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _dot_operand(x, like_ptr, DOT_MODE: tl.constexpr):
    """An fp32 tile as a tl.dot operand, per DOT_MODE (see _dot_config)."""
    if DOT_MODE == 1:
        return x.to(like_ptr.dtype.element_ty)
    elif DOT_MODE == 2:
        return _round_to_dtype_of(x, like_ptr)
    else:
        return x


@triton.jit
def _mma(a, b, acc, DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    if DOT_MODE == 1:
        return tl.dot(a, b, acc)
    else:
        return tl.dot(a, b, acc, input_precision=FP32_PRECISION)


@triton.jit
def _load_state_block(base, pairs, dims, HEAD_DIM: tl.constexpr, TRANSPOSED: tl.constexpr):
    """One (d/2 x d) row block of a saved state matrix, or its transpose (d x d/2)."""
    if TRANSPOSED:
        ptrs = base + pairs[None, :] * HEAD_DIM + dims[:, None]
        mask = (pairs[None, :] < HEAD_DIM // 2) & (dims[:, None] < HEAD_DIM)
    else:
        ptrs = base + pairs[:, None] * HEAD_DIM + dims[None, :]
        mask = (pairs[:, None] < HEAD_DIM // 2) & (dims[None, :] < HEAD_DIM)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _load_scaled_state(state_base, pairs, dims, like_ptr, HEAD_DIM: tl.constexpr,
                       DOT_MODE: tl.constexpr):
    """S^T as even and odd column blocks, ready as dot operands, and km.

    S enters the dot divided by a power of two (returned as the scale) so that
    half-precision operands cannot overflow however large S grows.
    """
    half: tl.constexpr = HEAD_DIM // 2
    state_t_even = _load_state_block(state_base, pairs, dims, HEAD_DIM, True)
    state_t_odd = _load_state_block(state_base + half * HEAD_DIM, pairs, dims, HEAD_DIM, True)
    state_scale = tl.maximum(_power_of_two_scale(state_t_even), _power_of_two_scale(state_t_odd))
    state_t_even = _dot_operand(state_t_even / state_scale, like_ptr, DOT_MODE)
    state_t_odd = _dot_operand(state_t_odd / state_scale, like_ptr, DOT_MODE)
    pairs_ok = pairs < half
    km_even = tl.load(state_base + HEAD_DIM * HEAD_DIM + pairs, mask=pairs_ok, other=0.0)
    km_odd = tl.load(state_base + HEAD_DIM * HEAD_DIM + half + pairs, mask=pairs_ok, other=0.0)
    return state_t_even, state_t_odd, state_scale, km_even, km_odd


@triton.jit
def _sum_over_chunks(base, num_chunks, row_len, cols, cols_ok,
                     WIDTH: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """sum_c base[c, cols] over the chunk partials of one (image, head), in fixed order."""
    chunks = tl.arange(0, CHUNK_BLOCK)
    acc = tl.zeros((WIDTH,), dtype=tl.float32)
    for first in range(0, num_chunks, CHUNK_BLOCK):
        rows = first + chunks
        tile = tl.load(base + rows[:, None] * row_len + cols[None, :],
                       mask=(rows[:, None] < num_chunks) & cols_ok[None, :], other=0.0)
        acc += tl.sum(tile, axis=0)
    return acc


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------

@_token_pass
def _rala_fwd_query_sum_kernel(
        qkv, stride_qkv_b, stride_qkv_c, query_sums,
        num_tokens, chunk_tokens, num_chunks, l_bucket,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        BLOCK_L: tl.constexpr):
    """F1: per-chunk sum of phi(Q0), (d,) de-interleaved, into query_sums[bh, chunk]."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    q_base = qkv + image.to(tl.int64) * stride_qkv_b + (head * HEAD_DIM) * stride_qkv_c

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    sum_even = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    sum_odd = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        mask = pairs_ok[:, None] & (tokens < stop)[None, :]
        q0_even, q0_odd = _load_pair_rows(q_base, stride_qkv_c, pairs, tokens, mask)
        # phi(0) = 1: padding has to be zeroed after the feature map, not before.
        sum_even += tl.sum(tl.where(mask, _phi(q0_even), 0.0), axis=1)
        sum_odd += tl.sum(tl.where(mask, _phi(q0_odd), 0.0), axis=1)

    out = query_sums + (bh * num_chunks + chunk) * HEAD_DIM
    tl.store(out + pairs, sum_even, mask=pairs_ok)
    tl.store(out + HEAD_DIM // 2 + pairs, sum_odd, mask=pairs_ok)


@_token_pass
def _rala_fwd_state_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, query_sums, query_mean,
        state_partials, softmax_partials,
        num_tokens, height, width, chunk_tokens, num_chunks, l_bucket, scale,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK_BLOCK: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """F2: per chunk, the online-softmax partials of S and km, and (max, sum e^(s-max)).

    state_partials[bh, chunk] = [S_even (d/2 x d) | S_odd (d/2 x d) | km_even | km_odd],
    unnormalised, relative to the chunk's own running max.
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    image_base = qkv + image.to(tl.int64) * stride_qkv_b
    k_base = image_base + (NUM_HEADS * HEAD_DIM + head * HEAD_DIM) * stride_qkv_c
    v_base = image_base + (2 * NUM_HEADS * HEAD_DIM + head * HEAD_DIM) * stride_qkv_c
    HALF: tl.constexpr = HEAD_DIM // 2

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HALF
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM

    # Every program re-derives qm from the F1 partials in the same order: bitwise the
    # same value everywhere, without another launch.
    sums = query_sums + bh * num_chunks * HEAD_DIM
    qm_even = _sum_over_chunks(sums, num_chunks, HEAD_DIM, pairs, pairs_ok,
                               PAIRS_PAD, CHUNK_BLOCK) / num_tokens
    qm_odd = _sum_over_chunks(sums + HALF, num_chunks, HEAD_DIM, pairs, pairs_ok,
                              PAIRS_PAD, CHUNK_BLOCK) / num_tokens
    if chunk == 0:
        tl.store(query_mean + bh * HEAD_DIM + pairs, qm_even, mask=pairs_ok)
        tl.store(query_mean + bh * HEAD_DIM + HALF + pairs, qm_odd, mask=pairs_ok)

    running_max = float('-inf')
    running_sum = 0.0
    state_even = tl.zeros((PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    state_odd = tl.zeros((PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    km_even = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    km_odd = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    # Every tile holds at least one real token, so the running max is finite after the
    # first tile and exp(running_max - new_max) never sees (-inf) - (-inf).
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        tokens_ok = tokens < stop
        mask = pairs_ok[:, None] & tokens_ok[None, :]
        k0_even, k0_odd = _load_pair_rows(k_base, stride_qkv_c, pairs, tokens, mask)
        k_even = tl.where(mask, _phi(k0_even), 0.0)
        k_odd = tl.where(mask, _phi(k0_odd), 0.0)
        values_t = tl.load(v_base + dims[None, :] * stride_qkv_c + tokens[:, None],
                           mask=tokens_ok[:, None] & dims_ok[None, :], other=0.0)

        # Logits in fp32 from fp32 K and qm: a bf16 logit is the reference's main error.
        logits = scale * (tl.sum(k_even * qm_even[:, None], axis=0)
                          + tl.sum(k_odd * qm_odd[:, None], axis=0))
        logits = tl.where(tokens_ok, logits, float('-inf'))
        new_max = tl.maximum(running_max, tl.max(logits, axis=0))
        rescale = tl.exp(running_max - new_max)
        weights = tl.exp(logits - new_max)
        running_sum = running_sum * rescale + tl.sum(weights, axis=0)
        running_max = new_max

        cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
        rot_even = (k_even * cos - k_odd * sin) * weights[None, :]
        rot_odd = (k_odd * cos + k_even * sin) * weights[None, :]
        values_t = _dot_operand(values_t.to(tl.float32), qkv, DOT_MODE)
        state_even = _mma(_dot_operand(rot_even, qkv, DOT_MODE), values_t,
                          state_even * rescale, DOT_MODE, FP32_PRECISION)
        state_odd = _mma(_dot_operand(rot_odd, qkv, DOT_MODE), values_t,
                         state_odd * rescale, DOT_MODE, FP32_PRECISION)
        km_even = km_even * rescale + tl.sum(k_even * weights[None, :], axis=1)
        km_odd = km_odd * rescale + tl.sum(k_odd * weights[None, :], axis=1)

    flat = HEAD_DIM * HEAD_DIM + HEAD_DIM
    out = state_partials + (bh * num_chunks + chunk).to(tl.int64) * flat
    block_offsets = pairs[:, None] * HEAD_DIM + dims[None, :]
    block_mask = pairs_ok[:, None] & dims_ok[None, :]
    tl.store(out + block_offsets, state_even, mask=block_mask)
    tl.store(out + HALF * HEAD_DIM + block_offsets, state_odd, mask=block_mask)
    tl.store(out + HEAD_DIM * HEAD_DIM + pairs, km_even, mask=pairs_ok)
    tl.store(out + HEAD_DIM * HEAD_DIM + HALF + pairs, km_odd, mask=pairs_ok)
    stats = softmax_partials + (bh * num_chunks + chunk) * 2
    tl.store(stats, running_max)
    tl.store(stats + 1, running_sum)


@triton.jit(do_not_specialize=['num_chunks'])
def _rala_combine_chunks_kernel(
        partials, softmax_partials, combined, log_sum_exp, num_chunks,
        FLAT: tl.constexpr, BLOCK_FLAT: tl.constexpr, CHUNK_BLOCK: tl.constexpr,
        SOFTMAX_WEIGHTS: tl.constexpr):
    """Combine per-chunk partials of flat length FLAT into one vector per (image, head).

    With SOFTMAX_WEIGHTS (forward), chunk c enters with weight e^(m_c - M) and the sum
    is divided by sum_c e^(m_c - M) l_c; log_sum_exp receives M + log(that sum).
    Without (backward), a plain sum. Grid: (B * heads, cdiv(FLAT, BLOCK_FLAT)).
    """
    bh = tl.program_id(0)
    block = tl.program_id(1)
    offsets = block * BLOCK_FLAT + tl.arange(0, BLOCK_FLAT)
    offsets_ok = offsets < FLAT
    chunks = tl.arange(0, CHUNK_BLOCK)
    base = partials + bh.to(tl.int64) * num_chunks * FLAT
    stats = softmax_partials + bh * num_chunks * 2

    global_max = float('-inf')
    if SOFTMAX_WEIGHTS:
        for first in range(0, num_chunks, CHUNK_BLOCK):
            rows = first + chunks
            chunk_max = tl.load(stats + rows * 2, mask=rows < num_chunks, other=float('-inf'))
            global_max = tl.maximum(global_max, tl.max(chunk_max, axis=0))

    acc = tl.zeros((BLOCK_FLAT,), dtype=tl.float32)
    total = tl.zeros((CHUNK_BLOCK,), dtype=tl.float32)
    for first in range(0, num_chunks, CHUNK_BLOCK):
        rows = first + chunks
        rows_ok = rows < num_chunks
        tile = tl.load(base + rows[:, None] * FLAT + offsets[None, :],
                       mask=rows_ok[:, None] & offsets_ok[None, :], other=0.0)
        if SOFTMAX_WEIGHTS:
            chunk_max = tl.load(stats + rows * 2, mask=rows_ok, other=float('-inf'))
            chunk_sum = tl.load(stats + rows * 2 + 1, mask=rows_ok, other=0.0)
            weight = tl.where(rows_ok, tl.exp(chunk_max - global_max), 0.0)
            total += weight * chunk_sum
            tile = tile * weight[:, None]
        acc += tl.sum(tile, axis=0)

    if SOFTMAX_WEIGHTS:
        normaliser = tl.sum(total, axis=0)
        acc = acc / normaliser
        if block == 0:
            tl.store(log_sum_exp + bh, global_max + tl.log(normaliser))
    tl.store(combined + bh * FLAT + offsets, acc, mask=offsets_ok)


@_token_pass
def _rala_fwd_output_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, out, stride_out_b, stride_out_c,
        num_tokens, height, width, chunk_tokens, num_chunks, l_bucket,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """F3: O_i = rope(Q_i) S / (Q_i . km + eps), written channel-first."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    q_base = qkv + image.to(tl.int64) * stride_qkv_b + (head * HEAD_DIM) * stride_qkv_c
    o_base = out + image.to(tl.int64) * stride_out_b + (head * HEAD_DIM) * stride_out_c
    HALF: tl.constexpr = HEAD_DIM // 2

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HALF
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM

    # The state is loaded once per program and reused over the chunk's tiles.
    state_t_even, state_t_odd, state_scale, km_even, km_odd = _load_scaled_state(
        state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM), pairs, dims, qkv, HEAD_DIM, DOT_MODE)

    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        tokens_ok = tokens < stop
        mask = pairs_ok[:, None] & tokens_ok[None, :]
        q0_even, q0_odd = _load_pair_rows(q_base, stride_qkv_c, pairs, tokens, mask)
        q_even = tl.where(mask, _phi(q0_even), 0.0)
        q_odd = tl.where(mask, _phi(q0_odd), 0.0)
        denominator = (tl.sum(q_even * km_even[:, None], axis=0)
                       + tl.sum(q_odd * km_odd[:, None], axis=0) + RALA_EPS)
        cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
        rot_even = _dot_operand(q_even * cos - q_odd * sin, qkv, DOT_MODE)
        rot_odd = _dot_operand(q_odd * cos + q_even * sin, qkv, DOT_MODE)
        numerator = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
        numerator = _mma(state_t_even, rot_even, numerator, DOT_MODE, FP32_PRECISION)
        numerator = _mma(state_t_odd, rot_odd, numerator, DOT_MODE, FP32_PRECISION)
        result = numerator * (state_scale / denominator)[None, :]
        tl.store(o_base + dims[:, None] * stride_out_c + tokens[None, :],
                 result.to(out.dtype.element_ty), mask=dims_ok[:, None] & tokens_ok[None, :])


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------

@_token_pass
def _rala_bwd_state_grad_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, grad_out, stride_out_b,
        stride_out_c, grad_state_partials,
        num_tokens, height, width, chunk_tokens, num_chunks, l_bucket,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """B1: per-chunk partials of dS = sum_i z_i rope(Q_i)^T G_i and dkm = sum_i dn_i Q_i.

    z_i = 1 / n_i and dn_i = -z_i (G_i . O_i), with O_i recomputed from the saved S.
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    q_base = qkv + image.to(tl.int64) * stride_qkv_b + (head * HEAD_DIM) * stride_qkv_c
    g_base = grad_out + image.to(tl.int64) * stride_out_b + (head * HEAD_DIM) * stride_out_c
    HALF: tl.constexpr = HEAD_DIM // 2

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HALF
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM

    state_t_even, state_t_odd, state_scale, km_even, km_odd = _load_scaled_state(
        state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM), pairs, dims, qkv, HEAD_DIM, DOT_MODE)

    grad_state_even = tl.zeros((PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    grad_state_odd = tl.zeros((PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    grad_km_even = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    grad_km_odd = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        tokens_ok = tokens < stop
        mask = pairs_ok[:, None] & tokens_ok[None, :]
        q0_even, q0_odd = _load_pair_rows(q_base, stride_qkv_c, pairs, tokens, mask)
        q_even = tl.where(mask, _phi(q0_even), 0.0)
        q_odd = tl.where(mask, _phi(q0_odd), 0.0)
        inv_denominator = 1.0 / (tl.sum(q_even * km_even[:, None], axis=0)
                                 + tl.sum(q_odd * km_odd[:, None], axis=0) + RALA_EPS)
        cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
        rot_even = q_even * cos - q_odd * sin
        rot_odd = q_odd * cos + q_even * sin
        numerator = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
        numerator = _mma(state_t_even, _dot_operand(rot_even, qkv, DOT_MODE), numerator,
                         DOT_MODE, FP32_PRECISION)
        numerator = _mma(state_t_odd, _dot_operand(rot_odd, qkv, DOT_MODE), numerator,
                         DOT_MODE, FP32_PRECISION)
        grad = tl.load(g_base + dims[:, None] * stride_out_c + tokens[None, :],
                       mask=dims_ok[:, None] & tokens_ok[None, :], other=0.0).to(tl.float32)
        # dn = -z (G . O) = -z^2 (G . U), U = rope(Q) S = numerator * state_scale
        grad_denominator = -(inv_denominator * inv_denominator * state_scale
                             * tl.sum(grad * numerator, axis=0))
        grad_t = tl.trans(_dot_operand(grad, qkv, DOT_MODE))
        grad_state_even = _mma(_dot_operand(rot_even * inv_denominator[None, :], qkv, DOT_MODE),
                               grad_t, grad_state_even, DOT_MODE, FP32_PRECISION)
        grad_state_odd = _mma(_dot_operand(rot_odd * inv_denominator[None, :], qkv, DOT_MODE),
                              grad_t, grad_state_odd, DOT_MODE, FP32_PRECISION)
        grad_km_even += tl.sum(q_even * grad_denominator[None, :], axis=1)
        grad_km_odd += tl.sum(q_odd * grad_denominator[None, :], axis=1)

    flat = HEAD_DIM * HEAD_DIM + HEAD_DIM
    out = grad_state_partials + (bh * num_chunks + chunk).to(tl.int64) * flat
    block_offsets = pairs[:, None] * HEAD_DIM + dims[None, :]
    block_mask = pairs_ok[:, None] & dims_ok[None, :]
    tl.store(out + block_offsets, grad_state_even, mask=block_mask)
    tl.store(out + HALF * HEAD_DIM + block_offsets, grad_state_odd, mask=block_mask)
    tl.store(out + HEAD_DIM * HEAD_DIM + pairs, grad_km_even, mask=pairs_ok)
    tl.store(out + HEAD_DIM * HEAD_DIM + HALF + pairs, grad_km_odd, mask=pairs_ok)


@_token_pass
def _rala_bwd_key_value_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, query_mean, log_sum_exp, state,
        grad_state, grad_qkv, stride_grad_b, stride_grad_c, grad_query_mean_partials,
        num_tokens, height, width, chunk_tokens, num_chunks, l_bucket, scale,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """B2: dK0 and dV per key, and per-chunk partials of dqm.

    With a_j = exp(s_j - lse), W_j = dS V_j (in rotated key space) and
    delta = <S, dS> + km . dkm:
        ds_j = a_j (rope(K_j) . W_j + K_j . dkm - delta)
        dK_j = a_j rope^-1(W_j) + a_j dkm + c ds_j qm,   dV_j = a_j dS^T rope(K_j)
        dqm  = c sum_j ds_j K_j
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    CHANNELS: tl.constexpr = NUM_HEADS * HEAD_DIM
    HALF: tl.constexpr = HEAD_DIM // 2
    image_base = qkv + image.to(tl.int64) * stride_qkv_b
    k_base = image_base + (CHANNELS + head * HEAD_DIM) * stride_qkv_c
    v_base = image_base + (2 * CHANNELS + head * HEAD_DIM) * stride_qkv_c
    grad_image = grad_qkv + image.to(tl.int64) * stride_grad_b
    dk_base = grad_image + (CHANNELS + head * HEAD_DIM) * stride_grad_c
    dv_base = grad_image + (2 * CHANNELS + head * HEAD_DIM) * stride_grad_c

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HALF
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM

    flat = HEAD_DIM * HEAD_DIM + HEAD_DIM
    state_base = state + bh * flat
    grad_state_base = grad_state + bh * flat
    grad_even = _load_state_block(grad_state_base, pairs, dims, HEAD_DIM, False)
    grad_odd = _load_state_block(grad_state_base + HALF * HEAD_DIM, pairs, dims, HEAD_DIM, False)
    grad_km_even = tl.load(grad_state_base + HEAD_DIM * HEAD_DIM + pairs, mask=pairs_ok, other=0.0)
    grad_km_odd = tl.load(grad_state_base + HEAD_DIM * HEAD_DIM + HALF + pairs,
                          mask=pairs_ok, other=0.0)
    km_even = tl.load(state_base + HEAD_DIM * HEAD_DIM + pairs, mask=pairs_ok, other=0.0)
    km_odd = tl.load(state_base + HEAD_DIM * HEAD_DIM + HALF + pairs, mask=pairs_ok, other=0.0)
    # delta = sum_j a_j da_j is known before any key is read.
    delta = (tl.sum(tl.sum(_load_state_block(state_base, pairs, dims, HEAD_DIM, False)
                           * grad_even, axis=1), axis=0)
             + tl.sum(tl.sum(_load_state_block(state_base + HALF * HEAD_DIM, pairs, dims,
                                               HEAD_DIM, False) * grad_odd, axis=1), axis=0)
             + tl.sum(km_even * grad_km_even, axis=0) + tl.sum(km_odd * grad_km_odd, axis=0))

    grad_scale = tl.maximum(_power_of_two_scale(grad_even), _power_of_two_scale(grad_odd))
    grad_even = _dot_operand(grad_even / grad_scale, qkv, DOT_MODE)
    grad_odd = _dot_operand(grad_odd / grad_scale, qkv, DOT_MODE)
    grad_t_even = _dot_operand(
        _load_state_block(grad_state_base, pairs, dims, HEAD_DIM, True) / grad_scale,
        qkv, DOT_MODE)
    grad_t_odd = _dot_operand(
        _load_state_block(grad_state_base + HALF * HEAD_DIM, pairs, dims, HEAD_DIM, True)
        / grad_scale, qkv, DOT_MODE)
    qm_even = tl.load(query_mean + bh * HEAD_DIM + pairs, mask=pairs_ok, other=0.0)
    qm_odd = tl.load(query_mean + bh * HEAD_DIM + HALF + pairs, mask=pairs_ok, other=0.0)
    lse = tl.load(log_sum_exp + bh)

    grad_qm_even = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    grad_qm_odd = tl.zeros((PAIRS_PAD,), dtype=tl.float32)
    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        tokens_ok = tokens < stop
        mask = pairs_ok[:, None] & tokens_ok[None, :]
        k0_even, k0_odd = _load_pair_rows(k_base, stride_qkv_c, pairs, tokens, mask)
        k_even = tl.where(mask, _phi(k0_even), 0.0)
        k_odd = tl.where(mask, _phi(k0_odd), 0.0)
        values = tl.load(v_base + dims[:, None] * stride_qkv_c + tokens[None, :],
                         mask=dims_ok[:, None] & tokens_ok[None, :], other=0.0)
        values = _dot_operand(values.to(tl.float32), qkv, DOT_MODE)

        logits = scale * (tl.sum(k_even * qm_even[:, None], axis=0)
                          + tl.sum(k_odd * qm_odd[:, None], axis=0))
        attn = tl.where(tokens_ok, tl.exp(logits - lse), 0.0)

        cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
        rot_even = k_even * cos - k_odd * sin
        rot_odd = k_odd * cos + k_even * sin
        zero = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
        w_even = _mma(grad_even, values, zero, DOT_MODE, FP32_PRECISION) * grad_scale
        w_odd = _mma(grad_odd, values, zero, DOT_MODE, FP32_PRECISION) * grad_scale

        grad_attn = (tl.sum(rot_even * w_even + rot_odd * w_odd, axis=0)
                     + tl.sum(k_even * grad_km_even[:, None] + k_odd * grad_km_odd[:, None],
                              axis=0))
        grad_logits = attn * (grad_attn - delta)
        grad_k_even = (attn[None, :] * (w_even * cos + w_odd * sin + grad_km_even[:, None])
                       + scale * grad_logits[None, :] * qm_even[:, None])
        grad_k_odd = (attn[None, :] * (w_odd * cos - w_even * sin + grad_km_odd[:, None])
                      + scale * grad_logits[None, :] * qm_odd[:, None])
        _store_pair_rows(dk_base, stride_grad_c, pairs, tokens, mask,
                         grad_k_even * _phi_grad(k0_even), grad_k_odd * _phi_grad(k0_odd))

        grad_values = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
        grad_values = _mma(grad_t_even, _dot_operand(rot_even * attn[None, :], qkv, DOT_MODE),
                           grad_values, DOT_MODE, FP32_PRECISION)
        grad_values = _mma(grad_t_odd, _dot_operand(rot_odd * attn[None, :], qkv, DOT_MODE),
                           grad_values, DOT_MODE, FP32_PRECISION)
        tl.store(dv_base + dims[:, None] * stride_grad_c + tokens[None, :],
                 (grad_values * grad_scale).to(grad_qkv.dtype.element_ty),
                 mask=dims_ok[:, None] & tokens_ok[None, :])

        grad_qm_even += tl.sum(k_even * grad_logits[None, :], axis=1)
        grad_qm_odd += tl.sum(k_odd * grad_logits[None, :], axis=1)

    out = grad_query_mean_partials + (bh * num_chunks + chunk) * HEAD_DIM
    tl.store(out + pairs, scale * grad_qm_even, mask=pairs_ok)
    tl.store(out + HALF + pairs, scale * grad_qm_odd, mask=pairs_ok)


@_token_pass
def _rala_bwd_query_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, grad_out, stride_out_b,
        stride_out_c, grad_query_mean_partials, grad_qkv, stride_grad_b, stride_grad_c,
        num_tokens, height, width, chunk_tokens, num_chunks, l_bucket,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK_BLOCK: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """B3: dQ_i = rope^-1(z_i S G_i) + dn_i km + dqm / L, then dQ0 = dQ * phi'(Q0)."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    HALF: tl.constexpr = HEAD_DIM // 2
    q_base = qkv + image.to(tl.int64) * stride_qkv_b + (head * HEAD_DIM) * stride_qkv_c
    g_base = grad_out + image.to(tl.int64) * stride_out_b + (head * HEAD_DIM) * stride_out_c
    dq_base = grad_qkv + image.to(tl.int64) * stride_grad_b + (head * HEAD_DIM) * stride_grad_c

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HALF
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM

    partials = grad_query_mean_partials + bh * num_chunks * HEAD_DIM
    grad_qm_even = _sum_over_chunks(partials, num_chunks, HEAD_DIM, pairs, pairs_ok,
                                    PAIRS_PAD, CHUNK_BLOCK) / num_tokens
    grad_qm_odd = _sum_over_chunks(partials + HALF, num_chunks, HEAD_DIM, pairs, pairs_ok,
                                   PAIRS_PAD, CHUNK_BLOCK) / num_tokens

    state_base = state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM)
    state_even = _load_state_block(state_base, pairs, dims, HEAD_DIM, False)
    state_odd = _load_state_block(state_base + HALF * HEAD_DIM, pairs, dims, HEAD_DIM, False)
    state_scale = tl.maximum(_power_of_two_scale(state_even), _power_of_two_scale(state_odd))
    state_even = _dot_operand(state_even / state_scale, qkv, DOT_MODE)
    state_odd = _dot_operand(state_odd / state_scale, qkv, DOT_MODE)
    state_t_even = _dot_operand(
        _load_state_block(state_base, pairs, dims, HEAD_DIM, True) / state_scale, qkv, DOT_MODE)
    state_t_odd = _dot_operand(
        _load_state_block(state_base + HALF * HEAD_DIM, pairs, dims, HEAD_DIM, True)
        / state_scale, qkv, DOT_MODE)
    km_even = tl.load(state_base + HEAD_DIM * HEAD_DIM + pairs, mask=pairs_ok, other=0.0)
    km_odd = tl.load(state_base + HEAD_DIM * HEAD_DIM + HALF + pairs, mask=pairs_ok, other=0.0)

    start = chunk * chunk_tokens
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    for first in range(start, stop, BLOCK_L):
        tokens = first + tl.arange(0, BLOCK_L)
        tokens_ok = tokens < stop
        mask = pairs_ok[:, None] & tokens_ok[None, :]
        q0_even, q0_odd = _load_pair_rows(q_base, stride_qkv_c, pairs, tokens, mask)
        q_even = tl.where(mask, _phi(q0_even), 0.0)
        q_odd = tl.where(mask, _phi(q0_odd), 0.0)
        inv_denominator = 1.0 / (tl.sum(q_even * km_even[:, None], axis=0)
                                 + tl.sum(q_odd * km_odd[:, None], axis=0) + RALA_EPS)
        cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
        rot_even = _dot_operand(q_even * cos - q_odd * sin, qkv, DOT_MODE)
        rot_odd = _dot_operand(q_odd * cos + q_even * sin, qkv, DOT_MODE)
        numerator = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
        numerator = _mma(state_t_even, rot_even, numerator, DOT_MODE, FP32_PRECISION)
        numerator = _mma(state_t_odd, rot_odd, numerator, DOT_MODE, FP32_PRECISION)
        grad = tl.load(g_base + dims[:, None] * stride_out_c + tokens[None, :],
                       mask=dims_ok[:, None] & tokens_ok[None, :], other=0.0)
        grad_dot = _dot_operand(grad.to(tl.float32), qkv, DOT_MODE)
        grad_denominator = -(inv_denominator * inv_denominator * state_scale
                             * tl.sum(grad.to(tl.float32) * numerator, axis=0))

        zero = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
        # z S G in rotated space; the rotation back is rope with the sine negated.
        t_scale = (state_scale * inv_denominator)[None, :]
        t_even = _mma(state_even, grad_dot, zero, DOT_MODE, FP32_PRECISION) * t_scale
        t_odd = _mma(state_odd, grad_dot, zero, DOT_MODE, FP32_PRECISION) * t_scale
        grad_q_even = (t_even * cos + t_odd * sin + grad_denominator[None, :] * km_even[:, None]
                       + grad_qm_even[:, None])
        grad_q_odd = (t_odd * cos - t_even * sin + grad_denominator[None, :] * km_odd[:, None]
                      + grad_qm_odd[:, None])
        _store_pair_rows(dq_base, stride_grad_c, pairs, tokens, mask,
                         grad_q_even * _phi_grad(q0_even), grad_q_odd * _phi_grad(q0_odd))


# ---------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------

def chunk_tokens_for(num_tokens: int) -> int:
    """Tokens per program in every token pass: a power of two, a function of L only."""
    target = triton.next_power_of_2(triton.cdiv(max(num_tokens, 1), TARGET_CHUNKS))
    return min(max(target, MIN_CHUNK_TOKENS), MAX_CHUNK_TOKENS)


def _block_tokens(head_dim: int) -> int:
    # GPU: the largest tile that compiles without register spills at 8 warps for sm_90
    # (checked with ptxas; d = 96 is padded to 128 channels). Interpreter: 64 for both,
    # which keeps several tiles per chunk so the loops and ragged tails run in the CPU
    # tests without making them slower than needed.
    if KERNELS_INTERPRETED:
        return 64
    return 64 if head_dim <= 64 else 32


@functools.lru_cache(maxsize=64)
def _packed_rope_table(height: int, width: int, head_dim: int, device: torch.device):
    """(H + W, 2, d/4) fp32: [row r] -> (cos, sin) of r * theta, then [H + col c] likewise."""
    cos_row, sin_row, cos_col, sin_col = rope_tables(height, width, head_dim, device,
                                                     torch.float32)
    return torch.cat([torch.stack((cos_row, sin_row), dim=1),
                      torch.stack((cos_col, sin_col), dim=1)]).contiguous()


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """x itself when its H x W tokens are one contiguous run per channel (the layout of
    a conv output and of any channel slice of it); a contiguous copy otherwise."""
    _, _, height, width = x.shape
    if x.stride(3) == 1 and (x.stride(2) == width or height == 1):
        return x
    return x.contiguous()


def _dot_config(qkv: torch.Tensor):
    """(DOT_MODE, FP32_PRECISION) of the kernels for ``qkv``.

    DOT_MODE 0: fp32 operands. On tensor cores as 3xTF32 (close to fp32) while torch's
    fp32 matmul precision is 'highest', as TF32 when it allows less; plain fp32 FMA
    only before Ampere (it spills heavily at these tile sizes).
    DOT_MODE 1: operands in the input dtype, fp32 accumulation (bf16 / fp16 on a GPU).
    DOT_MODE 2: the interpreter's stand-in for 1: operands rounded to the input dtype and
    multiplied in fp32, since it computes a bf16 dot on raw bits.
    """
    if qkv.dtype == torch.float32:
        mode = 0
    else:
        mode = 2 if KERNELS_INTERPRETED else 1
    if KERNELS_INTERPRETED or not qkv.is_cuda:
        return mode, 'ieee'
    if torch.cuda.get_device_capability(qkv.device) < (8, 0):
        return mode, 'ieee'
    precise = torch.get_float32_matmul_precision() == 'highest'
    return mode, 'tf32x3' if precise else 'tf32'


def _check_device(qkv: torch.Tensor):
    if KERNELS_INTERPRETED or qkv.is_cuda:
        return
    if os.environ.get('TRITON_INTERPRET', '0') not in ('', '0'):
        raise RuntimeError(
            'rala_attention(impl="triton"): TRITON_INTERPRET was set after triton (or '
            'mmrala.ops.rala_triton) was imported, so the kernels were built for the GPU. '
            'Set TRITON_INTERPRET=1 before anything imports triton.')
    raise RuntimeError(
        f'rala_attention(impl="triton") runs on CUDA tensors, got a {qkv.device} tensor. '
        'Use impl="torch" (or "auto") on the CPU; to run the Triton kernels on the CPU for '
        'testing, set TRITON_INTERPRET=1 before anything imports triton.')


class _Geometry:
    """Sizes and launch constants shared by the forward and the backward passes."""

    def __init__(self, qkv: torch.Tensor, num_heads: int):
        batch, channels3, height, width = qkv.shape
        if channels3 % (3 * num_heads):
            raise ValueError(f'qkv has {channels3} channels, which is not 3 * C with C '
                             f'divisible by num_heads={num_heads}.')
        head_dim = channels3 // (3 * num_heads)
        if head_dim % 4 or not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
            raise ValueError(f'the fused RALA kernel supports head dims {MIN_HEAD_DIM}..'
                             f'{MAX_HEAD_DIM} divisible by 4, got {head_dim}; use impl="torch".')
        if qkv.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f'the fused RALA kernel supports {SUPPORTED_DTYPES}, got {qkv.dtype}.')
        if qkv.stride(1) * channels3 >= 2 ** 31:
            # Offsets inside one image are int32 in the kernels (the image offset is int64).
            raise ValueError(f'one image of qkv spans {qkv.stride(1) * channels3} elements, '
                             'more than the 2**31 the fused RALA kernel indexes; use impl="torch".')
        self.batch, self.height, self.width = batch, height, width
        self.num_heads, self.head_dim = num_heads, head_dim
        self.channels = num_heads * head_dim
        self.num_tokens = height * width
        self.batch_heads = batch * num_heads
        if self.batch_heads > 65535:
            raise ValueError(f'batch * heads = {self.batch_heads} exceeds the 65535 programs of '
                             'a CUDA grid axis; split the batch.')
        self.pairs_pad = max(16, triton.next_power_of_2(head_dim // 2))
        self.dim_pad = max(16, triton.next_power_of_2(head_dim))
        self.block_tokens = _block_tokens(head_dim)
        self.chunk_tokens = chunk_tokens_for(self.num_tokens)
        self.num_chunks = triton.cdiv(self.num_tokens, self.chunk_tokens)
        self.l_bucket = triton.next_power_of_2(self.num_tokens)
        self.flat_state = head_dim * head_dim + head_dim
        self.scale = head_dim ** -0.5
        self.dot_mode, self.fp32_precision = _dot_config(qkv)
        self.grid = (self.num_chunks, self.batch_heads)
        self.combine_grid = (self.batch_heads, triton.cdiv(self.flat_state, COMBINE_BLOCK_FLAT))

    def constants(self, with_dot=True):
        consts = dict(NUM_HEADS=self.num_heads, HEAD_DIM=self.head_dim,
                      PAIRS_PAD=self.pairs_pad, BLOCK_L=self.block_tokens)
        if with_dot:
            consts.update(DIM_PAD=self.dim_pad, DOT_MODE=self.dot_mode,
                          FP32_PRECISION=self.fp32_precision)
        return consts


def _rala_forward(qkv: torch.Tensor, geo: _Geometry):
    """Returns O (B, C, H, W) and the saved (qm, lse, state = [S_even | S_odd | km])."""
    device = qkv.device
    f32 = dict(device=device, dtype=torch.float32)
    rope_table = _packed_rope_table(geo.height, geo.width, geo.head_dim, device)
    bh, nc, d = geo.batch_heads, geo.num_chunks, geo.head_dim
    query_sums = torch.empty(bh, nc, d, **f32)
    query_mean = torch.empty(bh, d, **f32)
    state_partials = torch.empty(bh, nc, geo.flat_state, **f32)
    softmax_partials = torch.empty(bh, nc, 2, **f32)
    state = torch.empty(bh, geo.flat_state, **f32)
    log_sum_exp = torch.empty(bh, **f32)
    out = torch.empty(geo.batch, geo.channels, geo.height, geo.width,
                      device=device, dtype=qkv.dtype)
    sqb, sqc = qkv.stride(0), qkv.stride(1)

    _rala_fwd_query_sum_kernel[geo.grid](
        qkv, sqb, sqc, query_sums,
        geo.num_tokens, geo.chunk_tokens, nc, geo.l_bucket,
        **geo.constants(with_dot=False))
    _rala_fwd_state_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, query_sums, query_mean, state_partials, softmax_partials,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.l_bucket, geo.scale,
        CHUNK_BLOCK=COMBINE_CHUNK_BLOCK, **geo.constants())
    _rala_combine_chunks_kernel[geo.combine_grid](
        state_partials, softmax_partials, state, log_sum_exp, nc,
        FLAT=geo.flat_state, BLOCK_FLAT=COMBINE_BLOCK_FLAT, CHUNK_BLOCK=COMBINE_CHUNK_BLOCK,
        SOFTMAX_WEIGHTS=True, num_warps=4)
    _rala_fwd_output_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, out, out.stride(0), out.stride(1),
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.l_bucket,
        **geo.constants())
    return out, query_mean, log_sum_exp, state


def _rala_backward(qkv, grad_out, query_mean, log_sum_exp, state, geo: _Geometry):
    """One (B, 3C, H, W) gradient buffer: [dQ0 | dK0 | dV]."""
    device = qkv.device
    f32 = dict(device=device, dtype=torch.float32)
    rope_table = _packed_rope_table(geo.height, geo.width, geo.head_dim, device)
    bh, nc, d = geo.batch_heads, geo.num_chunks, geo.head_dim
    grad_state_partials = torch.empty(bh, nc, geo.flat_state, **f32)
    grad_state = torch.empty(bh, geo.flat_state, **f32)
    grad_qm_partials = torch.empty(bh, nc, d, **f32)
    grad_qkv = torch.empty(qkv.shape, device=device, dtype=qkv.dtype)
    sqb, sqc = qkv.stride(0), qkv.stride(1)
    sgb, sgc = grad_out.stride(0), grad_out.stride(1)
    sdb, sdc = grad_qkv.stride(0), grad_qkv.stride(1)

    _rala_bwd_state_grad_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, grad_out, sgb, sgc, grad_state_partials,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.l_bucket,
        **geo.constants())
    # A plain sum: the softmax statistics and lse arguments are not read.
    _rala_combine_chunks_kernel[geo.combine_grid](
        grad_state_partials, grad_state_partials, grad_state, grad_state, nc,
        FLAT=geo.flat_state, BLOCK_FLAT=COMBINE_BLOCK_FLAT, CHUNK_BLOCK=COMBINE_CHUNK_BLOCK,
        SOFTMAX_WEIGHTS=False, num_warps=4)
    _rala_bwd_key_value_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, query_mean, log_sum_exp, state, grad_state,
        grad_qkv, sdb, sdc, grad_qm_partials,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.l_bucket, geo.scale,
        **geo.constants())
    _rala_bwd_query_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, grad_out, sgb, sgc, grad_qm_partials,
        grad_qkv, sdb, sdc,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.l_bucket,
        CHUNK_BLOCK=COMBINE_CHUNK_BLOCK, **geo.constants())
    return grad_qkv


def _launch_device(tensor: torch.Tensor):
    # Triton launches on the current CUDA device, which need not be the tensor's.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


class RALAAttentionFunction(torch.autograd.Function):
    """qkv (B, 3C, H, W) -> O (B, C, H, W). Saves qkv itself plus qm, lse and
    [S | km] per (image, head); returns a single gradient buffer for qkv."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, num_heads: int):
        qkv = _token_major(qkv)
        geo = _Geometry(qkv, num_heads)
        with _launch_device(qkv):
            out, query_mean, log_sum_exp, state = _rala_forward(qkv, geo)
        ctx.save_for_backward(qkv, query_mean, log_sum_exp, state)
        ctx.geometry = geo
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qkv, query_mean, log_sum_exp, state = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        with _launch_device(qkv):
            grad_qkv = _rala_backward(qkv, _token_major(grad_out), query_mean, log_sum_exp,
                                      state, ctx.geometry)
        return grad_qkv, None


@torch.compiler.disable
def rala_attention_triton(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The fused RALA core, ``(B, 3C, H, W) -> (B, C, H, W)``; see ``rala_attention``.

    Kept out of torch.compile graphs: the op is already one fused unit, and tracing
    would only capture its launches.
    """
    if qkv.dim() != 4:
        raise ValueError(f'rala_attention expects qkv of shape (B, 3C, H, W), got '
                         f'{tuple(qkv.shape)}')
    _check_device(qkv)
    if qkv.numel() == 0:
        batch, channels3, height, width = qkv.shape
        # Nothing to launch; the product keeps the result attached to qkv's graph.
        return qkv.new_zeros(batch, channels3 // 3, height, width) + 0 * qkv.sum()
    return RALAAttentionFunction.apply(qkv, num_heads)
