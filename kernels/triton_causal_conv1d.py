"""Triton causal depthwise conv1d with an optional SiLU, forward and backward (Mamba's and Vim's short conv).

``y[b, c, t] = act(bias[c] + sum_k w[c, k] x[b, c, t - (K - 1) + k])`` with zeros before the sequence start.
PyTorch runs it as a grouped conv1d on a (K - 1)-padded input (Vim-T's shape gets ATen's generic depthwise
kernel, ~0.1 ms forward and ~0.17 ms backward per direction and layer on an H100), a separate SiLU, and in the
backward a weight gradient that walks the whole batch per channel. Here one program covers a [BLOCK_C, BLOCK_L]
tile of one sequence: the K shifted reads of x hit L1 and math is float32. The backward is two passes: the first
recomputes the pre-activation, stores its gradient g (in dy's dtype, as PyTorch's path rounds it) and per-program
partial sums of the weight and bias gradients (summed by torch: deterministic); the second is the transposed
convolution of g. One pass recomputing the pre-activation at the K shifted positions instead spilled registers
and ran 4-9x slower.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import CachedLauncher
from ._grid import cdiv, next_pow2

__all__ = ['causal_conv1d_fwd', 'causal_conv1d_bwd']


@triton.jit
def _pre_activation(x_base, w_ptr, c, c_mask, t, L, bias, s_x_l, K: tl.constexpr):
    """bias + sum_k w[c, k] x[c, t - (K - 1) + k] on a [BLOCK_C, BLOCK_L] tile, float32."""
    acc = tl.zeros([c.shape[0], t.shape[0]], tl.float32) + bias[:, None]
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        # int64 offsets along L: a channel-last x (stride C) passes 2**31 elements within one sequence.
        in_seq = c_mask[:, None] & ((src >= 0) & (src < L))[None, :]
        xk = tl.load(x_base + src[None, :].to(tl.int64) * s_x_l, mask=in_seq, other=0.0).to(tl.float32)
        acc += tl.load(w_ptr + c * K + k, mask=c_mask, other=0.0).to(tl.float32)[:, None] * xk
    return acc


@triton.jit
def _causal_conv1d_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        C, L, s_x_b, s_x_c, s_x_l,
        K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    t = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    c_mask = c < C
    bias = tl.zeros([BLOCK_C], tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    x_base = x_ptr + b * s_x_b + c[:, None].to(tl.int64) * s_x_c
    y = _pre_activation(x_base, w_ptr, c, c_mask, t, L, bias, s_x_l, K)
    if SILU:
        y = y * tl.sigmoid(y)
    y_base = y_ptr + (b * C + c[:, None]) * L
    tl.store(y_base + t[None, :], y.to(y_ptr.dtype.element_ty), mask=c_mask[:, None] & (t < L)[None, :])


_causal_conv1d_fwd_launch = CachedLauncher(_causal_conv1d_fwd_kernel)


@triton.jit
def _causal_conv1d_bwd_pre_kernel(
        dy_ptr, x_ptr, w_ptr, b_ptr, g_ptr, dw_ptr, db_ptr,
        C, L, s_x_b, s_x_c, s_x_l, s_dy_b, s_dy_c, s_dy_l,
        K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """g = dL/d(pre-activation) on one tile, stored for the dx pass, and this tile's weight / bias partials."""
    pid_l = tl.program_id(0)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    c_mask = c < C
    in_seq = c_mask[:, None] & (t < L)[None, :]
    bias = tl.zeros([BLOCK_C], tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    x_base = x_ptr + b * s_x_b + c[:, None].to(tl.int64) * s_x_c
    g = tl.load(dy_ptr + b * s_dy_b + c[:, None].to(tl.int64) * s_dy_c + t[None, :].to(tl.int64) * s_dy_l, mask=in_seq,
                other=0.0).to(tl.float32)
    if SILU:
        pre = _pre_activation(x_base, w_ptr, c, c_mask, t, L, bias, s_x_l, K)
        sig = tl.sigmoid(pre)
        g = g * sig * (1.0 + pre * (1.0 - sig))
    g = tl.where(in_seq, g, 0.0)
    tl.store(g_ptr + (b * C + c[:, None]) * L + t[None, :], g.to(g_ptr.dtype.element_ty), mask=in_seq)
    # dw[k] = sum_t g[t] x[t - (K - 1) + k]: the x reads repeat the pre-activation's (L1 hits).
    part = (b * tl.num_programs(0) + pid_l) * C
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        xk = tl.load(x_base + src[None, :].to(tl.int64) * s_x_l, mask=in_seq & (src >= 0)[None, :],
                     other=0.0).to(tl.float32)
        tl.store(dw_ptr + (part + c) * K + k, tl.sum(g * xk, axis=1), mask=c_mask)
    tl.store(db_ptr + part + c, tl.sum(g, axis=1), mask=c_mask)


_causal_conv1d_bwd_pre_launch = CachedLauncher(_causal_conv1d_bwd_pre_kernel)


@triton.jit
def _causal_conv1d_bwd_dx_kernel(
        g_ptr, w_ptr, dx_ptr, C, L,
        K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """dx[t] = sum_j w[K - 1 - j] g[t + j] (the transposed convolution), g zero past the end."""
    t = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    c_mask = c < C
    rows = (b * C + c[:, None]) * L
    dx = tl.zeros([BLOCK_C, BLOCK_L], tl.float32)
    for j in tl.static_range(K):
        tj = t + j
        g = tl.load(g_ptr + rows + tj[None, :], mask=c_mask[:, None] & (tj < L)[None, :], other=0.0).to(tl.float32)
        dx += tl.load(w_ptr + c * K + (K - 1 - j), mask=c_mask, other=0.0).to(tl.float32)[:, None] * g
    tl.store(dx_ptr + rows + t[None, :], dx.to(dx_ptr.dtype.element_ty), mask=c_mask[:, None] & (t < L)[None, :])


_causal_conv1d_bwd_dx_launch = CachedLauncher(_causal_conv1d_bwd_dx_kernel)


# Per kernel: (longest BLOCK_L, elements per program, num_warps) for sequences up to 1024 steps and past them,
# from a tile sweep on an H100 (benchmarks/causal_conv1d.md): one program per Vim-T row of 197 steps, two warps.
_TILES = {'fwd': ((256, 1024, 2), (512, 1024, 2)),
          'bwd_pre': ((256, 2048, 2), (512, 1024, 1)),
          'bwd_dx': ((256, 1024, 2), (512, 1024, 2))}


def _tile(kernel: str, channels: int, length: int) -> Tuple[int, int, int]:
    """(BLOCK_C, BLOCK_L, num_warps) of one kernel for (channels, length)."""
    longest, elements, warps = _TILES[kernel][length > 1024]
    block_l = min(longest, next_pow2(length))
    return min(next_pow2(channels), max(1, elements // block_l)), block_l, warps


def causal_conv1d_fwd(
        x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool, out_dtype: torch.dtype,
) -> torch.Tensor:
    """(B, C, L) output, contiguous, in ``out_dtype``; x may have any strides."""
    batch, channels, length = x.shape
    y = torch.empty(batch, channels, length, device=x.device, dtype=out_dtype)
    block_c, block_l, warps = _tile('fwd', channels, length)
    grid = (cdiv(length, block_l), cdiv(channels, block_c), batch)
    _causal_conv1d_fwd_launch[grid](
        x, weight, bias if bias is not None else weight, y, channels, length, *x.stride(),
        K=weight.shape[-1], HAS_BIAS=bias is not None, SILU=silu, BLOCK_C=block_c, BLOCK_L=block_l,
        num_warps=warps,
    )
    return y


def causal_conv1d_bwd(
        dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx in x's dtype, dweight (C, K) float32, dbias (C,) float32)."""
    batch, channels, length = x.shape
    taps = weight.shape[-1]
    block_c, block_l, warps = _tile('bwd_pre', channels, length)
    grid = (cdiv(length, block_l), cdiv(channels, block_c), batch)
    # g in dy's dtype: the rounding PyTorch's path applies to the SiLU's input gradient.
    g = torch.empty(batch, channels, length, device=x.device, dtype=dy.dtype)
    dw = torch.empty(batch * grid[0], channels, taps, device=x.device, dtype=torch.float32)
    db = torch.empty(batch * grid[0], channels, device=x.device, dtype=torch.float32)
    _causal_conv1d_bwd_pre_launch[grid](
        dy, x, weight, bias if bias is not None else weight, g, dw, db, channels, length, *x.stride(), *dy.stride(),
        K=taps, HAS_BIAS=bias is not None, SILU=silu, BLOCK_C=block_c, BLOCK_L=block_l, num_warps=warps,
    )
    dx = torch.empty(batch, channels, length, device=x.device, dtype=x.dtype)
    block_c, block_l, warps = _tile('bwd_dx', channels, length)
    _causal_conv1d_bwd_dx_launch[(cdiv(length, block_l), cdiv(channels, block_c), batch)](
        g, weight, dx, channels, length, K=taps, BLOCK_C=block_c, BLOCK_L=block_l, num_warps=warps,
    )
    return dx, dw.sum(0), db.sum(0)
