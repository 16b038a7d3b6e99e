"""Triton selective scan, forward and backward, written for vision shapes.

One program owns BLOCK_D channels of one (batch, group) and walks the sequence in chunks of BLOCK_L tokens,
scanning each chunk with ``tl.associative_scan`` over (decay, input) pairs in float32 and carrying the state
between chunks. Compared with mamba_ssm's CUDA kernel (one block per channel, a loop over states) this
loads each B/C row once for BLOCK_D channels and reduces dB/dC over those channels before one store.

N = 1 sequences up to 256 tokens whose rows are contiguous run a forward over the flattened (rows x L) stream instead
(``rows_forward``): 8 consecutive tokens per thread whatever L is, the decay zeroed at each row's start.
N >= 8 sequences (Vim, vanilla VMamba, EfficientVMamba) run a token-by-token forward instead, unless they are long
with few rows: each program holds its channels' N states and steps through the tokens, tile by tile, loading the
next tile while it computes one (``steps_forward``, ``steps_tile``), its B / C rows four tokens per load on the GPU.
Every forward saves the state at the start of every ``state_chunk`` tokens (batch, D, n_chunks, N_PAD; the chunked
forward's own chunks may be shorter and divide it) so the backward can walk those chunks in reverse, recompute each
chunk's states from its start state, and run the adjoint scan ``g_t = v_t + a_{t+1} g_{t+1}`` with a carry. dA, dD
and the delta-bias gradient are written as per-batch partials and summed afterwards (``sum_parts``, deterministic);
so are dB and dC where a group has many programs, else they are added atomically into one float32 row
(``partial_batch``). On short N > 1 sequences the backward's cross-lane steps (the state and adjoint scans, the dB /
dC channel sums) are inline PTX, 8 channels per warp and up to 4 warps per program (``lane_ptx``).

Padded positions (tail of the last chunk, channels past the group) are forced to the identity element
(a=1, b=0) *after* bias and softplus (the failure mode of mamba_ssm issue #368).
"""
import functools
import inspect
import os
import re
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._dispatch import announce
from ._launch import CachedLauncher
from ._grid import cdiv, dense, next_pow2

__all__ = ['state_chunk', 'launch_config', 'steps_forward', 'steps_register_cap', 'lane_ptx', 'backward_register_cap',
           'selective_scan_fwd', 'selective_scan_bwd']

# The kernels tune their loops with tl.range(loop_unroll_factor=, disable_licm=), which Triton 3.5 introduced: an
# older Triton fails here, and selective_scan reports the PyTorch backend instead (with this message).
if 'disable_licm' not in inspect.signature(tl.range.__init__).parameters:
    raise ImportError(f'the Triton selective scan needs Triton >= 3.5 (tl.range(disable_licm=...)), found '
                      f'{triton.__version__}; upgrade torch / triton, or pass backend="torch"')

_LOG2E = 1.4426950408889634
INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
# Where it pays, the softplus on the GPU takes its exp and log on the special-function unit (ex2 / lg2.approx, ~2^-22
# relative error; the precise log is a 12-instruction polynomial per element). H100, bf16, ms: the rows forward at
# VMamba-T stage 4 0.215 -> 0.173, the backward at stage 1 2.33-2.43 -> 2.17-2.22 and at vanilla VMamba-T stage 1
# 24.1 -> 23.4; the chunked forward was slower with it (vanilla 4.4 -> 5.6, stage 2 0.46 -> 0.51) and keeps the
# precise functions, as do the short N = 16 backward (see selective_scan_bwd), the interpreter (no fast math) and
# ROCm (its libdevice has no fast_log2f).
_FAST_MATH = tl.constexpr(not INTERPRET and torch.version.hip is None)
# Memory for the backward's per-program dB / dC rows (see partial_batch); VMamba-T stage 1 at batch 128 needs
# 616 MB, larger shapes take the batch in several launches.
PARTIAL_BYTES = 2 ** 30
PARTIAL_MIN_PROGRAMS = 8
# Programs the N > 1 backward (and long forward) keep in flight where narrower programs can (launch_config).
MIN_PROGRAMS = 6144
# N >= STEPS_MIN_STATES sequences run the token-by-token forward, those of STEPS_LONG_LENGTH tokens or more only with
# at least STEPS_LONG_MIN_PROGRAMS 16-channel programs (steps_forward).
STEPS_MIN_STATES = 8
STEPS_LONG_LENGTH = 1024
STEPS_LONG_MIN_PROGRAMS = 1024
# Token tiles of the token-by-token forward (``steps_tile``).
STEPS_TILE_SHORT = 16
STEPS_TILE_LONG = 8
# The token-by-token forward loads each state's B / C rows four tokens at a time in inline PTX (``_load_4_tokens``),
# where PTX runs (not the interpreter, not ROCm), under a register cap where its programs outnumber what fits on the
# GPU uncapped (``steps_register_cap``).
STEPS_VECTOR_ROWS = True
STEPS_MAX_REGISTERS = 168
STEPS_UNCAPPED_PROGRAMS_PER_SM = 8
# The N > 1 backward's cross-lane steps (state and adjoint scans, dB / dC channel sums) in inline PTX where its
# tiles allow (lane_ptx).
LANE_PTX = True
# N = 1 rows up to this length run the rows forward (``rows_forward``); longer ones scan 2-D chunks as fast.
ROWS_MAX_LENGTH = 256
ROWS_PER_PROGRAM = 32  # 64 at L <= 64 (rows_forward)
ROWS_BLOCK = 256
ROWS_VEC = 8


@triton.jit
def _combine(a_l, b_l, a_r, b_r):
    # Earlier element (l) then later (r): h -> a_r * (a_l * h + b_l) + b_r.
    return a_l * a_r, a_r * b_l + b_r


@triton.jit
def _softplus(x, FAST: tl.constexpr):
    # Same threshold as F.softplus and mamba_ssm: log(1 + e^x) = ln 2 * log2(1 + 2^(x log2 e)).
    if FAST:
        y = 0.6931471805599453 * libdevice.fast_log2f(1.0 + tl.exp2(x * 1.4426950408889634))
    else:
        y = tl.log(1.0 + tl.exp(x))
    return tl.where(x <= 20.0, y, x)


@triton.jit
def _load_dt(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Raw delta (+ bias) and the step size dt, with dt = 0 (identity step) wherever mask is off."""
    return _step_size(tl.load(delta_ptr + offs, mask=mask, other=0.0), mask, bias, HAS_BIAS, SOFTPLUS, False)


@triton.jit
def _step_size(loaded, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
    """_load_dt on an already loaded delta tile."""
    raw = loaded.to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw, FAST)
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _add_partial(ptr, value, mask, ATOMIC: tl.constexpr):
    if ATOMIC:
        tl.atomic_add(ptr, value, mask=mask)
    else:
        tl.store(ptr, value, mask=mask)


@triton.jit
def _program_channels(pid, blocks_per_group, dim_per_group, BLOCK_D: tl.constexpr):
    """(batch, group, channel indices, channel mask) of program (pid, batch): BLOCK_D channels of one group."""
    b = tl.program_id(1).to(tl.int64)
    g = pid // blocks_per_group
    d_in_group = (pid % blocks_per_group) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d_in_group < dim_per_group
    return b, g, (g * dim_per_group + d_in_group).to(tl.int64), d_mask


@triton.jit
def _load_A(ptr, mask, A_FROM_LOG: tl.constexpr):
    """A (float32) at ptr; with A_FROM_LOG the memory holds Mamba's A_log and A = -exp(A_log) (0 where masked)."""
    a = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    if A_FROM_LOG:
        a = tl.where(mask, -tl.exp(a), 0.0)
    return a


@triton.jit
def _channel_params(bias_ptr, D_ptr, d, d_mask, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
    """The delta bias and the D skip of channels d, float32 (zeros where absent)."""
    bias = tl.zeros(d.shape, tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    Dv = tl.zeros(d.shape, tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    return bias, Dv


@triton.jit
def _selective_scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, last_ptr, states_ptr,
        L, dim, dim_per_group, blocks_per_group,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n, s_z_b, s_z_d,
        s_o_b, s_o_d, s_o_n,
        N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STATES_OUT: tl.constexpr, SAVE_STATES: tl.constexpr, STATE_UNROLL: tl.constexpr, A_FROM_LOG: tl.constexpr,
        STORE_LAST: tl.constexpr, SAVE_EVERY: tl.constexpr,
):
    """The chunked forward: BLOCK_L tokens per chunk, the state saved every SAVE_EVERY chunks (one saved state per
    ``state_chunk`` tokens, the backward's chunk)."""
    pid = tl.program_id(0)
    b, g, d, d_mask = _program_channels(pid, blocks_per_group, dim_per_group, BLOCK_D)
    nn = tl.arange(0, N_PAD)
    j = tl.arange(0, BLOCK_L)

    bias, Dv = _channel_params(bias_ptr, D_ptr, d, d_mask, HAS_BIAS, HAS_D)

    u_base = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g
    C_base = C_ptr + b * s_C_b + g * s_C_g
    z_base = z_ptr + b * s_z_b + d[:, None] * s_z_d
    o_base = out_ptr + b * s_o_b + d[:, None] * s_o_d
    n_chunks = tl.cdiv(L, BLOCK_L)
    st_base = states_ptr + ((b * dim + d[:, None]) * tl.cdiv(n_chunks, SAVE_EVERY)) * N_PAD + nn[None, :]

    h = tl.zeros([BLOCK_D, N_PAD], tl.float32)  # state entering the chunk, one column per state n
    for c in range(0, n_chunks):
        t = c * BLOCK_L + j
        t_mask = t < L
        m2 = d_mask[:, None] & t_mask[None, :]
        if SAVE_STATES and c % SAVE_EVERY == 0:
            tl.store(st_base + (c // SAVE_EVERY) * N_PAD, h, mask=d_mask[:, None])
        uu = tl.load(u_base + t[None, :], mask=m2, other=0.0).to(tl.float32)
        _, dt = _load_dt(dt_base, t[None, :], m2, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * uu
        y = Dv[:, None] * uu
        # The states are independent given dt: loop over them (like the CUDA kernel) on 2-D tiles.
        for n in tl.range(0, N, loop_unroll_factor=STATE_UNROLL):
            A2n = _load_A(A_ptr + d * N + n, d_mask, A_FROM_LOG) * 1.4426950408889634
            Bn = tl.load(B_base + n * s_B_n + t, mask=t_mask, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A2n[:, None])
            pa, pb = tl.associative_scan((a, dtu * Bn[None, :]), axis=1, combine_fn=_combine)
            h_n = tl.sum(tl.where(nn[None, :] == n, h, 0.0), axis=1)
            hh = pb + pa * h_n[:, None]
            if STATES_OUT:
                tl.store(o_base + n * s_o_n + t[None, :], hh.to(out_ptr.dtype.element_ty), mask=m2)
            else:
                Cn = tl.load(C_base + n * s_C_n + t, mask=t_mask, other=0.0).to(tl.float32)
                y += hh * Cn[None, :]
            # Padded tail tokens are identity steps, so the last column is the state after the chunk.
            h_last = tl.sum(tl.where(j[None, :] == BLOCK_L - 1, hh, 0.0), axis=1)
            h = tl.where(nn[None, :] == n, h_last[:, None], h)
        if not STATES_OUT:
            if HAS_Z:
                zz = tl.load(z_base + t[None, :], mask=m2, other=0.0).to(tl.float32)
                y = y * zz * tl.sigmoid(zz)
            tl.store(o_base + t[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
    if STORE_LAST:
        tl.store(last_ptr + (b * dim + d[:, None]) * N + nn[None, :], h, mask=d_mask[:, None] & (nn[None, :] < N))


_selective_scan_fwd_launch = CachedLauncher(_selective_scan_fwd_kernel)


@triton.jit
def _load_4_tokens(ptr, VEC: tl.constexpr, left, mask, MASKED: tl.constexpr):
    """Four consecutive tokens at ptr (one pointer per element), float32, zero past ``left`` tokens (the tokens left
    in the sequence) or where mask is off.
    VEC: one 8-byte (16-byte for float32) load per element in inline PTX, from rows the caller zero-padded to whole
    tiles and aligned (``vector_rows``), masked only where MASKED; else four masked loads."""
    if VEC:
        x0, x1, x2, x3 = _load_4_tokens_ptx(ptr)
        if MASKED:
            x0, x1, x2, x3 = (tl.where(mask, x0, 0.0), tl.where(mask, x1, 0.0), tl.where(mask, x2, 0.0),
                              tl.where(mask, x3, 0.0))
        return x0, x1, x2, x3
    return (tl.load(ptr, mask=mask & (0 < left), other=0.0).to(tl.float32),
            tl.load(ptr + 1, mask=mask & (1 < left), other=0.0).to(tl.float32),
            tl.load(ptr + 2, mask=mask & (2 < left), other=0.0).to(tl.float32),
            tl.load(ptr + 3, mask=mask & (3 < left), other=0.0).to(tl.float32))


@triton.jit
def _load_4_tokens_ptx(ptr):
    """_load_4_tokens' vector load: the raw words in inline PTX (elementwise, so whatever layout Triton picks),
    unpacked to float32 here."""
    if ptr.dtype.element_ty == tl.float32:
        w0, w1, w2, w3 = tl.inline_asm_elementwise(
            'ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4];', '=r,=r,=r,=r,l', [ptr],
            dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
        return (w0.to(tl.float32, bitcast=True), w1.to(tl.float32, bitcast=True), w2.to(tl.float32, bitcast=True),
                w3.to(tl.float32, bitcast=True))
    w0, w1 = tl.inline_asm_elementwise('ld.global.nc.v2.b32 {$0, $1}, [$2];', '=r,=r,l', [ptr],
                                       dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
    if ptr.dtype.element_ty == tl.bfloat16:  # a bfloat16 is the high half of its float32
        return ((w0 << 16).to(tl.float32, bitcast=True), (w0 & -65536).to(tl.float32, bitcast=True),
                (w1 << 16).to(tl.float32, bitcast=True), (w1 & -65536).to(tl.float32, bitcast=True))
    return (w0.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
            (w0 >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
            w1.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
            (w1 >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32))


@triton.jit
def _step_token(h, k: tl.constexpr, jj, dt, dtu, y, A2, Bk, Ck):
    """Token k (a constant: its pick out of the tile's registers folds to a select and a shuffle) of the tile: the
    state update and the output's column k."""
    pick = jj[None, :] == k
    dt_k = tl.sum(tl.where(pick, dt, 0.0), axis=1)
    dtu_k = tl.sum(tl.where(pick, dtu, 0.0), axis=1)
    h = tl.exp2(dt_k[:, None] * A2) * h + dtu_k[:, None] * Bk[None, :]
    y = tl.where(pick, tl.sum(h * Ck[None, :], axis=1)[:, None], y)
    return h, y


@triton.jit
def _steps_tile(h, t0, jj, L, d_mask, n_mask, A2, bias, Dv, u_raw, dt_raw, z_row, o_row, B_col, C_col,
                TILE: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                VEC_BC: tl.constexpr, MASK_N: tl.constexpr):
    """TILE tokens from t0 of the token-by-token forward, from the tile's u / delta already loaded as [BLOCK_D,
    TILE] tiles (the softplus and the gate once per element); each token's channel vectors are picked out of them,
    its B / C rows come four tokens per load, the output is stored once per tile. Returns the state after the tile
    (tokens past L are identity steps)."""
    t = t0 + jj
    m2 = d_mask[:, None] & (t < L)[None, :]
    if HAS_Z:  # loaded first: its latency hides behind the tokens
        zz = tl.load(z_row[:, None] + t[None, :], mask=m2, other=0.0)
    uu = u_raw.to(tl.float32)
    _, dt = _step_size(dt_raw, m2, bias, HAS_BIAS, SOFTPLUS, _FAST_MATH)
    dtu = dt * uu
    y = tl.zeros([uu.shape[0], TILE], tl.float32)
    for g in tl.static_range(TILE // 4):
        tg = t0 + 4 * g
        B0, B1, B2, B3 = _load_4_tokens(B_col + tg, VEC_BC, L - tg, n_mask, MASK_N)
        C0, C1, C2, C3 = _load_4_tokens(C_col + tg, VEC_BC, L - tg, n_mask, MASK_N)
        h, y = _step_token(h, 4 * g, jj, dt, dtu, y, A2, B0, C0)
        h, y = _step_token(h, 4 * g + 1, jj, dt, dtu, y, A2, B1, C1)
        h, y = _step_token(h, 4 * g + 2, jj, dt, dtu, y, A2, B2, C2)
        h, y = _step_token(h, 4 * g + 3, jj, dt, dtu, y, A2, B3, C3)
    for k in tl.static_range(TILE // 4 * 4, TILE):  # tiles under 4 tokens (the interpreter's short sequences)
        Bk = tl.load(B_col + t0 + k, mask=n_mask & (t0 + k < L), other=0.0).to(tl.float32)
        Ck = tl.load(C_col + t0 + k, mask=n_mask & (t0 + k < L), other=0.0).to(tl.float32)
        h, y = _step_token(h, k, jj, dt, dtu, y, A2, Bk, Ck)
    y += Dv[:, None] * uu
    if HAS_Z:
        zz = zz.to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    tl.store(o_row[:, None] + t[None, :], y.to(o_row.dtype.element_ty), mask=m2)
    return h


@triton.jit
def _selective_scan_fwd_steps_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, last_ptr, states_ptr,
        L, dim, dim_per_group, blocks_per_group,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n, s_z_b, s_z_d,
        s_o_b, s_o_d,
        N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, TILE: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        SAVE_STATES: tl.constexpr, A_FROM_LOG: tl.constexpr, STORE_LAST: tl.constexpr, VEC_BC: tl.constexpr,
):
    """The forward token by token: each program holds the [BLOCK_D, N] states of its channels and steps through
    the sequence (no scan, no per-state loop) in TILE-token tiles (``_steps_tile``), loading the next tile's u and
    delta while it computes one; it saves the states at every BLOCK_L-token chunk start like the chunked forward,
    for the backward."""
    pid = tl.program_id(0)
    b, g, d, d_mask = _program_channels(pid, blocks_per_group, dim_per_group, BLOCK_D)
    nn = tl.arange(0, N_PAD)
    n_mask = nn < N
    jj = tl.arange(0, TILE)

    bias, Dv = _channel_params(bias_ptr, D_ptr, d, d_mask, HAS_BIAS, HAS_D)
    dn_mask = d_mask[:, None] & n_mask[None, :]
    # Padded states have A = 0 and B = 0: they stay at zero.
    A2 = _load_A(A_ptr + d[:, None] * N + nn[None, :], dn_mask, A_FROM_LOG) * 1.4426950408889634

    u_tile = (u_ptr + b * s_u_b + d * s_u_d)[:, None] + jj[None, :]
    dt_tile = (delta_ptr + b * s_dt_b + d * s_dt_d)[:, None] + jj[None, :]
    z_row = z_ptr + b * s_z_b + d * s_z_d
    o_row = out_ptr + b * s_o_b + d * s_o_d
    # Padded states (N < N_PAD) point at row N - 1 and load zeros (masked in _load_4_tokens).
    B_col = B_ptr + b * s_B_b + g * s_B_g + tl.minimum(nn, N - 1) * s_B_n
    C_col = C_ptr + b * s_C_b + g * s_C_g + tl.minimum(nn, N - 1) * s_C_n
    n_chunks = tl.cdiv(L, BLOCK_L)
    st_base = states_ptr + ((b * dim + d[:, None]) * n_chunks) * N_PAD + nn[None, :]

    m2 = d_mask[:, None] & (jj < L)[None, :]
    u_raw = tl.load(u_tile, mask=m2, other=0.0)
    dt_raw = tl.load(dt_tile, mask=m2, other=0.0)
    h = tl.zeros([BLOCK_D, N_PAD], tl.float32)
    for i in range(0, tl.cdiv(L, TILE)):
        t0 = i * TILE
        if SAVE_STATES and i % (BLOCK_L // TILE) == 0:
            tl.store(st_base + (i // (BLOCK_L // TILE)) * N_PAD, h, mask=d_mask[:, None])
        # The next tile's loads go out before this tile's tokens (without these loads at all the kernel took 0.106
        # of 0.168 ms at Vim-T: their latency, exposed at each tile's start, was its largest cost).
        m_next = d_mask[:, None] & (t0 + TILE + jj < L)[None, :]
        u_next = tl.load(u_tile + t0 + TILE, mask=m_next, other=0.0)
        dt_next = tl.load(dt_tile + t0 + TILE, mask=m_next, other=0.0)
        h = _steps_tile(h, t0, jj, L, d_mask, n_mask, A2, bias, Dv, u_raw, dt_raw, z_row, o_row, B_col, C_col,
                        TILE, HAS_Z, HAS_BIAS, SOFTPLUS, VEC_BC, N < N_PAD)
        u_raw, dt_raw = u_next, dt_next
    if STORE_LAST:
        tl.store(last_ptr + (b * dim + d[:, None]) * N + nn[None, :], h, mask=dn_mask)


_selective_scan_fwd_steps_launch = CachedLauncher(_selective_scan_fwd_steps_kernel)


@triton.jit
def _rows_chunk_loads(c, gi, k, span, L, inv_L, rows_per_program, d0, base, u_ptr, delta_ptr, A_ptr, B_row, C_row,
                      D_ptr, bias_ptr, BLOCK: tl.constexpr, VEC: tl.constexpr, HAS_D: tl.constexpr,
                      HAS_BIAS: tl.constexpr, A_FROM_LOG: tl.constexpr, STATES_OUT: tl.constexpr):
    """Chunk c of a rows program: each [VEC] group's tokens (offset in the program's span, mask, row of the group's
    first token, position in its row, whether past that row's end) and the tiles as stored. A group holds at most
    one row boundary (L >= VEC), so the channel parameters come once per group for the two rows it may touch."""
    g_start = c * BLOCK + gi * VEC
    offs = g_start + k
    mask = offs < span
    # Row of the group's first token: the float quotient is exact for spans under 2**20 tokens (rows_forward's are
    # at most 64 x 256).
    row_g = ((g_start.to(tl.float32) + 0.5) * inv_L).to(tl.int32)
    t = g_start - row_g * L + k
    wrap = t >= L
    t = tl.where(wrap, t - L, t)
    m0 = g_start < span
    m1 = m0 & (row_g + 1 < rows_per_program)
    d = d0 + row_g
    u_raw = tl.load(u_ptr + base + offs, mask=mask, other=0.0)
    delta_raw = tl.load(delta_ptr + base + offs, mask=mask, other=0.0)
    bias0 = tl.zeros(d.shape, tl.float32)
    bias1 = tl.zeros(d.shape, tl.float32)
    if HAS_BIAS:
        bias0 = tl.load(bias_ptr + d, mask=m0, other=0.0).to(tl.float32)
        bias1 = tl.load(bias_ptr + d + 1, mask=m1, other=0.0).to(tl.float32)
    A0 = _load_A(A_ptr + d, m0, A_FROM_LOG)
    A1 = _load_A(A_ptr + d + 1, m1, A_FROM_LOG)
    D0 = tl.zeros(d.shape, tl.float32)
    D1 = tl.zeros(d.shape, tl.float32)
    if HAS_D:
        D0 = tl.load(D_ptr + d, mask=m0, other=0.0).to(tl.float32)
        D1 = tl.load(D_ptr + d + 1, mask=m1, other=0.0).to(tl.float32)
    B_raw = tl.load(B_row + t, mask=mask, other=0.0)
    C_raw = tl.zeros_like(B_raw)
    if not STATES_OUT:
        C_raw = tl.load(C_row + t, mask=mask, other=0.0)
    return offs, mask, t, wrap, u_raw, delta_raw, bias0, bias1, A0, A1, D0, D1, B_raw, C_raw


@triton.jit
def _selective_scan_fwd_rows_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, last_ptr, states_ptr,
        L, dim, dim_per_group, rows_per_program, span, n_states, inv_L,
        s_B_b, s_B_g, s_C_b, s_C_g,
        BLOCK: tl.constexpr, VEC: tl.constexpr, STATE_CHUNK: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        SAVE_STATES: tl.constexpr, A_FROM_LOG: tl.constexpr, STORE_LAST: tl.constexpr, STATES_OUT: tl.constexpr,
):
    """The N = 1 forward of short rows (with STATES_OUT, the hidden states (batch, D, 1, L) instead of the output): u,
    delta, z and out are contiguous (batch, D, L), so a program's ``rows_per_program`` channels (all of one batch
    element and group: they share the B / C rows) are one contiguous span, walked in 1-D chunks of BLOCK tokens laid out
    as [BLOCK // VEC, VEC] groups, each group's VEC tokens inside one thread (16-byte loads wherever the span is
    aligned, whatever L is). The scan runs inside each thread over its group, then across lanes over the group totals;
    the decay is zero at each row's first token, so rows never leak into each other. Each group writes at most one chunk
    state, one row-start zero and one last state."""
    GROUPS: tl.constexpr = BLOCK // VEC
    pid = tl.program_id(0)
    row0 = pid * rows_per_program
    b = row0 // dim
    d0 = row0 - b * dim
    g = d0 // dim_per_group
    base = pid.to(tl.int64) * span
    gi = tl.arange(0, GROUPS)[:, None]
    k = tl.arange(0, VEC)[None, :]
    gv = tl.arange(0, GROUPS)
    B_row = B_ptr + b.to(tl.int64) * s_B_b + g * s_B_g
    C_row = C_ptr + b.to(tl.int64) * s_C_b + g * s_C_g
    h = tl.zeros([GROUPS], tl.float32)  # the state entering the chunk, the same in every lane
    n_chunks = tl.cdiv(span, BLOCK)
    # The next chunk's loads are issued before this chunk's scan (s3 forward 0.43 -> 0.33 ms).
    nxt = _rows_chunk_loads(0, gi, k, span, L, inv_L, rows_per_program, d0, base, u_ptr, delta_ptr, A_ptr, B_row,
                            C_row, D_ptr, bias_ptr, BLOCK, VEC, HAS_D, HAS_BIAS, A_FROM_LOG, STATES_OUT)
    for c in range(0, n_chunks):
        offs, mask, t, wrap, u_raw, delta_raw, bias0, bias1, A0, A1, D0, D1, B_raw, C_raw = nxt
        nxt = _rows_chunk_loads(tl.minimum(c + 1, n_chunks - 1), gi, k, span, L, inv_L, rows_per_program, d0, base,
                                u_ptr, delta_ptr, A_ptr, B_row, C_row, D_ptr, bias_ptr, BLOCK, VEC, HAS_D, HAS_BIAS,
                                A_FROM_LOG, STATES_OUT)
        uu = u_raw.to(tl.float32)
        dt = delta_raw.to(tl.float32) + tl.where(wrap, bias1, bias0)
        if SOFTPLUS:
            dt = _softplus(dt, _FAST_MATH)
        A2 = tl.where(wrap, A1 * 1.4426950408889634, A0 * 1.4426950408889634)
        a = tl.where(t == 0, 0.0, tl.exp2(dt * A2))
        pa, pb = tl.associative_scan((a, dt * uu * B_raw.to(tl.float32)), axis=1, combine_fn=_combine)
        # Group totals: the last column, picked out at compile time (x + -0.0 == x folds away).
        ta = tl.sum(tl.where(k == VEC - 1, pa, -0.0), axis=1)
        tb = tl.sum(tl.where(k == VEC - 1, pb, -0.0), axis=1)
        sa, sb = tl.associative_scan((ta, tb), axis=0, combine_fn=_combine)
        h_end = sb + sa * h
        h_start = tl.where(gv == 0, h, tl.gather(h_end, tl.maximum(gv - 1, 0), axis=0))
        hh = pb + pa * h_start[:, None]
        h = tl.gather(h_end, tl.full([GROUPS], GROUPS - 1, tl.int32), axis=0)
        if STATES_OUT:
            tl.store(out_ptr + base + offs, hh.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            y = hh * C_raw.to(tl.float32) + tl.where(wrap, D1, D0) * uu
            if HAS_Z:
                zz = tl.load(z_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
                y = y * zz * tl.sigmoid(zz)
            tl.store(out_ptr + base + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        # The groups' rows again, as [GROUPS] vectors: taken out of the [GROUPS, VEC] tiles they took a cross-lane
        # reduction each (the sum's layout): 776 against 494 SASS instructions per chunk.
        g_first = c * BLOCK + gv * VEC
        g_row = ((g_first.to(tl.float32) + 0.5) * inv_L).to(tl.int32)
        t0 = g_first - g_row * L  # the group's first token's position, in row g_row
        g_mask = g_first < span
        if SAVE_STATES:
            # The state entering the row's state chunk s is the state after token s * STATE_CHUNK - 1 (VEC <=
            # STATE_CHUNK: at most one such token per group); the next row's first slot is zero.
            t_end = t0 | (STATE_CHUNK - 1)
            k_end = t_end - t0
            row_states = states_ptr + (row0 + g_row).to(tl.int64) * n_states
            tl.store(row_states + (t_end + 1) // STATE_CHUNK, tl.sum(tl.where(k == k_end[:, None], hh, 0.0), axis=1),
                     mask=g_mask & (k_end < VEC) & (t_end + 1 < L))
            starts_row = (t0 == 0) | (L - t0 < VEC)
            tl.store(row_states + tl.where(t0 == 0, 0, n_states), tl.zeros([GROUPS], tl.float32),
                     mask=g_mask & starts_row & (g_row + (t0 != 0).to(tl.int32) < rows_per_program))
        if STORE_LAST:
            k_last = L - 1 - t0
            tl.store(last_ptr + row0 + g_row, tl.sum(tl.where(k == k_last[:, None], hh, 0.0), axis=1),
                     mask=g_mask & (k_last < VEC))


_selective_scan_fwd_rows_launch = CachedLauncher(_selective_scan_fwd_rows_kernel)


@triton.jit
def _reduce_scatter_8ch(pb, pc):
    """Channel sums of two [8 channels, 16 tokens] tiles laid out 4 tokens per thread, 8 channel lanes x 4 token
    lanes (lane = 4 * channel + token // 4): a reduce-scatter over the channel lanes, 7 shuffles for the 8 sums a
    thread holds (a butterfly all-reduce takes 24). Lane (ch, g) ends with the sum of value ch of its 8 (dB at
    tokens 4g..4g+3, then dC), returned in every one of its 4 slots."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .pred q;
        .reg .b32 ln, bit;
        .reg .f32 k0, k1, k2, k3, s0, s1, s2, s3, r0, r1, r2, r3;
        mov.u32 ln, %laneid;
        and.b32 bit, ln, 16;
        setp.ne.u32 q, bit, 0;
        selp.f32 k0, $8, $4, q;
        selp.f32 k1, $9, $5, q;
        selp.f32 k2, $10, $6, q;
        selp.f32 k3, $11, $7, q;
        selp.f32 s0, $4, $8, q;
        selp.f32 s1, $5, $9, q;
        selp.f32 s2, $6, $10, q;
        selp.f32 s3, $7, $11, q;
        shfl.sync.bfly.b32 r0, s0, 16, 31, -1;
        shfl.sync.bfly.b32 r1, s1, 16, 31, -1;
        shfl.sync.bfly.b32 r2, s2, 16, 31, -1;
        shfl.sync.bfly.b32 r3, s3, 16, 31, -1;
        add.f32 k0, k0, r0;
        add.f32 k1, k1, r1;
        add.f32 k2, k2, r2;
        add.f32 k3, k3, r3;
        and.b32 bit, ln, 8;
        setp.ne.u32 q, bit, 0;
        selp.f32 s0, k0, k2, q;
        selp.f32 s1, k1, k3, q;
        selp.f32 k0, k2, k0, q;
        selp.f32 k1, k3, k1, q;
        shfl.sync.bfly.b32 r0, s0, 8, 31, -1;
        shfl.sync.bfly.b32 r1, s1, 8, 31, -1;
        add.f32 k0, k0, r0;
        add.f32 k1, k1, r1;
        and.b32 bit, ln, 4;
        setp.ne.u32 q, bit, 0;
        selp.f32 s0, k0, k1, q;
        selp.f32 k0, k1, k0, q;
        shfl.sync.bfly.b32 r0, s0, 4, 31, -1;
        add.f32 $0, k0, r0;
        mov.f32 $1, $0;
        mov.f32 $2, $0;
        mov.f32 $3, $0;
        }
        """,
        constraints='=f,=f,=f,=f,f,f,f,f,f,f,f,f',
        args=[pb, pc], dtype=tl.float32, is_pure=True, pack=4)


@triton.jit
def _scan_4lanes(a, b, h0):
    """The states h_t = a_t h_{t-1} + b_t of [8 channels, 16 tokens] tiles laid out as _reduce_scatter_8ch takes them,
    from the chunk-start state h0 (read in the channel's first token lane): each thread scans its 4 tokens, then the
    4 token lanes combine their totals with the start state folded into the first, 4 shuffles (tl.associative_scan
    takes 6, plus the fold)."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .pred first, q;
        .reg .b32 ln;
        .reg .f32 pa1, pa2, pa3, pb1, pb2, pb3, ta, tb, ra, rb, hin;
        mov.u32 ln, %laneid;
        and.b32 ln, ln, 3;
        setp.eq.u32 first, ln, 0;
        mul.f32 pa1, $5, $4;
        fma.rn.f32 pb1, $5, $8, $9;
        mul.f32 pa2, $6, pa1;
        fma.rn.f32 pb2, $6, pb1, $10;
        mul.f32 pa3, $7, pa2;
        fma.rn.f32 pb3, $7, pb2, $11;
        fma.rn.f32 tb, pa3, $12, pb3;
        selp.f32 tb, tb, pb3, first;
        selp.f32 ta, 0f00000000, pa3, first;
        shfl.sync.up.b32 ra, ta, 1, 0, -1;
        shfl.sync.up.b32 rb, tb, 1, 0, -1;
        @!first fma.rn.f32 tb, ta, rb, tb;
        @!first mul.f32 ta, ta, ra;
        shfl.sync.up.b32 rb, tb, 2, 0, -1;
        setp.gt.u32 q, ln, 1;
        @q fma.rn.f32 tb, ta, rb, tb;
        shfl.sync.up.b32 hin, tb, 1, 0, -1;
        selp.f32 hin, $12, hin, first;
        fma.rn.f32 $0, $4, hin, $8;
        fma.rn.f32 $1, pa1, hin, pb1;
        fma.rn.f32 $2, pa2, hin, pb2;
        fma.rn.f32 $3, pa3, hin, pb3;
        }
        """,
        constraints='=f,=f,=f,=f,f,f,f,f,f,f,f,f,f,f,f,f',
        args=[a, b, h0], dtype=tl.float32, is_pure=True, pack=4)


@triton.jit
def _adjoint_scan_4lanes(a_next, v, carry, n):
    """The adjoint g_t = v_t + a_{t+1} g_{t+1} of state n over [8 channels, 16 tokens] tiles laid out as
    _reduce_scatter_8ch takes them, in token order (no flips), from g at the later chunk's first token: column n of the
    [8 channels, 16] tile ``carry``. Each thread scans its 4 tokens backwards, then the token lanes combine totals
    with the carry folded into the last, 4 shuffles, plus one to fetch the carry and one to return the first token's
    g to every lane of its channel (the next chunk's carry, second result)."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .pred last, q, s1, s2, s3;
        .reg .b32 ln, tok, base, src, slot;
        .reg .f32 qa0, qa1, qa2, qb0, qb1, qb2, ta, tb, ra, rb, gin, c;
        mov.u32 ln, %laneid;
        and.b32 tok, ln, 3;
        and.b32 base, ln, 28;
        setp.eq.u32 last, tok, 3;
        mul.f32 qa2, $10, $11;
        fma.rn.f32 qb2, $10, $15, $14;
        mul.f32 qa1, $9, qa2;
        fma.rn.f32 qb1, $9, qb2, $13;
        mul.f32 qa0, $8, qa1;
        fma.rn.f32 qb0, $8, qb1, $12;
        and.b32 slot, $20, 3;
        setp.eq.u32 s1, slot, 1;
        setp.eq.u32 s2, slot, 2;
        setp.eq.u32 s3, slot, 3;
        mov.f32 c, $16;
        @s1 mov.f32 c, $17;
        @s2 mov.f32 c, $18;
        @s3 mov.f32 c, $19;
        shr.u32 src, $20, 2;
        or.b32 src, base, src;
        shfl.sync.idx.b32 c, c, src, 31, -1;
        fma.rn.f32 tb, qa0, c, qb0;
        selp.f32 tb, tb, qb0, last;
        selp.f32 ta, 0f00000000, qa0, last;
        shfl.sync.down.b32 ra, ta, 1, 31, -1;
        shfl.sync.down.b32 rb, tb, 1, 31, -1;
        @!last fma.rn.f32 tb, ta, rb, tb;
        @!last mul.f32 ta, ta, ra;
        shfl.sync.down.b32 rb, tb, 2, 31, -1;
        setp.lt.u32 q, tok, 2;
        @q fma.rn.f32 tb, ta, rb, tb;
        shfl.sync.down.b32 gin, tb, 1, 31, -1;
        selp.f32 gin, c, gin, last;
        fma.rn.f32 $0, qa0, gin, qb0;
        fma.rn.f32 $1, qa1, gin, qb1;
        fma.rn.f32 $2, qa2, gin, qb2;
        fma.rn.f32 $3, $11, gin, $15;
        shfl.sync.idx.b32 $4, $0, base, 31, -1;
        mov.f32 $5, $4;
        mov.f32 $6, $4;
        mov.f32 $7, $4;
        }
        """,
        constraints='=f,=f,=f,=f,=f,=f,=f,=f,f,f,f,f,f,f,f,f,f,f,f,f,r,r,r,r',
        args=[a_next, v, carry, n], dtype=(tl.float32, tl.float32), is_pure=True, pack=4)


@triton.jit
def _bwd_state_loads(n, A_row, d_mask, B_row, C_row, C_row_rev, t_mask, t_rev_mask, h0_row, s_B_n, s_C_n,
                     HAS_STATES: tl.constexpr, STATES_OUT: tl.constexpr, A_FROM_LOG: tl.constexpr,
                     BC_PADDED: tl.constexpr, C_REV: tl.constexpr):
    """State n's A column, B / C rows (with C_REV, C also at reversed positions; unmasked where the rows are padded
    to whole chunks) and chunk-start state."""
    An = _load_A(A_row + n, d_mask, A_FROM_LOG)
    if BC_PADDED:
        Bn = tl.load(B_row + n * s_B_n).to(tl.float32)
    else:
        Bn = tl.load(B_row + n * s_B_n, mask=t_mask, other=0.0).to(tl.float32)
    h0 = tl.zeros_like(An)
    if HAS_STATES:
        h0 = tl.load(h0_row + n, mask=d_mask, other=0.0)
    Cn = tl.zeros_like(Bn)
    Cn_rev = tl.zeros_like(Bn)
    if not STATES_OUT:
        if BC_PADDED:
            Cn = tl.load(C_row + n * s_C_n).to(tl.float32)
            if C_REV:
                Cn_rev = tl.load(C_row_rev + n * s_C_n).to(tl.float32)
        else:
            Cn = tl.load(C_row + n * s_C_n, mask=t_mask, other=0.0).to(tl.float32)
            if C_REV:
                Cn_rev = tl.load(C_row_rev + n * s_C_n, mask=t_rev_mask, other=0.0).to(tl.float32)
    return An, Bn, h0, Cn, Cn_rev


@triton.jit
def _bwd_chunk_loads(c, j, L, d_mask, u_base, dt_base, do_base, z_base, A_row, B_base, C_base, st_base, s_B_n, s_C_n,
                     BLOCK_L: tl.constexpr, N_PAD: tl.constexpr, HAS_Z: tl.constexpr, HAS_STATES: tl.constexpr,
                     STATES_OUT: tl.constexpr, A_FROM_LOG: tl.constexpr, BC_PADDED: tl.constexpr, C_REV: tl.constexpr):
    """Chunk c's input tiles as stored (u, delta, delta one token later, dout, z) and its first state's rows."""
    t = c * BLOCK_L + j
    t_rev = c * BLOCK_L + (BLOCK_L - 1 - j)
    m2 = d_mask[:, None] & (t < L)[None, :]
    u_raw = tl.load(u_base + t[None, :], mask=m2, other=0.0)
    delta_raw = tl.load(dt_base + t[None, :], mask=m2, other=0.0)
    delta_next_raw = tl.load(dt_base + t[None, :] + 1, mask=d_mask[:, None] & (t + 1 < L)[None, :], other=0.0)
    dout_raw = tl.zeros_like(u_raw)
    z_raw = tl.zeros_like(u_raw)
    if not STATES_OUT:
        dout_raw = tl.load(do_base + t[None, :], mask=m2, other=0.0)
        if HAS_Z:
            z_raw = tl.load(z_base + t[None, :], mask=m2, other=0.0)
    An, Bn, h0, Cn, Cn_rev = _bwd_state_loads(0, A_row, d_mask, B_base + t, C_base + t, C_base + t_rev, t < L,
                                              t_rev < L, st_base + c * N_PAD, s_B_n, s_C_n, HAS_STATES, STATES_OUT,
                                              A_FROM_LOG, BC_PADDED, C_REV)
    return u_raw, delta_raw, delta_next_raw, dout_raw, z_raw, An, Bn, h0, Cn, Cn_rev


@triton.jit
def _selective_scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, states_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        L, dim, dim_per_group, blocks_per_group, groups, slots,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n, s_z_b, s_z_d,
        s_do_b, s_do_d, s_do_n,
        N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STATES_OUT: tl.constexpr, HAS_STATES: tl.constexpr, ATOMIC: tl.constexpr, PREFETCH_CHUNK: tl.constexpr,
        A_FROM_LOG: tl.constexpr, ROW_ALIGN: tl.constexpr, FAST_SOFTPLUS: tl.constexpr, BC_PADDED: tl.constexpr,
        LANE_PTX: tl.constexpr,
):
    # The host passes the length and row strides divided by ROW_ALIGN (their common power-of-two factor): multiplied
    # back here by a constant, Triton knows they are multiples of it and vectorises the row loads.
    L = L * ROW_ALIGN
    s_u_d = s_u_d * ROW_ALIGN
    s_dt_d = s_dt_d * ROW_ALIGN
    s_z_d = s_z_d * ROW_ALIGN
    s_do_d = s_do_d * ROW_ALIGN
    pid = tl.program_id(0)
    b, g, d, d_mask = _program_channels(pid, blocks_per_group, dim_per_group, BLOCK_D)
    nn = tl.arange(0, N_PAD)
    j = tl.arange(0, BLOCK_L)

    bias, Dv = _channel_params(bias_ptr, D_ptr, d, d_mask, HAS_BIAS, HAS_D)

    u_base = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_base = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    B_base = B_ptr + b * s_B_b + g * s_B_g
    C_base = C_ptr + b * s_C_b + g * s_C_g
    z_base = z_ptr + b * s_z_b + d[:, None] * s_z_d
    do_base = dout_ptr + b * s_do_b + d[:, None] * s_do_d
    # Gradient outputs are freshly allocated contiguous tensors.
    du_base = du_ptr + (b * dim + d[:, None]) * L
    ddt_base = ddelta_ptr + (b * dim + d[:, None]) * L
    dz_base = dz_ptr + (b * dim + d[:, None]) * L
    # dB / dC sums over this program's channels go to a row of its own (plain stores, summed by sum_parts) or, with
    # one slot, to the (batch, group) row shared by all programs of the group (atomic adds).
    slot = (pid % blocks_per_group) % slots
    dB_base = dB_ptr + ((b * groups + g) * slots + slot) * N * L
    dC_base = dC_ptr + ((b * groups + g) * slots + slot) * N * L
    n_chunks = tl.cdiv(L, BLOCK_L)
    st_base = states_ptr + ((b * dim + d) * n_chunks) * N_PAD

    # The adjoint g at the first token of the later chunk, state n in column n.
    carry = tl.zeros([BLOCK_D, BLOCK_L if LANE_PTX else N_PAD], tl.float32)
    dA_acc = tl.zeros([BLOCK_D, N_PAD], tl.float32)
    dD_acc = tl.zeros([BLOCK_D], tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], tl.float32)
    # N = 1 on 16-token chunks: dA, dD and dbias accumulate elementwise and are summed once after the last chunk
    # (three cross-lane sums fewer per chunk: VMamba-T stage 3 backward 1.030 -> 0.966 ms, stage 4 0.672 -> 0.634);
    # on 64-token chunks the extra tiles cost more than the sums (stage 1 2.31 -> 2.73).
    sum_at_end: tl.constexpr = N == 1 and BLOCK_L <= 16
    dA_tile = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
    dD_tile = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
    dbias_tile = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
    # Loop-invariant code motion out of the chunk loop costs registers at N > 1 (Vim-T backward: 188 -> 168
    # registers without it, 1.56 -> 1.37 ms) and pays at N = 1 (VMamba-T stage 1: 2.61 ms with, 2.73 without).
    if PREFETCH_CHUNK:
        u_next, delta_next, delta1_next, dout_next, z_next, A0_next, B0_next, h00_next, C0_next, C0_rev_next = \
            _bwd_chunk_loads(n_chunks - 1, j, L, d_mask, u_base, dt_base, do_base, z_base, A_ptr + d * N, B_base,
                             C_base, st_base, s_B_n, s_C_n, BLOCK_L, N_PAD, HAS_Z, HAS_STATES, STATES_OUT, A_FROM_LOG,
                             BC_PADDED, not LANE_PTX)
    for i in tl.range(0, n_chunks, disable_licm=N > 1):
        c = n_chunks - 1 - i
        t = c * BLOCK_L + j
        t_mask = t < L
        m2 = d_mask[:, None] & t_mask[None, :]
        # The tiles as stored and the first state's rows (An_next, ...: the state loop below loads one state ahead).
        # With PREFETCH_CHUNK they were loaded during the previous chunk, and the next chunk's load now.
        if PREFETCH_CHUNK:
            u_raw, delta_raw, delta1_raw, dout_raw, z_raw = u_next, delta_next, delta1_next, dout_next, z_next
            An_next, Bn_next, h0_next, Cn_next, Cn_rev_next = A0_next, B0_next, h00_next, C0_next, C0_rev_next
            u_next, delta_next, delta1_next, dout_next, z_next, A0_next, B0_next, h00_next, C0_next, C0_rev_next = \
                _bwd_chunk_loads(tl.maximum(c - 1, 0), j, L, d_mask, u_base, dt_base, do_base, z_base, A_ptr + d * N,
                                 B_base, C_base, st_base, s_B_n, s_C_n, BLOCK_L, N_PAD, HAS_Z, HAS_STATES, STATES_OUT,
                                 A_FROM_LOG, BC_PADDED, not LANE_PTX)
        else:
            u_raw, delta_raw, delta1_raw, dout_raw, z_raw, An_next, Bn_next, h0_next, Cn_next, Cn_rev_next = \
                _bwd_chunk_loads(c, j, L, d_mask, u_base, dt_base, do_base, z_base, A_ptr + d * N, B_base, C_base,
                                 st_base, s_B_n, s_C_n, BLOCK_L, N_PAD, HAS_Z, HAS_STATES, STATES_OUT, A_FROM_LOG,
                                 BC_PADDED, not LANE_PTX)
        uu = u_raw.to(tl.float32)
        raw, dt = _step_size(delta_raw, m2, bias, HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        dtu = dt * uu
        # Step size of the next token (it may sit in the next chunk; identity step past the end).
        _, dt_next = _step_size(delta1_raw, d_mask[:, None] & (t + 1 < L)[None, :], bias, HAS_BIAS, SOFTPLUS,
                                FAST_SOFTPLUS)
        dy = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
        if not STATES_OUT:
            dout = dout_raw.to(tl.float32)
            dy = dout
            if HAS_Z:
                zz = z_raw.to(tl.float32)
                sz = tl.sigmoid(zz)
                dy = dout * zz * sz
        y = Dv[:, None] * uu  # pre-gate output, rebuilt state by state for dz
        # Without the PTX scans, the adjoint scan runs forward over the chunk in reverse order (t_rev): Triton's reverse
        # scan flips its two inputs and two outputs through lane shuffles per state; here dt(t + 1) and dy are
        # flipped once per chunk, C (or the states' gradient) is loaded at reversed positions, and only the adjoint
        # is flipped per state. The PTX scans run in either direction in token order.
        t_rev = c * BLOCK_L + (BLOCK_L - 1 - j)
        m2_rev = d_mask[:, None] & (t_rev < L)[None, :]
        if not LANE_PTX:
            dt_next_rev = tl.flip(dt_next, 1)
            if not STATES_OUT:
                dy_rev = tl.flip(dy, 1)
        gB = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
        ddt = tl.zeros([BLOCK_D, BLOCK_L], tl.float32)
        if LANE_PTX:
            # Where each lane's one channel sum goes: lane (ch, g) holds dB (ch < 4) or dC (ch >= 4) at token
            # 4 g + ch % 4, as the [channel, token group] tile (ch, g).
            ch = tl.arange(0, 8)[:, None]
            rs_tok = c * BLOCK_L + 4 * tl.arange(0, BLOCK_L // 4)[None, :] + (ch % 4)
            rs_base = tl.where(ch < 4, dB_base, dC_base) + rs_tok
            rs_mask = rs_tok < L
        # A rolled loop: unrolled, the 16 states' loads and temporaries were hoisted together (255 registers and
        # spills at N=16; rolled 188 and none: Vim-T backward 3.51 -> 3.00 ms, vanilla VMamba 47.0 -> 44.7 ms).
        # Each state's row loads are issued one state ahead, so their latency is off the state's dependency chain.
        for n in range(N):
            An, Bn, h0, Cn, Cn_rev = An_next, Bn_next, h0_next, Cn_next, Cn_rev_next
            if N > 1:
                An_next, Bn_next, h0_next, Cn_next, Cn_rev_next = _bwd_state_loads(
                    tl.minimum(n + 1, N - 1), A_ptr + d * N, d_mask, B_base + t, C_base + t, C_base + t_rev, t_mask,
                    t_rev < L, st_base + c * N_PAD, s_B_n, s_C_n, HAS_STATES, STATES_OUT, A_FROM_LOG, BC_PADDED,
                    not LANE_PTX)
            A2n = An * 1.4426950408889634
            a = tl.exp2(dt * A2n[:, None])
            bx = dtu * Bn[None, :]
            if LANE_PTX:
                hh = _scan_4lanes(a, bx, h0[:, None] + tl.zeros_like(a))
                y += hh * Cn[None, :]
                # carry: column n of a [channels, 16] tile (lane_ptx takes N <= 16).
                gg, g_first = _adjoint_scan_4lanes(tl.exp2(dt_next * A2n[:, None]), dy * Cn[None, :], carry,
                                                   n + tl.zeros([BLOCK_D, BLOCK_L], tl.int32))
                carry = tl.where(j[None, :] == n, g_first, carry)
            else:
                pa, pb = tl.associative_scan((a, bx), axis=1, combine_fn=_combine)
                hh = pb + pa * h0[:, None]
                if STATES_OUT:
                    v_rev = tl.load(do_base + n * s_do_n + t_rev[None, :], mask=m2_rev, other=0.0).to(tl.float32)
                else:
                    v_rev = dy_rev * Cn_rev[None, :]
                    y += hh * Cn[None, :]
                    _add_partial(dC_base + n * L + t, tl.sum(hh * dy, axis=0), t_mask, ATOMIC)
                a_next = tl.exp2(dt_next_rev * A2n[:, None])
                ra, rg = tl.associative_scan((a_next, v_rev), axis=1, combine_fn=_combine)
                carry_n = tl.sum(tl.where(nn[None, :] == n, carry, 0.0), axis=1)
                gg = tl.flip(rg + ra * carry_n[:, None], 1)
                g_first = tl.sum(tl.where(j[None, :] == 0, gg, 0.0), axis=1)
                carry = tl.where(nn[None, :] == n, g_first[:, None], carry)
            gB += gg * Bn[None, :]
            g_ah = gg * (hh - bx)  # a_t * h_{t-1} = h_t - b_t: no second scan
            ddt += g_ah * An[:, None]
            if sum_at_end:
                dA_tile += g_ah * dt
            else:
                dA_n = tl.sum(g_ah * dt, axis=1)
                dA_acc = tl.where(nn[None, :] == n, dA_acc + dA_n[:, None], dA_acc)
            if LANE_PTX:
                sums = _reduce_scatter_8ch(gg * dtu, hh * dy)
                # Keep each thread's first slot (the four hold the same sum): one value per lane, stored in place.
                sums, _rest = tl.split(tl.reshape(sums, [BLOCK_D, BLOCK_L // 4, 2, 2]))
                sums, _rest = tl.split(sums)
                if BLOCK_D > 8:  # one warp per 8 channels: the warps' sums added through shared memory
                    sums = tl.sum(tl.reshape(sums, [BLOCK_D // 8, 8, BLOCK_L // 4]), axis=0)
                _add_partial(rs_base + n * L, sums, rs_mask, ATOMIC)
            else:
                _add_partial(dB_base + n * L + t, tl.sum(gg * dtu, axis=0), t_mask, ATOMIC)
        du = gB * dt
        ddt += gB * uu
        if not STATES_OUT:
            if HAS_D:
                du += Dv[:, None] * dy
                if sum_at_end:
                    dD_tile += dy * uu
                else:
                    dD_acc += tl.sum(dy * uu, axis=1)
            if HAS_Z:
                tl.store(dz_base + t[None, :], (dout * y * sz * (1.0 + zz * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                         mask=m2)
        if SOFTPLUS:
            ddt = tl.where(raw <= 20.0, ddt * tl.sigmoid(raw), ddt)
        ddt = tl.where(m2, ddt, 0.0)
        if sum_at_end:
            dbias_tile += ddt
        else:
            dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_base + t[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddt_base + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    if sum_at_end:
        dA_acc = tl.sum(dA_tile, axis=1)[:, None]
        dD_acc = tl.sum(dD_tile, axis=1)
        dbias_acc = tl.sum(dbias_tile, axis=1)
    dn_mask = d_mask[:, None] & (nn[None, :] < N)
    if A_FROM_LOG:  # dL/dA_log = dL/dA * A
        dA_acc = dA_acc * _load_A(A_ptr + d[:, None] * N + nn[None, :], dn_mask, A_FROM_LOG)
    tl.store(dA_ptr + (b * dim + d[:, None]) * N + nn[None, :], dA_acc, mask=dn_mask)
    tl.store(dD_ptr + b * dim + d, dD_acc, mask=d_mask)
    tl.store(dbias_ptr + b * dim + d, dbias_acc, mask=d_mask)


_selective_scan_bwd_launch = CachedLauncher(_selective_scan_bwd_kernel)


@triton.jit
def _sum_parts(x_ptr, out_ptr, local, parts, inner, PARTS: tl.constexpr, BLOCK: tl.constexpr):
    """out[o, i] = sum over p of x[o, p, i] for the o and BLOCK positions i of this job's program ``local``, in
    float32, stored in out's dtype."""
    blocks = tl.cdiv(inner, BLOCK)
    o = (local // blocks).to(tl.int64)
    i = (local % blocks) * BLOCK + tl.arange(0, BLOCK)
    p = tl.arange(0, PARTS)
    rows = x_ptr + (o * parts + p[:, None]) * inner + i[None, :]
    acc = tl.zeros([PARTS, BLOCK], tl.float32)
    # [PARTS, BLOCK] tiles summed elementwise, reduced over the parts once: many loads in flight per thread.
    for p0 in range(0, parts, PARTS):
        acc += tl.load(rows + p0 * inner, mask=(p0 + p < parts)[:, None] & (i < inner)[None, :], other=0.0)
    tl.store(out_ptr + o * inner + i, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=i < inner)


@triton.jit
def _sum_parts_kernel(x0_ptr, x1_ptr, x2_ptr, x3_ptr, x4_ptr, out0_ptr, out1_ptr, out2_ptr, out3_ptr, out4_ptr,
                      start1, start2, start3, start4, parts0, parts1, parts2, parts3, parts4,
                      inner0, inner1, inner2, inner3, inner4, PARTS: tl.constexpr, BLOCK: tl.constexpr):
    """Up to five sums over the middle axis of float32 (outer, parts, inner) tensors in one 1-D grid, job k's
    programs from start_k on: the backward's per-program dB / dC rows and its per-sample dA / dD / delta-bias
    gradients (the small sums' few programs run beside the rows' many)."""
    pid = tl.program_id(0)
    if pid < start1:
        _sum_parts(x0_ptr, out0_ptr, pid, parts0, inner0, PARTS, BLOCK)
    elif pid < start2:
        _sum_parts(x1_ptr, out1_ptr, pid - start1, parts1, inner1, PARTS, BLOCK)
    elif pid < start3:
        _sum_parts(x2_ptr, out2_ptr, pid - start2, parts2, inner2, PARTS, BLOCK)
    elif pid < start4:
        _sum_parts(x3_ptr, out3_ptr, pid - start3, parts3, inner3, PARTS, BLOCK)
    else:
        _sum_parts(x4_ptr, out4_ptr, pid - start4, parts4, inner4, PARTS, BLOCK)


_sum_parts_launch = CachedLauncher(_sum_parts_kernel)


@triton.jit
def _pad_rows_kernel(B_ptr, C_ptr, B_out_ptr, C_out_ptr, L, L_pad, groups, dstate, s_B_b, s_B_g, s_B_n, s_C_b, s_C_g,
                     s_C_n, BLOCK: tl.constexpr):
    """Row r = (batch, group, state) of B (grid axis 1: 0) or C (1) copied to its padded row r, zeros past L."""
    r = tl.program_id(0)
    n = r % dstate
    g = (r // dstate) % groups
    b = (r // (dstate * groups)).to(tl.int64)
    t = tl.arange(0, BLOCK)
    out = r.to(tl.int64) * L_pad + t
    if tl.program_id(1) == 0:
        row = tl.load(B_ptr + b * s_B_b + g * s_B_g + n * s_B_n + t, mask=t < L, other=0.0)
        tl.store(B_out_ptr + out, row, mask=t < L_pad)
    else:
        row = tl.load(C_ptr + b * s_C_b + g * s_C_g + n * s_C_n + t, mask=t < L, other=0.0)
        tl.store(C_out_ptr + out, row, mask=t < L_pad)


_pad_rows_launch = CachedLauncher(_pad_rows_kernel)


def padded_rows(B: torch.Tensor, C: torch.Tensor, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """B and C (batch, G, N, L), last dim contiguous, as contiguous copies with rows zero-padded to ``length``
    tokens, in one launch (two F.pad calls took four)."""
    batch, groups, dstate, L = B.shape
    B_out = torch.empty(batch, groups, dstate, length, device=B.device, dtype=B.dtype)
    C_out = torch.empty(batch, groups, dstate, length, device=C.device, dtype=C.dtype)
    if B_out.numel():
        _pad_rows_launch[(batch * groups * dstate, 2)](
            B, C, B_out, C_out, L, length, groups, dstate, *_strides(B, 3), *_strides(C, 3), BLOCK=next_pow2(length),
            num_warps=1 if length <= 256 else 4)
    return B_out, C_out


def vector_rows(B: torch.Tensor, C: torch.Tensor, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """B and C (batch, G, N, L) with rows of ``length`` tokens, zero past L, whose every row starts 16-byte aligned
    and whose strides are multiples of 4 elements (four tokens load as one vector): themselves where they already
    are, else ``padded_rows``."""
    def ready(x: torch.Tensor) -> bool:
        return (x.shape[-1] == length and x.stride(-1) == 1 and x.data_ptr() % 16 == 0
                and all(st % 4 == 0 for st in x.stride()[:-1]))
    return (B, C) if ready(B) and ready(C) else padded_rows(B, C, length)


def sum_parts(jobs: Sequence[Tuple[torch.Tensor, torch.Tensor, int, int]]) -> None:
    """For up to five jobs (x, out, outer, parts), x contiguous float32 of outer x parts x inner elements and out
    contiguous of outer x inner, of any float dtype: out = x.view(outer, parts, -1).sum(1), in one launch. The
    backward's gradient sums and casts took torch a reduction and a cast each: at Vim-T 87 us of reductions and 8
    launches per call."""
    if not 1 <= len(jobs) <= 5:
        raise ValueError(f'sum_parts: takes 1 to 5 (x, out, outer, parts) jobs, got {len(jobs)}')
    inner = []
    for x, out, outer, parts in jobs:
        if not (x.is_contiguous() and out.is_contiguous() and x.dtype == torch.float32 and outer > 0
                and x.numel() == out.numel() * parts and out.numel() % outer == 0):
            raise ValueError(f'sum_parts: expected contiguous float32 x of outer x parts x inner = {outer} x {parts} '
                             f'x inner and contiguous out of outer x inner, got {tuple(x.shape)} {x.dtype} and '
                             f'{tuple(out.shape)}')
        inner.append(out.numel() // outer)
    block = min(256, next_pow2(max(inner)))
    starts = [0]
    for (_, _, outer, _), n in zip(jobs, inner):
        starts.append(starts[-1] + outer * cdiv(n, block))
    if starts[-1] == 0:
        return
    padded = [(x, out, parts, n) for (x, out, _, parts), n in zip(jobs, inner)]
    padded += [(jobs[0][0], jobs[0][1], 0, 0)] * (5 - len(jobs))
    starts += [starts[-1]] * (5 - len(jobs))
    _sum_parts_launch[(starts[5],)](
        *(job[0] for job in padded), *(job[1] for job in padded), *starts[1:5], *(job[2] for job in padded),
        *(job[3] for job in padded), PARTS=16, BLOCK=block, num_warps=4)


def lane_ptx(dstate: int, block_d: int, block_l: int, warps: int, dim_per_group: int) -> Optional[Tuple[int, int]]:
    """(BLOCK_D, num_warps) of the backward's inline-PTX tiles in place of a ``launch_config`` tile, or None where
    they do not apply: N = 2..16 on 16-token chunks of 8-channel one-warp tiles (the short sequences of Vim and
    vanilla VMamba), where each warp keeps 8 channels and a program takes 4 or 2 warps where the group's channels
    divide.

    Inline PTX in place of Triton's cross-lane steps: the dB / dC channel sums as one reduce-scatter
    (``_reduce_scatter_8ch``: 7 shuffles, not two butterfly reductions of 12 and a shared-memory round trip), the
    states and the adjoint as 4-lane scans in token order (``_scan_4lanes``, ``_adjoint_scan_4lanes``: 4 shuffles
    each, no flips of the adjoint, dt(t + 1) or dy, no C loaded at reversed positions); the B / C rows are padded to
    whole chunks (loaded unmasked and vectorised). The state loop: 320 SASS and 50 shuffles before, 221 and 20 now.
    Shuffles and shared memory share the L1's data pipe, which was the busiest unit (68% of its peak). Several warps
    per program add their dB / dC sums through shared memory, so each (batch, group) has 4x fewer per-program rows
    to write and sum. H100, bf16, ms (benchmarks/selective_scan.md): Vim-T's backward kernel 0.812 -> 0.691 with the
    reduce-scatter, padded rows and fast softplus (fifteenth session), 0.647 with the scans, 0.565 with 4 warps (2:
    0.558), all of the call's kernels 0.725 -> 0.607; vanilla VMamba-T's stage 2 / 3 / 4 shapes 7.77 / 4.40 / 2.48 ->
    6.97 / 3.71 / 2.37 with 4 warps (2: 7.11 / 3.67 / 2.32; 8 warps slower everywhere). Inline PTX does not run in the
    interpreter or on ROCm (64-lane wavefronts, no PTX), which keep Triton's reductions."""
    if not (LANE_PTX and not INTERPRET and torch.version.hip is None and 1 < dstate <= 16
            and (block_d, block_l, warps) == (8, 16, 1)):
        return None
    lane_warps = next((w for w in (4, 2) if dim_per_group % (8 * w) == 0), 1)
    return 8 * lane_warps, lane_warps


def _lane_ptx_layout_ok(compiled) -> bool:
    """Whether a compiled backward hands its inline PTX the tiles laid out as the PTX assumes (4 tokens per thread,
    lane = 4 x channel + token // 4), read from the compiled kernel's TTGIR. Triton picks the layout; any other (or
    an unreadable TTGIR) turns the PTX off."""
    ttgir = compiled.asm.get('ttgir', '') if hasattr(compiled, 'asm') else ''
    ops = re.findall(r'elementwise_inline_asm[^\n]*-> ([^\n]*)', ttgir)
    if not ops:
        return False
    for result in ops:
        op = re.fullmatch(r'tensor<(\d+)x16xf32, (#[\w.]+)>[^\n]*', result)
        layout = op and re.search(re.escape(op.group(2)) + r' = #\w+\.blocked<\{([^}]*)\}>', ttgir)
        warps = int(op.group(1)) // 8 if op else 0
        if not layout or not all(f in layout.group(1) for f in (
                'sizePerThread = [1, 4]', 'threadsPerWarp = [8, 4]', f'warpsPerCTA = [{warps}, 1]', 'order = [1, 0]')):
            return False
    return True


def state_chunk(dstate: int, length: int) -> int:
    """Tokens per chunk of the states the forward saves: the backward's BLOCK_L, a function of (dstate, length)
    only, so that both passes agree (see ``launch_config``)."""
    if INTERPRET:
        return min(16, next_pow2(length))
    if dstate == 1:
        if length > 256:
            return 64
        # Rows of a multiple of 4 tokens load 4 tokens per thread in the backward (``row_align``), which pays on
        # 32-token chunks; unaligned rows keep tokens across lanes, where 16-token chunks were faster.
        return 32 if length % 4 == 0 else 16
    return 64 if length >= 1024 else 16


def launch_config(
        dstate: int,
        length: int,
        dim_per_group: int,
        backward: bool,
        rows: int,
) -> Tuple[int, int, int]:
    """(BLOCK_D, BLOCK_L, num_warps) for one pass. The backward's BLOCK_L is ``state_chunk``; the forward's divides
    it (the forward then saves the state every ``state_chunk // BLOCK_L`` chunks).

    Chosen from block-size sweeps on an H100 (benchmarks/selective_scan.md): at N = 1 narrow programs
    (4 channels, one warp) keep every reduction inside a warp; sequences up to 256 tokens walk 16-token chunks
    (VMamba-T stage 3 forward + backward 1.575 -> 1.413 ms, stage 4 1.078 -> 0.952, against 32-token chunks and 2
    channels in the backward), or, where their rows are 4-token aligned, 32-token chunks of 8 channels backward
    (the tile then holds 4 tokens per thread: stage 3 backward 1.00 -> 0.78 ms; 4 channels 0.80, 16-token chunks of
    8 channels 0.96), and the forward of the shortest (L <= 64) takes 8-token chunks of 16 channels
    (stage 4 forward 0.296 -> 0.233 ms: 49 tokens padded to 56, not 64, and fewer programs that were mostly
    prologue). At N = 16 the backward is bound by the latency of its per-state chains, hidden only by many one-warp
    programs in flight: 8 channels each, 4 where that would leave fewer than ``MIN_PROGRAMS`` (``rows`` = batch x
    channels, e.g. Vim at 1248 px, batch 32). The chunked N = 16 forward (hidden states, or long sequences with few
    rows: ``steps_forward``) of long sequences amortises the B/C rows over wider programs, with the same floor on
    their number.
    """
    block_l = state_chunk(dstate, length)
    if INTERPRET:
        # Tiny tiles keep the interpreter fast and make tests cross several chunks and masked tails; the short N = 1
        # forward saves every other chunk's state, as on the GPU.
        if dstate == 1 and length <= 64 and not backward:
            block_l = min(8, block_l)
        return min(4, next_pow2(dim_per_group)), block_l, 1
    if dstate == 1:
        if not backward and length <= 64:
            return min(16, next_pow2(dim_per_group)), 8, 1
        block_d, warps = (8 if backward and block_l == 32 else 4), 1
    elif backward or length >= 1024:
        # Backward with the prefetched state rows (ninth session): vanilla VMamba-T stage 1 23.9 ms with 8 channels
        # and one warp (16 and two warps: 30.5), Vim-T at 1248 px 19.5 ms with 4 (8: 33.8), Vim-T's call 1.85 (16
        # and two warps: 2.14).
        block_d = 8 if backward else 16
        while block_d > 4 and rows // block_d < MIN_PROGRAMS:
            block_d //= 2
        warps = 1 if backward else {4: 1, 8: 2}.get(block_d, 4)
    else:
        block_d, warps = 8, 1
    return min(block_d, next_pow2(dim_per_group)), block_l, warps


def steps_forward(dstate: int, length: int, rows: int) -> bool:
    """Whether the forward walks the tokens one by one (``_selective_scan_fwd_steps_kernel``: 16 channels x N
    states per one-warp program, no scan) instead of scanning chunks.

    Fourteenth-session sweep of the tiled token-by-token kernel (``steps_tile``) against the chunked one (H100,
    bf16, ms, chunked / token by token; benchmarks/selective_scan.md): Vim-T's call (L = 197) at batch 128 0.617 /
    0.319, 32 0.156 / 0.084, 1 0.091 / 0.046; Vim-S's 1.199 / 0.617, Vim-B's 2.304 / 1.210; vanilla VMamba-T
    stage 1 (L = 3136) 6.56 / 4.51, stage 2 3.11 / 2.07, stage 3 1.87 / 0.97, stage 4 1.05 / 0.51; Vim-T at 1248 px
    (L = 6085) batch 32 10.53 / 2.75. Each program walks its whole sequence, so long sequences with few rows leave
    each token's latency exposed: vanilla stage 1 at batch 8 (384 programs) 0.58 / 1.02, at batch 1 0.30 / 0.88,
    Vim-T at 1248 px batch 1 1.57 / 2.18 (at batch 8 3.48 / 2.29). At N = 4 the chunked kernel was faster (0.090 /
    0.123 ms at 24576 rows, L = 197), at N = 8 not (0.286 / 0.243, L = 784).
    """
    if dstate < STEPS_MIN_STATES:
        return False
    return length < STEPS_LONG_LENGTH or rows // 16 >= STEPS_LONG_MIN_PROGRAMS


def steps_tile(chunk: int) -> int:
    """Tokens per tile of the token-by-token forward: a short sequence's state chunk (16 tokens) is one tile, a long
    one's (64) is walked in 8-token tiles.

    Each tile's u / delta / z are loaded as coalesced [channels, tokens] tiles and each token's channel vectors are
    picked out of them in registers; loaded token by token instead, each load touched one 32-byte sector per channel
    row, and the kernel waited on L1. H100, bf16, ms against the per-token loads (fourteenth session,
    benchmarks/selective_scan.md): Vim-T 0.33 -> 0.17-0.20, Vim-T's call 0.52-0.57 -> 0.32-0.37 (16-token tiles;
    8-token tiles slower), Vim-T at 1248 px 4.07 -> 2.73 (8-token tiles; 64: 29, 16: 3.97).

    Seventeenth session (``_selective_scan_fwd_steps_kernel``): the token loop is unrolled in full, so each token's
    pick out of the tile folds to a select and a shuffle; the next tile's u / delta load while a tile computes (ncu:
    long-scoreboard stalls were the largest, and the kernel without those loads ran in 0.106 of 0.168 ms); B / C
    come four tokens per load from padded rows (``vector_rows``), under a 168-register cap where the programs
    outnumber one uncapped wave (``steps_register_cap``; uncapped 248 registers, 0.142 ms; 152: 0.150). H100, bf16,
    forward ms, old -> new: Vim-T 0.167 -> 0.140, at batch 32 0.058 -> 0.043; vanilla VMamba-T stages 1-4 3.61 /
    1.97 / 0.994 / 0.540 -> 2.41 / 1.33 / 0.855 / 0.500. Loading B / C eight tokens at a time was slower (Vim-T
    0.145 ms), as were 8-token tiles at L = 197 (0.161).
    """
    return chunk if chunk <= STEPS_TILE_SHORT else STEPS_TILE_LONG


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def steps_register_cap(programs: int, device: torch.device) -> bool:
    """Whether the token-by-token forward (PTX B / C loads) runs under ``STEPS_MAX_REGISTERS``: where its one-warp
    programs outnumber ``STEPS_UNCAPPED_PROGRAMS_PER_SM`` per SM, the number that fits uncapped (248 registers).
    H100, bf16, forward ms, capped / uncapped: Vim-T's shape at batch 16 (384 programs) 0.036 / 0.033, 32 (768) 0.047
    / 0.043, 64 (1536) 0.074 / 0.091, 128 (3072) 0.140 / 0.148; Vim-S's at batch 64 (3072) 0.138 / 0.144;
    vanilla VMamba-T's stage 4 shape 0.505 / 0.560 (seventeenth session)."""
    return programs > STEPS_UNCAPPED_PROGRAMS_PER_SM * _multiprocessors(device)


def row_align(length: int, *row_strides: int) -> int:
    """The largest of 8, 4, 2, 1 that divides the length and every row stride: the backward's row loads are
    vectorised that wide (stage 3's 196-token rows: 4)."""
    align = 8
    while align > 1 and any(x % align for x in (length, *row_strides)):
        align //= 2
    return align


def rows_forward(dstate: int, length: int, dim_per_group: int) -> int:
    """Channels per program of the N = 1 forward over contiguous rows (``_selective_scan_fwd_rows_kernel``), or 0
    where the chunked forward runs instead.

    The chunked forward's [channels, tokens] tiles put the tokens across lanes (Triton lays a tile out from its
    loads, and rows of L = 196 or 49 tokens are not 16-byte aligned), so every scan step is a shuffle; the rows
    forward keeps 8 tokens in each thread. H100, bf16, with chunk states, ms (twelfth session,
    benchmarks/selective_scan.md): VMamba-T stage 3 (L = 196) 0.43-0.49 -> 0.28-0.29, stage 4 (L = 49) 0.23-0.27
    -> 0.17; stage 2 (L = 784) and 1 were the same either way. Channels per program (one warp, 256-token chunks),
    medians of three interleaved rounds: stage 3 32: 0.264 ms, 64: 0.275; stage 4 32: 0.167, 64: 0.157, 128: 0.162;
    512-token chunks and register caps of 80 or 96 were slower. A program's channels share a batch element and
    group, so their number divides the group's channels (a power of two up to ``ROWS_PER_PROGRAM``, twice that at
    L <= 64).
    """
    chunk = state_chunk(dstate, length)
    if dstate != 1 or not ROWS_VEC <= length <= ROWS_MAX_LENGTH or chunk < ROWS_VEC or chunk & (chunk - 1):
        return 0
    rows = ROWS_PER_PROGRAM * (2 if length <= 64 else 1)
    while dim_per_group % rows:
        rows //= 2
    return rows


def backward_register_cap(dstate: int, length: int, block_d: int) -> Optional[int]:
    """Triton's ``maxnreg`` for the backward at d_state > 1 (None: the compiler's choice, up to 255).

    The N = 16 backward keeps the state tile, its gradient, the chunk's decays and the next state's prefetched rows
    live. Capping trades spills for occupancy or a better schedule; sweeps on an H100, bf16
    (benchmarks/selective_scan.md), at the current tiles with the prefetched rows: Vim-T's call (short, 8
    channels) 2.20 ms uncapped, 1.85 at 128 or 160; vanilla VMamba-T stage 1 (long, 8 channels) 23.8 uncapped,
    26.7 at 160, 33.2 at 128; Vim-T at 1248 px (long, 4 channels) 24.1 uncapped, 19.5 at 160, 22.0 at 128.
    At N = 1 no cap helped by more than noise.
    """
    if INTERPRET or dstate == 1:
        return None
    if length < 1024:
        return 128
    return 160 if block_d <= 4 else None


def partial_batch(batch: int, groups: int, dstate: int, length: int, blocks_per_group: int, has_c: bool) -> int:
    """How many batch elements one backward launch takes when its dB / dC sums go to a float32 row per program
    (plain stores, summed by ``sum_parts``, deterministic); 0 where they are added atomically into one row per (batch,
    group) instead.

    Many programs adding to the same addresses serialise: on Vim-T (48 programs per group) that was 42% of the
    backward's time, and 20-45% at VMamba-T's stages. Rows shared by a few programs each were slower still (more
    atomics in flight plus the zero fill), and with few programs per group (vanilla VMamba, 6) the single
    atomic row is ~2% faster (H100 sweep, benchmarks/selective_scan.md); at 12 (Vim-T's 4-warp programs,
    ``lane_ptx``) the rows are: 0.61 against 0.94 ms. Rows that would exceed ``PARTIAL_BYTES``
    split the batch over several launches; only where one sample's rows alone exceed it (or N = 0) the atomic row
    is used.
    """
    sample_bytes = blocks_per_group * groups * dstate * length * 4 * (2 if has_c else 1)
    if blocks_per_group < PARTIAL_MIN_PROGRAMS or sample_bytes == 0:
        return 0
    return min(batch, PARTIAL_BYTES // sample_bytes)


def _sliced(x: Optional[torch.Tensor], part: slice) -> Optional[torch.Tensor]:
    # The whole batch (the usual single launch) without a view per tensor: the launch is CPU-bound at small sizes.
    if x is None or (part.start == 0 and part.stop == x.shape[0]):
        return x
    return x[part]


def _or_dummy(dummy: torch.Tensor, *tensors: Optional[torch.Tensor]):
    # Absent inputs are never dereferenced (their HAS_* flag is off) but still need a pointer argument.
    return tuple(x if x is not None else dummy for x in tensors)


def _strides(x: Optional[torch.Tensor], n: int):
    return tuple(x.stride()[:n]) if x is not None else (0,) * n


def selective_scan_fwd(
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: Optional[torch.Tensor],
        D: Optional[torch.Tensor],
        z: Optional[torch.Tensor],
        delta_bias: Optional[torch.Tensor],
        delta_softplus: bool,
        return_hidden_states: bool,
        out_dtype: torch.dtype,
        a_is_log: bool = False,
        need_last: bool = True,
        need_states: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Returns (out, last_state float32 (batch, D, N) or None without ``need_last``, chunk-start states for the
    backward or None for one chunk or without ``need_states``). With ``a_is_log``, ``A`` holds Mamba's A_log and the
    kernel takes -exp(A_log) (one op less per call than passing A)."""
    batch, dim, length = u.shape
    groups, dstate = B.shape[1], B.shape[2]
    dim_per_group = dim // groups
    block_d, block_l, warps = launch_config(dstate, length, dim_per_group, backward=False, rows=batch * dim)
    chunk = state_chunk(dstate, length)
    n_pad = next_pow2(dstate)
    n_chunks = cdiv(length, chunk)  # saved states: one per backward chunk
    blocks_per_group = cdiv(dim_per_group, block_d)
    if return_hidden_states:
        out = torch.empty(batch, dim, dstate, length, device=u.device, dtype=out_dtype)
        s_out = out.stride()[:3]
    else:
        out = torch.empty(batch, dim, length, device=u.device, dtype=out_dtype)
        s_out = out.stride()[:2] + (0,)
    # Absent outputs get no allocation (an op of CPU time per call): the kernels do not touch them.
    last = torch.empty(batch, dim, dstate, device=u.device, dtype=torch.float32) if need_last else None
    steps = not return_hidden_states and steps_forward(dstate, length, batch * dim)
    rows = 0 if not all(x is None or x.is_contiguous() for x in (u, delta, z)) \
        else rows_forward(dstate, length, dim_per_group)
    # The chunked kernel keeps its state stores even without a backward: compiled without them it ran 1.7x slower
    # (Vim-T's call 0.70 -> 1.21 ms, Triton 3.6, H100; the token-by-token and rows kernels are unaffected).
    keep_states = n_chunks > 1 and (need_states or not (steps or rows))
    states = torch.empty(batch, dim, n_chunks, n_pad, device=u.device, dtype=torch.float32) if keep_states else None
    A32 = A.float().contiguous()
    D, delta_bias = dense(D), dense(delta_bias)  # the kernels read them as rows
    if rows:
        block = 32 if INTERPRET else ROWS_BLOCK  # the interpreter's tests cross several chunks and a masked tail
        _selective_scan_fwd_rows_launch[(batch * dim // rows,)](
            u, delta, A32, B, *_or_dummy(u, C, D, z, delta_bias),
            out, *_or_dummy(out, last, states),
            length, dim, dim_per_group, rows, rows * length, n_chunks, 1.0 / length,
            *_strides(B, 2), *_strides(C, 2),
            BLOCK=block, VEC=ROWS_VEC, STATE_CHUNK=chunk,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            SAVE_STATES=states is not None, A_FROM_LOG=a_is_log, STORE_LAST=need_last,
            STATES_OUT=return_hidden_states, num_warps=1,
        )
        return out, last, states
    if steps:
        steps_block_d = min(16, next_pow2(dim_per_group))
        steps_blocks = cdiv(dim_per_group, steps_block_d)
        tile = steps_tile(chunk)
        vector = STEPS_VECTOR_ROWS and not INTERPRET and torch.version.hip is None
        if vector:
            B, C = vector_rows(B, C, cdiv(length, tile) * tile)
        _selective_scan_fwd_steps_launch[(groups * steps_blocks, batch)](
            u, delta, A32, B, *_or_dummy(u, C, D, z, delta_bias),
            out, *_or_dummy(out, last, states),
            length, dim, dim_per_group, steps_blocks,
            *_strides(u, 2), *_strides(delta, 2), *_strides(B, 3), *_strides(C, 3), *_strides(z, 2), *s_out[:2],
            N=dstate, N_PAD=n_pad, BLOCK_D=steps_block_d, BLOCK_L=chunk, TILE=tile,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            SAVE_STATES=keep_states, A_FROM_LOG=a_is_log, STORE_LAST=need_last, VEC_BC=vector, num_warps=1,
            **({'maxnreg': STEPS_MAX_REGISTERS}
               if vector and steps_register_cap(groups * steps_blocks * batch, u.device) else {}),
        )
        return out, last, states
    grid = (groups * blocks_per_group, batch)
    _selective_scan_fwd_launch[grid](
        u, delta, A32, B, *_or_dummy(u, C, D, z, delta_bias),
        out, *_or_dummy(out, last, states),
        length, dim, dim_per_group, blocks_per_group,
        *_strides(u, 2), *_strides(delta, 2), *_strides(B, 3), *_strides(C, 3), *_strides(z, 2), *s_out,
        N=dstate, N_PAD=n_pad, BLOCK_D=block_d, BLOCK_L=block_l,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        STATES_OUT=return_hidden_states, SAVE_STATES=keep_states, A_FROM_LOG=a_is_log, STORE_LAST=need_last,
        SAVE_EVERY=chunk // block_l,
        # Unrolling the state loop pays on wide chunks (vanilla VMamba: 4.46 ms unrolled, 9.77 rolled) and
        # costs registers on narrow ones (Vim-T: 168 registers unrolled, 80 rolled; 0.77 -> 0.58 ms).
        STATE_UNROLL=dstate if block_l >= 64 else 1,
        num_warps=warps,
    )
    return out, last, states


def selective_scan_bwd(
        dout: torch.Tensor,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: Optional[torch.Tensor],
        D: Optional[torch.Tensor],
        z: Optional[torch.Tensor],
        delta_bias: Optional[torch.Tensor],
        states: Optional[torch.Tensor],
        delta_softplus: bool,
        return_hidden_states: bool,
        a_is_log: bool = False,
) -> Tuple[Optional[torch.Tensor], ...]:
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); None where the input is None. With ``a_is_log``
    (see ``selective_scan_fwd``) the third is the gradient of A_log."""
    batch, dim, length = u.shape
    groups, dstate = B.shape[1], B.shape[2]
    dim_per_group = dim // groups
    block_d, block_l, warps = launch_config(dstate, length, dim_per_group, backward=True, rows=batch * dim)
    lane_tile = lane_ptx(dstate, block_d, block_l, warps, dim_per_group) \
        if C is not None and not return_hidden_states else None
    lane_steps = lane_tile is not None
    if lane_steps:
        block_d, warps = lane_tile
    # Only passed when set: Triton's AMD backend has no maxnreg option.
    cap = backward_register_cap(dstate, length, block_d)
    register_cap = {'maxnreg': cap} if cap is not None else {}
    n_pad = next_pow2(dstate)
    blocks_per_group = cdiv(dim_per_group, block_d)
    has_states = cdiv(length, block_l) > 1
    if has_states and (states is None or states.numel() == 0):
        raise RuntimeError('selective_scan backward: the forward did not save chunk states')
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty(batch, dim, length, device=u.device, dtype=u.dtype)
    ddelta = torch.empty(batch, dim, length, device=u.device, dtype=delta.dtype)
    dz = torch.empty(batch, dim, length, device=u.device, dtype=z.dtype) if z is not None else None
    dA = torch.empty(batch, dim, dstate, **f32)
    per_launch = partial_batch(batch, groups, dstate, length, blocks_per_group, C is not None)
    if per_launch:  # sums of the per-program rows, cast as they are stored (allocated after the first launch: the
        # host's work before it is on the call's critical path)
        dB = dC = None
    else:  # float32 rows the programs add to
        dB = torch.zeros(batch, groups, dstate, length, **f32)
        dC = torch.zeros(batch, groups, dstate, length, **f32) if C is not None else None
    dD = torch.empty(batch, dim, **f32)
    dbias = torch.empty(batch, dim, **f32)
    if per_launch:
        rows_B = torch.empty(per_launch, groups, blocks_per_group, dstate, length, **f32)
        rows_C = torch.empty_like(rows_B) if C is not None else None
    if return_hidden_states:
        s_do = dout.stride()[:3]
    else:
        s_do = dout.stride()[:2] + (0,)
    s_u, s_dt, s_z = _strides(u, 2), _strides(delta, 2), _strides(z, 2)
    align = row_align(length, s_u[1], s_dt[1], s_z[1], s_do[1])
    A32 = A.float().contiguous()
    D, delta_bias = dense(D), dense(delta_bias)  # the kernels read them as rows
    if lane_steps:
        # Rows padded to whole chunks (two small copies: 0.8 MB each at Vim-T) load without masks, vectorised.
        B, C = vector_rows(B, C, cdiv(length, block_l) * block_l)
    step = per_launch or max(batch, 1)
    for start in range(0, batch, step):
        part = slice(start, min(batch, start + step))
        n = part.stop - part.start
        rows = (_sliced(rows_B, slice(0, n)), _sliced(rows_C, slice(0, n))) if per_launch \
            else (_sliced(dB, part), _sliced(dC, part))
        grid = (groups * blocks_per_group, n)
        args = (
            _sliced(u, part), _sliced(delta, part), A32, _sliced(B, part),
            *_or_dummy(u, _sliced(C, part), D, _sliced(z, part), delta_bias),
            _sliced(dout, part), _sliced(states, part) if has_states else u,
            _sliced(du, part), _sliced(ddelta, part), *_or_dummy(du, _sliced(dz, part)), _sliced(dA, part), rows[0],
            *_or_dummy(rows[0], rows[1]), _sliced(dD, part), _sliced(dbias, part),
            length // align, dim, dim_per_group, blocks_per_group, groups, blocks_per_group if per_launch else 1,
            s_u[0], s_u[1] // align, s_dt[0], s_dt[1] // align, *_strides(B, 3), *_strides(C, 3),
            s_z[0], s_z[1] // align, s_do[0], s_do[1] // align, s_do[2],
        )
        meta = dict(
            N=dstate, N_PAD=n_pad, BLOCK_D=block_d, BLOCK_L=block_l,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            STATES_OUT=return_hidden_states, HAS_STATES=has_states, ATOMIC=not per_launch,
            # Loading chunk c - 1 during chunk c pays where the chunk is all the work (N = 1: VMamba-T backward -5%
            # at stages 1-3, even at 4); at N = 16 the extra live tiles cost more (Vim-T's call 1.84 -> 2.39 ms).
            PREFETCH_CHUNK=dstate == 1, A_FROM_LOG=a_is_log, ROW_ALIGN=align,
            # The fast softplus (see _FAST_MATH) pays at N = 1, on long sequences (vanilla VMamba-T stage 1
            # 24.13 -> 23.42 ms) and on the short N = 16 tiles with the PTX lane steps (Vim-T 0.709 -> 0.691 ms);
            # without those it cost under the short tile's register cap (Vim-T's call 1.84 -> 2.00, ninth session).
            FAST_SOFTPLUS=bool(_FAST_MATH) and (dstate == 1 or length >= 1024 or lane_steps), BC_PADDED=lane_steps,
            LANE_PTX=lane_steps, num_warps=warps, **register_cap,
        )
        if not _selective_scan_bwd_launch.launch(grid, args, meta, accept=_lane_ptx_layout_ok if lane_steps else None):
            # This Triton laid the tiles out otherwise than the PTX assumes: Triton's own scans and reductions instead
            # (the padded B / C rows stay, still loaded unmasked).
            announce('selective_scan:lane_ptx', 'selective_scan: the Triton backward takes its scans and dB / dC sums '
                     f'through Triton\'s own (Triton {triton.__version__} laid out its tiles otherwise than its inline '
                     'PTX assumes)', warn=True)
            _selective_scan_bwd_launch.launch(grid, args, dict(meta, LANE_PTX=False))
        if per_launch:
            if dB is None:
                dB = torch.empty(batch, groups, dstate, length, device=u.device, dtype=B.dtype)
                dC = torch.empty(batch, groups, dstate, length, device=u.device, dtype=C.dtype) \
                    if C is not None else None
            jobs = [(r, _sliced(x, part), n * groups, blocks_per_group) for r, x in zip(rows, (dB, dC))
                    if r is not None]
            if part.stop < batch:
                sum_parts(jobs)
    if not per_launch:
        dB, dC = dB.to(B.dtype), dC.to(C.dtype) if dC is not None else None
        jobs = []
    # The per-sample dA / dD / delta-bias gradients summed over the batch, in the last rows' launch (their programs
    # first: few, each a long loop over the batch, they then run beside the rows' many).
    dA_sum = torch.empty(dim, dstate, device=u.device, dtype=A.dtype)
    dD_sum = torch.empty(dim, device=u.device, dtype=D.dtype) if D is not None else None
    dbias_sum = torch.empty(dim, device=u.device, dtype=delta_bias.dtype) if delta_bias is not None else None
    sum_parts([(x, out, 1, batch) for x, out in ((dA, dA_sum), (dD, dD_sum), (dbias, dbias_sum)) if out is not None]
              + jobs)
    return du, ddelta, dA_sum, dB, dC, dD_sum, dz, dbias_sum
