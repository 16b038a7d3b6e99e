"""Train a zoo (or timm) image classifier on an ImageFolder dataset, from a recipe, resumable after a crash.

With no arguments it trains ``test_vmamba`` on scikit-learn's handwritten digits (exported once as a 32x32
ImageFolder, see ``tools.data``) with the ``digits`` recipe; ImageNet runs name a folder and a recipe:

    python -m tools.train
    python -m tools.train --data-dir /data/imagenet --model vmamba_tiny_s1l8 --recipe vmamba -b 128 --amp bf16
    torchrun --nproc-per-node 8 -m tools.train --data-dir /data/imagenet --model vmamba_tiny_s1l8 --recipe vmamba
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m tools.train ...                        # the same line on every machine, --node-rank 1 on the second
    python -m tools.train --resume out/train/RUN  # continue a killed run where its last checkpoint left it

Built from timm's and PyTorch's parts: timm transforms (RandAugment, random erasing) or albumentations,
timm Mixup/CutMix and losses, ``create_optimizer_v2`` (no-weight-decay sets from ``model.no_weight_decay()``,
layer decay from ``model.group_matcher``), ``create_scheduler_v2``, ``ModelEmaV3``; torch autocast (bf16/fp16
with a GradScaler for fp16), gradient accumulation and clipping, channels-last, ``torch.compile``,
DistributedDataParallel with a DistributedSampler (or timm's RepeatAugSampler).

Recipes are YAML files in ``configs/classification/`` (``--recipe NAME`` or a path): keys are this script's
long option names with '_' for '-', and options given on the command line override them. A run writes to
its output folder: ``last.pth`` (and ``best.pth``), ``args.yaml``, ``steps.csv``, ``epochs.csv``, TensorBoard
events in ``tb/``, ``train.log`` and ``curves.png``.
"""
import argparse
import contextlib
import csv
import difflib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import yaml
from timm.data import Mixup, create_transform, resolve_data_config
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, ParseKwargs, accuracy, dispatch_clip_grad, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from .checkpoint import LAST, checkpoint_path, get_rng_state, load_checkpoint, load_weights, save_checkpoint, \
    set_rng_state
from .common import CliError, check_model_name, create_model, is_oom, oom_advice, resolve_device, run_cli
from .data import ImageFolderDataset, ResumableSampler, digits_folder, split_folder, train_transform

_logger = logging.getLogger('tools.train')

RECIPE_DIR = Path(__file__).resolve().parent.parent / 'configs' / 'classification'
DEFAULT_RECIPE = 'digits'
BEST = 'best.pth'

# Options a resumed run may change; every other one must match the checkpoint (the run continues as started).
_RESUME_MUTABLE = {'resume', 'epochs', 'workers', 'threads', 'pin_mem', 'checkpoint_every', 'output', 'device',
                   'val_batch_size', 'data_dir', 'torchcompile', 'tensorboard'}
# ... and these may change only at an epoch boundary (a mid-epoch position is a count of batches of this size).
_RESUME_EPOCH_BOUNDARY = {'batch_size', 'world_size', 'aug_repeats'}


# ----------------------------------------------------------------------------------------------------------
# Arguments and recipes

def build_parser() -> argparse.ArgumentParser:
    """The command line; each option's dest is also its recipe key."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    flag: Dict[str, Any] = dict(action=argparse.BooleanOptionalAction, default=False)  # --x / --no-x (recipes)
    p.add_argument('--recipe', default=None,
                   help=f'recipe name in configs/classification ({", ".join(list_recipes())}) or a YAML path; '
                        f'without --data-dir the default is {DEFAULT_RECIPE!r}')
    g = p.add_argument_group('data')
    g.add_argument('--data-dir', default=None,
                   help='ImageNet-layout root with train/ and val/ (one folder per class); default: the '
                        'embedded scikit-learn digits')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='val')
    g.add_argument('-j', '--workers', type=int, default=2, help='data-loading processes per training process')
    g.add_argument('--pin-mem', **flag, help='pin CPU batches for faster copies to the GPU')
    g = p.add_argument_group('model')
    g.add_argument('--model', default=None, help='any timm or zoo model name (e.g. vmamba_tiny_s1l8)')
    g.add_argument('--pretrained', **flag, help="start from the model's official weights")
    g.add_argument('--pretrained-path', default=None, help='start from this weights file (official layouts too)')
    g.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    g.add_argument('--drop', type=float, default=None, help='classifier dropout (default: the model default)')
    g.add_argument('--drop-path', type=float, default=None,
                   help="stochastic depth rate (default: the model's own, for the zoo the published per-variant rate)")
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                   help='extra create_model arguments, e.g. scan=hilbert')
    g.add_argument('--grad-checkpointing', **flag, help='recompute activations in backward')
    g.add_argument('--channels-last', **flag, help='NHWC memory format')
    g.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                   help='torch.compile the training model (backend, default inductor)')
    g = p.add_argument_group('optimizer')
    g.add_argument('--opt', default='adamw', help='any timm optimizer (adamw, sgd, lamb, ...)')
    g.add_argument('--lr', type=float, default=None, help='learning rate; default lr-base scaled to the total batch')
    g.add_argument('--lr-base', type=float, default=5e-4, help='learning rate at --lr-base-size images per update')
    g.add_argument('--lr-base-size', type=int, default=512, help='total batch of --lr-base (linear scaling rule)')
    g.add_argument('--weight-decay', type=float, default=0.05)
    g.add_argument('--opt-eps', type=float, default=None)
    g.add_argument('--opt-betas', type=float, nargs=2, default=None)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise lr decay (fine-tuning)')
    g.add_argument('--clip-grad', type=float, default=None, help='clip gradients at this norm (or value)')
    g.add_argument('--clip-mode', default='norm', choices=['norm', 'value', 'agc'])
    g.add_argument('--grad-accum-steps', type=int, default=1, help='batches accumulated per optimizer update')
    g = p.add_argument_group('schedule')
    g.add_argument('--sched', default='cosine', help='timm scheduler: cosine, step, multistep, poly, ...')
    g.add_argument('--epochs', type=int, default=100)
    g.add_argument('--warmup-epochs', type=int, default=5)
    g.add_argument('--warmup-lr', type=float, default=1e-6)
    g.add_argument('--min-lr', type=float, default=1e-5)
    g.add_argument('--cooldown-epochs', type=int, default=0)
    g.add_argument('--warmup-prefix', **flag, help='warmup epochs come before --epochs (Swin)')
    g.add_argument('--sched-on-updates', **flag, help='step the schedule per update, not per epoch')
    g = p.add_argument_group('augmentation and regularisation')
    g.add_argument('--aug-backend', default='timm', choices=['timm', 'albumentations'])
    g.add_argument('--scale', type=float, nargs=2, default=[0.08, 1.0], help='random-resized-crop area range')
    g.add_argument('--ratio', type=float, nargs=2, default=[3 / 4, 4 / 3], help='random-resized-crop aspect range')
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.0)
    g.add_argument('--color-jitter', type=float, default=0.4)
    g.add_argument('--aa', default=None, help="timm auto-augment spec, e.g. 'rand-m9-mstd0.5-inc1'")
    g.add_argument('--train-interpolation', default=None, help="default: the model's (bicubic for the zoo)")
    g.add_argument('--reprob', type=float, default=0.0, help='random erasing probability')
    g.add_argument('--remode', default='pixel', choices=['const', 'rand', 'pixel'])
    g.add_argument('--recount', type=int, default=1)
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0: off)')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0: off)')
    g.add_argument('--mixup-prob', type=float, default=1.0)
    g.add_argument('--mixup-switch-prob', type=float, default=0.5)
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    g.add_argument('--aug-repeats', type=int, default=0, help="repeated augmentation (DeiT's 3); 0: off")
    g.add_argument('--model-ema', **flag, help='keep an exponential moving average of the weights')
    g.add_argument('--model-ema-decay', type=float, default=0.9998)
    g.add_argument('--model-ema-warmup', **flag, help='ramp the EMA decay up (short runs)')
    g = p.add_argument_group('run')
    g.add_argument('-b', '--batch-size', type=int, default=128, help='images per process per batch')
    g.add_argument('--val-batch-size', type=int, default=None, help='default: 2 x --batch-size')
    g.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'], help='autocast precision')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--threads', type=int, default=None,
                   help="intra-op CPU threads per process (default: torch's); with data-loading workers on a small "
                        'machine, fewer threads than cores avoid oversubscription')
    g.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if present); under '
                                                  'torchrun each process takes cuda:LOCAL_RANK')
    g.add_argument('--output', default=None, help='run folder (default: out/train/<time>-<model>)')
    g.add_argument('--resume', default=None, help='checkpoint or run folder to continue (its last.pth)')
    g.add_argument('--checkpoint-every', type=int, default=500,
                   help='also checkpoint every N updates inside an epoch (0: only at epoch ends)')
    g.add_argument('--tensorboard', action=argparse.BooleanOptionalAction, default=True,
                   help='write TensorBoard event files')
    return p


def list_recipes() -> List[str]:
    """Names of the recipes in ``configs/classification``."""
    return sorted(p.stem for p in RECIPE_DIR.glob('*.yaml'))


def load_recipe(name_or_path: str) -> Dict[str, Any]:
    """A recipe's option values, from ``configs/classification/<name>.yaml`` or a YAML path."""
    path = Path(name_or_path)
    if not (path.suffix in ('.yaml', '.yml') or path.exists()):
        path = RECIPE_DIR / f'{name_or_path}.yaml'
    if not path.is_file():
        raise CliError(f'unknown recipe {name_or_path!r}; recipes: {", ".join(list_recipes())} (or a YAML path)')
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CliError(f'recipe {path} is not valid YAML: {e}') from None
    if not isinstance(values, dict):
        raise CliError(f'recipe {path} must be a mapping of option: value, got {type(values).__name__}')
    return values


def _coerce_defaults(parser: argparse.ArgumentParser, values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Check recipe (or checkpoint) keys against the options and convert values as the command line would."""
    actions = {a.dest: a for a in parser._actions if a.dest != 'help'}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise CliError(f'{source}: unknown option(s) {", ".join(unknown)}; keys are the long option names with '
                       f"'_' for '-' (see --help)")
    out = {}
    for key, value in values.items():
        action = actions[key]
        try:
            if value is not None and action.type is not None:
                value = [action.type(v) for v in value] if isinstance(value, (list, tuple)) else action.type(value)
        except (TypeError, ValueError) as e:
            raise CliError(f'{source}: bad value {value!r} for {key} ({e})') from None
        if value is not None and action.choices is not None and value not in action.choices:
            raise CliError(f'{source}: {key} must be one of {", ".join(map(str, action.choices))}, got {value!r}')
        out[key] = value
    return out


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, Optional[Dict[str, Any]]]:
    """Parse the command line over the recipe's (or the resumed checkpoint's) values.

    Returns:
        The arguments and, when resuming, the loaded checkpoint.
    """
    parser = build_parser()
    first = parser.parse_args(argv)
    checkpoint = None
    if first.resume:
        if first.recipe:
            raise CliError('--resume continues a run with its own recipe and options; override single options '
                           'instead of --recipe')
        checkpoint = load_checkpoint(first.resume)
        saved = {k: v for k, v in checkpoint.get('args', {}).items() if k not in ('resume', 'world_size')}
        parser.set_defaults(**_coerce_defaults(parser, saved, f'checkpoint {first.resume}'))
    else:
        recipe = first.recipe or (DEFAULT_RECIPE if first.data_dir is None else None)
        if recipe:
            parser.set_defaults(**_coerce_defaults(parser, load_recipe(recipe), f'recipe {recipe!r}'))
            parser.set_defaults(recipe=recipe)
    args = parser.parse_args(argv)
    if args.model is None:
        raise CliError('--model is required (or a recipe that names one)')
    check_model_name(args.model)
    optimizer = args.opt.lower().removeprefix('lookahead_')  # timm wraps any optimizer in lookahead_<name>
    if optimizer not in list_optimizers():
        close = difflib.get_close_matches(optimizer, list_optimizers(), n=5)
        raise CliError(f'unknown optimizer {args.opt!r}' + (f'; did you mean {", ".join(close)}?' if close else ''))
    for name in ('batch_size', 'grad_accum_steps', 'epochs'):
        if getattr(args, name) < 1:
            raise CliError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    return args, checkpoint


# ----------------------------------------------------------------------------------------------------------
# Distributed setup

@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_name: Optional[str]) -> Tuple[World, torch.device]:
    """Join the process group torchrun describes (RANK, LOCAL_RANK, WORLD_SIZE), or run as one process."""
    size = int(os.environ.get('WORLD_SIZE', '1'))
    if size == 1:
        return World(), resolve_device(device_name)
    world = World(int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), size)
    device = resolve_device(device_name)
    if device.type == 'cuda':
        device = torch.device('cuda', world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return world, device


def _all_sum(values: List[float], world: World, device: torch.device) -> List[float]:
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------------------------------------
# Logging

class RunLog:
    """Per-update and per-epoch CSV files, TensorBoard scalars, and the final curves plot (main process only).

    A resumed run first drops the rows written after its checkpoint, so the files read as one run.
    """
    STEP_FIELDS = ['epoch', 'step', 'update', 'lr', 'loss', 'time_s']

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool, history: List[Dict[str, float]],
                 num_updates: int):
        self.folder, self.enabled = folder, enabled
        self.history = list(history)
        self.writer = None
        if not enabled:
            return
        self._truncate(folder / 'steps.csv', lambda row: int(row['update']) <= num_updates)
        self._rewrite_epochs()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: tensorboard is slow to import
            # purge_step drops events a killed run wrote after its last checkpoint
            self.writer = SummaryWriter(str(folder / 'tb'), purge_step=num_updates or None)

    @staticmethod
    def _truncate(path: Path, keep: Callable[[Dict[str, str]], bool]) -> None:
        if not path.exists():
            return
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [row for row in reader if keep(row)]
        if not fields or not rows:
            path.unlink()
            return
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def _rewrite_epochs(self) -> None:
        path = self.folder / 'epochs.csv'
        if not self.history:
            path.unlink(missing_ok=True)
            return
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    def step(self, row: Dict[str, float]) -> None:
        if not self.enabled:
            return
        path = self.folder / 'steps.csv'
        new = not path.exists()
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.STEP_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            self.writer.add_scalar('train/loss', row['loss'], row['update'])
            self.writer.add_scalar('train/lr', row['lr'], row['update'])

    def epoch(self, row: Dict[str, float], update: int) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        path = self.folder / 'epochs.csv'
        new = not path.exists()
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != 'epoch':
                    self.writer.add_scalar(f'epoch/{key}', value, update)
            self.writer.flush()

    def plot(self) -> Optional[Path]:
        """Loss and accuracy per epoch as ``curves.png``."""
        if not self.enabled or not self.history:
            return None
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        epochs = [r['epoch'] + 1 for r in self.history]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for key, label in (('train_loss', 'train'), ('val_loss', 'val'), ('ema_val_loss', 'val (EMA)')):
            if key in self.history[0]:
                ax_loss.plot(epochs, [r[key] for r in self.history], label=label)
        for key, label in (('val_top1', 'val top-1'), ('val_top5', 'val top-5'), ('ema_val_top1', 'val top-1 (EMA)')):
            if key in self.history[0]:
                ax_acc.plot(epochs, [r[key] for r in self.history], label=label)
        ax_loss.set(xlabel='epoch', ylabel='loss', title='loss')
        ax_acc.set(xlabel='epoch', ylabel='accuracy (%)', title='held-out accuracy')
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = self.folder / 'curves.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------------------------------------
# Training

@dataclass
class Progress:
    """Where the run is: the epoch, batches of it already trained, updates so far, and the running epoch sums."""
    epoch: int = 0
    step: int = 0
    updates: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    skipped: int = 0
    best: Optional[float] = None


class Trainer:
    """One training run: the model and its optimizer state, data, and the loop (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, world: World, device: torch.device,
                 checkpoint: Optional[Dict[str, Any]]):
        self.args, self.world, self.device = args, world, device
        args.world_size = world.size

        # Data folders first: a bad path should fail before a model is built.
        root = Path(args.data_dir) if args.data_dir else digits_folder()
        train_folder = split_folder(root, args.train_split)
        val_folder = split_folder(root, args.val_split)
        self.train_set = ImageFolderDataset(train_folder, seed=args.seed)
        self.val_set = ImageFolderDataset(val_folder, class_to_idx=self.train_set.class_to_idx)
        num_classes = self.train_set.num_classes

        torch.manual_seed(args.seed)  # the same initial weights on every rank and in every run of this seed
        kwargs = dict(args.model_kwargs)
        if args.drop is not None:
            kwargs['drop_rate'] = args.drop
        if args.drop_path is not None:
            kwargs['drop_path_rate'] = args.drop_path
        self.model = create_model(args.model, pretrained=args.pretrained, pretrained_path=args.pretrained_path,
                                  num_classes=num_classes, **kwargs)
        if args.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.model.to(device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)

        cfg_args = {'img_size': args.img_size} if args.img_size else {}
        self.data_config = resolve_data_config(cfg_args, model=self.model)
        interpolation = args.train_interpolation or self.data_config['interpolation']
        self.train_set.transform = train_transform(
            args.aug_backend, self.data_config, args.scale, args.ratio, args.hflip, args.vflip, args.color_jitter,
            args.aa, interpolation, args.reprob, args.remode, args.recount)
        self.val_set.transform = create_transform(**self.data_config)
        self._check_input_size()

        if args.aug_repeats:
            inner = RepeatAugSampler(self.train_set, num_replicas=world.size, rank=world.rank,
                                     num_repeats=args.aug_repeats)
        else:
            inner = DistributedSampler(self.train_set, num_replicas=world.size, rank=world.rank, shuffle=True,
                                       seed=args.seed, drop_last=True)
        if len(inner) < args.batch_size:
            raise CliError(f'the training split has {len(inner)} images per process, fewer than one batch '
                           f'(--batch-size {args.batch_size})')
        self.sampler = ResumableSampler(inner)
        self.steps_per_epoch = len(inner) // args.batch_size
        self.updates_per_epoch = math.ceil(self.steps_per_epoch / args.grad_accum_steps)
        self.train_loader = DataLoader(
            self.train_set, batch_size=args.batch_size, sampler=self.sampler, num_workers=args.workers,
            pin_memory=args.pin_mem, drop_last=True,
            # A private generator: creating the iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(args.seed))
        val_indices = range(world.rank, len(self.val_set), world.size)  # shards without padding duplicates
        self.val_loader = DataLoader(Subset(self.val_set, val_indices), batch_size=args.val_batch_size or
                                     2 * args.batch_size, shuffle=False, num_workers=args.workers,
                                     pin_memory=args.pin_mem)

        total_batch = args.batch_size * args.grad_accum_steps * world.size
        self.lr = args.lr if args.lr is not None else args.lr_base * total_batch / args.lr_base_size
        opt_kwargs = {}
        if args.opt_eps is not None:
            opt_kwargs['eps'] = args.opt_eps
        if args.opt_betas is not None:
            opt_kwargs['betas'] = tuple(args.opt_betas)
        self.optimizer = create_optimizer_v2(
            self.model, opt=args.opt, lr=self.lr, weight_decay=args.weight_decay, momentum=args.momentum,
            layer_decay=args.layer_decay, **opt_kwargs)
        self.scheduler, self.num_epochs = create_scheduler_v2(
            self.optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            warmup_lr=args.warmup_lr, min_lr=args.min_lr, cooldown_epochs=args.cooldown_epochs,
            warmup_prefix=args.warmup_prefix, step_on_epochs=not args.sched_on_updates,
            updates_per_epoch=self.updates_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
        self.autocast_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
        self.ema = ModelEmaV3(self.model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
            if args.model_ema else None

        self.mixup = None
        if args.mixup > 0 or args.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                               switch_prob=args.mixup_switch_prob, label_smoothing=args.smoothing,
                               num_classes=num_classes)
            if args.batch_size % 2:
                raise CliError(f'mixup/cutmix mix pairs of images: --batch-size must be even, got {args.batch_size}')
            self.train_loss_fn: nn.Module = SoftTargetCrossEntropy()
        elif args.smoothing > 0:
            self.train_loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
        else:
            self.train_loss_fn = nn.CrossEntropyLoss()
        self.val_loss_fn = nn.CrossEntropyLoss()

        self.progress = Progress()
        history: List[Dict[str, float]] = []
        self.rng_states: Optional[List[Dict[str, Any]]] = None
        if checkpoint is not None:
            history = self._restore(checkpoint)
        self.folder = self._output_folder()

        train_model: nn.Module = self.model
        if args.torchcompile:
            train_model = torch.compile(train_model, backend=args.torchcompile)
        if world.distributed:
            train_model = DistributedDataParallel(
                train_model, device_ids=[device.index] if device.type == 'cuda' else None)
        self.train_model = train_model

        self.log_handler: Optional[logging.Handler] = None
        if world.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.log_handler = logging.FileHandler(self.folder / 'train.log')
            self.log_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
            logging.getLogger().addHandler(self.log_handler)
            with open(self.folder / 'args.yaml', 'w') as f:
                yaml.safe_dump(self._args_dict(), f, sort_keys=False)
        self.log = RunLog(self.folder, world.main, args.tensorboard, history, self.progress.updates)

    def _check_input_size(self) -> None:
        """One image through the model before anything else: a size the model cannot take is a clear error."""
        x = torch.zeros((1, *self.data_config['input_size']), device=self.device)
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(x)
        except ValueError as e:  # the zoo's models say what they need in a ValueError
            raise CliError(f'{self.args.model} cannot take {tuple(x.shape[1:])} inputs: {e} (see --img-size)') from None
        finally:
            self.model.train()

    # -- checkpoints ------------------------------------------------------------------------------------

    def _args_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.args).items()}

    def _output_folder(self) -> Path:
        if self.args.output:
            return Path(self.args.output)
        if self.args.resume:
            return checkpoint_path(self.args.resume).parent
        return Path('out') / 'train' / f'{time.strftime("%Y%m%d-%H%M%S")}-{self.args.model}'

    def _restore(self, state: Dict[str, Any]) -> List[Dict[str, float]]:
        """Load a checkpoint's states, after checking it belongs to this run."""
        saved = state.get('args', {})
        mid_epoch = state['progress']['step'] > 0
        for key, value in vars(self.args).items():
            if key in _RESUME_MUTABLE or key not in saved or saved[key] == value:
                continue
            if isinstance(value, (list, tuple)) and list(value) == list(saved[key]):
                continue
            if key in _RESUME_EPOCH_BOUNDARY and not mid_epoch:
                continue
            where = ' (it stopped mid-epoch, so the batch layout must match)' if key in _RESUME_EPOCH_BOUNDARY else ''
            raise CliError(f'checkpoint {self.args.resume} was written with {key}={saved[key]!r}, this run has '
                           f'{key}={value!r}{where}; resume with the original value')
        load_weights(self.model, state['model'], f'checkpoint {self.args.resume}')
        if (self.ema is None) != (state.get('model_ema') is None):
            raise CliError(f'checkpoint {self.args.resume}: model EMA {"on" if state.get("model_ema") else "off"} '
                           f'there but {"on" if self.ema else "off"} in this run')
        if self.ema is not None:
            load_weights(self.ema, state['model_ema'], f'checkpoint {self.args.resume} (EMA)')
        try:
            self.optimizer.load_state_dict(state['optimizer'])
        except (ValueError, KeyError) as e:
            raise CliError(f'checkpoint {self.args.resume}: the optimizer state does not fit this model ({e})') \
                from None
        self.scaler.load_state_dict(state['scaler'])
        self.progress = Progress(**state['progress'])
        if saved.get('epochs') == self.args.epochs:
            self.scheduler.load_state_dict(state['scheduler'])
        else:  # a longer or shorter run: the new schedule, at the position reached (timm schedules are stateless)
            self.scheduler.step(self.progress.epoch)
            self.scheduler.step_update(self.progress.updates)
        self.rng_states = state['rng']
        if self.world.main:
            _logger.info(f'resumed {self.args.resume}: epoch {self.progress.epoch + 1}, batch {self.progress.step} '
                         f'of {self.steps_per_epoch}, {self.progress.updates} updates done')
        return state.get('history', [])

    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = get_rng_state()
        if not self.world.distributed:
            return [mine]
        states: List[Any] = [None] * self.world.size
        dist.all_gather_object(states, mine)
        return states

    def save(self, best: bool = False) -> None:
        """Write ``last.pth`` (every rank takes part: the RNG states of all of them are saved)."""
        rng = self._gather_rng()
        if not self.world.main:
            return
        state = {
            'model': self.model.state_dict(),
            'model_ema': self.ema.state_dict() if self.ema is not None else None,
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'scaler': self.scaler.state_dict(),
            'progress': vars(self.progress).copy(),
            'rng': rng,
            'history': self.log.history,
            'args': self._args_dict(),
            'data_config': {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            'class_to_idx': self.train_set.class_to_idx,
        }
        save_checkpoint(state, self.folder / LAST)
        if best:
            tmp = self.folder / f'.{BEST}.tmp'
            shutil.copyfile(self.folder / LAST, tmp)
            os.replace(tmp, self.folder / BEST)

    # -- loop -------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for images, targets, skipped in self.train_loader:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            if self.args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, targets, skipped

    def train_epoch(self) -> None:
        args, p = self.args, self.progress
        accum = args.grad_accum_steps
        last_window = self.steps_per_epoch - (self.steps_per_epoch % accum or accum)  # first batch of the last
        self.train_model.train()
        self.sampler.set_epoch(p.epoch, skip=p.step * args.batch_size)
        bar = tqdm(total=self.steps_per_epoch, initial=p.step, desc=f'epoch {p.epoch + 1}/{self.num_epochs}',
                   disable=None if self.world.main else True, leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        for images, targets, skipped in self._batches():
            step = p.step
            p.skipped += int(skipped.sum())
            if self.mixup is not None:
                images, targets = self.mixup(images, targets)
            window = accum if step < last_window else self.steps_per_epoch - last_window
            update = step + 1 == self.steps_per_epoch or (step + 1) % accum == 0
            sync = self.train_model.no_sync() if self.world.distributed and not update else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss = self.train_loss_fn(self.train_model(images), targets)
                self.scaler.scale(loss / window).backward()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise CliError(f'the loss became {loss_value} at epoch {p.epoch + 1}, batch {step + 1}; lower --lr, '
                               f'add --clip-grad, or use --amp bf16 instead of fp16 (last checkpoint: '
                               f'{self.folder / LAST})')
            p.loss_sum += loss_value * images.shape[0]
            p.loss_count += images.shape[0]
            p.step += 1
            bar.update(1)
            if not update:
                continue
            if args.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                dispatch_clip_grad(self.model.parameters(), args.clip_grad, mode=args.clip_mode)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            p.updates += 1
            if self.ema is not None:
                self.ema.update(self.model, step=p.updates)
            self.scheduler.step_update(num_updates=p.updates)
            lr = self.optimizer.param_groups[0]['lr']
            bar.set_postfix(loss=f'{loss_value:.3f}', lr=f'{lr:.2e}')
            self.log.step(dict(epoch=p.epoch, step=p.step, update=p.updates, lr=lr, loss=loss_value,
                               time_s=round(time.perf_counter() - start, 4)))
            if args.checkpoint_every and p.updates % args.checkpoint_every == 0 and p.step < self.steps_per_epoch:
                self.save()
        bar.close()

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> Dict[str, float]:
        """Loss, top-1 and top-5 (%) of ``model`` on the validation split, summed over all ranks."""
        model.eval()
        k = min(5, self.train_set.num_classes)
        sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, top-1, top-k, images, skipped
        for images, targets, skipped in self.val_loader:
            images, targets = images.to(self.device), targets.to(self.device)
            if self.args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                output = model(images)
            output = output.float()
            top1, topk = accuracy(output, targets, topk=(1, k))
            n = images.shape[0]
            sums = [sums[0] + self.val_loss_fn(output, targets).item() * n, sums[1] + top1.item() * n,
                    sums[2] + topk.item() * n, sums[3] + n, sums[4] + int(skipped.sum())]
        loss, top1, topk, n, skipped = _all_sum(sums, self.world, self.device)
        return dict(loss=loss / n, top1=top1 / n, top5=topk / n, skipped=skipped)

    def fit(self) -> Dict[str, float]:
        """Train to the last epoch; returns the last epoch's row of metrics."""
        if self.rng_states is not None and len(self.rng_states) == self.world.size:
            set_rng_state(self.rng_states[self.world.rank])
        else:  # a fresh run, or a resumed one on another number of processes: new streams, distinct per rank
            random_seed(self.args.seed + 1000 * self.progress.epoch, self.world.rank)  # Python, NumPy, torch
        args, p = self.args, self.progress
        if self.world.main:
            _logger.info(
                f'{args.model} on {self.train_set.folder.parent} ({len(self.train_set)} train / {len(self.val_set)} '
                f'val images, {self.train_set.num_classes} classes, input {self.data_config["input_size"]}), '
                f'recipe {args.recipe or "none"}, {self.world.size} process(es) on {self.device}, total batch '
                f'{args.batch_size * args.grad_accum_steps * self.world.size}, lr {self.lr:.3g}, '
                f'{self.num_epochs} epochs -> {self.folder}')
        row: Dict[str, float] = self.log.history[-1] if self.log.history else {}
        run_start = time.perf_counter()
        while p.epoch < self.num_epochs:
            start = time.perf_counter()
            self.train_epoch()
            metrics = self.evaluate(self.model)
            row = dict(epoch=p.epoch, train_loss=p.loss_sum / max(p.loss_count, 1), val_loss=metrics['loss'],
                       val_top1=metrics['top1'], val_top5=metrics['top5'])
            if self.ema is not None:
                ema_metrics = self.evaluate(self.ema.module)
                row.update(ema_val_loss=ema_metrics['loss'], ema_val_top1=ema_metrics['top1'],
                           ema_val_top5=ema_metrics['top5'])
            row.update(lr=self.optimizer.param_groups[0]['lr'], epoch_time_s=time.perf_counter() - start,
                       skipped_images=p.skipped + metrics['skipped'])
            score = row['ema_val_top1'] if self.ema is not None else row['val_top1']
            best = p.best is None or score > p.best
            if best:
                p.best = score
            self.log.epoch(row, p.updates)
            if self.world.main:
                _logger.info(
                    f'epoch {p.epoch + 1}/{self.num_epochs}: train loss {row["train_loss"]:.4f}, val loss '
                    f'{row["val_loss"]:.4f}, top-1 {row["val_top1"]:.2f}%, top-5 {row["val_top5"]:.2f}%'
                    + (f', EMA top-1 {row["ema_val_top1"]:.2f}%' if self.ema is not None else '')
                    + f', lr {row["lr"]:.2e}, {row["epoch_time_s"]:.1f} s'
                    + (f', skipped {row["skipped_images"]:.0f} undecodable image(s)' if row['skipped_images'] else ''))
            p.epoch, p.step, p.loss_sum, p.loss_count, p.skipped = p.epoch + 1, 0, 0.0, 0, 0
            self.scheduler.step(p.epoch)
            self.save(best=best)
        if self.world.main:
            plot = self.log.plot()
            if row:
                _logger.info(f'done in {time.perf_counter() - run_start:.0f} s: val top-1 {row["val_top1"]:.2f}% '
                             f'(best {p.best:.2f}%); checkpoints, logs and {plot.name if plot else "no plot"} '
                             f'in {self.folder}')
        return row

    def close(self) -> None:
        self.log.close()
        if self.log_handler is not None:
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Train as the command line says; returns the final epoch's metrics."""
    args, checkpoint = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world, device = init_world(args.device)
    logging.basicConfig(level=logging.INFO if world.main else logging.WARNING, format='%(message)s', force=True)
    trainer = None
    try:
        trainer = Trainer(args, world, device, checkpoint)
        return trainer.fit()
    except Exception as e:
        if is_oom(e):
            where = f'; the last checkpoint is in {trainer.folder}' if trainer is not None else ''
            raise CliError(oom_advice(args.batch_size, 'training', args.grad_accum_steps) + where) from None
        raise
    finally:
        if trainer is not None:
            trainer.close()
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    run_cli(main)
