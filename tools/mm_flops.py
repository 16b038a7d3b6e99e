"""Parameters and FLOPs of the detector or segmentor of an OpenMMLab config, as the papers' tables count them.

The model is built from the config (without loading its checkpoint) and run once in mmengine's ``tensor`` mode,
the forward that MMDetection's and MMSegmentation's FLOPs tools and the official VMamba analysis count: for a
detector the backbone, neck and heads, with a two-stage detector's RoI heads on the RPN's proposals (up to
``test_cfg.rpn.max_per_img``, masks on the first 100); for a segmentor the backbone and the decode head (not the
auxiliary head, which only trains). Parameters are those of the whole model, auxiliary head included.

FLOPs follow ``tools.flops`` (one multiply-accumulate counts 1; the selective scan by VMamba's rule; norms and
FFTs as fvcore counts them): the same counter, ``tools.flops.count_flops``. RoIAlign and NMS (mmcv ops) are not
counted, as fvcore does not count them either. The default input is the published tables' (detection 1280x800,
segmentation 512x2048, as height x width, batch 1).

    python -m tools.mm_flops configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py
    python -m tools.mm_flops configs/segmentation/vmamba/upernet_vmamba-t-s1l8_8xb2-160k_ade20k-512x512.py
"""
import argparse
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .common import CliError, fmt_count, run_cli
from .flops import count_on_meta_or_cpu
from .mm_common import add_config_arguments, load_config


# (height, width) of the published detection (Mask R-CNN, RetinaNet) and segmentation (UperNet) FLOPs.
DEFAULT_SHAPES = {'mmdet': (1280, 800), 'mmseg': (512, 2048)}


@dataclass
class Complexity:
    """What ``measure`` found: the model's class, the input, parameters and FLOPs per category."""
    model: str
    shape: Tuple[int, int]
    params: int
    flops: Dict[str, float]
    device: str


def _tensor_mode_inputs(scope: str, shape: Tuple[int, int], device: str) -> Tuple[torch.Tensor, Optional[list]]:
    """A (1, 3, H, W) image and, for a detector, the data sample whose image shape the RPN clips proposals to."""
    inputs = torch.zeros(1, 3, *shape, device=device)
    if scope == 'mmseg':
        return inputs, None
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                                         scale_factor=(1.0, 1.0)))
    return inputs, [sample]


def measure(cfg, shape: Tuple[int, int]) -> Complexity:
    """Parameters and FLOPs of ``cfg.model`` for one ``shape`` (height, width) image.

    The model runs on the meta device (no memory or time spent) when it can, else on the CPU: a two-stage
    detector's NMS has no meta kernel.
    """
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)  # the CPU run's random weights decide the RPN's proposals

    def build(device: str) -> Tuple[nn.Module, Callable[[], object]]:
        model = MODELS.build(cfg.model).eval()
        inputs, samples = _tensor_mode_inputs(cfg.default_scope, shape, device)
        return model, lambda: model(inputs, samples, mode='tensor')

    model, flops, device = count_on_meta_or_cpu(build)
    params = sum(p.numel() for p in model.parameters())
    return Complexity(type(model).__name__, shape, params, flops, device)


def main(argv: Optional[List[str]] = None) -> Complexity:
    """Print (and return) the parameters and FLOPs of the config's model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument('--shape', type=int, nargs=2, default=None, metavar=('HEIGHT', 'WIDTH'),
                        help='input size (default: 1280 800 for detection, 512 2048 for segmentation)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', force=True)
    cfg = load_config(args.config, args.cfg_options)
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[cfg.default_scope]
    if min(shape) < 32:
        raise CliError(f'--shape {shape[0]} {shape[1]}: height and width must be at least 32')
    result = measure(cfg, shape)
    backbone = cfg.model.backbone.get('arch', cfg.model.backbone.type)
    print(f'{args.config}: {result.model} with {backbone}, input 1x3x{shape[0]}x{shape[1]} '
          f'(counted on {result.device})')
    print(f'params: {result.params / 1e6:.2f}M ({result.params})')
    print(f'FLOPs: {result.flops["total"] / 1e9:.1f}G ({fmt_count(result.flops["scan"])} selective scan, '
          f'{fmt_count(result.flops["norm"])} norms); a multiply-accumulate counts 1')
    return result


if __name__ == '__main__':
    run_cli(main)
