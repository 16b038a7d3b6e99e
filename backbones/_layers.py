"""Layers shared by several families."""
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath as _TimmDropPath
from timm.layers import LayerNorm2d as _TimmLayerNorm2d
from torch import Tensor

from kernels import autocast_dtype, layer_norm_2d

__all__ = ['DropPath', 'LayerNorm2d', 'PointwiseConv2d', 'PointwiseMlp']


class LayerNorm2d(_TimmLayerNorm2d):
    """timm's ``LayerNorm2d`` (same parameters, state_dict and outputs) through ``kernels.layer_norm_2d``.

    On CUDA the Triton kernel normalises channel-first and channels_last maps in place of timm's permute, copy to
    float32 (under autocast) and row kernel: VMamba-T's 48 norms per inference step took 2.1 instead of 9.6 ms on an
    H100 (benchmarks/models.md).

    Args:
        num_channels: Channels C of the (B, C, H, W) input.
        eps: Added to the variance.
        affine: Learnable per-channel weight and bias.
        autocast_output: Under autocast, return the autocast dtype instead of float32. For norms whose output goes
            straight into a linear layer, which casts it to that dtype anyway: the same values without a float32
            write, a cast and the cast's backward.
        **kwargs: Passed to ``nn.LayerNorm`` (``device``, ``dtype``), as timm's.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, autocast_output: bool = False,
                 **kwargs):
        super().__init__(num_channels, eps=eps, affine=affine, **kwargs)
        self.autocast_output = autocast_output

    def forward(self, x: Tensor) -> Tensor:
        out_dtype = autocast_dtype(x.device.type) if self.autocast_output else None
        return layer_norm_2d(x, self.weight, self.bias, self.eps, out_dtype=out_dtype)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same parameters and state_dict) that runs as one GEMM on channels_last maps.

    The norms hand channels_last maps to the projections; cuDNN's 1x1 convolutions on them plus their separate bias
    kernels took ~6 ms of VMamba-T's inference step on an H100, the equivalent ``F.linear`` GEMMs on the (B, H, W, C)
    view 2.6 ms (benchmarks/models.md). Channel-first inputs take the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


class PointwiseMlp(nn.Module):
    """timm's ``Mlp(use_conv=True)`` (same ``fc1`` / ``fc2`` state_dict keys) on ``PointwiseConv2d`` layers."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: Callable[[], nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = PointwiseConv2d(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = PointwiseConv2d(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(_TimmDropPath):
    """timm's ``DropPath`` (stochastic depth per sample), plus ``add(shortcut, x)`` for residual branches.

    ``add`` is ``shortcut + self(x)`` as one ``addcmul`` with the per-sample scale: timm's multiply writes and
    re-reads a full-size tensor before the residual add (28 times per VMamba-T training step).
    """

    def add(self, shortcut: Tensor, x: Tensor) -> Tensor:
        if self.drop_prob == 0. or not self.training:
            return shortcut + x
        keep_prob = 1 - self.drop_prob
        scale = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        if keep_prob > 0. and self.scale_by_keep:
            scale.div_(keep_prob)
        return torch.addcmul(shortcut, x, scale)
