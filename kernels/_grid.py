"""Launch-grid arithmetic and stride geometry in plain Python (no Triton import: fake implementations use them).

``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr functions: called from Python each costs a few
microseconds, several times per kernel launch, which added up in CPU-bound eager training steps.
"""

from typing import Optional, Tuple

import torch

__all__ = ['bcp_strides', 'cdiv', 'dense', 'next_pow2']


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(0, (x - 1).bit_length())


def bcp_strides(x: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """Strides of (batch, channel, position) when the spatial dims merge into one position axis without a copy
    (channel-first or channel-last layouts), else None."""
    sizes, strides = x.shape, x.stride()
    position_stride, span = 1, None
    for i in range(x.dim() - 1, 1, -1):
        if sizes[i] == 1:
            continue
        if span is None:
            position_stride = strides[i]
        elif strides[i] != span:
            return None
        span = strides[i] * sizes[i]
    return strides[0], strides[1], position_stride


def dense(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """x as a dense row-major tensor (itself when it already is), or None: for per-channel vectors the kernels
    index as rows, which may arrive as strided views."""
    return x.contiguous() if x is not None else None
