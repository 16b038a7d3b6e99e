# VMamba-T [s1l8] Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 48.8, mask AP 43.7
# (VMamba README).
# Drop path 0.2 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(arch='vmamba_tiny_s1l8', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
