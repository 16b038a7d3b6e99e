# Swin-S Mask R-CNN 1x, COCO val2017. Published: box AP 44.8, mask AP 40.9
# (the Swin reference row of the VMamba README; 69M params).
# Drop path 0.3 (the Swin-S classification rate).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_small_patch4_window7_224',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
