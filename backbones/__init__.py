"""timm-style backbone families; importing the package registers every model with timm.

``backbones.ssm`` holds the selective-SSM core that the SSM families share.
"""
from .ssm import SelectiveSSM, ssm_no_weight_decay

__all__ = ['SelectiveSSM', 'ssm_no_weight_decay']
