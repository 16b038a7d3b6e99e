""" Swin Transformer on the zoo's scans

Paper: `Swin Transformer: Hierarchical Vision Transformer using Shifted Windows` - https://arxiv.org/abs/2103.14030
(ICCV 2021)
Original code: https://github.com/microsoft/Swin-Transformer (MIT license, Copyright (c) 2021 Microsoft)

With the same weights this model computes what timm's ``swin_*_patch4_window*`` models compute
(timm/models/swin_transformer.py), to float32 rounding. ``checkpoint_filter_fn`` converts timm's state_dicts
(``pretrained=True`` loads timm's ``timm/swin_*`` copies of the official weights from the Hugging Face hub) and
the official Microsoft release checkpoints.

Names start with ``zswin_`` ('z' for the zoo): timm already registers ``swin_*``, and registering a taken name
again silently replaces timm's entrypoint (timm only warns). The rest of each name is timm's, so
``zswin_tiny_patch4_window7_224`` is the zoo's ``swin_tiny_patch4_window7_224``.

How it is built, and where it differs from timm:

* Window partition, with or without Swin's cyclic shift, is the ``window`` scan of ``scans`` with
  ``shift=window // 2`` and ``pad=True``: ``flatten`` gathers the tokens of every (shifted) window, zeros on the
  padding, and ``merge`` scatters them back, which replaces timm's roll, pad, partition, reverse, crop and roll.
* Attention is ``F.scaled_dot_product_attention`` with the relative-position bias (plus the shift mask) as
  ``attn_mask``.
* Any input whose H and W are multiples of the patch size (4) works; other sizes raise a ValueError, where timm's
  patch conv would silently drop the remainder. Stages pad to whole windows like timm (roll first, then pad).
  Each block fits its window to its map (the scan's ``fit``: timm's per-axis form of the official rule, an axis no
  longer than the window is one unshifted window) for the actual size of every forward, so the model equals
  timm's model built for that input size (``img_size=(H, W)``) wherever timm keeps the trained window: at the
  pretrained sizes and larger ones. timm's ``strict_img_size=False`` mode instead keeps the fit of its
  construction size (a 224 model never shifts its last stage, whatever the input), and on maps smaller than the
  window timm builds a smaller, interpolated bias table, while here the smaller window reads the trained entries
  of its relative offsets. Shift masks are built once per size and cached.
* So there is no ``img_size``, ``strict_img_size`` or ``set_input_size``.
* Stages run channel-last (B, H, W, C) like timm; ``forward_features``, ``forward_intermediates`` and
  ``features_only=True`` models return NCHW.
* Module names follow the zoo (``stem``, ``stages``); the filter renames timm's ``patch_embed`` and ``layers``.

Written for linzoo from the paper, the official code and timm (read, not copied).
"""
import operator
import re
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, Mlp, PatchEmbed, resize_rel_pos_bias_table, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, named_apply, register_model
from timm.models._features import feature_take_indices

from scans import Scan, create_scan
from ._checkpoint import fit_state_dict, unwrap_checkpoint

__all__ = ['SwinTransformer']  # model_registry will add each entrypoint fn to this

# Added to the attention logits of token pairs from different regions of a shifted window (the official value;
# finite, so that no row is ever fully masked).
_MASKED = -100.0
# With an additive mask on 49-token windows, PyTorch's default choice on an H100 (cuDNN or the math fallback) is
# 2-3x slower than the memory-efficient kernel, measured at Swin-T's shapes (benchmarks/models.md); cuDNN is left out.
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _relative_position_index(window_size: Tuple[int, int]) -> Tensor:
    """(N, N) index into the flat relative-position table of an (h, w) window, N = h * w.

    Tokens i, j at (y, x) positions in the window (row-major) get ``(dy + h - 1) * (2w - 1) + (dx + w - 1)``
    for their offset (dy, dx) = pos_i - pos_j, the layout of the official and timm tables.
    """
    height, width = window_size
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    y, x = y.reshape(-1), x.reshape(-1)
    dy = y.view(-1, 1) - y.view(1, -1)
    dx = x.view(-1, 1) - x.view(1, -1)
    return (dy + height - 1) * (2 * width - 1) + dx + width - 1


class WindowLayout(NamedTuple):
    """How one block cuts an (H, W) map into windows."""
    size: Tuple[int, int]  # (H, W) of the map
    window: Tuple[int, int]  # the window fitted to the map
    shift: Tuple[int, int]  # cyclic shift, 0 along an axis that fits in one window
    shifted: bool  # whether the block shifts (which scan it uses)
    num_windows: int  # windows of the map padded to whole windows
    mask: Optional[Tensor]  # (nW, N, N) additive attention mask when shifted along some axis


class ShiftedWindows:
    """Swin's window partition of channel-last maps, shifted or not, on the ``window`` scan of ``scans``.

    One instance serves every block of a model: two ``window`` scans with ``pad=True``, one shifted by half a
    window, which fit the window to small maps (Swin's rule, see ``WindowScan``) and cache their index plans
    per map size and device; and the layouts, shift masks included, cached per map size and device. It holds
    no parameters.

    Args:
        window_size: The model's (trained) window (height, width).
    """

    def __init__(self, window_size: Tuple[int, int]) -> None:
        self.window_size = window_size
        self.window_scan = create_scan('window', window_size=window_size, pad=True)
        self.shifted_scan = create_scan(
            'window', window_size=window_size, shift=(window_size[0] // 2, window_size[1] // 2), pad=True)
        self._layouts: Dict[Tuple[int, int, bool, torch.device], WindowLayout] = {}

    def scan(self, shifted: bool) -> Scan:
        # A choice, not a tuple indexed by the bool: dynamo of torch 2.9 and 2.11 rejects bool indices.
        return self.shifted_scan if shifted else self.window_scan

    # Runs eagerly under torch.compile, whose graph keeps the result (the mask) as a constant, like the scans'
    # index plans.
    @torch.compiler.assume_constant_result
    def layout(self, height: int, width: int, shifted: bool, device: torch.device) -> WindowLayout:
        """The windows of a (shifted) block on an (height, width) map, with the mask on ``device``."""
        key = (height, width, shifted, device)
        layout = self._layouts.get(key)
        if layout is None:
            window, shift = self.scan(shifted).fit(height, width)
            num_windows = -(-height // window[0]) * -(-width // window[1])
            mask = self._mask((height, width), window, shift).to(device) if any(shift) else None
            layout = self._layouts[key] = WindowLayout((height, width), window, shift, shifted, num_windows, mask)
        return layout

    def _mask(self, size: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int]) -> Tensor:
        """(nW, N, N) float mask of a shifted layout: 0 within a region, ``_MASKED`` across regions.

        The roll brings the first rows (columns) of the map next to the last ones, so the last window along
        a shifted axis holds tokens that are not neighbours. As in timm, the regions are cut on the rolled map
        padded to whole windows: along an axis of padded length P, positions [0, P - window), [P - window,
        P - shift) and [P - shift, P); an unshifted axis is one window, so one region.
        """
        frame = [-(-length // win) * win for length, win in zip(size, window)]
        regions = []
        for length, win, step in zip(frame, window, shift):
            pos = torch.arange(length)
            regions.append((pos >= length - win).long() + (pos >= length - step).long())
        labels = (regions[0].view(-1, 1) * 3 + regions[1].view(1, -1)).view(-1)
        # The padded frame fits the same windows without shifting them, so the unshifted scan of the frame lists
        # its positions in window order.
        labels = labels[self.window_scan.index_plan(*frame)[0]].view(-1, window[0] * window[1])
        return (labels.unsqueeze(2) != labels.unsqueeze(1)).float() * _MASKED

    def partition(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """(B, H, W, C) map -> (B, nW, N, C) window tokens, N = window area; zeros on the padding."""
        batch, _, _, channels = x.shape
        routes = self.scan(layout.shifted).flatten(x, channels_last=True)  # (B, 1, nW * N, C), one gather
        return routes.view(batch, layout.num_windows, -1, channels)

    def reverse(self, windows: Tensor, layout: WindowLayout) -> Tensor:
        """(B, nW, N, C) window tokens -> (B, H, W, C) map; the padding is dropped."""
        batch, num_windows, length, channels = windows.shape
        routes = windows.reshape(batch, 1, num_windows * length, channels)
        return self.scan(layout.shifted).merge(routes, layout.size, channels_last=True)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a learned relative-position bias (W-MSA / SW-MSA).

    Args:
        dim: Token width.
        num_heads: Attention heads.
        window_size: The trained window (height, width): the bias table has one entry per relative offset in it.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        height, width = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * height - 1) * (2 * width - 1), num_heads))
        self.register_buffer(
            'relative_position_index', torch.empty(height * width, height * width, dtype=torch.long), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=.02)
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Fill the relative-position index (e.g. after ``to_empty``; timm's ``reinit_non_persistent_buffers``)."""
        with torch.no_grad():
            self.relative_position_index.copy_(_relative_position_index(self.window_size))

    def _bias(self, window: Tuple[int, int]) -> Tensor:
        """(heads, N, N) relative-position bias of an (h, w) window."""
        height, width = window
        length = height * width
        index = self.relative_position_index
        # Compared as ints: dynamo of torch 2.9 and 2.11 fails on `!=` between this tuple (a constant of the cached
        # layout) and the attribute's.
        if height != self.window_size[0] or width != self.window_size[1]:
            # A window fitted to a smaller map is the top-left part of the trained one, with the same offsets.
            index = index.view(*self.window_size, *self.window_size)[:height, :width, :height, :width]
        bias = self.relative_position_bias_table[index.reshape(-1)]
        return bias.view(length, length, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, window: Tuple[int, int], mask: Optional[Tensor] = None) -> Tensor:
        """Attend within each window.

        Args:
            x: Window tokens (B, nW, N, C).
            window: The (h, w) window, h * w = N.
            mask: Per-window additive mask (nW, N, N) of a shifted layout.

        Returns:
            (B, nW, N, C).
        """
        batch, num_windows, length, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(batch, num_windows, length, 3, heads, dim // heads).permute(3, 0, 1, 4, 2, 5)
        bias = self._bias(window)
        # Windows join the heads, so the (nW, heads, N, N) bias (+ shift mask) broadcasts over the batch rather
        # than being materialised B times.
        q, k, v = qkv.reshape(3, batch, num_windows * heads, length, -1).unbind(0)
        attn_mask = bias.expand(num_windows, heads, length, length) if mask is None else mask.unsqueeze(1) + bias
        attn_mask = attn_mask.reshape(1, num_windows * heads, length, length).to(q.dtype)
        with sdpa_kernel(_SDPA_BACKENDS):
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x.view(batch, num_windows, heads, length, -1).transpose(2, 3).reshape(batch, num_windows, length, dim)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Swin block, channel-last: ``x + (S)W-MSA(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        windows: The model's window partition.
        shifted: Shift the windows by half a window (the odd blocks of a stage).
        mlp_ratio: MLP hidden width / dim.
        drop_path: Stochastic depth rate.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            windows: ShiftedWindows,
            shifted: bool = False,
            mlp_ratio: float = 4.,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.windows = windows
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, windows.window_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def _attn(self, x: Tensor) -> Tensor:
        # operator.index specialises symbolic sizes under torch.compile: layouts are per size, like scan plans.
        layout = self.windows.layout(operator.index(x.shape[1]), operator.index(x.shape[2]), self.shifted, x.device)
        return self.windows.reverse(self.attn(self.windows.partition(x, layout), layout.window, layout.mask), layout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f'shifted={self.shifted}'


class PatchMerging(nn.Module):
    """2x2 patch merging, channel-last: concat the 2x2 neighbours -> LayerNorm -> Linear(4C, out_dim), no bias.

    Odd sizes are zero-padded at the bottom/right first, like timm.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        height, width = x.shape[1] // 2, x.shape[2] // 2
        # Channel order of the official concat [x(0,0), x(1,0), x(0,1), x(1,1)] of (row, col) offsets: the row
        # offset varies fastest, so the column offset axis goes before the row offset axis.
        x = x.view(batch, height, 2, width, 2, channels).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(batch, height, width, 4 * channels)))


class SwinStage(nn.Module):
    """Patch merging (all stages but the first), then ``depth`` blocks alternating plain and shifted windows."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            num_heads: int,
            windows: ShiftedWindows,
            downsample: bool = True,
            mlp_ratio: float = 4.,
            drop_path: Optional[List[float]] = None,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        drop_path = drop_path or [0.] * depth
        self.blocks = nn.Sequential(*[
            SwinBlock(
                out_dim,
                num_heads,
                windows,
                shifted=i % 2 == 1,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer (v1) with any input size.

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: Classifier pooling ('avg', 'max', ... or '' for none).
        embed_dim: Width of the first stage; stage i has ``embed_dim * 2 ** i``.
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Attention window (square), as trained.
        patch_size: Patch size (stride) of the stem.
        mlp_ratio: MLP hidden width / block width.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Tuple[int, ...] = (2, 2, 6, 2),
            num_heads: Tuple[int, ...] = (3, 6, 12, 24),
            window_size: int = 7,
            patch_size: int = 4,
            mlp_ratio: float = 4.,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f'SwinTransformer: depths {depths} and num_heads {num_heads} need one entry per stage')
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        if any(dim % heads for dim, heads in zip(dims, num_heads)):
            raise ValueError(f'SwinTransformer: stage widths {dims} must be divisible by num_heads {num_heads}')
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'SwinTransformer: window_size must be an int >= 1, got {window_size!r}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.window_size = (window_size, window_size)
        self.feature_info = []

        self.stem = PatchEmbed(
            img_size=None,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=nn.LayerNorm,
            output_fmt='NHWC',
        )
        windows = ShiftedWindows(self.window_size)
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]
        stages = []
        prev_dim, stride = embed_dim, patch_size
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                stride *= 2
            stages.append(SwinStage(
                prev_dim,
                dim,
                depth,
                num_heads[i],
                windows,
                downsample=i > 0,
                mlp_ratio=mlp_ratio,
                drop_path=dpr[i],
            ))
            prev_dim = dim
            self.feature_info += [dict(num_chs=dim, reduction=stride, module=f'stages.{i}')]
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev_dim
        self.norm = nn.LayerNorm(prev_dim)
        self.head = ClassifierHead(prev_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        named_apply(_init_weights, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith('relative_position_bias_table')}

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
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) '
                             f'(in_chans={self.in_chans}), got {tuple(x.shape)}')
        patch_h, patch_w = self.stem.patch_size
        if x.shape[2] % patch_h or x.shape[3] % patch_w:
            raise ValueError(f'{type(self).__name__} needs H and W divisible by the patch size {patch_h}, got '
                             f'{tuple(x.shape[2:])}; pad or resize the input (timm and the official code would '
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
        """Forward returning the stage outputs (strides 4, 8, 16, 32) as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Stages to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final norm to the last stage output.
            stop_early: Stop after the last requested stage.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.

        Returns:
            The NCHW stage outputs, preceded by the final features unless ``intermediates_only`` (normalised
            only when the last stage ran).
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
                feat = self.norm(x) if norm and i == last_idx else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous())
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)  # the final norm has the width of the last stage
        return x.permute(0, 3, 1, 2).contiguous(), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the final norm / head) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_norm or pruned_end:
            self.norm = nn.Identity()  # sized for the last stage
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or pruned_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str = '') -> None:
    """The official and timm init: trunc_normal(0.02) and zero bias for every Linear (the classifier included).

    LayerNorms keep (1, 0), the stem conv PyTorch's default, the bias tables their trunc_normal(0.02).
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: SwinTransformer) -> Dict[str, Tensor]:
    """Convert a timm or an official Microsoft Swin checkpoint to this implementation.

    Accepts a plain state_dict or a training checkpoint (its ``'model'`` or ``'state_dict'`` entry), with or
    without a DDP ``module.`` prefix:

    * timm (the ``timm/swin_*`` hub weights): ``patch_embed.`` -> ``stem.``, ``layers.`` -> ``stages.``.
    * official (it has ``layers.0.downsample``): patch merging closes stage i there and opens stage i + 1 here,
      and the classifier ``head.`` is ``head.fc.`` here; otherwise like timm.

    Both carry the buffers ``relative_position_index`` / ``attn_mask``, which are dropped (rebuilt here); a
    relative-position table of another window size is resized to the model's (timm's bicubic resize, as for
    the official 384 fine-tuning). Checkpoints of this implementation pass through unchanged.

    Raises:
        ValueError: The checkpoint is of another variant or configuration (the message names the mismatched keys
            and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'state_dict'))
    if 'stem.proj.weight' in state_dict:
        return _fit(state_dict, model)

    # timm's stage 0 never has patch merging; the official stage 0 always has it (even without a classifier).
    official = 'layers.0.downsample.reduction.weight' in state_dict
    model_state = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith(('relative_position_index', 'attn_mask')):
            continue
        if official:
            key = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) + 1}.downsample.', key)
            key = re.sub(r'^head\.', 'head.fc.', key)
        key = re.sub(r'^patch_embed\.', 'stem.', key)
        key = re.sub(r'^layers\.', 'stages.', key)
        target = model_state.get(key)
        if key.endswith('relative_position_bias_table') and target is not None and target.shape != value.shape:
            value = resize_rel_pos_bias_table(value, new_window_size=model.window_size, new_bias_shape=target.shape)
        out[key] = value
    return _fit(out, model)


def _fit(state_dict: Dict[str, Tensor], model: SwinTransformer) -> Dict[str, Tensor]:
    dims = tuple(info['num_chs'] for info in model.feature_info)
    return fit_state_dict(
        state_dict,
        model,
        f'dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}, window_size={model.window_size}',
    )


def _create_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    return build_model_with_cfg(
        SwinTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # The getter runs forward_intermediates, which returns NCHW (the stages run channel-last).
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.9,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.proj',
        'classifier': 'head.fc',
        'license': 'mit',
        'paper_ids': 'arXiv:2103.14030',
        'paper_name': 'Swin Transformer: Hierarchical Vision Transformer using Shifted Windows',
        'origin_url': 'https://github.com/microsoft/Swin-Transformer',
        **kwargs,
    }


_RELEASES = 'https://github.com/SwinTransformer/storage/releases/download/'
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)
_IN22K = dict(num_classes=21841)

# timm's weights for each variant ('z' + timm's name.tag), in timm's order, so the default tag (the first one)
# is timm's; the url is the official release that timm's hub copy came from (the filter converts both).
_WEIGHTS = {
    'swin_tiny_patch4_window7_224.ms_in1k': ('v1.0.0/swin_tiny_patch4_window7_224.pth', {}),
    'swin_tiny_patch4_window7_224.ms_in22k_ft_in1k': (
        'v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth', {}),
    'swin_tiny_patch4_window7_224.ms_in22k': ('v1.0.8/swin_tiny_patch4_window7_224_22k.pth', _IN22K),
    'swin_small_patch4_window7_224.ms_in22k_ft_in1k': (
        'v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth', {}),
    'swin_small_patch4_window7_224.ms_in1k': ('v1.0.0/swin_small_patch4_window7_224.pth', {}),
    'swin_small_patch4_window7_224.ms_in22k': ('v1.0.8/swin_small_patch4_window7_224_22k.pth', _IN22K),
    'swin_base_patch4_window7_224.ms_in22k_ft_in1k': ('v1.0.0/swin_base_patch4_window7_224_22kto1k.pth', {}),
    'swin_base_patch4_window7_224.ms_in1k': ('v1.0.0/swin_base_patch4_window7_224.pth', {}),
    'swin_base_patch4_window7_224.ms_in22k': ('v1.0.0/swin_base_patch4_window7_224_22k.pth', _IN22K),
    'swin_base_patch4_window12_384.ms_in22k_ft_in1k': ('v1.0.0/swin_base_patch4_window12_384_22kto1k.pth', _384),
    'swin_base_patch4_window12_384.ms_in1k': ('v1.0.0/swin_base_patch4_window12_384.pth', _384),
    'swin_base_patch4_window12_384.ms_in22k': (
        'v1.0.0/swin_base_patch4_window12_384_22k.pth', dict(_384, **_IN22K)),
    'swin_large_patch4_window12_384.ms_in22k_ft_in1k': (
        'v1.0.0/swin_large_patch4_window12_384_22kto1k.pth', _384),
    'swin_large_patch4_window12_384.ms_in22k': (
        'v1.0.0/swin_large_patch4_window12_384_22k.pth', dict(_384, **_IN22K)),
}

default_cfgs = generate_default_cfgs({
    **{'z' + name: _cfg(url=_RELEASES + file, hf_hub_id='timm/' + name, **kw) for name, (file, kw) in _WEIGHTS.items()},
    'test_zswin': _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
})


@register_model
def zswin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-T, window 7 at 224: 28M params, 81.2% IN-1K."""
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2)
    return _create_swin('zswin_tiny_patch4_window7_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def zswin_small_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-S, window 7 at 224: 50M params, 83.2% IN-1K."""
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3)
    return _create_swin('zswin_small_patch4_window7_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def zswin_base_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-B, window 7 at 224: 88M params, 83.5% IN-1K (85.2% from IN-22K)."""
    model_args = dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.5)
    return _create_swin('zswin_base_patch4_window7_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def zswin_base_patch4_window12_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-B, window 12 at 384: 88M params, 84.5% IN-1K (86.4% from IN-22K)."""
    model_args = dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, drop_path_rate=0.5)
    return _create_swin('zswin_base_patch4_window12_384', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def zswin_large_patch4_window12_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-L, window 12 at 384: 197M params, 87.3% IN-1K from IN-22K."""
    model_args = dict(
        embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.2)
    return _create_swin('zswin_large_patch4_window12_384', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_zswin(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Tiny Swin for CI: window 7, so 64x64 inputs exercise padding, shifts and windows fitted to small maps."""
    model_args = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
    return _create_swin('test_zswin', pretrained=pretrained, **dict(model_args, **kwargs))
