# MSVMamba-Nano RetinaNet 1x, COCO val2017: the smallest MSVMamba variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/msvmamba_nano.pth, from
# https://drive.google.com/drive/folders/1J41w3ApitQhp2O3wHmJoOs4U032uqebK
checkpoint = 'checkpoints/msvmamba_nano.pth'
model = dict(
    backbone=dict(arch='msvmamba_nano', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384]))
