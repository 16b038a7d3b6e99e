"""Triton LayerNorm (or RMSNorm) over the channels of (B, C, P) maps, in either memory layout, forward and backward.

PyTorch's channel LayerNorm of NCHW maps (timm's ``LayerNorm2d``) permutes to (B, H, W, C), and its row kernel
gives each row of C values (96 to 768 in the VMamba stages) to a block of threads; under autocast the input is
first copied to float32. Here one program normalises a [C, BLOCK_P] tile of one image: it reads the input in its
own dtype and strides (channel-first or channel-last), computes in float32 and writes a channel-last output
(timm's strides). The backward recomputes the normalised input from the saved mean and 1/std and writes
per-program partial sums for the weight and bias gradients (summed by torch in one reduction: deterministic).
With ``rms`` the same kernels compute RMSNorm (no mean subtracted, no bias): Vim's norm over token channels, whose
PyTorch backward spent ~100 us per Vim-T layer on an H100 in its weight-gradient reduction.
"""
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import CachedLauncher
from ._grid import bcp_strides, cdiv, dense, next_pow2

__all__ = ['layer_norm_fwd', 'layer_norm_bwd']


@triton.jit
def _layer_norm_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr,
        C, P, eps,
        s_x_b, s_x_c, s_x_p, s_y_b, s_y_c, s_y_p,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
        AX: tl.constexpr, RMS: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    # AX is the channel axis of the tile: 1 ([BLOCK_P, BLOCK_C]) when channels are the contiguous axis, so the
    # channel reductions stay inside a warp; else 0 ([BLOCK_C, BLOCK_P]).
    if AX == 1:
        cc = c[None, :]
        pp = p[:, None]
    else:
        cc = c[:, None]
        pp = p[None, :]
    c_mask = c < C
    p_mask = p < P
    mask = (cc < C) & (pp < P)
    x = tl.load(x_ptr + b * s_x_b + cc * s_x_c + pp * s_x_p, mask=mask, other=0.0).to(tl.float32)
    if RMS:
        xc = x
    else:
        mean = tl.sum(x, axis=AX) / C
        xc = tl.where(mask, x - tl.expand_dims(mean, AX), 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=AX) / C + eps)
    y = xc * tl.expand_dims(rstd, AX)
    if HAS_W:
        y = y * tl.expand_dims(tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32), 1 - AX)
    if HAS_B:
        y = y + tl.expand_dims(tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32), 1 - AX)
    tl.store(y_ptr + b * s_y_b + cc * s_y_c + pp * s_y_p, y.to(y_ptr.dtype.element_ty), mask=mask)
    if not RMS:
        tl.store(mean_ptr + b * P + p, mean, mask=p_mask)
    tl.store(rstd_ptr + b * P + p, rstd, mask=p_mask)


_layer_norm_fwd_launch = CachedLauncher(_layer_norm_fwd_kernel)


@triton.jit
def _layer_norm_bwd_kernel(
        dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr,
        C, P, n_blocks, n_rows,
        s_dy_b, s_dy_c, s_dy_p, s_x_b, s_x_c, s_x_p, s_dx_b, s_dx_c, s_dx_p,
        HAS_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
        AX: tl.constexpr, RMS: tl.constexpr,
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    if AX == 1:
        cc = c[None, :]
        pp = p[:, None]
    else:
        cc = c[:, None]
        pp = p[None, :]
    c_mask = c < C
    p_mask = p < P
    mask = (cc < C) & (pp < P)
    x = tl.load(x_ptr + b * s_x_b + cc * s_x_c + pp * s_x_p, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + b * s_dy_b + cc * s_dy_c + pp * s_dy_p, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + b * P + p, mask=p_mask, other=0.0)
    if RMS:
        xhat = x * tl.expand_dims(rstd, AX)
    else:
        mean = tl.load(mean_ptr + b * P + p, mask=p_mask, other=0.0)
        xhat = tl.where(mask, (x - tl.expand_dims(mean, AX)) * tl.expand_dims(rstd, AX), 0.0)
    wdy = dy
    if HAS_W:
        wdy = dy * tl.expand_dims(tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32), 1 - AX)
    # dx = rstd * (wdy - mean_c(wdy) - xhat * mean_c(wdy * xhat)), without the mean_c(wdy) term for RMSNorm
    dx = wdy - xhat * tl.expand_dims(tl.sum(wdy * xhat, axis=AX) / C, AX)
    if not RMS:
        dx -= tl.expand_dims(tl.sum(wdy, axis=AX) / C, AX)
    dx = dx * tl.expand_dims(rstd, AX)
    tl.store(dx_ptr + b * s_dx_b + cc * s_dx_c + pp * s_dx_p, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    row = (b * n_blocks + pid_p) * C
    tl.store(dw_ptr + row + c, tl.sum(dy * xhat, axis=1 - AX), mask=c_mask)
    if not RMS:
        tl.store(dw_ptr + n_rows * C + row + c, tl.sum(dy, axis=1 - AX), mask=c_mask)


_layer_norm_bwd_launch = CachedLauncher(_layer_norm_bwd_kernel)


def _tile(channels: int, positions: int) -> Tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, num_warps): all channels of about 4096 elements of positions per program."""
    block_c = next_pow2(channels)
    block_p = max(1, min(next_pow2(positions), 4096 // block_c))
    return block_c, block_p, 8 if block_c * block_p >= 8192 else 4


def layer_norm_fwd(
        x: torch.Tensor,
        weight: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        eps: float,
        out_dtype: torch.dtype,
        rms: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """LayerNorm (RMSNorm with ``rms``: no bias) over dim 1 of a (B, C, *spatial) tensor; returns (y channel-last,
    mean (None with ``rms``), rstd), the statistics (B, P) float32."""
    weight, bias = dense(weight), dense(bias)  # the kernel reads them as rows
    s_x = bcp_strides(x)
    if s_x is None:
        x = x.contiguous()
        s_x = bcp_strides(x)
    batch, channels = x.shape[:2]
    positions = math.prod(x.shape[2:])
    # Channel-last output whatever the input layout, like timm's permute -> layer_norm -> permute (the next 1x1
    # convolutions take it without a layout conversion).
    y = torch.empty(batch, *x.shape[2:], channels, device=x.device, dtype=out_dtype).movedim(-1, 1)
    rstd = torch.empty(batch, positions, device=x.device, dtype=torch.float32)
    mean = None if rms else torch.empty_like(rstd)
    block_c, block_p, warps = _tile(channels, positions)
    grid = (cdiv(positions, block_p), batch)
    _layer_norm_fwd_launch[grid](
        x, weight if weight is not None else x, bias if bias is not None else x, y, mean if mean is not None else rstd,
        rstd, channels, positions, eps, *s_x, positions * channels, 1, channels,
        HAS_W=weight is not None, HAS_B=bias is not None, BLOCK_C=block_c, BLOCK_P=block_p,
        AX=int(s_x[1] == 1), RMS=rms, num_warps=warps,
    )
    return y, mean, rstd


def layer_norm_bwd(
        dy: torch.Tensor,
        x: torch.Tensor,
        weight: Optional[torch.Tensor],
        mean: Optional[torch.Tensor],
        rstd: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dx in x's layout and dtype, float32 (2, C) holding the weight and the bias gradient); RMSNorm's (no mean:
    ``mean`` None) gives (1, C), the weight gradient."""
    weight = dense(weight)
    s_x, s_dy = bcp_strides(x), bcp_strides(dy)
    if s_x is None:
        x = x.contiguous()
        s_x = bcp_strides(x)
    if s_dy is None:
        dy = dy.contiguous()
        s_dy = bcp_strides(dy)
    batch, channels = x.shape[:2]
    positions = math.prod(x.shape[2:])
    block_c, block_p, warps = _tile(channels, positions)
    n_blocks = cdiv(positions, block_p)
    dx = torch.empty_like(x)
    # Per-program partial sums of the weight (row block 0) and bias (row block 1) gradients: one torch sum.
    n_rows = batch * n_blocks
    rms = mean is None
    partials = torch.empty(1 if rms else 2, n_rows, channels, device=x.device, dtype=torch.float32)
    _layer_norm_bwd_launch[(n_blocks, batch)](
        dy, x, weight if weight is not None else x, rstd if rms else mean, rstd, dx, partials,
        channels, positions, n_blocks, n_rows, *s_dy, *s_x, *bcp_strides(dx),
        HAS_W=weight is not None, BLOCK_C=block_c, BLOCK_P=block_p,
        AX=int(s_x[1] == 1), RMS=rms, num_warps=warps,
    )
    return dx, partials.sum(1)
