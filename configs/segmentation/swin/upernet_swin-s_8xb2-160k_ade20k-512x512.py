# Swin-S UperNet 160k, ADE20K val 512x512. Published: mIoU 47.72 single-scale, 49.24 multi-scale
# (mmseg's Swin metafile; 81M params).
# Drop path 0.3 (mmseg's Swin config).
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='zswin_small_patch4_window7_224',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
