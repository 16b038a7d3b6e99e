"""``selective_scan``: mamba_ssm's ``selective_scan_fn`` semantics behind one function and three backends.

* ``'triton'``: fused Triton forward and backward (``kernels.triton_backend``), the default for CUDA tensors.
* ``'torch'``: a vectorised PyTorch implementation (``kernels.torch_backend``), the default elsewhere.
* ``'oracle'``: a float64 loop over time steps differentiated by autograd (``kernels.reference``); tests only.

The Triton and PyTorch paths are one ``torch.library`` custom op (``linzoo::selective_scan``) with a
registered fake and autograd formula, so ``torch.compile`` traces models through it without graph breaks.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import torch_backend
from ._dispatch import announce, autocast_dtype, eager_function, import_triton_module, profiled, use_custom_op
from ._grid import cdiv, next_pow2
from .reference import selective_scan_oracle

__all__ = ['a_from_log', 'available_backends', 'project_routes', 'projected_selective_scan', 'selective_scan']

_BACKENDS = ('triton', 'torch', 'oracle')

# Imported once here, not lazily on first use: torch.compile only traces a lazy import inside the backend choice,
# so the op's fake implementation would find the module missing. A failure is reported when the backend is picked.
_triton_backend, _triton_import_error = import_triton_module('triton_backend')


def available_backends() -> Tuple[str, ...]:
    """Backends that can run in this environment ('triton' needs an importable Triton)."""
    return tuple(b for b in _BACKENDS if b != 'triton' or _triton_backend is not None)


def _pick_backend(u: Tensor, backend: Optional[str]) -> str:
    if backend is not None:
        if backend not in _BACKENDS:
            raise ValueError(f"selective_scan: backend must be one of {_BACKENDS} or None, got {backend!r}")
        if backend == 'triton':
            if _triton_backend is None:
                raise RuntimeError(f'selective_scan: backend="triton" requested but Triton failed to import '
                                   f'({_triton_import_error}); install triton or pass backend="torch"')
            if not u.is_cuda and not _triton_backend.INTERPRET:
                raise ValueError('selective_scan: backend="triton" needs CUDA tensors (or TRITON_INTERPRET=1 '
                                 f'set before import, for testing); got tensors on {u.device}')
        return backend
    if u.is_cuda:
        if _triton_backend is not None:
            announce('selective_scan:triton', 'selective_scan: using the Triton backend for CUDA tensors')
            return 'triton'
        announce('selective_scan:torch-cuda', f'selective_scan: Triton is unavailable ({_triton_import_error}); '
                                              'CUDA tensors use the slower PyTorch backend', warn=True)
        return 'torch'
    announce('selective_scan:torch',
             f'selective_scan: using the vectorised PyTorch backend for {u.device.type} tensors')
    return 'torch'


# ----------------------------------------------------------------------------------------------------------
# The custom op. B and C arrive as (batch, G, N, L); optional tensors may be None.

def _fwd_impl(
        u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Optional[Tensor], D: Optional[Tensor],
        z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, return_hidden_states: bool,
        out_float32: bool, backend: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    out_dtype = torch.float32 if out_float32 else u.dtype
    if backend == 'triton':
        out, last, states = _triton_backend.selective_scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states, out_dtype)
        return out, last, states if states is not None else u.new_empty(0, dtype=torch.float32)
    out, last = torch_backend.selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states, out_dtype)
    # Contiguous like the fake's: the chunked backend's hidden states are a view of a chunk-padded buffer, and
    # torch.compile plans the graph with the fake's strides.
    return out.contiguous(), last, u.new_empty(0, dtype=torch.float32)


_fwd_op = torch.library.custom_op('linzoo::selective_scan_fwd', _fwd_impl, mutates_args=())


@_fwd_op.register_fake
def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states, out_float32, backend):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    out_dtype = torch.float32 if out_float32 else u.dtype
    shape = (batch, dim, dstate, length) if return_hidden_states else (batch, dim, length)
    out = u.new_empty(shape, dtype=out_dtype)
    last = u.new_empty(batch, dim, dstate, dtype=torch.float32)
    states = u.new_empty(0, dtype=torch.float32)
    if backend == 'triton':
        n_chunks = cdiv(length, _triton_backend.state_chunk(dstate, length))
        if n_chunks > 1:
            states = u.new_empty(batch, dim, n_chunks, next_pow2(dstate), dtype=torch.float32)
    return out, last, states


def _bwd_impl(
        dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Optional[Tensor], D: Optional[Tensor],
        z: Optional[Tensor], delta_bias: Optional[Tensor], states: Tensor, delta_softplus: bool,
        return_hidden_states: bool, backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    if backend == 'triton':
        grads = _triton_backend.selective_scan_bwd(
            dout, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, return_hidden_states)
    else:
        grads = torch_backend.selective_scan_bwd(
            dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states)
    # A custom op cannot return None: absent gradients travel as empty tensors.
    return tuple(g if g is not None else u.new_empty(0) for g in grads)


_bwd_op = torch.library.custom_op('linzoo::selective_scan_bwd', _bwd_impl, mutates_args=())


@_bwd_op.register_fake
def _bwd_fake(dout, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, return_hidden_states, backend):
    def like(x, dtype=None):
        return torch.empty_like(x, dtype=dtype) if x is not None else u.new_empty(0)
    return like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states, _, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.delta_softplus = delta_softplus
    ctx.return_hidden_states = return_hidden_states
    ctx.backend = backend


def _backward(ctx, dout, dlast, dstates):
    # Like mamba_ssm, the last state is returned without a gradient path.
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    bwd = _bwd_op if use_custom_op() else _bwd_impl
    grads = bwd(dout.contiguous(), u, delta, A, B, C, D, z, delta_bias, states, ctx.delta_softplus,
                ctx.return_hidden_states, ctx.backend)
    present = (u, delta, A, B, C, D, z, delta_bias)
    grads = tuple(g if x is not None else None for g, x in zip(grads, present))
    return grads + (None, None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# The spied-on module global (tests/conftest.py's scan_calls) is looked up per call.
_SelectiveScanFunction = eager_function(
    '_SelectiveScanFunction', 'linzoo::selective_scan', lambda *inputs: _fwd_impl(*inputs), _setup_context, _backward)


# ----------------------------------------------------------------------------------------------------------
# The public function.

def _check_float(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f'selective_scan: {name} must be a torch.Tensor, got {type(x).__name__}')
    if not x.is_floating_point() or x.is_complex():
        raise ValueError(f'selective_scan: {name} must be a real floating-point tensor, got dtype {x.dtype}')


def _check_shape(name: str, x: Tensor, shape: Tuple[int, ...], meaning: str) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f'selective_scan: {name} must have shape {meaning} = {shape}, got {tuple(x.shape)}')


def _last_dim_contiguous(x: Optional[Tensor]) -> Optional[Tensor]:
    return x.contiguous() if x is not None and x.stride(-1) != 1 else x


def _as_grouped(name: str, x: Tensor, batch: int, dim: int, length: int) -> Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, G, N, L), with G dividing D."""
    _check_float(name, x)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f'selective_scan: {name} must be (batch, N, L) or (batch, G, N, L), got shape '
                         f'{tuple(x.shape)}; constant (D, N) B/C are not supported')
    if x.shape[0] != batch or x.shape[3] != length:
        raise ValueError(f'selective_scan: {name} must be (batch={batch}, G, N, L={length}), got {tuple(x.shape)}')
    if dim % x.shape[1] != 0:
        raise ValueError(f'selective_scan: the channel count D={dim} must be divisible by the number of '
                         f'{name} groups G={x.shape[1]}')
    return x


def _check_scan_params(
        u: Tensor, A: Tensor, D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
        out_dtype: Optional[torch.dtype], others: Tuple[Tuple[str, Optional[Tensor]], ...] = (),
) -> int:
    """Checks shared by ``selective_scan`` and ``projected_selective_scan``: u (batch, D, L) non-empty, A (D, N),
    D and delta_bias (D,), z (batch, D, L), every tensor on u's device, out_dtype; returns N."""
    _check_float('u', u)
    if u.dim() != 3:
        raise ValueError(f'selective_scan: u must be (batch, D, L), got shape {tuple(u.shape)}')
    batch, dim, length = u.shape
    if length == 0 or batch == 0 or dim == 0:
        raise ValueError(f'selective_scan: u must be non-empty (batch, D, L), got shape {tuple(u.shape)}')
    _check_float('A', A)
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'selective_scan: A must be (D={dim}, N), got shape {tuple(A.shape)}')
    for name, x in (('D', D), ('delta_bias', delta_bias)):
        if x is not None:
            _check_float(name, x)
            _check_shape(name, x, (dim,), '(D,)')
    if z is not None:
        _check_float('z', z)
        _check_shape('z', z, (batch, dim, length), '(batch, D, L)')
    for name, x in (('A', A), ('D', D), ('z', z), ('delta_bias', delta_bias)) + others:
        if x is not None and x.device != u.device:
            raise ValueError(f'selective_scan: {name} is on {x.device} but u is on {u.device}; '
                             'move all inputs to one device')
    if out_dtype not in (None, u.dtype, torch.float32):
        raise ValueError(f'selective_scan: out_dtype must be None, u.dtype ({u.dtype}) or torch.float32, '
                         f'got {out_dtype}')
    return A.shape[1]


def selective_scan(
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Optional[Tensor] = None,
        D: Optional[Tensor] = None,
        z: Optional[Tensor] = None,
        delta_bias: Optional[Tensor] = None,
        delta_softplus: bool = False,
        return_last_state: bool = False,
        out_dtype: Optional[torch.dtype] = None,
        return_hidden_states: bool = False,
        backend: Optional[str] = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan (S6) with the semantics of ``mamba_ssm.selective_scan_fn``.

    ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``, ``out_t = <C_t, h_t> + D u_t`` (times ``silu(z_t)`` if z),
    with ``dt = softplus(delta + delta_bias)`` when ``delta_softplus``. All accumulation is float32.

    Args:
        u: Input (batch, D, L).
        delta: Raw step sizes (batch, D, L); may have a different float dtype than u.
        A: State matrix (D, N), usually ``-exp(A_log)``.
        B: Input projection (batch, N, L) or grouped (batch, G, N, L); channel d uses group d // (D / G).
        C: Output projection, same layout as B. Must be None with ``return_hidden_states``.
        D: Skip weight (D,).
        z: Gate (batch, D, L); the output is multiplied by ``silu(z)``.
        delta_bias: Added to delta before the softplus (D,).
        delta_softplus: Apply softplus (threshold 20) to ``delta + delta_bias``.
        return_last_state: Also return the final state (batch, D, N) in float32 (no gradient flows through it).
        out_dtype: None for u's dtype, or torch.float32 for float32 output from half inputs (VMamba's fix
            for fp16 overflow).
        return_hidden_states: Return all states h (batch, D, N, L) instead of the output (Spatial-Mamba);
            C, D and z must then be None.
        backend: 'triton', 'torch', 'oracle' or None to choose from the device.

    Returns:
        out (batch, D, L), or h (batch, D, N, L); and the last state when ``return_last_state``.
    """
    dstate = _check_scan_params(u, A, D, z, delta_bias, out_dtype, (('delta', delta), ('B', B), ('C', C)))
    batch, dim, length = u.shape
    _check_float('delta', delta)
    _check_shape('delta', delta, (batch, dim, length), '(batch, D, L)')
    B = _as_grouped('B', B, batch, dim, length)
    if B.shape[2] != dstate:
        raise ValueError(f'selective_scan: B has N={B.shape[2]} states but A has N={dstate}')
    if return_hidden_states:
        for name, x in (('C', C), ('D', D), ('z', z)):
            if x is not None:
                raise ValueError(f'selective_scan: {name} must be None with return_hidden_states=True '
                                 '(the caller applies C, D and the gate to the returned states)')
    else:
        if C is None:
            raise ValueError('selective_scan: C is required unless return_hidden_states=True')
        C = _as_grouped('C', C, batch, dim, length)
        if C.shape[2] != dstate:
            raise ValueError(f'selective_scan: C has N={C.shape[2]} states but A has N={dstate}')
    backend = _pick_backend(u, backend)

    if backend == 'oracle':
        out = selective_scan_oracle(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    return_last_state=True, return_hidden_states=return_hidden_states)
        out, last = out[0].to(out_dtype or u.dtype), out[1].float().detach()
    else:
        u, delta, B, C, z = (_last_dim_contiguous(x) for x in (u, delta, B, C, z))
        scan = _fwd_op if use_custom_op() else _SelectiveScanFunction.apply
        out, last, _ = scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_hidden_states,
                            out_dtype == torch.float32 and u.dtype != torch.float32, backend)
    if return_last_state:
        return out, last
    return out


# ----------------------------------------------------------------------------------------------------------
# Mamba's input projections and the scan in one autograd node.

def a_from_log(A_log: Tensor) -> Tensor:
    """Mamba's state matrix from its parameter: ``A = -exp(A_log)``, in float32 (the kernels' parameter dtype)."""
    return -torch.exp(A_log.float())


def _matmul_dtype(xs: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype torch.matmul(weight, xs) computes in (autocast's, else the common one)."""
    return autocast_dtype(xs.device.type) or torch.promote_types(xs.dtype, weight.dtype)


def project_routes(
        xs: Tensor, x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_rank: int,
) -> Tuple[Tensor, Tensor]:
    """Mamba's input-dependent projections of route sequences (batch, K, C', L), per route k:
    ``x_dbl = x_proj_weight[k] @ xs[:, k]`` (rows: dt, B, C) and ``delta = dt_proj_weight[k] @ dt``.

    Returns (x_dbl (batch, K, R + 2N, L), delta (batch, K, C', L)); one broadcast GEMM per projection ((K, out, in)
    weights over the batch; grouped 1x1 conv1d took twice as long on an H100, benchmarks/models.md).
    """
    # torch.matmul does not promote: cast to the dtype the projections compute in (autocast's, else the common
    # one), as the fused path does.
    dtype = _matmul_dtype(xs, x_proj_weight)
    x_dbl = torch.matmul(x_proj_weight.to(dtype), xs.to(dtype))
    dt_dtype = _matmul_dtype(x_dbl, dt_proj_weight)
    return x_dbl, torch.matmul(dt_proj_weight.to(dt_dtype), x_dbl[:, :, :dt_rank].to(dt_dtype))


class _ProjectedScanFunction(torch.autograd.Function):
    """``projected_selective_scan`` as one node: its backward runs the scan's backward, then the two projections'
    GEMMs, adding the scan's input gradient inside the x_proj GEMM (``baddbmm``) instead of a full-size add."""

    @staticmethod
    def forward(ctx, xs, x_proj_weight, dt_proj_weight, A_log, D, z, delta_bias, out_float32, backend, grad_enabled):
        batch, routes, channels, length = xs.shape
        dt_rank, dstate = dt_proj_weight.shape[-1], A_log.shape[1]
        rows = batch * routes
        # project_routes' GEMMs as bmm over batch x routes: one op both casts each weight to the GEMM dtype
        # (autocast's) and lays it out per batch entry, which torch.matmul's broadcast would copy separately.
        w_x = x_proj_weight.expand(batch, routes, -1, -1).to(xs.dtype).reshape(rows, -1, channels)
        x_dbl = torch.bmm(w_x, xs.reshape(rows, channels, length)).view(batch, routes, -1, length)
        w_dt = dt_proj_weight.expand(batch, routes, -1, -1).to(xs.dtype).reshape(rows, channels, dt_rank)
        delta = torch.bmm(w_dt, x_dbl[:, :, :dt_rank].reshape(rows, dt_rank, length))
        _, Bs, Cs = torch.split(x_dbl, [dt_rank, dstate, dstate], dim=2)
        u, delta = xs.reshape(batch, routes * channels, length), delta.view(batch, routes * channels, length)
        # Triton: A = -exp(A_log) inside the kernels; no last state, and no chunk states without a backward to use them
        # (needs_input_grad follows requires_grad, so it is set for the parameters under no_grad too).
        if backend == 'triton':
            out, _, states = _triton_backend.selective_scan_fwd(
                u, delta, A_log, Bs, Cs, D, z, delta_bias, True, False, torch.float32 if out_float32 else u.dtype,
                a_is_log=True, need_last=False, need_states=grad_enabled and any(ctx.needs_input_grad))
        else:
            out, _, states = _fwd_impl(u, delta, a_from_log(A_log), Bs, Cs, D, z, delta_bias, True, False,
                                       out_float32, backend)
        ctx.save_for_backward(xs, x_dbl, delta, A_log, D, z, delta_bias, states, x_proj_weight, dt_proj_weight)
        ctx.backend = backend
        return out

    @staticmethod
    @once_differentiable  # the scan's backward kernel has no derivative of its own
    def backward(ctx, dout):
        xs, x_dbl, delta, A_log, D, z, delta_bias, states, x_proj_weight, dt_proj_weight = ctx.saved_tensors
        # The backward's GEMMs take the weights cast again (cheaper to redo than to keep the per-batch copies).
        w_x, w_dt = x_proj_weight.to(xs.dtype), dt_proj_weight.to(xs.dtype)
        batch, routes, channels, length = xs.shape
        dt_rank, dstate = w_dt.shape[-1], A_log.shape[1]
        dts, Bs, Cs = torch.split(x_dbl, [dt_rank, dstate, dstate], dim=2)
        u = xs.reshape(batch, routes * channels, length)
        with profiled('linzoo::selective_scan_bwd'):
            if ctx.backend == 'triton':  # the kernel returns the gradient of A_log
                du, ddelta, dA_log, dB, dC, dD, dz, dbias = _triton_backend.selective_scan_bwd(
                    dout.contiguous(), u, delta, A_log, Bs, Cs, D, z, delta_bias, states, True, False, a_is_log=True)
            else:
                A = a_from_log(A_log)
                du, ddelta, dA, dB, dC, dD, dz, dbias = _bwd_impl(
                    dout.contiguous(), u, delta, A, Bs, Cs, D, z, delta_bias, states, True, False, ctx.backend)
                dA_log = (dA * A).to(A_log.dtype)
        ddelta = ddelta.view(batch, routes, channels, length)
        needs_xs, needs_w_x, needs_w_dt = ctx.needs_input_grad[:3]
        x_dtype, dt_dtype = x_proj_weight.dtype, dt_proj_weight.dtype
        # Weight gradients: per-sample GEMMs summed over the batch (and over the routes of a shared weight).
        shared = (0, 1) if w_x.shape[0] == 1 else (0,)
        dw_x = dw_dt = dxs = None
        if needs_w_dt:
            dw_dt = torch.matmul(ddelta, dts.transpose(-1, -2)).sum(shared).view(w_dt.shape).to(dt_dtype)
        if needs_xs or needs_w_x:
            dx_dbl = torch.cat([torch.matmul(w_dt.transpose(-1, -2), ddelta), dB.to(xs.dtype), dC.to(xs.dtype)], 2)
            if needs_w_x:
                dw_x = torch.matmul(dx_dbl, xs.transpose(-1, -2)).sum(shared).view(w_x.shape).to(x_dtype)
            if needs_xs:
                # dxs = du + w_x^T dx_dbl, the sum inside the GEMM.
                w_x_t = w_x.transpose(-1, -2).expand(batch, routes, channels, -1).reshape(batch * routes, channels, -1)
                dxs = torch.baddbmm(du.view(batch * routes, channels, length), w_x_t,
                                    dx_dbl.view(batch * routes, -1, length)).view(batch, routes, channels, length)
        return (dxs, dw_x, dw_dt, dA_log if ctx.needs_input_grad[3] else None, dD if D is not None else None,
                dz if z is not None else None, dbias if delta_bias is not None else None, None, None, None)

def projected_selective_scan(
        xs: Tensor,
        x_proj_weight: Tensor,
        dt_proj_weight: Tensor,
        A_log: Tensor,
        D: Optional[Tensor] = None,
        z: Optional[Tensor] = None,
        delta_bias: Optional[Tensor] = None,
        out_dtype: Optional[torch.dtype] = None,
        backend: Optional[str] = None,
) -> Tensor:
    """Mamba's input-dependent projections and the selective scan of K route sequences.

    ``x_dbl = x_proj_weight @ xs`` per route, split into (dt, B, C) of R, N and N rows; ``delta = dt_proj_weight @
    dt``; then ``selective_scan(xs, delta, A, B, C, D, z, delta_bias, delta_softplus=True)`` with ``A = -exp(A_log)``
    and route k's B and C as group k. Eager calls run it as one autograd node (the backward adds the scan's input
    gradient inside the x_proj GEMM, and records one node instead of the projections' eight; on CUDA the kernels
    take A_log itself, so A costs no ops of its own either way); under ``torch.compile`` or a
    ``TorchDispatchMode``, and when the GEMMs would cast xs (autocast to another dtype), it is the same
    composition of ``torch.matmul`` and ``selective_scan``.

    Args:
        xs: Route sequences (batch, K, C', L).
        x_proj_weight: (K, R + 2N, C'), or (1, R + 2N, C') shared by the routes.
        dt_proj_weight: (K, C', R) or (1, C', R).
        A_log: (K C', N), Mamba's parameter ``log(-A)``. D, delta_bias: (K C',) or None. z: gate (batch, K C', L)
            or None.
        out_dtype: None for xs' dtype, or torch.float32.
        backend: As for ``selective_scan``.

    Returns:
        (batch, K C', L).
    """
    _check_float('xs', xs)
    if xs.dim() != 4:
        raise ValueError(f"projected_selective_scan: xs must be (batch, K, C', L), got shape {tuple(xs.shape)}")
    batch, routes, channels, length = xs.shape
    _check_float('A_log', A_log)
    if A_log.dim() != 2 or A_log.shape[0] != routes * channels:
        raise ValueError(f"projected_selective_scan: A_log must be (K C' = {routes * channels}, N), got shape "
                         f'{tuple(A_log.shape)}')
    dstate = A_log.shape[-1]
    for name, w in (('x_proj_weight', x_proj_weight), ('dt_proj_weight', dt_proj_weight)):
        _check_float(name, w)
        if w.dim() != 3 or w.shape[0] not in (1, routes):
            raise ValueError(f'projected_selective_scan: {name} must be (K={routes} or 1, out, in), got shape '
                             f'{tuple(w.shape)}')
    if x_proj_weight.shape[0] != dt_proj_weight.shape[0]:
        raise ValueError(f'projected_selective_scan: x_proj_weight and dt_proj_weight must both be per route '
                         f'(K={routes}) or both shared (1), got {x_proj_weight.shape[0]} and {dt_proj_weight.shape[0]}')
    dt_rank = dt_proj_weight.shape[2]
    _check_shape('x_proj_weight', x_proj_weight, (x_proj_weight.shape[0], dt_rank + 2 * dstate, channels),
                 '(K or 1, R + 2N, C\')')
    _check_shape('dt_proj_weight', dt_proj_weight, (dt_proj_weight.shape[0], channels, dt_rank), '(K or 1, C\', R)')
    fused = (backend != 'oracle' and not use_custom_op() and xs.stride(-1) == 1
             and _matmul_dtype(xs, x_proj_weight) == xs.dtype == _matmul_dtype(xs, dt_proj_weight))
    if not fused:
        x_dbl, delta = project_routes(xs, x_proj_weight, dt_proj_weight, dt_rank)
        _, Bs, Cs = torch.split(x_dbl, [dt_rank, dstate, dstate], dim=2)
        return selective_scan(
            xs.reshape(batch, routes * channels, length), delta.reshape(batch, routes * channels, length),
            a_from_log(A_log), Bs, Cs, D, z, delta_bias, delta_softplus=True, out_dtype=out_dtype,
            backend=backend)
    # selective_scan's checks of everything but delta, B and C (built inside the node from checked weights).
    _check_scan_params(xs.reshape(batch, routes * channels, length), A_log, D, z, delta_bias, out_dtype,
                       (('x_proj_weight', x_proj_weight), ('dt_proj_weight', dt_proj_weight)))
    z = _last_dim_contiguous(z)
    backend = _pick_backend(xs, backend)
    with profiled('linzoo::selective_scan_fwd'):
        return _ProjectedScanFunction.apply(
            xs, x_proj_weight, dt_proj_weight, A_log, D, z, delta_bias,
            out_dtype == torch.float32 and xs.dtype != torch.float32, backend, torch.is_grad_enabled())
