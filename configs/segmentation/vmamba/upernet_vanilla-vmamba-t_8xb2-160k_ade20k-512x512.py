# Vanilla-VMamba-T UperNet 160k, ADE20K val 512x512. Published: mIoU 47.3 single-scale, 48.3 multi-scale
# (VMamba README; 55M params, 964G FLOPs).
# Drop path 0.3 (mmseg's Swin UperNet, which the official vanilla configs extend).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
