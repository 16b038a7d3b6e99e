"""Launch-grid arithmetic in plain Python.

``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr functions: called from Python each costs a few
microseconds, several times per kernel launch, which added up in CPU-bound eager training steps.
"""

__all__ = ['cdiv', 'next_pow2']


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(0, (x - 1).bit_length())
