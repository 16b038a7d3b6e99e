# Mask R-CNN 3x on COCO with a zoo backbone: mmdet's Swin-T Mask R-CNN 3x recipe, which the official VMamba,
# MSVMamba and Spatial-Mamba 3x configs start from. The 1x optimizer (AdamW lr 1e-4, weight decay 0.05 except on
# *norm* parameters, 1000-iteration warm-up), 36 epochs with the lr divided by 10 after epochs 27 and 33, and
# DETR-style multi-scale training (short side 480-800, or resize 400-600 -> random crop 384-600 -> 480-800; flip).
# Variants set the backbone's arch, drop path rate and checkpoint, and the FPN's in_channels.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['heads'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='LinZooBackbone', out_indices=(0, 1, 2, 3)))
