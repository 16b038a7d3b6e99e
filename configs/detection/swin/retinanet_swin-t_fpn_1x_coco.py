# Swin-T RetinaNet 1x, COCO val2017: the smallest Swin variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='zswin_tiny_patch4_window7_224', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[192, 384, 768]))
