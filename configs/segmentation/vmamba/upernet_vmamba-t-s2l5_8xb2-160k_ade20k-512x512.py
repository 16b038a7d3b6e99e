# VMamba-T [s2l5] UperNet 160k, ADE20K val 512x512. Published: mIoU 48.3 single-scale, 48.6 multi-scale
# (VMamba README; 62M params, 948G FLOPs).
# Drop path 0.2 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_tiny_0230_ckpt_epoch_262.pth'
model = dict(
    backbone=dict(arch='vmamba_tiny_s2l5', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
