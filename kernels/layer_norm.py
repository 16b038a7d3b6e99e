"""``layer_norm_2d``: LayerNorm over the channels (dim 1) of (B, C, H, W) maps, as timm's ``LayerNorm2d``.

CUDA tensors go through a Triton kernel (``kernels.triton_layer_norm``) registered as a ``torch.library`` custom
op (``linzoo::layer_norm_2d``), so ``torch.compile`` traces through it; other devices use PyTorch's
``F.layer_norm`` on the channel-last view, exactly what timm does. Both compute in float32 and return the
input's dtype, or float32 under CUDA autocast (which runs ``layer_norm`` in float32), so swapping one for the
other changes no dtype anywhere in a model. Like timm's, the output is channel-last in memory
(``torch.channels_last`` for 4-D maps) whatever the input layout; the Triton path reads either layout in place,
without permute copies.

``rms_norm``: RMSNorm over the last dim of token tensors (Vim's norm), the same kernels without the mean and bias
(``linzoo::rms_norm``): the output in a chosen dtype in the same pass, and a backward whose weight gradient is
per-program partial sums instead of PyTorch's separate reduction kernel.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dispatch import eager_function, import_triton_module, triton_or_torch, use_custom_op
from ._grid import bcp_strides

__all__ = ['layer_norm_2d', 'rms_norm']

_triton_layer_norm, _triton_import_error = import_triton_module('triton_layer_norm')


def _fwd_impl(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
              out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    return _triton_layer_norm.layer_norm_fwd(x, weight, bias, eps, out_dtype)


_fwd_op = torch.library.custom_op('linzoo::layer_norm_2d_fwd', _fwd_impl, mutates_args=())


@_fwd_op.register_fake
def _fwd_fake(x, weight, bias, eps, out_dtype):
    positions = math.prod(x.shape[2:])
    stats = x.new_empty(x.shape[0], positions, dtype=torch.float32)
    y = x.new_empty(x.shape[0], *x.shape[2:], x.shape[1], dtype=out_dtype)
    return y.movedim(-1, 1), stats, torch.empty_like(stats)


def _bwd_impl(dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor) -> Tuple[Tensor, Tensor]:
    return _triton_layer_norm.layer_norm_bwd(dy, x, weight, mean, rstd)


_bwd_op = torch.library.custom_op('linzoo::layer_norm_2d_bwd', _bwd_impl, mutates_args=())


@_bwd_op.register_fake
def _bwd_fake(dy, x, weight, mean, rstd):
    # dx has x's strides, or contiguous ones where the kernel wrapper copied x (spatial dims that do not merge).
    dx = torch.empty_like(x if bcp_strides(x) is not None else x.contiguous())
    return dx, x.new_empty(2, x.shape[1], dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, _ = inputs
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _backward(ctx, dy, dmean, drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dweight_bias = (_bwd_op if use_custom_op() else _bwd_impl)(dy, x, weight, mean, rstd)
    dw = dweight_bias[0].to(weight.dtype) if weight is not None else None
    db = dweight_bias[1].to(bias.dtype) if bias is not None else None
    return dx, dw, db, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _layer_norm_dtype(x: Tensor) -> torch.dtype:
    """The dtype F.layer_norm returns for x: float32 under CUDA autocast (CPU autocast does not cast it, and autocast
    leaves float64 alone), else x's."""
    autocast = x.is_cuda and torch.is_autocast_enabled('cuda') and x.dtype != torch.float64
    return torch.float32 if autocast else x.dtype


def _traced_layer_norm_2d(
        xp: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, out_dtype: Optional[torch.dtype],
) -> Tensor:
    """``layer_norm_2d``'s PyTorch path as elementwise ops and means over the channel axis (last in ``xp``, the
    channel-last view of x), in float32 (float64 for float64 maps), for torch.compile graphs (inductor fuses them).

    ``F.layer_norm`` there went wrong in two ways: given a strided output gradient (a channel-first map's,
    permuted), its backward returns a contiguous input gradient where its meta function promises the output
    gradient's strides, and a compiled backward that planned a view on them failed at run time (GroupMamba's group
    norm); a gradient hook making it contiguous fixed that on torch 2.14, but dynamo cannot trace the hook on 2.9
    (a graph break per norm).
    """
    out_dtype = out_dtype or _layer_norm_dtype(xp)
    compute = torch.promote_types(xp.dtype, torch.float32)  # float64 stays float64
    xf = xp.to(compute)
    centred = xf - xf.mean(-1, keepdim=True)
    y = centred * torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(compute)
    if bias is not None:
        y = y + bias.to(compute)
    # Channel-last in memory, as the eager path returns.
    y = y.contiguous().to(out_dtype)
    return y.permute(0, y.dim() - 1, *range(1, y.dim() - 1))


_LayerNorm2dFunction = eager_function(
    '_LayerNorm2dFunction', 'linzoo::layer_norm_2d', _fwd_impl, _setup_context, _backward)


def layer_norm_2d(
        x: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        eps: float,
        backend: Optional[str] = None,
        out_dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """LayerNorm of every position's channel vector of ``x`` (B, C, *spatial).

    Args:
        x: Maps (B, C, H, W) (or any (B, C, ...)), channel-first or channels_last.
        weight: Per-channel scale (C,) or None.
        bias: Per-channel shift (C,) or None.
        eps: Added to the variance.
        backend: 'triton' (CUDA), 'torch', or None to choose from the device and dtype (float64 -> 'torch').
        out_dtype: Floating dtype of the output (computed in float32 and rounded once); None for what
            ``F.layer_norm`` returns: float32 under CUDA autocast, else x's dtype.

    Returns:
        Normalised maps of x's shape, channel-last in memory.
    """
    if x.dim() < 2:
        raise ValueError(f'layer_norm_2d: x must be (B, C, ...), got shape {tuple(x.shape)}')
    channels = x.shape[1]
    for name, p in (('weight', weight), ('bias', bias)):
        if p is not None and tuple(p.shape) != (channels,):
            raise ValueError(f'layer_norm_2d: {name} must have shape (C,) = ({channels},), got {tuple(p.shape)}')
    if out_dtype is not None and not out_dtype.is_floating_point:
        raise ValueError(f'layer_norm_2d: out_dtype must be a floating dtype, got {out_dtype}')
    backend = triton_or_torch('layer_norm_2d', x, backend, _triton_layer_norm, _triton_import_error,
                              "PyTorch's layer_norm")
    if backend == 'torch' or x.numel() == 0:
        dims = (0, *range(2, x.dim()), 1)
        if torch.compiler.is_compiling():
            return _traced_layer_norm_2d(x.permute(dims), weight, bias, eps, out_dtype)
        if out_dtype is not None and x.dtype in (torch.float16, torch.bfloat16):
            # Computed in float32 and rounded once to out_dtype, like the Triton kernel.
            x = x.float()
            weight, bias = (p.float() if p is not None else None for p in (weight, bias))
        y = F.layer_norm(x.permute(dims), (channels,), weight, bias, eps)
        y = y.permute(0, x.dim() - 1, *range(1, x.dim() - 1))
        return y.to(out_dtype) if out_dtype is not None else y
    out_dtype = out_dtype or _layer_norm_dtype(x)
    norm = _fwd_op if use_custom_op() else _LayerNorm2dFunction.apply
    return norm(x, weight, bias, float(eps), out_dtype)[0]


# ----------------------------------------------------------------------------------------------------------
# RMSNorm over the last dim: the kernels above with RMS on, on the (B, D, L) view of (B, L, D) tokens.

def _rms_fwd_impl(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    y, _, rstd = _triton_layer_norm.layer_norm_fwd(x, weight, None, eps, out_dtype, rms=True)
    return y, rstd


_rms_fwd_op = torch.library.custom_op('linzoo::rms_norm_fwd', _rms_fwd_impl, mutates_args=())


@_rms_fwd_op.register_fake
def _rms_fwd_fake(x, weight, eps, out_dtype):
    y, _, rstd = _fwd_fake(x, weight, None, eps, out_dtype)
    return y, rstd


def _rms_bwd_impl(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> Tuple[Tensor, Tensor]:
    dx, dweight = _triton_layer_norm.layer_norm_bwd(dy, x, weight, None, rstd)
    return dx, dweight[0]


_rms_bwd_op = torch.library.custom_op('linzoo::rms_norm_bwd', _rms_bwd_impl, mutates_args=())


@_rms_bwd_op.register_fake
def _rms_bwd_fake(dy, x, weight, rstd):
    dx, dweight_bias = _bwd_fake(dy, x, weight, None, rstd)
    return dx, dweight_bias[0]


def _rms_setup_context(ctx, inputs, output):
    x, weight, _, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _rms_backward(ctx, dy, drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dweight = (_rms_bwd_op if use_custom_op() else _rms_bwd_impl)(dy, x, weight, rstd)
    return dx, dweight.to(weight.dtype), None, None


_rms_fwd_op.register_autograd(_rms_backward, setup_context=_rms_setup_context)

_RMSNormFunction = eager_function('_RMSNormFunction', 'linzoo::rms_norm', _rms_fwd_impl, _rms_setup_context,
                                  _rms_backward)


def rms_norm(
        x: Tensor,
        weight: Tensor,
        eps: float,
        out_dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
) -> Tensor:
    """RMSNorm over the last dim of ``x`` (..., D): ``x / sqrt(mean(x^2) + eps) * weight``, computed in float32.

    Args:
        x: Tokens (..., D), e.g. Vim's float32 residual stream (B, L, D).
        weight: Per-channel scale (D,).
        eps: Added to the mean square.
        out_dtype: Floating dtype of the output (rounded once from float32), e.g. the autocast dtype of the
            projection that follows; None for x's dtype.
        backend: 'triton' (CUDA), 'torch' (``F.rms_norm``), or None to choose from the device and dtype.

    Returns:
        The normalised tokens, x's shape, contiguous.
    """
    if x.dim() < 1 or weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f'rms_norm: weight must have shape (D,) for x (..., D); got x {tuple(x.shape)} and weight '
                         f'{tuple(weight.shape)}')
    if out_dtype is not None and not out_dtype.is_floating_point:
        raise ValueError(f'rms_norm: out_dtype must be a floating dtype, got {out_dtype}')
    out_dtype = out_dtype or x.dtype
    backend = triton_or_torch('rms_norm', x, backend, _triton_layer_norm, _triton_import_error, "PyTorch's rms_norm")
    if backend == 'torch' or x.numel() == 0:
        compute = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64
        return F.rms_norm(x.to(compute), weight.shape, weight.to(compute), eps).to(out_dtype)
    # (rows, L, D) -> the channel-first view (rows, D, L) of the same memory; the kernel's output is channel-last.
    tokens = x.reshape(-1, x.shape[-2] if x.dim() > 1 else 1, x.shape[-1]).transpose(1, 2)
    norm = _rms_fwd_op if use_custom_op() else _RMSNormFunction.apply
    return norm(tokens, weight, float(eps), out_dtype)[0].transpose(1, 2).reshape(x.shape)
