"""OpenMMLab side of the zoo: the only package that imports mmengine, MMDetection and MMSegmentation.

Importing it (configs do so through ``custom_imports=dict(imports=['heads'])``) registers, in mmengine's root
registries so that both MMDetection and MMSegmentation configs find them:

* ``LinZooBackbone``: any zoo model by its timm name, returning a tuple of NCHW maps;
* ``SimpleFeaturePyramid``: ViTDet's multi-scale neck for plain single-stride backbones (Vim, M2-ViT);
* ``TimmLayerDecayOptimWrapperConstructor``: layer-wise lr decay for any zoo backbone via timm's group_matcher;

and lets mmengine's ``resume`` / ``load_from`` read its checkpoints with torch's ``weights_only`` loader.
"""
from .backbone import LinZooBackbone, zoo_model_names
from .checkpoint import register_checkpoint_safe_globals
from .neck import SimpleFeaturePyramid
from .optim import TimmLayerDecayOptimWrapperConstructor

register_checkpoint_safe_globals()

__all__ = ['LinZooBackbone', 'SimpleFeaturePyramid', 'TimmLayerDecayOptimWrapperConstructor', 'zoo_model_names']
