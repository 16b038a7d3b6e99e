"""Newton-Schulz pseudo-inverse of batched symmetric matrices with a closed-form backward (SOFT's landmark kernel).

SOFT (https://arxiv.org/abs/2110.11945, official code https://github.com/fudan-zvg/SOFT, MIT) inverts the m x m
Gaussian kernel of its landmarks with the Newton-Schulz iteration ``V <- 2V - V A V`` (Ben-Israel and Cohen), which
needs only matmuls, so it runs on any device and batches over (batch, head). Differentiating through the 20
iterations would store 40 intermediate matrices per call; instead the iterations run without autograd and the
backward is that of the exact inverse, computed once from the result (official commit bb0eec0, "An efficient
Newton iteration backpropagation").

Written for linzoo from the paper and the official code (read, not copied).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._dispatch import autocast_off

__all__ = ['newton_pinv']


def _newton_schulz(a: Tensor, num_iters: int, ridge: float) -> Tensor:
    """The iteration itself, float32, for (..., m, m) matrices.

    ``V0 = alpha * P`` with ``alpha = 1.8 / max_i(sum_j |A_ij|)^2`` per matrix: the row-sum norm bounds the largest
    singular value, so ``alpha * sigma_max^2 <= 1.8 < 2`` and the iteration converges to ``pinv(P)`` for a
    symmetric P (every eigenvalue of ``I - P V0`` is in (-0.8, 1]), quadratically once the error is below one.
    The official code scales by the plain row sum, which is the same for SOFT's positive kernels.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    alpha = 1.8 / a.abs().sum(dim=-1).amax(dim=-1).square()
    p = a + ridge * eye if ridge else a
    v = alpha[..., None, None] * p
    for _ in range(num_iters):
        v = 2 * v - v @ p @ v
    return v


class _NewtonPinv(torch.autograd.Function):
    """``newton_pinv`` as an autograd function: no graph through the iterations, backward of the exact inverse."""

    @staticmethod
    def forward(ctx, a: Tensor, num_iters: int, ridge: float) -> Tensor:
        with torch.no_grad(), autocast_off(a.device.type):
            v = _newton_schulz(a.float(), num_iters, ridge)
        ctx.save_for_backward(v)
        return v.to(a.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], None, None]:
        (v,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        with autocast_off(grad.device.type):
            # d(P^-1) = -P^-1 dP P^-1, so dL/dP = -P^-T G P^-T; P = A + ridge * I, so dL/dA is the same.
            vt = v.transpose(-1, -2)
            grad_a = -(vt @ grad.float() @ vt)
        return grad_a.to(grad.dtype), None, None


def newton_pinv(a: Tensor, num_iters: int = 20, ridge: float = 0.) -> Tensor:
    """Pseudo-inverse of symmetric (..., m, m) matrices by ``num_iters`` Newton-Schulz steps, in float32.

    The iterations and the backward run in float32 with autocast disabled, on any device, whatever the input
    dtype or autocast state (the initial scale is a squared row-sum norm, and the iteration squares its error,
    so half precision loses the result); the result is returned in the input's dtype.

    The backward is the derivative of the exact inverse, ``grad_A = -V^T G V^T`` with ``V`` the result: exact
    when ``A + ridge * I`` is invertible and the iteration has converged, which holds for SOFT's symmetric
    positive definite Gaussian landmark kernels. For a singular matrix it is not the derivative of the
    pseudo-inverse (which has extra terms on the null space), and the forward is only approximately one: an
    eigenvalue e (rounding noise on a null space included) converges once ``2^num_iters * alpha * e^2 >> 1``;
    smaller ones are left partly inverted, a smooth cut-off in place of ``torch.linalg.pinv``'s threshold.

    Args:
        a: Symmetric matrices (..., m, m).
        num_iters: Newton-Schulz steps (SOFT uses 20).
        ridge: Added to the diagonal before inverting, i.e. the result approximates ``inv(A + ridge * I)``;
            SOFT's current kernel uses 0.01 (official commit bb0eec0), the normalized SOFT++ kernel 0.

    Returns:
        The pseudo-inverse, same shape and dtype as ``a``.
    """
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f'newton_pinv expects square matrices (..., m, m), got shape {tuple(a.shape)}')
    if num_iters < 0:
        raise ValueError(f'newton_pinv: num_iters must be >= 0, got {num_iters}')
    return _NewtonPinv.apply(a, num_iters, float(ridge))
