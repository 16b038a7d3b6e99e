# VMamba-S [s2l15] UperNet 160k, ADE20K val 512x512. Published: mIoU 50.6 single-scale, 51.2 multi-scale
# (VMamba README; 82M params, 1028G FLOPs).
# Drop path 0.3 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        arch='vmamba_small_s2l15',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
