"""Evaluate a checkpoint of an MMDetection or MMSegmentation config with mmengine's Runner; print its metrics.

The config's ``test_dataloader`` and ``test_evaluator`` decide the data and the metrics (COCO box and mask AP,
mIoU); ``--tta`` switches to the config's test-time augmentation (mmseg's multi-scale and flip mIoU). Under
torchrun, one process per GPU:

    python -m tools.mm_test configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py \\
        work_dirs/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco/epoch_12.pth
    torchrun --nproc-per-node 8 -m tools.mm_test CONFIG CHECKPOINT --launcher pytorch
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from .common import CliError, run_cli
from .mm_common import add_config_arguments, add_run_arguments, build_runner, load_config, prepare_run


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Evaluate the checkpoint; print (on the first process) and return the metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument('checkpoint', help='a checkpoint of this config (a path or URL)')
    add_run_arguments(parser)
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline and tta_model")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if '://' not in args.checkpoint and not Path(args.checkpoint).is_file():
        raise CliError(f'checkpoint {args.checkpoint} does not exist')
    prepare_run(cfg, args.config, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise CliError(f'--tta: config {args.config} defines no tta_model and tta_pipeline')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.model = dict(cfg.tta_model, module=cfg.model)
    metrics = build_runner(cfg).test()

    from mmengine.dist import is_main_process
    if is_main_process():
        width = max(map(len, metrics), default=0)
        for name, value in metrics.items():
            print(f'{name:<{width}}  {value}')
    return metrics


if __name__ == '__main__':
    run_cli(main)
