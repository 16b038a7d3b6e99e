# VMamba-B [s2l15] UperNet 160k, ADE20K val 512x512. Published: mIoU 51.0 single-scale, 51.6 multi-scale
# (VMamba README; 122M params, 1170G FLOPs).
# Drop path 0.6 (the official config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(
        arch='vmamba_base_s2l15',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
