"""What the OpenMMLab commands (``tools.mm_train``, ``mm_test``, ``mm_flops``) share: loading and running a config.

Only these commands import mmengine, MMDetection and MMSegmentation (through ``heads``); the other tools and the
core packages work without them. A config's ``default_scope`` (``mmdet`` or ``mmseg``) decides which library's
registries build its model, datasets and metrics.
"""
import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from .common import CliError

if TYPE_CHECKING:
    from mmengine.config import Config

__all__ = ['require_openmmlab', 'add_config_arguments', 'add_run_arguments', 'load_config', 'prepare_run',
           'build_runner']

SCOPES = ('mmdet', 'mmseg')


def require_openmmlab() -> None:
    """Import ``heads`` (and with it mmengine, mmdet and mmseg); a ``CliError`` saying how to install them if absent."""
    try:
        import heads  # noqa: F401  (registers LinZooBackbone & co.; configs import it too)
    except ImportError as error:
        raise CliError(str(error)) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional ``config`` and ``--cfg-options``, as every OpenMMLab command takes them."""
    parser.add_argument('config', help='an MMDetection or MMSegmentation config (configs/detection/..., '
                                       'configs/segmentation/...)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help="override config keys, e.g. train_dataloader.batch_size=4 'model.backbone.arch=\"...\"' "
                             '(values are parsed as Python literals; lists as a,b or [a,b])')


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--work-dir`` and ``--launcher``, as the commands that drive mmengine's Runner take them."""
    parser.add_argument('--work-dir', default=None,
                        help="where logs and checkpoints go (default: the config's work_dir, else "
                             'work_dirs/CONFIG_NAME)')
    parser.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm'],
                        help='none: one process; pytorch: one process per GPU started by torchrun; slurm: one per '
                             'task started by srun')


def load_config(path: str, options: Optional[List[str]] = None) -> 'Config':
    """Read a config, apply ``KEY=VALUE`` overrides and check that its ``default_scope`` is mmdet or mmseg.

    Args:
        path: The config file.
        options: ``--cfg-options`` items, merged with mmengine's ``DictAction`` parsing.

    Raises:
        CliError: A missing or unreadable file, a malformed override, or a config of another library.
    """
    require_openmmlab()
    from mmengine.config import Config, DictAction

    if not Path(path).is_file():
        raise CliError(f'config {path} does not exist')
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, ImportError, KeyError, FileNotFoundError) as error:
        raise CliError(f'could not read config {path}: {error}') from None
    if options:
        parsed = argparse.Namespace()
        try:
            DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, parsed, options)
        except ValueError as error:
            raise CliError(f'--cfg-options: expected KEY=VALUE items ({error})') from None
        cfg.merge_from_dict(parsed.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise CliError(f'config {path} has default_scope {scope!r}; these commands run MMDetection (mmdet) and '
                       f'MMSegmentation (mmseg) configs')
    return cfg


def prepare_run(cfg: 'Config', config: str, work_dir: Optional[str], launcher: str) -> None:
    """Set the run's ``work_dir`` (the argument, else the config's, else ``work_dirs/CONFIG_NAME``) and launcher."""
    if work_dir:
        cfg.work_dir = work_dir
    elif not cfg.get('work_dir'):
        cfg.work_dir = str(Path('work_dirs') / Path(config).stem)
    started_by = {'pytorch': ('RANK', 'torchrun --nproc-per-node N -m tools.mm_train ...'),
                  'slurm': ('SLURM_PROCID', 'srun ... python -m tools.mm_train ...')}
    if launcher in started_by and started_by[launcher][0] not in os.environ:
        variable, example = started_by[launcher]
        raise CliError(f'--launcher {launcher} needs the processes started by its launcher ({variable} is not set); '
                       f'run e.g. `{example} --launcher {launcher}`')
    cfg.launcher = launcher


def build_runner(cfg: 'Config'):
    """mmengine's ``Runner`` for ``cfg`` (or the config's own ``runner_type``), which imports ``custom_imports``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
