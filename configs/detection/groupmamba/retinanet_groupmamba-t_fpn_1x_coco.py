# GroupMamba-T RetinaNet 1x, COCO val2017: the smallest GroupMamba variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://huggingface.co/Abdelrahman-shaker/GroupMamba-Tiny/resolve/main/groupmamba_tiny_ema.pth'
model = dict(
    backbone=dict(arch='groupmamba_tiny', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 348, 448]))
