""" Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion

Paper: `Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion`
    - https://arxiv.org/abs/2410.15091 (ICLR 2025)
Original code: https://github.com/EdwardChasel/Spatial-Mamba (Apache-2.0 license, Copyright (c) 2024 Chaodong Xiao)

The three released ImageNet-1K classifiers (T, S, B), weight-compatible with the official checkpoints through
``checkpoint_filter_fn``:

* Stem (MLLA): 3x3/s2 conv-BN-ReLU to C/2, a residual pair of 3x3 conv-BN (ReLU between), 3x3/s2 conv-BN-ReLU to
  4C, 1x1 conv-BN to C (stride 4). Stages 2-4 open with the MLLA downsampling: 1x1 conv to 8C + ReLU, 3x3/s2
  depthwise conv + ReLU, 1x1 conv-BN to 2C, so every stage doubles the width.
* Block (channel-last): ``x + cpe1(x)``, ``x + DropPath(SASF-SSM(LN(x)))``, ``x + cpe2(x)``,
  ``x + DropPath(MLP(LN(x)))`` with 3x3 depthwise conv positional encodings cpe1/cpe2.
* Structure-aware SSM: in_proj to (x, z) of width 2C each; 3x3 depthwise conv + SiLU; ONE forward row-major scan
  (the ``raster`` scan) that returns every hidden state h instead of the output; the states, laid out on the 2-D
  map, are fused by three replicate-padded 3x3 depthwise convolutions of dilation 1, 3 and 5 mixed by learned
  weights alpha (structure-aware state fusion, SASF); then ``y = C * fused(h) + D * u``, LayerNorm, ``x SiLU(z)``,
  out_proj. d_state is 1.
* Head: LayerNorm on the last map, average pool, linear.

How it is built here:

* The SSM parameters live in the shared ``SelectiveSSM`` core; ``forward_states`` runs ``kernels.selective_scan``
  with ``return_hidden_states=True`` (the official "rh" CUDA kernel's job). The hidden states go back onto the map
  with the scan's ``scatter_routes``.
* State fusion, training mode: the three dilated convolutions (the official training path). Eval mode: their exact
  re-parameterisation as ONE 11x11 depthwise kernel applied after replicate padding by 5 (replicate padding is a
  clamp of the index, the same for every pad width, so the two paths are the same function up to rounding). The
  fused kernel is rebuilt from the current parameters on every eval forward (``C * 121`` values per block,
  negligible next to the convolution), so it can never be stale (see the official bug below).
* ``scan=`` takes any registered scan whose routes each visit every token once (``'raster'``, the default, is
  Spatial-Mamba; only it matches the official checkpoints): route k's states are fused on their own map with the
  block's fusion kernels and read out with route k's C, and the route outputs are summed like ``merge``.
* ``d_state > 1`` (not published; the official code fails on it) fuses every state component with the kernels of
  its channel and reads out ``sum_n C_n * fused(h_n)``.
* Feature maps (``forward_intermediates``, ``features_only=True``): NCHW at strides 4, 8, 16, 32, the stage outputs
  before the next downsampling, like the official detection/segmentation backbone; ``feature_norm=True`` adds its
  per-stage ``outnorm{i}`` LayerNorms (``Backbone_SpatialMamba``), which load from its checkpoints.
* Input sizes: any H, W >= 1 (every conv pads, stage sizes are ceil(H / stride), replicate padding takes any map).
* Under autocast the scan inputs stay in half precision and the states come back in float32 (the official kernel).

Official bugs and deliberate differences:

* Stale fusion kernel: the official eval path caches the fused 11x11 kernel on the first eval forward and never
  invalidates it, so every later eval forward (per-epoch validation during training, the EMA teacher of the MESA
  self-distillation) uses the fusion weights of that first call. A freshly loaded checkpoint evaluates correctly,
  and so does every model here (the kernel is always current); the published numbers are of loaded checkpoints.
* The official ``A_log``/``D`` initialisers test ``init == "random" or "constant"`` (always true) and a layer-level
  init re-initialises a clone of ``out_proj.weight`` (no effect): here A and D get the S4D-real / ones init the
  official code actually applies, and no dead init runs.
* ``d_state`` must be 1 in the official code (shape error otherwise); supported here as described above.
* ``drop_rate`` is the official dropout after the stem (0 for every release); here it is dropout before the
  classifier, as in timm (default 0, so loaded checkpoints are unaffected).
* The official optimiser decays ``A_logs`` (2-D); ``no_weight_decay()`` lists ``A_logs``, ``Ds`` and
  ``dt_projs_bias`` as Mamba intends. The fusion kernels are decayed and alpha is not, as officially.

Weights: the README's Google Drive checkpoints (``{'model': state_dict, ...}``) load with ``pretrained=True`` where
Drive serves the file directly; otherwise download it and pass ``pretrained_cfg_overlay=dict(file=path)``.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, named_apply, register_model

from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint
from ._layers import LayerNorm2d
from ._staged import StagedBackbone
from .ssm import SelectiveSSM

__all__ = ['SpatialMamba']  # model_registry will add each entrypoint fn to this

# The official model uses nn.LayerNorm's default eps everywhere.
_LayerNorm = partial(nn.LayerNorm, eps=1e-5)
_LayerNorm2d = partial(LayerNorm2d, eps=1e-5)

# Dilations of the three 3x3 fusion kernels; the fused kernel spans 2 * max + 1 taps.
_DILATIONS = (1, 3, 5)
_FUSED_SIZE = 2 * max(_DILATIONS) + 1


class StateFusion(nn.Module):
    """Structure-aware state fusion: ``sum_k alpha_k * dwconv3x3_dilation_k(replicate_pad(h))``, k = 1, 3, 5.

    Training mode runs the three dilated convolutions; eval mode runs their exact re-parameterisation, one 11x11
    depthwise kernel (``fused_weight()``, rebuilt from the current parameters on every call) after replicate padding
    by 5. The kernels start at all ones and alpha at ones, as officially.

    Args:
        dim: Channels (the inner width of the SSM).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.kernel_d1 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_d3 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_d5 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.alpha = nn.Parameter(torch.ones(len(_DILATIONS)))

    def _kernels(self) -> Tuple[Tensor, Tensor, Tensor]:
        return self.kernel_d1, self.kernel_d3, self.kernel_d5

    def fused_weight(self) -> Tensor:
        """The single (dim, 1, 11, 11) depthwise kernel equal to the alpha-weighted dilated kernels."""
        weight = self.kernel_d1.new_zeros(self.dim, 1, _FUSED_SIZE, _FUSED_SIZE)
        centre = _FUSED_SIZE // 2
        for alpha, kernel, dilation in zip(self.alpha, self._kernels(), _DILATIONS):
            # Tap (i, j) of a dilation-d 3x3 kernel sits d * (i - 1), d * (j - 1) away from the centre.
            taps = slice(centre - dilation, centre + dilation + 1, dilation)
            weight[:, :, taps, taps] += alpha * kernel
        return weight

    def forward_unfused(self, h: Tensor) -> Tensor:
        """The three replicate-padded dilated convolutions (the official training path)."""
        out = None
        for alpha, kernel, dilation in zip(self.alpha, self._kernels(), _DILATIONS):
            branch = F.conv2d(F.pad(h, (dilation,) * 4, mode='replicate'), kernel, dilation=dilation, groups=self.dim)
            out = alpha * branch if out is None else out + alpha * branch
        return out

    def forward_fused(self, h: Tensor) -> Tensor:
        """One 11x11 depthwise convolution with the current fused kernel."""
        pad = _FUSED_SIZE // 2
        return F.conv2d(F.pad(h, (pad,) * 4, mode='replicate'), self.fused_weight(), groups=self.dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.forward_unfused(h) if self.training else self.forward_fused(h)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, dilations={_DILATIONS}'


class StructureAwareSSM(nn.Module):
    """The Spatial-Mamba token mixer on a channel-last map (B, H, W, C).

    Args:
        dim: Block width C.
        scan: Scan whose routes each visit every token once ('raster' is Spatial-Mamba).
        d_state: SSM state size N.
        ssm_ratio: Inner width / block width.
        d_conv: Kernel size of the depthwise conv before the scan.
    """

    def __init__(self, dim: int, scan: Scan, d_state: int = 1, ssm_ratio: float = 2.0, d_conv: int = 3):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.scan = scan
        self.d_inner = d_inner
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv_dw = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        self.act = nn.SiLU()
        # dt_rank "auto": ceil(block width / 16), as the official factory computes it.
        self.ssm = SelectiveSSM(d_inner, d_state=d_state, dt_rank=math.ceil(dim / 16), num_routes=scan.num_routes)
        self.state_fusion = StateFusion(d_inner)
        self.out_norm = _LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def _fused_readout(self, u: Tensor) -> Tensor:
        """``sum_k sum_n C_kn * fusion(h_kn) + (sum_k D_k) * u`` on the map u (B, Di, H, W); float32 or wider."""
        batch, d_inner, height, width = u.shape
        routes, d_state = self.ssm.num_routes, self.ssm.d_state
        h, cs = self.ssm.forward_states(self.scan.flatten(u))  # (B, K, Di, N, L), (B, K, N, L)
        h = self.scan.scatter_routes(h.flatten(2, 3), (height, width)).view(batch, routes, d_inner, d_state, height,
                                                                             width)
        # Every state component of every route is one image for the depthwise fusion convolution.
        h = self.state_fusion(h.transpose(2, 3).reshape(-1, d_inner, height, width))
        h = h.view(batch, routes, d_state, d_inner, height, width)
        cs = self.scan.scatter_routes(cs, (height, width)).unsqueeze(3)  # (B, K, N, 1, H, W)
        y = (h * cs).sum((1, 2))
        # Each route visits every token once, so the skips of all routes add up per channel.
        d = self.ssm.Ds.view(routes, d_inner).sum(0)
        return y + u * d[:, None, None]

    def forward(self, x: Tensor) -> Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = self.act(self.conv_dw(u.permute(0, 3, 1, 2).contiguous()))
        y = self.out_norm(self._fused_readout(u).permute(0, 2, 3, 1))
        return self.out_proj(y * F.silu(z))


class SpatialMambaBlock(nn.Module):
    """Channel-last block: conv position encoding, SASF-SSM, conv position encoding, MLP (all residual)."""

    def __init__(
            self,
            dim: int,
            scan: Scan,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            mlp_ratio: float = 4.0,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = _LayerNorm(dim)
        self.mixer = StructureAwareSSM(dim, scan, d_state=d_state, ssm_ratio=ssm_ratio)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = _LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    @staticmethod
    def _conv_channel_last(conv: nn.Conv2d, x: Tensor) -> Tensor:
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._conv_channel_last(self.cpe1, x)
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        x = x + self._conv_channel_last(self.cpe2, x)
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ConvNormAct(nn.Module):
    """Conv, optional BatchNorm, optional ReLU (MLLA's ``ConvLayer``)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            stride: int = 1,
            groups: int = 1,
            bias: bool = True,
            norm: bool = True,
            act: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class Stem(nn.Module):
    """MLLA stem, stride 4: 3x3/s2 to C/2, residual pair of 3x3 convs, 3x3/s2 to 4C, 1x1 to C (all with BN)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv1 = ConvNormAct(in_chans, dim // 2, 3, stride=2, bias=False)
        self.conv2 = nn.Sequential(
            ConvNormAct(dim // 2, dim // 2, 3, bias=False),
            ConvNormAct(dim // 2, dim // 2, 3, bias=False, act=False),
        )
        self.conv3 = nn.Sequential(
            ConvNormAct(dim // 2, dim * 4, 3, stride=2, bias=False),
            ConvNormAct(dim * 4, dim, 1, bias=False, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.conv2(x) + x
        return self.conv3(x)


class Downsample(nn.Sequential):
    """MLLA downsampling C -> 2C: 1x1 to 8C + ReLU, 3x3/s2 depthwise + ReLU, 1x1 to 2C + BN."""

    def __init__(self, dim: int, out_dim: int, ratio: float = 4.0):
        hidden = int(out_dim * ratio)
        super().__init__(
            ConvNormAct(dim, hidden, 1, norm=False),
            ConvNormAct(hidden, hidden, 3, stride=2, groups=hidden, norm=False),
            ConvNormAct(hidden, out_dim, 1, act=False),
        )


class SpatialMambaStage(nn.Module):
    """Optional downsampling (NCHW), then channel-last blocks; NCHW in and out."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            scan: Scan,
            downsample: bool = True,
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            mlp_ratio: float = 4.0,
            drop_path: Optional[List[float]] = None,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(dim, out_dim) if downsample else nn.Identity()
        drop_path = drop_path or [0.] * depth
        self.blocks = nn.Sequential(*[
            SpatialMambaBlock(
                out_dim,
                scan,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


def _fusion_scan(scan: Union[str, Scan]) -> Scan:
    """The scan, if its routes can each be laid back onto the map for state fusion."""
    if isinstance(scan, str):
        scan = create_scan(scan)
    elif not isinstance(scan, Scan):
        raise TypeError(f'SpatialMamba: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
    if scan.splits_channels or scan.visits_per_token != scan.num_routes:
        raise ValueError(f'SpatialMamba fuses the hidden states of each route on the 2-D map, so every route must '
                         f'visit every token of every channel once; scan {scan.name or type(scan).__name__!r} '
                         f'(K={scan.num_routes}, visits_per_token={scan.visits_per_token}, '
                         f'splits_channels={scan.splits_channels}) does not')
    return scan


class SpatialMamba(StagedBackbone):
    """Spatial-Mamba: a four-stage pyramid of structure-aware SSM blocks; stage widths double (C, 2C, 4C, 8C).

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: Classifier pooling ('avg', 'max', ... or '' for none).
        embed_dim: Width C of the first stage.
        depths: Blocks per stage.
        d_state: SSM state size N (1 in every release).
        ssm_ratio: SSM inner width / block width.
        mlp_ratio: MLP hidden width / block width.
        scan: Name of a registered scan (or a ``scans.Scan``) whose routes each visit every token once; 'raster'
            is Spatial-Mamba.
        feature_norm: Add a LayerNorm per stage output, applied to the intermediates of ``forward_intermediates``
            and hence of ``features_only=True`` models: the ``outnorm{i}`` of the official detection/segmentation
            backbone.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depths: Tuple[int, ...] = (2, 4, 8, 4),
            d_state: int = 1,
            ssm_ratio: float = 2.0,
            mlp_ratio: float = 4.0,
            scan: Union[str, Scan] = 'raster',
            feature_norm: bool = False,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 2 or embed_dim % 2:
            raise ValueError(f'SpatialMamba: embed_dim must be an even int >= 2 (the stem halves it), '
                             f'got {embed_dim!r}')
        if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f'SpatialMamba: depths must be non-negative ints, one per stage, got {depths!r}')
        scan = _fusion_scan(scan)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.scan = scan
        self.feature_info = []
        dims = [embed_dim * 2 ** i for i in range(len(depths))]

        self.stem = Stem(in_chans, embed_dim)
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        stages = []
        prev_dim, stride = embed_dim, 4
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                stride *= 2
            stages.append(SpatialMambaStage(
                prev_dim,
                dim,
                depth,
                scan,
                downsample=i > 0,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                mlp_ratio=mlp_ratio,
                drop_path=dpr[i],
            ))
            prev_dim = dim
            self.feature_info += [dict(num_chs=dim, reduction=stride, module=f'stages.{i}')]
        self.stages = nn.Sequential(*stages)
        self.feature_norms = nn.ModuleList([_LayerNorm2d(dim) for dim in dims]) if feature_norm else None

        self.num_features = self.head_hidden_size = prev_dim
        self.norm = _LayerNorm2d(prev_dim)
        self.head = ClassifierHead(prev_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        named_apply(_init_weights, self)


def _init_weights(module: nn.Module, name: str = '') -> None:
    """The official init: trunc_normal(0.02) and zero bias for every Linear; convs and norms keep their defaults,
    the fusion kernels and alpha their ones, the ``SelectiveSSM`` parameters their Mamba init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# Official names inside a block -> names here.
_BLOCK_RENAMES = (
    (r'^ln_1\.', 'norm1.'),
    (r'^ln_2\.', 'norm2.'),
    (r'^self_attention\.conv2d\.', 'mixer.conv_dw.'),
    (r'^self_attention\.(x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)$', r'mixer.ssm.\1'),
    (r'^self_attention\.state_fusion\.kernel_3$', 'mixer.state_fusion.kernel_d1'),
    (r'^self_attention\.state_fusion\.kernel_3_1$', 'mixer.state_fusion.kernel_d3'),
    (r'^self_attention\.state_fusion\.kernel_3_2$', 'mixer.state_fusion.kernel_d5'),
    (r'^self_attention\.', 'mixer.'),
)


def _remap_official_key(key: str) -> str:
    """Official Spatial-Mamba key (classification or ``Backbone_SpatialMamba``) -> key of this implementation."""
    key = re.sub(r'^patch_embed\.', 'stem.', key)
    # The official downsampling closes stage i; here it opens stage i + 1.
    match = re.match(r'^layers\.(\d+)\.downsample\.conv\.(.*)$', key)
    if match:
        return f'stages.{int(match.group(1)) + 1}.downsample.{match.group(2)}'
    match = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$', key)
    if match:
        rest = match.group(3)
        for pattern, repl in _BLOCK_RENAMES:
            rest, found = re.subn(pattern, repl, rest)
            if found:
                break
        return f'stages.{match.group(1)}.blocks.{match.group(2)}.{rest}'
    key = re.sub(r'^head\.', 'head.fc.', key)
    return re.sub(r'^outnorm(\d+)\.', r'feature_norms.\1.', key)


def _convert_official(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official keys -> this implementation; the per-block SSM tensors gain the route axis of ``SelectiveSSM``."""
    out = {}
    for key, value in state_dict.items():
        key = _remap_official_key(key)
        if re.search(r'\.ssm\.(x_proj_weight|dt_projs_weight|dt_projs_bias)$', key):
            value = value.unsqueeze(0)  # one route: (R + 2N, Di) -> (1, R + 2N, Di), ...
        out[key] = value
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: SpatialMamba) -> Dict[str, Tensor]:
    """Convert an official Spatial-Mamba checkpoint (classification or detection backbone) for ``model``.

    Accepts the training checkpoint dict (``'model'`` preferred, like the official backbone loader, else
    ``'model_ema'``), an MMEngine ``'state_dict'`` (``backbone.`` keys are kept, the rest dropped) or a plain
    state_dict, with or without a DDP ``module.`` prefix; checkpoints of this implementation pass through. The
    backbone's ``outnorm{i}`` load into ``feature_norms`` when the model has them and are dropped otherwise; a model
    with ``feature_norm=True`` loading a classification checkpoint keeps its own (fresh) norms, like the official
    backbone. The input is not modified.

    Raises:
        ValueError: The checkpoint is not a Spatial-Mamba, or is of another variant or configuration (the message
            names the mismatched keys and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'model_ema', 'state_dict'))
    if 'patch_embed.conv1.conv.weight' in state_dict:
        out = _convert_official(state_dict)
    elif 'stem.conv1.conv.weight' in state_dict:
        out = dict(state_dict)
    else:
        raise ValueError('checkpoint is not a Spatial-Mamba: it has neither the official stem '
                         '(patch_embed.conv1.conv.weight) nor the stem of this implementation (stem.conv1.conv.weight)')

    dims = tuple(info['num_chs'] for info in model.feature_info)
    # The detection backbone has no final norm, and a model without feature norms drops the backbone's outnorms.
    return fit_state_dict(
        out,
        model,
        f'dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, scan {model.scan.name!r} with '
        f'{model.scan.num_routes} route(s); official checkpoints have 1',
        optional=('feature_norms.', 'norm.', 'head.'),
        own=('feature_norms.',),
    )


def _create_spatialmamba(variant: str, pretrained: bool = False, **kwargs) -> SpatialMamba:
    return build_model_with_cfg(
        SpatialMamba,
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
        'first_conv': 'stem.conv1.conv',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2410.15091',
        'paper_name': 'Spatial-Mamba: Effective Visual State Space Models via Structure-Aware State Fusion',
        'origin_url': 'https://github.com/EdwardChasel/Spatial-Mamba',
        **kwargs,
    }


# The README's Google Drive files, as direct downloads.
_DRIVE = 'https://drive.google.com/uc?export=download&id='

default_cfgs = generate_default_cfgs({
    'spatialmamba_tiny.in1k': _cfg(url=_DRIVE + '19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW'),
    'spatialmamba_small.in1k': _cfg(url=_DRIVE + '1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O'),
    'spatialmamba_base.in1k': _cfg(url=_DRIVE + '1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM'),
    'test_spatialmamba': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})


@register_model
def spatialmamba_tiny(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-T: 27M params, 4.5 GFLOPs, 83.5% IN-1K."""
    model_args = dict(embed_dim=64, depths=(2, 4, 8, 4), drop_path_rate=0.2)
    return _create_spatialmamba('spatialmamba_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spatialmamba_small(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-S: 43M params, 7.1 GFLOPs, 84.6% IN-1K."""
    model_args = dict(embed_dim=64, depths=(2, 4, 21, 5), drop_path_rate=0.3)
    return _create_spatialmamba('spatialmamba_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def spatialmamba_base(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Spatial-Mamba-B: 96M params, 15.8 GFLOPs, 85.3% IN-1K."""
    model_args = dict(embed_dim=96, depths=(2, 4, 21, 5), drop_path_rate=0.5)
    return _create_spatialmamba('spatialmamba_base', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_spatialmamba(pretrained: bool = False, **kwargs) -> SpatialMamba:
    """Tiny Spatial-Mamba for CI; the configuration of the official-output fixture."""
    model_args = dict(embed_dim=12, depths=(1, 1, 2, 1), drop_path_rate=0.2)
    return _create_spatialmamba('test_spatialmamba', pretrained=pretrained, **dict(model_args, **kwargs))
