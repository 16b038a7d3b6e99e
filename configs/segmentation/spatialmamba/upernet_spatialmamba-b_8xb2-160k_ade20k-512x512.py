# Spatial-Mamba-B UperNet 160k, ADE20K val 512x512. Published: mIoU 51.8 single-scale, 52.6 multi-scale
# (Spatial-Mamba README; 127M params, 1176G FLOPs).
# Drop path 0.5 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_base.pth, from
# https://drive.google.com/uc?export=download&id=1k8dHp2QRCOqBSgAi36YkhZp_O8LqOPjM
checkpoint = 'checkpoints/spatialmamba_base.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
