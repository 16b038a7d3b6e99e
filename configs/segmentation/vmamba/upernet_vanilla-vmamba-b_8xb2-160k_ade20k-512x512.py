# Vanilla-VMamba-B UperNet 160k, ADE20K val 512x512. Published: mIoU 50.0 single-scale, 51.3 multi-scale
# (VMamba README; 110M params, 1226G FLOPs).
# Drop path 0.3 (mmseg's Swin UperNet, which the official vanilla configs extend).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmbase_dp06_ckpt_epoch_241.pth'
model = dict(
    backbone=dict(
        arch='vanilla_vmamba_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
