# VMamba-S [s2l15] Mask R-CNN 1x, COCO val2017. Published: box AP 48.7, mask AP 43.7
# (VMamba README; 70M params, 384G FLOPs).
# Drop path 0.3 (the official config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        arch='vmamba_small_s2l15',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
