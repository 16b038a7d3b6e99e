# VMamba-B [s2l15] Mask R-CNN 1x, COCO val2017. Published: box AP 49.2, mask AP 44.1
# (VMamba README; 108M params, 485G FLOPs).
# Drop path 0.6 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(
        arch='vmamba_base_s2l15',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
