"""timm-style backbone families; importing the package registers every model with timm.

``backbones.ssm`` holds the selective-SSM core that the SSM families share.
"""
from .efficientvmamba import EfficientVMamba
from .groupmamba import GroupMamba
from .m2vit import M2ViT
from .msvmamba import MSVMamba
from .soft import Soft
from .spatialmamba import SpatialMamba
from .ssm import SelectiveSSM, ssm_no_weight_decay
from .swin import SwinTransformer
from .vim import Vim
from .vmamba import VMamba

__all__ = [
    'EfficientVMamba', 'GroupMamba', 'M2ViT', 'MSVMamba', 'SelectiveSSM', 'Soft', 'SpatialMamba', 'SwinTransformer',
    'VMamba', 'Vim', 'ssm_no_weight_decay',
]
