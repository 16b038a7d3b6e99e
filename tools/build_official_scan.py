"""Build mamba_ssm's selective-scan CUDA kernel (``selective_scan_cuda``), the baseline of
``tools/benchmark_kernels.py``, from a checkout of its public source. Needs a CUDA device and nvcc; the build (about
150 s on 16 cores for one architecture) stays outside this repository.

    git clone https://github.com/state-spaces/mamba <src>
    python tools/build_official_scan.py --src <src> --out /tmp/ssb
    PYTHONPATH=.:/tmp/ssb python tools/benchmark_kernels.py
"""
import argparse
import glob
import os
from typing import List, Optional

# mamba's setup.py compiles the extension with these nvcc flags (its CUDA branch, 2026-11).
NVCC_FLAGS = [
    '-O3', '-std=c++17', '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
    '-U__CUDA_NO_BFLOAT16_OPERATORS__', '-U__CUDA_NO_BFLOAT16_CONVERSIONS__', '-U__CUDA_NO_BFLOAT162_OPERATORS__',
    '-U__CUDA_NO_BFLOAT162_CONVERSIONS__', '--expt-relaxed-constexpr', '--expt-extended-lambda', '--use_fast_math',
    '-lineinfo', '--threads', '4',
]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', required=True, help='a checkout of github.com/state-spaces/mamba')
    parser.add_argument('--out', required=True, help='build directory; it ends up holding selective_scan_cuda*.so')
    parser.add_argument('--arch', default='', help='compute capability such as 90 (default: the current device)')
    args = parser.parse_args(argv)
    csrc = os.path.join(args.src, 'csrc', 'selective_scan')
    sources = sorted(glob.glob(os.path.join(csrc, '*.cu')))
    if not os.path.isfile(os.path.join(csrc, 'selective_scan.cpp')) or not sources:
        raise SystemExit(f'build_official_scan: {csrc} holds no selective_scan.cpp / *.cu; pass --src a checkout of '
                         'github.com/state-spaces/mamba')
    import torch
    from torch.utils.cpp_extension import load
    arch = args.arch
    if not arch:
        if not torch.cuda.is_available():
            raise SystemExit('build_official_scan: no CUDA device to build for; pass --arch (e.g. 90)')
        arch = ''.join(map(str, torch.cuda.get_device_capability()))
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault('MAX_JOBS', str(os.cpu_count() or 1))
    load(name='selective_scan_cuda', sources=[os.path.join(csrc, 'selective_scan.cpp')] + sources,
         build_directory=args.out, extra_include_paths=[csrc], extra_cflags=['-O3', '-std=c++17'],
         extra_cuda_cflags=NVCC_FLAGS + ['-gencode', f'arch=compute_{arch},code=sm_{arch}'])
    print(f'built {glob.glob(os.path.join(args.out, "selective_scan_cuda*.so"))}; benchmark with '
          f'PYTHONPATH=.:{args.out} python tools/benchmark_kernels.py')


if __name__ == '__main__':
    main()
