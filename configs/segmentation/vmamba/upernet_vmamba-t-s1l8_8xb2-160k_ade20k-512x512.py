# VMamba-T [s1l8] UperNet 160k, ADE20K val 512x512. Published: mIoU 47.9 single-scale, 48.8 multi-scale
# (VMamba README; 62M params, 949G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(arch='vmamba_tiny_s1l8', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
