"""Fused Triton kernels for the RALA core (docs/rala_kernel.md), forward and backward.

Per (image, head), with phi = elu + 1 and c = d ** -0.5, the convex form is

    Q = phi(Q0), K = phi(K0), qm = mean_i Q_i
    a = softmax_j(c * K_j . qm)
    S = sum_j a_j rope(K_j)^T V_j,  km = sum_j a_j K_j
    O_i = rope(Q_i) S / (Q_i . km + 1e-6)

Every pass streams tokens in their channel-first layout straight out of the qkvo conv
output, one (image, head, chunk of tokens) per program:

    forward   F1  Q0        -> per-chunk sums of Q; the last program: qm
              F2  K0, V     -> per-chunk online-softmax partials (S, km, max, sum)
              combine       -> S, km, lse in a fixed chunk order
              F3  Q0        -> O
    backward  B1  Q0, G     -> per-chunk partials of dS, dkm
              combine       -> dS, dkm
              B2  K0, V     -> dK0, dV, per-chunk partials of dqm; the last program: dqm
              B3  Q0, G     -> dQ0

Layout. A head's d channels are read as two strided (d/2 x BLOCK_L) tiles, the even and
the odd channels, so RoPE is a pair of elementwise rotations and never a shuffle. The
(d x d) state S is saved with its even-row block over its odd-row block, and saved vectors
(qm, km) de-interleaved, [even channels | odd channels]. A dot takes the even and odd
tiles stacked in that same order (_stack, _unstack), so that each dot has d rows or a
contraction over d channels: with half as many rows, four warps repeat each other's work.

Memory access. Chunks are whole tiles and every pass runs its whole tiles unmasked
and at most one masked tail tile. The tail runs first: what it alone needs (its mask,
its token offsets) then dies before the loop instead of being held across it, which
cost the loops registers and, near the limit, spills. When every token row starts on a
16-byte boundary
(ALIGN, see _vector_width) the kernels are told so, and half-precision tokens move as
16-byte vectors in the body and the tail alike.

Numerics. Elementwise maths and every accumulator are fp32. ``tl.dot`` takes operands
in the input dtype for bf16 / fp16 inputs, and 3xTF32 (or TF32 when torch's fp32 matmul
precision allows it) for fp32 inputs; see _dot_config. Operands that can leave fp16's
range (the state matrices under a loss scaler, the attention weights ~ 1/L) enter a
dot scaled by an exact power of two.

Determinism. The chunking is a function of L alone, every chunk writes its own
partial and the partials are combined in a fixed order: no float atomics anywhere, so
repeated runs are bitwise identical. Tile size and warps, which set how sums over a
tile are split, are pinned per tiling class and GPU architecture (PASS_TILING,
ARCH_TILING), never autotuned.
Nothing is specialised on L, H or W (they are ``do_not_specialize``) beyond ALIGN.

Under ``TRITON_INTERPRET=1`` (read by ``triton.jit`` when this module is imported),
the kernels run on the CPU for testing: 64-token tiles, and dot operands
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
           'rala_attention_triton', 'tiling_class']

# Added to the denominator Q_i . km, as in the authors' layer.
RALA_EPS = tl.constexpr(1e-6)
LOG2E = tl.constexpr(1.4426950408889634)

# Fixed when the decorators below run (triton.jit reads TRITON_INTERPRET then), and for
# triton's own tl.* functions when triton is imported: see _check_device.
KERNELS_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MIN_HEAD_DIM, MAX_HEAD_DIM = 32, 128

# Chunking of the token axis: at least TARGET_CHUNKS programs per (image, head) once L
# allows, each streaming at least MIN_CHUNK_TOKENS tokens. RAVLT-S's stage 1 (B = 2,
# 1 head, 200 x 336) runs 264 programs and its stage 2 (B = 2, 2 heads, 100 x 168) 528:
# two or more per SM on 108- and 132-SM GPUs. Smaller chunks would add programs but
# also (d x d) partials: at 256 tokens a chunk's partial is a quarter of its tokens.
# A power of two (the largest not above L / TARGET_CHUNKS) and a function of L only:
# same L, same chunks, same rounding.
TARGET_CHUNKS = 128
MIN_CHUNK_TOKENS = 128
MAX_CHUNK_TOKENS = 8192

# Sums over chunk partials (the combine kernels, and the last program of F1 and B2) read
# this many chunks per load: every chunk at once for any L below 2^21 tokens, where the
# chunking keeps L / chunk at or under 2 * TARGET_CHUNKS. On the H100 the combine's time
# grew by about 1.1 us per further round of loads (16 chunks per round then); the sum is
# bound by load latency, not bytes. Each combine program takes BLOCK_FLAT entries of the
# (d * d + d) state: 130 programs per (image, head) at d = 64.
COMBINE_CHUNK_BLOCK = 2 * TARGET_CHUNKS
COMBINE_BLOCK_FLAT = 32
# The last program's tile of partials (chunks x d) holds at most this many: 64 registers
# a thread at four warps. Larger, it spilled F1 at d = 96 and lengthened F1's and B2's
# token loops (sm_90 SASS); this size leaves them as they were.
LAST_PROGRAM_SUM_ELEMENTS = tl.constexpr(8192)

# Arguments that change with the image size. Left unspecialised, a new H x W never
# triggers a recompile (detection sees a new one almost every image); what alignment
# they allow reaches the kernels as the one constexpr ALIGN instead.
_SHAPE_ARGS = ['num_tokens', 'height', 'width', 'chunk_tokens', 'num_chunks',
               'stride_qkv_b', 'stride_out_b', 'stride_grad_b',
               'stride_qkv_c', 'stride_out_c', 'stride_grad_c']

# Launch options of each token pass, (BLOCK_L, num_warps, num_stages), per tiling class:
# the dot precision ('half': bf16 / fp16 operands, 'fp32': 3xTF32) and the padded head
# dim (64: head dims up to 64; 128: above 64). One pinned choice per pass and class, not
# an autotuned one: the tile size and the number of warps set how the sums over tokens
# are split and ordered, so a choice that varied between processes or GPUs would change
# the bits of the result.
#
# 'half' at d <= 64: per pass, the fastest of the launch options timed on an H100
# (per-pass replay, RAVLT-S stage 1, bf16, 2026-11-23; docs/rala_kernel.md section 8)
# among those that compile without register spills for sm_90 and sm_80
# (tools/rala_kernel_report.py, asserted by tests/test_rala_triton.py). The fastest
# option of every pass had four warps. Timed with the kernels of ff12fc9, whose loops
# issued 1.2 to 1.4 times the instructions per token of today's at the same options.
# B3's 32-token tile spilled then; it fits since B3 addresses its tiles by offsets
# (_load_pair_tiles).
# 'fp32' at d <= 64: the options that passed the H100 tests (none spills since the
# passes run their tail tile first).
# 'half' above 64 has not run on a GPU yet: per pass, options that compile without
# spills for sm_90 and sm_80 (F1 moved from 64 tokens / 4 warps to 128 / 8, the same
# tokens per warp, when the first spilled 136 B on sm_80 with unaligned bf16 rows).
# fp32 above 64 has no entry: the 3xTF32 operands of B2 and B3 would need about 280 KB of
# shared memory, more than any GPU has. The op refuses it; the interpreter still runs it
# to test the algebra.
PASS_TILING = {
    ('half', 64): {
        'F1': (128, 4, 2), 'F2': (32, 4, 2), 'F3': (32, 4, 1),
        'B1': (16, 4, 2), 'B2': (16, 4, 2), 'B3': (32, 4, 2),
    },
    ('half', 128): {
        'F1': (128, 8, 2), 'F2': (16, 8, 2), 'F3': (16, 8, 2),
        'B1': (16, 8, 2), 'B2': (8, 8, 2), 'B3': (8, 8, 2),
    },
    ('fp32', 64): {
        'F1': (64, 4, 2), 'F2': (32, 8, 2), 'F3': (32, 8, 2),
        'B1': (16, 8, 2), 'B2': (16, 8, 2), 'B3': (32, 8, 2),
    },
}

# Options that replace PASS_TILING's where every token row of the launch starts on a
# 16-byte boundary (ALIGN > 1: H x W a multiple of 8 in bf16 / fp16, e.g. every input
# padded to 32 pixels). Larger tiles compile spill-free there on sm_90 and sm_80, where
# the unaligned builds, with an offset per row and narrower accesses, spill. Per pass,
# the fastest option of the H100 sweep (docs/rala_kernel.md section 8) that compiles
# spill-free for both with aligned rows: B3 at 64 tokens and 3 stages (70.8 us there
# against 95.1 us for its 32-token option), F3 at 64 tokens and 1 stage (52.5 against
# 54.6 us). Only passes without a sum over tokens may take them (each token's output is
# its own), so no bit of a result depends on the alignment of its inputs.
ALIGNED_ROWS_TILING = {
    ('half', 64): {'F3': (64, 4, 1), 'B3': (64, 4, 3)},
}

# Options that replace PASS_TILING's on one GPU architecture, by compute capability:
# larger tiles that compile spill-free there for both half dtypes and every alignment,
# but spill on another architecture (sm_80: F2's 64-token tile with unaligned rows, B1's
# 32-token tile with either). Still one option per pass and tiling class on a given
# GPU, so its results stay bitwise repeatable; across architectures, as with cuBLAS, the
# sums over tokens run in another order. On the H100 sweep (kernels of ff12fc9) F2 at 64
# tokens and 3 stages took 41.8 us against 55.3 us at 32, and B1 at 32 tokens 77.7 us
# against 90.6 us at 16 (docs/rala_kernel.md section 8).
ARCH_TILING = {
    (9, 0): {('half', 64): {'F2': (64, 4, 3), 'B1': (32, 4, 2)}},
}

# The interpreter runs every pass in 64-token tiles: several tiles per chunk, so the
# loops and ragged tails run in the CPU tests, without making them slower than needed.
INTERPRETER_TILING = (64, 4, 1)


def _token_pass(fn):
    """triton.jit, leaving every size and stride argument unspecialised."""
    return triton.jit(fn, do_not_specialize=[name for name in _SHAPE_ARGS
                                             if name in fn.__code__.co_varnames])


# ---------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------

@triton.jit
def _exp(x):
    """e^x as one ex2 instruction, results below 2^-126 flushed to zero.

    tl.exp also rounds subnormal results, at three more instructions per element; no
    sum here is changed by a term below 2^-126 of its largest.
    """
    return tl.exp2(x * LOG2E)


@triton.jit
def _phi(x):
    """elu(x) + 1, the positive feature map; exp only sees x <= 0 so it cannot overflow."""
    return tl.where(x > 0, x + 1.0, _exp(tl.minimum(x, 0.0)))


@triton.jit
def _phi_grad(phi):
    """phi'(x) from phi(x) itself, min(phi, 1), rather than a second exp of x."""
    return tl.minimum(phi, 1.0)


@triton.jit
def _channel_offset(image, stride_b, channel, stride_c):
    """Element offset of the first token of (image, channel)."""
    return image.to(tl.int64) * stride_b + channel * stride_c


@triton.jit
def _strides(stride_b, stride_c, ALIGN: tl.constexpr):
    """Batch and channel strides in elements from the launch's, given in units of ALIGN.

    Passing them in whole vectors is how the kernels learn that every token row is
    16-byte aligned: products with the constant ALIGN carry that divisibility into
    every address, where a hint on a kernel argument would not reach.
    """
    return stride_b.to(tl.int64) * ALIGN, stride_c * ALIGN


@triton.jit
def _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L: tl.constexpr, ALIGN: tl.constexpr):
    """(start, end of the whole tiles, stop) of a chunk's tokens.

    Chunks are whole tiles, so every tile starts at a multiple of BLOCK_L; the tokens from
    the last whole tile to ``stop`` form at most one masked tail tile, which the passes
    run before their loop over the whole tiles (see the module docstring). When aligned,
    L is a multiple of ALIGN and so is ``stop``: the tail's mask then holds its value over
    every group of ALIGN tokens and its accesses stay as wide as the body's.
    """
    start = tl.multiple_of(chunk * chunk_tokens, BLOCK_L)
    stop = tl.minimum(start + chunk_tokens, num_tokens)
    if ALIGN > 1:
        stop = tl.multiple_of(stop, ALIGN)
    return start, start + (stop - start) // BLOCK_L * BLOCK_L, stop


@triton.jit
def _tile_tokens(first, BLOCK_L: tl.constexpr):
    return tl.max_contiguous(tl.multiple_of(first + tl.arange(0, BLOCK_L), BLOCK_L), BLOCK_L)


@triton.jit
def _tile_masks(rows_ok, tokens, stop, MASKED: tl.constexpr):
    """(tokens_ok, mask of the (row, token) tile). Unmasked tiles only mask padded rows,
    a mask that is constant along the tokens and so keeps the accesses vectorised."""
    if MASKED:
        tokens_ok = tokens < stop
    else:
        tokens_ok = tl.full(tokens.shape, 1, tl.int1)
    return tokens_ok, rows_ok[:, None] & tokens_ok[None, :]


@triton.jit
def _load_pair_rows(base, even_rows, odd_rows, tokens, mask):
    """The even and the odd channels of a head as two (PAIRS_PAD, BLOCK_L) fp32 tiles."""
    even = tl.load(base + even_rows[:, None] + tokens[None, :], mask=mask, other=0.0)
    odd = tl.load(base + odd_rows[:, None] + tokens[None, :], mask=mask, other=0.0)
    return even.to(tl.float32), odd.to(tl.float32)


@triton.jit
def _store_pair_rows(base, even_rows, odd_rows, tokens, mask, even, odd):
    tl.store(base + even_rows[:, None] + tokens[None, :], even.to(base.dtype.element_ty),
             mask=mask)
    tl.store(base + odd_rows[:, None] + tokens[None, :], odd.to(base.dtype.element_ty),
             mask=mask)


@triton.jit
def _load_pair_tiles(tile, pair_offsets, channel_stride, mask):
    """_load_pair_rows for F2, B1 and B3, addressed to spend fewer registers.

    ``tile`` points at the tile's first token in the head's first channel, and
    ``pair_offsets`` (_tile_offsets of the even channels) is loop-invariant. The odd
    channels are one channel stride further, so both tiles share these 32-bit offsets
    from one scalar pointer, where _load_pair_rows leaves a 64-bit pointer per row:
    builds for unaligned rows, one token per access, hold one for every row a thread
    touches. That is how B3's 32-token tile and F2's 64-token one (on sm_90, unaligned
    rows) first fitted in the registers, and part of how B1 came to fit on sm_80 at
    d = 96. F1, F3 and B2 keep _load_pair_rows: they fit either way, and issued one to
    seven more instructions per token this way when tried (B1 five more with unaligned
    rows, none with aligned ones).
    """
    even = tl.load(tile + pair_offsets, mask=mask, other=0.0)
    odd = tl.load((tile + channel_stride) + pair_offsets, mask=mask, other=0.0)
    return even.to(tl.float32), odd.to(tl.float32)


@triton.jit
def _store_pair_tiles(tile, pair_offsets, channel_stride, mask, even, odd):
    tl.store(tile + pair_offsets, even.to(tile.dtype.element_ty), mask=mask)
    tl.store((tile + channel_stride) + pair_offsets, odd.to(tile.dtype.element_ty), mask=mask)


@triton.jit
def _tile_offsets(channel_stride, channels, BLOCK_L: tl.constexpr):
    """Offsets of ``channels`` (a head's, in any order) over one tile, from the tile's
    first token in the head's first channel."""
    return (channels * channel_stride)[:, None] + tl.arange(0, BLOCK_L)[None, :]


@triton.jit
def _unstack(stacked):
    """The halves of a (2 * P, BLOCK_L) tile with its even channels over its odd ones."""
    return tl.split(tl.permute(tl.reshape(stacked, (2, stacked.shape[0] // 2,
                                                    stacked.shape[1])), (1, 2, 0)))


@triton.jit
def _stack(even, odd):
    """The inverse of _unstack: even over odd as one (2 * P, BLOCK_L) tile."""
    return tl.reshape(tl.permute(tl.join(even, odd), (2, 0, 1)),
                      (2 * even.shape[0], even.shape[1]))


@triton.jit
def _pair_dot(even, odd, vector_even, vector_odd):
    """Per token, the dot of a head's channels with a (d,) vector given as its even and
    odd halves: one reduction over channels, not one per half."""
    return tl.sum(even * vector_even[:, None] + odd * vector_odd[:, None], axis=0)


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
    offsets = position * (2 * QUARTER) + frequency[:, None]
    cos = tl.load(table + offsets, mask=mask, other=0.0)
    sin = tl.load((table + QUARTER) + offsets, mask=mask, other=0.0)
    return cos, sin


@triton.jit
def _power_of_two(x):
    """2 ** floor(log2 |x|) elementwise, exactly, read off the exponent bits (1 for x == 0).

    Dividing a dot operand by it and multiplying the product back is exact, and keeps
    half-precision operands clear of fp16's overflow and underflow.
    """
    exponent_bits = x.to(tl.int32, bitcast=True) & 0x7F800000
    scale = exponent_bits.to(tl.float32, bitcast=True)
    return tl.where(scale > 0.0, scale, 1.0)


@triton.jit
def _power_of_two_scale(x):
    """_power_of_two of max |x| over a 2-D tile."""
    return _power_of_two(tl.max(tl.max(tl.abs(x), axis=1), axis=0))


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
def _load_halves(base, pairs, HEAD_DIM: tl.constexpr):
    """A (d,) vector saved as [even channels | odd channels], as its two halves."""
    pairs_ok = pairs < HEAD_DIM // 2
    return (tl.load(base + pairs, mask=pairs_ok, other=0.0),
            tl.load(base + HEAD_DIM // 2 + pairs, mask=pairs_ok, other=0.0))


@triton.jit
def _store_halves(base, pairs, even, odd, HEAD_DIM: tl.constexpr):
    pairs_ok = pairs < HEAD_DIM // 2
    tl.store(base + pairs, even, mask=pairs_ok)
    tl.store(base + HEAD_DIM // 2 + pairs, odd, mask=pairs_ok)


@triton.jit
def _stacked_rows(PAIRS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Per row of a stacked tile (a head's even channels over its odd ones, each half
    padded to PAIRS_PAD rows): its row in a saved (d x d) state, whose rows are in that
    order already; its channel; and whether it is a real one."""
    stacked = tl.arange(0, 2 * PAIRS_PAD)
    pair = stacked % PAIRS_PAD
    parity = stacked // PAIRS_PAD
    return parity * (HEAD_DIM // 2) + pair, 2 * pair + parity, pair < HEAD_DIM // 2


@triton.jit
def _state_block(base, rows, rows_ok, columns, columns_ok, HEAD_DIM: tl.constexpr,
                 TRANSPOSED: tl.constexpr):
    """Pointers to and mask of S[rows, columns] in a saved (d x d) state, or its transpose."""
    if TRANSPOSED:
        return (base + rows[None, :] * HEAD_DIM + columns[:, None],
                rows_ok[None, :] & columns_ok[:, None])
    return (base + rows[:, None] * HEAD_DIM + columns[None, :],
            rows_ok[:, None] & columns_ok[None, :])


@triton.jit
def _load_scaled_state(base, rows, rows_ok, columns, columns_ok, like_ptr,
                       HEAD_DIM: tl.constexpr, DOT_MODE: tl.constexpr, TRANSPOSED: tl.constexpr):
    """S[rows, columns] (or its transpose) as a dot operand, and the scale it was divided by.

    A power of two, so that half-precision operands cannot overflow however large S grows.
    """
    pointers, mask = _state_block(base, rows, rows_ok, columns, columns_ok, HEAD_DIM,
                                  TRANSPOSED)
    block = tl.load(pointers, mask=mask, other=0.0)
    scale = _power_of_two_scale(block)
    return _dot_operand(block / scale, like_ptr, DOT_MODE), scale


@triton.jit
def _load_state_for_queries(state_base, pairs, dims, like_ptr, PAIRS_PAD: tl.constexpr,
                            HEAD_DIM: tl.constexpr, DOT_MODE: tl.constexpr):
    """S^T with its columns (S's saved rows) stacked, to meet stacked rope(Q) tiles, as
    a scaled dot operand with its scale (F3, B1); and km as its two halves."""
    stacked_rows, _, stacked_ok = _stacked_rows(PAIRS_PAD, HEAD_DIM)
    state_t_stacked, state_scale = _load_scaled_state(
        state_base, stacked_rows, stacked_ok, dims, dims < HEAD_DIM, like_ptr, HEAD_DIM,
        DOT_MODE, True)
    km_even, km_odd = _load_halves(state_base + HEAD_DIM * HEAD_DIM, pairs, HEAD_DIM)
    return state_t_stacked, state_scale, km_even, km_odd


@triton.jit
def _store_state_partial(partials, index, state, dims, PAIRS_PAD: tl.constexpr,
                         HEAD_DIM: tl.constexpr):
    """Stores partial ``index`` (bh * num_chunks + chunk) of a stacked (d x d) state (F2's
    S, B1's dS) with its rows as saved; returns where the partial's (d,) vector (km, dkm)
    goes, [even | odd]."""
    out = partials + index.to(tl.int64) * (HEAD_DIM * HEAD_DIM + HEAD_DIM)
    stacked_rows, _, stacked_ok = _stacked_rows(PAIRS_PAD, HEAD_DIM)
    pointers, mask = _state_block(out, stacked_rows, stacked_ok, dims, dims < HEAD_DIM,
                                  HEAD_DIM, False)
    tl.store(pointers, state, mask=mask)
    return out + HEAD_DIM * HEAD_DIM


@triton.jit
def _sum_over_chunks(base, num_chunks, row_len, cols, cols_ok,
                     WIDTH: tl.constexpr, CHUNK_BLOCK: tl.constexpr):
    """sum_c base[c, cols] over the chunk partials of one (image, head), in fixed order.

    Read through L2 (.cg): the partials were written by other programs of this launch.
    """
    chunks = tl.arange(0, CHUNK_BLOCK)
    acc = tl.zeros((CHUNK_BLOCK, WIDTH), dtype=tl.float32)
    for first in range(0, num_chunks, CHUNK_BLOCK):
        rows = first + chunks
        acc += tl.load(base + rows[:, None] * row_len + cols[None, :],
                       mask=(rows[:, None] < num_chunks) & cols_ok[None, :], other=0.0,
                       cache_modifier='.cg')
    return tl.sum(acc, axis=0)


@triton.jit
def _sum_in_last_program(partials, ticket, num_chunks, out, divisor,
                         HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
                         CHUNK_BLOCK: tl.constexpr):
    """The last program of an (image, head) to finish sums its (d,) chunk partials.

    It saves the next pass a launch, and each of its programs from summing every chunk
    again. Tickets are integers (no float atomics) and the sum runs in chunk order, so
    the result does not depend on which program comes last. The barrier puts every
    thread's partial store before the ticket, whose acquire-release order at GPU scope
    makes all of them visible to the last program. The last program also sets the ticket
    back to zero (every other program has taken its own by then), so the op keeps one set
    of tickets per stream and never fills them before a launch (see _tickets).
    """
    tl.debug_barrier()
    done = tl.atomic_add(ticket, 1, sem='acq_rel', scope='gpu')
    if done == num_chunks - 1:
        tl.store(ticket, 0)
        # Both halves of each row in one tile: one round of loads, not one per half.
        WIDTH: tl.constexpr = 2 * PAIRS_PAD
        ROWS: tl.constexpr = min(CHUNK_BLOCK, LAST_PROGRAM_SUM_ELEMENTS // WIDTH)
        cols = tl.arange(0, WIDTH)
        cols_ok = cols < HEAD_DIM
        total = _sum_over_chunks(partials, num_chunks, HEAD_DIM, cols, cols_ok, WIDTH, ROWS)
        tl.store(out + cols, total / divisor, mask=cols_ok)


# ---------------------------------------------------------------------------------------
# Forward. Each pass is a prologue, at most one masked tail tile (the tile function with
# MASKED=True), a loop of unmasked whole tiles and an epilogue. Tile functions return what
# they accumulate; sums over tokens stay (rows x tokens) wide inside the loop and are
# reduced once in the epilogue.
# ---------------------------------------------------------------------------------------

@triton.jit
def _query_sum_tile(q_base, even_rows, odd_rows, pairs_ok, first, stop, acc_even, acc_odd,
                    BLOCK_L: tl.constexpr, MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    _, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    q0_even, q0_odd = _load_pair_rows(q_base, even_rows, odd_rows, tokens, mask)
    # phi(0) = 1: padding has to be zeroed after the feature map, not before.
    acc_even += tl.where(mask, _phi(q0_even), 0.0)
    acc_odd += tl.where(mask, _phi(q0_odd), 0.0)
    return acc_even, acc_odd


@_token_pass
def _rala_fwd_query_sum_kernel(
        qkv, stride_qkv_b, stride_qkv_c, query_sums, query_mean, tickets,
        num_tokens, chunk_tokens, num_chunks,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        BLOCK_L: tl.constexpr, CHUNK_BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    """F1: per-chunk sums of phi(Q0) into query_sums[bh, chunk], (d,) de-interleaved;
    the last program of each (image, head) turns them into qm = query_mean[bh]."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    q_base = qkv + _channel_offset(image, stride_qkv_b, head * HEAD_DIM, stride_qkv_c)
    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    even_rows = 2 * pairs * stride_qkv_c
    odd_rows = (2 * pairs + 1) * stride_qkv_c

    acc_even = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    acc_odd = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        acc_even, acc_odd = _query_sum_tile(q_base, even_rows, odd_rows, pairs_ok, whole_stop,
                                            stop, acc_even, acc_odd, BLOCK_L, True)
    for first in range(start, whole_stop, BLOCK_L):
        acc_even, acc_odd = _query_sum_tile(q_base, even_rows, odd_rows, pairs_ok, first, stop,
                                            acc_even, acc_odd, BLOCK_L, False)

    sums = query_sums + bh * num_chunks * HEAD_DIM
    _store_halves(sums + chunk * HEAD_DIM, pairs, tl.sum(acc_even, axis=1),
                  tl.sum(acc_odd, axis=1), HEAD_DIM)
    _sum_in_last_program(sums, tickets + bh, num_chunks, query_mean + bh * HEAD_DIM,
                         num_tokens.to(tl.float32), HEAD_DIM, PAIRS_PAD, CHUNK_BLOCK)


@triton.jit
def _state_tile(k_base, v_base, pair_offsets, channel_stride, value_offsets, pairs, pairs_ok,
                dims_ok, first, stop, rope_table, height, width, scale, qm_even, qm_odd,
                like_ptr, running_max, lane_sums, state, km_sums,
                HEAD_DIM: tl.constexpr, BLOCK_L: tl.constexpr, DOT_MODE: tl.constexpr,
                FP32_PRECISION: tl.constexpr, KM_BY_DOT: tl.constexpr,
                MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    tokens_ok, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    k0_even, k0_odd = _load_pair_tiles(k_base + first, pair_offsets, channel_stride, mask)
    k_even = tl.where(mask, _phi(k0_even), 0.0)
    k_odd = tl.where(mask, _phi(k0_odd), 0.0)
    values_t = tl.load((v_base + first) + value_offsets,
                       mask=tokens_ok[:, None] & dims_ok[None, :], other=0.0)

    # Logits in fp32 from fp32 K and qm: a bf16 logit is the reference's main error.
    logits = scale * _pair_dot(k_even, k_odd, qm_even, qm_odd)
    logits = tl.where(tokens_ok, logits, float('-inf'))
    # Every tile holds at least one real token, so the running max is finite after the
    # first tile and exp(running_max - new_max) never sees (-inf) - (-inf).
    new_max = tl.maximum(running_max, tl.max(logits, axis=0))
    rescale = _exp(running_max - new_max)
    weights = _exp(logits - new_max)
    lane_sums = lane_sums * rescale + weights

    cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
    # K_j a_j, rotated for S and as it is for km.
    weighted_even = k_even * weights[None, :]
    weighted_odd = k_odd * weights[None, :]
    rot_even = weighted_even * cos - weighted_odd * sin
    rot_odd = weighted_odd * cos + weighted_even * sin
    values_t = _dot_operand(values_t.to(tl.float32), like_ptr, DOT_MODE)
    state = _mma(_dot_operand(_stack(rot_even, rot_odd), like_ptr, DOT_MODE), values_t,
                 state * rescale, DOT_MODE, FP32_PRECISION)
    if KM_BY_DOT:
        ones = _dot_operand(tl.full((BLOCK_L, 16), 1.0, tl.float32), like_ptr, DOT_MODE)
        km_sums = _mma(_dot_operand(_stack(weighted_even, weighted_odd), like_ptr, DOT_MODE),
                       ones, km_sums * rescale, DOT_MODE, FP32_PRECISION)
    else:
        km_sums = km_sums * rescale + _stack(weighted_even, weighted_odd)
    return new_max, lane_sums, state, km_sums


@_token_pass
def _rala_fwd_state_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, query_mean,
        state_partials, softmax_partials,
        num_tokens, height, width, chunk_tokens, num_chunks, scale,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr, DOT_MODE: tl.constexpr,
        FP32_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """F2: per chunk, the online-softmax partials of S and km, and (max, sum e^(s-max)).

    state_partials[bh, chunk] = [S_even (d/2 x d) | S_odd (d/2 x d) | km_even | km_odd],
    unnormalised, relative to the chunk's own running max.
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    CHANNELS: tl.constexpr = NUM_HEADS * HEAD_DIM
    k_base = qkv + _channel_offset(image, stride_qkv_b, CHANNELS + head * HEAD_DIM,
                                   stride_qkv_c)
    v_base = qkv + _channel_offset(image, stride_qkv_b, 2 * CHANNELS + head * HEAD_DIM,
                                   stride_qkv_c)

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM
    pair_offsets = _tile_offsets(stride_qkv_c, 2 * pairs, BLOCK_L)
    value_offsets = tl.trans(_tile_offsets(stride_qkv_c, dims, BLOCK_L))
    qm_even, qm_odd = _load_halves(query_mean + bh * HEAD_DIM, pairs, HEAD_DIM)

    running_max = tl.full((), float('-inf'), tl.float32)
    lane_sums = tl.zeros((BLOCK_L,), dtype=tl.float32)
    state = tl.zeros((2 * PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    # With half-precision dot operands at d <= 64, km sums over tokens on the tensor
    # cores: the stacked K_j a_j times a (BLOCK_L x 16) tile of ones (16, the narrowest
    # dot), whose 16 columns each hold km, the same sum in the same order. Per token
    # lane, km takes (d x BLOCK_L) fp32 accumulators, 32 registers a thread at 64-token
    # tiles (8 this way), and spilled there. fp32 keeps the lanes (its 3xTF32 dot of ones
    # is three MMAs: 137 -> 190 loop instructions per token on sm_90), and so do head dims
    # above 64, whose 16-token tiles hold no more in lanes than in 16 columns.
    KM_BY_DOT: tl.constexpr = DOT_MODE != 0 and HEAD_DIM <= 64
    if KM_BY_DOT:
        km_sums = tl.zeros((2 * PAIRS_PAD, 16), dtype=tl.float32)
    else:
        km_sums = tl.zeros((2 * PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        running_max, lane_sums, state, km_sums = _state_tile(
            k_base, v_base, pair_offsets, stride_qkv_c, value_offsets, pairs, pairs_ok,
            dims_ok, whole_stop, stop, rope_table, height, width, scale, qm_even, qm_odd, qkv,
            running_max, lane_sums, state, km_sums,
            HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, KM_BY_DOT, True)
    for first in range(start, whole_stop, BLOCK_L):
        running_max, lane_sums, state, km_sums = _state_tile(
            k_base, v_base, pair_offsets, stride_qkv_c, value_offsets, pairs, pairs_ok,
            dims_ok, first, stop, rope_table, height, width, scale, qm_even, qm_odd, qkv,
            running_max, lane_sums, state, km_sums,
            HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, KM_BY_DOT, False)

    km_partial = _store_state_partial(state_partials, bh * num_chunks + chunk, state, dims,
                                      PAIRS_PAD, HEAD_DIM)
    if KM_BY_DOT:
        km = tl.max(km_sums, axis=1)    # of equal columns: exact
    else:
        km = tl.sum(km_sums, axis=1)
    # The saved [even | odd] order is the stacked one.
    stacked_rows, _, stacked_ok = _stacked_rows(PAIRS_PAD, HEAD_DIM)
    tl.store(km_partial + stacked_rows, km, mask=stacked_ok)
    stats = softmax_partials + (bh * num_chunks + chunk) * 2
    tl.store(stats, running_max)
    tl.store(stats + 1, tl.sum(lane_sums, axis=0))


@triton.jit(do_not_specialize=['num_chunks'])
def _rala_combine_chunks_kernel(
        partials, softmax_partials, combined, log_sum_exp, num_chunks,
        FLAT: tl.constexpr, BLOCK_FLAT: tl.constexpr, CHUNK_BLOCK: tl.constexpr,
        SOFTMAX_WEIGHTS: tl.constexpr):
    """Combine per-chunk partials of flat length FLAT into one vector per (image, head).

    With SOFTMAX_WEIGHTS (forward), chunk c enters with weight e^(m_c - M) and the sum
    is divided by sum_c e^(m_c - M) l_c; log_sum_exp receives M + log(that sum).
    Without (backward), a plain sum. Grid: (B * heads, cdiv(FLAT, BLOCK_FLAT)). The
    (CHUNK_BLOCK x BLOCK_FLAT) partial tiles are summed elementwise in the loop and
    reduced over chunks once after it.
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
        lane_max = tl.full((CHUNK_BLOCK,), float('-inf'), tl.float32)
        for first in range(0, num_chunks, CHUNK_BLOCK):
            rows = first + chunks
            lane_max = tl.maximum(lane_max, tl.load(stats + rows * 2, mask=rows < num_chunks,
                                                    other=float('-inf')))
        global_max = tl.max(lane_max, axis=0)

    acc = tl.zeros((CHUNK_BLOCK, BLOCK_FLAT), dtype=tl.float32)
    total = tl.zeros((CHUNK_BLOCK,), dtype=tl.float32)
    for first in range(0, num_chunks, CHUNK_BLOCK):
        rows = first + chunks
        rows_ok = rows < num_chunks
        tile = tl.load(base + rows[:, None] * FLAT + offsets[None, :],
                       mask=rows_ok[:, None] & offsets_ok[None, :], other=0.0)
        if SOFTMAX_WEIGHTS:
            chunk_max = tl.load(stats + rows * 2, mask=rows_ok, other=float('-inf'))
            chunk_sum = tl.load(stats + rows * 2 + 1, mask=rows_ok, other=0.0)
            weight = tl.where(rows_ok, _exp(chunk_max - global_max), 0.0)
            total += weight * chunk_sum
            tile = tile * weight[:, None]
        acc += tile
    result = tl.sum(acc, axis=0)

    if SOFTMAX_WEIGHTS:
        normaliser = tl.sum(total, axis=0)
        result = result / normaliser
        if block == 0:
            tl.store(log_sum_exp + bh, global_max + tl.log(normaliser))
    tl.store(combined + bh * FLAT + offsets, result, mask=offsets_ok)


@triton.jit
def _output_tile(q_base, o_base, even_rows, odd_rows, out_rows, pairs, pairs_ok, dims_ok,
                 first, stop, rope_table, height, width, like_ptr,
                 state_t_stacked, state_scale, km_even, km_odd,
                 DIM_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_L: tl.constexpr,
                 DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    tokens_ok, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    q0_even, q0_odd = _load_pair_rows(q_base, even_rows, odd_rows, tokens, mask)
    q_even = tl.where(mask, _phi(q0_even), 0.0)
    q_odd = tl.where(mask, _phi(q0_odd), 0.0)
    denominator = _pair_dot(q_even, q_odd, km_even, km_odd) + RALA_EPS
    cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
    rot = _dot_operand(_stack(q_even * cos - q_odd * sin, q_odd * cos + q_even * sin),
                       like_ptr, DOT_MODE)
    numerator = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
    numerator = _mma(state_t_stacked, rot, numerator, DOT_MODE, FP32_PRECISION)
    result = numerator * (state_scale / denominator)[None, :]
    tl.store(o_base + out_rows[:, None] + tokens[None, :],
             result.to(o_base.dtype.element_ty), mask=dims_ok[:, None] & tokens_ok[None, :])


@_token_pass
def _rala_fwd_output_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, out, stride_out_b, stride_out_c,
        num_tokens, height, width, chunk_tokens, num_chunks,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """F3: O_i = rope(Q_i) S / (Q_i . km + eps), written channel-first."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    stride_out_b, stride_out_c = _strides(stride_out_b, stride_out_c, ALIGN)
    q_base = qkv + _channel_offset(image, stride_qkv_b, head * HEAD_DIM, stride_qkv_c)
    o_base = out + _channel_offset(image, stride_out_b, head * HEAD_DIM, stride_out_c)

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM
    even_rows = 2 * pairs * stride_qkv_c
    odd_rows = (2 * pairs + 1) * stride_qkv_c
    out_rows = dims * stride_out_c

    # The state is loaded once per program and reused over the chunk's tiles.
    state_t_stacked, state_scale, km_even, km_odd = _load_state_for_queries(
        state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM), pairs, dims, qkv, PAIRS_PAD, HEAD_DIM,
        DOT_MODE)

    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        _output_tile(q_base, o_base, even_rows, odd_rows, out_rows, pairs, pairs_ok, dims_ok,
                     whole_stop, stop, rope_table, height, width, qkv,
                     state_t_stacked, state_scale, km_even, km_odd,
                     DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, True)
    for first in range(start, whole_stop, BLOCK_L):
        _output_tile(q_base, o_base, even_rows, odd_rows, out_rows, pairs, pairs_ok, dims_ok,
                     first, stop, rope_table, height, width, qkv,
                     state_t_stacked, state_scale, km_even, km_odd,
                     DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, False)


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------

@triton.jit
def _state_grad_tile(q_base, g_base, pair_offsets, channel_stride, grad_offsets, pairs,
                     pairs_ok, dims_ok, first, stop, rope_table, height, width, like_ptr,
                     state_t_stacked, state_scale, km_even, km_odd,
                     grad_state, grad_km_even, grad_km_odd,
                     DIM_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_L: tl.constexpr,
                     DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr,
                     MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    tokens_ok, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    q0_even, q0_odd = _load_pair_tiles(q_base + first, pair_offsets, channel_stride, mask)
    q_even = tl.where(mask, _phi(q0_even), 0.0)
    q_odd = tl.where(mask, _phi(q0_odd), 0.0)
    inv_denominator = 1.0 / (_pair_dot(q_even, q_odd, km_even, km_odd) + RALA_EPS)
    cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
    if DIM_PAD <= 64:
        # rope(Q_i) z_i = rope(Q_i z_i): one operand for both dots, O_i = z_i U_i and dS
        # (sm_90, d = 64: 110 -> 101 loop instructions per token). Next to the
        # (128 x 128) dS accumulator of d > 64 it spilled on sm_80, hence the else.
        scaled_even = q_even * inv_denominator[None, :]
        scaled_odd = q_odd * inv_denominator[None, :]
        rot = _dot_operand(_stack(scaled_even * cos - scaled_odd * sin,
                                  scaled_odd * cos + scaled_even * sin), like_ptr, DOT_MODE)
        product_operand = rot
        product_scale = inv_denominator
    else:
        rot = _stack(q_even * cos - q_odd * sin, q_odd * cos + q_even * sin)
        product_operand = _dot_operand(rot, like_ptr, DOT_MODE)
        product_scale = inv_denominator * inv_denominator
    # S^T times the rotated operand: O_i / state_scale (d <= 64), U_i / state_scale (else)
    state_product = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
    state_product = _mma(state_t_stacked, product_operand, state_product, DOT_MODE,
                         FP32_PRECISION)
    grad = tl.load((g_base + first) + grad_offsets,
                   mask=dims_ok[:, None] & tokens_ok[None, :], other=0.0).to(tl.float32)
    # dn = -z (G . O) = -z^2 (G . U)
    grad_denominator = -(product_scale * state_scale * tl.sum(grad * state_product, axis=0))
    grad_t = tl.trans(_dot_operand(grad, like_ptr, DOT_MODE))
    if DIM_PAD <= 64:
        state_operand = rot
    else:
        state_operand = _dot_operand(rot * inv_denominator[None, :], like_ptr, DOT_MODE)
    grad_state = _mma(state_operand, grad_t, grad_state, DOT_MODE, FP32_PRECISION)
    grad_km_even += q_even * grad_denominator[None, :]
    grad_km_odd += q_odd * grad_denominator[None, :]
    return grad_state, grad_km_even, grad_km_odd


@_token_pass
def _rala_bwd_state_grad_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, grad_out, stride_out_b,
        stride_out_c, grad_state_partials,
        num_tokens, height, width, chunk_tokens, num_chunks,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """B1: per-chunk partials of dS = sum_i z_i rope(Q_i)^T G_i and dkm = sum_i dn_i Q_i.

    z_i = 1 / n_i and dn_i = -z_i (G_i . O_i), with O_i recomputed from the saved S.
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    stride_out_b, stride_out_c = _strides(stride_out_b, stride_out_c, ALIGN)
    q_base = qkv + _channel_offset(image, stride_qkv_b, head * HEAD_DIM, stride_qkv_c)
    g_base = grad_out + _channel_offset(image, stride_out_b, head * HEAD_DIM, stride_out_c)

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM
    pair_offsets = _tile_offsets(stride_qkv_c, 2 * pairs, BLOCK_L)
    grad_offsets = _tile_offsets(stride_out_c, dims, BLOCK_L)

    state_t_stacked, state_scale, km_even, km_odd = _load_state_for_queries(
        state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM), pairs, dims, qkv, PAIRS_PAD, HEAD_DIM,
        DOT_MODE)

    grad_state = tl.zeros((2 * PAIRS_PAD, DIM_PAD), dtype=tl.float32)
    grad_km_even = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    grad_km_odd = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        grad_state, grad_km_even, grad_km_odd = _state_grad_tile(
            q_base, g_base, pair_offsets, stride_qkv_c, grad_offsets, pairs, pairs_ok, dims_ok,
            whole_stop, stop, rope_table, height, width, qkv,
            state_t_stacked, state_scale, km_even, km_odd,
            grad_state, grad_km_even, grad_km_odd,
            DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, True)
    for first in range(start, whole_stop, BLOCK_L):
        grad_state, grad_km_even, grad_km_odd = _state_grad_tile(
            q_base, g_base, pair_offsets, stride_qkv_c, grad_offsets, pairs, pairs_ok, dims_ok,
            first, stop, rope_table, height, width, qkv,
            state_t_stacked, state_scale, km_even, km_odd,
            grad_state, grad_km_even, grad_km_odd,
            DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, False)

    grad_km_partial = _store_state_partial(grad_state_partials, bh * num_chunks + chunk,
                                           grad_state, dims, PAIRS_PAD, HEAD_DIM)
    _store_halves(grad_km_partial, pairs, tl.sum(grad_km_even, axis=1),
                  tl.sum(grad_km_odd, axis=1), HEAD_DIM)


@triton.jit
def _key_value_tile(k_base, v_base, dk_base, dv_base, even_rows, odd_rows, value_rows,
                    grad_even_rows, grad_odd_rows, grad_value_rows, pairs, pairs_ok, dims_ok,
                    first, stop, rope_table, height, width, scale, like_ptr,
                    qm_even, qm_odd, lse, delta, grad_stacked, grad_scale,
                    grad_km_even, grad_km_odd, grad_qm_even, grad_qm_odd,
                    DIM_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_L: tl.constexpr,
                    DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr,
                    MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    tokens_ok, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    token_dims_mask = dims_ok[:, None] & tokens_ok[None, :]
    k0_even, k0_odd = _load_pair_rows(k_base, even_rows, odd_rows, tokens, mask)
    k_even = tl.where(mask, _phi(k0_even), 0.0)
    k_odd = tl.where(mask, _phi(k0_odd), 0.0)
    values = tl.load(v_base + value_rows[:, None] + tokens[None, :], mask=token_dims_mask,
                     other=0.0)
    values = _dot_operand(values.to(tl.float32), like_ptr, DOT_MODE)

    logits = scale * _pair_dot(k_even, k_odd, qm_even, qm_odd)
    attn = tl.where(tokens_ok, _exp(logits - lse), 0.0)

    cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
    rot_even = k_even * cos - k_odd * sin
    rot_odd = k_odd * cos + k_even * sin
    zero = tl.zeros((grad_stacked.shape[0], BLOCK_L), dtype=tl.float32)
    w = _mma(grad_stacked, values, zero, DOT_MODE, FP32_PRECISION) * grad_scale
    w_even, w_odd = _unstack(w)

    # The gradient of rope(K_j) a_j is W_j; rotated back (the sine negated) and with
    # dkm, it is what K_j's both terms need: grad_key_j = rope^-1(W_j) + dkm gives
    # da_j = K_j . grad_key_j (rope(K_j) . W_j = K_j . rope^-1(W_j), rope being a
    # rotation) and dK_j = a_j grad_key_j + (scale da_j a_j) qm.
    grad_key_even = w_even * cos + (w_odd * sin + grad_km_even[:, None])
    grad_key_odd = w_odd * cos + (grad_km_odd[:, None] - w_even * sin)
    grad_attn = tl.sum(k_even * grad_key_even + k_odd * grad_key_odd, axis=0)
    grad_logits = attn * (grad_attn - delta)
    grad_k_even = (attn[None, :] * grad_key_even
                   + scale * grad_logits[None, :] * qm_even[:, None])
    grad_k_odd = (attn[None, :] * grad_key_odd
                  + scale * grad_logits[None, :] * qm_odd[:, None])
    _store_pair_rows(dk_base, grad_even_rows, grad_odd_rows, tokens, mask,
                     grad_k_even * _phi_grad(k_even), grad_k_odd * _phi_grad(k_odd))

    # a_j is about 1 / L, below fp16's smallest normal at detection sizes: the dV operand
    # takes a_j / 2^e_j (in [1, 2)) and the product is scaled back, exactly.
    attn_scale = _power_of_two(attn)
    attn_operand = (attn / attn_scale)[None, :]
    # dS^T as the transpose of the operands already held, not a second copy.
    grad_values = tl.zeros((DIM_PAD, BLOCK_L), dtype=tl.float32)
    grad_values = _mma(tl.trans(grad_stacked),
                       _dot_operand(_stack(rot_even * attn_operand, rot_odd * attn_operand),
                                    like_ptr, DOT_MODE),
                       grad_values, DOT_MODE, FP32_PRECISION)
    tl.store(dv_base + grad_value_rows[:, None] + tokens[None, :],
             (grad_values * (grad_scale * attn_scale)[None, :]).to(dv_base.dtype.element_ty),
             mask=token_dims_mask)

    grad_qm_even += k_even * grad_logits[None, :]
    grad_qm_odd += k_odd * grad_logits[None, :]
    return grad_qm_even, grad_qm_odd


@_token_pass
def _rala_bwd_key_value_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, query_mean, log_sum_exp, state,
        grad_state, grad_qkv, stride_grad_b, stride_grad_c, grad_query_mean_partials,
        grad_query_mean, tickets,
        num_tokens, height, width, chunk_tokens, num_chunks, scale,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK_BLOCK: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """B2: dK0 and dV per key, and per-chunk partials of dqm, summed by the last program.

    With a_j = exp(s_j - lse), W_j = dS V_j (in rotated key space) and
    delta = <S, dS> + km . dkm:
        ds_j = a_j (rope(K_j) . W_j + K_j . dkm - delta)
        dK_j = a_j rope^-1(W_j) + a_j dkm + c ds_j qm,   dV_j = a_j dS^T rope(K_j)
        dqm  = c sum_j ds_j K_j
    grad_query_mean[bh] receives dqm / L, the share of every query.
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    stride_grad_b, stride_grad_c = _strides(stride_grad_b, stride_grad_c, ALIGN)
    CHANNELS: tl.constexpr = NUM_HEADS * HEAD_DIM
    k_base = qkv + _channel_offset(image, stride_qkv_b, CHANNELS + head * HEAD_DIM,
                                   stride_qkv_c)
    v_base = qkv + _channel_offset(image, stride_qkv_b, 2 * CHANNELS + head * HEAD_DIM,
                                   stride_qkv_c)
    dk_base = grad_qkv + _channel_offset(image, stride_grad_b, CHANNELS + head * HEAD_DIM,
                                         stride_grad_c)
    dv_base = grad_qkv + _channel_offset(image, stride_grad_b, 2 * CHANNELS + head * HEAD_DIM,
                                         stride_grad_c)

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    dims = tl.arange(0, DIM_PAD)
    dims_ok = dims < HEAD_DIM
    even_rows = 2 * pairs * stride_qkv_c
    odd_rows = (2 * pairs + 1) * stride_qkv_c
    value_rows = dims * stride_qkv_c
    grad_even_rows = 2 * pairs * stride_grad_c
    grad_odd_rows = (2 * pairs + 1) * stride_grad_c
    grad_value_rows = dims * stride_grad_c

    flat = HEAD_DIM * HEAD_DIM + HEAD_DIM
    state_base = state + bh * flat
    grad_state_base = grad_state + bh * flat
    # dS with its rows stacked as saved, so that W_j = dS V_j is one dot with d rows.
    stacked_rows, _, stacked_ok = _stacked_rows(PAIRS_PAD, HEAD_DIM)
    grad_pointers, stacked_mask = _state_block(grad_state_base, stacked_rows, stacked_ok, dims,
                                               dims_ok, HEAD_DIM, False)
    grad_stacked = tl.load(grad_pointers, mask=stacked_mask, other=0.0)
    grad_km_even, grad_km_odd = _load_halves(grad_state_base + HEAD_DIM * HEAD_DIM, pairs,
                                             HEAD_DIM)
    km_even, km_odd = _load_halves(state_base + HEAD_DIM * HEAD_DIM, pairs, HEAD_DIM)
    # delta = sum_j a_j da_j is known before any key is read.
    state_pointers, _ = _state_block(state_base, stacked_rows, stacked_ok, dims, dims_ok,
                                     HEAD_DIM, False)
    delta = (tl.sum(tl.sum(tl.load(state_pointers, mask=stacked_mask, other=0.0) * grad_stacked,
                           axis=1), axis=0)
             + tl.sum(km_even * grad_km_even, axis=0) + tl.sum(km_odd * grad_km_odd, axis=0))

    grad_scale = _power_of_two_scale(grad_stacked)
    grad_stacked = _dot_operand(grad_stacked / grad_scale, qkv, DOT_MODE)
    qm_even, qm_odd = _load_halves(query_mean + bh * HEAD_DIM, pairs, HEAD_DIM)
    lse = tl.load(log_sum_exp + bh)

    grad_qm_even = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    grad_qm_odd = tl.zeros((PAIRS_PAD, BLOCK_L), dtype=tl.float32)
    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        grad_qm_even, grad_qm_odd = _key_value_tile(
            k_base, v_base, dk_base, dv_base, even_rows, odd_rows, value_rows,
            grad_even_rows, grad_odd_rows, grad_value_rows, pairs, pairs_ok, dims_ok,
            whole_stop, stop, rope_table, height, width, scale, qkv,
            qm_even, qm_odd, lse, delta, grad_stacked, grad_scale,
            grad_km_even, grad_km_odd, grad_qm_even, grad_qm_odd,
            DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, True)
    for first in range(start, whole_stop, BLOCK_L):
        grad_qm_even, grad_qm_odd = _key_value_tile(
            k_base, v_base, dk_base, dv_base, even_rows, odd_rows, value_rows,
            grad_even_rows, grad_odd_rows, grad_value_rows, pairs, pairs_ok, dims_ok,
            first, stop, rope_table, height, width, scale, qkv,
            qm_even, qm_odd, lse, delta, grad_stacked, grad_scale,
            grad_km_even, grad_km_odd, grad_qm_even, grad_qm_odd,
            DIM_PAD, HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION, False)

    partials = grad_query_mean_partials + bh * num_chunks * HEAD_DIM
    _store_halves(partials + chunk * HEAD_DIM, pairs, scale * tl.sum(grad_qm_even, axis=1),
                  scale * tl.sum(grad_qm_odd, axis=1), HEAD_DIM)
    _sum_in_last_program(partials, tickets + bh, num_chunks, grad_query_mean + bh * HEAD_DIM,
                         num_tokens.to(tl.float32), HEAD_DIM, PAIRS_PAD, CHUNK_BLOCK)


@triton.jit
def _query_tile(q_base, g_base, dq_base, pair_offsets, channel_stride, grad_out_offsets,
                grad_pair_offsets, grad_channel_stride, pairs, pairs_ok, stacked_ok,
                first, stop, rope_table, height, width, like_ptr,
                state_stacked, state_scale, km_even, km_odd, grad_qm_even, grad_qm_odd,
                HEAD_DIM: tl.constexpr, BLOCK_L: tl.constexpr,
                DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, MASKED: tl.constexpr):
    tokens = _tile_tokens(first, BLOCK_L)
    _, mask = _tile_masks(pairs_ok, tokens, stop, MASKED)
    _, stacked_mask = _tile_masks(stacked_ok, tokens, stop, MASKED)
    q0_even, q0_odd = _load_pair_tiles(q_base + first, pair_offsets, channel_stride, mask)
    q_even = tl.where(mask, _phi(q0_even), 0.0)
    q_odd = tl.where(mask, _phi(q0_odd), 0.0)
    inv_denominator = 1.0 / (_pair_dot(q_even, q_odd, km_even, km_odd) + RALA_EPS)
    cos, sin = _rope_phases(rope_table, pairs, tokens, mask, height, width, HEAD_DIM // 4)
    # G_i with its even channels stacked over its odd ones, and S likewise by rows and
    # columns: one dot with d rows, as many as the warps' mma tiles cover.
    grad = tl.load((g_base + first) + grad_out_offsets, mask=stacked_mask, other=0.0)
    zero = tl.zeros((state_stacked.shape[0], BLOCK_L), dtype=tl.float32)
    sg = _mma(state_stacked, _dot_operand(grad.to(tl.float32), like_ptr, DOT_MODE), zero,
              DOT_MODE, FP32_PRECISION)
    # S G_i in rotated space (times 1 / state_scale), rotated back: u_i = rope^-1(S G_i)
    # (the sine negated). It gives both terms of dQ_i: the numerator's, z_i u_i, and the
    # denominator's, since G_i . (rope(Q_i) S) = rope(Q_i) . (S G_i) = Q_i . u_i (rope is
    # a rotation): neither the output O_i nor rope(Q_i) need be built.
    sg_even, sg_odd = _unstack(sg)
    u_even = sg_even * cos + sg_odd * sin
    u_odd = sg_odd * cos - sg_even * sin
    grad_denominator = -(inv_denominator * inv_denominator * state_scale
                         * tl.sum(q_even * u_even + q_odd * u_odd, axis=0))
    u_scale = (state_scale * inv_denominator)[None, :]
    # Grouped so that each sum is a chain of fused multiply-adds.
    grad_q_even = u_even * u_scale + (grad_denominator[None, :] * km_even[:, None]
                                      + grad_qm_even[:, None])
    grad_q_odd = u_odd * u_scale + (grad_denominator[None, :] * km_odd[:, None]
                                    + grad_qm_odd[:, None])
    _store_pair_tiles(dq_base + first, grad_pair_offsets, grad_channel_stride, mask,
                      grad_q_even * _phi_grad(q_even), grad_q_odd * _phi_grad(q_odd))


@_token_pass
def _rala_bwd_query_kernel(
        qkv, stride_qkv_b, stride_qkv_c, rope_table, state, grad_out, stride_out_b,
        stride_out_c, grad_query_mean, grad_qkv, stride_grad_b, stride_grad_c,
        num_tokens, height, width, chunk_tokens, num_chunks,
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAIRS_PAD: tl.constexpr,
        BLOCK_L: tl.constexpr,
        DOT_MODE: tl.constexpr, FP32_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """B3: dQ_i = rope^-1(z_i S G_i) + dn_i km + dqm / L, then dQ0 = dQ * phi'(Q0).

    G is one tile with its even channels stacked over its odd ones, and S has its rows
    and columns in that order, so S G_i is a single dot with d rows. Triton gives the
    warps of a loop whose dots feed each other one row band each (16 rows a warp): dots
    of d/2 rows, at d = 64 and four warps, had two warps repeat the other two's work and
    everything computed from it. Q and dQ are even and odd tiles (_load_pair_tiles).
    """
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    image = bh // NUM_HEADS
    head = bh % NUM_HEADS
    stride_qkv_b, stride_qkv_c = _strides(stride_qkv_b, stride_qkv_c, ALIGN)
    stride_out_b, stride_out_c = _strides(stride_out_b, stride_out_c, ALIGN)
    stride_grad_b, stride_grad_c = _strides(stride_grad_b, stride_grad_c, ALIGN)
    q_base = qkv + _channel_offset(image, stride_qkv_b, head * HEAD_DIM, stride_qkv_c)
    g_base = grad_out + _channel_offset(image, stride_out_b, head * HEAD_DIM, stride_out_c)
    dq_base = grad_qkv + _channel_offset(image, stride_grad_b, head * HEAD_DIM, stride_grad_c)

    pairs = tl.arange(0, PAIRS_PAD)
    pairs_ok = pairs < HEAD_DIM // 2
    pair_offsets = _tile_offsets(stride_qkv_c, 2 * pairs, BLOCK_L)
    grad_pair_offsets = _tile_offsets(stride_grad_c, 2 * pairs, BLOCK_L)
    stacked_rows, stacked_channel, stacked_ok = _stacked_rows(PAIRS_PAD, HEAD_DIM)
    grad_out_offsets = _tile_offsets(stride_out_c, stacked_channel, BLOCK_L)

    grad_qm_even, grad_qm_odd = _load_halves(grad_query_mean + bh * HEAD_DIM, pairs, HEAD_DIM)

    state_base = state + bh * (HEAD_DIM * HEAD_DIM + HEAD_DIM)
    # S's saved rows are stacked already; its columns are gathered the same way.
    state_stacked, state_scale = _load_scaled_state(
        state_base, stacked_rows, stacked_ok, stacked_channel, stacked_ok, qkv, HEAD_DIM,
        DOT_MODE, False)
    km_even, km_odd = _load_halves(state_base + HEAD_DIM * HEAD_DIM, pairs, HEAD_DIM)

    start, whole_stop, stop = _chunk_bounds(chunk, chunk_tokens, num_tokens, BLOCK_L, ALIGN)
    if whole_stop < stop:
        _query_tile(q_base, g_base, dq_base, pair_offsets, stride_qkv_c, grad_out_offsets,
                    grad_pair_offsets, stride_grad_c, pairs, pairs_ok, stacked_ok, whole_stop,
                    stop, rope_table, height, width, qkv,
                    state_stacked, state_scale, km_even, km_odd, grad_qm_even, grad_qm_odd,
                    HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION,
                    True)
    for first in range(start, whole_stop, BLOCK_L):
        _query_tile(q_base, g_base, dq_base, pair_offsets, stride_qkv_c, grad_out_offsets,
                    grad_pair_offsets, stride_grad_c, pairs, pairs_ok, stacked_ok, first,
                    stop, rope_table, height, width, qkv,
                    state_stacked, state_scale, km_even, km_odd, grad_qm_even, grad_qm_odd,
                    HEAD_DIM, BLOCK_L, DOT_MODE, FP32_PRECISION,
                    False)


# ---------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------

def chunk_tokens_for(num_tokens: int) -> int:
    """Tokens per program in every token pass: a power of two, a function of L only.

    Rounded down, so that L / chunk stays at or above TARGET_CHUNKS (a rounded-up chunk
    would halve the grid at every power of two of L).
    """
    target = 1 << max(num_tokens // TARGET_CHUNKS, 1).bit_length() - 1
    return min(max(target, MIN_CHUNK_TOKENS), MAX_CHUNK_TOKENS)


def _vector_width(num_tokens: int, *tensors: torch.Tensor) -> int:
    """ALIGN of a launch: elements per 16 bytes when every token row of every tensor
    starts on a 16-byte boundary, 1 otherwise.

    Rows start at data_ptr + (b * stride_b + c * stride_c) * element size, so this holds
    when the base pointers are 16-byte aligned, both strides are multiples of the
    vector, and so is L (the tail's mask then changes only at whole vectors). A conv
    output qualifies whenever H * W is a multiple of 8 (bf16 / fp16) or 4 (fp32), e.g.
    every input padded to a multiple of 32 pixels at stride 4 or more. Either way there
    are two builds per kernel and config, never one per image size.
    """
    width = 16 // tensors[0].element_size()
    if num_tokens % width:
        return 1
    for tensor in tensors:
        if tensor.device.type != 'meta' and tensor.data_ptr() % 16:
            return 1
        if tensor.stride(0) % width or tensor.stride(1) % width:
            return 1
    return width


def _cdiv(a: int, b: int) -> int:
    # triton.cdiv and triton.next_power_of_2 are constexpr functions in triton 3.8,
    # several microseconds per call from host code.
    return -(-a // b)


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def tiling_class(dtype: torch.dtype, head_dim: int):
    """The PASS_TILING key of a launch: (dot precision, padded head dim)."""
    return ('fp32' if dtype == torch.float32 else 'half', 64 if head_dim <= 64 else 128)


def _pass_options(pass_name: str, tiling: tuple, aligned: bool, capability) -> dict:
    """BLOCK_L, num_warps and num_stages of a token pass on a GPU of compute
    ``capability``; see PASS_TILING, ARCH_TILING and ALIGNED_ROWS_TILING."""
    if KERNELS_INTERPRETED:
        block, warps, stages = INTERPRETER_TILING
    else:
        option = PASS_TILING[tiling][pass_name]
        option = ARCH_TILING.get(capability, {}).get(tiling, {}).get(pass_name, option)
        if aligned:
            option = ALIGNED_ROWS_TILING.get(tiling, {}).get(pass_name, option)
        block, warps, stages = option
    return dict(BLOCK_L=block, num_warps=warps, num_stages=stages)


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


def _device_capability(qkv: torch.Tensor):
    """(major, minor) compute capability of qkv's GPU; None for the interpreter."""
    if KERNELS_INTERPRETED or not qkv.is_cuda:
        return None
    return torch.cuda.get_device_capability(qkv.device)


def _dot_config(dtype: torch.dtype, capability):
    """(DOT_MODE, FP32_PRECISION) of the kernels for ``dtype`` on a GPU of compute
    ``capability`` (None: the interpreter, see _device_capability).

    DOT_MODE 0: fp32 operands. On tensor cores as 3xTF32 (close to fp32) while torch's
    fp32 matmul precision is 'highest', as TF32 when it allows less; plain fp32 FMA
    only before Ampere (it spills heavily at these tile sizes).
    DOT_MODE 1: operands in the input dtype, fp32 accumulation (bf16 / fp16 on a GPU).
    DOT_MODE 2: the interpreter's stand-in for 1: operands rounded to the input dtype and
    multiplied in fp32, since it computes a bf16 dot on raw bits.
    """
    if dtype == torch.float32:
        mode = 0
    else:
        mode = 2 if KERNELS_INTERPRETED else 1
    if capability is None or capability < (8, 0):
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
        self.tiling = tiling_class(qkv.dtype, head_dim)
        if self.tiling not in PASS_TILING and not KERNELS_INTERPRETED:
            raise ValueError(f'the fused RALA kernel does not run fp32 at head dim {head_dim}: '
                             'above 64 its fp32 dot operands need more shared memory than a '
                             'GPU has. Use bf16 / fp16 (e.g. torch.autocast) or impl="torch".')
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
        self.pairs_pad = max(16, _next_power_of_2(head_dim // 2))
        self.dim_pad = max(16, _next_power_of_2(head_dim))
        self.chunk_tokens = chunk_tokens_for(self.num_tokens)
        self.num_chunks = _cdiv(self.num_tokens, self.chunk_tokens)
        self.flat_state = head_dim * head_dim + head_dim
        self.scale = head_dim ** -0.5
        self.capability = _device_capability(qkv)
        self.dot_mode, self.fp32_precision = _dot_config(qkv.dtype, self.capability)
        self.grid = (self.num_chunks, self.batch_heads)
        self.combine_grid = (self.batch_heads, _cdiv(self.flat_state, COMBINE_BLOCK_FLAT))

    def constants(self, pass_name, align, with_dot=True, with_dim_tiles=True):
        """constexprs and launch options of token pass ``pass_name`` ('F1' ... 'B3') at
        vector width ``align``; DIM_PAD only for passes with (d x tokens) tiles."""
        consts = dict(NUM_HEADS=self.num_heads, HEAD_DIM=self.head_dim,
                      PAIRS_PAD=self.pairs_pad, ALIGN=align,
                      **_pass_options(pass_name, self.tiling, align > 1, self.capability))
        if with_dot:
            consts.update(DOT_MODE=self.dot_mode, FP32_PRECISION=self.fp32_precision)
        if with_dot and with_dim_tiles:
            consts.update(DIM_PAD=self.dim_pad)
        return consts


# Geometries by (shape, strides, dtype, device, heads, fp32 matmul precision); cleared
# when full. A detector meets a few hundred image sizes at most.
_GEOMETRIES: dict = {}
GEOMETRY_CACHE_SIZE = 1024


def geometry_of(qkv: torch.Tensor, num_heads: int) -> _Geometry:
    """The _Geometry of a launch on ``qkv``, built once per shape, layout and device.

    Building one costs tens of microseconds of Python, a noticeable share of a call
    whose kernels take a few hundred. The fp32 matmul precision is part of the key
    because _dot_config reads it.
    """
    key = (tuple(qkv.shape), qkv.stride(), qkv.dtype, qkv.device, num_heads,
           torch.get_float32_matmul_precision())
    geometry = _GEOMETRIES.get(key)
    if geometry is None:
        if len(_GEOMETRIES) >= GEOMETRY_CACHE_SIZE:
            _GEOMETRIES.clear()
        geometry = _GEOMETRIES[key] = _Geometry(qkv, num_heads)
    return geometry


# The last-program tickets of F1 and B2, by (device, stream): int32 counters that every
# launch leaves at zero, so a call neither allocates nor fills them. Two streams running
# the op at once must not share counters; launches on one stream run in order.
_TICKETS: dict = {}


def _tickets(device: torch.device, count: int) -> torch.Tensor:
    """At least ``count`` zero tickets for launches on the current stream of ``device``."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == 'cuda' else 0
    tickets = _TICKETS.get((device, stream))
    if tickets is None or tickets.numel() < count:
        # The replaced set is freed in this stream's order, after the launches using it.
        tickets = _TICKETS[device, stream] = torch.zeros(count, device=device,
                                                         dtype=torch.int32)
    return tickets


def _rala_forward(qkv: torch.Tensor, geo: _Geometry):
    """Returns O (B, C, H, W) and the saved (qm, lse, state = [S_even | S_odd | km])."""
    device = qkv.device
    f32 = dict(device=device, dtype=torch.float32)
    rope_table = _packed_rope_table(geo.height, geo.width, geo.head_dim, device)
    bh, nc, d = geo.batch_heads, geo.num_chunks, geo.head_dim
    query_sums = torch.empty(bh, nc, d, **f32)
    query_mean = torch.empty(bh, d, **f32)
    tickets = _tickets(device, bh)
    state_partials = torch.empty(bh, nc, geo.flat_state, **f32)
    softmax_partials = torch.empty(bh, nc, 2, **f32)
    state = torch.empty(bh, geo.flat_state, **f32)
    log_sum_exp = torch.empty(bh, **f32)
    out = torch.empty(geo.batch, geo.channels, geo.height, geo.width,
                      device=device, dtype=qkv.dtype)
    # Strides go to the kernels in units of ALIGN elements (see _strides).
    align = _vector_width(geo.num_tokens, qkv, out)
    sqb, sqc = qkv.stride(0) // align, qkv.stride(1) // align

    _rala_fwd_query_sum_kernel[geo.grid](
        qkv, sqb, sqc, query_sums, query_mean, tickets,
        geo.num_tokens, geo.chunk_tokens, nc,
        CHUNK_BLOCK=COMBINE_CHUNK_BLOCK, **geo.constants('F1', align, with_dot=False))
    _rala_fwd_state_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, query_mean, state_partials, softmax_partials,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.scale,
        **geo.constants('F2', align))
    _rala_combine_chunks_kernel[geo.combine_grid](
        state_partials, softmax_partials, state, log_sum_exp, nc,
        FLAT=geo.flat_state, BLOCK_FLAT=COMBINE_BLOCK_FLAT, CHUNK_BLOCK=COMBINE_CHUNK_BLOCK,
        SOFTMAX_WEIGHTS=True, num_warps=4)
    _rala_fwd_output_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, out, out.stride(0) // align, out.stride(1) // align,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc,
        **geo.constants('F3', align))
    return out, query_mean, log_sum_exp, state


def _rala_backward(qkv, grad_out, query_mean, log_sum_exp, state, geo: _Geometry,
                  grad_qkv: torch.Tensor | None = None):
    """One (B, 3C, H, W) gradient buffer: [dQ0 | dK0 | dV].

    ``grad_qkv``, when given, is written in place: any (B, 3C, H, W) view whose tokens
    are one contiguous run per channel, e.g. the first 3C channels of the gradient of
    the whole qkvo conv output.
    """
    device = qkv.device
    f32 = dict(device=device, dtype=torch.float32)
    rope_table = _packed_rope_table(geo.height, geo.width, geo.head_dim, device)
    bh, nc, d = geo.batch_heads, geo.num_chunks, geo.head_dim
    grad_state_partials = torch.empty(bh, nc, geo.flat_state, **f32)
    grad_state = torch.empty(bh, geo.flat_state, **f32)
    grad_qm_partials = torch.empty(bh, nc, d, **f32)
    grad_query_mean = torch.empty(bh, d, **f32)
    tickets = _tickets(device, bh)
    if grad_qkv is None:
        grad_qkv = torch.empty(qkv.shape, device=device, dtype=qkv.dtype)
    # Strides go to the kernels in units of ALIGN elements (see _strides).
    align = _vector_width(geo.num_tokens, qkv, grad_out, grad_qkv)
    sqb, sqc = qkv.stride(0) // align, qkv.stride(1) // align
    sgb, sgc = grad_out.stride(0) // align, grad_out.stride(1) // align
    sdb, sdc = grad_qkv.stride(0) // align, grad_qkv.stride(1) // align

    _rala_bwd_state_grad_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, grad_out, sgb, sgc, grad_state_partials,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc,
        **geo.constants('B1', align))
    # A plain sum: the softmax statistics and lse arguments are not read.
    _rala_combine_chunks_kernel[geo.combine_grid](
        grad_state_partials, grad_state_partials, grad_state, grad_state, nc,
        FLAT=geo.flat_state, BLOCK_FLAT=COMBINE_BLOCK_FLAT, CHUNK_BLOCK=COMBINE_CHUNK_BLOCK,
        SOFTMAX_WEIGHTS=False, num_warps=4)
    _rala_bwd_key_value_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, query_mean, log_sum_exp, state, grad_state,
        grad_qkv, sdb, sdc, grad_qm_partials, grad_query_mean, tickets,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc, geo.scale,
        CHUNK_BLOCK=COMBINE_CHUNK_BLOCK, **geo.constants('B2', align))
    _rala_bwd_query_kernel[geo.grid](
        qkv, sqb, sqc, rope_table, state, grad_out, sgb, sgc, grad_query_mean,
        grad_qkv, sdb, sdc,
        geo.num_tokens, geo.height, geo.width, geo.chunk_tokens, nc,
        **geo.constants('B3', align, with_dim_tiles=False))
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
        geo = geometry_of(qkv, num_heads)
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
