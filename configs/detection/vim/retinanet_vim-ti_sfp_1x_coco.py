# Vim-Ti RetinaNet 1x, COCO val2017: the smallest Vim variant for a quick detection baseline;
# no RetinaNet result of this family is published in the references, so there is no number to reproduce.
# The last block (stride 16) feeds a ViTDet simple feature pyramid (strides 8-32, two extra max-pooled levels).
_base_ = '../_base_/retinanet_linzoo_fpn_1x_coco.py'
checkpoint = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'
model = dict(
    backbone=dict(
        arch='vim_tiny_patch16_224',
        out_indices=(23,),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=192, out_channels=256,
              scale_factors=(2.0, 1.0, 0.5), num_outs=5))
