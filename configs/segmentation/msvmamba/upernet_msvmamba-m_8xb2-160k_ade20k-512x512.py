# MSVMamba-Micro UperNet 160k, ADE20K val 512x512. Published: mIoU 45.1 single-scale, 45.4 multi-scale
# (MSVMamba README; 42M params, 875G FLOPs).
# Drop path 0.3 (the official config's, inherited from Swin-T).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
# Pretrained weights: save the official ImageNet-1k checkpoint as checkpoints/msvmamba_micro.pth, from
# https://drive.google.com/drive/folders/1jfl2GmuKcUB8sPwRlyHK_wT0MjqgljYk
checkpoint = 'checkpoints/msvmamba_micro.pth'
model = dict(
    backbone=dict(arch='msvmamba_micro', drop_path_rate=0.3, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
