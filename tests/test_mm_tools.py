"""tools.mm_train, tools.mm_test and tools.mm_flops on tiny configs (skipped without OpenMMLab, like test_heads.py).

The commands run in this process on configs that the tests write: a real config with a tiny ``test_*`` backbone
and narrow heads, pointed at a generated COCO- or ADE20K-format dataset of 64x64 images.
"""
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmcv.ops', reason='needs mmcv with ops: bash tools/install_openmmlab.sh')
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.registry import MODELS, init_default_scope  # noqa: E402

from mm_helpers import (narrow_mask_rcnn, tiny_config, use_tiny_ade20k, use_tiny_coco, write_ade20k,  # noqa: E402
                        write_coco)
from tools import flops, mm_flops, mm_test, mm_train  # noqa: E402

MASK_RCNN = 'configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py'
UPERNET = 'configs/segmentation/vmamba/upernet_vmamba-t-s1l8_8xb2-160k_ade20k-512x512.py'


def _write_tiny_mask_rcnn(tmp_path: Path) -> Path:
    """A Mask R-CNN config with test_vmamba on two generated COCO images: one epoch is one iteration."""
    ann_file = write_coco(tmp_path / 'coco', num_images=2)
    cfg = tiny_config(MASK_RCNN, 'test_vmamba')
    narrow_mask_rcnn(cfg)
    cfg.model.roi_head.bbox_head.num_classes = cfg.model.roi_head.mask_head.num_classes = 2  # the file's classes
    cfg.model.test_cfg.rcnn.score_thr = 0.  # an untrained model's boxes, so that the metrics have something to score
    use_tiny_coco(cfg, tmp_path / 'coco', ann_file)
    cfg.visualizer.name = 'visualizer_mm_tools'
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.logger.interval = 1
    cfg.train_cfg.update(max_epochs=1, val_begin=100)  # no validation while training
    cfg.default_hooks.checkpoint.interval = 1
    path = tmp_path / 'mask-rcnn_tiny.py'
    cfg.dump(str(path))
    return path


def test_train_resume_and_test_a_tiny_mask_rcnn(tmp_path, capsys):
    config = _write_tiny_mask_rcnn(tmp_path)
    work = tmp_path / 'work'
    runner = mm_train.main([str(config), '--work-dir', str(work)])
    assert runner.iter == 1 and (work / 'epoch_1.pth').exists()

    # --resume without a path: the work dir's latest checkpoint; --cfg-options: one more epoch.
    runner = mm_train.main([str(config), '--work-dir', str(work), '--resume',
                            '--cfg-options', 'train_cfg.max_epochs=2'])
    assert runner.iter == 2 and (work / 'epoch_2.pth').exists()

    capsys.readouterr()
    metrics = mm_test.main([str(config), str(work / 'epoch_2.pth'), '--work-dir', str(work)])
    printed = capsys.readouterr().out
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert 0 <= metrics[key] <= 1
        assert re.search(rf'^{key}\s+{metrics[key]}$', printed, re.MULTILINE), printed


def test_train_and_test_a_tiny_upernet(tmp_path, capsys):
    # mmseg's scope from the config: its dataset, IterBasedTrainLoop and IoUMetric.
    write_ade20k(tmp_path / 'ade', num_images=2)
    cfg = tiny_config(UPERNET, 'test_vmamba')
    use_tiny_ade20k(cfg, tmp_path / 'ade', batch_size=2)
    cfg.visualizer.name = 'visualizer_mm_tools_seg'
    cfg.train_cfg.update(max_iters=1, val_begin=100)
    cfg.default_hooks.checkpoint.interval = 1
    config = tmp_path / 'upernet_tiny.py'
    cfg.dump(str(config))
    work = tmp_path / 'work'
    assert mm_train.main([str(config), '--work-dir', str(work)]).iter == 1

    capsys.readouterr()
    metrics = mm_test.main([str(config), str(work / 'iter_1.pth'), '--work-dir', str(work)])
    assert 0 <= metrics['mIoU'] <= 100 and re.search(r'^mIoU\s+[\d.]+$', capsys.readouterr().out, re.MULTILINE)


def test_train_and_test_bad_input_is_explained(tmp_path, capsys):
    config = _write_tiny_mask_rcnn(tmp_path)
    cases = [
        (mm_train.main, [str(tmp_path / 'missing.py')], 'config .*missing.py does not exist'),
        (mm_train.main, [str(config), '--resume', str(tmp_path / 'none.pth')], 'checkpoint .*none.pth does not exist'),
        (mm_train.main, [str(config), '--launcher', 'pytorch'], r'started by its launcher .*torchrun'),
        (mm_train.main, [str(config), '--cfg-options', 'train_cfg'], '--cfg-options: expected KEY=VALUE'),
        (mm_test.main, [str(config), str(tmp_path / 'none.pth')], 'checkpoint .*none.pth does not exist'),
    ]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            mm_train.run_cli(main, argv)
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err), argv


def test_flops_of_a_tiny_upernet_add_up_to_backbone_and_decode_head(capsys):
    cfg = tiny_config(UPERNET, 'test_vmamba')
    result = mm_flops.measure(cfg, (64, 128))
    assert result.device == 'meta' and result.model == 'EncoderDecoder'

    init_default_scope('mmseg')
    with torch.device('meta'):
        model = MODELS.build(cfg.model).eval()
    assert result.params == sum(p.numel() for p in model.parameters())  # the auxiliary head included
    x = torch.zeros(1, 3, 64, 128, device='meta')
    backbone = flops.count_flops(lambda: model.backbone(x))
    features = model.backbone(x)
    head = flops.count_flops(lambda: model.decode_head(features))
    assert backbone['scan'] > 0 and result.flops['scan'] == backbone['scan']  # the selective scan counted
    assert result.flops['total'] == pytest.approx(backbone['total'] + head['total'], rel=1e-9)


def test_flops_command_counts_a_tiny_mask_rcnn_on_the_cpu(tmp_path, capsys):
    config = _write_tiny_mask_rcnn(tmp_path)
    result = mm_flops.main([str(config), '--shape', '128', '96'])
    out = capsys.readouterr().out
    assert result.device == 'cpu' and result.model == 'MaskRCNN'  # NMS cannot run on meta tensors
    assert f'params: {result.params / 1e6:.2f}M ({result.params})' in out
    assert 'input 1x3x128x96' in out and re.search(r'FLOPs: [\d.]+G', out)
    assert result.flops['scan'] > 0 and result.flops['total'] > result.flops['scan']
