"""Layer-wise learning-rate decay for any zoo backbone, driven by timm's ``group_matcher``."""
import fnmatch
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from timm.models import group_parameters

from .backbone import LinZooBackbone

__all__ = ['TimmLayerDecayOptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TimmLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus layer-wise lr decay and the backbone's no-weight-decay parameters.

    mmdet's and mmseg's layer-decay constructors only know ConvNeXt, BEiT and MAE parameter names; this one asks the
    backbone: timm's fine ``group_matcher`` orders the backbone's parameters from the stem (layer 0) to the last
    block, and the neck and heads form the top layer. A parameter of layer i of L gets
    ``lr = base_lr * lr_mult * layer_decay_rate ** (L - i)``, where ``lr_mult`` comes from ``paramwise_cfg``
    (``custom_keys``, ``bias_lr_mult``, ...), so the top layer trains at the full rate. The lr is written into each
    parameter group, which is what mmengine's schedulers scale. Weight decay is 0 for the backbone's
    ``no_weight_decay()`` names (SSM ``A_logs``/``Ds``/dt biases, position embeddings, ...) and for every 1-D
    parameter (norms, biases), as in timm; ``paramwise_cfg`` decides it for the rest.

    ``paramwise_cfg`` takes mmengine's keys plus ``layer_decay_rate`` (required, in (0, 1]; 1 disables the decay but
    keeps the weight-decay rules). The model's ``backbone`` must be a ``LinZooBackbone`` or a timm model.

    Example::

        optim_wrapper = dict(
            constructor='TimmLayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(layer_decay_rate=0.92))
    """

    def __init__(self, optim_wrapper_cfg: Dict[str, Any], paramwise_cfg: Optional[Dict[str, Any]] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        rate = paramwise_cfg.pop('layer_decay_rate', None)
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'TimmLayerDecayOptimWrapperConstructor: paramwise_cfg.layer_decay_rate must be a number '
                             f'in (0, 1], got {rate!r}')
        self.layer_decay_rate = float(rate)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        # The default constructor skips its per-parameter path when paramwise_cfg is empty; ours always needs it.
        self.paramwise_cfg.setdefault('custom_keys', {})
        return super().__call__(model)

    def add_params(
            self,
            params: List[Dict[str, Any]],
            module: nn.Module,
            prefix: str = '',
            is_dcn_module: Optional[Union[int, float]] = None,
    ) -> None:
        super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
        if prefix:  # the recursion into submodules; the top-level call below sees every group
            return
        layers, num_layers, no_decay = _backbone_layers(module)
        names = {id(param): name for name, param in module.named_parameters()}
        for group in params:
            (param,) = group['params']
            name = names[id(param)]
            layer = layers.get(name, num_layers)
            group['lr'] = group.get('lr', self.base_lr) * self.layer_decay_rate ** (num_layers - layer)
            if self.base_wd is not None and (name in no_decay or param.ndim <= 1):
                group['weight_decay'] = 0.
        print_log(f'TimmLayerDecayOptimWrapperConstructor: {num_layers + 1} layers, decay rate '
                  f'{self.layer_decay_rate}', logger='current')


def _backbone_layers(model: nn.Module) -> Tuple[Dict[str, int], int, Set[str]]:
    """(layer of each backbone parameter by full name, number of backbone layers, full names without decay)."""
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, LinZooBackbone):
        body, prefix = backbone.body, 'backbone.body.'
    elif backbone is not None and hasattr(backbone, 'group_matcher'):
        body, prefix = backbone, 'backbone.'
    else:
        raise TypeError(f'TimmLayerDecayOptimWrapperConstructor needs a model whose backbone is a LinZooBackbone or '
                        f'a timm model with group_matcher(); {type(model).__name__}.backbone is '
                        f'{type(backbone).__name__}')
    layer_of = group_parameters(body, body.group_matcher(coarse=False), reverse=True)
    num_layers = max(layer_of.values()) + 1
    patterns = body.no_weight_decay() if hasattr(body, 'no_weight_decay') else set()
    no_decay: Set[str] = {
        prefix + name for name, _ in body.named_parameters()
        if name in patterns or any(fnmatch.fnmatch(name, p) for p in patterns if '*' in p)
    }
    return {prefix + name: layer for name, layer in layer_of.items()}, num_layers, no_decay
