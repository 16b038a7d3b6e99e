# Vanilla-VMamba-B Mask R-CNN 1x, COCO val2017. Published: box AP 48.6, mask AP 43.3
# (VMamba README; 96M params, 540G FLOPs).
# Drop path 0.2 (the official config's, inherited from Swin-T).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_base',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
