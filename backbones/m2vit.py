""" Monarch Mixer ViT (M2-ViT)

Paper: `Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture` - https://arxiv.org/abs/2310.12109
    (NeurIPS 2023)
Code: https://github.com/HazyResearch/m2 (Apache-2.0) holds only M2-BERT; no vision code or weights were released
(HazyResearch/m2 #10, #21). The paper trained M2-ViT with the Hyena-ViT of https://github.com/HazyResearch/safari
(Apache-2.0, ``configs/experiment/imagenet/hyena-vit.yaml``) with its MLPs made block-diagonal as in M2-BERT.

This is that model as the paper and the reference notes describe it (``reference/vim_swin_soft_m2.md`` section 4):

* A plain (single-stride) backbone: 16x16 patch embedding, no position embedding, no class token, 12 pre-norm
  residual blocks of width 768, a final LayerNorm and mean pooling; features at stride 16.
* Sequence mixer: Hyena order 2 over the row-major patch sequence. ``in_proj`` (D -> 3D), a depthwise short conv
  (kernel 5), ``x0, x1, v``; ``v = v * x1``; ``v = k * v + bias * v`` with ``k`` a long convolution whose filter
  is generated for the actual sequence length L by the implicit filter (an MLP with sine activations over
  positional features of the offset, times an exponential decay), computed by FFT in float32; ``out_proj(v * x0)``.
* Channel mixer: the ViT MLP (expand 4, GELU) with both dense layers replaced by block-diagonal matrices of
  4 blocks (``mlp_layer='blockdiag'``, the paper's model), or by true order-2 Monarch matrices with 4 blocks
  per factor (``mlp_layer='monarch'``: two block-diagonal factors joined by the reshape-transpose permutation,
  so every output channel sees every input channel), both from ``kernels.monarch``.

Design choices where the paper / official code leave it open:

* **Bidirectional mixing (default)**: safari's Hyena-ViT convolves causally, which makes the first patches of
  an image blind to the rest; whether M2-ViT did is unanswered (HazyResearch/m2 #21). Images have no time
  direction, so here ``bidirectional=True`` (the default) makes the long filter two-sided: one implicit filter
  is evaluated at the signed offsets -(L-1)..(L-1) (its positional features are odd/even functions of the
  offset, the decay depends on |offset|), i.e. ``y[t] = sum_s k[s] v[t - s]`` over every token, and the short
  conv is centred. This has the parameters of the causal filter (M2-BERT instead doubles the filter output into
  a forward and a reverse filter). ``bidirectional=False`` is safari's causal operator.
* **Positional features of the filter** (t, and 16 cos/sin bands: ``emb_dim`` 33) are computed for each L, so
  any input that the patches tile works; safari learns them as an l_max-long table with lr 1e-5 (nearly frozen).
  The decay rates are fixed (safari's default ``modulation_lr`` 0 makes them a buffer).
* **Implicit-filter MLP depth**: ``num_inner_mlps=2`` (the safari maintainers' fix for the public config's 1,
  safari #46); each sine activation learns its own frequencies (``freq``). The filter's parameters take no weight
  decay (``wd: 0`` for kernel parameters in the official config).
* **Parameter count**: with the ViT-b geometry, dense sequence-mixer projections, one order-2 Hyena filter of
  width D and the 4-block MLP, the backbone (``num_classes=0``) has 44.99M parameters, the paper's "45M"; the
  1000-class head adds 0.77M (45.76M in all). The paper does not say whether its 45M counts the head (its
  ViT-b 87M and Hyena-ViT-b 88M do: timm's ViT-B/16 is 86.6M and this model with dense MLPs 88.2M, heads
  included); no layer-size reading of the
  reference reaches 45M with the head included (reference section 4.2 estimates 45.5M), so 45M is read as the
  backbone count. ``mlp_layer='monarch'`` has 48.53M without the head.
* **Init**: safari's ViT init (trunc-normal(0.02) linear layers and zero biases, LayerNorm (1, 0)) for the dense
  layers and the head (safari zeroes the head; here it is trunc-normal so that untrained outputs differ between
  inputs), PyTorch's defaults for the patch conv, short conv and the filter MLP, and the block-diagonal /
  Monarch factors uniform(+-1 / sqrt(fan_in per block)), which is M2's scaled kaiming-uniform(a=sqrt(5)).

Written for linzoo from the paper and the reference notes (no official code copied).
"""
import math
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from kernels import autocast_off, blockdiag_matmul, monarch_matmul

__all__ = ['M2ViT', 'fft_long_conv']  # model_registry will add each entrypoint fn to this


def fft_long_conv(v: Tensor, k: Tensor, bidirectional: bool) -> Tensor:
    """Per-channel linear (not circular) convolution of a length-L sequence with a length-L or two-sided filter.

    Computed by FFT of size 2L in float32 with autocast off (half-precision FFTs lose the long tails), result in
    ``v``'s dtype.

    Args:
        v: Sequence (B, D, L).
        k: Filter (D, L) over offsets 0..L-1 (causal: ``y[t] = sum_{s<=t} k[t-s] v[s]``), or with
            ``bidirectional`` (D, 2L-1) over offsets -(L-1)..(L-1) (``y[t] = sum_s k[t-s] v[s]``).
        bidirectional: Which of the two filter layouts ``k`` has.

    Returns:
        (B, D, L).
    """
    length = v.shape[-1]
    if k.shape[-1] != (2 * length - 1 if bidirectional else length):
        raise ValueError(f'fft_long_conv: a {"two-sided" if bidirectional else "causal"} filter for L={length} '
                         f'needs {2 * length - 1 if bidirectional else length} taps, got {k.shape[-1]}')
    n = 2 * length
    with autocast_off(v.device.type):
        k = k.float()
        if bidirectional:
            # Offsets 0..L-1 at indices 0..L-1 and -(L-1)..-1 at n-(L-1)..n-1; index L stays zero. Size 2L >= 2L-1
            # keeps the wrap-around of the circular FFT convolution out of the L outputs kept.
            k = torch.cat([k[:, length - 1:], k.new_zeros(k.shape[0], 1), k[:, :length - 1]], dim=-1)
        k_f = torch.fft.rfft(k, n=n)
        y = torch.fft.irfft(torch.fft.rfft(v.float(), n=n) * k_f, n=n)[..., :length]
    return y.to(v.dtype)


class Sin(nn.Module):
    """``sin(freq * x)`` with learned per-channel frequencies (the implicit filter's periodic activation)."""

    def __init__(self, dim: int, w: float = 1.):
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), float(w)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """Hyena's implicit long filter: an MLP over positional features of the offset, times an exponential decay.

    For a sequence of length L the offsets are 0..L-1 (causal) or -(L-1)..(L-1) (``bidirectional``), scaled to
    ``t = offset / L``; the features are ``t`` and ``cos / sin(2 pi f t)`` for ``(emb_dim - 1) // 2`` bands f
    in [1e-4, bands - 1]. Channel c of the MLP output is multiplied by ``exp(-|t| * rate_c)``, the rates spread
    from ``log(100) / 1.5`` to ``log(100) / 0.3`` (channels decaying to 1% over 150% down to 30% of the sequence).

    Args:
        dim: Channels (one filter per channel).
        emb_dim: Positional features (odd, >= 3).
        order: Width of the MLP.
        num_inner_mlps: Hidden order x order layers.
        w: Initial sine frequency.
        bidirectional: Two-sided filter (see the module docstring).
    """

    def __init__(
            self,
            dim: int,
            emb_dim: int = 33,
            order: int = 128,
            num_inner_mlps: int = 2,
            w: float = 1.,
            bidirectional: bool = True,
    ):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f'ImplicitFilter: emb_dim must be odd and >= 3 (t plus cos/sin pairs), got {emb_dim}')
        self.dim = dim
        self.emb_dim = emb_dim
        self.bidirectional = bidirectional
        layers = [nn.Linear(emb_dim, order), Sin(order, w)]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(order, order), Sin(order, w)]
        layers.append(nn.Linear(order, dim, bias=False))
        self.mlp = nn.Sequential(*layers)

    def positional_features(self, length: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """Scaled offsets t (n,) and their features (n, emb_dim), float32."""
        start = -(length - 1) if self.bidirectional else 0
        t = torch.arange(start, length, device=device, dtype=torch.float32) / length
        bands = (self.emb_dim - 1) // 2
        freqs = torch.linspace(1e-4, bands - 1, bands, device=device)
        phase = 2 * math.pi * t[:, None] * freqs
        return t, torch.cat([t[:, None], torch.cos(phase), torch.sin(phase)], dim=-1)

    def forward(self, length: int) -> Tensor:
        """The filter (dim, n) for a length-L sequence, n = 2L - 1 (bidirectional) or L, float32."""
        device = self.mlp[0].weight.device
        t, features = self.positional_features(length, device)
        with autocast_off(device.type):
            k = self.mlp(features.to(self.mlp[0].weight.dtype)).float()
        rates = torch.linspace(math.log(100) / 1.5, math.log(100) / 0.3, self.dim, device=device)
        return (k * torch.exp(-t.abs()[:, None] * rates)).t()


class HyenaMixer(nn.Module):
    """Order-2 Hyena operator over a token sequence (B, L, D): short conv, two gates and one implicit long conv.

    Args:
        dim: Token width D.
        short_filter_order: Kernel of the depthwise short conv over the 3D projected channels.
        bidirectional: Two-sided long filter and centred short conv; causal (safari) otherwise.
        filter_kwargs: ``ImplicitFilter`` arguments.
    """

    def __init__(
            self,
            dim: int,
            short_filter_order: int = 5,
            bidirectional: bool = True,
            **filter_kwargs,
    ):
        super().__init__()
        self.bidirectional = bidirectional
        left = short_filter_order // 2 if bidirectional else short_filter_order - 1
        self.short_pad = (left, short_filter_order - 1 - left)
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.short_conv = nn.Conv1d(3 * dim, 3 * dim, short_filter_order, groups=3 * dim)
        self.filter = ImplicitFilter(dim, bidirectional=bidirectional, **filter_kwargs)
        # The long conv's skip term ("D" of an SSM), drawn like safari's.
        self.bias = nn.Parameter(torch.randn(dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        u = self.short_conv(F.pad(self.in_proj(x).transpose(1, 2), self.short_pad))
        x0, x1, v = u.chunk(3, dim=1)
        v = v * x1
        v = fft_long_conv(v, self.filter(x.shape[1]), self.bidirectional) + self.bias[:, None] * v
        return self.out_proj((v * x0).transpose(1, 2))


class BlockdiagLinear(nn.Module):
    """Linear layer with a block-diagonal weight of ``nblocks`` blocks (M2's MLP layer, no channel shuffle).

    Args:
        in_features: Input features (a multiple of ``nblocks``).
        out_features: Output features (a multiple of ``nblocks``).
        nblocks: Diagonal blocks.
        bias: Add a bias.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int = 4, bias: bool = True):
        super().__init__()
        _check_blocks(in_features, out_features, nblocks)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(nblocks, out_features // nblocks, in_features // nblocks))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return blockdiag_matmul(x, self.weight, self.bias)


class MonarchLinear(nn.Module):
    """Linear layer with an order-2 Monarch weight: two block-diagonal factors of ``nblocks`` blocks each.

    The first factor keeps the narrower width (in -> min(in, out)), the second maps to ``out_features``, so an
    expanding layer costs ``in^2 / n + in * out / n`` parameters (n = ``nblocks``) and a contracting one
    ``in * out / n + out^2 / n``.

    Args:
        in_features: Input features (a multiple of ``nblocks``).
        out_features: Output features (a multiple of ``nblocks``).
        nblocks: Blocks per factor.
        bias: Add a bias.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int = 4, bias: bool = True):
        super().__init__()
        _check_blocks(in_features, out_features, nblocks)
        self.in_features, self.out_features = in_features, out_features
        mid = min(in_features, out_features) // nblocks
        self.w1 = nn.Parameter(torch.empty(nblocks, mid, in_features // nblocks))
        self.w2 = nn.Parameter(torch.empty(nblocks, out_features // nblocks, mid))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for w in (self.w1, self.w2):
            bound = 1 / math.sqrt(w.shape[-1])
            nn.init.uniform_(w, -bound, bound)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.w2.shape[-1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        out = monarch_matmul(x, self.w1, self.w2)
        return out if self.bias is None else out + self.bias


def _check_blocks(in_features: int, out_features: int, nblocks: int) -> None:
    if nblocks < 1 or in_features % nblocks or out_features % nblocks:
        raise ValueError(f'structured linear {in_features} -> {out_features}: both widths must be multiples of '
                         f'nblocks={nblocks}')


_MLP_LAYERS = {'blockdiag': BlockdiagLinear, 'monarch': MonarchLinear}


class StructuredMlp(nn.Module):
    """The ViT MLP (Linear -> GELU -> Linear) with block-diagonal or Monarch layers in place of the dense ones."""

    def __init__(self, dim: int, hidden_dim: int, layer: str = 'blockdiag', nblocks: int = 4, drop: float = 0.):
        super().__init__()
        linear = _MLP_LAYERS[layer]
        self.fc1 = linear(dim, hidden_dim, nblocks)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = linear(hidden_dim, dim, nblocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class M2Block(nn.Module):
    """``x + DropPath(Hyena(LN(x)))``, then ``x + DropPath(StructuredMlp(LN(x)))``."""

    def __init__(
            self,
            dim: int,
            mlp_ratio: float = 4.,
            mlp_layer: str = 'blockdiag',
            nblocks: int = 4,
            bidirectional: bool = True,
            short_filter_order: int = 5,
            filter_kwargs: Optional[Dict[str, Any]] = None,
            proj_drop: float = 0.,
            drop_path: float = 0.,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = HyenaMixer(
            dim, short_filter_order=short_filter_order, bidirectional=bidirectional, **(filter_kwargs or {}))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = StructuredMlp(dim, int(dim * mlp_ratio), layer=mlp_layer, nblocks=nblocks, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class M2ViT(nn.Module):
    """Monarch Mixer ViT: Hyena order-2 sequence mixing and block-diagonal (or Monarch) MLPs on ViT geometry.

    ``forward_features`` returns the normalised token sequence (B, L, D), L = (H / 16) * (W / 16) row-major;
    the head mean-pools it. Intermediates are NCHW maps at stride ``patch_size``.

    Args:
        img_size: Nominal input size (the model takes any size the patches tile).
        patch_size: Patch size and stride.
        in_chans: Input channels.
        num_classes: Classes of the head (0: no head).
        global_pool: 'avg' (mean over tokens) or '' (no pooling).
        embed_dim: Token width.
        depth: Blocks.
        mlp_ratio: MLP hidden width / token width.
        mlp_layer: 'blockdiag' (the paper's M2-ViT) or 'monarch' (order-2 Monarch layers).
        nblocks: Blocks of the block-diagonal / Monarch factors.
        bidirectional: Two-sided long convolution (default, see the module docstring) or causal.
        short_filter_order: Kernel of the depthwise short conv.
        filter_emb_dim: Positional features of the implicit filter.
        filter_order: Width of the implicit filter MLP.
        filter_num_inner_mlps: Hidden layers of the implicit filter MLP.
        filter_w: Initial sine frequency of the implicit filter.
        drop_rate: Dropout before the head.
        proj_drop_rate: Dropout in the MLPs.
        drop_path_rate: Stochastic depth, linear over the blocks.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 768,
            depth: int = 12,
            mlp_ratio: float = 4.,
            mlp_layer: str = 'blockdiag',
            nblocks: int = 4,
            bidirectional: bool = True,
            short_filter_order: int = 5,
            filter_emb_dim: int = 33,
            filter_order: int = 128,
            filter_num_inner_mlps: int = 2,
            filter_w: float = 1.,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        for name, value in (('patch_size', patch_size), ('embed_dim', embed_dim), ('depth', depth),
                            ('nblocks', nblocks), ('short_filter_order', short_filter_order)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'M2ViT: {name} must be an int >= 1, got {value!r}')
        if mlp_layer not in _MLP_LAYERS:
            raise ValueError(f'M2ViT: mlp_layer must be one of {sorted(_MLP_LAYERS)}, got {mlp_layer!r}')
        self._check_pool(global_pool)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.output_fmt = 'NLC'
        self.grad_checkpointing = False
        self._check_size(*to_2tuple(img_size), what='img_size')

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        filter_kwargs = dict(
            emb_dim=filter_emb_dim, order=filter_order, num_inner_mlps=filter_num_inner_mlps, w=filter_w)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList([
            M2Block(
                embed_dim,
                mlp_ratio=mlp_ratio,
                mlp_layer=mlp_layer,
                nblocks=nblocks,
                bidirectional=bidirectional,
                short_filter_order=short_filter_order,
                filter_kwargs=filter_kwargs,
                proj_drop=proj_drop_rate,
                drop_path=dpr[i],
            )
            for i in range(depth)
        ])
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """safari's ViT init for the dense layers and the head (see the module docstring); the rest keep theirs."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and '.filter.' not in name:
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^patch_embed',
            blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        # The official config trains the implicit filters ("kernel parameters") without weight decay.
        return {name for name, _ in self.named_parameters() if '.mixer.filter.' in name}

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

    @staticmethod
    def _check_pool(global_pool: str) -> None:
        if global_pool not in ('avg', ''):
            raise ValueError(f"M2ViT: global_pool must be 'avg' or '', got {global_pool!r}")

    def _check_size(self, height: int, width: int, what: str = 'input') -> None:
        patch = self.patch_size
        if min(height, width) < patch or height % patch or width % patch:
            raise ValueError(f'{type(self).__name__} (patch {patch}) needs H and W that are positive multiples of '
                             f'{patch}; got {what} {height}x{width}; pad or resize')

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Images -> row-major patch token sequence (B, L, D) and patch grid."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} expects input of shape (B, {self.in_chans}, H, W) '
                             f'(in_chans={self.in_chans}), got {tuple(x.shape)}')
        self._check_size(x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])

    def _run_block(self, block: M2Block, x: Tensor) -> Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x)
        return block(x)

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward returning block outputs as NCHW maps of the patch grid (stride ``patch_size``) as well.

        Args:
            x: Input images (B, C, H, W).
            indices: Blocks to return: None for all, an int n for the last n, or a list of indices.
            norm: Apply the final norm to the returned block outputs.
            stop_early: Stop after the last requested block.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.

        Returns:
            The block outputs, preceded by ``forward_features``' output unless ``intermediates_only``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{type(self).__name__}.forward_intermediates: output_fmt must be 'NCHW', "
                             f'got {output_fmt!r}')
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, grid = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x)
            if i in take_indices:
                feat = self.norm(x) if norm else x
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
        x, _ = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_m2vit(variant: str, pretrained: bool = False, **kwargs) -> M2ViT:
    # Features at four evenly spaced blocks (2, 5, 8, 11 for depth 12, as ViTDet-style plain-backbone necks take).
    depth = kwargs.get('depth', 12)
    out_indices = tuple(sorted({max((i + 1) * depth // 4 - 1, 0) for i in range(4)}))
    return build_model_with_cfg(
        M2ViT,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': None,
        'crop_pct': 0.9,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed',
        'classifier': 'head',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2310.12109',
        'paper_name': 'Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture',
        'origin_url': 'https://github.com/HazyResearch/m2',
        'notes': 'no released weights: the authors published no vision code or checkpoints',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'm2vit_base_patch16_224': _cfg(),
    'test_m2vit': _cfg(input_size=(3, 64, 64), crop_pct=1.0),
})


@register_model
def m2vit_base_patch16_224(pretrained: bool = False, **kwargs) -> M2ViT:
    """M2-ViT-b (Hyena order 2, 4-block block-diagonal MLPs, bidirectional): 45M params (no head), 79.5% IN-1K."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, drop_path_rate=0.1)
    return _create_m2vit('m2vit_base_patch16_224', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def test_m2vit(pretrained: bool = False, **kwargs) -> M2ViT:
    """Tiny M2-ViT for CI (D 32, depth 4, filter MLP width 16, 64x64)."""
    model_args = dict(img_size=64, patch_size=16, embed_dim=32, depth=4, filter_emb_dim=5, filter_order=16)
    return _create_m2vit('test_m2vit', pretrained=pretrained, **dict(model_args, **kwargs))
