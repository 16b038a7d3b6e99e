# VMamba-T [s1l8] Mask R-CNN 1x, COCO val2017. Published: box AP 47.3, mask AP 42.7
# (VMamba README; 50M params, 271G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(arch='vmamba_tiny_s1l8', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
