"""Layers shared by several families."""
from timm.layers import LayerNorm2d as _TimmLayerNorm2d
from torch import Tensor

from kernels import layer_norm_2d

__all__ = ['LayerNorm2d']


class LayerNorm2d(_TimmLayerNorm2d):
    """timm's ``LayerNorm2d`` (same parameters, state_dict and outputs) through ``kernels.layer_norm_2d``.

    On CUDA the Triton kernel normalises channel-first and channels_last maps in place of timm's permute, copy to
    float32 (under autocast) and row kernel: 3x less time in VMamba-T's norms (benchmarks/models.md).
    """

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_2d(x, self.weight, self.bias, self.eps)
