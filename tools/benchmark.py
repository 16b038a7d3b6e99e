"""Inference and training throughput, step time and peak memory of zoo and timm models, side by side.

Follows the method of timm's ``benchmark.py``: one random batch of the model's test input size (or
``--img-size``) on the device; ``--num-warm-iter`` untimed steps, then ``--num-bench-iter`` timed ones.
Inference runs ``model.eval()`` under ``torch.inference_mode()`` and is timed over the whole loop (images/s =
images / wall time, the device synchronised at both ends). A training step is forward + cross-entropy on
random targets + backward + ``optimizer.step()`` (``--opt``, lr 1e-4), each step timed between
synchronisations with ``zero_grad`` outside the timing. When a batch does not fit, the batch is lowered
with timm's ``decay_batch_step`` and retried (``--no-retry`` to report the failure instead).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only, allocator caches excluded); on the
CPU the peak resident set size sampled every 2 ms while the model runs, above the size before it was built
(an estimate of the same quantity that includes allocator and library overheads).

``--cuda-graph`` times inference as replays of one CUDA graph captured from the warmed-up forward: the host's
launch work (Python, kernel launches) then costs nothing per step, so the number measures the device alone and
does not move with the host's CPU load (an eager forward of many small kernels is bound by the CPU on a slow or
busy host). Training is timed eagerly either way.

``--rounds R`` measures every model R times, the models in turn (round-robin), and reports the median of the
rounds with their range in the notes: the training steps of the SSM models are partly bound by CPU time, so a
host's load drifts over a run, and round-robin rounds let timm's rows of the same run share that drift.

``--profile N`` then runs 3 more steps of each kind under ``torch.profiler`` and prints where a step's time
goes: the N operators with the most device time (CUDA) or CPU time per step, each with the kernels it launched
itself (custom ops such as ``linzoo::selective_scan_bwd`` included), its share of the step and its calls per step.

    python -m tools.benchmark --models vmamba_tiny_s1l8,swin_tiny_patch4_window7_224,convnext_tiny \\
        --amp bf16 --channels-last --out benchmarks/throughput
    python -m tools.benchmark --models vmamba_tiny_s1l8,swin_tiny_patch4_window7_224 -b 128 --amp bf16 --rounds 3
    python -m tools.benchmark --models vmamba_tiny_s1l8 -b 128 --amp bf16 --bench train --profile 15
    python -m tools.benchmark --models 'test_*,resnet18' --device cpu -b 8 --img-size 64
"""
import argparse
import contextlib
import csv
import gc
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import timm
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2
from timm.utils import ParseKwargs, decay_batch_step
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from .common import CliError, check_model_name, create_model, is_oom, markdown_table, oom_advice, \
    parse_csv_list, resolve_device, run_cli, zoo_models

_logger = logging.getLogger('tools.benchmark')


@dataclass
class Result:
    model: str
    source: str
    params_m: float
    img_size: int
    batch: int = 0
    infer_img_s: Optional[float] = None
    infer_step_ms: Optional[float] = None
    infer_peak_mib: Optional[float] = None
    train_img_s: Optional[float] = None
    train_step_ms: Optional[float] = None
    train_peak_mib: Optional[float] = None
    error: str = ''
    notes: List[str] = field(default_factory=list)
    # kind ('infer' / 'train') -> (operator, ms per step, share of the step's profiled time, calls per step)
    profiles: Dict[str, List[Tuple[str, float, float, float]]] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--models', required=True,
                   help="comma-separated model names or wildcards, zoo and timm ('vmamba_tiny*,resnet50')")
    p.add_argument('--bench', default='both', choices=['infer', 'train', 'both'])
    p.add_argument('-b', '--batch-size', type=int, default=256)
    p.add_argument('--img-size', type=int, default=None, help="default: each model's test input size")
    p.add_argument('--amp', default='none', choices=['none', 'bf16', 'fp16'], help='autocast precision')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                   help='torch.compile each model (backend, default inductor)')
    p.add_argument('--torchcompile-mode', default=None,
                   choices=['default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'],
                   help="inductor's torch.compile mode with --torchcompile; 'reduce-overhead' runs CUDA graphs (no "
                        "per-kernel launch cost on the CPU)")
    p.add_argument('--cuda-graph', action='store_true',
                   help='time inference as replays of a CUDA graph of the forward (CUDA only; not with '
                        '--torchcompile)')
    p.add_argument('--num-warm-iter', type=int, default=10)
    p.add_argument('--num-bench-iter', type=int, default=40)
    p.add_argument('--opt', default='sgd', help='optimizer of the training step')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                   help='extra create_model arguments for every model')
    p.add_argument('--device', default=None)
    p.add_argument('--no-retry', action='store_true', help='do not lower the batch size after out-of-memory')
    p.add_argument('--rounds', type=int, default=1, metavar='R',
                   help='measure every model R times, round-robin, and report the medians with their range')
    p.add_argument('--profile', type=int, default=0, metavar='N',
                   help="profile 3 more steps of each kind and list the N operators with the most time per step")
    p.add_argument('--out', default=None, help='write OUT.csv and OUT.md')
    return p


def expand_models(spec: str) -> List[str]:
    """Names and wildcards -> registered names, in the order given; unknown names are a ``CliError``."""
    names: List[str] = []
    for item in parse_csv_list(spec):
        found = timm.list_models(item) if any(c in item for c in '*?[') else [check_model_name(item)]
        if not found:
            raise CliError(f'no model matches {item!r}')
        names += [n for n in found if n not in names]
    if not names:
        raise CliError('--models names no model')
    return names


class _PeakRss:
    """Peak resident set size above the starting one, sampled from /proc/self/statm in a thread (Linux)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.page = os.sysconf('SC_PAGE_SIZE')
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> '_PeakRss':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2 ** 20


class Bench:
    """Times one model on one device with the settings of the command line."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self.dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        if not self.dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)

    @contextlib.contextmanager
    def memory(self, sink: Dict[str, float]):
        """Measure the peak memory of the block into ``sink['mib']``."""
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield
            sink['mib'] = (torch.cuda.max_memory_allocated(self.device) - base) / 2 ** 20
        elif platform.system() == 'Linux':
            with _PeakRss() as rss:
                yield
            sink['mib'] = rss.mib
        else:
            yield

    def _model(self, name: str, train: bool) -> nn.Module:
        model = create_model(name, **self.args.model_kwargs).to(self.device)
        if self.args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train(train)
        if self.args.torchcompile:
            model = torch.compile(model, backend=self.args.torchcompile, mode=self.args.torchcompile_mode)
        return model

    def _input(self, batch: int, size: int) -> torch.Tensor:
        x = torch.randn(batch, 3, size, size, device=self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x

    _PROFILED_STEPS = 3

    def profile_steps(self, step: Callable[[], object]) -> List[Tuple[str, float, float, float]]:
        """Run ``step`` under the profiler: the ``--profile`` operators with the most time per step.

        Operators are ranked by the device time of the kernels they launched themselves (CPU time on the CPU), so
        nothing is counted twice: a kernel belongs to the innermost operator that launched it.
        """
        cuda = self.device.type == 'cuda'
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(self._PROFILED_STEPS):
                step()
            self.sync()
        steps = self._PROFILED_STEPS
        times = []
        for event in prof.key_averages():
            if event.device_type != DeviceType.CPU:  # kernels: counted under the operator that launched them
                continue
            micros = event.self_device_time_total if cuda else event.self_cpu_time_total
            if micros > 0:
                times.append((event.key, micros / 1e3 / steps, event.count / steps))
        total = sum(ms for _, ms, _ in times) or 1.0
        times.sort(key=lambda row: -row[1])
        return [(key, round(ms, 3), round(100 * ms / total, 1), round(calls, 1))
                for key, ms, calls in times[:self.args.profile]]

    def infer(self, name: str, batch: int, size: int) -> Dict[str, object]:
        sink: Dict[str, float] = {}
        with self.memory(sink):
            model = self._model(name, train=False)
            x = self._input(batch, size)

            # A captured forward must not use autocast's cache of weight casts (PyTorch's CUDA-graph notes on AMP).
            def step() -> None:
                with self.autocast(cache=not self.args.cuda_graph):
                    model(x)

            with torch.inference_mode():
                for _ in range(self.args.num_warm_iter):
                    step()
                self.sync()
                timed = self._graphed(step) if self.args.cuda_graph else step
                start = time.perf_counter()
                for _ in range(self.args.num_bench_iter):
                    timed()
                self.sync()
                elapsed = time.perf_counter() - start
                profiled = self.profile_steps(step) if self.args.profile else None  # eager: per-operator times
            del model, x, timed
        steps = self.args.num_bench_iter
        return dict(img_s=batch * steps / elapsed, step_ms=1e3 * elapsed / steps, peak_mib=sink.get('mib'),
                    profile=profiled)

    def _graphed(self, step: Callable[[], None]) -> Callable[[], None]:
        """``step`` captured into a CUDA graph (after warm-up on a side stream, as torch.cuda.graphs asks); the
        returned callable replays it."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return graph.replay

    def train(self, name: str, batch: int, size: int) -> Dict[str, object]:
        sink: Dict[str, float] = {}
        with self.memory(sink):
            model = self._model(name, train=True)
            x = self._input(batch, size)
            num_classes = model.num_classes if hasattr(model, 'num_classes') else 1000
            target = torch.randint(0, max(num_classes, 1), (batch,), device=self.device)
            optimizer = create_optimizer_v2(model, opt=self.args.opt, lr=1e-4)
            scaler = torch.amp.GradScaler(self.device.type, enabled=self.args.amp == 'fp16')
            loss_fn = nn.CrossEntropyLoss()

            def step() -> None:
                with self.autocast():
                    loss = loss_fn(model(x), target)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            total = 0.0
            for i in range(self.args.num_warm_iter + self.args.num_bench_iter):
                optimizer.zero_grad(set_to_none=True)
                self.sync()
                start = time.perf_counter()
                step()
                self.sync()
                if i >= self.args.num_warm_iter:
                    total += time.perf_counter() - start
            # zero_grad(set_to_none=True) launches no kernel, so it may run inside the profiled steps
            profiled = self.profile_steps(lambda: (optimizer.zero_grad(set_to_none=True), step())) \
                if self.args.profile else None
            del model, x, optimizer
        steps = self.args.num_bench_iter
        return dict(img_s=batch * steps / total, step_ms=1e3 * total / steps, peak_mib=sink.get('mib'),
                    profile=profiled)

    def run(self, name: str, zoo: set) -> Result:
        with torch.device('meta'):  # sizes only: no memory, no init time
            meta = create_model(name, **self.args.model_kwargs)
        params = sum(p.numel() for p in meta.parameters()) / 1e6
        size = self.args.img_size or resolve_data_config({}, model=meta, use_test_size=True)['input_size'][-1]
        del meta
        result = Result(name, 'zoo' if name in zoo else 'timm', round(params, 2), size)
        batch = self.args.batch_size
        kinds: List[str] = ['infer', 'train'] if self.args.bench == 'both' else [self.args.bench]
        for kind in kinds:
            fn: Callable[[str, int, int], Dict[str, float]] = getattr(self, kind)
            while True:
                try:
                    out = fn(name, batch, size)
                    break
                except Exception as e:  # noqa: BLE001 - out-of-memory is reported per model, others re-raised
                    if not is_oom(e):
                        raise
                    gc.collect()
                    if self.device.type == 'cuda':
                        torch.cuda.empty_cache()
                    smaller = decay_batch_step(batch)
                    if self.args.no_retry or smaller < 1:
                        result.error = oom_advice(batch, f'benchmarking {kind}')
                        out = None
                        break
                    result.notes.append(f'{kind}: out of memory at batch {batch}, retried at {smaller}')
                    batch = smaller
            if out is not None:
                setattr(result, f'{kind}_img_s', round(out['img_s'], 1))
                setattr(result, f'{kind}_step_ms', round(out['step_ms'], 2))
                setattr(result, f'{kind}_peak_mib', None if out['peak_mib'] is None else round(out['peak_mib'], 1))
                if out['profile'] is not None:
                    result.profiles[kind] = out['profile']
            gc.collect()
        result.batch = batch
        return result


def combine_rounds(rounds: List[Result]) -> Result:
    """One model's result from its rounds: the median round's throughput and step time, the largest peak memory,
    the range of the throughput in the notes, the first round's profiles."""
    first = rounds[0]
    if len(rounds) == 1:
        return first
    result = replace(first, notes=list(dict.fromkeys(n for r in rounds for n in r.notes)),
                     error=next((r.error for r in rounds if r.error), ''), batch=min(r.batch for r in rounds))
    if len({r.batch for r in rounds}) > 1:
        result.notes.append(f'batch differed between rounds: {[r.batch for r in rounds]}')
    for kind in ('infer', 'train'):
        measured = sorted((r for r in rounds if getattr(r, f'{kind}_img_s') is not None),
                          key=lambda r: getattr(r, f'{kind}_img_s'))
        if not measured:
            continue
        # The median round (the lower one of an even count), so that its img/s and step time belong together.
        median = measured[(len(measured) - 1) // 2]
        peaks = [getattr(r, f'{kind}_peak_mib') for r in measured if getattr(r, f'{kind}_peak_mib') is not None]
        setattr(result, f'{kind}_img_s', getattr(median, f'{kind}_img_s'))
        setattr(result, f'{kind}_step_ms', getattr(median, f'{kind}_step_ms'))
        setattr(result, f'{kind}_peak_mib', max(peaks) if peaks else None)
        low, high = getattr(measured[0], f'{kind}_img_s'), getattr(measured[-1], f'{kind}_img_s')
        result.notes.append(f'{kind} img/s over {len(measured)} rounds: {low:g}-{high:g}')
    return result


def _compile_label(args: argparse.Namespace) -> str:
    if not args.torchcompile:
        return 'off'
    return f'{args.torchcompile} ({args.torchcompile_mode})' if args.torchcompile_mode else args.torchcompile


def describe(args: argparse.Namespace, device: torch.device) -> str:
    """One line naming the device and settings, for the table's caption."""
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    memory = 'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'peak RSS above the pre-model RSS'
    rounds = f'; median of {args.rounds} round-robin rounds' if args.rounds > 1 else ''
    graph = ', inference as CUDA-graph replays' if args.cuda_graph else ''
    return (f'{name}; torch {torch.__version__}, timm {timm.__version__}; amp {args.amp}, '
            f'channels_last {args.channels_last}, compile {_compile_label(args)}{graph}; '
            f'{args.num_warm_iter} warm-up + {args.num_bench_iter} timed steps{rounds}; peak memory: {memory}')


def main(argv: Optional[List[str]] = None) -> List[Result]:
    """Benchmark as the command line says; returns one result per model."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s', force=True)
    if args.batch_size < 1 or args.num_bench_iter < 1 or args.rounds < 1 or args.num_warm_iter < 0 or args.profile < 0:
        raise CliError('--batch-size, --num-bench-iter and --rounds must be >= 1, --num-warm-iter and --profile >= 0')
    if args.torchcompile_mode and not args.torchcompile:
        raise CliError(f'--torchcompile-mode {args.torchcompile_mode} needs --torchcompile')
    names = expand_models(args.models)
    device = resolve_device(args.device)
    if args.cuda_graph and (device.type != 'cuda' or args.torchcompile):
        raise CliError('--cuda-graph needs a CUDA device and no --torchcompile (use --torchcompile-mode '
                       f'reduce-overhead for compiled CUDA graphs); got device {device}, compile '
                       f'{_compile_label(args)}')
    bench = Bench(args, device)
    zoo = set(zoo_models())
    rounds: Dict[str, List[Result]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in names:
            result = bench.run(name, zoo)
            _logger.info(f'{name} (round {i + 1} of {args.rounds}): {asdict(result)}')
            rounds[name].append(result)
        args.profile = 0  # profiles come from the first round
    results = [combine_rounds(rounds[name]) for name in names]

    caption = describe(args, device)
    header = ['model', 'source', 'params (M)', 'input', 'batch', 'infer img/s', 'infer step ms',
              'infer peak MiB', 'train img/s', 'train step ms', 'train peak MiB', 'notes']

    def cell(value: Optional[float]) -> str:
        return '' if value is None else f'{value:g}'
    rows = [[r.model, r.source, r.params_m, r.img_size, r.batch, cell(r.infer_img_s), cell(r.infer_step_ms),
             cell(r.infer_peak_mib), cell(r.train_img_s), cell(r.train_step_ms), cell(r.train_peak_mib),
             '; '.join(r.notes + ([r.error] if r.error else []))] for r in results]
    table = caption + '\n\n' + markdown_table(header, rows)
    what = 'device (CUDA) time of the kernels each operator launched' if device.type == 'cuda' else 'CPU time'
    for r in results:
        for kind, ops in r.profiles.items():
            table += (f'\n\n{r.model}, {kind} step at batch {r.batch}: the {len(ops)} operators with the most {what}, '
                      f'over {Bench._PROFILED_STEPS} profiled steps\n\n')
            table += markdown_table(['operator', 'ms / step', '% of profiled', 'calls / step'],
                                    [list(op) for op in ops])
    print(table)
    if args.out:
        md, csv_path = Path(f'{args.out}.md'), Path(f'{args.out}.csv')
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(table + '\n')
        with open(csv_path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(header + ['device'])
            writer.writerows(row + [caption.split(';')[0]] for row in rows)
        _logger.info(f'wrote {csv_path} and {md}')
    return results


if __name__ == '__main__':
    run_cli(main)
