# Swin-S Mask R-CNN 3x (multi-scale training), COCO val2017. Published: box AP 48.2, mask AP 43.2
# (mmdet's Swin metafile (its run used AMP)).
# Drop path 0.3 (the Swin-S classification rate).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_ms-crop-3x_coco.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_small_patch4_window7_224',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
