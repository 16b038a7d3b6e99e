"""A simple feature pyramid for plain (single-stride) backbones, as in ViTDet (Li et al., ECCV 2022)."""
from typing import Any, Dict, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from torch import Tensor

__all__ = ['SimpleFeaturePyramid']


def _rescale(channels: int, factor: float) -> Tuple[nn.Module, int]:
    """The resampling of one level: (module, output channels). Upsampling halves the channels per factor 2."""
    if factor == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2),
            LayerNorm2d(channels // 2),
            nn.GELU(),
            nn.ConvTranspose2d(channels // 2, channels // 4, kernel_size=2, stride=2),
        ), channels // 4
    if factor == 2:
        return nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2), channels // 2
    if factor == 1:
        return nn.Identity(), channels
    if factor == 0.5:
        return nn.MaxPool2d(kernel_size=2, stride=2), channels
    raise ValueError(f'SimpleFeaturePyramid: scale factors must be 4, 2, 1 or 0.5, got {factor}')


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Multi-scale maps from the single-stride maps of a plain backbone (Vim, M2-ViT).

    Each level resamples a backbone map by its scale factor (transposed convolutions up, max pooling down), then
    projects it to ``out_channels`` by a 1x1 and a 3x3 convolution, each followed by a LayerNorm. Levels beyond the
    scale factors (``num_outs``) max-pool the last one by 2, like ViTDet's extra level for the RPN. The input is one
    map, from which every level is made (ViTDet), or one map per scale factor, level i from map i (BEiT-style
    segmentation: earlier blocks feed the finer levels).

    Args:
        in_channels: Channels of the backbone maps (a plain backbone has one width).
        out_channels: Channels of every output level.
        scale_factors: Resampling of each level relative to the backbone stride, from fine to coarse; each of 4, 2,
            1 and 0.5. (4, 2, 1, 0.5) gives strides 4-32 from a stride-16 backbone.
        num_outs: Number of output levels, at least ``len(scale_factors)``.
        init_cfg: mmengine initialisation of the convolutions (Xavier uniform, as mmdet's FPN).
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: int = 256,
            scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
            num_outs: int = 5,
            init_cfg: Optional[Dict[str, Any]] = dict(type='Xavier', layer='Conv2d', distribution='uniform'),
    ):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            raise ValueError(f'SimpleFeaturePyramid: in_channels must be one int (the width of the plain backbone), '
                             f'got {in_channels!r}')
        if num_outs < len(scale_factors):
            raise ValueError(f'SimpleFeaturePyramid: num_outs ({num_outs}) must be at least the number of scale '
                             f'factors {tuple(scale_factors)}')
        self.scale_factors = tuple(scale_factors)
        self.num_outs = num_outs
        self.rescales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for factor in self.scale_factors:
            rescale, channels = _rescale(in_channels, factor)
            self.rescales.append(rescale)
            self.lateral_convs.append(nn.Sequential(
                nn.Conv2d(channels, out_channels, kernel_size=1, bias=False), LayerNorm2d(out_channels)))
            self.output_convs.append(nn.Sequential(
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(out_channels)))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        if len(inputs) not in (1, len(self.scale_factors)):
            raise ValueError(f'SimpleFeaturePyramid expects one backbone map or one per scale factor '
                             f'({len(self.scale_factors)}), got {len(inputs)}: set the backbone out_indices')
        maps = list(inputs) * len(self.scale_factors) if len(inputs) == 1 else list(inputs)
        outs = [
            output_conv(lateral_conv(rescale(x)))
            for x, rescale, lateral_conv, output_conv in zip(maps, self.rescales, self.lateral_convs, self.output_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
