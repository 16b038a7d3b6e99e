# Swin-B UperNet 160k, ADE20K val 512x512. Published: mIoU 47.99 single-scale, 49.57 multi-scale
# (mmseg's Swin metafile; 121M params).
# Drop path 0.3 (mmseg's Swin config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_base_patch4_window7_224',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
