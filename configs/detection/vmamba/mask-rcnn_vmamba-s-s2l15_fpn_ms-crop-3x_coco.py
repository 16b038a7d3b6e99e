# VMamba-S [s2l15] Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 49.9, mask AP 44.2
# (VMamba README).
# Drop path 0.3 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        arch='vmamba_small_s2l15',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
