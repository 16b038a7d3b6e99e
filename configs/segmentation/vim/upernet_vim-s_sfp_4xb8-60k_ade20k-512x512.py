# Vim-S UperNet, ADE20K val 512x512. Published: mIoU 44.9 single-scale (Vim paper), 46M backbone params.
# The Vim-Ti recipe with the official base lr 1e-4; the official weight decay of Vim-S is not in the references,
# 0.05 here.
_base_ = './upernet_vim-ti_sfp_4xb8-60k_ade20k-512x512.py'
checkpoint = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'
width = 384
model = dict(
    backbone=dict(arch='vim_small_patch16_224', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=width, out_channels=width),
    decode_head=dict(in_channels=[width] * 4, channels=width),
    auxiliary_head=dict(in_channels=width))
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=0.05))
