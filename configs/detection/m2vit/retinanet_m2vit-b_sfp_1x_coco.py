# M2-ViT-b RetinaNet 1x, COCO val2017: the smallest M2 variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
# The last block (stride 16) feeds a ViTDet simple feature pyramid (strides 8-32, two extra max-pooled levels).
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
# No released weights: the backbone starts from its random initialisation.
model = dict(
    backbone=dict(arch='m2vit_base_patch16_224', out_indices=(11,)),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=768, out_channels=256,
              scale_factors=(2.0, 1.0, 0.5), num_outs=5))
