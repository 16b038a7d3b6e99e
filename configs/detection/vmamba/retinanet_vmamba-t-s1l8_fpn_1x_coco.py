# VMamba-T [s1l8] RetinaNet 1x, COCO val2017: the smallest VMamba variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(arch='vmamba_tiny_s1l8', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[192, 384, 768]))
