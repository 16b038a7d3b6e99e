# Spatial-Mamba-S Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 50.5, mask AP 44.6
# (Spatial-Mamba README).
# Drop path 0.3 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_small.pth, from
# https://drive.google.com/uc?export=download&id=1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O
checkpoint = 'checkpoints/spatialmamba_small.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 128, 256, 512]))
