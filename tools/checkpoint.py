"""Training checkpoints: everything needed to continue a run exactly, written atomically, read with clear errors.

A checkpoint is a dict tagged ``format: 'linzoo-train-1'`` holding the model (unwrapped), the EMA model, the
optimizer, scheduler and grad-scaler states, every rank's RNG states (Python, NumPy, torch CPU and CUDA),
the epoch and the number of batches already trained in it, the update count, the metric history and the
run's arguments. It is read with ``torch.load(weights_only=True)``: loading one never runs pickled code.
"""
import random
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch import nn

from .common import CliError, atomic_torch_save

__all__ = ['FORMAT', 'save_checkpoint', 'load_checkpoint', 'load_weights', 'get_rng_state', 'set_rng_state',
           'checkpoint_path']

FORMAT = 'linzoo-train-1'
LAST = 'last.pth'


def checkpoint_path(path: Path) -> Path:
    """A checkpoint file, or the ``last.pth`` of a run folder."""
    path = Path(path)
    return path / LAST if path.is_dir() else path


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` (tagged with the format) to ``path`` atomically: write a temporary file, then rename."""
    atomic_torch_save(dict(state, format=FORMAT), path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a training checkpoint written by ``save_checkpoint``; a clear ``CliError`` for anything else.

    Args:
        path: The file, or a run folder (its ``last.pth``).
    """
    file = checkpoint_path(path)
    if not file.exists():
        where = f' (no {LAST} in the run folder {path})' if Path(path).is_dir() else ''
        raise CliError(f'checkpoint {file} does not exist{where}')
    try:
        state = torch.load(file, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CliError(f'checkpoint {file} is corrupt or unreadable ({type(e).__name__}: '
                       f'{str(e).splitlines()[0] if str(e) else ""})') from None
    except Exception as e:  # noqa: BLE001 - the unpickler's refusals (UnpicklingError ...) are all 'not ours'
        raise CliError(f'{file} is not a linzoo training checkpoint ({type(e).__name__}: '
                       f'{str(e).splitlines()[0] if str(e) else ""})') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        found = state.get('format') if isinstance(state, dict) else type(state).__name__
        raise CliError(f'{file} is not a linzoo training checkpoint (format {found!r}, expected {FORMAT!r}); '
                       f'plain weights load with tools.validate --checkpoint or train --pretrained-path')
    return state


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(strict=True)`` with an error that lists what does not match and where it came from."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def first(items: List[str]) -> str:
            return ', '.join(items[:5]) + (f' (+{len(items) - 5} more)' if len(items) > 5 else '')
        parts = [f'{len(missing)} missing ({first(missing)})' if missing else '',
                 f'{len(unexpected)} unexpected ({first(unexpected)})' if unexpected else '',
                 f'{len(shapes)} with another shape ({first(shapes)})' if shapes else '']
        raise CliError(f'{source} does not match the model {type(model).__name__}: '
                       + '; '.join(p for p in parts if p))
    model.load_state_dict(state_dict, strict=True)


def get_rng_state() -> Dict[str, Any]:
    """This process's RNG states, as plain types and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        'python': random.getstate(),
        'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Optional[Dict[str, Any]]) -> None:
    """Restore what ``get_rng_state`` returned."""
    if not state:
        return
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])
