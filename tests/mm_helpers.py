"""What the OpenMMLab tests share (tests/test_heads.py, tests/test_mm_tools.py): tiny configs and datasets.

``tiny_config`` swaps a config's backbone for a tiny ``test_*`` zoo model at 64x64; ``write_coco`` and
``write_ade20k`` generate small learnable datasets in the COCO and ADE20K layouts, and ``use_tiny_coco`` /
``use_tiny_ade20k`` point a config's dataloaders and evaluators at them. Import only after checking that
mmdet and mmseg are installed.
"""
import json
from pathlib import Path

import numpy as np
import timm
from mmengine.config import Config
from mmengine.registry import MODELS
from PIL import Image

import heads  # noqa: F401  (LinZooBackbone for tiny_config's probe)

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(config: str, arch: str) -> Config:
    """``config`` with a tiny backbone: no checkpoint, neck and heads sized to it, BN for SyncBN, 64x64 inputs."""
    cfg = Config.fromfile(str(ROOT / config))
    backbone = cfg.model.backbone
    probe = timm.create_model(arch)
    if not hasattr(probe, 'stages'):  # plain: the same number of levels, from the last blocks
        backbone.out_indices = tuple(range(len(probe.blocks) - len(backbone.out_indices), len(probe.blocks)))
    backbone.update(arch=arch, init_cfg=None)
    channels = list(MODELS.build(backbone).out_channels)
    neck = cfg.model.get('neck')
    if neck is not None and neck.type == 'SimpleFeaturePyramid':
        neck.in_channels = channels[0]
        if cfg.default_scope == 'mmseg':
            neck.out_channels = 32
            channels = [32] * neck.num_outs
    elif neck is not None:
        neck.in_channels = channels
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = (64, 64)
        cfg.model.decode_head.update(in_channels=channels, channels=32, norm_cfg=dict(type='BN', requires_grad=True))
        cfg.model.auxiliary_head.update(in_channels=channels[cfg.model.auxiliary_head.in_index], channels=32,
                                        norm_cfg=dict(type='BN', requires_grad=True))
    return cfg


def narrow_mask_rcnn(cfg: Config, width: int = 64) -> None:
    """Narrower neck and heads, fewer proposals and RoIs: the same model classes at a fraction of the CPU time."""
    model = cfg.model
    model.neck.out_channels = width
    model.rpn_head.update(in_channels=width, feat_channels=width)
    model.roi_head.bbox_roi_extractor.out_channels = width
    model.roi_head.bbox_head.update(in_channels=width, fc_out_channels=256)
    model.roi_head.mask_roi_extractor.out_channels = width
    model.roi_head.mask_head.update(in_channels=width, conv_out_channels=width)
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    model.train_cfg.rcnn.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
    model.test_cfg.rcnn.max_per_img = 20


def write_coco(root: Path, num_images: int = 8) -> Path:
    """Images with bright squares of two classes on dark noise, their boxes and polygon masks, in COCO format."""
    rng = np.random.default_rng(0)
    (root / 'images').mkdir(parents=True)
    images, annotations = [], []
    colours = {1: (230, 40, 40), 2: (40, 40, 230)}
    for image_id in range(1, num_images + 1):
        pixels = rng.integers(0, 50, (64, 64, 3), dtype=np.uint8)
        for k in range(2):
            category = 1 + (image_id + k) % 2
            size = int(rng.integers(14, 26))
            x, y = (int(v) for v in rng.integers(0, 64 - size, 2))
            pixels[y:y + size, x:x + size] = colours[category]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=category, iscrowd=0, area=size * size,
                bbox=[x, y, size, size], segmentation=[[x, y, x + size, y, x + size, y + size, x, y + size]]))
        Image.fromarray(pixels).save(root / 'images' / f'{image_id}.png')
        images.append(dict(id=image_id, file_name=f'{image_id}.png', height=64, width=64))
    categories = [dict(id=1, name='person'), dict(id=2, name='bicycle')]
    ann_file = root / 'annotations.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return ann_file


def write_ade20k(root: Path, num_images: int = 8) -> None:
    """Images whose colours follow their label maps (a background class and squares of two classes), ADE20K layout."""
    rng = np.random.default_rng(0)
    for split in ('training', 'validation'):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'annotations' / split).mkdir(parents=True)
        for i in range(num_images):
            labels = np.ones((64, 64), np.uint8)  # ADE20K label 1: class 0 after reduce_zero_label
            for label in (5, 9):
                size = int(rng.integers(16, 28))
                x, y = (int(v) for v in rng.integers(0, 64 - size, 2))
                labels[y:y + size, x:x + size] = label
            palette = np.array([[0, 0, 0]] * 10, np.uint8)
            palette[1], palette[5], palette[9] = (30, 30, 30), (220, 60, 60), (60, 60, 220)
            pixels = np.clip(palette[labels].astype(int) + rng.integers(-20, 20, (64, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / 'images' / split / f'{i}.jpg', quality=95)
            Image.fromarray(labels).save(root / 'annotations' / split / f'{i}.png')


def _single_process_loaders(cfg: Config) -> None:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)


def use_tiny_coco(cfg: Config, root: Path, ann_file: Path, batch_size: int = 2) -> None:
    """Train, validate and test a detection config on ``write_coco``'s images at 64x64, in this process."""
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(64, 64), keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(64, 64), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]
    dataset = dict(data_root=str(root), ann_file=str(Path(ann_file).relative_to(root)),
                   data_prefix=dict(img='images/'))
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset.update(dataset, pipeline=train_pipeline)
    cfg.val_dataloader.dataset.update(dataset, pipeline=test_pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = str(ann_file)
    cfg.test_evaluator = cfg.val_evaluator
    _single_process_loaders(cfg)


def use_tiny_ade20k(cfg: Config, root: Path, batch_size: int = 4) -> None:
    """Train, validate and test a segmentation config on ``write_ade20k``'s 64x64 images, in this process."""
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset.update(data_root=str(root), pipeline=pipeline)
    cfg.val_dataloader.dataset.update(data_root=str(root), pipeline=pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    _single_process_loaders(cfg)
