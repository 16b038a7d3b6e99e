"""Train an MMDetection or MMSegmentation config (configs/detection/, configs/segmentation/) with mmengine's Runner.

A thin wrapper: the config decides the model, data, schedule, hooks and evaluation (its ``default_scope``, mmdet or
mmseg, picks the library; its ``custom_imports`` imports ``heads``); the options below only set where the run
writes, whether it resumes, mixed precision, overrides and the launcher. Under torchrun, one process per GPU:

    python -m tools.mm_train configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py
    torchrun --nproc-per-node 8 -m tools.mm_train configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py \\
        --launcher pytorch
    python -m tools.mm_train CONFIG --resume                       # the latest checkpoint of the work dir
    python -m tools.mm_train CONFIG --cfg-options train_dataloader.batch_size=4 optim_wrapper.optimizer.lr=2e-4
"""
import argparse
from pathlib import Path
from typing import List, Optional

import torch

from .common import CliError, run_cli
from .mm_common import add_config_arguments, add_run_arguments, build_runner, load_config, prepare_run

AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}


def main(argv: Optional[List[str]] = None) -> object:
    """Train the config's model; return mmengine's Runner after training."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CHECKPOINT',
                        help='continue a run: from CHECKPOINT, or without it from the latest checkpoint of the work '
                             'dir (model, optimizer, scheduler and iteration)')
    parser.add_argument('--amp', nargs='?', const='fp16', default=None, choices=sorted(AMP_DTYPES),
                        help="mixed precision through mmengine's AmpOptimWrapper (fp16 with dynamic loss scaling "
                             'when no value is given; needs a GPU)')
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    prepare_run(cfg, args.config, args.work_dir, args.launcher)
    if args.amp:
        if not torch.cuda.is_available():
            raise CliError('--amp needs a CUDA device')
        cfg.optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic', dtype=AMP_DTYPES[args.amp])
    if args.resume:
        if args.resume != 'auto' and not Path(args.resume).is_file():
            raise CliError(f'--resume: checkpoint {args.resume} does not exist')
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    runner = build_runner(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    run_cli(main)
