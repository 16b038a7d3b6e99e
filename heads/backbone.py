"""One MMDetection / MMSegmentation backbone for every model of the zoo.

``LinZooBackbone(arch='vmamba_tiny_s1l8')`` builds the zoo model by its timm name and returns its stage (or, for
plain backbones such as Vim and M2-ViT, block) outputs as a tuple of NCHW maps, the contract of mmdet's necks and
mmseg's decode heads. It is registered in mmengine's root ``MODELS`` registry, so configs of both libraries find it
by ``type='LinZooBackbone'``.

Three pitfalls of wrapping timm models in OpenMMLab are avoided on purpose:

* The model is the plain timm model (not a ``features_only`` wrapper, which renames ``stages.0`` to ``stages_0``),
  so classification checkpoints load through the family's own ``checkpoint_filter_fn``.
* mmengine's ``PretrainedInit`` loads with ``strict=False`` and only logs a mismatch, so a checkpoint of another
  variant would leave a randomly initialised backbone; ``init_weights`` here loads strictly and raises instead.
* mmengine calls ``init_weights()`` on every child module, and timm models have an ``init_weights`` of their own
  that re-draws the weights; this module initialises its model once, the timm way, at construction and only loads
  the ``Pretrained`` checkpoint afterwards.
"""
import argparse
import difflib
import inspect
import pickle
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader
from timm.layers import LayerNorm2d
from timm.models import group_parameters
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

import backbones

__all__ = ['LinZooBackbone', 'zoo_model_names']

# Families whose official detection/segmentation backbones add a LayerNorm per output level: the ``outnorm{i}`` of
# VMamba, EfficientVMamba, MSVMamba and Spatial-Mamba, the ``norm{i}`` of mmdet's and mmseg's Swin.
_FAMILIES_WITH_OUT_NORMS = (
    backbones.VMamba, backbones.EfficientVMamba, backbones.MSVMamba, backbones.SpatialMamba,
    backbones.SwinTransformer,
)
_FAMILY_CLASSES = tuple(
    obj for obj in (getattr(backbones, name) for name in backbones.__all__)
    if inspect.isclass(obj) and issubclass(obj, nn.Module) and hasattr(obj, 'forward_intermediates')
)


def zoo_model_names() -> List[str]:
    """Names of the zoo's models among timm's registered models."""
    return [name for name in timm.list_models()
            if timm.models.model_entrypoint(name).__module__.startswith('backbones.')]


def _family_class(arch: str) -> type:
    if not timm.is_model(arch) or not timm.models.model_entrypoint(arch).__module__.startswith('backbones.'):
        names = zoo_model_names()
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
        hint = f'; did you mean {", ".join(close)}?' if close else f'; zoo models: {", ".join(names)}'
        raise ValueError(f'LinZooBackbone: arch must name a model of the zoo (registered by `import backbones`), '
                         f'got {arch!r}{hint}')
    module = timm.models.model_entrypoint(arch).__module__
    return next(cls for cls in _FAMILY_CLASSES if cls.__module__ == module)


@MODELS.register_module()
class LinZooBackbone(BaseModule):
    """A zoo model as an MMDetection / MMSegmentation backbone returning NCHW maps in increasing stride order.

    Levels are the stages of hierarchical models (strides 4, 8, 16, 32) and the blocks of plain models (Vim,
    M2-ViT: every block at the patch stride; pair them with ``SimpleFeaturePyramid``). Stages or blocks after the
    last requested level, the final norm and the classifier are removed, so every parameter takes part in the
    forward pass.

    Args:
        arch: timm name of a zoo model, e.g. ``'vmamba_tiny_s1l8'`` or ``'vim_small_patch16_224'``.
        out_indices: Levels to return, in increasing order (stages 0-3, or block indices of a plain model).
        drop_path_rate: Stochastic depth rate; None keeps the rate the variant is registered with.
        out_norms: Add a LayerNorm per returned level. None does what the family's official detection and
            segmentation backbone does: on for VMamba, EfficientVMamba, MSVMamba, Spatial-Mamba and Swin, off for
            the others. Families with a ``feature_norm`` option get it from the model (so the ``outnorm{i}`` of
            official detection checkpoints load into it); the others get ``out_norms.{i}`` here.
        frozen_stages: Freeze the stem and the first ``frozen_stages`` stages (blocks of a plain model): no
            gradients and evaluation mode. -1 freezes nothing, 0 only the stem.
        norm_eval: Keep the BatchNorm layers in evaluation mode (running statistics frozen) while training.
        with_cp: Gradient checkpointing of the blocks (``set_grad_checkpointing``), trading compute for memory.
        model_kwargs: Further keyword arguments of ``timm.create_model`` for this model, e.g. ``dict(scan='hilbert')``.
        init_cfg: None, or ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` with an official or zoo
            classification checkpoint (or an official detection backbone), loaded through the family's
            ``checkpoint_filter_fn``; a checkpoint that does not fit raises.
    """

    def __init__(
            self,
            arch: str,
            out_indices: Sequence[int] = (0, 1, 2, 3),
            drop_path_rate: Optional[float] = None,
            out_norms: Optional[bool] = None,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            with_cp: bool = False,
            model_kwargs: Optional[Dict[str, Any]] = None,
            init_cfg: Optional[Dict[str, Any]] = None,
    ):
        self._check_init_cfg(init_cfg)
        super().__init__(init_cfg=init_cfg)
        family = _family_class(arch)
        if out_norms is None:
            out_norms = issubclass(family, _FAMILIES_WITH_OUT_NORMS)
        model_norms = out_norms and 'feature_norm' in inspect.signature(family).parameters
        self.arch = arch
        self.model_kwargs = dict(model_kwargs or {})
        if drop_path_rate is not None:
            self.model_kwargs['drop_path_rate'] = drop_path_rate
        if model_norms:
            self.model_kwargs['feature_norm'] = True
        self.body = timm.create_model(arch, pretrained=False, **self.model_kwargs)

        hierarchical = hasattr(self.body, 'stages')
        num_levels = len(self.body.stages) if hierarchical else len(self.body.blocks)
        self.out_indices = self._check_out_indices(out_indices, num_levels, 'stages' if hierarchical else 'blocks')
        # A plain model's blocks all share the width and stride of its last feature_info entry.
        infos = [self.body.feature_info[i] if hierarchical else self.body.feature_info[-1] for i in self.out_indices]
        self.out_channels = tuple(info['num_chs'] for info in infos)
        self.out_strides = tuple(info['reduction'] for info in infos)
        self.body.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        if model_norms:  # the norms of stages that are not returned would get no gradient (and no checkpoint keys)
            for i in set(range(len(self.body.feature_norms))) - set(self.out_indices):
                self.body.feature_norms[i] = nn.Identity()
        own_norms = out_norms and not model_norms
        self.out_norms = nn.ModuleList(LayerNorm2d(c) for c in self.out_channels) if own_norms else None

        if with_cp:
            self.body.set_grad_checkpointing(True)
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        self._frozen_params, self._frozen_modules = self._find_frozen(frozen_stages)
        self._freeze()

    @staticmethod
    def _check_init_cfg(init_cfg: Optional[Dict[str, Any]]) -> None:
        if init_cfg is None:
            return
        if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained' or set(init_cfg) != {
                'type', 'checkpoint'}:
            raise ValueError(f"LinZooBackbone: init_cfg must be None or dict(type='Pretrained', "
                             f'checkpoint=PATH_OR_URL) (the model is initialised the timm way when built), '
                             f'got {init_cfg!r}')

    @staticmethod
    def _check_out_indices(out_indices: Sequence[int], num_levels: int, what: str) -> Tuple[int, ...]:
        indices = tuple(out_indices)
        if not indices or any(not isinstance(i, int) or not 0 <= i < num_levels for i in indices) or list(
                indices) != sorted(set(indices)):
            raise ValueError(f'LinZooBackbone: out_indices must be increasing {what} indices in 0..{num_levels - 1} '
                             f'(this model has {num_levels} {what}), got {tuple(out_indices)}')
        return indices

    def _find_frozen(self, frozen_stages: int) -> Tuple[List[str], List[str]]:
        """Names of the frozen parameters of ``body``, and of its largest submodules holding only frozen ones."""
        # timm's coarse grouping: group 0 is the stem, group i the i-th stage (block of a plain model). Parameters
        # outside the stem and the stages (per-stage feature norms) come last and are never frozen.
        groups = group_parameters(self.body, self.body.group_matcher(coarse=True))
        num_levels = len(self.body.stages if hasattr(self.body, 'stages') else self.body.blocks)
        if not -1 <= frozen_stages <= num_levels:
            raise ValueError(f'LinZooBackbone: frozen_stages must be in -1..{num_levels} for {self.arch} '
                             f'with out_indices {self.out_indices} (-1: none, 0: the stem, i: the stem and i '
                             f'stages or blocks), got {frozen_stages}')
        params = [name for group, names in groups.items() if group <= frozen_stages for name in names]
        frozen = set(params)
        modules = []
        for name, module in self.body.named_modules():
            if any(name.startswith(prefix + '.') for prefix in modules):
                continue
            names = [f'{name}.{p}' if name else p for p, _ in module.named_parameters()]
            if names and all(p in frozen for p in names):
                modules.append(name)
        return params, modules

    def _freeze(self) -> None:
        for name in self._frozen_modules:
            self.body.get_submodule(name).eval()
        for name in self._frozen_params:
            self.body.get_parameter(name).requires_grad = False

    def train(self, mode: bool = True) -> 'LinZooBackbone':
        """Set the training mode, keeping frozen stages and (with ``norm_eval``) BatchNorm layers in eval mode."""
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``, raising when it does not fit this model.

        Without ``init_cfg`` there is nothing to do: the weights were initialised when the model was built.
        """
        if self.init_cfg is not None and not self.is_init:
            self.load_pretrained(self.init_cfg['checkpoint'])
        self._is_init = True

    def load_pretrained(self, checkpoint: str) -> None:
        """Load an official or zoo checkpoint (file or URL) into the model through the family's filter.

        Args:
            checkpoint: Path or URL of a classification checkpoint of this variant (official or saved from the
                timm model), or of an official detection/segmentation backbone.

        Raises:
            ValueError: The checkpoint belongs to another variant (the message names the mismatched keys and
                shapes) or lacks weights of this model.
        """
        logger = MMLogger.get_current_instance()
        try:
            # Official Vim (DeiT-style) checkpoints also pickle their training arguments, a plain namespace.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger=logger)
        except pickle.UnpicklingError as error:
            reason = str(error).split('WeightsUnpickler error: ')[-1].split('\n')[0]
            raise ValueError(f'LinZooBackbone({self.arch!r}): checkpoint {checkpoint} holds Python objects that '
                             f"torch's weights_only loader refuses ({reason}); if you trust the file, save its "
                             f'weights alone and point init_cfg there: '
                             f"torch.save(torch.load(PATH, weights_only=False)['model'], NEW_PATH)") from None
        filter_fn = sys.modules[type(self.body).__module__].checkpoint_filter_fn
        # The filters check the checkpoint against a whole model (block counts, final norm, classifier), so it is
        # converted for an unpruned twin of the body and the body takes its part.
        reference = timm.create_model(self.arch, pretrained=False, **self.model_kwargs)
        try:
            state_dict = filter_fn(state, reference)
        except ValueError as error:
            raise ValueError(f'LinZooBackbone({self.arch!r}): checkpoint {checkpoint} does not fit: {error}') from None
        own = self.body.state_dict()
        missing = sorted(set(own) - set(state_dict))
        if missing:
            raise ValueError(f'LinZooBackbone({self.arch!r}): checkpoint {checkpoint} lacks {len(missing)} weights '
                             f'of this model, e.g. {missing[:8]}; is it a checkpoint of {self.arch}?')
        # Keys beyond the model are those of removed parts: later stages or blocks, the final norm, the classifier.
        self.body.load_state_dict({key: state_dict[key] for key in own}, strict=True)
        logger.info(f'LinZooBackbone({self.arch!r}): loaded {len(own)} tensors from {checkpoint}')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        features = self.body.forward_intermediates(
            x, indices=list(self.out_indices), stop_early=True, intermediates_only=True)
        if self.out_norms is not None:
            features = [norm(feature) for norm, feature in zip(self.out_norms, features)]
        return tuple(features)
