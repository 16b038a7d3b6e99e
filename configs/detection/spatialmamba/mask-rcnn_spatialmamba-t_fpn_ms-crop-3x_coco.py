# Spatial-Mamba-T Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 49.3, mask AP 43.6
# (Spatial-Mamba README).
# Drop path 0.2 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_tiny.pth, from
# https://drive.google.com/uc?export=download&id=19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW
checkpoint = 'checkpoints/spatialmamba_tiny.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 128, 256, 512]))
