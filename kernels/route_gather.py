"""One Triton kernel for the plan gathers of ``scans``' ``flatten`` and ``merge`` on CUDA.

``torch.gather`` with an index expanded over batch and channels reads an int64 index per element and runs at a
fraction of the copy bandwidth; ``merge`` then writes K route maps only to sum them. Here a program reads the
plan row once for a [BLOCK_C, BLOCK_J] tile, gathers the tokens in the source's own strides (channel-first or
channel-last maps), and either writes each route or sums the routes in float32 and writes one map.

``route_gather_op`` is the same function registered as the custom op ``linzoo::route_gather``, which
``torch.compile`` keeps opaque.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import CachedLauncher
from ._grid import cdiv, next_pow2

__all__ = ['route_gather', 'route_gather_op', 'route_gather_pair']


@triton.jit
def _route_gather_kernel(
        src_ptr, src2_ptr, index_ptr, out_ptr, out2_ptr,
        C, J, scale,
        s_src_b, s_src_g, s_src_c, s_src_t, s_out_b, s_out_k, s_out_c, s_out_j,
        NUM_ROUTES: tl.constexpr, SUM_ROUTES: tl.constexpr, SCALED: tl.constexpr, PAIR: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    c_block = tl.program_id(1)
    if PAIR:  # the second half of the channel blocks gathers src2 into out2 (same shapes and strides)
        c_blocks = tl.cdiv(C, BLOCK_C)
        if c_block >= c_blocks:
            c_block -= c_blocks
            src_ptr = src2_ptr
            out_ptr = out2_ptr
    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    j_mask = j < J
    mask = (c < C)[:, None] & j_mask[None, :]
    src_rows = src_ptr + b * s_src_b + c[:, None].to(tl.int64) * s_src_c
    out_rows = out_ptr + b * s_out_b + c[:, None].to(tl.int64) * s_out_c + j[None, :].to(tl.int64) * s_out_j
    acc = tl.zeros([BLOCK_C, BLOCK_J], tl.float32)
    for k in tl.static_range(NUM_ROUTES):
        token = tl.load(index_ptr + k * J + j, mask=j_mask, other=0)
        # s_src_g is 0 when one source map serves every route (else one map per route: channel-split scans, merge).
        vals = tl.load(src_rows + k * s_src_g + token[None, :] * s_src_t, mask=mask, other=0.0)
        if SUM_ROUTES:
            acc += vals.to(tl.float32)
        elif SCALED:
            tl.store(out_rows + k * s_out_k, (vals.to(tl.float32) * scale).to(out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(out_rows + k * s_out_k, vals.to(out_ptr.dtype.element_ty), mask=mask)
    if SUM_ROUTES:
        if SCALED:
            acc = acc * scale
        tl.store(out_rows, acc.to(out_ptr.dtype.element_ty), mask=mask)


_route_gather_launch = CachedLauncher(_route_gather_kernel)


def _tile(channels: int, length: int, channels_contiguous: bool) -> Tuple[int, int, int]:
    """(BLOCK_C, BLOCK_J, num_warps), from sweeps on an H100 (benchmarks/models.md).

    Sources with contiguous channels read BLOCK_C-wide rows per token. Channel-first sources are read along the
    token axis in route order, which for column-major or reversed routes strides across the map; tiles spanning
    a whole route (or 512 steps of it) on few channels reuse the fetched sectors: 1.1-2.2x faster than 32 x 64
    tiles on VMamba-T's stages.
    """
    if channels_contiguous:
        return 32, 128, 4
    block_j = min(512, next_pow2(length))
    return min(max(1, 2048 // block_j), next_pow2(channels)), block_j, 2


def route_gather(src: Tensor, index: Tensor, sum_routes: bool, channels_last: bool,
                 channels_contiguous_out: bool = False, scale: float = 1.0,
                 out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``out[b, k, c, j] = scale * src[b, g, c, index[k, j]]`` with g = k (or 0 for one source map), summed over k
    with ``sum_routes`` (one output map), in float32 then ``out_dtype`` (default: the source dtype).

    Args:
        src: (B, G, C, T), or (B, G, T, C) with ``channels_last``; G = 1 or K; any strides.
        index: (K, J) int64 token indices into T.
        sum_routes: Sum the K gathered routes into one (B, 1, ...) output.
        channels_last: Layout of src and of the output.
        channels_contiguous_out: Write the (B, K or 1, C, J) output with the channel axis contiguous (the view
            of a channels_last map), e.g. a gradient in the layout of the map it belongs to.
        scale: Factor applied in float32 before the output cast (e.g. merge's 1 / visits per token).
        out_dtype: Output dtype, e.g. the next layer's compute dtype, so that no separate cast follows.

    Returns:
        (B, K or 1, C, J) or, with ``channels_last``, (B, K or 1, J, C); contiguous, or channel-contiguous (above).
    """
    num_routes, length = index.shape
    if channels_last:
        batch, _, _, channels = src.shape
    else:
        batch, _, channels, _ = src.shape
    out_routes = 1 if sum_routes else num_routes
    shape = (batch, out_routes, length, channels) if channels_last else (batch, out_routes, channels, length)
    dtype = out_dtype if out_dtype is not None else src.dtype
    if channels_contiguous_out and not channels_last:
        out = src.new_empty(batch, out_routes, length, channels, dtype=dtype).transpose(2, 3)
    else:
        out = torch.empty(shape, device=src.device, dtype=dtype)
    _launch(src, index, out, sum_routes, channels_last, scale)
    return out


def route_gather_pair(src: Tensor, src2: Tensor, index: Tensor, sum_routes: bool, out: Tensor, out2: Tensor) -> None:
    """``route_gather`` of two channel-first sources into two given outputs in one launch (eager only).

    E.g. Mamba's x and z halves of one projection read along the routes together, and their gradients merged
    back into the projection's layout together. ``src`` and ``src2`` must have the same shape and strides, and so
    must ``out`` and ``out2`` (shaped like ``route_gather``'s result).
    """
    if src.shape != src2.shape or src.stride() != src2.stride() or out.shape != out2.shape \
            or out.stride() != out2.stride() or src.dtype != src2.dtype or out.dtype != out2.dtype:
        raise ValueError(f'route_gather_pair: the two sources and the two outputs must match in shape, strides and '
                         f'dtype; got sources {tuple(src.shape)}/{src.stride()} and {tuple(src2.shape)}/'
                         f'{src2.stride()}, outputs {tuple(out.shape)}/{out.stride()} and {tuple(out2.shape)}/'
                         f'{out2.stride()}')
    _launch(src, index, out, sum_routes, False, 1.0, src2, out2)


def _launch(src: Tensor, index: Tensor, out: Tensor, sum_routes: bool, channels_last: bool, scale: float,
            src2: Optional[Tensor] = None, out2: Optional[Tensor] = None) -> None:
    num_routes, length = index.shape
    if channels_last:
        batch, groups, _, channels = src.shape
        s_b, s_g, s_t, s_c = src.stride()
        o_b, o_k, o_j, o_c = out.stride()
    else:
        batch, groups, channels, _ = src.shape
        s_b, s_g, s_c, s_t = src.stride()
        o_b, o_k, o_c, o_j = out.stride()
    if groups == 1:
        s_g = 0
    block_c, block_j, warps = _tile(channels, length, s_c == 1)
    pair = src2 is not None
    grid = (cdiv(length, block_j), cdiv(channels, block_c) * (2 if pair else 1), batch)
    _route_gather_launch[grid](
        src, src2 if pair else src, index, out, out2 if pair else out, channels, length, scale,
        s_b, s_g, s_c, s_t, o_b, o_k, o_c, o_j,
        NUM_ROUTES=num_routes, SUM_ROUTES=sum_routes, SCALED=scale != 1.0, PAIR=pair, BLOCK_C=block_c,
        BLOCK_J=block_j, num_warps=warps,
    )


# The same as a custom op, for torch.compile graphs and dispatch modes (kernels._dispatch.use_custom_op).
route_gather_op = torch.library.custom_op('linzoo::route_gather', route_gather, mutates_args=())


@route_gather_op.register_fake
def _route_gather_fake(src, index, sum_routes, channels_last, channels_contiguous_out=False, scale=1.0,
                       out_dtype=None):
    out_routes = 1 if sum_routes else index.shape[0]
    dtype = out_dtype if out_dtype is not None else src.dtype
    if channels_last:
        return src.new_empty(src.shape[0], out_routes, index.shape[1], src.shape[3], dtype=dtype)
    if channels_contiguous_out:
        return src.new_empty(src.shape[0], out_routes, index.shape[1], src.shape[2], dtype=dtype).transpose(2, 3)
    return src.new_empty(src.shape[0], out_routes, src.shape[2], index.shape[1], dtype=dtype)
