# Vim-Ti UperNet, ADE20K val 512x512. Published: mIoU 41.0 single-scale (Vim paper, later version; 40.2 in arXiv
# v1), 13M backbone params. The official recipe (hustvl/Vim seg/configs/vim/upernet), not the 160k one: 60k
# iterations, 4 GPUs x 8 images, AdamW lr 2e-4, weight decay 0.1, layer-wise lr decay 0.92 over the 24 blocks, 1500
# warm-up iterations then poly decay, sliding-window test (512 crops, stride 341). Blocks 5, 11, 17 and 23 feed
# strides 4, 8, 16 and 32 of a simple feature pyramid at the backbone's width (the official neck is a deconvolution
# pyramid without channel projection). The official features are the blocks' mixer outputs; ours the residual stream.
_base_ = '../_base_/upernet_linzoo_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'
width = 192
model = dict(
    backbone=dict(
        arch='vim_tiny_patch16_224',
        out_indices=(5, 11, 17, 23),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(type='SimpleFeaturePyramid', in_channels=width, out_channels=width, num_outs=4),
    decode_head=dict(in_channels=[width] * 4, channels=width),
    auxiliary_head=dict(in_channels=width),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='TimmLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(layer_decay_rate=0.92))
max_iters = 60000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=6000)
default_hooks = dict(checkpoint=dict(interval=6000))
train_dataloader = dict(batch_size=8)
