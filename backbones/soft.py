""" SOFT: softmax-free transformers with linear complexity, and the normalized SOFT++ (SOFT-Norm)

Papers: `SOFT: Softmax-free Transformer with Linear Complexity` - https://arxiv.org/abs/2110.11945 (NeurIPS 2021);
`Softmax-free Linear Transformers` - https://arxiv.org/abs/2207.03341 (IJCV 2024, SOFT++ / SOFT-Norm)
Original code: https://github.com/fudan-zvg/SOFT (MIT license, Copyright (c) 2021 Fudan Zhang Vision Group)

A four-stage pyramid (strides 4, 8, 16, 32) of conv patch embeddings and transformer blocks. In stages 1-3 the
softmax attention is replaced by a Gaussian kernel: queries and keys are one projection (Q = K), scaled by
d^-1/4, and ``exp(-||q_i - k_j||^2 / 2)`` is approximated Nystrom-style through m landmarks (a strided conv of
the queries, then LayerNorm and GELU): ``K(Q, L) pinv(K(L, L)) K(L, Q) V``, linear in the number of tokens,
plus a depthwise conv on V. The m x m pseudo-inverse is 20 Newton-Schulz steps (``kernels.newton_pinv``: no
autograd through the steps, closed-form backward, float32 under autocast). The Gaussian kernels are computed in
float32 too: they are differences of squared norms, which half precision cancels away. Stage 4 is ordinary
pre-norm softmax attention over the tokens and a class token, which the head reads.

SOFT++ (``soft_norm_*``) normalizes the landmark kernel symmetrically: ``D^-1/2 pinv(K(L, L)) D^-1/2`` with D
the row sums of ``K(L, L)``. Its official constructor cannot run (``SoftmaxFreeNormAttentionKernel.__init__``
names the undefined ``SoftmaxFreeSymNormAttentionKernel``: NameError on master and on the normalization branch);
here it is built as that kernel's forward describes, with one difference: its Newton-Schulz start is the
official NeurIPS one (``2 / max row sum^2`` over the whole batch, halved until ``||I - A V0||_1 <= 1.01``, and
autograd through the 20 steps), here the per-matrix start and closed-form backward of ``newton_pinv`` (no
ridge, as there). Both converge to the same pseudo-inverse; its parameters and checkpoints are SOFT's.

Faithful to the official code (the fixtures in ``tests/fixtures/soft`` reproduce its logits):

* Softmax-free blocks are post-norm, ``LN(x + attn(x))`` then ``LN(x + FFN(x))``, with LayerNorm eps 1e-5, a
  4x FFN with tanh-approximated GELU whatever ``mlp_ratio`` says, and the stochastic-depth rate used as
  element-wise dropout on the branch (as trained); the landmark LayerNorm has eps 1e-5 and an exact GELU.
  Stage 4 and the final norm use eps 1e-6, exact GELU and ``DropPath``.
* SOFT's current Newton kernel inverts ``K(L, L) + 0.01 I`` (official commit bb0eec0), not ``K(L, L)``.
* Position embeddings are stored for 224 (3136, 784, 196, 1 + 49 tokens) whatever the input, and resized
  bilinearly (``align_corners=False``) to the stage grids of every forward; in stage 4 the class entry is kept.

Small models have depths (1, 3, 7, 4): 24.1M parameters and about 3.3 GFLOPs, the published SOFT-Small (and
SOFT-Small-Norm, whose COCO detectors add 10M / 20M parameters to 24M like the other sizes). The official
``soft_small`` entrypoints say (1, 3, 20, 4), a 38.9M-parameter, about 6 GFLOPs model that matches none of the
published numbers; a checkpoint of it raises a ValueError (unknown blocks) in ``checkpoint_filter_fn``. The
other sizes are the official configurations (13.07M, 45.81M, 64.70M, 87.11M: the README truncates to millions).

Differences: any input whose H and W are multiples of 32 (so that every landmark conv tiles its map) works and
others raise a ValueError, where the official stem would silently misalign its grid; module names follow the
zoo (``stem``, ``stages``; ``checkpoint_filter_fn`` converts official checkpoints); ``no_weight_decay()`` lists
the position embeddings as well as the class token (the official list has only the class token); ``drop_rate``
is dropout before the classifier (the official one, 0 in every config, drops after the position embeddings and
in stage 4); the unreachable official ``ratio == 1`` attention branch (it reads an undefined attribute) is
not built, as no released model uses it.

Written for linzoo from the papers and the official code (read, not copied).
"""
import math
import re
from functools import partial
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from kernels import autocast_off, newton_pinv
from ._checkpoint import fit_state_dict, unwrap_checkpoint

__all__ = ['Soft']  # model_registry will add each entrypoint fn to this

# Total stride, and the stride at which every landmark conv tiles its map.
_STRIDE = 32
# Landmark conv kernel size = stride and depthwise V conv size of the softmax-free stages (hard-coded officially):
# 56^2, 28^2 and 14^2 tokens at 224 all get 7^2 = 49 landmarks.
_LANDMARK_RATIOS = (8, 4, 2)
_V_CONV_SIZES = (9, 5, 3)


def _gaussian_kernel(a: Tensor, b: Tensor) -> Tensor:
    """``exp(-||a_i - b_j||^2 / 2)`` for (..., n, d) and (..., m, d) -> (..., n, m), in float32.

    The squared distance is expanded as ``|a|^2 + |b|^2 - 2 a.b`` (matmuls, as officially); autocast is off
    because that difference of large terms loses the distance in half precision.
    """
    with autocast_off(a.device.type):
        a, b = a.float(), b.float()
        dist = a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(-2) - 2 * (a @ b.transpose(-1, -2))
        return torch.exp(-dist / 2)


def resize_pos_embed(pos_embed: Tensor, size: Tuple[int, int], num_prefix_tokens: int = 0) -> Tensor:
    """Resize a square-grid position embedding (1, P + G * G, C) to an (h, w) grid (1, P + h * w, C).

    Bilinear with ``align_corners=False`` and no antialiasing, as the official forward; the first
    ``num_prefix_tokens`` entries (the class entry) are kept.

    Args:
        pos_embed: Embedding of a square grid after ``num_prefix_tokens`` entries.
        size: Target grid (h, w).
        num_prefix_tokens: Leading entries that are not part of the grid.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = math.isqrt(grid.shape[1])
    if (side, side) != tuple(size):
        grid = grid.transpose(1, 2).reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=size, mode='bilinear', align_corners=False)
        grid = grid.flatten(2).transpose(1, 2)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid


def _conv_bn_relu(in_chs: int, out_chs: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1), nn.BatchNorm2d(out_chs), nn.ReLU()]


class SoftmaxFreeAttention(nn.Module):
    """Gaussian-kernel attention with Q = K, convolutional landmarks and a depthwise conv on V.

    Args:
        dim: Token width.
        num_heads: Heads; each has ``dim // num_heads`` channels.
        landmark_ratio: Kernel size and stride of the landmark conv (m = hw / ratio^2 landmarks).
        v_conv_size: Kernel size of the depthwise conv on V (one filter per head, shared by its channels).
        newton_iters: Newton-Schulz steps of the landmark-kernel pseudo-inverse.
        normalized: SOFT++: normalize the landmark kernel symmetrically by its row sums.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            landmark_ratio: int,
            v_conv_size: int,
            newton_iters: int = 20,
            normalized: bool = False,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.landmark_ratio = landmark_ratio
        self.newton_iters = newton_iters
        self.normalized = normalized
        self.q = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        # Shared by the heads: every head's queries are a (head_dim, H, W) map.
        self.landmark = nn.Conv2d(
            self.head_dim, self.head_dim, kernel_size=landmark_ratio, stride=landmark_ratio, bias=False)
        self.landmark_norm = nn.LayerNorm(self.head_dim)
        self.landmark_act = nn.GELU()
        self.v_conv = nn.Conv2d(
            num_heads, num_heads, kernel_size=v_conv_size, padding=v_conv_size // 2, groups=num_heads, bias=False)
        self.proj = nn.Linear(dim, dim)

    def _landmark_pinv(self, kernel: Tensor) -> Tensor:
        if not self.normalized:
            return newton_pinv(kernel, self.newton_iters, ridge=0.01)
        scale = kernel.sum(-1).rsqrt()
        return scale.unsqueeze(-1) * newton_pinv(kernel, self.newton_iters) * scale.unsqueeze(-2)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        """(B, N, C) tokens of an (H, W) map, N = H * W -> (B, N, C)."""
        batch, length, dim = x.shape
        height, width = size
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q(x).view(batch, length, heads, head_dim).transpose(1, 2) / head_dim ** 0.25
        v = self.v(x).view(batch, length, heads, head_dim).transpose(1, 2)

        landmarks = self.landmark(q.reshape(batch * heads, height, width, head_dim).permute(0, 3, 1, 2))
        landmarks = landmarks.flatten(2).transpose(1, 2).reshape(batch, heads, -1, head_dim)
        landmarks = self.landmark_act(self.landmark_norm(landmarks))
        kernel_ql = _gaussian_kernel(q, landmarks)  # (B, heads, N, m)
        pinv = self._landmark_pinv(_gaussian_kernel(landmarks, landmarks))  # (B, heads, m, m)
        kernel_ql, pinv = kernel_ql.to(v.dtype), pinv.to(v.dtype)
        # Right to left: O(N m d), never an N x N or N x m x m product.
        out = kernel_ql @ (pinv @ (kernel_ql.transpose(-1, -2) @ v))

        # The depthwise conv sees the heads as channels and the head channels as batch.
        v_map = v.reshape(batch, heads, height, width, head_dim).permute(0, 4, 1, 2, 3)
        v_map = self.v_conv(v_map.reshape(batch * head_dim, heads, height, width))
        out = out + v_map.view(batch, head_dim, heads, length).permute(0, 2, 3, 1)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class SoftmaxFreeBlock(nn.Module):
    """Post-norm SOFT block: ``x = LN(x + attn(x))``, then ``x = LN(x + FFN(x))`` with a 4x tanh-GELU FFN.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        landmark_ratio: Landmark conv kernel size and stride.
        v_conv_size: Depthwise V conv kernel size.
        newton_iters: Newton-Schulz steps.
        normalized: SOFT++ landmark-kernel normalization.
        drop: Element-wise dropout on both residual branches (the official use of the stochastic-depth rate).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            landmark_ratio: int,
            v_conv_size: int,
            newton_iters: int = 20,
            normalized: bool = False,
            drop: float = 0.,
    ):
        super().__init__()
        self.attn = SoftmaxFreeAttention(dim, num_heads, landmark_ratio, v_conv_size, newton_iters, normalized)
        self.drop1 = nn.Dropout(drop)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, act_layer=partial(nn.GELU, approximate='tanh'))
        self.drop2 = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = self.norm1(x + self.drop1(self.attn(x, size)))
        return self.norm2(x + self.drop2(self.mlp(x)))


class Attention(nn.Module):
    """Multi-head softmax self-attention (PVT's, without spatial reduction): ``q`` and ``kv`` projections."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).view(batch, length, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class SoftmaxBlock(nn.Module):
    """Pre-norm softmax transformer block of the last stage (LayerNorm eps 1e-6, GELU MLP, DropPath)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., drop_path: float = 0.):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SoftStage(nn.Module):
    """Patch embedding (conv-BN-ReLU, stride 2; the stem before stage 1), position embedding and blocks.

    Softmax-free stages map (B, C, H, W) to (B, C', H', W'); the last (softmax) stage prepends the class token
    and returns its (B, 1 + H'W', C') tokens.

    Args:
        in_dim: Input channels.
        dim: Stage width.
        depth: Blocks.
        num_heads: Attention heads.
        pos_grid: Side of the square grid the position embedding is stored for.
        landmark_ratio: Landmark conv ratio of the softmax-free blocks, None for the softmax stage.
        v_conv_size: Depthwise V conv kernel size (softmax-free stages).
        newton_iters: Newton-Schulz steps (softmax-free stages).
        normalized: SOFT++ normalization (softmax-free stages).
        mlp_ratio: MLP ratio of the softmax stage.
        downsample: Whether the stage starts with a stride-2 patch embedding (all but the first).
        drop_path: Per-block stochastic-depth rates.
    """

    def __init__(
            self,
            in_dim: int,
            dim: int,
            depth: int,
            num_heads: int,
            pos_grid: int,
            landmark_ratio: Optional[int] = None,
            v_conv_size: int = 3,
            newton_iters: int = 20,
            normalized: bool = False,
            mlp_ratio: float = 4.,
            downsample: bool = True,
            drop_path: Optional[List[float]] = None,
    ):
        super().__init__()
        self.grad_checkpointing = False
        drop_path = drop_path or [0.] * depth
        self.downsample = nn.Sequential(*_conv_bn_relu(in_dim, dim, 2)) if downsample else nn.Identity()
        self.softmax = landmark_ratio is None
        self.num_prefix_tokens = int(self.softmax)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + pos_grid ** 2, dim))
        if self.softmax:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.blocks = nn.ModuleList([SoftmaxBlock(dim, num_heads, mlp_ratio, drop_path[i]) for i in range(depth)])
        else:
            self.blocks = nn.ModuleList([
                SoftmaxFreeBlock(
                    dim,
                    num_heads,
                    landmark_ratio,
                    v_conv_size,
                    newton_iters=newton_iters,
                    normalized=normalized,
                    drop=drop_path[i],
                )
                for i in range(depth)
            ])

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        batch, _, height, width = x.shape
        size = (height, width)
        x = x.flatten(2).transpose(1, 2)
        if self.softmax:
            x = torch.cat([self.cls_token.expand(batch, -1, -1).to(x.dtype), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, size, self.num_prefix_tokens)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, size, use_reentrant=False)
            else:
                x = block(x, size)
        if self.softmax:
            return x
        return x.transpose(1, 2).reshape(batch, -1, height, width)


class Soft(nn.Module):
    """SOFT / SOFT++ with any input size that is a multiple of 32.

    ``forward_features`` returns the normalized tokens of the last stage (B, 1 + N, C), class token first
    (``output_fmt = 'NLC'``); ``forward_intermediates`` and ``features_only=True`` return the four stage outputs
    as NCHW maps (strides 4, 8, 16, 32; class token dropped).

    Args:
        in_chans: Input channels.
        num_classes: Classifier classes (0 for no classifier).
        global_pool: 'token' (the class token, official), 'avg' (mean of the last-stage patch tokens) or ''
            (the token sequence).
        embed_dims: Stage widths.
        depths: Blocks per stage.
        num_heads: Attention heads per stage (the official models use 32 channels per head).
        mlp_ratio: MLP ratio of the softmax stage (the softmax-free FFNs are 4x).
        newton_iters: Newton-Schulz steps of the landmark pseudo-inverse.
        normalized: SOFT++ (SOFT-Norm): symmetric normalization of the landmark kernel.
        pos_embed_size: Input size the position embeddings are stored for (the official 224, whatever the
            training size); other inputs resize them.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, linearly increasing over blocks (element-wise branch dropout in the
            softmax-free stages, as officially).
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dims: Tuple[int, ...] = (64, 128, 320, 512),
            depths: Tuple[int, ...] = (1, 2, 3, 2),
            num_heads: Tuple[int, ...] = (2, 4, 10, 16),
            mlp_ratio: float = 4.,
            newton_iters: int = 20,
            normalized: bool = False,
            pos_embed_size: int = 224,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == 4:
            raise ValueError(f'Soft: embed_dims {embed_dims}, depths {depths} and num_heads {num_heads} need one '
                             f'entry per stage (4)')
        if any(dim % heads for dim, heads in zip(embed_dims, num_heads)):
            raise ValueError(f'Soft: stage widths {embed_dims} must be divisible by num_heads {num_heads}')
        if pos_embed_size % _STRIDE:
            raise ValueError(f'Soft: pos_embed_size must be a multiple of {_STRIDE}, got {pos_embed_size}')
        self._check_pool(global_pool)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.output_fmt = 'NLC'

        self.stem = nn.Sequential(
            *_conv_bn_relu(in_chans, 32, 2), *_conv_bn_relu(32, 32, 1), *_conv_bn_relu(32, embed_dims[0], 2))
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        self.feature_info = []
        stages = []
        prev_dim = embed_dims[0]
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            softmax_free = i < 3
            stages.append(SoftStage(
                prev_dim,
                dim,
                depth,
                num_heads[i],
                pos_grid=pos_embed_size // (4 << i),
                landmark_ratio=_LANDMARK_RATIOS[i] if softmax_free else None,
                v_conv_size=_V_CONV_SIZES[i] if softmax_free else 3,
                newton_iters=newton_iters,
                normalized=normalized,
                mlp_ratio=mlp_ratio,
                downsample=i > 0,
                drop_path=dpr[i],
            ))
            prev_dim = dim
            self.feature_info += [dict(num_chs=dim, reduction=4 << i, module=f'stages.{i}')]
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(prev_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official init: trunc-normal(0.02) position embeddings, class token and Linear weights, zero Linear
        biases; LayerNorms (1, 0), convs and BatchNorms keep PyTorch's defaults."""
        for name, param in self.named_parameters():
            if name.endswith(('pos_embed', 'cls_token')):
                trunc_normal_(param, std=.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.(?:downsample|pos_embed|cls_token)', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith(('pos_embed', 'cls_token'))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ('token', 'avg', ''):
            raise ValueError(f"Soft: global_pool must be 'token', 'avg' or '', got {global_pool!r}")

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) '
                             f'(in_chans={self.in_chans}), got {tuple(x.shape)}')
        height, width = x.shape[2:]
        if height % _STRIDE or width % _STRIDE or not height or not width:
            raise ValueError(f'{type(self).__name__} needs H and W that are positive multiples of {_STRIDE} (the '
                             f'landmark convs must tile their maps), got {height}x{width}; pad or resize the input')

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward returning the stage outputs (strides 4, 8, 16, 32) as NCHW maps as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Stages to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final norm to the last stage output.
            stop_early: Stop after the last requested stage.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.

        Returns:
            The NCHW stage outputs (class token dropped), preceded by the final features unless
            ``intermediates_only``: ``forward_features``' output when the last stage ran, else the last map.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{type(self).__name__}.forward_intermediates: output_fmt must be 'NCHW', "
                             f'got {output_fmt!r}')
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            size = x.shape[2:]
            x = stage(x)
            if i in take_indices:
                if stage.softmax:
                    feat = self.norm(x) if norm else x
                    height, width = (size[0] + 1) // 2, (size[1] + 1) // 2
                    feat = feat[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, height, width)
                else:
                    feat = x
                intermediates.append(feat)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

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
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, 1:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# Official block-internal names -> this implementation's (softmax-free blocks; the softmax blocks match already).
_OFFICIAL_BLOCK_KEYS = {
    'att.mha.W_q.': 'attn.q.',
    'att.mha.W_v.': 'attn.v.',
    'att.mha.attn.Qlandmark_op.': 'attn.landmark.',
    'att.mha.attn.Qnorm_act.0.': 'attn.landmark_norm.',
    'att.mha.attn.conv.': 'attn.v_conv.',
    'att.mha.ff.': 'attn.proj.',
    'att.norm1.': 'norm1.',
    'att.ff1.': 'mlp.fc1.',
    'att.ff2.': 'mlp.fc2.',
    'att.norm2.': 'norm2.',
}


def _convert_official_key(key: str) -> str:
    if key == 'cls_token':
        return 'stages.3.cls_token'
    match = re.match(r'^pos_embed(\d)$', key)
    if match:
        return f'stages.{int(match.group(1)) - 1}.pos_embed'
    match = re.match(r'^patch_embed(\d)\.proj\.(.*)$', key)
    if match:
        stage = int(match.group(1)) - 1
        return f'stem.{match.group(2)}' if stage == 0 else f'stages.{stage}.downsample.{match.group(2)}'
    match = re.match(r'^block(\d)\.(\d+)\.(.*)$', key)
    if match:
        rest = match.group(3)
        for old, new in _OFFICIAL_BLOCK_KEYS.items():
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        return f'stages.{int(match.group(1)) - 1}.blocks.{match.group(2)}.{rest}'
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: Soft) -> Dict[str, Tensor]:
    """Convert an official SOFT / SOFT-Norm checkpoint (``fudan-zvg/SOFT``) to this implementation.

    Accepts a plain state_dict or a training checkpoint (its ``'model'`` or ``'state_dict'`` entry), with or
    without a DDP ``module.`` prefix. ``patch_embed1`` becomes ``stem``, ``patch_embedI`` / ``pos_embedI`` /
    ``blockI`` stage I - 1's ``downsample`` / ``pos_embed`` / ``blocks``, and the class token goes to the last
    stage. Checkpoints of this implementation pass through unchanged.

    Raises:
        ValueError: The checkpoint is of another variant or configuration (the message names the mismatched keys
            and shapes and the blocks per stage).
    """
    state_dict = unwrap_checkpoint(state_dict, ('model', 'state_dict'))
    if 'stem.0.weight' not in state_dict:
        state_dict = {_convert_official_key(k): v for k, v in state_dict.items()}
    dims = tuple(info['num_chs'] for info in model.feature_info)
    return fit_state_dict(state_dict, model, f'embed_dims={dims}, depths={tuple(len(s.blocks) for s in model.stages)}')


def _create_soft(variant: str, pretrained: bool = False, **kwargs) -> Soft:
    return build_model_with_cfg(
        Soft,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        # The getter runs forward_intermediates, which returns NCHW maps (the model's features are tokens).
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': None,
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0',
        'classifier': 'head',
        'license': 'mit',
        'paper_ids': 'arXiv:2110.11945',
        'paper_name': 'SOFT: Softmax-free Transformer with Linear Complexity',
        'origin_url': 'https://github.com/fudan-zvg/SOFT',
        **kwargs,
    }


def _drive(file_id: str) -> str:
    """Direct-download address of an official Google Drive file."""
    return f'https://drive.google.com/uc?export=download&id={file_id}'


# The official README links weights only for SOFT-Tiny and SOFT-Norm T/S/M/L.
_NO_WEIGHTS = dict(notes='no released weights: the authors published none for this variant')
_NORM = dict(paper_ids='arXiv:2207.03341', paper_name='Softmax-free Linear Transformers')

default_cfgs = generate_default_cfgs({
    'soft_tiny.in1k': _cfg(url=_drive('1S04DCotIOkP0DaBb8WStQ513z82qT9de')),
    'soft_small': _cfg(**_NO_WEIGHTS),
    'soft_medium': _cfg(**_NO_WEIGHTS),
    'soft_large': _cfg(**_NO_WEIGHTS),
    'soft_huge': _cfg(**_NO_WEIGHTS),
    'soft_norm_tiny.in1k': _cfg(url=_drive('1Isy5b9v_4pyIXDqhKPNRq3WKH0etDlfl'), **_NORM),
    'soft_norm_small.in1k': _cfg(url=_drive('1OBjn7FzVdNP1Urqxq7X0yDykyPhxAAW1'), **_NORM),
    'soft_norm_medium.in1k': _cfg(url=_drive('1K2C6daaJn3jwurWh38uvV7rexirWjuzh'), **_NORM),
    'soft_norm_large.in1k': _cfg(url=_drive('1aRYuF_gbBGyiXUDKEcpHJmM04SdvTUdP'), **_NORM),
    'soft_norm_huge': _cfg(**_NORM, **_NO_WEIGHTS),
    'test_soft': _cfg(input_size=(3, 64, 64), crop_pct=1.0),
})


@register_model
def soft_tiny(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Tiny: 13M params, 1.9 GFLOPs, 79.3% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 2, 3, 2), num_heads=(2, 4, 10, 16))
    return _create_soft('soft_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_small(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Small: 24M params, 3.3 GFLOPs, 82.2% IN-1K (published depths, see the module docstring)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 3, 7, 4), num_heads=(2, 4, 10, 16))
    return _create_soft('soft_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_medium(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Medium: 45M params, 7.2 GFLOPs, 82.9% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 288, 512), depths=(1, 3, 29, 5), num_heads=(2, 4, 9, 16))
    return _create_soft('soft_medium', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_large(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Large: 64M params, 11.0 GFLOPs, 83.1% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 3, 40, 5), num_heads=(2, 4, 10, 16))
    return _create_soft('soft_large', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_huge(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Huge: 87M params, 16.3 GFLOPs, 83.3% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 352, 512), depths=(1, 5, 49, 5), num_heads=(2, 4, 11, 16))
    return _create_soft('soft_huge', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_norm_tiny(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Tiny-Norm (SOFT++): 13M params, 1.9 GFLOPs, 79.4% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 2, 3, 2), num_heads=(2, 4, 10, 16), normalized=True)
    return _create_soft('soft_norm_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_norm_small(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Small-Norm (SOFT++): 24M params, 3.3 GFLOPs, 82.4% IN-1K (published depths, see the module docstring)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 3, 7, 4), num_heads=(2, 4, 10, 16), normalized=True)
    return _create_soft('soft_norm_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_norm_medium(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Medium-Norm (SOFT++): 45M params, 7.2 GFLOPs, 83.1% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 288, 512), depths=(1, 3, 29, 5), num_heads=(2, 4, 9, 16), normalized=True)
    return _create_soft('soft_norm_medium', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_norm_large(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Large-Norm (SOFT++): 64M params, 11.0 GFLOPs, 83.3% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(1, 3, 40, 5), num_heads=(2, 4, 10, 16), normalized=True)
    return _create_soft('soft_norm_large', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def soft_norm_huge(pretrained: bool = False, **kwargs) -> Soft:
    """SOFT-Huge-Norm (SOFT++): 87M params, 16.3 GFLOPs, 83.4% IN-1K."""
    model_args = dict(embed_dims=(64, 128, 352, 512), depths=(1, 5, 49, 5), num_heads=(2, 4, 11, 16), normalized=True)
    return _create_soft('soft_norm_huge', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_soft(pretrained: bool = False, **kwargs) -> Soft:
    """Tiny SOFT for CI; the configuration of the official-output fixtures (widths 32-64-64-64, depth 1 each)."""
    model_args = dict(embed_dims=(32, 64, 64, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2))
    return _create_soft('test_soft', pretrained=pretrained, **dict(model_args, **kwargs))
