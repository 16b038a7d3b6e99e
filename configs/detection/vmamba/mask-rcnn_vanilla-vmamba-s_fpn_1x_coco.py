# Vanilla-VMamba-S Mask R-CNN 1x, COCO val2017. Published: box AP 48.2, mask AP 43.0
# (VMamba README; 64M params, 400G FLOPs).
# Drop path 0.2 (the official config's, inherited from Swin-T).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
