"""What the command-line tools share: model lookup, clear errors at the CLI boundary, atomic files, devices.

Every tool reports a problem the user can fix (a missing folder, an unknown model, a batch too large for
the device) as a ``CliError``; ``run_cli`` turns it into one ``error: ...`` line and exit status 2 instead
of a stack trace.
"""
import difflib
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import timm
from torch import nn
from timm.models import model_entrypoint

import backbones  # noqa: F401  (registers the zoo with timm)

__all__ = [
    'CliError', 'run_cli', 'zoo_models', 'check_model_name', 'create_model', 'atomic_write_bytes', 'atomic_torch_save',
    'resolve_device', 'is_oom', 'oom_advice', 'parse_csv_list', 'fmt_count', 'markdown_table',
]

_logger = logging.getLogger(__name__)


class CliError(Exception):
    """A problem with the user's input that a message can explain; shown without a stack trace."""


def run_cli(main: Callable[[Optional[List[str]]], object], argv: Optional[List[str]] = None) -> None:
    """Run a tool's ``main`` and turn a ``CliError`` into ``error: ...`` on stderr and exit status 2."""
    try:
        main(argv)
    except CliError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None


def zoo_models(pattern: str = '') -> List[str]:
    """Names of the models this project registers (``backbones.*`` entrypoints), sorted, filtered by a wildcard."""
    names = timm.list_models(pattern) if pattern else timm.list_models()
    return sorted(n for n in names if model_entrypoint(n).__module__.startswith('backbones.'))


def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it, else raise a ``CliError`` that lists the closest registered names."""
    if timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise CliError(f'unknown model {name!r}{hint} (zoo models: {", ".join(zoo_models())})')


def create_model(name: str, pretrained: bool = False, pretrained_path: Optional[str] = None, exact: bool = False,
                 **kwargs) -> nn.Module:
    """``timm.create_model`` with CLI errors: an unknown name, a bad keyword, a weights file that does not fit.

    Args:
        name: Registered model name.
        pretrained: Load the official weights of the model's ``pretrained_cfg`` (downloads them).
        pretrained_path: Load this weights file instead (an official checkpoint or a state_dict), through the
            model's ``checkpoint_filter_fn`` like ``pretrained=True``.
        exact: The weights must include a classifier for ``num_classes`` (validation). Otherwise, as for
            fine-tuning, a classifier of another size is dropped and the new one keeps its initialisation.
        **kwargs: Model arguments (``num_classes``, ``drop_path_rate``, ``scan``, ...).
    """
    check_model_name(name)
    if pretrained_path:
        if not Path(pretrained_path).is_file():
            raise CliError(f'weights file {pretrained_path} does not exist')
        pretrained = True
        kwargs['pretrained_cfg_overlay'] = dict(file=str(pretrained_path))
    if pretrained and exact and 'num_classes' in kwargs:
        # timm drops the weights' classifier when num_classes differs from the pretrained_cfg's: say so instead
        overlay = kwargs.get('pretrained_cfg_overlay', {})
        kwargs['pretrained_cfg_overlay'] = dict(overlay, num_classes=kwargs['num_classes'])
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise CliError(f'{name}: {e} (check --model-kwargs)') from None
    except (RuntimeError, KeyError, ValueError, OSError, pickle.UnpicklingError) as e:
        if not pretrained:
            raise
        source = pretrained_path or f"{name}'s official weights"
        raise CliError(f'could not load {source} into {name}: {str(e).splitlines()[0]}') from None


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    A reader (or a run resumed after a crash) sees either the old file or the complete new one, never a
    torn write: ``os.replace`` within one directory is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))


def resolve_device(name: Optional[str]) -> torch.device:
    """The requested device, or CUDA when present and else the CPU; a clear error for an unusable one."""
    if not name:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CliError(f'unknown device {name!r} ({e})') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise CliError(f'device {name!r} requested but CUDA is not available; use --device cpu')
    return device


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory failure (CUDA's OutOfMemoryError, or the CPU allocator's)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError's name before torch 2.5
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def oom_advice(batch_size: int, what: str = 'training', accum_steps: int = 0) -> str:
    """An out-of-memory message that names a smaller batch size to try."""
    smaller = max(1, batch_size // 2)
    text = f'out of memory while {what} with --batch-size {batch_size}; try --batch-size {smaller}'
    if accum_steps:
        text += f' --grad-accum-steps {2 * accum_steps} (same total batch)'
    if what == 'training':
        text += ' (or --amp bf16 / --grad-checkpointing to save memory)'
    return text


def parse_csv_list(text: str) -> List[str]:
    """``'a, b,,c'`` -> ``['a', 'b', 'c']``."""
    return [part.strip() for part in text.split(',') if part.strip()]


def fmt_count(value: float, unit: str = '') -> str:
    """12_345_678 -> '12.35M'."""
    for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(value) >= scale:
            return f'{value / scale:.2f}{suffix}{unit}'
    return f'{value:.0f}{unit}'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
