# Mask R-CNN 1x on COCO with a zoo backbone: mmdet's Swin-T Mask R-CNN 1x recipe, which the official VMamba,
# MSVMamba and Spatial-Mamba detection configs start from. AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05
# except on parameters named *norm*, linear warm-up over 1000 iterations, 12 epochs with the lr divided by 10 after
# epochs 8 and 11, 2 images per GPU on 8 GPUs, single-scale 1333x800. Variants set the backbone's arch, drop path
# rate and checkpoint, and the FPN's in_channels.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['heads'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='LinZooBackbone', out_indices=(0, 1, 2, 3)))
