# Spatial-Mamba-T Mask R-CNN 1x, COCO val2017. Published: box AP 47.6, mask AP 42.9
# (Spatial-Mamba README; 46M params, 261G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_tiny.pth, from
# https://drive.google.com/uc?export=download&id=19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW
checkpoint = 'checkpoints/spatialmamba_tiny.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 128, 256, 512]))
