"""Top-1 / top-5 accuracy and loss of a checkpoint, or of official weights, on an ImageFolder.

The images go through the model's own evaluation transform (resize, centre crop ``crop_pct``, interpolation,
mean/std of its ``pretrained_cfg``); a checkpoint of ``tools.train`` brings its model name, classes, model
arguments and input size along, so it needs nothing else:

    python -m tools.validate --checkpoint out/train/RUN/best.pth            # on the embedded digits val split
    python -m tools.validate --checkpoint out/train/RUN --use-ema --data-dir /data/imagenet
    python -m tools.validate --model vmamba_tiny_s1l8 --pretrained --data-dir /data/imagenet
    python -m tools.validate --model vmamba_tiny_s1l8 --checkpoint vssm1_tiny_0230s_ckpt_epoch_264.pth \\
        --data-dir /data/imagenet                                           # an official file, converted on load

Without ``--data-dir`` it uses the embedded digits dataset of ``tools.train``. ``--data-dir`` may be the
dataset root (its ``--split`` folder is used) or the split folder itself.
"""
import argparse
import contextlib
import csv
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from timm.data import create_transform, resolve_data_config
from timm.utils import ParseKwargs, accuracy
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import FORMAT, checkpoint_path, load_weights
from .common import CliError, create_model, is_oom, oom_advice, resolve_device, run_cli
from .data import ImageFolderDataset, digits_folder, split_folder

_logger = logging.getLogger('tools.validate')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default=None, help="model name (default: the checkpoint's)")
    p.add_argument('--checkpoint', default=None,
                   help='a tools.train checkpoint (or run folder), or a weights file (official layouts too)')
    p.add_argument('--use-ema', action='store_true', help="the checkpoint's EMA weights")
    p.add_argument('--pretrained', action='store_true', help="the model's official weights (pretrained_cfg)")
    p.add_argument('--model-kwargs', nargs='*', default=None, action=ParseKwargs,
                   help="extra create_model arguments (default: the checkpoint's)")
    p.add_argument('--data-dir', default=None, help='ImageFolder root or split folder (default: embedded digits)')
    p.add_argument('--split', default='val', help='split sub-folder of --data-dir')
    p.add_argument('-b', '--batch-size', type=int, default=64)
    p.add_argument('-j', '--workers', type=int, default=2)
    p.add_argument('--img-size', type=int, default=None, help="default: the checkpoint's, else the model's")
    p.add_argument('--crop-pct', type=float, default=None, help="default: the model's")
    p.add_argument('--interpolation', default=None, help="default: the model's")
    p.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--device', default=None)
    p.add_argument('--results-file', default=None, help='append the result as a CSV row to this file')
    return p


def read_checkpoint(path: str) -> Tuple[Optional[Dict[str, Any]], Path]:
    """(the training checkpoint, its file), or (None, file) when ``path`` holds plain or official weights."""
    file = checkpoint_path(Path(path))
    if not file.is_file():
        raise CliError(f'checkpoint {file} does not exist')
    try:
        state = torch.load(file, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise CliError(f'checkpoint {file} is corrupt or unreadable ({type(e).__name__}: {e})') from None
    except Exception:  # noqa: BLE001 - objects the safe unpickler refuses (official files): timm's loader decides
        return None, file
    if isinstance(state, dict) and state.get('format') == FORMAT:
        return state, file
    return None, file


def build_model(args: argparse.Namespace, num_classes: int
                ) -> Tuple[nn.Module, Dict[str, Any], Optional[Dict[str, int]], str]:
    """The model with its weights, the eval data config, the class map to follow, and a label for the weights.

    Args:
        args: The command line.
        num_classes: Classes of the dataset (the head of plain or official weights must have as many).
    """
    state, file = read_checkpoint(args.checkpoint) if args.checkpoint else (None, None)
    if state is None:
        if args.model is None:
            raise CliError('--model is required unless --checkpoint is a tools.train checkpoint')
        if args.use_ema:
            raise CliError('--use-ema needs a tools.train checkpoint with EMA weights')
        if args.checkpoint is None and not args.pretrained:
            raise CliError('give --checkpoint FILE or --pretrained (random weights measure nothing)')
        kwargs = dict(args.model_kwargs or {})
        kwargs.setdefault('num_classes', num_classes)
        model = create_model(args.model, pretrained=args.pretrained, pretrained_path=str(file) if file else None,
                             exact=True, **kwargs)
        return model, resolve_data_config({}, model=model), None, str(file) if file else 'official weights'

    saved = state.get('args', {})
    name = args.model or saved.get('model')
    if args.model and saved.get('model') and args.model != saved['model']:
        raise CliError(f'{file} holds a {saved["model"]} checkpoint, not {args.model}')
    if args.pretrained:
        raise CliError('--pretrained and a training checkpoint exclude each other')
    class_to_idx = state['class_to_idx']
    kwargs = dict(saved.get('model_kwargs') or {}) if args.model_kwargs is None else dict(args.model_kwargs)
    model = create_model(name, num_classes=len(class_to_idx), **kwargs)
    if args.use_ema:
        if state.get('model_ema') is None:
            raise CliError(f'{file} has no EMA weights (trained without --model-ema)')
        # ModelEmaV3 keeps the averaged model as its 'module'
        weights = {k[len('module.'):]: v for k, v in state['model_ema'].items() if k.startswith('module.')}
    else:
        weights = state['model']
    load_weights(model, weights, f'checkpoint {file}')
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in state.get('data_config', {}).items()}
    data_config = data_config or resolve_data_config({}, model=model)
    label = f'{file}{" (EMA)" if args.use_ema else ""}, epoch {state["progress"]["epoch"]}'
    return model, data_config, class_to_idx, label


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Validate as the command line says; returns the metrics."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', force=True)
    device = resolve_device(args.device)
    root = Path(args.data_dir) if args.data_dir else digits_folder()
    folder = split_folder(root, args.split, allow_root=args.data_dir is not None)
    dataset = ImageFolderDataset(folder)
    model, data_config, class_to_idx, label = build_model(args, dataset.num_classes)
    if class_to_idx is not None:  # a training checkpoint: label the images as training did
        dataset = ImageFolderDataset(folder, class_to_idx=class_to_idx)
    overrides = {k: v for k, v in (('crop_pct', args.crop_pct), ('interpolation', args.interpolation)) if v}
    if args.img_size:
        overrides['input_size'] = (data_config['input_size'][0], args.img_size, args.img_size)
    data_config = dict(data_config, **overrides)
    dataset.transform = create_transform(**data_config)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        pin_memory=device.type == 'cuda')

    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if args.amp == 'bf16' else torch.float16) \
        if args.amp != 'none' else contextlib.nullcontext()
    loss_fn = nn.CrossEntropyLoss(reduction='sum')
    k = min(5, dataset.num_classes)
    loss_sum = top1_sum = topk_sum = 0.0
    count = skipped = 0
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for images, targets, skips in tqdm(loader, desc='validate', disable=None, leave=False):
                images, targets = images.to(device), targets.to(device)
                if args.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    output = model(images)
                output = output.float()
                top1, topk = accuracy(output, targets, topk=(1, k))
                n = images.shape[0]
                loss_sum += loss_fn(output, targets).item()
                top1_sum += top1.item() * n
                topk_sum += topk.item() * n
                count += n
                skipped += int(skips.sum())
    except Exception as e:
        if is_oom(e):
            raise CliError(oom_advice(args.batch_size, 'validating')) from None
        raise
    elapsed = time.perf_counter() - start
    result = {
        'model': getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__),
        'weights': label, 'data': str(folder), 'images': count, 'top1': round(top1_sum / count, 3),
        f'top{k}': round(topk_sum / count, 3), 'loss': round(loss_sum / count, 4),
        'input_size': list(data_config['input_size']), 'crop_pct': data_config.get('crop_pct'),
        'interpolation': data_config.get('interpolation'), 'skipped_images': skipped,
        'images_per_s': round(count / elapsed, 1),
    }
    _logger.info(f'{result["model"]} ({label}) on {folder}: top-1 {result["top1"]:.2f}%, top-{k} '
                 f'{result[f"top{k}"]:.2f}%, loss {result["loss"]:.4f} over {count} images'
                 + (f', skipped {skipped} undecodable image(s)' if skipped else ''))
    print(json.dumps(result))
    if args.results_file:
        path = Path(args.results_file)
        new = not path.exists()
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(result))
            if new:
                writer.writeheader()
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in result.items()})
    return result


if __name__ == '__main__':
    run_cli(main)
