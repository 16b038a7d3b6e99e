# UperNet 160k on ADE20K 512x512 with a zoo backbone: mmseg's Swin-T UperNet recipe, which the official VMamba,
# MSVMamba and Spatial-Mamba segmentation configs start from. UPerHead (512 channels, pooling scales 1/2/3/6) on
# the four stages and an FCN auxiliary head (weight 0.4) on stage 2, AdamW lr 6e-5, betas (0.9, 0.999), weight decay
# 0.01 except on *norm* parameters, linear warm-up over 1500 iterations, then poly decay (power 1) to 160k
# iterations, 2 images per GPU on 8 GPUs, 512x512 crops. Variants set the backbone's arch, drop path rate and
# checkpoint, and the heads' in_channels.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['heads'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='LinZooBackbone', out_indices=(0, 1, 2, 3)))
