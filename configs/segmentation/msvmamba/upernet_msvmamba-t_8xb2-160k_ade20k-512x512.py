# MSVMamba-Tiny UperNet 160k, ADE20K val 512x512. Published: mIoU 47.8 single-scale (no multi-scale result published)
# (MSVMamba README; 65M params, 942G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/msvmamba_tiny.pth, from
# https://drive.google.com/drive/folders/1ddNWk89ohcxxMuVEaJ2Y5A6xeBKgA7lU
checkpoint = 'checkpoints/msvmamba_tiny.pth'
model = dict(
    backbone=dict(arch='msvmamba_tiny', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
