""" VMamba: Visual State Space Model

Paper: `VMamba: Visual State Space Model` - https://arxiv.org/abs/2401.10166 (NeurIPS 2024)
Original code: https://github.com/MzeroMiko/VMamba (MIT license, Copyright (c) 2024 UCAS)

Both published generations, weight-compatible with the official release checkpoints through
``checkpoint_filter_fn``:

* Vanilla VMamba (official ``forward_type='v0'``): patch-4 stem, SS2D with a SiLU(z) gate,
  d_state 16, ssm_ratio 2, no MLP, PatchMerging downsampling, scan inputs forced to float32.
* VMamba (``'v05_noz'``): two-conv stem, SS2D without gate, d_state 1, MLP 4x, 3x3/s2 conv
  downsampling; half-precision scan inputs with float32 output under autocast.

The model runs channel-first (NCHW) throughout: the official channel-last Linear layers are 1x1
convolutions here and the filter reshapes their weights. The token mixer takes any scan of the
``scans`` registry (``scan='hilbert'`` ...); the default ``'cross'`` is the paper's SS2D order, and
only it matches the official K=4 parameter layout.

Input sizes: the two-conv stem and the padded 3x3/s2 downsampling of VMamba take any H, W (stage
sizes are ceil(H / stride)); vanilla VMamba's 4x4/s4 patch stem needs H and W divisible by 4 (the
official code silently drops the remainder; here it is a ValueError), and PatchMerging zero-pads odd
stage sizes like the official code.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, named_apply, register_model

from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint
from ._layers import DropPath, LayerNorm2d, PointwiseConv2d, PointwiseMlp
from ._staged import Stage, StagedBackbone
from .ssm import SelectiveSSM

__all__ = ['VMamba']  # model_registry will add each entrypoint fn to this

# The official code uses nn.LayerNorm's default eps everywhere (timm's LayerNorm2d default is 1e-6).
_LayerNorm2d = partial(LayerNorm2d, eps=1e-5)
# Norms whose output goes straight into a linear layer (block norms, scan-output norm, patch merging): under
# autocast they return the dtype that layer casts to anyway (same values, one float32 round trip less).
_ProjNorm2d = partial(LayerNorm2d, eps=1e-5, autocast_output=True)


class SS2D(nn.Module):
    """2-D selective scan token mixer (VMamba SS2D), channel-first.

    ``in_proj`` (1x1) -> depthwise conv -> SiLU -> scan routes -> ``SelectiveSSM`` -> merge -> LayerNorm
    [-> x SiLU(z) when gated] -> ``out_proj`` (1x1).

    Args:
        dim: Block width.
        scan: Scan order shared by all blocks of the model.
        d_state: SSM state size N.
        ssm_ratio: Inner width = ``ssm_ratio * dim``.
        dt_rank: Rank of the dt projection.
        d_conv: Depthwise conv kernel size.
        conv_bias: Bias in the depthwise conv.
        gate: Vanilla VMamba's ``in_proj`` also produces z and the output is multiplied by SiLU(z).
        norm_layer: Norm applied to the merged scan output.
    """

    def __init__(
            self,
            dim: int,
            scan: Scan,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: int = 6,
            d_conv: int = 3,
            conv_bias: bool = False,
            gate: bool = False,
            norm_layer: Callable[[int], nn.Module] = _ProjNorm2d,
    ):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.gate = gate
        self.scan = scan
        self.in_proj = PointwiseConv2d(dim, 2 * d_inner if gate else d_inner, bias=False)
        self.conv_dw = nn.Conv2d(
            d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        self.act = nn.SiLU()
        self.ssm = SelectiveSSM(
            scan.channels_per_route(d_inner),
            d_state=d_state,
            dt_rank=dt_rank,
            num_routes=scan.num_routes,
        )
        self.out_norm = norm_layer(d_inner)
        self.out_proj = PointwiseConv2d(d_inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_proj(x)
        if self.gate:
            x, z = x.chunk(2, dim=1)
        x = self.act(self.conv_dw(x))
        height, width = x.shape[-2:]
        y = self.scan.merge(self.ssm(self.scan.flatten(x)), (height, width))
        # The scan output is float32; normalise it before going back to the activation dtype (v2's fp16 fix).
        y = self.out_norm(y).to(x.dtype)
        if self.gate:
            y = y * self.act(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """Visual state-space block: ``x + SS2D(LN(x))``, then ``x + MLP(LN(x))`` when ``mlp_ratio > 0``."""

    def __init__(
            self,
            dim: int,
            scan: Scan,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: int = 6,
            d_conv: int = 3,
            conv_bias: bool = False,
            gate: bool = False,
            mlp_ratio: float = 4.0,
            drop_path: float = 0.,
            norm_layer: Callable[[int], nn.Module] = _ProjNorm2d,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = SS2D(
            dim,
            scan,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            dt_rank=dt_rank,
            d_conv=d_conv,
            conv_bias=conv_bias,
            gate=gate,
            norm_layer=norm_layer,
        )
        self.drop_path1 = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2 = norm_layer(dim)
            self.mlp = PointwiseMlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
            self.drop_path2 = DropPath(drop_path)
        else:
            self.norm2 = self.mlp = self.drop_path2 = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop_path1.add(x, self.mixer(self.norm1(x)))
        if self.mlp is not None:
            x = self.drop_path2.add(x, self.mlp(self.norm2(x)))
        return x


class PatchMerging(nn.Module):
    """Swin-style 2x2 patch merging (vanilla VMamba ``PatchMerging2D``), channel-first.

    Odd sizes are zero-padded at the bottom/right first, like the official code.
    """

    def __init__(self, dim: int, out_dim: int, norm_layer: Callable[[int], nn.Module] = _ProjNorm2d):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = PointwiseConv2d(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        x = F.pad(x, (0, width % 2, 0, height % 2))
        height, width = x.shape[-2:]
        # Channel order of the official concat [x(0,0), x(1,0), x(0,1), x(1,1)] (row offset varies fastest).
        x = x.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 5, 3, 1, 2, 4)
        x = x.reshape(batch, 4 * channels, height // 2, width // 2)
        return self.reduction(self.norm(x))


class ConvDownsample(nn.Module):
    """3x3 stride-2 conv + norm (VMamba v2 downsampling); padding 1, so any size maps to ceil(size / 2)."""

    def __init__(self, dim: int, out_dim: int, norm_layer: Callable[[int], nn.Module] = _LayerNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = norm_layer(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class VMambaStage(Stage):
    """Optional downsampling, then ``depth`` VSS blocks."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            scan: Scan,
            downsample: Optional[Type[nn.Module]] = None,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: int = 6,
            d_conv: int = 3,
            conv_bias: bool = False,
            gate: bool = False,
            mlp_ratio: float = 4.0,
            drop_path: Optional[List[float]] = None,
    ):
        drop_path = drop_path or [0.] * depth
        super().__init__(
            blocks=[
                VSSBlock(
                    out_dim,
                    scan,
                    d_state=d_state,
                    ssm_ratio=ssm_ratio,
                    dt_rank=dt_rank,
                    d_conv=d_conv,
                    conv_bias=conv_bias,
                    gate=gate,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path[i],
                )
                for i in range(depth)
            ],
            downsample=downsample(dim, out_dim) if downsample is not None else None,
        )


class VMamba(StagedBackbone):
    """VMamba and Vanilla VMamba (``stem_type='patch', downsample_type='merge', gate=True``).

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: Classifier pooling ('avg', 'max', ... or '' for none).
        dims: Width of each stage.
        depths: Blocks per stage.
        d_state: SSM state size N.
        ssm_ratio: SS2D inner width / block width.
        dt_rank: Rank of the dt projection, or 'auto' for ceil(block width / 16).
        d_conv: Kernel size of the SS2D depthwise conv.
        conv_bias: Bias in the SS2D depthwise conv.
        gate: SiLU(z) output gate in SS2D (vanilla VMamba).
        mlp_ratio: MLP hidden width / block width; 0 for no MLP (vanilla VMamba).
        stem_type: 'conv' (two 3x3/s2 convs, LN, GELU between) or 'patch' (4x4/s4 conv + LN).
        downsample_type: 'conv' (3x3/s2 conv + LN) or 'merge' (2x2 PatchMerging + LN + 1x1 reduction).
        scan: Name of a registered scan (or a ``scans.Scan``); the parameter groups per block follow its K.
        feature_norm: Add a LayerNorm per stage output, applied to the intermediates returned by
            ``forward_intermediates`` and hence by ``features_only=True`` models: the ``outnorm{i}`` of the
            official detection/segmentation backbone (``Backbone_VSSM``).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            dims: Tuple[int, ...] = (96, 192, 384, 768),
            depths: Tuple[int, ...] = (2, 2, 5, 2),
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: Union[int, str] = 'auto',
            d_conv: int = 3,
            conv_bias: bool = False,
            gate: bool = False,
            mlp_ratio: float = 4.0,
            stem_type: str = 'conv',
            downsample_type: str = 'conv',
            scan: Union[str, Scan] = 'cross',
            feature_norm: bool = False,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f'VMamba: dims {dims} and depths {depths} must have one entry per stage')
        if stem_type not in ('conv', 'patch'):
            raise ValueError(f"VMamba: stem_type must be 'conv' or 'patch', got {stem_type!r}")
        downsample_layers = {'conv': ConvDownsample, 'merge': PatchMerging}
        if downsample_type not in downsample_layers:
            raise ValueError(f"VMamba: downsample_type must be 'conv' or 'merge', got {downsample_type!r}")
        if not (dt_rank == 'auto' or (isinstance(dt_rank, int) and dt_rank > 0)):
            raise ValueError(f"VMamba: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if isinstance(scan, str):
            scan = create_scan(scan)
        elif not isinstance(scan, Scan):
            raise TypeError(f'VMamba: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_multiple = 4 if stem_type == 'patch' else 1  # the 4x4/s4 patch stem drops remainders
        self.scan = scan
        self.feature_info = []
        norm_layer = _LayerNorm2d

        if stem_type == 'conv':
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1),
                norm_layer(dims[0] // 2),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
                norm_layer(dims[0]),
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), norm_layer(dims[0]))

        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]
        stages = []
        prev_dim, stride = dims[0], 4
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                stride *= 2
            stages.append(VMambaStage(
                prev_dim,
                dim,
                depth,
                scan,
                downsample=downsample_layers[downsample_type] if i > 0 else None,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                dt_rank=math.ceil(dim / 16) if dt_rank == 'auto' else dt_rank,
                d_conv=d_conv,
                conv_bias=conv_bias,
                gate=gate,
                mlp_ratio=mlp_ratio,
                drop_path=dpr[i],
            ))
            prev_dim = dim
            self.feature_info += [dict(num_chs=dim, reduction=stride, module=f'stages.{i}')]
        self.stages = nn.Sequential(*stages)
        self.feature_norms = nn.ModuleList([norm_layer(dim) for dim in dims]) if feature_norm else None

        self.num_features = self.head_hidden_size = prev_dim
        self.norm = norm_layer(prev_dim)
        self.head = ClassifierHead(prev_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        named_apply(_init_weights, self)


def _init_weights(module: nn.Module, name: str = '') -> None:
    """The official init: trunc_normal(0.02) and zero bias for every Linear, default init for spatial convs.

    The official Linear / Linear2d layers (in_proj, out_proj, MLP, patch-merging reduction, head) are 1x1
    convolutions here, so they get the Linear init. LayerNorms keep their (1, 0) defaults and the
    ``SelectiveSSM`` parameters their Mamba init.
    """
    if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _remap_official_key(key: str) -> str:
    """Official (current or legacy) VMamba key -> key of this implementation."""
    # Legacy names of the first releases (renamed by the official VSSM._load_from_state_dict too).
    key = re.sub(r'^patch_embed\.proj\.', 'patch_embed.0.', key)
    key = re.sub(r'^patch_embed\.norm\.', 'patch_embed.2.', key)
    key = re.sub(r'\.ln_1\.', '.norm.', key)
    key = re.sub(r'\.self_attention\.', '.op.', key)

    # Stem: v1 = [conv, permute, norm], v2 = [conv, permute, norm, permute, GELU, conv, permute, norm].
    match = re.match(r'^patch_embed\.(\d+)\.(.*)$', key)
    if match:
        index = {'0': '0', '2': '1', '5': '3', '7': '4'}[match.group(1)]
        return f'stem.{index}.{match.group(2)}'
    # The official downsampling closes stage i; here it opens stage i + 1.
    match = re.match(r'^layers\.(\d+)\.downsample\.(.*)$', key)
    if match:
        rest = re.sub(r'^1\.', 'conv.', re.sub(r'^3\.', 'norm.', match.group(2)))  # v3: [permute, conv, permute, norm]
        return f'stages.{int(match.group(1)) + 1}.downsample.{rest}'
    match = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$', key)
    if match:
        rest = match.group(3)
        rest = re.sub(r'^norm\.', 'norm1.', rest)
        rest = re.sub(r'^op\.conv2d\.', 'mixer.conv_dw.', rest)
        # Stacked SSM parameters, also under the module-style names the official loader accepts.
        rest = re.sub(r'^op\.(x_proj|dt_projs)\.(weight|bias)$', r'mixer.ssm.\1_\2', rest)
        rest = re.sub(r'^op\.(x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)$', r'mixer.ssm.\1', rest)
        rest = re.sub(r'^op\.', 'mixer.', rest)
        return f'stages.{match.group(1)}.blocks.{match.group(2)}.{rest}'
    # Classifier (legacy: top-level norm / head); the backbone's per-stage out norms.
    key = re.sub(r'^(classifier\.)?norm\.', 'norm.', key)
    key = re.sub(r'^(classifier\.)?head\.', 'head.fc.', key)
    return re.sub(r'^outnorm(\d+)\.', r'feature_norms.\1.', key)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: VMamba) -> Dict[str, Tensor]:
    """Convert an official VMamba checkpoint (classification or ``Backbone_VSSM``) to this implementation.

    Accepts the training checkpoint dict (``'model'`` preferred, like the official loader, else
    ``'model_ema'``), an MMEngine ``'state_dict'`` (``backbone.`` keys are kept, the rest dropped) or a plain
    state_dict, with or without a DDP ``module.`` prefix; renames legacy and current official keys
    (stacked ``x_proj_weight`` / ``dt_projs_*`` included) and reshapes 2-D Linear weights into the 1x1
    convs used here. The backbone's ``outnorm{i}`` load into ``feature_norms`` when the model has them
    and are dropped otherwise; a model with ``feature_norm=True`` loading a checkpoint without them gets
    the model's own (freshly initialised) values, like the official backbone. Checkpoints of this
    implementation pass through unchanged (but checked). The input is not modified.

    Raises:
        ValueError: The checkpoint is of another variant or configuration (the message names the mismatched keys
            and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'model_ema', 'state_dict'))
    if 'stem.0.weight' in state_dict:
        out = state_dict
    else:
        model_state = model.state_dict()
        out = {}
        for key, value in state_dict.items():
            key = _remap_official_key(key)
            target = model_state.get(key)
            # The module-style x_proj / dt_projs that the official loader also accepts flatten the route axis.
            if re.search(r'\.ssm\.(x_proj_weight|dt_projs_weight|dt_projs_bias)$', key) and target is not None and (
                    target.numel() == value.numel()):
                value = value.reshape(target.shape)
            out[key] = value
    dims = tuple(info['num_chs'] for info in model.feature_info)
    # The detection backbone has no final norm, and a model without feature norms drops the backbone's outnorms.
    return fit_state_dict(
        out,
        model,
        f'dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, scan {model.scan.name!r} with '
        f'K={model.scan.num_routes}; the official checkpoints need cross, K=4',
        optional=('feature_norms.', 'norm.', 'head.'),
        own=('feature_norms.',),
    )


def _create_vmamba(variant: str, pretrained: bool = False, **kwargs) -> VMamba:
    return build_model_with_cfg(
        VMamba,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # The getter runs forward_intermediates, so per-stage feature norms apply to features_only models.
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0',
        'classifier': 'head.fc',
        'license': 'mit',
        'paper_ids': 'arXiv:2401.10166',
        'paper_name': 'VMamba: Visual State Space Model',
        'origin_url': 'https://github.com/MzeroMiko/VMamba',
        **kwargs,
    }


_RELEASES = 'https://github.com/MzeroMiko/VMamba/releases/download/'

default_cfgs = generate_default_cfgs({
    'vanilla_vmamba_tiny.in1k': _cfg(url=_RELEASES + '%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'),
    'vanilla_vmamba_small.in1k': _cfg(url=_RELEASES + '%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth'),
    'vanilla_vmamba_base.in1k': _cfg(url=_RELEASES + '%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth'),
    'vmamba_tiny_s2l5.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm_tiny_0230_ckpt_epoch_262.pth'),
    'vmamba_small_s2l15.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'),
    'vmamba_base_s2l15.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'),
    'vmamba_tiny_s1l8.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'),
    'vmamba_small_s1l20.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm1_small_0229s_ckpt_epoch_240.pth'),
    'vmamba_base_s1l20.in1k': _cfg(url=_RELEASES + '%23v2cls/vssm1_base_0229s_ckpt_epoch_225.pth'),
    'test_vmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
    'test_vanilla_vmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})

# Architecture of each generation; the variants add sizes and their published drop-path rates.
_VANILLA_ARGS = dict(
    d_state=16, ssm_ratio=2.0, conv_bias=True, gate=True, mlp_ratio=0.,
    stem_type='patch', downsample_type='merge',
)
_V2_ARGS = dict(
    d_state=1, conv_bias=False, gate=False, mlp_ratio=4.0, stem_type='conv', downsample_type='conv')


@register_model
def vanilla_vmamba_tiny(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla-VMamba-T (v0): 23M params, 82.2% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 9, 2), drop_path_rate=0.2, **_VANILLA_ARGS)
    return _create_vmamba('vanilla_vmamba_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vanilla_vmamba_small(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla-VMamba-S (v0): 44M params, 83.5% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 27, 2), drop_path_rate=0.3, **_VANILLA_ARGS)
    return _create_vmamba('vanilla_vmamba_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vanilla_vmamba_base(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla-VMamba-B (v0): 76M params, 83.7% IN-1K."""
    model_args = dict(dims=(128, 256, 512, 1024), depths=(2, 2, 27, 2), drop_path_rate=0.6, **_VANILLA_ARGS)
    return _create_vmamba('vanilla_vmamba_base', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_tiny_s2l5(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T[s2l5]: 31M params, 82.5% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 5, 2), ssm_ratio=2.0, drop_path_rate=0.2, **_V2_ARGS)
    return _create_vmamba('vmamba_tiny_s2l5', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_small_s2l15(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S[s2l15]: 50M params, 83.6% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.3, **_V2_ARGS)
    return _create_vmamba('vmamba_small_s2l15', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_base_s2l15(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B[s2l15]: 89M params, 83.9% IN-1K."""
    model_args = dict(
        dims=(128, 256, 512, 1024), depths=(2, 2, 15, 2), ssm_ratio=2.0, drop_path_rate=0.6, **_V2_ARGS)
    return _create_vmamba('vmamba_base_s2l15', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_tiny_s1l8(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T[s1l8]: 30M params, 82.6% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 8, 2), ssm_ratio=1.0, drop_path_rate=0.2, **_V2_ARGS)
    return _create_vmamba('vmamba_tiny_s1l8', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_small_s1l20(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S[s1l20]: 49M params, 83.3% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 20, 2), ssm_ratio=1.0, drop_path_rate=0.3, **_V2_ARGS)
    return _create_vmamba('vmamba_small_s1l20', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vmamba_base_s1l20(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B[s1l20]: 87M params, 83.8% IN-1K."""
    model_args = dict(
        dims=(128, 256, 512, 1024), depths=(2, 2, 20, 2), ssm_ratio=1.0, drop_path_rate=0.5, **_V2_ARGS)
    return _create_vmamba('vmamba_base_s1l20', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_vmamba(pretrained: bool = False, **kwargs) -> VMamba:
    """Tiny VMamba (v2, s1) for CI; the configuration of the official-output fixtures."""
    model_args = dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), ssm_ratio=1.0, **_V2_ARGS)
    return _create_vmamba('test_vmamba', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_vanilla_vmamba(pretrained: bool = False, **kwargs) -> VMamba:
    """Tiny Vanilla VMamba (v0) for CI; the configuration of the official-output fixture."""
    model_args = dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), **_VANILLA_ARGS)
    return _create_vmamba('test_vanilla_vmamba', pretrained=pretrained, **dict(model_args, **kwargs))
