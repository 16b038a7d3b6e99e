"""The timm model API shared by the zoo's hierarchical (4-stage, NCHW) backbones.

Families differ in their stem, blocks and downsampling; the timm contract around them is the same, so it
lives here once. A subclass builds ``stem``, ``stages`` (an ``nn.Sequential`` of stages that each honour a
``grad_checkpointing`` flag), ``norm`` (the final norm), ``head`` (a timm ``ClassifierHead``),
``feature_norms`` (per-stage norms for detection, or None), ``feature_info``, and sets ``in_chans`` and
``input_multiple`` (H and W must be multiples of it; 1 for any size).
"""
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from .ssm import ssm_no_weight_decay

__all__ = ['Stage', 'StagedBackbone']


class Stage(nn.Module):
    """Optional downsampling, then a sequence of blocks (checkpointed when ``grad_checkpointing`` is set)."""

    def __init__(self, blocks: List[nn.Module], downsample: Optional[nn.Module] = None):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class StagedBackbone(nn.Module):
    """Base class of a stem -> stages -> norm -> head backbone with stage outputs at growing strides."""
    in_chans: int
    input_multiple: int = 1

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm|^feature_norms', (99999,)),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return ssm_no_weight_decay(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) with '
                             f'H, W >= 1 (in_chans={self.in_chans}), got {tuple(x.shape)}')
        m = self.input_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f'{type(self).__name__} needs H and W divisible by {m}, got {tuple(x.shape[2:])}: its '
                             f'patch stem has stride {m}; pad or resize the input (the official code would '
                             f'silently drop the remainder)')

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward returning the stage outputs as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Stages to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final norm to the last stage output (ignored with ``feature_norms``, which are
                always applied).
            stop_early: Stop after the last requested stage.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.

        Returns:
            The stage outputs, preceded by the final features unless ``intermediates_only``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{type(self).__name__}.forward_intermediates: output_fmt must be 'NCHW', "
                             f'got {output_fmt!r}')
        self._check_input(x)
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[:max_index + 1]

        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                if self.feature_norms is not None:
                    intermediates.append(self.feature_norms[i](x))
                elif norm and i == last_idx:
                    intermediates.append(self.norm(x))
                else:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) < len(self.stages):  # stopped early: the final norm belongs to the last stage's width
            return x, intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the final norm / head) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if self.feature_norms is not None:
            self.feature_norms = self.feature_norms[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
