"""The command-line tools: train (resume, DDP, recipes, bad input), validate, benchmark, flops, visualize_scans.

Training runs use a tiny synthetic ImageFolder (3 classes of 16x16 stripes and squares, plus one file that
is not an image) and the ``test_vmamba`` model, so each run takes seconds on two CPU cores.
"""
import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

import kernels
from kernels.monarch import monarch_matmul
from tools import benchmark, flops, train, validate, visualize_scans
from tools.checkpoint import load_checkpoint
from tools.common import run_cli, zoo_models
from tools.data import ImageFolderDataset, digits_folder

REPO = Path(__file__).resolve().parent.parent
TINY_ARGS = ['--model', 'test_vmamba', '--img-size', '16', '-b', '4', '--epochs', '2', '--workers', '0',
             '--lr', '2e-3', '--warmup-epochs', '1', '--scale', '0.5', '1.0', '--seed', '3']


def make_folder(root: Path, per_class: Dict[str, int] = None, broken: bool = True) -> Path:
    """An ImageNet-layout folder of 16x16 images: vertical stripes, horizontal stripes, a bright square."""
    rng = np.random.default_rng(0)
    for split, count in (per_class or {'train': 12, 'val': 4}).items():
        for label in range(3):
            folder = root / split / f'class{label}'
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
                if label == 0:
                    img[:, ::4] += 150
                elif label == 1:
                    img[::4] += 150
                else:
                    img[4:12, 4:12] += 150
                Image.fromarray(img).save(folder / f'{i:02d}.png')
    if broken:
        (root / 'train' / 'class0' / 'zz_broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'not an image')
    return root


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread here and in the subprocesses: tiny ops run faster, and an in-process run and a
    subprocess run compute bit-identical results (the reduction order depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp('tiny'))


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory) -> Path:
    """One finished run with EMA, mixup/cutmix, gradient accumulation and clipping (shared by several tests)."""
    out = tmp_path_factory.mktemp('run')
    train.main(['--data-dir', str(tiny), *TINY_ARGS, '--output', str(out), '--model-ema', '--model-ema-warmup',
                '--mixup', '0.8', '--cutmix', '1.0', '--grad-accum-steps', '2', '--clip-grad', '1.0',
                '--checkpoint-every', '2'])
    return out


def cli_error(main, argv: List[str], capsys) -> str:
    """Run a tool's main through ``run_cli``; it must exit with status 2; return its message."""
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def assert_same_tensors(a, b, what: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f'{what} differs (max {(a.float() - b.float()).abs().max().item():.3g})'
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same_tensors(a[key], b[key], f'{what}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f'{what}[{i}]')
    else:
        assert a == b, f'{what}: {a!r} != {b!r}'


# ----------------------------------------------------------------------------------------------------------
# data

def test_digits_export_is_a_complete_imagefolder(tmp_path):
    root = digits_folder(tmp_path)
    assert digits_folder(tmp_path) == root  # exported once
    train_set = ImageFolderDataset(root / 'train')
    val_set = ImageFolderDataset(root / 'val', class_to_idx=train_set.class_to_idx)
    assert (len(train_set), len(val_set), train_set.num_classes) == (1437, 360, 10)
    img, target, skipped = val_set[0]
    assert img.size == (32, 32) and img.mode == 'RGB' and 0 <= target < 10 and skipped == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folder left


def test_undecodable_image_is_skipped_with_a_warning_and_counted(tiny, caplog):
    dataset = ImageFolderDataset(tiny / 'train')
    broken = next(i for i, (path, _) in enumerate(dataset.samples) if path.endswith('zz_broken.png'))
    img, target, skipped = dataset[broken]
    assert skipped == 1 and img.size == (16, 16)
    assert 'zz_broken.png' in caplog.text


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny):
    from timm.data import create_transform
    dataset = ImageFolderDataset(tiny / 'train', transform=create_transform(16, is_training=True), seed=1)
    torch.manual_seed(123)
    first = dataset[(0, 5)][0]
    state = torch.get_rng_state()
    torch.rand(7)  # the global stream moves on; the sample does not care
    assert torch.equal(dataset[(0, 5)][0], first)
    assert not torch.equal(dataset[(1, 5)][0], first)  # another epoch, another crop
    torch.manual_seed(123)
    dataset[(0, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # and the global stream is left as it was


# ----------------------------------------------------------------------------------------------------------
# train: recipes and arguments

def test_no_arguments_select_the_digits_recipe():
    args, _ = train.parse_args([])
    assert (args.recipe, args.model, args.data_dir, args.img_size) == ('digits', 'test_vmamba', None, 32)


@pytest.mark.parametrize('recipe', train.list_recipes())
def test_every_recipe_parses_and_the_command_line_overrides_it(recipe):
    args, _ = train.parse_args(['--data-dir', 'x', '--model', 'test_vmamba', '--recipe', recipe, '--lr', '0.123'])
    assert args.lr == 0.123 and args.recipe == recipe


def test_vmamba_recipe_has_the_published_values():
    args, _ = train.parse_args(['--data-dir', 'x', '--model', 'vmamba_tiny_s1l8', '--recipe', 'vmamba'])
    total = 8 * args.batch_size
    assert args.lr_base * total / args.lr_base_size == pytest.approx(1e-3)
    assert (args.opt, args.weight_decay, args.epochs, args.warmup_epochs, args.clip_grad) == \
        ('adamw', 0.05, 300, 20, 5.0)
    assert (args.mixup, args.cutmix, args.smoothing, args.reprob, args.aa) == \
        (0.8, 1.0, 0.1, 0.25, 'rand-m9-mstd0.5-inc1')
    assert args.model_ema and args.model_ema_decay == 0.9999 and args.drop_path is None


def test_unknown_model_and_recipe_are_clear_errors(capsys):
    err = cli_error(train.main, ['--data-dir', 'x', '--model', 'test_vmambaa'], capsys)
    assert "unknown model 'test_vmambaa'" in err and 'test_vmamba' in err
    err = cli_error(train.main, ['--recipe', 'vmamba2'], capsys)
    assert "unknown recipe 'vmamba2'" in err and 'digits' in err and 'vmamba' in err


def test_missing_and_empty_dataset_folders_are_clear_errors(tmp_path, capsys):
    err = cli_error(train.main, ['--data-dir', str(tmp_path / 'nowhere'), *TINY_ARGS], capsys)
    assert 'nowhere does not exist' in err
    (tmp_path / 'empty' / 'train' / 'cats').mkdir(parents=True)
    (tmp_path / 'empty' / 'val').mkdir()
    err = cli_error(train.main, ['--data-dir', str(tmp_path / 'empty'), *TINY_ARGS], capsys)
    assert 'no images in' in err and 'train' in err
    (tmp_path / 'noval' / 'train').mkdir(parents=True)
    err = cli_error(train.main, ['--data-dir', str(tmp_path / 'noval'), *TINY_ARGS], capsys)
    assert "no 'val' sub-folder" in err


def test_an_input_size_the_model_cannot_take_is_a_clear_error(tiny, capsys):
    err = cli_error(train.main, ['--data-dir', str(tiny), *TINY_ARGS, '--model', 'test_vanilla_vmamba',
                                 '--img-size', '18'], capsys)
    assert 'test_vanilla_vmamba cannot take (3, 18, 18) inputs' in err and 'divisible by 4' in err
    assert '--img-size' in err


def test_out_of_memory_names_a_smaller_batch_size(tiny, tmp_path, monkeypatch, capsys):
    def oom(self):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
    monkeypatch.setattr(train.Trainer, 'train_epoch', oom)
    err = cli_error(train.main, ['--data-dir', str(tiny), *TINY_ARGS, '--output', str(tmp_path)], capsys)
    assert 'out of memory' in err and '--batch-size 2' in err


# ----------------------------------------------------------------------------------------------------------
# train: a run, its files, checkpoints and resuming

def test_a_run_writes_checkpoints_logs_and_curves(trained):
    names = {p.name for p in trained.iterdir()}
    assert {'last.pth', 'best.pth', 'args.yaml', 'steps.csv', 'epochs.csv', 'train.log', 'curves.png'} <= names
    assert any(p.name.startswith('events.out.tfevents') for p in (trained / 'tb').iterdir())
    epochs = read_csv(trained / 'epochs.csv')
    steps = read_csv(trained / 'steps.csv')
    state = load_checkpoint(trained)
    assert len(epochs) == 2 and float(epochs[-1]['skipped_images']) >= 1  # the broken file, counted
    # 36 images / batch 4 = 9 batches, 5 updates per epoch with 2 accumulated (the last one alone)
    assert [int(r['update']) for r in steps] == list(range(1, 11)) and state['progress']['updates'] == 10
    assert state['progress']['epoch'] == 2 and state['progress']['step'] == 0
    assert state['model_ema'] is not None and len(state['rng']) == 1
    assert all(math.isfinite(float(r['loss'])) for r in steps)


def test_resume_after_a_kill_mid_epoch_reaches_the_uninterrupted_state(tiny, trained, tmp_path):
    # Killed by SIGKILL right after update 3 of epoch 1; its last checkpoint is update 2 (batch 4 of 9).
    crash = ('import os, signal, sys\n'
             'import tools.train as train\n'
             'step = train.RunLog.step\n'
             'def crash(self, row):\n'
             '    step(self, row)\n'
             '    if row["update"] == 3:\n'
             '        os.kill(os.getpid(), signal.SIGKILL)\n'
             'train.RunLog.step = crash\n'
             'train.main(sys.argv[1:])\n')
    out = tmp_path / 'killed'
    args = ['--data-dir', str(tiny), *TINY_ARGS, '--output', str(out), '--model-ema', '--model-ema-warmup',
            '--mixup', '0.8', '--cutmix', '1.0', '--grad-accum-steps', '2', '--clip-grad', '1.0',
            '--checkpoint-every', '2']
    args[args.index('--workers') + 1] = '1'  # augmentation does not depend on which process loads a sample
    proc = subprocess.run([sys.executable, '-c', crash, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = load_checkpoint(out)
    assert (killed['progress']['epoch'], killed['progress']['step'], killed['progress']['updates']) == (0, 4, 2)
    assert len(read_csv(out / 'steps.csv')) == 3  # update 3 was logged, then lost

    train.main(['--resume', str(out)])

    done, reference = load_checkpoint(out), load_checkpoint(trained)
    for key in ('model', 'model_ema', 'optimizer', 'scaler', 'progress', 'rng'):
        assert_same_tensors(done[key], reference[key], key)
    assert_same_tensors(done['scheduler'], reference['scheduler'], 'scheduler')
    assert [r['loss'] for r in read_csv(out / 'steps.csv')] == [r['loss'] for r in read_csv(trained / 'steps.csv')]
    assert [r['val_top1'] for r in read_csv(out / 'epochs.csv')] == \
        [r['val_top1'] for r in read_csv(trained / 'epochs.csv')]


def test_corrupt_and_mismatched_checkpoints_are_clear_errors(trained, tmp_path, capsys):
    torn = tmp_path / 'torn' / 'last.pth'
    torn.parent.mkdir()
    torn.write_bytes((trained / 'last.pth').read_bytes()[:5000])
    err = cli_error(train.main, ['--resume', str(torn.parent)], capsys)
    assert 'corrupt or unreadable' in err
    torch.save({'weights': torch.zeros(1)}, tmp_path / 'plain.pth')
    err = cli_error(train.main, ['--resume', str(tmp_path / 'plain.pth')], capsys)
    assert 'not a linzoo training checkpoint' in err
    err = cli_error(train.main, ['--resume', str(trained), '--model', 'test_vanilla_vmamba'], capsys)
    assert "model='test_vmamba'" in err and 'test_vanilla_vmamba' in err
    err = cli_error(train.main, ['--resume', str(tmp_path / 'missing')], capsys)
    assert 'does not exist' in err


def test_two_process_ddp_matches_one_process_with_the_same_total_batch(tiny, tmp_path):
    # Two gloo ranks x 4 images see the same samples per step as one process x 8 (DistributedSampler
    # interleaves one permutation), with per-sample seeded augmentation and averaged gradients.
    common = ['--data-dir', str(tiny), *TINY_ARGS, '--checkpoint-every', '0', '--no-tensorboard']
    common[common.index('-b') + 1] = '4'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
                           '-m', 'tools.train', *common, '--output', str(tmp_path / 'ddp')],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = list(common)
    single[single.index('-b') + 1] = '8'
    train.main([*single, '--output', str(tmp_path / 'single')])
    ddp, one = load_checkpoint(tmp_path / 'ddp'), load_checkpoint(tmp_path / 'single')
    assert ddp['args']['world_size'] == 2 and len(ddp['rng']) == 2
    assert ddp['progress']['updates'] == one['progress']['updates'] == 8
    for key, value in one['model'].items():
        torch.testing.assert_close(ddp['model'][key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize('name', [n for n in zoo_models() if n.startswith('test_')])
def test_every_zoo_family_trains(tiny, tmp_path, name):
    row = train.main(['--data-dir', str(tiny), *TINY_ARGS, '--model', name, '--img-size', '32', '--epochs', '1',
                      '--output', str(tmp_path), '--no-tensorboard'])
    assert math.isfinite(row['train_loss']) and math.isfinite(row['val_loss'])


@pytest.mark.parametrize('options', [
    ['--amp', 'fp16', '--channels-last', '--grad-checkpointing'],
    ['--amp', 'bf16', '--torchcompile', 'eager'],
], ids=['fp16-channels-last-checkpointing', 'bf16-compile'])
def test_precision_memory_format_and_compile_options_train(tiny, tmp_path, options):
    # 32 px, not 16: the last stage's 3x3/s2 conv must not see a 1x1 map, whose bfloat16 weight gradient comes
    # back NaN now and then on the CPU (a PyTorch/oneDNN bug in 2.14, reproduced with a bare nn.Conv2d)
    row = train.main(['--data-dir', str(tiny), *TINY_ARGS, '--img-size', '32', '--epochs', '1', *options,
                      '--output', str(tmp_path), '--no-tensorboard'])
    assert math.isfinite(row['train_loss']) and math.isfinite(row['val_loss'])


def test_albumentations_pipeline_trains(tiny, tmp_path):
    row = train.main(['--data-dir', str(tiny), *TINY_ARGS, '--epochs', '1', '--aug-backend', 'albumentations',
                      '--reprob', '0.5', '--output', str(tmp_path), '--no-tensorboard'])
    assert math.isfinite(row['train_loss'])


# ----------------------------------------------------------------------------------------------------------
# validate

def test_validate_a_checkpoint_reproduces_the_training_evaluation(trained, tiny):
    last = read_csv(trained / 'epochs.csv')[-1]
    result = validate.main(['--checkpoint', str(trained / 'last.pth'), '--data-dir', str(tiny), '--workers', '0'])
    assert result['images'] == 12
    assert result['top1'] == pytest.approx(float(last['val_top1']), abs=1e-3)
    assert result['loss'] == pytest.approx(float(last['val_loss']), abs=1e-4)
    ema = validate.main(['--checkpoint', str(trained), '--use-ema', '--data-dir', str(tiny / 'val'), '--workers', '0'])
    assert ema['top1'] == pytest.approx(float(last['ema_val_top1']), abs=1e-3)


def test_validate_plain_weights_through_the_model_filter(trained, tiny, tmp_path, capsys):
    torch.save(load_checkpoint(trained)['model'], tmp_path / 'weights.pth')
    args = ['--model', 'test_vmamba', '--checkpoint', str(tmp_path / 'weights.pth'), '--data-dir', str(tiny),
            '--img-size', '16', '--workers', '0', '--results-file', str(tmp_path / 'results.csv')]
    result = validate.main(args)
    assert result['images'] == 12 and (tmp_path / 'results.csv').exists()
    make_folder(tmp_path / 'four', {'val': 1}, broken=False)
    (tmp_path / 'four' / 'val' / 'class3').mkdir()
    shutil.copy(tmp_path / 'four' / 'val' / 'class0' / '00.png', tmp_path / 'four' / 'val' / 'class3')
    err = cli_error(validate.main, [*args[:4], '--data-dir', str(tmp_path / 'four')], capsys)
    assert 'does not match' in err or 'could not load' in err


# ----------------------------------------------------------------------------------------------------------
# benchmark and flops

def test_benchmark_zoo_and_timm_models_side_by_side(tmp_path):
    results = benchmark.main(['--models', 'test_vmamba,resnet18', '-b', '2', '--img-size', '32', '--device', 'cpu',
                              '--num-warm-iter', '1', '--num-bench-iter', '2', '--out', str(tmp_path / 'bench')])
    assert [(r.model, r.source) for r in results] == [('test_vmamba', 'zoo'), ('resnet18', 'timm')]
    for r in results:
        assert r.infer_img_s > 0 and r.train_img_s > 0 and r.infer_step_ms > 0 and r.train_peak_mib is not None
    table = (tmp_path / 'bench.md').read_text()
    assert '| test_vmamba | zoo |' in table and 'peak RSS' in table
    assert len(read_csv(tmp_path / 'bench.csv')) == 2


def test_benchmark_profile_says_where_the_step_time_goes(capsys):
    results = benchmark.main(['--models', 'test_vmamba', '-b', '2', '--img-size', '32', '--device', 'cpu',
                              '--num-warm-iter', '1', '--num-bench-iter', '1', '--profile', '200'])
    profiles = results[0].profiles
    assert set(profiles) == {'infer', 'train'}
    for kind, scan_op in (('infer', 'linzoo::selective_scan_fwd'), ('train', 'linzoo::selective_scan_bwd')):
        ops = profiles[kind]
        times = [ms for _, ms, _, _ in ops]
        assert times == sorted(times, reverse=True) and times[0] > 0
        total = sum(times)  # every operator is listed, so the shares are of this total
        assert all(abs(share - 100 * ms / total) < 0.5 for _, ms, share, _ in ops)
        # test_vmamba has 5 SS2D blocks: one scan per block and step
        assert [calls for op, _, _, calls in ops if op == scan_op] == [5.0]
    out = capsys.readouterr().out
    assert 'test_vmamba, train step at batch 2' in out and '| linzoo::selective_scan_bwd |' in out


def test_benchmark_unknown_model_suggests_names(capsys):
    err = cli_error(benchmark.main, ['--models', 'resnet18,vmamba_tiny_s1l9'], capsys)
    assert 'vmamba_tiny_s1l8' in err


def test_benchmark_compile_mode_needs_compile(capsys):
    err = cli_error(benchmark.main, ['--models', 'resnet18', '--torchcompile-mode', 'reduce-overhead'], capsys)
    assert '--torchcompile-mode reduce-overhead needs --torchcompile' in err


def test_benchmark_cuda_graph_needs_cuda_and_no_compile(capsys):
    err = cli_error(benchmark.main, ['--models', 'resnet18', '--cuda-graph', '--device', 'cpu'], capsys)
    assert '--cuda-graph needs a CUDA device' in err and 'got device cpu' in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_benchmark_cuda_graph_times_inference_replays():
    results = benchmark.main(['--models', 'test_vmamba,test_vim', '-b', '4', '--img-size', '64', '--amp', 'bf16',
                              '--cuda-graph', '--bench', 'infer', '--num-warm-iter', '2', '--num-bench-iter', '3'])
    assert all(r.infer_img_s > 0 and not r.error for r in results)


def test_flops_apply_the_selective_scan_rule():
    b, d, n, length = 2, 8, 4, 16
    u, delta, z = torch.randn(b, d, length), torch.rand(b, d, length), torch.randn(b, d, length)
    A, B, C, D = -torch.rand(d, n), torch.randn(b, n, length), torch.randn(b, n, length), torch.ones(d)
    counts = flops.count_flops(lambda: kernels.selective_scan(u, delta, A, B, C, D))
    assert counts['scan'] == counts['total'] == 9 * b * length * d * n + b * d * length
    gated = flops.count_flops(lambda: kernels.selective_scan(u, delta, A, B, C, D, z=z))
    assert gated['scan'] == 9 * b * length * d * n + 2 * b * d * length


def test_flops_count_ffts_matmuls_and_monarch_products():
    x = torch.randn(3, 64)
    assert flops.count_flops(lambda: torch.fft.rfft(x))['fft'] == 3 * 1.25 * 64 * 6
    assert flops.count_flops(lambda: torch.fft.fft(x.to(torch.complex64)))['fft'] == 3 * 2.5 * 64 * 6
    assert flops.count_flops(lambda: torch.fft.irfft(torch.fft.rfft(x), n=64))['fft'] == 2 * 3 * 1.25 * 64 * 6
    assert flops.count_flops(lambda: x @ torch.randn(64, 10))['dense'] == 3 * 64 * 10
    w1, w2 = torch.randn(8, 4, 8), torch.randn(4, 16, 8)  # Monarch: (k, q, p) = (8, 4, 8), (l, s, r) = (4, 16, 8)
    assert flops.count_flops(lambda: monarch_matmul(x, w1, w2))['total'] == 3 * (8 * 4 * 8 + 4 * 16 * 8)


def test_flops_of_vmamba_match_the_published_numbers(capsys):
    names = [n for n in flops.PUBLISHED if n.startswith(('vmamba', 'vanilla_vmamba'))]
    rows = flops.main(['--models', ','.join(names)])
    for row in rows:
        params, gflops, _ = row.published
        assert row.device == 'meta', row.model  # counted without running: every layer works on meta tensors
        assert abs(row.flops['total'] - gflops) < 0.05e9, row.model  # the published figures have 1 decimal
        assert abs(row.params - params) < 0.51e6, row.model
    assert '| vmamba_tiny_s1l8 | 224 | 30.25 | 30 | 4.906 | 4.9 |' in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# visualize_scans

def test_visualize_named_scans_as_numbered_steps_and_on_the_photo(tmp_path, capsys):
    visualize_scans.main(['--style', 'steps', '--scans', 'cross,hilbert', '--grid', '4',
                          '--out', str(tmp_path / 'steps.png')])
    visualize_scans.main(['--scans', 'spiral', '--size', '32', '--grid', '6', '--out', str(tmp_path / 'photo.png')])
    for name in ('steps.png', 'photo.png'):
        assert Image.open(tmp_path / name).size[0] > 100
    err = cli_error(visualize_scans.main, ['--scans', 'cross,zigzag'], capsys)
    assert 'zigzag' in err and 'hilbert' in err


def test_wheel_carries_the_recipes_and_configs(tmp_path):
    """A non-editable install has configs/ beside tools/, where tools.train looks for its recipes."""
    root = Path(__file__).resolve().parent.parent
    # Build from a copy: setuptools writes build/ and egg-info into the source tree.
    source = shutil.copytree(root, tmp_path / 'src', ignore=shutil.ignore_patterns(
        '.*', 'build', 'dist', '*.egg-info', '__pycache__', 'out', 'work_dirs'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w',
                    str(tmp_path / 'dist'), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / 'dist').glob('linzoo-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {f'configs/classification/{name}.yaml' for name in train.list_recipes()}
    assert recipes and recipes <= names
    assert {'tools/train.py', 'configs/detection/_base_/mask-rcnn_linzoo_fpn_1x_coco.py'} <= names
    assert not any(name.startswith('tests/') for name in names)


def test_benchmark_rounds_report_medians_and_range():
    results = benchmark.main(['--models', 'test_vmamba,resnet18', '-b', '2', '--img-size', '32', '--device', 'cpu',
                              '--bench', 'train', '--num-warm-iter', '0', '--num-bench-iter', '1', '--rounds', '3'])
    for r in results:
        note = next(n for n in r.notes if n.startswith('train img/s over 3 rounds: '))
        low, high = (float(v) for v in note.rsplit(': ', 1)[1].split('-'))
        assert low <= r.train_img_s <= high and r.infer_img_s is None


def test_combine_rounds_takes_medians_and_the_largest_peak():
    rounds = [benchmark.Result('m', 'zoo', 1.0, 32, batch=4, train_img_s=v, train_step_ms=4000 / v, train_peak_mib=p)
              for v, p in ((100.0, 10.0), (300.0, 12.0), (200.0, 11.0))]
    result = benchmark.combine_rounds(rounds)
    assert (result.train_img_s, result.train_step_ms, result.train_peak_mib) == (200.0, 20.0, 12.0)
    assert result.notes == ['train img/s over 3 rounds: 100-300'] and rounds[0].notes == []
    # An even count: the lower middle round, img/s and step time from the same round.
    result = benchmark.combine_rounds(rounds + [replace(rounds[0], train_img_s=400.0, train_step_ms=10.0)])
    assert (result.train_img_s, result.train_step_ms) == (200.0, 20.0)


def test_build_official_scan_names_a_missing_source(tmp_path):
    # The benchmark's baseline builder refuses a directory that is not a mamba checkout before touching nvcc.
    from tools import build_official_scan
    with pytest.raises(SystemExit, match='selective_scan.cpp'):
        build_official_scan.main(['--src', str(tmp_path), '--out', str(tmp_path / 'build')])
    assert not (tmp_path / 'build').exists()
