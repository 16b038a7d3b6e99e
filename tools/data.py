"""Data for the tools: ImageFolder datasets with reproducible augmentation, resumable sampling, the embedded set.

* ``ImageFolderDataset`` reads an ImageNet-layout folder found by timm's folder scanner. It decodes
  every image fully inside a guard, so an unreadable file is skipped with a warning that names it and is
  counted (the next readable image of the folder takes its place, keeping batch shapes fixed for DDP,
  mixup and torch.compile).
* Augmentation is seeded per sample from (seed, epoch, index): the same sample gets the same crop, flip and
  erasing whichever worker loads it and whether or not the run was interrupted and resumed. That, plus
  ``ResumableSampler`` (any sampler with ``set_epoch``, started part-way into an epoch), is what lets a
  killed run continue to exactly the state of an uninterrupted one.
* ``digits_folder`` exports scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes) once as
  a 32x32 RGB ImageFolder with a stratified 80/20 train/val split: a real image dataset that needs no
  download, for the default training run and the tests.
"""
import contextlib
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.readers.reader_image_folder import find_images_and_targets
from timm.data.readers.img_extensions import get_img_extensions
from torch.utils.data import Dataset, Sampler

from .common import CliError

__all__ = [
    'cache_dir', 'digits_folder', 'split_folder', 'ImageFolderDataset', 'ResumableSampler', 'train_transform',
    'AlbumentationsTransform',
]

_logger = logging.getLogger(__name__)
SampleKey = Union[int, Tuple[int, int]]

DIGITS_SIZE = 32


def cache_dir() -> Path:
    """Where exported datasets live: ``$LINZOO_CACHE``, else ``$XDG_CACHE_HOME/linzoo``, else ``~/.cache/linzoo``."""
    if os.environ.get('LINZOO_CACHE'):
        return Path(os.environ['LINZOO_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'linzoo'


def digits_folder(root: Optional[Path] = None) -> Path:
    """Export scikit-learn's digits as ``<root>/digits-32/{train,val}/<digit>/<index>.png`` once; return that path.

    The folder is written under a temporary name and renamed into place, so a crash (or another process
    exporting at the same time, e.g. the other DDP ranks) never leaves a half-written dataset behind.
    """
    root = Path(root) if root is not None else cache_dir()
    target = root / f'digits-{DIGITS_SIZE}'
    if (target / 'train').is_dir() and (target / 'val').is_dir():
        return target
    from sklearn.datasets import load_digits  # imported here: only the embedded dataset needs scikit-learn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.digits-', dir=root))
    try:
        for split, indices in (('train', train_idx), ('val', val_idx)):
            for i in indices:
                pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
                img = Image.fromarray(pixels, mode='L').resize((DIGITS_SIZE, DIGITS_SIZE), Image.BICUBIC)
                folder = tmp / split / str(digits.target[i])
                folder.mkdir(parents=True, exist_ok=True)
                img.convert('RGB').save(folder / f'{i:04d}.png')
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed its complete copy into place first
            if not (target / 'train').is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _logger.info(f'exported the scikit-learn digits as an ImageFolder at {target}')
    return target


def split_folder(root: Path, split: str, allow_root: bool = False) -> Path:
    """``root/split`` of an ImageNet-layout dataset, with a clear error when the folder is missing.

    Args:
        root: Dataset root holding ``train/`` and ``val/`` (each with one folder per class).
        split: Sub-folder name.
        allow_root: Accept ``root`` itself when it has no ``split`` sub-folder (a folder of class folders).
    """
    root = Path(root)
    if not root.exists():
        raise CliError(f'dataset folder {root} does not exist')
    if not root.is_dir():
        raise CliError(f'dataset path {root} is not a folder')
    folder = root / split
    if folder.is_dir():
        return folder
    if allow_root:
        return root
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise CliError(f'dataset folder {root} has no {split!r} sub-folder (found: {", ".join(found) or "nothing"}); '
                   f'expected the ImageNet layout {root}/{split}/<class>/<image>')


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global RNGs for one sample's transform, then restore them.

    Restoring keeps the main process's streams (dropout, mixup) untouched when loading without workers.
    """
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class ImageFolderDataset(Dataset):
    """An ImageNet-layout folder (``<folder>/<class>/<image>``), scanned by timm's folder reader.

    Items are ``(image, target, skipped)``: ``skipped`` counts unreadable files passed over to produce this
    item. Keys are an index, or ``(epoch, index)`` from ``ResumableSampler`` to seed the augmentation of that
    sample from ``(seed, epoch, index)``.

    Args:
        folder: The split folder (one sub-folder per class).
        transform: Image transform (PIL image in).
        class_to_idx: Class-name -> index map to follow (a validation split uses the training split's);
            classes of ``folder`` outside it are an error.
        seed: Base seed of the per-sample augmentation.
    """

    def __init__(
            self,
            folder: Path,
            transform: Optional[Callable[[Image.Image], Any]] = None,
            class_to_idx: Optional[Dict[str, int]] = None,
            seed: int = 0,
    ):
        folder = Path(folder)
        if not folder.is_dir():
            raise CliError(f'dataset folder {folder} does not exist')
        samples, found = find_images_and_targets(str(folder))
        if not samples:
            raise CliError(f'no images in {folder}: expected one sub-folder per class holding '
                           f'{"/".join(get_img_extensions())} files')
        if class_to_idx is not None:
            unknown = sorted(set(found) - set(class_to_idx))
            if unknown:
                raise CliError(f'{folder} has classes the training split lacks: {", ".join(unknown[:10])}'
                               f'{" ..." if len(unknown) > 10 else ""}')
            name_of = {index: name for name, index in found.items()}
            samples = [(path, class_to_idx[name_of[target]]) for path, target in samples]
        self.folder = folder
        self.samples: List[Tuple[str, int]] = samples
        self.class_to_idx: Dict[str, int] = dict(class_to_idx if class_to_idx is not None else found)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.class_to_idx)

    def _load(self, index: int) -> Tuple[Image.Image, int, int]:
        for skipped in range(len(self)):
            path, target = self.samples[(index + skipped) % len(self)]
            try:
                with Image.open(path) as img:
                    return img.convert('RGB'), target, skipped  # convert() decodes every pixel
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's decode errors
                _logger.warning(f'skipped undecodable image {path}: {e}')
        raise CliError(f'no image under {self.folder} could be decoded')

    def __getitem__(self, key: SampleKey) -> Tuple[Any, int, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        img, target, skipped = self._load(index)
        if self.transform is None:
            return img, target, skipped
        if epoch is None:
            return self.transform(img), target, skipped
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        if hasattr(self.transform, 'reseed'):
            self.transform.reseed(seed)
        with _seeded(seed):
            return self.transform(img), target, skipped


class ResumableSampler(Sampler):
    """Wrap a sampler with ``set_epoch`` (DistributedSampler, timm's RepeatAugSampler) to start mid-epoch.

    Yields ``(epoch, index)`` keys, so the dataset can seed each sample's augmentation; ``set_epoch(e, skip)``
    drops the first ``skip`` indices of epoch ``e``'s order (the batches a resumed run already trained on).
    """

    def __init__(self, sampler: Sampler):
        super().__init__()
        if not hasattr(sampler, 'set_epoch'):
            raise TypeError(f'ResumableSampler needs a sampler with set_epoch(), got {type(sampler).__name__}')
        self.sampler = sampler
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield self.epoch, int(index)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class AlbumentationsTransform:
    """An albumentations pipeline as an image transform: PIL image in, normalised CHW float tensor out.

    albumentations keeps its own random generators, so ``reseed`` (called per sample by
    ``ImageFolderDataset``) seeds them for reproducible, resumable augmentation.
    """

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def reseed(self, seed: int) -> None:
        self.pipeline.set_random_seed(seed)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.pipeline(image=np.asarray(img))['image']

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.pipeline!r})'


def _albumentations_pipeline(
        size: Tuple[int, int], scale: Sequence[float], ratio: Sequence[float], hflip: float, vflip: float,
        color_jitter: float, interpolation: str, mean: Sequence[float], std: Sequence[float], re_prob: float,
        re_mode: str,
) -> AlbumentationsTransform:
    # The library checks PyPI for a newer release on import unless told not to: no network at train time.
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    try:
        import albumentations as A
        import cv2
        from albumentations.pytorch import ToTensorV2
    except ImportError as e:
        raise CliError(f'--aug-backend albumentations needs albumentations ({e}); '
                       f"pip install 'linzoo[albumentations]'") from None
    flags = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR, 'bicubic': cv2.INTER_CUBIC}
    if interpolation not in flags:
        raise CliError(f'--train-interpolation {interpolation!r} is not available with --aug-backend '
                       f'albumentations; use one of {", ".join(flags)}')
    steps = [A.RandomResizedCrop(size=size, scale=tuple(scale), ratio=tuple(ratio), interpolation=flags[interpolation])]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(A.VerticalFlip(p=vflip))
    if color_jitter > 0:
        steps.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                   hue=0.0, p=1.0))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    if re_prob > 0:
        # Erasing after normalisation, like timm: 'const' fills zeros (the mean), 'pixel' per-pixel noise.
        steps.append(A.Erasing(p=re_prob, fill=0.0 if re_mode == 'const' else 'random'))
    steps.append(ToTensorV2())
    return AlbumentationsTransform(A.Compose(steps))


def train_transform(backend: str, data_config: Dict[str, Any], scale: Sequence[float], ratio: Sequence[float],
                    hflip: float, vflip: float, color_jitter: float, auto_augment: Optional[str],
                    interpolation: str, re_prob: float, re_mode: str, re_count: int) -> Callable:
    """The training transform: timm's ``create_transform`` (default) or an albumentations pipeline.

    Args:
        backend: 'timm' or 'albumentations'.
        data_config: timm data config of the model (``input_size``, ``mean``, ``std``).
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Horizontal flip probability.
        vflip: Vertical flip probability.
        color_jitter: Brightness/contrast/saturation jitter strength (0 for none).
        auto_augment: timm RandAugment/AutoAugment spec (e.g. 'rand-m9-mstd0.5-inc1'), timm backend only.
        interpolation: Resize interpolation ('random' picks bilinear or bicubic per image, timm only).
        re_prob: Random erasing probability.
        re_mode: Random erasing fill ('const', 'rand', 'pixel').
        re_count: Random erasing regions per image (timm only).
    """
    size = tuple(data_config['input_size'][1:])
    if backend == 'timm':
        return create_transform(
            size, is_training=True, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip, vflip=vflip,
            color_jitter=color_jitter, auto_augment=auto_augment, interpolation=interpolation,
            mean=data_config['mean'], std=data_config['std'], re_prob=re_prob, re_mode=re_mode, re_count=re_count)
    if backend == 'albumentations':
        if auto_augment:
            raise CliError(f'--aa {auto_augment!r} (timm RandAugment/AutoAugment) has no albumentations '
                           'counterpart here; use --aug-backend timm or --aa none')
        return _albumentations_pipeline(size, scale, ratio, hflip, vflip, color_jitter, interpolation,
                                        data_config['mean'], data_config['std'], re_prob, re_mode)
    raise CliError(f"--aug-backend must be 'timm' or 'albumentations', got {backend!r}")
