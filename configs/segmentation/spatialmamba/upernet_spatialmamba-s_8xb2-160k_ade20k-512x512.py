# Spatial-Mamba-S UperNet 160k, ADE20K val 512x512. Published: mIoU 50.6 single-scale, 51.4 multi-scale
# (Spatial-Mamba README; 73M params, 992G FLOPs).
# Drop path 0.3 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_small.pth, from
# https://drive.google.com/uc?export=download&id=1Wb3sYoWLpgmWrmHMYKwdgDwGPZaqM28O
checkpoint = 'checkpoints/spatialmamba_small.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
