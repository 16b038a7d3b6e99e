"""Parameters and FLOPs of zoo (and timm) models at a given input size, beside the published numbers.

FLOPs follow the convention of the papers' tables (fvcore's): one multiply-accumulate counts 1. The count
is ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass (on the meta device, so no memory or
time is spent; on the CPU for a model that cannot run on meta), with these rules:

* matmul / conv / attention (torch's built-in formulas, which count 2 per multiply-accumulate): halved;
* the selective scan (``linzoo::selective_scan_fwd``): the published rule of VMamba and Mamba
  (state-spaces/mamba#110), ``9 * B * L * D * N``, plus ``B * D * L`` for the D skip and ``B * D * L`` for
  the z gate when present (D = all scanned channels, i.e. K routes x d_inner);
* layer / group norm: 5 per element with an affine transform, 4 without; batch norm at inference 2 (1)
  per element: fvcore's rules, which the published VMamba numbers include;
* FFTs (``aten._fft_r2c/_fft_c2r/_fft_c2c``, long convolutions of FFT/Monarch mixers): a complex transform
  of length N costs ``5 N log2 N`` real operations (radix-2), counted here as ``2.5 N log2 N`` to match the
  multiply-accumulate convention; a real-input or real-output transform half of that. Monarch (block-
  diagonal) matrices run as batched matmuls and are counted exactly by the matmul rule.

Element-wise activations, softmax and pooling are not counted (fvcore does not count them either).

    python -m tools.flops                                   # every zoo model with published numbers
    python -m tools.flops --models vmamba_tiny_s1l8,vim_small_patch16_224 --img-size 512
"""
import argparse
import logging
import math
from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from timm.data import resolve_data_config
from timm.utils import ParseKwargs
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .common import CliError, create_model, markdown_table, run_cli, zoo_models
from .benchmark import expand_models

_logger = logging.getLogger('tools.flops')
aten = torch.ops.aten

# Published (params, FLOPs, input size) from the papers / official READMEs (see shared/reference/); None where the
# authors published no number. A family whose models are not registered (yet) is simply not listed.
PUBLISHED: Dict[str, Tuple[Optional[float], Optional[float], int]] = {
    # VMamba README / assets/performance.md (vmamba_family.md section 3.2)
    'vanilla_vmamba_tiny': (23e6, 5.6e9, 224),
    'vanilla_vmamba_small': (44e6, 11.2e9, 224),
    'vanilla_vmamba_base': (76e6, 18.0e9, 224),
    'vmamba_tiny_s2l5': (31e6, 4.9e9, 224),
    'vmamba_small_s2l15': (50e6, 8.7e9, 224),
    'vmamba_base_s2l15': (89e6, 15.4e9, 224),
    'vmamba_tiny_s1l8': (30e6, 4.9e9, 224),
    'vmamba_small_s1l20': (49e6, 8.6e9, 224),
    'vmamba_base_s1l20': (87e6, 15.2e9, 224),
    # Vim README: parameters only (vim_swin_soft_m2.md section 1.2)
    'vim_tiny_patch16_224': (7e6, None, 224),
    'vim_tiny_patch16_stride8_224': (7e6, None, 224),
    'vim_small_patch16_224': (26e6, None, 224),
    'vim_small_patch16_stride8_224': (26e6, None, 224),
    'vim_base_patch16_224': (98e6, None, 224),
    # Swin README (vim_swin_soft_m2.md section 2.1)
    'zswin_tiny_patch4_window7_224': (28e6, 4.5e9, 224),
    'zswin_small_patch4_window7_224': (50e6, 8.7e9, 224),
    'zswin_base_patch4_window7_224': (88e6, 15.4e9, 224),
    'zswin_base_patch4_window12_384': (88e6, 47.1e9, 384),
    'zswin_large_patch4_window12_384': (197e6, 103.9e9, 384),
    # SOFT README (vim_swin_soft_m2.md section 3.2)
    'soft_tiny': (13e6, 1.9e9, 224),
    'soft_small': (24e6, 3.3e9, 224),
    'soft_medium': (45e6, 7.2e9, 224),
    'soft_large': (64e6, 11.0e9, 224),
    'soft_huge': (87e6, 16.3e9, 224),
    # EfficientVMamba README (vmamba_family.md section 4.1)
    'efficientvmamba_tiny': (6e6, 0.8e9, 224),
    'efficientvmamba_small': (11e6, 1.3e9, 224),
    'efficientvmamba_base': (33e6, 4.0e9, 224),
    # Spatial-Mamba README (vmamba_family.md section 6.1)
    'spatialmamba_tiny': (27e6, 4.5e9, 224),
    'spatialmamba_small': (43e6, 7.1e9, 224),
    'spatialmamba_base': (96e6, 15.8e9, 224),
    # MSVMamba README, main branch (vmamba_family.md section 5.1)
    'msvmamba_nano': (7e6, 0.9e9, 224),
    'msvmamba_micro': (12e6, 1.5e9, 224),
    'msvmamba_tiny': (33e6, 4.6e9, 224),
    # M2-ViT paper: parameters only (vim_swin_soft_m2.md section 4.2)
    'm2vit_base_patch16_224': (45e6, None, 224),
    # GroupMamba README: parameters only (vmamba_family.md section 7.1)
    'groupmamba_tiny': (23e6, None, 224),
    'groupmamba_small': (34e6, None, 224),
    'groupmamba_base': (57e6, None, 224),
}


def _scan_flops(u, delta, A, B, C, D, z, *args, out_shape=None, **kwargs) -> int:
    batch, dim, length = u
    flops = 9 * batch * length * dim * A[1]
    if D is not None:
        flops += batch * dim * length
    if z is not None:
        flops += batch * dim * length
    return flops


def _layer_norm_flops(x, normalized_shape, weight, *args, out_shape=None, **kwargs) -> int:
    return prod(x) * (5 if weight is not None else 4)


def _group_norm_flops(x, weight, *args, out_shape=None, **kwargs) -> int:
    return prod(x) * (5 if weight is not None else 4)


def _batch_norm_eval_flops(x, weight, *args, out_shape=None, **kwargs) -> int:
    return prod(x) * (2 if weight is not None else 1)


def _fft_cost(shape: Sequence[int], dims: Sequence[int], per_point: float, signal_last: Optional[int] = None) -> int:
    """``per_point * N log2 N`` per transform of N points over ``dims``, times the transforms in the batch."""
    dims = [d % len(shape) for d in dims]
    sizes = [shape[d] for d in dims]
    if signal_last is not None:  # c2r: the input holds n // 2 + 1 bins of an n-point real signal
        sizes[-1] = signal_last
    n = prod(sizes)
    transforms = prod(shape) // max(prod(shape[d] for d in dims), 1)
    return int(per_point * n * math.log2(n) * transforms) if n > 1 else 0


def _fft_r2c_flops(x, dim, normalization, onesided, *args, out_shape=None, **kwargs) -> int:
    return _fft_cost(x, dim, 1.25)


def _fft_c2r_flops(x, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs) -> int:
    return _fft_cost(x, dim, 1.25, signal_last=last_dim_size)


def _fft_c2c_flops(x, dim, normalization, forward, *args, out_shape=None, **kwargs) -> int:
    return _fft_cost(x, dim, 2.5)


# Rules that already count in the multiply-accumulate convention; every other op's count is halved.
RULES: Dict[Any, Callable[..., int]] = {
    torch.ops.linzoo.selective_scan_fwd: _scan_flops,
    aten.native_layer_norm: _layer_norm_flops,
    aten.native_group_norm: _group_norm_flops,
    aten._native_batch_norm_legit_no_training: _batch_norm_eval_flops,
    aten._fft_r2c: _fft_r2c_flops,
    aten._fft_c2r: _fft_c2r_flops,
    aten._fft_c2c: _fft_c2c_flops,
}
_RULE_NAMES = {str(op): op for op in RULES}
_CATEGORY = {'linzoo.selective_scan_fwd': 'scan', 'aten._fft_r2c': 'fft', 'aten._fft_c2r': 'fft',
             'aten._fft_c2c': 'fft'}


def count_flops(fn: Callable[[], Any]) -> Dict[str, float]:
    """Run ``fn`` under the counter; return FLOPs (multiply-accumulate = 1) in total and per category.

    Categories: 'scan' (selective scan), 'fft', 'norm' and 'dense' (matmul, conv, attention).
    """
    with FlopCounterMode(display=False, custom_mapping=RULES) as counter, torch.no_grad():
        fn()
    totals = {'total': 0.0, 'dense': 0.0, 'scan': 0.0, 'fft': 0.0, 'norm': 0.0}
    for op, flops in counter.get_flop_counts()['Global'].items():
        name = str(op)
        value = flops if name in _RULE_NAMES else flops / 2
        totals[_CATEGORY.get(name, 'norm' if name in _RULE_NAMES else 'dense')] += value
        totals['total'] += value
    return totals


@dataclass
class Row:
    model: str
    img_size: int
    params: float
    flops: Dict[str, float]
    device: str
    published: Tuple[Optional[float], Optional[float], int]


def count_on_meta_or_cpu(
        build: Callable[[str], Tuple[nn.Module, Callable[[], Any]]],
) -> Tuple[nn.Module, Dict[str, float], str]:
    """Count a forward pass on the meta device (no memory, no time), or on the CPU for an op without a meta kernel.

    Args:
        build: Given a device name, builds the model and its inputs there and returns (model, forward).

    Returns:
        The model, ``count_flops(forward)`` and the device it was counted on.
    """
    for device in ('meta', 'cpu'):
        try:
            with torch.device(device):
                model, forward = build(device)
            return model, count_flops(forward), device
        except (NotImplementedError, RuntimeError) as e:
            if device == 'cpu':
                raise
            _logger.info(f'cannot count on the meta device ({str(e).splitlines()[0]}); counting on the CPU')
    raise AssertionError('unreachable')


def measure(name: str, img_size: Optional[int], batch: int, model_kwargs: Dict[str, Any]) -> Row:
    """Parameters and FLOPs of one model for a (batch, 3, img_size, img_size) input."""

    def input_size(model: nn.Module) -> int:
        return img_size or resolve_data_config({}, model=model)['input_size'][-1]

    def build(device: str) -> Tuple[nn.Module, Callable[[], Any]]:
        model = create_model(name, **model_kwargs).eval()
        x = torch.zeros(batch, 3, input_size(model), input_size(model), device=device)
        return model, lambda: model(x)

    model, flops, device = count_on_meta_or_cpu(build)
    size = input_size(model)
    params = sum(p.numel() for p in model.parameters())
    return Row(name, size, params, flops, device, PUBLISHED.get(name, (None, None, 0)))


def _g(value: Optional[float], scale: float, digits: int) -> str:
    return '–' if value is None else f'{value / scale:.{digits}f}'


def main(argv: Optional[List[str]] = None) -> List[Row]:
    """Print (and return) parameters and FLOPs for the models of the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--models', default=None,
                        help='comma-separated names or wildcards (default: every zoo model with published numbers)')
    parser.add_argument('--img-size', type=int, default=0,
                        help="input size (default: each model's own, the size of its published numbers)")
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    parser.add_argument('--out', default=None, help='also write the Markdown table to this file')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', force=True)
    if args.batch < 1 or args.img_size < 0:
        raise CliError('--batch must be >= 1 and --img-size >= 0')
    names = expand_models(args.models) if args.models else [n for n in zoo_models() if n in PUBLISHED]
    rows = [measure(name, args.img_size or None, args.batch, args.model_kwargs) for name in names]

    with_fft = any(r.flops['fft'] for r in rows)  # an FFT column only for models that run FFTs
    header = ['model', 'input', 'params (M)', 'published params (M)', 'GFLOPs', 'published GFLOPs', 'scan GFLOPs']
    table = [[r.model, r.img_size, _g(r.params, 1e6, 2), _g(r.published[0], 1e6, 0), _g(r.flops['total'], 1e9, 3),
              _g(r.published[1], 1e9, 1) if r.img_size == r.published[2] and args.batch == 1 else '–',
              _g(r.flops['scan'], 1e9, 3)] + ([_g(r.flops['fft'], 1e9, 3)] if with_fft else []) for r in rows]
    header += ['FFT GFLOPs'] if with_fft else []
    text = (f'batch {args.batch}; FLOPs count a multiply-accumulate as 1 (fvcore convention), the selective scan '
            f'as 9*B*L*D*N + B*D*L (D) [+ B*D*L (z)]; published FLOPs are shown at the input size they were '
            f'measured at\n\n' + markdown_table(header, table))
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return rows


if __name__ == '__main__':
    run_cli(main)
