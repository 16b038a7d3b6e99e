# Vanilla-VMamba-T RetinaNet 1x, COCO val2017: the smallest Vanilla variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'
model = dict(
    backbone=dict(arch='vanilla_vmamba_tiny', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[192, 384, 768]))
