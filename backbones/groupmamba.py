""" GroupMamba: Efficient Group-Based Visual State Space Model

Paper: `GroupMamba: Efficient Group-Based Visual State Space Model` - https://arxiv.org/abs/2407.13772
Original code: https://github.com/Amshaker/GroupMamba (MIT license, Copyright (c) 2024 Abdelrahman Shaker)

The three released ImageNet-1K classifiers (T, S, B), weight-compatible with the official checkpoints through
``checkpoint_filter_fn``:

* Stem: 7x7/s2 conv + BN + ReLU, two 3x3 conv + BN + ReLU, 3x3/s2 conv + LayerNorm (stride 4). Stages 2-4 open
  with a 3x3/s2 conv + LayerNorm; stages 1-3 close with a LayerNorm (eps 1e-6) that the next stage reads.
* Block: ``x + DropPath(MGM(x))``, then ``x + DropPath(FFN(LN(x)))`` with the PVTv2 FFN (1x1, 3x3 depthwise,
  GELU, 1x1). The pre-norm of the token mixer lives inside it (see below).
* Modulated Group Mamba (MGM) layer: ``x = LN(x)``; the channels are split into four groups and group g runs
  its own single-direction VSSS block (in_proj -> x, z; depthwise 3x3 + SiLU; selective scan along row,
  column, reversed row, reversed column for g = 1..4; LayerNorm; x SiLU(z); out_proj). The concatenated group
  outputs are multiplied by ``skip_scale`` and by the normalised input, then by a squeeze-excitation style
  "channel affinity" of the normalised input (mean over positions, C -> C/16 -> C, sigmoid), and finally pass
  the *same* LayerNorm once more and a linear projection.
* Head: the mean of the last stage map (a "class token") goes through one more MGM layer + MLP ("ClassBlock",
  run on a 1x1 map, so its scans have length 1 and it sees no other token), a LayerNorm, and two linear heads
  (class and distillation, DeiT style): eval logits are their average.

How it is built here:

* The four VSSS blocks are one module: the ``grouped`` scan of ``scans`` gives route k of its base scan
  (``'cross'``: row, column, both reversed, GroupMamba's order) to channel group k, so the four selective scans
  are ONE kernel call with grouped B/C on one ``SelectiveSSM`` (K = 4 routes, C/4 channels each) that stacks
  the four official parameter sets. The per-group in_proj and out_proj are grouped 1x1 convolutions, the
  depthwise convs one depthwise conv and the per-group LayerNorms one grouped LayerNorm; the filter
  concatenates the official per-group tensors. The official ``SelectiveScanCore`` path casts the scan inputs to
  float32; the kernel here computes in float32 from the half-precision inputs, with bitwise the same results
  (see ``SelectiveSSM``).
* The model runs channel-first (NCHW): the official channel-last Linear layers are 1x1 convolutions, whose
  weights the filter reshapes.
* ``scan=`` takes any registered scan whose routes each visit every token once: a plain scan becomes the base of
  a ``grouped`` scan (``scan='hilbert'`` gives two groups scanning the Hilbert curve and its reverse), a
  channel-splitting scan is used as it is. The number of channel groups is the scan's K; only the default
  (``'cross'``, K = 4) matches the official checkpoints.
* Inner LayerNorms (the MGM layer's shared norm, the VSSS out norms, stem and downsampling) use eps 1e-5, the
  others (block FFN norm, stage norms, ClassBlock norms, final norm) 1e-6, as the released factories build them.
* ``forward_features`` returns the last stage map (B, C, H/32, W/32), which the official code never normalises
  (its final norm acts on the pooled class token); ``forward_head`` pools (``global_pool='avg'``: the mean token
  and the ClassBlock), normalises and classifies. ``global_pool=''`` returns the map unpooled and needs
  ``num_classes=0``: the heads read the class token.
* Feature maps (``forward_intermediates``, ``features_only=True``): NCHW at strides 4, 8, 16, 32; stages 1-3 give
  their normalised outputs (the tensors the next stage reads), stage 4 its raw output (``norm=True`` applies the
  final LayerNorm to it at every position).
* Distillation: in eval mode, and in train mode by default, the output is ``(head(x) + dist_head(x)) / 2`` (what
  the official model returns in eval mode). Like timm's distilled DeiT, ``set_distilled_training(True)`` makes
  train mode return the pair ``(head(x), dist_head(x))`` for a distillation loss (the official model always
  does in train mode). The published parameter counts (23M, 34M, 57M) leave the distillation head out; with it
  the models have 23.4M, 34.8M and 57.2M.
* Input sizes: any H, W >= 1 (every conv pads, stage sizes are ceil(H / stride)); the scans handle any map.

Official bugs and deliberate differences:

* ``CrossScan_2`` / ``CrossScan_4`` (column-major groups) reshape the incoming gradient to (H, W) although the
  forward laid the sequence out as (W, H), so the official backward is wrong for non-square maps (correct only
  when H == W, e.g. 224x224 classification). Here the scans are index gathers differentiated by autograd, so
  gradients are right for every H, W; the forward pass is the same, so loaded checkpoints are unaffected.
* The official optimizer decays ``A_logs`` and ``dt_projs_bias`` (Swin's ``set_weight_decay`` ignores the
  ``_no_weight_decay`` mark); here ``no_weight_decay()`` lists them with ``Ds``, as Mamba intends.
* ``drop_rate`` is accepted but unused by the official model; here it is dropout before the heads (default 0).
  The official trainer fixes drop path at 0.05 for every size; the published variants here default to it.
* Importing the official ``ss2d.py`` flips global cuDNN flags; nothing here has import-time side effects.

Weights: the Hugging Face files (``groupmamba_{tiny,small,base}_ema.pth``, plain EMA state_dicts, the weights the
official ``eval.py`` measures) load with ``pretrained=True``; the README's Google Drive links hold the same
models. The model cards say "Non-commercial license" in their text while their metadata and the code say MIT.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from functools import partial
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, named_apply, register_model
from timm.models._features import feature_take_indices

from kernels import layer_norm_2d
from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint
from ._layers import LayerNorm2d
from .ssm import SelectiveSSM, ssm_no_weight_decay

__all__ = ['GroupMamba']  # model_registry will add each entrypoint fn to this

# The official inner norms are nn.LayerNorm defaults; the factories pass eps 1e-6 for the outer ones.
_InnerNorm2d = partial(LayerNorm2d, eps=1e-5)
_OuterNorm2d = partial(LayerNorm2d, eps=1e-6)
_OuterNorm = partial(nn.LayerNorm, eps=1e-6)

# Channel-affinity bottleneck (C -> C / 16 -> C), fixed in the official layer.
_REDUCTION = 16


class GroupLayerNorm2d(nn.Module):
    """LayerNorm over the channels of each of G contiguous channel groups, channel-first (B, C, H, W).

    One module for G per-group LayerNorms: group g normalises channels [g * C/G, (g + 1) * C/G) with its own
    slice of ``weight`` and ``bias``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        # The groups as batch entries of one channel LayerNorm (on CUDA the Triton kernel reads the map in place).
        # The per-channel affine follows, as the groups' slices of one weight cannot be a (C / G,) LN weight.
        x = layer_norm_2d(x.reshape(batch * self.num_groups, channels // self.num_groups, height, width), None, None,
                          self.eps)
        return x.reshape(batch, channels, height, width) * self.weight[:, None, None] + self.bias[:, None, None]


class ModulatedGroupMamba(nn.Module):
    """Modulated Group Mamba layer, channel-first, with its own pre-norm (applied again to the output).

    Args:
        dim: Channels C.
        scan: Channel-splitting scan (``splits_channels``): route k scans channel group k.
    """

    def __init__(self, dim: int, scan: Scan):
        super().__init__()
        self.scan = scan
        self.num_groups = scan.num_routes
        group_dim = scan.channels_per_route(dim)
        self.norm = _InnerNorm2d(dim)
        self.fc1 = nn.Linear(dim, dim // _REDUCTION)
        self.fc2 = nn.Linear(dim // _REDUCTION, dim)
        # Group g's in_proj yields (x_g, z_g): output channels [2g C', 2g C' + C') and [(2g + 1) C', 2(g + 1) C').
        self.in_proj = nn.Conv2d(dim, 2 * dim, 1, groups=self.num_groups, bias=False)
        self.conv_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.SiLU()
        # d_state 1, expand 1 and dt_rank "auto" = ceil(group width / 16), as the official VSSS blocks.
        self.ssm = SelectiveSSM(
            group_dim, d_state=1, dt_rank=math.ceil(group_dim / 16), num_routes=self.num_groups)
        self.out_norm = GroupLayerNorm2d(self.num_groups, dim, eps=1e-5)
        self.out_proj = nn.Conv2d(dim, dim, 1, groups=self.num_groups, bias=False)
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        batch, dim, height, width = x.shape
        affinity = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        u, z = self.in_proj(x).view(batch, self.num_groups, 2, dim // self.num_groups, height, width).unbind(2)
        u = self.act(self.conv_dw(u.reshape(batch, dim, height, width)))
        y = self.scan.merge(self.ssm(self.scan.flatten(u)), (height, width))
        # The scan output is float32; normalise it before going back to the activation dtype.
        y = self.out_norm(y).to(u.dtype) * self.act(z.reshape(batch, dim, height, width))
        y = self.out_proj(y) * self.skip_scale * x * affinity[:, :, None, None]
        return self.proj(self.norm(y))


class ConvFFN(nn.Module):
    """PVTv2 feed-forward: 1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class GroupMambaBlock(nn.Module):
    """``x + DropPath(MGM(x))`` (the MGM layer normalises its input), then ``x + DropPath(FFN(LN(x)))``."""

    def __init__(self, dim: int, scan: Scan, mlp_ratio: float, drop_path: float = 0.):
        super().__init__()
        self.mixer = ModulatedGroupMamba(dim, scan)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = _OuterNorm2d(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.mixer(x))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ClassBlock(nn.Module):
    """The official ``ClassBlock`` on a pooled token (B, C): ``x + LN(MGM(x))``, then ``x + MLP(LN(x))``.

    The MGM layer runs on the token as a 1x1 map, so each of its scans has length 1.
    """

    def __init__(self, dim: int, scan: Scan, mlp_ratio: float):
        super().__init__()
        self.norm1 = _OuterNorm(dim)
        self.norm2 = _OuterNorm(dim)
        self.mixer = ModulatedGroupMamba(dim, scan)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.norm1(self.mixer(x[:, :, None, None]).flatten(1))
        return x + self.mlp(self.norm2(x))


class Stem(nn.Module):
    """Three conv-BN-ReLU (7x7/s2, 3x3, 3x3), then a 3x3/s2 conv and LayerNorm: stride 4, any size."""

    def __init__(self, in_chans: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden_dim, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(hidden_dim, out_dim, 3, stride=2, padding=1)
        self.norm = _InnerNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(self.conv(x)))


class Downsample(nn.Module):
    """3x3 stride-2 conv (padding 1: any size maps to ceil(size / 2)) + LayerNorm."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = _InnerNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class GroupMambaStage(nn.Module):
    """Optional downsampling, ``depth`` blocks, and the stage norm (absent in the last stage)."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            scan: Scan,
            mlp_ratio: float,
            downsample: bool = True,
            norm: bool = True,
            drop_path: Optional[List[float]] = None,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(dim, out_dim) if downsample else nn.Identity()
        drop_path = drop_path or [0.] * depth
        self.blocks = nn.Sequential(*[
            GroupMambaBlock(out_dim, scan, mlp_ratio, drop_path=drop_path[i])
            for i in range(depth)
        ])
        self.norm = _OuterNorm2d(out_dim) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


def _group_scan(scan: Union[str, Scan]) -> Scan:
    """A channel-splitting scan: the scan itself if it splits channels, else a ``grouped`` scan over it."""
    if isinstance(scan, str):
        scan = create_scan(scan)
    elif not isinstance(scan, Scan):
        raise TypeError(f'GroupMamba: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
    return scan if scan.splits_channels else create_scan('grouped', base=scan)


class GroupMamba(nn.Module):
    """GroupMamba: a four-stage pyramid of Modulated Group Mamba blocks with a class block and distillation head.

    Args:
        in_chans: Input channels.
        num_classes: Classes of both heads (0 for none).
        global_pool: 'avg' (the official mean token + ClassBlock) or '' (no pooling; needs ``num_classes=0``).
        embed_dims: Width of each stage (divisible by the scan's K, at least 16).
        depths: Blocks per stage.
        mlp_ratios: FFN hidden width / width per stage (the last one also sizes the ClassBlock MLP).
        stem_hidden_dim: Width of the stem convs.
        scan: Name of a registered scan (or a ``scans.Scan``); its K routes scan K channel groups (a plain scan
            is the base of a ``grouped`` scan). 'cross' is GroupMamba.
        drop_rate: Dropout before the heads.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Tuple[int, ...] = (64, 128, 348, 448),
            depths: Tuple[int, ...] = (3, 4, 9, 3),
            mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4),
            stem_hidden_dim: int = 32,
            scan: Union[str, Scan] = 'cross',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(f'GroupMamba: embed_dims {embed_dims}, depths {depths} and mlp_ratios {mlp_ratios} must '
                             f'have one entry per stage')
        scan = _group_scan(scan)
        for dim in embed_dims:
            scan.channels_per_route(dim)  # raises if the channels do not split into the scan's K groups
            if dim < _REDUCTION:
                raise ValueError(f'GroupMamba: every embed_dim must be >= {_REDUCTION} (the channel affinity reduces '
                                 f'C to C // {_REDUCTION}), got {tuple(embed_dims)}')
        self._check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.scan = scan
        self.distilled_training = False
        self.feature_info = []

        self.stem = Stem(in_chans, stem_hidden_dim, embed_dims[0])
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]
        stages = []
        prev_dim, stride, last = embed_dims[0], 4, len(depths) - 1
        for i, (dim, depth, mlp_ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            if i > 0:
                stride *= 2
            stages.append(GroupMambaStage(
                prev_dim,
                dim,
                depth,
                scan,
                mlp_ratio,
                downsample=i > 0,
                norm=i < last,
                drop_path=dpr[i],
            ))
            prev_dim = dim
            self.feature_info += [dict(num_chs=dim, reduction=stride, module=f'stages.{i}')]
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev_dim
        self.class_block = ClassBlock(prev_dim, scan, mlp_ratios[-1])
        self.norm = _OuterNorm(prev_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.dist_head = nn.Linear(prev_dim, num_classes) if num_classes > 0 else nn.Identity()
        named_apply(_init_weights, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^stages\.(\d+)\.norm', (99999,)),
                (r'^class_block|^norm', (99999,)),
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
    def set_distilled_training(self, enable: bool = True) -> None:
        """Return ``(head(x), dist_head(x))`` in train mode, for a distillation loss (timm's distilled DeiT)."""
        self.distilled_training = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        global_pool = self.global_pool if global_pool is None else global_pool
        self._check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.dist_head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(global_pool: str, num_classes: int) -> None:
        if global_pool not in ('avg', ''):
            raise ValueError(f"GroupMamba: global_pool must be 'avg' (mean token + class block) or '', "
                             f'got {global_pool!r}')
        if global_pool == '' and num_classes > 0:
            raise ValueError(f"GroupMamba: global_pool='' returns the unpooled map, which the heads cannot "
                             f"classify; use num_classes=0 with it (got num_classes={num_classes})")

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) with H, W >= 1 '
                             f'(in_chans={self.in_chans}), got {tuple(x.shape)}')

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward returning the stage outputs (strides 4, 8, 16, 32) as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Stages to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final LayerNorm to the last stage output (stages 1-3 are always normalised).
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
                if norm and i == last_idx:
                    intermediates.append(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
                else:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the final norm / class block / heads)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.class_block = nn.Identity()
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if self.global_pool == 'avg':
            x = self.norm(self.class_block(x.mean((2, 3))))
        x = self.head_drop(x)
        if pre_logits:
            return x
        x, x_dist = self.head(x), self.dist_head(x)
        if self.distilled_training and self.training and not torch.jit.is_scripting():
            return x, x_dist
        return (x + x_dist) / 2

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str = '') -> None:
    """The official init: trunc_normal(0.02) and zero bias for every Linear (here also the 1x1 convs that replace
    them), normal(0, sqrt(2 / fan_out)) and zero bias for the spatial convs (fan_out = k * k * out / groups).

    Norms keep (1, 0), ``skip_scale`` 1 and the ``SelectiveSSM`` parameters their Mamba init.
    """
    if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# Per-group tensors of the official VSSS blocks (mamba_g1..4) -> the stacked tensor of the MGM layer here.
_GROUP_PARAMS = {
    'in_proj.weight': 'in_proj.weight',
    'conv2d.weight': 'conv_dw.weight',
    'conv2d.bias': 'conv_dw.bias',
    'x_proj_weight': 'ssm.x_proj_weight',
    'dt_projs_weight': 'ssm.dt_projs_weight',
    'dt_projs_bias': 'ssm.dt_projs_bias',
    'A_logs': 'ssm.A_logs',
    'Ds': 'ssm.Ds',
    'out_norm.weight': 'out_norm.weight',
    'out_norm.bias': 'out_norm.bias',
    'out_proj.weight': 'out_proj.weight',
}


def _remap_official_key(key: str, num_stages: int) -> str:
    """Official GroupMamba key (per-group VSSS keys already stacked) -> key of this implementation."""
    key = re.sub(r'^patch_embed1\.', 'stem.', key)
    key = re.sub(r'^patch_embed(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.', key)
    key = re.sub(r'^block(\d+)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.', key)
    # The last stage norm acts on the pooled class token: the final norm here.
    key = re.sub(r'^norm(\d+)\.', lambda m: 'norm.' if int(m.group(1)) == num_stages
                 else f'stages.{int(m.group(1)) - 1}.norm.', key)
    key = re.sub(r'^post_network\.0\.', 'class_block.', key)
    key = re.sub(r'\.attn\.', '.mixer.', key)
    return re.sub(r'\.mlp\.dwconv\.dwconv\.', '.mlp.dwconv.', key)


def _convert_official(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official keys -> this implementation, the per-group VSSS tensors concatenated group by group."""
    num_stages = max(int(m.group(1)) for m in (re.match(r'^patch_embed(\d+)\.', k) for k in state_dict) if m)
    out, groups = {}, {}
    for key, value in state_dict.items():
        match = re.match(r'^(.*)\.attn\.mamba_g(\d+)\.(.*)$', key)
        if match is None:
            out[_remap_official_key(key, num_stages)] = value
        elif match.group(3) in _GROUP_PARAMS:
            groups.setdefault((match.group(1), match.group(3)), {})[int(match.group(2))] = value
        else:
            raise ValueError(f'official GroupMamba checkpoint has an unknown VSSS tensor {key}')
    for (owner, name), parts in groups.items():
        if sorted(parts) != list(range(1, len(parts) + 1)):
            found = ', '.join(f'mamba_g{g}' for g in sorted(parts))
            raise ValueError(f'official GroupMamba checkpoint has {name} of {owner}.attn.{{{found}}}: the channel '
                             f'groups must be numbered 1..K without gaps')
        key = _remap_official_key(f'{owner}.attn.{_GROUP_PARAMS[name]}', num_stages)
        out[key] = torch.cat([parts[g] for g in sorted(parts)])
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: GroupMamba) -> Dict[str, Tensor]:
    """Convert an official GroupMamba checkpoint (or one of this implementation) for ``model``.

    Accepts the released EMA state_dicts, a training checkpoint (``'model_ema'``, the weights the published
    accuracies were measured with, is preferred over ``'model'``), an MMEngine-style ``'state_dict'`` or a plain
    state_dict, with or without a DDP ``module.`` prefix. Official keys are renamed, the four per-group VSSS
    tensors of every layer concatenated into the stacked grouped tensors, and Linear weights reshaped into the
    1x1 convs used here. A distillation head for another number of classes is dropped, so that timm replaces
    both heads when ``num_classes`` differs from the checkpoint's. The input is not modified.

    Raises:
        ValueError: The checkpoint is of another variant or configuration (the message names the mismatched
            keys and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model_ema', 'model', 'state_dict'))
    if 'patch_embed1.conv.0.weight' in state_dict:
        out = _convert_official(state_dict)
    elif 'stem.conv.0.weight' in state_dict:
        out = state_dict
    else:
        raise ValueError('checkpoint is not a GroupMamba: it has neither the official stem '
                         '(patch_embed1.conv.0.weight) nor the stem of this implementation (stem.conv.0.weight)')

    dist_head = model.state_dict().get('dist_head.weight')
    if 'dist_head.weight' in out and (dist_head is None or dist_head.shape[0] != out['dist_head.weight'].shape[0]):
        out = {k: v for k, v in out.items() if not k.startswith('dist_head.')}
    dims = tuple(info['num_chs'] for info in model.feature_info)
    return fit_state_dict(
        out,
        model,
        f'embed_dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, {model.scan.num_routes} channel '
        f'groups; official checkpoints have 4',
        optional=('dist_head.',),  # a second classifier: for other classes the model keeps its own, as for the head
    )


def _create_groupmamba(variant: str, pretrained: bool = False, **kwargs) -> GroupMamba:
    return build_model_with_cfg(
        GroupMamba,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv.0',
        'classifier': 'head',
        'license': 'mit',
        'paper_ids': 'arXiv:2407.13772',
        'paper_name': 'GroupMamba: Efficient Group-Based Visual State Space Model',
        'origin_url': 'https://github.com/Amshaker/GroupMamba',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'groupmamba_tiny.in1k': _cfg(
        hf_hub_id='Abdelrahman-shaker/GroupMamba-Tiny', hf_hub_filename='groupmamba_tiny_ema.pth'),
    'groupmamba_small.in1k': _cfg(
        hf_hub_id='Abdelrahman-shaker/GroupMamba-Small', hf_hub_filename='groupmamba_small_ema.pth'),
    'groupmamba_base.in1k': _cfg(
        hf_hub_id='Abdelrahman-shaker/GroupMamba-Base', hf_hub_filename='groupmamba_base_ema.pth'),
    'test_groupmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})


@register_model
def groupmamba_tiny(pretrained: bool = False, **kwargs) -> GroupMamba:
    """GroupMamba-T: 23M params, 83.3% IN-1K."""
    model_args = dict(
        embed_dims=(64, 128, 348, 448), depths=(3, 4, 9, 3), stem_hidden_dim=32, drop_path_rate=0.05)
    return _create_groupmamba('groupmamba_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def groupmamba_small(pretrained: bool = False, **kwargs) -> GroupMamba:
    """GroupMamba-S: 34M params, 83.9% IN-1K."""
    model_args = dict(
        embed_dims=(64, 128, 348, 512), depths=(3, 4, 16, 3), stem_hidden_dim=64, drop_path_rate=0.05)
    return _create_groupmamba('groupmamba_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def groupmamba_base(pretrained: bool = False, **kwargs) -> GroupMamba:
    """GroupMamba-B: 57M params, 84.5% IN-1K."""
    model_args = dict(
        embed_dims=(96, 192, 424, 512), depths=(3, 6, 21, 3), stem_hidden_dim=64, drop_path_rate=0.05)
    return _create_groupmamba('groupmamba_base', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_groupmamba(pretrained: bool = False, **kwargs) -> GroupMamba:
    """Tiny GroupMamba for CI; the configuration of the official-output fixture (widths 19 and 23 per group)."""
    model_args = dict(embed_dims=(16, 32, 76, 92), depths=(1, 1, 2, 1), stem_hidden_dim=16)
    return _create_groupmamba('test_groupmamba', pretrained=pretrained, **dict(model_args, **kwargs))
