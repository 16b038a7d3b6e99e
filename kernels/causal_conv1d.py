"""``causal_conv1d``: the causal depthwise conv1d (+ SiLU) of Mamba blocks, ``causal_conv1d_fn``'s semantics.

CUDA tensors go through a Triton kernel (``kernels.triton_causal_conv1d``) registered as the ``torch.library``
custom ops ``linzoo::causal_conv1d_fwd`` / ``_bwd`` (so ``torch.compile`` traces through it); other devices use
``F.conv1d`` on the left-padded sequence, what the official code does without the causal-conv1d package. Both
return the dtype ``nn.Conv1d`` would (autocast's on CUDA under autocast, else the inputs' common dtype).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dispatch import autocast_dtype, eager_function, import_triton_module, triton_or_torch, use_custom_op
from ._grid import dense

__all__ = ['causal_conv1d']

_triton_causal_conv1d, _triton_import_error = import_triton_module('triton_causal_conv1d')


def _fwd_impl(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, out_dtype: torch.dtype) -> Tensor:
    return _triton_causal_conv1d.causal_conv1d_fwd(x, weight, bias, silu, out_dtype)


_fwd_op = torch.library.custom_op('linzoo::causal_conv1d_fwd', _fwd_impl, mutates_args=())


@_fwd_op.register_fake
def _fwd_fake(x, weight, bias, silu, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype)


def _bwd_impl(
        dy: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    return _triton_causal_conv1d.causal_conv1d_bwd(dy, x, weight, bias, silu)


_bwd_op = torch.library.custom_op('linzoo::causal_conv1d_bwd', _bwd_impl, mutates_args=())


@_bwd_op.register_fake
def _bwd_fake(dy, x, weight, bias, silu):
    channels, taps = x.shape[1], weight.shape[-1]
    return (torch.empty(x.shape, device=x.device, dtype=x.dtype),
            x.new_empty(channels, taps, dtype=torch.float32), x.new_empty(channels, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x, weight, bias, silu, _ = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu = silu


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = (_bwd_op if use_custom_op() else _bwd_impl)(dy, x, weight, bias, ctx.silu)
    return dx, dw.view(weight.shape).to(weight.dtype), db.to(bias.dtype) if bias is not None else None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)

_CausalConv1dFunction = eager_function(
    '_CausalConv1dFunction', 'linzoo::causal_conv1d', _fwd_impl, _setup_context, _backward)


def causal_conv1d(
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor] = None,
        activation: Optional[str] = None,
        backend: Optional[str] = None,
) -> Tensor:
    """Causal depthwise convolution of (B, C, L) sequences: ``y[t] = bias + sum_k weight[k] x[t - K + 1 + k]``
    (zeros before the start), then SiLU with ``activation='silu'``.

    The same as ``F.conv1d(x, weight, bias, padding=K - 1, groups=C)[..., :L]`` (and ``F.silu``), i.e. an
    ``nn.Conv1d(C, C, K, groups=C, padding=K - 1)`` cut to the input length, as in Mamba and Vim.

    Args:
        x: Sequences (B, C, L), any strides.
        weight: (C, 1, K) as ``nn.Conv1d`` holds it, or (C, K).
        bias: (C,) or None.
        activation: None or 'silu'.
        backend: 'triton' (CUDA), 'torch', or None to choose from the device and dtype (float64 -> 'torch').

    Returns:
        (B, C, L), contiguous on the Triton path.
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        what = f'shape {tuple(x.shape)} {x.dtype}' if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f'causal_conv1d: x must be floating (B, C, L) sequences, got {what}')
    channels = x.shape[1]
    if weight.dim() not in (2, 3) or weight.shape[0] != channels or (weight.dim() == 3 and weight.shape[1] != 1):
        raise ValueError(f'causal_conv1d: weight must be (C, 1, K) or (C, K) with C = {channels}, got '
                         f'{tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f'causal_conv1d: bias must be (C,) = ({channels},), got {tuple(bias.shape)}')
    if activation not in (None, 'silu'):
        raise ValueError(f"causal_conv1d: activation must be None or 'silu', got {activation!r}")
    backend = triton_or_torch('causal_conv1d', x, backend, _triton_causal_conv1d, _triton_import_error,
                              "PyTorch's conv1d")
    taps = weight.shape[-1]
    if backend == 'torch' or x.numel() == 0:
        y = F.conv1d(x, weight.reshape(channels, 1, taps), bias, padding=taps - 1, groups=channels)[..., :x.shape[-1]]
        return F.silu(y) if activation == 'silu' else y
    out_dtype = autocast_dtype(x.device.type) or torch.promote_types(x.dtype, weight.dtype)
    conv = _fwd_op if use_custom_op() else _CausalConv1dFunction.apply
    return conv(x, dense(weight), dense(bias), activation == 'silu', out_dtype)  # the kernels read them as rows
