# Vanilla-VMamba-T Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 48.5, mask AP 43.2
# (VMamba README).
# Drop path 0.2 (the official config's, inherited from Swin-T).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
