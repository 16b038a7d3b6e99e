""" EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba

Paper: `EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba` - https://arxiv.org/abs/2403.09977
(AAAI 2025)
Original code: https://github.com/TerryPei/EfficientVMamba (Apache 2.0 license per its README; built on VMamba)

The three released ImageNet-1K classifiers (T, S, B), weight-compatible with the official checkpoints through
``checkpoint_filter_fn``:

* Stem: 4x4/s4 conv + LayerNorm; downsampling: 2x2 PatchMerging (LayerNorm, 1x1 reduction), as vanilla VMamba.
* Stages 1-2: EVSS blocks, ``x + DropPath(gate(SS2D(LN(x))) + gate(conv(LN(x))))`` where SS2D is vanilla
  VMamba's token mixer (``vmamba.SS2D``: SiLU(z) gate, d_state 16, float32 scan inputs) reading the map along
  the ``atrous`` scan of ``scans`` (ES2D: the four 2x2 polyphase sub-lattices, each scanned once by its own
  parameter group), ``conv`` a depthwise 3x3 + BN + GELU + 1x1 branch, and ``gate`` ONE channel-attention
  module (official ``BiAttn``) applied to both branches with shared weights.
* Stages 3-4: MobileNetV2 inverted residuals (1x1 expansion x4 + BN + ReLU, depthwise 3x3 + BN + ReLU,
  squeeze-excitation reducing to 1/8 of the expanded width, 1x1 + BN, residual), timm's ``InvertedResidual``
  block, which computes exactly the official ``operations.InvertedResidual`` (hidden width rounded to a multiple
  of 8, which equals the official ``int(4 * C)`` for every even stage width and so for every variant).
* Head: LayerNorm, global average pool, linear.

The model runs channel-first (NCHW): the official channel-last Linear layers of SS2D and PatchMerging are 1x1
convolutions here and the filter reshapes their weights. ``scan=`` takes any registered scan; only the default
``'atrous'`` (step 2) matches the released checkpoints.

Input sizes: H and W must be divisible by 4 (the 4x4/s4 patch stem; the official code would silently drop the
remainder, here it is a ValueError). Beyond the stem any stage size works: the atrous scan zero-pads odd maps
to even ones inside its routes exactly like the official ``EfficientScan`` and PatchMerging zero-pads odd maps.

Feature maps (``forward_intermediates``, ``features_only=True``): NCHW at strides 4, 8, 16, 32, the stage
outputs before the next downsampling. ``feature_norm=True`` adds a LayerNorm per stage output, the ``outnorm{i}``
of the official detection backbone (``Backbone_EfficientVSSM``), whose checkpoints then load with their norms.

Official bugs and deliberate differences:

* The released EfficientVMamba-S was trained with width 64 (its log builds ``Conv2d(3, 64, ...)`` and reports
  11.27M parameters) although the repository's yaml says 96; ``efficientvmamba_small`` uses 64 so that the
  checkpoint loads. Parameter counts equal the training logs (6.49M, 11.27M, 33.72M; README: 6M, 11M, 33M).
* ``EfficientVSSM`` accepts ``d_state`` / ``dt_rank`` but never passes them on (the block defaults 16 / auto
  apply); here they are wired. Its ``mlp_ratio`` defaults to 4.0 although no checkpoint has an MLP (issue #15:
  a backbone built with the defaults does not match the released checkpoints); no MLP exists here.
* The official loaders (``Backbone_EfficientVSSM.load_pretrained``, the trainer) load with ``strict=False``
  inside a try/except that only prints, and the released detection configs pair checkpoints with other widths
  or depths (``2242_48``: depths (2, 2, 9, 2) with the (2, 2, 4, 2) tiny checkpoint; ``2242_96``: width 96 with
  the small checkpoint trained at 64), so those backbones start from random weights. ``checkpoint_filter_fn``
  raises a ValueError naming the mismatched keys, shapes and blocks per stage instead.
* The published recipe (training logs) used drop path 0.1 for all sizes, not the yaml's 0.2; the variants here
  default to 0.1. ``drop_rate`` is accepted but unused by the official model; here it is dropout before the
  classifier (default 0).
* The official trainer decays ``A_logs`` and ``dt_projs_bias`` (2-D tensors whose names do not end in ``.bias``:
  the model defines no ``no_weight_decay()`` and the ``_no_weight_decay`` mark is not read); here
  ``no_weight_decay()`` lists them with ``Ds``, as Mamba intends.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from functools import partial
from typing import Any, Dict, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, named_apply, register_model
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint
from ._staged import Stage, StagedBackbone
from .vmamba import SS2D, PatchMerging, _LayerNorm2d, _ProjNorm2d, _remap_official_key as _remap_vmamba_key

__all__ = ['EfficientVMamba']  # model_registry will add each entrypoint fn to this

# Stages before this index are EVSS (SSM) stages, the rest inverted residuals, as in the official model.
_NUM_SSM_STAGES = 2


class BiAttn(nn.Module):
    """Channel-attention gate of the EVSS block (official ``BiAttn``), channel-first.

    ``x * sigmoid(W2 GELU(W1 mean_HW(LN(x))))``: the gate is computed from the normalised map, but it scales the
    map itself.

    Args:
        dim: Channels.
        rd_ratio: Width of the hidden layer relative to ``dim``.
    """

    def __init__(self, dim: int, rd_ratio: float = 0.125):
        super().__init__()
        rd_dim = int(dim * rd_ratio)
        self.norm = _LayerNorm2d(dim)
        self.global_reduce = nn.Linear(dim, rd_dim)
        self.act = nn.GELU()
        self.channel_select = nn.Linear(rd_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.channel_select(self.act(self.global_reduce(self.norm(x).mean((2, 3)))))
        return x * attn.sigmoid()[:, :, None, None]


class EVSSBlock(nn.Module):
    """Efficient visual state-space block: ``x + DropPath(gate(SS2D(LN(x))) + gate(conv_branch(LN(x))))``.

    Args:
        dim: Block width.
        scan: Scan order of the SS2D token mixer (``atrous`` for ES2D).
        d_state: SSM state size N.
        ssm_ratio: SS2D inner width / block width.
        dt_rank: Rank of the dt projection.
        drop_path: Stochastic depth rate.
    """

    def __init__(
            self,
            dim: int,
            scan: Scan,
            d_state: int = 16,
            ssm_ratio: float = 2.0,
            dt_rank: int = 3,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.norm1 = _ProjNorm2d(dim)
        # Vanilla VMamba's SS2D: z gate, biased depthwise conv, float32 scan inputs (official SelectiveScan casts).
        self.mixer = SS2D(
            dim,
            scan,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            dt_rank=dt_rank,
            d_conv=3,
            conv_bias=True,
            gate=True,
        )
        self.conv_branch = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.BatchNorm2d(dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )
        self.channel_attn = BiAttn(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        x = self.channel_attn(self.mixer(x)) + self.channel_attn(self.conv_branch(x))
        return shortcut + self.drop_path(x)


class EfficientVMamba(StagedBackbone):
    """EfficientVMamba: EVSS stages (atrous selective scan + conv branch) then inverted-residual stages.

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: Classifier pooling ('avg', 'max', ... or '' for none).
        dims: Width of each stage.
        depths: Blocks per stage; the first two stages hold EVSS blocks, the others inverted residuals.
        d_state: SSM state size N.
        ssm_ratio: SS2D inner width / block width.
        dt_rank: Rank of the dt projection, or 'auto' for ceil(block width / 16).
        scan: Name of a registered scan (or a ``scans.Scan``) for the EVSS blocks; the parameter groups per block
            follow its K. The default ``'atrous'`` (step 2) is the paper's ES2D.
        feature_norm: Add a LayerNorm per stage output, applied to the intermediates returned by
            ``forward_intermediates`` and hence by ``features_only=True`` models: the ``outnorm{i}`` of the
            official detection backbone.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over all blocks (EVSS and inverted residual).
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            dims: Tuple[int, ...] = (48, 96, 192, 384),
            depths: Tuple[int, ...] = (2, 2, 4, 2),
            d_state: int = 16,
            ssm_ratio: float = 2.0,
            dt_rank: Union[int, str] = 'auto',
            scan: Union[str, Scan] = 'atrous',
            feature_norm: bool = False,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f'EfficientVMamba: dims {dims} and depths {depths} must have one entry per stage')
        if not (dt_rank == 'auto' or (isinstance(dt_rank, int) and dt_rank > 0)):
            raise ValueError(f"EfficientVMamba: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if isinstance(scan, str):
            scan = create_scan(scan)
        elif not isinstance(scan, Scan):
            raise TypeError(f'EfficientVMamba: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_multiple = 4  # the 4x4/s4 patch stem drops remainders
        self.scan = scan
        self.feature_info = []
        norm_layer = _LayerNorm2d

        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), norm_layer(dims[0]))

        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]
        # The official inverted residual: 4x expansion, SE on the expanded width (int rounding, ReLU, sigmoid).
        se_layer = partial(SqueezeExcite, rd_ratio=0.125, rd_round_fn=int)
        stages = []
        prev_dim, stride = dims[0], 4
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                stride *= 2
            if i < _NUM_SSM_STAGES:
                blocks = [
                    EVSSBlock(
                        dim,
                        scan,
                        d_state=d_state,
                        ssm_ratio=ssm_ratio,
                        dt_rank=math.ceil(dim / 16) if dt_rank == 'auto' else dt_rank,
                        drop_path=dpr[i][j],
                    )
                    for j in range(depth)
                ]
            else:
                blocks = [
                    InvertedResidual(dim, dim, exp_ratio=4.0, se_layer=se_layer, drop_path_rate=dpr[i][j])
                    for j in range(depth)
                ]
            stages.append(Stage(
                blocks,
                downsample=PatchMerging(prev_dim, dim) if i > 0 else None,
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
    """The official init: trunc_normal(0.02) and zero bias for every official ``nn.Linear``, defaults elsewhere.

    The official Linear layers are ``nn.Linear`` here too (channel gate, head) except the SS2D in/out projections
    and the PatchMerging reduction, which are 1x1 convolutions; the convolutions that are convolutions in the
    official code too (conv branch, inverted residuals) keep PyTorch's default init, LayerNorms (1, 0) and the
    ``SelectiveSSM`` parameters their Mamba init.
    """
    if isinstance(module, SS2D):
        layers = [module.in_proj, module.out_proj]
    elif isinstance(module, PatchMerging):
        layers = [module.reduction]
    elif isinstance(module, nn.Linear):
        layers = [module]
    else:
        return
    for layer in layers:
        trunc_normal_(layer.weight, std=.02)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


# Official inverted-residual keys (``operations.InvertedResidual``) -> timm ``InvertedResidual``.
_IR_KEYS = {
    'conv_pw.0.': 'conv_pw.', 'conv_pw.1.': 'bn1.', 'conv_dw.0.': 'conv_dw.', 'conv_dw.1.': 'bn2.',
    'conv_pw2.0.': 'conv_pwl.', 'conv_pw2.1.': 'bn3.', 'se.': 'se.',
}


def _remap_official_key(key: str) -> str:
    """Official EfficientVMamba key -> key of this implementation."""
    # Inverted-residual stages: Sequential(Permute, block 1..depth, Permute, downsample) at layers.{i}.{index}.
    match = re.match(r'^layers\.(\d+)\.(\d+)\.(.*)$', key)
    if match:
        stage, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        if rest.startswith(('reduction.', 'norm.')):  # the PatchMerging closing the stage opens the next one here
            return f'stages.{stage + 1}.downsample.{rest}'
        for official, ours in _IR_KEYS.items():
            if rest.startswith(official):
                return f'stages.{stage}.blocks.{index - 1}.{ours}{rest[len(official):]}'
        return key
    # Stem, EVSS blocks (SS2D = vanilla VMamba's), PatchMerging, classifier and outnorms: VMamba's layout.
    key = _remap_vmamba_key(key)
    return re.sub(r'^(stages\.\d+\.blocks\.\d+\.)se\.', r'\1channel_attn.', key)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: EfficientVMamba) -> Dict[str, Tensor]:
    """Convert an official EfficientVMamba checkpoint (or one of this implementation) for ``model``.

    Accepts the released checkpoints (``'state_dict'`` with ``module.module.`` prefixes), the official trainer's
    checkpoints (``'model'``, like the official loaders, else ``'ema_model'``), an MMEngine ``'state_dict'`` of
    the detection backbone (``backbone.`` keys are kept, the rest dropped) or a plain state_dict. Official keys are
    renamed (inverted-residual stages to timm's ``InvertedResidual``, the downsampling that closes an official
    stage to the one opening the next stage here) and Linear weights reshaped into the 1x1 convs used here. The
    detection backbone's ``outnorm{i}`` load into ``feature_norms`` when the model has them and are dropped
    otherwise; a model with ``feature_norm=True`` loading a checkpoint without them keeps its own (freshly
    initialised) values, like the official backbone. Classifier weights are dropped for a model without a
    classifier (``num_classes=0``, pruned for features); a checkpoint without them (the detection backbone) is
    accepted, and the strict load then reports them missing unless timm replaces the head. The input is not
    modified.

    Raises:
        ValueError: The checkpoint is not an EfficientVMamba one, or is of another variant or configuration (the
            message names the mismatched keys and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('state_dict', 'model', 'ema_model'))
    if 'stem.0.weight' in state_dict:
        out = state_dict
    elif 'patch_embed.0.weight' in state_dict or 'patch_embed.proj.weight' in state_dict:
        out = {_remap_official_key(k): v for k, v in state_dict.items()}
    else:
        raise ValueError('checkpoint is not an EfficientVMamba: it has neither the official stem '
                         '(patch_embed.0.weight) nor the stem of this implementation (stem.0.weight)')

    dims = tuple(info['num_chs'] for info in model.feature_info)
    # The detection backbone has no final norm, and a model without feature norms drops the backbone's outnorms.
    return fit_state_dict(
        out,
        model,
        f'dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, scan {model.scan.name!r} with '
        f'K={model.scan.num_routes}; the official checkpoints need atrous, K=4',
        optional=('feature_norms.', 'norm.', 'head.'),
        own=('feature_norms.',),
    )


def _create_efficientvmamba(variant: str, pretrained: bool = False, **kwargs) -> EfficientVMamba:
    return build_model_with_cfg(
        EfficientVMamba,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # The getter runs forward_intermediates, so per-stage feature norms apply to features_only models.
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
        'first_conv': 'stem.0',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2403.09977',
        'paper_name': 'EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba',
        'origin_url': 'https://github.com/TerryPei/EfficientVMamba',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'efficientvmamba_tiny.in1k': _cfg(
        hf_hub_id='TerryPei/EfficientVMamba-Tiny', hf_hub_filename='efficient_vmamba_tiny.ckpt'),
    'efficientvmamba_small.in1k': _cfg(
        hf_hub_id='TerryPei/EfficientVMamba-Small', hf_hub_filename='efficient_vmamba_small.ckpt'),
    'efficientvmamba_base.in1k': _cfg(
        hf_hub_id='TerryPei/EfficientVMamba-Base', hf_hub_filename='efficient_vmamba_base.ckpt'),
    'test_efficientvmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})


@register_model
def efficientvmamba_tiny(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-T: 6.5M params, 76.5% IN-1K."""
    model_args = dict(dims=(48, 96, 192, 384), depths=(2, 2, 4, 2), drop_path_rate=0.1)
    return _create_efficientvmamba('efficientvmamba_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvmamba_small(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-S (width 64, as trained): 11.3M params, 78.7% IN-1K."""
    model_args = dict(dims=(64, 128, 256, 512), depths=(2, 2, 4, 2), drop_path_rate=0.1)
    return _create_efficientvmamba('efficientvmamba_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvmamba_base(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """EfficientVMamba-B: 33.7M params, 81.8% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 9, 2), drop_path_rate=0.1)
    return _create_efficientvmamba('efficientvmamba_base', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_efficientvmamba(pretrained: bool = False, **kwargs) -> EfficientVMamba:
    """Tiny EfficientVMamba for CI; the configuration of the official-output fixture."""
    model_args = dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1))
    return _create_efficientvmamba('test_efficientvmamba', pretrained=pretrained, **dict(model_args, **kwargs))
