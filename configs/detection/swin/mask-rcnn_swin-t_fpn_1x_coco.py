# Swin-T Mask R-CNN 1x, COCO val2017. Published: box AP 42.7, mask AP 39.3
# (mmdet's Swin metafile; 48M params, 267G FLOPs).
# Drop path 0.2 (mmdet's Swin-T config).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_tiny_patch4_window7_224',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
