""" Vision Mamba (Vim)

Paper: `Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model`
    - https://arxiv.org/abs/2401.09417 (ICML 2024)
Original code: https://github.com/hustvl/Vim (Apache-2.0 license)

The released "midclstok" models (``VisionMamba`` with ``bimamba_type='v2'``, a middle class token and
``if_divide_out``), weight-compatible with the official checkpoints through ``checkpoint_filter_fn``:

* A plain (single-stride) backbone: patch embedding (16x16 conv, stride 16, or stride 8 for the
  fine-grained "+" models), a learned class token inserted at index M // 2 of the M row-major patch
  tokens, a learned absolute position embedding added after the insertion, 24 blocks, a final RMSNorm,
  and a linear head on the class token (the official ``final_pool_type='mean'`` is dead code there).
* Blocks are pre-norm residual blocks on a float32 residual stream: ``x + DropPath(mixer(RMSNorm(x)))``.
  This is the official fused "Add -> RMSNorm -> mixer" block (``residual_in_fp32``) regrouped: the add
  and the norm run in float32 and the norm output is cast to the parameter dtype, as in the Triton
  ``rms_norm_fn``; the drop-path rates per block are the same.
* The bidirectional ("v2") mixer: shared ``in_proj`` (-> x, z) and ``out_proj``; per direction a
  causal depthwise conv1d (kernel 4) + SiLU, x_proj / dt_proj / A / D, and the selective scan gated
  by SiLU(z); the two outputs are averaged ("div2") before ``out_proj``. Both directions are one
  ``SelectiveSSM`` with K = 2 routes (route 0 forward, route 1 the flipped sequence), so one kernel
  call scans both, and one grouped conv1d holds both convs.

Scans: the route geometry is a scan from the ``scans`` registry applied to the token sequence by
``scans.MiddleTokenScan``; the default ``'bidirectional'`` is the official order exactly (the whole
sequence, class token included, forward and flipped). Any scan whose routes visit every token once
works (``scan='cross'`` gives K = 4 parameter groups); only ``'bidirectional'`` matches the official
K = 2 checkpoints. The merged routes are averaged (divided by the visits per token), the
generalisation of "div2".

Input sizes: any H, W that the patch embedding tiles exactly (H, W >= patch size, (H - patch) divisible
by the stride; multiples of 16 for the stride-16 models), with a clear error otherwise (the official
conv would silently drop the remainder, and the official model only accepts ``img_size``). The
position embedding is bicubically resampled to the patch grid of the input on the fly, and by
``set_input_size`` / ``checkpoint_filter_fn`` permanently.

Official bugs and deliberate differences:

* The official resampling helper (``interpolate_pos_embed`` in ``vim/main.py``, used to fine-tune the
  stride-8 models) treats the *first* entry as the class token, which is wrong for a middle class token:
  it resamples a grid that contains the class embedding and drops patch 0's (hustvl/Vim #108, #112). Here
  the class entry at M // 2 is split off, the patch grid resampled, and the entry re-inserted at the new
  middle. The released stride-8 checkpoints already hold their 27x27 + 1 embedding, so loading them is
  unaffected.
* The official init gives the backward direction's ``dt_proj_b`` no Mamba dt init (its bias is zeroed by
  the GPT-2 style re-init), so training starts with delta_b = softplus(0) = 0.69 on every channel. Here
  both directions get the Mamba init of ``SelectiveSSM``; loaded checkpoints are unaffected.
* The official training decays ``A_log`` (timm 0.4.12 ``add_weight_decay`` only exempts 1-D tensors);
  here ``no_weight_decay()`` lists ``A_logs``, ``Ds`` and the dt bias, as Mamba intends.
* The base entrypoint passes the misspelt ``if_devide_out=True``, which lands in ``**kwargs``; the base
  model still averages because ``VisionMamba`` defaults to ``if_divide_out=True`` since the commit that
  released the base weights (0fe80c3), so all variants here average.
* The official slow path (``use_fast_path=False``) silently drops the backward direction; only the
  fast path is the published model, and it is what the fixtures in ``tests/fixtures/vim`` record.

Weights: the official files are DeiT-style training checkpoints that also pickle the run's
``argparse.Namespace`` (``'args'``); timm loads with ``weights_only=True``, so allow it for these
trusted files: ``with torch.serialization.safe_globals([argparse.Namespace]): timm.create_model(...,
pretrained=True)``. They hold ``'model'`` (the weights the published accuracies were measured with),
which ``checkpoint_filter_fn`` takes from a whole file (the hub path), and ``'model_ema'``, which timm's
loader for a local ``file=`` picks first; pass ``torch.load(path, weights_only=False)['model']`` as
``pretrained_cfg_overlay=dict(state_dict=...)`` to load the published weights from disk.

Written for linzoo from the paper and reference notes (no official code copied).
"""
import math
import re
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, lecun_normal_, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from kernels import autocast_dtype, causal_conv1d, rms_norm
from scans import MiddleTokenScan, Scan

from ._checkpoint import fit_state_dict, unwrap_checkpoint
from .ssm import SelectiveSSM, ssm_no_weight_decay

__all__ = ['Vim', 'resample_pos_embed']  # model_registry will add each entrypoint fn to this


def resample_pos_embed(
        pos_embed: Tensor,
        new_grid: Tuple[int, int],
        old_grid: Tuple[int, int],
) -> Tensor:
    """Resample a Vim position embedding (1, M + 1, D), class entry at M // 2, to another patch grid.

    The class entry is split off, the M patch entries are resampled as an (old_h, old_w) grid (bicubic,
    ``align_corners=False``, no antialiasing, like the official fine-tuning helper) and the class entry is
    re-inserted at the middle of the new sequence. The official helper instead treats entry 0 as the class
    token, which mixes the class embedding into the grid (see the module docstring).

    Args:
        pos_embed: Position embedding of an (old_h, old_w) patch grid, shape (1, old_h * old_w + 1, D).
        new_grid: Target patch grid (H, W).
        old_grid: Patch grid of ``pos_embed``.
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    if new_grid == old_grid:
        return pos_embed
    old_middle, new_middle = old_grid[0] * old_grid[1] // 2, new_grid[0] * new_grid[1] // 2
    cls_entry = pos_embed[:, old_middle:old_middle + 1]
    patches = torch.cat([pos_embed[:, :old_middle], pos_embed[:, old_middle + 1:]], dim=1)
    patches = resample_abs_pos_embed(
        patches, new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=0, antialias=False)
    return torch.cat([patches[:, :new_middle], cls_entry, patches[:, new_middle:]], dim=1)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 whatever the input dtype, output in the parameter dtype (weight only, no bias) or
    the one asked for (``kernels.rms_norm``: Triton on CUDA).

    The semantics of ``mamba_ssm``'s Triton ``rms_norm_fn`` on the float32 residual stream.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
        return rms_norm(x, self.weight, self.eps, out_dtype=out_dtype or self.weight.dtype)


class PatchEmbed(nn.Module):
    """Patch embedding by a conv whose stride may be smaller than the patch (the overlapping "+" models)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride)

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """Patch grid of an H x W input (the conv output size)."""
        return (height - self.patch_size) // self.stride + 1, (width - self.patch_size) // self.stride + 1

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class BiMamba(nn.Module):
    """The bidirectional ("v2") Mamba mixer of Vim over a token sequence with a middle class token.

    ``in_proj`` -> x, z; the routes of ``tokens`` read both; per route a causal depthwise conv (left
    padding ``d_conv - 1``) + SiLU and the selective scan of that route's parameters gated by SiLU(z)
    (inside the kernel); the routes are merged back, averaged over the visits of each token, and
    projected by ``out_proj``.

    Args:
        dim: Token width.
        tokens: Route geometry over the token sequence, shared by all blocks of the model.
        d_state: SSM state size N.
        ssm_ratio: Inner width / token width (Mamba's ``expand``).
        dt_rank: Rank of the dt projection.
        d_conv: Kernel size of the causal depthwise conv.
    """

    def __init__(
            self,
            dim: int,
            tokens: MiddleTokenScan,
            d_state: int = 16,
            ssm_ratio: float = 2.0,
            dt_rank: int = 12,
            d_conv: int = 4,
    ):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        channels = tokens.channels_per_route(d_inner)
        conv_channels = tokens.num_routes * channels
        self.tokens = tokens
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        # One grouped conv holds every route's depthwise conv (official conv1d, conv1d_b, ...); run causally
        # (kernels.causal_conv1d: padded by d_conv - 1 on the left) with its SiLU.
        self.conv1d = nn.Conv1d(conv_channels, conv_channels, d_conv, groups=conv_channels, padding=d_conv - 1)
        # The scan returns the inputs' dtype, as the official Vim's (mamba_ssm) does; the merge sums in float32.
        self.ssm = SelectiveSSM(channels, d_state=d_state, dt_rank=dt_rank, num_routes=tokens.num_routes,
                                float32_output=False)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: Tensor, grid_size: Tuple[int, int]) -> Tensor:
        batch, length, _ = x.shape
        # in_proj's output viewed channel-first; x and z read along the routes in one pass, their gradients
        # written back in in_proj's (B, L, 2 * d_inner) layout in one pass.
        xz = self.in_proj(x).transpose(1, 2)
        xs, zs = self.tokens.flatten_pair(xz, grid_size)
        xs = causal_conv1d(xs.reshape(batch, -1, length), self.conv1d.weight, self.conv1d.bias,
                           activation='silu').reshape(zs.shape)
        # Token-major output: (B, L, d_inner) for out_proj without a copy, the average over each token's visits
        # and the cast to out_proj's dtype taken in the merge's pass.
        y = self.tokens.merge(self.ssm(xs, z=zs), grid_size, channels_contiguous=True,
                              scale=1.0 / self.tokens.visits_per_token, out_dtype=xz.dtype)
        return self.out_proj(y.transpose(1, 2))


class VimBlock(nn.Module):
    """``x + DropPath(BiMamba(RMSNorm(x)))`` on the float32 residual stream."""

    def __init__(
            self,
            dim: int,
            tokens: MiddleTokenScan,
            d_state: int = 16,
            ssm_ratio: float = 2.0,
            dt_rank: int = 12,
            d_conv: int = 4,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.mixer = BiMamba(dim, tokens, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: Tensor, grid_size: Tuple[int, int]) -> Tensor:
        # Normalised straight into in_proj's autocast dtype: no separate cast of the mixer's input.
        return x + self.drop_path(self.mixer(self.norm(x, autocast_dtype(x.device.type)), grid_size))


class Vim(nn.Module):
    """Vision Mamba with a middle class token.

    ``forward_features`` returns the normalised token sequence (B, M + 1, D), class token at index M // 2
    (``output_fmt = 'NLC'``); ``forward_intermediates`` and ``features_only=True`` return the block outputs
    (the residual stream) as NCHW maps of the patch grid, class token dropped.

    Args:
        img_size: Input size the position embedding is learned for (other sizes resample it).
        patch_size: Patch size of the patch-embedding conv.
        patch_stride: Stride of the patch-embedding conv (default ``patch_size``; 8 for the "+" models).
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: 'token' (the middle class token, official), 'avg' (mean of the patch tokens) or ''
            (the token sequence).
        embed_dim: Token width D.
        depth: Number of blocks.
        d_state: SSM state size N.
        ssm_ratio: Mixer inner width / D.
        dt_rank: Rank of the dt projection, or 'auto' for ceil(D / 16).
        d_conv: Kernel size of the causal depthwise conv.
        scan: Name of a registered scan (or a ``scans.Scan``) whose routes visit every token once; the
            parameter groups per block follow its K. 'bidirectional' is Vim.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            patch_stride: Optional[int] = None,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 192,
            depth: int = 24,
            d_state: int = 16,
            ssm_ratio: float = 2.0,
            dt_rank: Union[int, str] = 'auto',
            d_conv: int = 4,
            scan: Union[str, Scan] = 'bidirectional',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        patch_stride = patch_size if patch_stride is None else patch_stride
        for name, value in (('patch_size', patch_size), ('patch_stride', patch_stride), ('embed_dim', embed_dim),
                            ('depth', depth), ('d_conv', d_conv)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'Vim: {name} must be an int >= 1, got {value!r}')
        if not (dt_rank == 'auto' or (isinstance(dt_rank, int) and dt_rank > 0)):
            raise ValueError(f"Vim: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        self._check_pool(global_pool)
        if not isinstance(scan, (str, Scan)):
            raise TypeError(f'Vim: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.output_fmt = 'NLC'
        self.grad_checkpointing = False
        self.tokens = MiddleTokenScan(scan)

        self.patch_embed = PatchEmbed(patch_size, patch_stride, in_chans, embed_dim)
        img_size = to_2tuple(img_size)
        self._check_size(*img_size, what='img_size')
        self.grid_size = self.patch_embed.grid_size(*img_size)
        self.tokens.index_plan(*self.grid_size)  # a scan that cannot carry the class token fails here, not later
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim))

        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList([
            VimBlock(
                embed_dim,
                self.tokens,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                dt_rank=math.ceil(embed_dim / 16) if dt_rank == 'auto' else dt_rank,
                d_conv=d_conv,
                drop_path=dpr[i],
            )
            for i in range(depth)
        ])
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=patch_stride, module=f'blocks.{i}') for i in range(depth)]
        self.norm = RMSNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official init: lecun-normal patch conv, trunc-normal(0.02) head, class token and position
        embedding, zero biases, ``out_proj`` scaled by 1/sqrt(depth) (GPT-2 scheme); the mixer's other
        layers keep the PyTorch defaults and ``SelectiveSSM`` its Mamba init (both directions, see above)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=.02)
            nn.init.zeros_(self.head.bias)
        for block in self.blocks:
            # nn.Linear's default init is kaiming_uniform(a=sqrt(5)), which the official code re-draws and scales.
            block.mixer.out_proj.weight.div_(math.sqrt(len(self.blocks)))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^cls_token|^pos_embed|^patch_embed',
            blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'pos_embed', 'cls_token'} | ssm_no_weight_decay(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Resample the position embedding to the patch grid of ``img_size`` for good (e.g. to fine-tune there)."""
        img_size = to_2tuple(img_size)
        self._check_size(*img_size, what='img_size')
        grid = self.patch_embed.grid_size(*img_size)
        with torch.no_grad():
            self.pos_embed = nn.Parameter(resample_pos_embed(self.pos_embed.detach(), grid, self.grid_size))
        self.grid_size = grid

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ('token', 'avg', ''):
            raise ValueError(f"Vim: global_pool must be 'token', 'avg' or '', got {global_pool!r}")

    def _check_size(self, height: int, width: int, what: str = 'input') -> None:
        patch, stride = self.patch_embed.patch_size, self.patch_embed.stride
        if min(height, width) < patch or (height - patch) % stride or (width - patch) % stride:
            rule = f'multiples of {patch}' if patch == stride else f'{patch} + {stride} * n (multiples of {stride})'
            raise ValueError(f'{type(self).__name__} (patch {patch}, stride {stride}) needs H and W that the patch '
                             f'embedding tiles exactly, i.e. {rule} and >= {patch}; got {what} {height}x{width}; '
                             f'pad or resize (the official conv would silently drop the remainder)')

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Images -> float32 token sequence (patches, middle class token, position embedding) and patch grid."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) '
                             f'(in_chans={self.in_chans}), got {tuple(x.shape)}')
        self._check_size(x.shape[2], x.shape[3])
        grid = self.patch_embed.grid_size(x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        middle = self.tokens.middle_index(*grid)
        x = torch.cat([x[:, :middle], self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x[:, middle:]], dim=1)
        x = x + resample_pos_embed(self.pos_embed, grid, self.grid_size)
        # The residual stream stays float32 (official residual_in_fp32).
        return x.float(), grid

    def _run_block(self, block: VimBlock, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, grid)
        return block(x, grid)

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward returning block outputs as NCHW maps of the patch grid (stride ``patch_stride``) as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Blocks to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final norm to the returned block outputs.
            stop_early: Stop after the last requested block.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.

        Returns:
            The block outputs (class token dropped), preceded by ``forward_features``' output unless
            ``intermediates_only``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{type(self).__name__}.forward_intermediates: output_fmt must be 'NCHW', "
                             f'got {output_fmt!r}')
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, grid = self._embed(x)
        middle = self.tokens.middle_index(*grid)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, grid)
            if i in take_indices:
                feat = self.norm(x) if norm else x
                feat = torch.cat([feat[:, :middle], feat[:, middle + 1:]], dim=1)
                intermediates.append(feat.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1]))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last of ``indices`` (and the final norm / head) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        x, grid = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x, grid)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        middle = (x.shape[1] - 1) // 2
        if self.global_pool == 'token':
            x = x[:, middle]
        elif self.global_pool == 'avg':
            x = torch.cat([x[:, :middle], x[:, middle + 1:]], dim=1).mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# Official per-direction mixer parameters: forward name -> (backward name, stacked name here, how they stack).
_OFFICIAL_PAIRS = {
    'conv1d.weight': ('conv1d_b.weight', 'conv1d.weight', torch.cat),
    'conv1d.bias': ('conv1d_b.bias', 'conv1d.bias', torch.cat),
    'x_proj.weight': ('x_proj_b.weight', 'ssm.x_proj_weight', torch.stack),
    'dt_proj.weight': ('dt_proj_b.weight', 'ssm.dt_projs_weight', torch.stack),
    'dt_proj.bias': ('dt_proj_b.bias', 'ssm.dt_projs_bias', torch.stack),
    'A_log': ('A_b_log', 'ssm.A_logs', torch.cat),
    'D': ('D_b', 'ssm.Ds', torch.cat),
}


def _convert_official(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official ``VisionMamba`` keys -> this implementation (the two directions stacked as routes 0 and 1)."""
    out, paired = {}, set()
    for key, value in state_dict.items():
        match = re.match(r'^layers\.(\d+)\.mixer\.(.*)$', key)
        if match is None or match.group(2) not in _OFFICIAL_PAIRS:
            continue
        backward, target, stack = _OFFICIAL_PAIRS[match.group(2)]
        backward = f'layers.{match.group(1)}.mixer.{backward}'
        if backward not in state_dict:
            raise ValueError(f'official Vim checkpoint has {key} but not its backward twin {backward}; only the '
                             f'bidirectional v2 models (midclstok releases) are supported')
        out[f'blocks.{match.group(1)}.mixer.{target}'] = stack([value, state_dict[backward]])
        paired.update((key, backward))
    for key, value in state_dict.items():
        if key not in paired:
            out[re.sub(r'^norm_f\.', 'norm.', re.sub(r'^layers\.', 'blocks.', key))] = value
    return out


def _grid_of(num_patches: int, model: Vim) -> Tuple[int, int]:
    """Patch grid of a checkpoint position embedding: the model's, or the square one of the official files."""
    if num_patches == model.grid_size[0] * model.grid_size[1]:
        return model.grid_size
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f'checkpoint pos_embed holds {num_patches} patch entries (+1 class entry), neither the '
                         f'model grid {model.grid_size} nor a square grid; build the model with the img_size the '
                         f'checkpoint was trained at')
    return side, side


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: Vim) -> Dict[str, Tensor]:
    """Convert an official Vim checkpoint (or one of this implementation) for ``model``.

    Accepts the training checkpoint dict (``'model'`` preferred, else ``'model_ema'``), an MMEngine-style
    ``'state_dict'`` or a plain state_dict, with or without a DDP ``module.`` prefix. Official keys are
    renamed and the per-direction tensors stacked into routes 0 (forward) and 1 (backward); the position
    embedding is resampled to the model's patch grid with the class entry kept in the middle (e.g. a
    stride-16 checkpoint for a stride-8 or other-resolution model).

    Raises:
        ValueError: The checkpoint is of another architecture: a legacy RoPE Vim, or another variant
            (the message names the mismatched keys and shapes).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'model_ema', 'state_dict'))
    if any(k.startswith('rope.') for k in state_dict):
        raise ValueError('checkpoint is a legacy Vim with RoPE (rope.* keys, Jan 2024 release), not the middle-class-'
                         'token model implemented here')
    if any(k.startswith('layers.') for k in state_dict):
        state_dict = _convert_official(state_dict)

    pos_embed = state_dict.get('pos_embed')
    if pos_embed is not None and pos_embed.dim() == 3 and pos_embed.shape[1] != model.pos_embed.shape[1]:
        # unwrap_checkpoint returned a new dict: the caller's is not modified.
        state_dict['pos_embed'] = resample_pos_embed(
            pos_embed, model.grid_size, _grid_of(pos_embed.shape[1] - 1, model))
    return fit_state_dict(
        state_dict,
        model,
        f'embed_dim={model.embed_dim}, depth={len(model.blocks)}, scan {model.tokens.scan.name!r} with '
        f'K={model.tokens.num_routes}; official checkpoints are bidirectional, K=2',
    )


def _create_vim(variant: str, pretrained: bool = False, **kwargs) -> Vim:
    # Features at four evenly spaced blocks (5, 11, 17, 23 for depth 24, as the official segmentation backbone).
    depth = kwargs.get('depth', 24)
    out_indices = tuple(sorted({max((i + 1) * depth // 4 - 1, 0) for i in range(4)}))
    return build_model_with_cfg(
        Vim,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': None,
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2401.09417',
        'paper_name': 'Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model',
        'origin_url': 'https://github.com/hustvl/Vim',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'vim_tiny_patch16_224.in1k': _cfg(
        hf_hub_id='hustvl/Vim-tiny-midclstok', hf_hub_filename='vim_t_midclstok_76p1acc.pth'),
    'vim_tiny_patch16_stride8_224.in1k': _cfg(
        hf_hub_id='hustvl/Vim-tiny-midclstok', hf_hub_filename='vim_t_midclstok_ft_78p3acc.pth'),
    'vim_small_patch16_224.in1k': _cfg(
        hf_hub_id='hustvl/Vim-small-midclstok', hf_hub_filename='vim_s_midclstok_80p5acc.pth'),
    'vim_small_patch16_stride8_224.in1k': _cfg(
        hf_hub_id='hustvl/Vim-small-midclstok', hf_hub_filename='vim_s_midclstok_ft_81p6acc.pth'),
    'vim_base_patch16_224.in1k': _cfg(
        hf_hub_id='hustvl/Vim-base-midclstok', hf_hub_filename='vim_b_midclstok_81p9acc.pth'),
    'test_vim': _cfg(input_size=(3, 64, 64), crop_pct=1.0),
})


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti (middle class token): 7M params, 76.1% IN-1K."""
    model_args = dict(patch_size=16, embed_dim=192, depth=24)
    return _create_vim('vim_tiny_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vim_tiny_patch16_stride8_224(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti+ (stride-8 patches, fine-tuned at finer granularity): 7M params, 78.3% IN-1K."""
    model_args = dict(patch_size=16, patch_stride=8, embed_dim=192, depth=24)
    return _create_vim('vim_tiny_patch16_stride8_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S (middle class token): 26M params, 80.5% IN-1K."""
    model_args = dict(patch_size=16, embed_dim=384, depth=24, drop_path_rate=0.05)
    return _create_vim('vim_small_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vim_small_patch16_stride8_224(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S+ (stride-8 patches, fine-tuned at finer granularity): 26M params, 81.6% IN-1K."""
    model_args = dict(patch_size=16, patch_stride=8, embed_dim=384, depth=24)
    return _create_vim('vim_small_patch16_stride8_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vim_base_patch16_224(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-B (middle class token): 98M params, 81.9% IN-1K; no recipe published, drop path is the code default."""
    model_args = dict(patch_size=16, embed_dim=768, depth=24, drop_path_rate=0.1)
    return _create_vim('vim_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_vim(pretrained: bool = False, **kwargs) -> Vim:
    """Tiny Vim for CI; the configuration of the official-output fixtures (D 32, depth 4, 64x64)."""
    model_args = dict(img_size=64, patch_size=16, embed_dim=32, depth=4)
    return _create_vim('test_vim', pretrained=pretrained, **dict(model_args, **kwargs))
