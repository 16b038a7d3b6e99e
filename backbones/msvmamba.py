""" MSVMamba: Multi-Scale VMamba

Paper: `Multi-Scale VMamba: Hierarchy in Hierarchy Visual State Space Model` - https://arxiv.org/abs/2405.14174
(NeurIPS 2024)
Original code: https://github.com/YuHengsss/MSVMamba (built on VMamba, MIT license)

The three ImageNet-1K classifiers of the main (``master``) branch, Nano, Micro and Tiny, weight-compatible with the
official checkpoints through ``checkpoint_filter_fn``:

* Stem: 4x4/s4 conv + LayerNorm; downsampling: 2x2 PatchMerging (LayerNorm, 1x1 reduction), as vanilla VMamba.
* Block: ``x + DropPath(MS2D(LN(x)))``, then ``x + DropPath(ConvFFN(LN(x)))``; no MLP.
* MS2D token mixer: ``in_proj`` (1x1) to (x, z); a full-resolution branch (depthwise 3x3 + SiLU, read along the
  ``raster`` scan) and a half-resolution branch (depthwise 7x7 stride 2 + SiLU on the same pre-conv x, read along
  ONE sequence that joins the row-reversed, column and column-reversed routes: the ``concat`` scan of ``scans``
  with ``routes=(2, 1, 3)``, so the SSM state carries over from one route into the next). Both branches run on
  ONE ``SelectiveSSM`` with two parameter groups (group 0: low resolution, group 1: full resolution, the official
  order) in two kernel calls of different lengths (``route_offset``). Each branch's route outputs are normalised
  per token by the SAME LayerNorm, then merged; the low-resolution map is upsampled bilinearly (align_corners
  False) and added; squeeze-excitation (reduction 8, no biases) scales the sum; ``x SiLU(z)``; ``out_proj`` (1x1).
  Per block the SSM visits 1.75 L tokens instead of VMamba's 4 L.
* ConvFFN: 1x1 conv to 2x width, ``t + dwconv3x3(t)``, GELU, 1x1 conv back.
* Head: LayerNorm, global average pool, linear.

The model runs channel-first (NCHW): the official channel-last Linear layers are 1x1 convolutions here and the
filter reshapes their weights. ``scan=`` (full resolution) and ``scan_low=`` (half resolution) take any
registered scans whose routes carry all channels; the parameter groups per block are the sum of their K. Only
the defaults match the released checkpoints.

Input sizes: H and W must be divisible by 4 (the 4x4/s4 patch stem; the official code would silently drop the
remainder, here it is a ValueError). Beyond the stem any stage size works: the stride-2 branch has
ceil(H / 2) x ceil(W / 2) tokens, upsampled back to H x W, and PatchMerging zero-pads odd maps.

Feature maps (``forward_intermediates``, ``features_only=True``): NCHW at strides 4, 8, 16, 32, the stage outputs
before the next downsampling. ``feature_norm=True`` adds a LayerNorm per stage output, the ``outnorm{i}`` of the
official detection/segmentation backbone (``Backbone_VSSM``), whose checkpoints then load with their norms.

Official bugs and deliberate differences:

* The official ``SelectiveScan`` casts the scan inputs to float32 under CUDA autocast; here the kernel computes in
  float32 from the half-precision inputs on every device, with bitwise the same results (see ``SelectiveSSM``),
  and the scan output is float32 either way.
* The official loaders (trainer, ``Backbone_VSSM.load_pretrained``) load with ``strict=False`` (detection: inside
  a try/except that only prints), so a checkpoint of another variant silently leaves random weights.
  ``checkpoint_filter_fn`` raises a ValueError naming the mismatched keys, shapes and blocks per stage instead.
* The yacs key ``UP_SAMPLE`` is passed to SS2D as ``up_sample`` but read as ``upsample`` (ignored); the bilinear
  interpolation is hard-coded anyway, as here.
* The official trainer decays ``A_logs`` and ``dt_projs_bias`` (2-D tensors whose names do not end in ``.bias``);
  here ``no_weight_decay()`` lists them with ``Ds``, as Mamba intends.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, SEModule, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, named_apply, register_model

from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint
from ._layers import DropPath, PointwiseConv2d
from ._staged import Stage, StagedBackbone
from .ssm import SelectiveSSM
from .vmamba import PatchMerging, _LayerNorm2d, _ProjNorm2d, _remap_official_key as _remap_vmamba_key

__all__ = ['MSVMamba']  # model_registry will add each entrypoint fn to this


def _scan(owner: str, scan: Union[str, Scan]) -> Scan:
    scan = create_scan(scan) if isinstance(scan, str) else scan
    if not isinstance(scan, Scan):
        raise TypeError(f'{owner}: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
    if scan.splits_channels:
        # The shared out_norm normalises each token over all inner channels of a route.
        raise ValueError(f'{owner}: scan {scan.name!r} splits channels between routes; MS2D needs routes that carry '
                         f'every channel')
    return scan


class MS2D(nn.Module):
    """Multi-scale 2-D selective scan token mixer (official SS2D with ``sscore_type='multiscale_4scan_12'``).

    Args:
        dim: Block width.
        scan: Scan of the full-resolution branch (parameter groups after those of ``scan_low``).
        scan_low: Scan of the stride-2 branch (parameter groups first, the official order).
        d_state: SSM state size N.
        ssm_ratio: Inner width = ``ssm_ratio * dim``.
        dt_rank: Rank of the dt projection.
        conv_bias: Bias in both depthwise convs.
    """

    def __init__(
            self,
            dim: int,
            scan: Scan,
            scan_low: Scan,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: int = 3,
            conv_bias: bool = True,
    ):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.scan = scan
        self.scan_low = scan_low
        self.in_proj = PointwiseConv2d(dim, 2 * d_inner, bias=False)
        self.conv_dw = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=conv_bias)
        self.conv_dw_low = nn.Conv2d(d_inner, d_inner, 7, stride=2, padding=3, groups=d_inner, bias=conv_bias)
        self.act = nn.SiLU()
        # One parameter set for both branches.
        self.ssm = SelectiveSSM(
            d_inner,
            d_state=d_state,
            dt_rank=dt_rank,
            num_routes=scan_low.num_routes + scan.num_routes,
        )
        self.out_norm = _ProjNorm2d(d_inner)
        self.se = SEModule(d_inner, rd_channels=d_inner // 8, bias=False)
        self.out_proj = PointwiseConv2d(d_inner, dim, bias=False)

    def _branch(self, x: Tensor, scan: Scan, route_offset: int) -> Tensor:
        ys = self.ssm(scan.flatten(x), route_offset=route_offset)  # (B, K, C, L), float32
        # Normalise every route output per token BEFORE merging, as the official code does (LN does not commute
        # with the sum over routes/segments).
        ys = self.out_norm(ys.transpose(1, 2)).transpose(1, 2).to(x.dtype)
        return scan.merge(ys, (x.shape[-2], x.shape[-1]))

    def forward(self, x: Tensor) -> Tensor:
        x, z = self.in_proj(x).chunk(2, dim=1)
        x_low = self.act(self.conv_dw_low(x))  # from the pre-conv tensor, like the official branch
        x = self.act(self.conv_dw(x))
        y = self._branch(x, self.scan, self.scan_low.num_routes)
        y_low = self._branch(x_low, self.scan_low, 0)
        # Channels-last: CUDA's NCHW bilinear kernel loops over B*C inside each output pixel's thread (~100x slower
        # at batch 128); the NHWC kernel computes the same values.
        y_low = y_low.contiguous(memory_format=torch.channels_last)
        y = y + F.interpolate(y_low, size=y.shape[-2:], mode='bilinear', align_corners=False)
        return self.out_proj(self.se(y) * self.act(z))


class ConvFFN(nn.Module):
    """Feed-forward with a depthwise-conv residual inside (official ``ConvFFN``): fc1, ``t + dw(t)``, GELU, fc2.

    The official module also has dropout after fc1 and fc2, but every published config sets it to 0.

    Args:
        dim: Block width.
        hidden_dim: Hidden width.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = PointwiseConv2d(dim, hidden_dim)
        self.conv_dw = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = PointwiseConv2d(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.act(x + self.conv_dw(x))
        return self.fc2(x)


class MSVSSBlock(nn.Module):
    """Multi-scale VSS block: ``x + DropPath(MS2D(LN(x)))``, then ``x + DropPath(ConvFFN(LN(x)))``.

    Args:
        dim: Block width.
        scan: Full-resolution scan.
        scan_low: Stride-2 scan.
        d_state: SSM state size N.
        ssm_ratio: MS2D inner width / block width.
        dt_rank: Rank of the dt projection.
        ffn_ratio: ConvFFN hidden width / block width.
        drop_path: Stochastic depth rate.
    """

    def __init__(
            self,
            dim: int,
            scan: Scan,
            scan_low: Scan,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: int = 3,
            ffn_ratio: float = 2.0,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.norm1 = _ProjNorm2d(dim)
        self.mixer = MS2D(dim, scan, scan_low, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = _ProjNorm2d(dim)
        self.ffn = ConvFFN(dim, int(ffn_ratio * dim))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop_path1.add(x, self.mixer(self.norm1(x)))
        return self.drop_path2.add(x, self.ffn(self.norm2(x)))


class MSVMamba(StagedBackbone):
    """MSVMamba (main branch): VMamba with multi-scale (MS2D) token mixers, ConvFFN and SE in every stage.

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: Classifier pooling ('avg', 'max', ... or '' for none).
        dims: Width of each stage.
        depths: Blocks per stage.
        d_state: SSM state size N.
        ssm_ratio: MS2D inner width / block width.
        dt_rank: Rank of the dt projection, or 'auto' for ceil(block width / 16).
        ffn_ratio: ConvFFN hidden width / block width.
        scan: Name of a registered scan (or a ``scans.Scan``) for the full-resolution branch; default ``'raster'``.
        scan_low: Scan of the stride-2 branch; None for the paper's ``concat`` of cross routes (2, 1, 3).
        feature_norm: Add a LayerNorm per stage output, applied to the intermediates returned by
            ``forward_intermediates`` and hence by ``features_only=True`` models: the ``outnorm{i}`` of the
            official detection/segmentation backbone.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            dims: Tuple[int, ...] = (48, 96, 192, 384),
            depths: Tuple[int, ...] = (1, 2, 5, 2),
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            dt_rank: Union[int, str] = 'auto',
            ffn_ratio: float = 2.0,
            scan: Union[str, Scan] = 'raster',
            scan_low: Optional[Union[str, Scan]] = None,
            feature_norm: bool = False,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f'MSVMamba: dims {dims} and depths {depths} must have one entry per stage')
        if not (dt_rank == 'auto' or (isinstance(dt_rank, int) and dt_rank > 0)):
            raise ValueError(f"MSVMamba: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        self.scan = _scan('MSVMamba', scan)
        self.scan_low = _scan('MSVMamba', create_scan('concat', routes=(2, 1, 3)) if scan_low is None else scan_low)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_multiple = 4  # the 4x4/s4 patch stem drops remainders
        self.feature_info = []
        norm_layer = _LayerNorm2d

        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), norm_layer(dims[0]))

        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]
        stages = []
        prev_dim, stride = dims[0], 4
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                stride *= 2
            blocks = [
                MSVSSBlock(
                    dim,
                    self.scan,
                    self.scan_low,
                    d_state=d_state,
                    ssm_ratio=ssm_ratio,
                    dt_rank=math.ceil(dim / 16) if dt_rank == 'auto' else dt_rank,
                    ffn_ratio=ffn_ratio,
                    drop_path=dpr[i][j],
                )
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

    The official Linear layers are the MS2D in/out projections, the SE layers, the PatchMerging reduction and the
    head; here all but the head are 1x1 convolutions. The ConvFFN 1x1 layers are convolutions in the official code
    too and keep PyTorch's default init, LayerNorms (1, 0) and the ``SelectiveSSM`` parameters their Mamba init.
    """
    if isinstance(module, MS2D):
        layers = [module.in_proj, module.out_proj, module.se.fc1, module.se.fc2]
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


# Official block sub-module names -> this implementation (after VMamba's renaming of op. to mixer.).
_BLOCK_KEYS = (
    (r'\.mixer\.conv2d_b1\.', '.mixer.conv_dw_low.'),
    (r'\.mixer\.se\.fc\.0\.', '.mixer.se.fc1.'),
    (r'\.mixer\.se\.fc\.2\.', '.mixer.se.fc2.'),
    (r'\.convFFN\.linear1\.', '.ffn.fc1.'),
    (r'\.convFFN\.dwc\.', '.ffn.conv_dw.'),
    (r'\.convFFN\.linear2\.', '.ffn.fc2.'),
)


def _remap_official_key(key: str) -> str:
    """Official MSVMamba key -> key of this implementation."""
    key = _remap_vmamba_key(key)  # stem, blocks (norm, op -> mixer, SSM tensors), PatchMerging, classifier
    for official, ours in _BLOCK_KEYS:
        key = re.sub(official, ours, key)
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: MSVMamba) -> Dict[str, Tensor]:
    """Convert an official MSVMamba checkpoint (or one of this implementation) for ``model``.

    Accepts the official trainer's checkpoints (``'model'``, like the official loaders, else ``'model_ema'``), an
    MMEngine ``'state_dict'`` of the detection/segmentation backbone (``backbone.`` keys are kept, the rest
    dropped) or a plain state_dict, with or without a DDP ``module.`` prefix. Official keys are renamed (the
    downsampling that closes an official stage opens the next stage here) and Linear weights reshaped into the
    1x1 convs used here. The backbone's ``outnorm{i}`` load into ``feature_norms`` when the model has them and are
    dropped otherwise; a model with ``feature_norm=True`` loading a checkpoint without them keeps its own (freshly
    initialised) values, like the official backbone. Classifier weights are dropped for a model without a
    classifier. The input is not modified.

    Raises:
        ValueError: The checkpoint is not an MSVMamba one, or is of another variant or configuration (the message
            names the mismatched keys and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'model_ema', 'state_dict'))
    if 'stem.0.weight' in state_dict:
        out = state_dict
    elif 'patch_embed.0.weight' in state_dict:
        out = {_remap_official_key(k): v for k, v in state_dict.items()}
    else:
        raise ValueError('checkpoint is not an MSVMamba: it has neither the official stem (patch_embed.0.weight) '
                         'nor the stem of this implementation (stem.0.weight)')

    dims = tuple(info['num_chs'] for info in model.feature_info)
    # The detection backbone has no final norm, and a model without feature norms drops the backbone's outnorms.
    return fit_state_dict(
        out,
        model,
        f'dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, scans {model.scan_low.name!r} + '
        f'{model.scan.name!r} with K={model.scan_low.num_routes}+{model.scan.num_routes}; the official checkpoints '
        f'need concat + raster, K=1+1',
        optional=('feature_norms.', 'norm.', 'head.'),
        own=('feature_norms.',),
    )


def _create_msvmamba(variant: str, pretrained: bool = False, **kwargs) -> MSVMamba:
    return build_model_with_cfg(
        MSVMamba,
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
        'paper_ids': 'arXiv:2405.14174',
        'paper_name': 'Multi-Scale VMamba: Hierarchy in Hierarchy Visual State Space Model',
        'origin_url': 'https://github.com/YuHengsss/MSVMamba',
        **kwargs,
    }


# The README's "log&ckpt" links are Google Drive folders (log and checkpoint side by side), not direct files: timm
# cannot download them, so fetch the checkpoint by hand and load it with pretrained_cfg_overlay=dict(file=...).
_DRIVE = 'https://drive.google.com/drive/folders/'
_MANUAL = 'Google Drive folder: download the checkpoint and pass pretrained_cfg_overlay=dict(file=path)'

default_cfgs = generate_default_cfgs({
    'msvmamba_nano.in1k': _cfg(url=_DRIVE + '1J41w3ApitQhp2O3wHmJoOs4U032uqebK', notes=_MANUAL),
    'msvmamba_micro.in1k': _cfg(url=_DRIVE + '1jfl2GmuKcUB8sPwRlyHK_wT0MjqgljYk', notes=_MANUAL),
    'msvmamba_tiny.in1k': _cfg(url=_DRIVE + '1ddNWk89ohcxxMuVEaJ2Y5A6xeBKgA7lU', notes=_MANUAL),
    'test_msvmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})


@register_model
def msvmamba_nano(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-Nano: 6.9M params, 0.9 GFLOPs, 77.3% IN-1K."""
    model_args = dict(dims=(48, 96, 192, 384), depths=(1, 2, 5, 2), drop_path_rate=0.2)
    return _create_msvmamba('msvmamba_nano', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def msvmamba_micro(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-Micro: 11.9M params, 1.5 GFLOPs, 79.8% IN-1K."""
    model_args = dict(dims=(64, 128, 256, 512), depths=(1, 2, 5, 2), drop_path_rate=0.2)
    return _create_msvmamba('msvmamba_micro', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def msvmamba_tiny(pretrained: bool = False, **kwargs) -> MSVMamba:
    """MSVMamba-Tiny: 33.1M params, 4.6 GFLOPs, 82.8% IN-1K."""
    model_args = dict(dims=(96, 192, 384, 768), depths=(1, 2, 9, 2), drop_path_rate=0.2)
    return _create_msvmamba('msvmamba_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_msvmamba(pretrained: bool = False, **kwargs) -> MSVMamba:
    """Tiny MSVMamba for CI; the configuration of the official-output fixture."""
    model_args = dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1))
    return _create_msvmamba('test_msvmamba', pretrained=pretrained, **dict(model_args, **kwargs))
