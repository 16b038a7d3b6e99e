# Spatial-Mamba-T UperNet 160k, ADE20K val 512x512. Published: mIoU 48.6 single-scale, 49.4 multi-scale
# (Spatial-Mamba README; 57M params, 936G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/spatialmamba_tiny.pth, from
# https://drive.google.com/uc?export=download&id=19kXoqGSTuKKs4AHbdUSrdKZTwTWenLIW
checkpoint = 'checkpoints/spatialmamba_tiny.pth'
model = dict(
    backbone=dict(
        arch='spatialmamba_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
