# Vanilla-VMamba-S UperNet 160k, ADE20K val 512x512. Published: mIoU 49.5 single-scale, 50.5 multi-scale
# (VMamba README; 76M params, 1081G FLOPs).
# Drop path 0.3 (mmseg's Swin UperNet, which the official vanilla configs extend).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmsmall_dp03_ckpt_epoch_238.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
