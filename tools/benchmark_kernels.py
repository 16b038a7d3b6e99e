"""Benchmark the selective-scan backends on the vision shapes, against mamba_ssm's CUDA kernel.

For each shape it times forward and backward separately (median of CUDA-event timings of the GPU work, and the
host's time per call) for the Triton kernel, the vectorised PyTorch backend and, when ``selective_scan_cuda``
(mamba_ssm's kernel, built from its public source by ``tools/build_official_scan.py``) imports, the official CUDA
kernel. The memory floor of each call is the bytes it must move (inputs read once, outputs written once) divided by
the copy bandwidth measured in the same run.

    python tools/benchmark_kernels.py --out benchmarks/selective_scan_h100.md
"""
import argparse
import functools
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from kernels import torch_backend, triton_backend


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    dim: int  # total channels K * d_inner
    length: int
    groups: int  # K scan routes sharing B/C
    dstate: int
    gated: bool


SHAPES = [
    Shape('VMamba-T s1 (N=1, K=4)', 128, 768, 3136, 4, 1, False),
    Shape('VMamba-T s2 (N=1, K=4)', 128, 1536, 784, 4, 1, False),
    Shape('VMamba-T s3 (N=1, K=4)', 128, 3072, 196, 4, 1, False),
    Shape('VMamba-T s4 (N=1, K=4)', 128, 6144, 49, 4, 1, False),
    Shape('vanilla VMamba-T s1 (N=16, K=4)', 128, 768, 3136, 4, 16, False),
    Shape('Vim-T (N=16, gated)', 128, 384, 197, 1, 16, True),
]


# The GPU idles at least this long ahead of each timing, and at least twice the host's time per call (time_cuda).
HOST_COVER_MS = 0.1


@functools.lru_cache(maxsize=None)
def _sleep_cycles_per_ms() -> float:
    """torch.cuda._sleep's cycles per millisecond on this GPU, measured."""
    cycles = 10_000_000
    torch.cuda._sleep(cycles)  # the clocks up
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    return cycles / start.elapsed_time(end)


def time_cuda(fn: Callable[[], object], warmup: int = 3, reps: int = 15) -> Tuple[float, float]:
    """(median milliseconds of the GPU work of ``fn`` over ``reps`` CUDA-event timings, median host milliseconds per
    call over three calls after the warmup).

    Each timing starts behind a GPU sleep longer than the host's work for ``fn`` (Python, allocations, launches), so
    that work overlaps it and the events time the kernels, as they run inside a model where the GPU is already busy.
    A fixed 0.1 ms sleep stopped covering the Triton backward's ~0.16 ms of host work before its main kernel on the
    H100 host, and its time then read 0.62-0.75 ms from one process to the next (sixteenth session)."""
    for _ in range(warmup):
        fn()
    host = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t0) * 1e3)
    host_ms = statistics.median(host)
    cover = int(max(HOST_COVER_MS, 2 * host_ms) * _sleep_cycles_per_ms())
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cover)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), host_ms


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda')
    y = torch.empty_like(x)
    ms, _ = time_cuda(lambda: y.copy_(x), reps=20)
    return 2 * x.numel() / (ms * 1e-3)


def floor_bytes(s: Shape, elt: int) -> Dict[str, int]:
    """Bytes a single-pass kernel must move: (u, delta, [z]) + B, C in; out out; and the backward's mirror."""
    chan = s.batch * s.dim * s.length * elt
    bc = 2 * s.batch * s.groups * s.dstate * s.length * elt
    fwd = 2 * chan + bc + chan + (chan if s.gated else 0)
    bwd = 2 * chan + bc + chan + 2 * chan + bc + (2 * chan if s.gated else 0)  # + dout; du, ddelta, dB, dC, [z, dz]
    return dict(fwd=fwd, bwd=bwd)


def make_inputs(s: Shape, dtype: torch.dtype):
    dev = 'cuda'
    u = torch.randn(s.batch, s.dim, s.length, device=dev, dtype=dtype)
    delta = (0.5 * torch.rand(s.batch, s.dim, s.length, device=dev) - 4).to(dtype)
    A = -torch.arange(1, s.dstate + 1, device=dev, dtype=torch.float32).repeat(s.dim, 1)
    B = torch.randn(s.batch, s.groups, s.dstate, s.length, device=dev, dtype=dtype)
    C = torch.randn(s.batch, s.groups, s.dstate, s.length, device=dev, dtype=dtype)
    D = torch.ones(s.dim, device=dev)
    z = torch.randn(s.batch, s.dim, s.length, device=dev, dtype=dtype) if s.gated else None
    bias = torch.rand(s.dim, device=dev)
    return u, delta, A, B, C, D, z, bias


def bench_triton(s, inputs):
    u, delta, A, B, C, D, z, bias = inputs
    fwd = lambda: triton_backend.selective_scan_fwd(u, delta, A, B, C, D, z, bias, True, False, u.dtype)
    out, _, states = fwd()
    dout = torch.randn_like(out)
    bwd = lambda: triton_backend.selective_scan_bwd(dout, u, delta, A, B, C, D, z, bias, states, True, False)
    return time_cuda(fwd), time_cuda(bwd)


def bench_torch(s, inputs):
    u, delta, A, B, C, D, z, bias = inputs
    fwd = lambda: torch_backend.selective_scan_fwd(u, delta, A, B, C, D, z, bias, True, False, u.dtype)
    out, _ = fwd()
    dout = torch.randn_like(out)
    bwd = lambda: torch_backend.selective_scan_bwd(dout, u, delta, A, B, C, D, z, bias, True, False)
    return time_cuda(fwd, warmup=1, reps=3), time_cuda(bwd, warmup=1, reps=3)


def bench_official(s, inputs, module):
    u, delta, A, B, C, D, z, bias = inputs
    fwd = lambda: module.fwd(u, delta, A, B, C, D, z, bias, True)
    res = fwd()
    out, x = res[0], res[1]
    dout = torch.randn_like(out)
    dz = torch.empty_like(z) if z is not None else None
    bwd = lambda: module.bwd(u, delta, A, B, C, D, z, bias, dout, x, out, dz, True, False)
    return time_cuda(fwd), time_cuda(bwd)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    parser.add_argument('--shapes', default='', help='comma-separated substrings selecting shapes (default: all)')
    parser.add_argument('--out', default='', help='also write the markdown table to this file')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('benchmark_kernels: needs a CUDA device')
    dtype = getattr(torch, args.dtype)
    elt = torch.finfo(dtype).bits // 8
    try:
        import selective_scan_cuda as official
    except ImportError as e:
        official = None
        print(f'official kernel not importable ({e}); its columns are left empty')
    bandwidth = copy_bandwidth()
    shapes = [s for s in SHAPES if not args.shapes or any(k in s.name for k in args.shapes.split(','))]
    header = ('| shape | B, KD, L, N | backend | fwd ms | bwd ms | fwd+bwd ms | fwd % floor | bwd % floor | '
              'fwd+bwd speed-up vs official | host ms per call, fwd / bwd |')
    rows = [header, '|---' * 10 + '|']
    for s in shapes:
        inputs = make_inputs(s, dtype)
        floors = {k: v / bandwidth * 1e3 for k, v in floor_bytes(s, elt).items()}
        results = {}
        for name, fn in (('official CUDA', (lambda s, i: bench_official(s, i, official)) if official else None),
                         ('triton', bench_triton), ('torch', bench_torch)):
            if fn is None:
                continue
            try:
                results[name] = fn(s, inputs)
            except torch.OutOfMemoryError:
                results[name] = None
            torch.cuda.empty_cache()
        base = results.get('official CUDA')
        for name, r in results.items():
            dims = f'{s.batch}, {s.dim}, {s.length}, {s.dstate}'
            if r is None:
                rows.append(f'| {s.name} | {dims} | {name} | OOM | | | | | | |')
                continue
            (f, host_f), (b, host_b) = r
            speedup = f'{(base[0][0] + base[1][0]) / (f + b):.2f}x' if base else ''
            rows.append(f'| {s.name} | {dims} | {name} | {f:.3f} | {b:.3f} | {f + b:.3f} | '
                        f'{100 * floors["fwd"] / f:.0f}% | {100 * floors["bwd"] / b:.0f}% | {speedup} | '
                        f'{host_f:.3f} / {host_b:.3f} |')
        del inputs
        torch.cuda.empty_cache()
    lines = [
        f'Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; triton '
        f'{__import__("triton").__version__}; Python {platform.python_version()}',
        f'Inputs and outputs {args.dtype}, float32 accumulation, delta_softplus with bias, D skip; '
        f'measured copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write).',
        'Floor = bytes that must move (inputs once, outputs once) / measured copy bandwidth. '
        'Times are medians of CUDA-event timings of the GPU work, each behind a GPU sleep of at least twice the '
        'host\'s time per call (the last column), so the host\'s launch work overlaps it as in a model where the GPU '
        'is busy; bwd is the backward call alone.',
        '', *rows,
    ]
    text = '\n'.join(lines)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
