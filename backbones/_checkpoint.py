"""Checkpoint handling shared by the families' ``checkpoint_filter_fn``: unwrapping and the wrong-variant check."""
import re
from typing import Any, Dict, List, Sequence, Tuple

from torch import Tensor, nn

__all__ = ['unwrap_checkpoint', 'fit_state_dict']

# A list of blocks, staged (``stages.2.blocks.0.``) or isotropic (``blocks.0.``): its key prefix and the block index.
_BLOCK = re.compile(r'^((?:stages\.\d+\.)?blocks)\.(\d+)\.')


def unwrap_checkpoint(checkpoint: Dict[str, Any], containers: Sequence[str]) -> Dict[str, Any]:
    """The state_dict inside a training checkpoint, without DDP ``module.`` and MMEngine ``backbone.`` prefixes.

    Args:
        checkpoint: A plain state_dict or a training checkpoint holding one.
        containers: Entries that may hold the state_dict, in order of preference (the official loaders differ:
            some prefer the EMA weights the published accuracies were measured with).

    Returns:
        A new dict (the input is not modified). When some keys start with ``backbone.`` (an MMEngine detection or
        segmentation checkpoint), only those are kept, as the rest belong to the neck and heads.
    """
    for container in containers:
        if isinstance(checkpoint.get(container), dict):
            checkpoint = checkpoint[container]
            break
    # Released checkpoints of nested DDP wrappers carry ``module.module.``.
    state_dict = {re.sub(r'^(module\.)+', '', k): v for k, v in checkpoint.items()}
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    return state_dict


def _block_counts(keys: Sequence[str]) -> Dict[str, int]:
    counts = {}
    for match in filter(None, map(_BLOCK.match, keys)):
        counts[match.group(1)] = max(counts.get(match.group(1), 0), int(match.group(2)) + 1)
    return counts


def _cfg_names(model: nn.Module, field: str) -> Tuple[str, ...]:
    names = getattr(model, 'pretrained_cfg', {}).get(field) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def fit_state_dict(
        state_dict: Dict[str, Tensor],
        model: nn.Module,
        config: str,
        optional: Tuple[str, ...] = (),
        own: Tuple[str, ...] = (),
) -> Dict[str, Tensor]:
    """Fit a converted state_dict to ``model``, raising one error that names every sign of another variant.

    Linear weights are reshaped into the model's 1x1 convs (same element count). The problems collected are: the
    blocks per list of blocks (``stages.i.blocks`` or ``blocks``), tensors of other shapes, keys the checkpoint
    lacks and keys the model lacks; keys of surplus blocks are left to the block counts. Shapes that timm adapts
    after the filter pass: other input channels of ``pretrained_cfg['first_conv']`` and other classes of
    ``pretrained_cfg['classifier']``, which is also optional (absent from a detection backbone, replaced or
    removed by timm for other ``num_classes``).

    Args:
        state_dict: Checkpoint already converted to the model's key names; not modified.
        model: The model to load into.
        config: Short description of the model's configuration for the message (dims, depths, scan), with a hint
            at what the official checkpoints need.
        optional: Key prefixes of parts that the checkpoint or the model may lack (a detection backbone's missing
            final norm, per-stage feature norms of a model without them): dropped from the checkpoint when the
            model lacks them, and not reported when the checkpoint lacks them.
        own: Key prefixes of parts that keep the model's own values when the checkpoint has none of them (the
            per-stage feature norms a classification checkpoint lacks, as in the official detection backbones).

    Returns:
        A new state_dict with the optional keys that the model lacks dropped, the model's own parts added and
        Linear weights reshaped.

    Raises:
        ValueError: The checkpoint does not fit: the message names the mismatched keys and shapes (the first 8 and
            how many more) after ``config``.
    """
    model_state = model.state_dict()
    first_convs = tuple(f'{name}.weight' for name in _cfg_names(model, 'first_conv'))
    classifiers = tuple(f'{name}.' for name in _cfg_names(model, 'classifier'))
    optional += classifiers
    state_dict = {k: v for k, v in state_dict.items() if k in model_state or not k.startswith(optional)}
    for prefix in own:
        if not any(k.startswith(prefix) for k in state_dict):
            state_dict.update({k: v for k, v in model_state.items() if k.startswith(prefix)})

    problems: List[str] = []
    counts, model_counts = _block_counts(list(state_dict)), _block_counts(list(model_state))
    for blocks in sorted(set(counts) | set(model_counts)):
        if counts.get(blocks, 0) != model_counts.get(blocks, 0):
            problems.append(f'{blocks}: {counts.get(blocks, 0)} blocks in the checkpoint vs '
                            f'{model_counts.get(blocks, 0)} in the model')
    fitted = dict(state_dict)
    for key, target in model_state.items():  # in model order: the first mismatch named (often the stem) is the cause
        value = fitted.get(key)
        if value is None or value.shape == target.shape:
            continue
        if value.numel() == target.numel() and target.dim() == 4 and target.shape[-2:] == (1, 1):
            fitted[key] = value.reshape(target.shape)  # Linear (out, in) -> 1x1 conv (out, in, 1, 1)
        # Other input channels (timm adapts the first conv) or classes (timm replaces the head) are fine.
        elif not (key in first_convs and value.shape[:1] + value.shape[2:] == target.shape[:1] + target.shape[2:]
                  ) and not (key.startswith(classifiers) and value.shape[1:] == target.shape[1:]):
            problems.append(f'{key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}')

    def in_common_blocks(key: str) -> bool:  # keys of surplus blocks are covered by the block counts above
        match = _BLOCK.match(key)
        return match is None or int(match.group(2)) < min(counts.get(match.group(1), 0),
                                                          model_counts.get(match.group(1), 0))

    problems += [f'{k}: missing in the checkpoint' for k in model_state
                 if k not in state_dict and in_common_blocks(k) and not k.startswith(optional)]
    problems += [f'{k}: not in the model' for k in state_dict if k not in model_state and in_common_blocks(k)]
    if problems:
        shown = '; '.join(problems[:8]) + (f'; ... ({len(problems) - 8} more)' if len(problems) > 8 else '')
        raise ValueError(f'checkpoint does not match this {type(model).__name__} ({config}): {shown}')
    return fitted
