# MSVMamba-Tiny Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 48.3, mask AP 43.2
# (MSVMamba README).
# Drop path 0.2 (the official config's, inherited from Swin-T).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/msvmamba_tiny.pth, from
# https://drive.google.com/drive/folders/1ddNWk89ohcxxMuVEaJ2Y5A6xeBKgA7lU
checkpoint = 'checkpoints/msvmamba_tiny.pth'
model = dict(
    backbone=dict(arch='msvmamba_tiny', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
