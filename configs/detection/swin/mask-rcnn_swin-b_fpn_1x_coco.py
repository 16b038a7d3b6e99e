# Swin-B Mask R-CNN 1x, COCO val2017. Published: box AP 46.9, mask AP 42.3
# (the Swin reference row of the VMamba README; 107M params).
# Drop path 0.5 (the Swin-B classification rate).
_base_ = '../_base_/mask-rcnn_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_base_patch4_window7_224',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
