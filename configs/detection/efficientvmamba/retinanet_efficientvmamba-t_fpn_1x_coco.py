# EfficientVMamba-T RetinaNet 1x, COCO val2017: the smallest EfficientVMamba variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://huggingface.co/TerryPei/EfficientVMamba-Tiny/resolve/main/efficient_vmamba_tiny.ckpt'
model = dict(
    backbone=dict(arch='efficientvmamba_tiny', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384]))
