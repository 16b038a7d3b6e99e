"""OpenMMLab side of the zoo: the only package that imports mmengine, MMDetection and MMSegmentation.

Importing it (configs do so through ``custom_imports=dict(imports=['heads'])``) registers, in mmengine's root
registries so that both MMDetection and MMSegmentation configs find them:

* ``LinZooBackbone``: any zoo model by its timm name, returning a tuple of NCHW maps;
* ``SimpleFeaturePyramid``: ViTDet's multi-scale neck for plain single-stride backbones (Vim, M2-ViT);
* ``TimmLayerDecayOptimWrapperConstructor``: layer-wise lr decay for any zoo backbone via timm's group_matcher;

and lets mmengine's ``resume`` / ``load_from`` read its checkpoints with torch's ``weights_only`` loader.
"""
try:
    import mmengine  # noqa: F401
    import mmdet  # noqa: F401
    import mmseg  # noqa: F401
except ImportError as error:
    raise ImportError(f'heads needs MMDetection 3.3 and MMSegmentation 1.2 with mmcv 2.1 and its ops ({error}); '
                      f'install them into this environment with `bash tools/install_openmmlab.sh`') from error

from .backbone import LinZooBackbone, zoo_model_names
from .checkpoint import register_checkpoint_safe_globals
from .neck import SimpleFeaturePyramid
from .optim import TimmLayerDecayOptimWrapperConstructor

register_checkpoint_safe_globals()

__all__ = ['LinZooBackbone', 'SimpleFeaturePyramid', 'TimmLayerDecayOptimWrapperConstructor', 'zoo_model_names']
