# SOFT-Tiny RetinaNet 1x, COCO val2017: the smallest SOFT variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/soft_tiny.pth, from
# https://drive.google.com/uc?export=download&id=1S04DCotIOkP0DaBb8WStQ513z82qT9de
checkpoint = 'checkpoints/soft_tiny.pth'
model = dict(
    backbone=dict(arch='soft_tiny', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 320, 512]))
