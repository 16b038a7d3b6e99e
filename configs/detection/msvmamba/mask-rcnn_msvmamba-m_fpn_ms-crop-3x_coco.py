# MSVMamba-Micro Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 46.3, mask AP 41.8
# (MSVMamba README).
# Drop path 0.2 (the official config's, inherited from Swin-T).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/msvmamba_micro.pth, from
# https://drive.google.com/drive/folders/1jfl2GmuKcUB8sPwRlyHK_wT0MjqgljYk
checkpoint = 'checkpoints/msvmamba_micro.pth'
model = dict(
    backbone=dict(arch='msvmamba_micro', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 128, 256, 512]))
