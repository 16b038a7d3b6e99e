"""Block-diagonal and order-2 Monarch matrix products by batched matmul (Monarch Mixer's channel mixers).

Monarch Mixer (https://arxiv.org/abs/2310.12109; code https://github.com/HazyResearch/m2, Apache-2.0, whose
block-diagonal layers come from https://github.com/HazyResearch/fly) replaces dense ``n x m`` matrices by
structured ones that are products of block-diagonal factors:

* A **block-diagonal** matrix with ``k`` blocks, weight ``w (k, q, p)``: the input (..., k * p) is cut into ``k``
  contiguous chunks of ``p`` features and chunk ``i`` is multiplied by ``w[i]`` into output chunk ``i`` (q
  features). ``k * q * p`` parameters instead of ``k^2 * q * p``; no mixing across chunks.
* An **order-2 Monarch** matrix ``M = P_out · BlockDiag(w2) · P · BlockDiag(w1)`` with ``w1 (k, q, p)`` and
  ``w2 (l, s, r)``, ``k * q = l * r``: the first factor maps (k, p) chunks to a (k * q)-vector, the
  "reshape-transpose" permutation ``P`` views that vector as an (r, l) matrix and transposes it, so chunk ``j``
  of the second factor takes features ``j, j + l, j + 2l, ...`` (one from every stride-``l`` position, hence
  from every first-factor chunk when ``l`` divides ``q``), and ``P_out`` views the (l, s) result as (s, l)
  transposed: output feature ``a * l + j`` is row ``a`` of chunk ``j``. With ``n = b^2`` and every size ``b``
  this is ``2 n^{3/2}`` parameters, and unlike one block-diagonal factor it is a dense-rank operator that mixes
  every input feature into every output feature.

Both products are one ``einsum`` per factor (a batched matmul over the chunks) on any device and dtype, with
autograd's backward; under autocast they run in the autocast dtype like ``nn.Linear`` (the official block-diagonal
op forces bfloat16 under autocast). ``monarch_to_dense`` / ``blockdiag_to_dense`` build the dense matrices the
products represent, for tests and for inspection.

Written for linzoo from the paper and the reference notes (no official code copied).
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ['blockdiag_matmul', 'blockdiag_to_dense', 'monarch_matmul', 'monarch_to_dense']


def _check_factor(w: Tensor, name: str, op: str) -> None:
    if w.dim() != 3:
        raise ValueError(f'{op}: {name} must be (blocks, out_per_block, in_per_block), got shape {tuple(w.shape)}')


def blockdiag_matmul(x: Tensor, w: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``x @ BlockDiag(w)^T (+ bias)`` for a block-diagonal weight ``w (k, q, p)``.

    Args:
        x: Input (..., k * p).
        w: The ``k`` diagonal blocks, each (q, p) (an ``nn.Linear``-style (out, in) block).
        bias: Optional bias (k * q,).

    Returns:
        (..., k * q).
    """
    _check_factor(w, 'w', 'blockdiag_matmul')
    k, q, p = w.shape
    if x.shape[-1] != k * p:
        raise ValueError(f'blockdiag_matmul: input has {x.shape[-1]} features, the {k} blocks of {tuple(w.shape)} '
                         f'take {k} * {p} = {k * p}')
    out = torch.einsum('...kp,kqp->...kq', x.reshape(*x.shape[:-1], k, p), w).reshape(*x.shape[:-1], k * q)
    return out if bias is None else out + bias


def monarch_matmul(x: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
    """``x @ M^T`` for the order-2 Monarch matrix ``M = P_out BlockDiag(w2) P BlockDiag(w1)`` (module docstring).

    Args:
        x: Input (..., k * p).
        w1: First block-diagonal factor (k, q, p).
        w2: Second block-diagonal factor (l, s, r) with ``l * r = k * q``.

    Returns:
        (..., s * l).
    """
    _check_factor(w1, 'w1', 'monarch_matmul')
    _check_factor(w2, 'w2', 'monarch_matmul')
    k, q, p = w1.shape
    l, s, r = w2.shape
    if k * q != l * r:
        raise ValueError(f'monarch_matmul: the first factor {tuple(w1.shape)} outputs {k} * {q} = {k * q} features '
                         f'but the second {tuple(w2.shape)} takes {l} * {r} = {l * r}')
    if x.shape[-1] != k * p:
        raise ValueError(f'monarch_matmul: input has {x.shape[-1]} features, w1 {tuple(w1.shape)} takes '
                         f'{k} * {p} = {k * p}')
    batch = x.shape[:-1]
    y = torch.einsum('...kp,kqp->...kq', x.reshape(*batch, k, p), w1)
    # The permutation is free: (k, q) flattened, viewed as (r, l), is read chunk-major by the einsum below.
    y = torch.einsum('...rl,lsr->...sl', y.reshape(*batch, r, l), w2)
    return y.reshape(*batch, s * l)


def blockdiag_to_dense(w: Tensor) -> Tensor:
    """The dense (k * q, k * p) matrix of a block-diagonal weight ``w (k, q, p)``."""
    _check_factor(w, 'w', 'blockdiag_to_dense')
    return torch.block_diag(*w.unbind(0))


def monarch_to_dense(w1: Tensor, w2: Tensor) -> Tensor:
    """The dense (s * l, k * p) matrix ``M`` of ``monarch_matmul(x, w1, w2) == x @ M^T``.

    The factors and permutations are assembled as explicit matrices, ``M = P_out @ BlockDiag(w2) @ P @
    BlockDiag(w1)``, independently of the einsum path, so tests can check one against the other.
    """
    _check_factor(w1, 'w1', 'monarch_to_dense')
    _check_factor(w2, 'w2', 'monarch_to_dense')
    k, q, _ = w1.shape
    l, s, r = w2.shape
    if k * q != l * r:
        raise ValueError(f'monarch_to_dense: factors {tuple(w1.shape)} and {tuple(w2.shape)} do not chain '
                         f'({k} * {q} != {l} * {r})')
    n, m = k * q, s * l
    eye_n = torch.eye(n, dtype=w1.dtype, device=w1.device)
    eye_m = torch.eye(m, dtype=w1.dtype, device=w1.device)
    # P: position i = a * l + j of the first factor's output goes to row j * r + a (chunk j, row a).
    perm = eye_n[torch.arange(n, device=w1.device).reshape(r, l).t().reshape(-1)]
    # P_out: output feature a * l + j is row a of the second factor's chunk j, i.e. its output j * s + a.
    perm_out = eye_m[torch.arange(m, device=w1.device).reshape(l, s).t().reshape(-1)]
    return perm_out @ blockdiag_to_dense(w2) @ perm @ blockdiag_to_dense(w1)
