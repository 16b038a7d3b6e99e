# RetinaNet 1x on COCO with a zoo backbone: mmdet's Swin-T RetinaNet 1x (FPN on strides 8-32 plus two extra levels,
# 12 epochs, lr steps after epochs 8 and 11, 1000-iteration warm-up, 2 images per GPU on 8 GPUs) with the AdamW
# settings of the Mask R-CNN configs (lr 1e-4, weight decay 0.05, none on *norm* parameters) in place of its SGD.
# Variants set the backbone's arch, drop path rate and checkpoint, and the FPN's in_channels (stages 1-3).
_base_ = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['heads'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='LinZooBackbone', out_indices=(1, 2, 3)))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
