# Spatial-Mamba-B Mask R-CNN 1x, COCO val2017. Published: box AP 50.4, mask AP 45.1
# (Spatial-Mamba README; 115M params, 494G FLOPs).
# Drop path 0.5 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_base.pth, from
# https://drive.google.com/uc?export=download&id=1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM
checkpoint = 'checkpoints/spatialmamba_base.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
