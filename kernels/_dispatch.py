"""How the kernel families dispatch: import Triton or say why not, pick and announce a backend once, read autocast
without breaking torch.compile graphs, and skip the custom ops in eager calls."""
import contextlib
import importlib
import logging
import os
from types import ModuleType
from typing import Callable, ContextManager, Optional, Tuple, Type

import torch
from torch.autograd.function import once_differentiable
from torch.profiler import record_function
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

_logger = logging.getLogger('kernels')
_announced = set()


def announce(key: str, message: str, warn: bool = False) -> None:
    """Log ``message`` the first time ``key`` is seen (as a warning with ``warn``)."""
    # Skipped while torch.compile traces: a log call would break the graph, and eager runs say it anyway.
    if key not in _announced and not torch.compiler.is_compiling():
        _announced.add(key)
        (_logger.warning if warn else _logger.info)(message)


def import_triton_module(name: str) -> Tuple[Optional[ModuleType], Optional[str]]:
    """``(kernels.<name>, None)``, or ``(None, why)`` where it (Triton) does not import: the callers then fall back
    to PyTorch and say why once, instead of failing at ``import kernels``."""
    try:
        return importlib.import_module(f'{__package__}.{name}'), None
    except ImportError as e:
        return None, f'{type(e).__name__}: {e}'


def triton_or_torch(op: str, x: torch.Tensor, backend: Optional[str], triton_module: Optional[ModuleType],
                    import_error: Optional[str], torch_kernel: str) -> str:
    """The backend of a kernel with a Triton and a PyTorch implementation, said once.

    ``backend=None`` picks Triton for CUDA tensors in float16 / bfloat16 / float32 (float64 keeps PyTorch's kernel:
    the Triton ones compute in float32), else PyTorch (``torch_kernel`` names it for the warning when Triton does
    not import). An explicit 'triton' is checked: importable, and CUDA tensors unless TRITON_INTERPRET=1.
    """
    if backend is None:
        fast_dtype = x.dtype in (torch.float16, torch.bfloat16, torch.float32)
        backend = 'triton' if x.is_cuda and fast_dtype and triton_module is not None else 'torch'
        if x.is_cuda and triton_module is None:
            announce(f'{op}:torch-cuda', f'{op}: Triton is unavailable ({import_error}); CUDA tensors use '
                                         f'{torch_kernel}', warn=True)
        else:
            announce(f'{op}:{backend}', f'{op}: using the {backend} backend for {x.device.type} tensors')
    elif backend not in ('triton', 'torch'):
        raise ValueError(f"{op}: backend must be 'triton', 'torch' or None, got {backend!r}")
    elif backend == 'triton' and triton_module is None:
        raise RuntimeError(f'{op}: backend="triton" requested but Triton failed to import ({import_error})')
    elif backend == 'triton' and not x.is_cuda and os.environ.get('TRITON_INTERPRET', '0') != '1':
        raise ValueError(f'{op}: backend="triton" needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got '
                         f'{x.device.type} tensors')
    return backend


@torch.compiler.assume_constant_result
def autocast_available(device_type: str) -> bool:
    """``torch.amp.is_autocast_available``, constant-folded under ``torch.compile``.

    Dynamo (torch 2.11) cannot trace the C function behind it: every call was a graph break, 57 per VMamba test
    model, and the resumed frames recompiled per block until the recompile limit sent them back to eager (compiled
    training ran at half the eager speed). Whether a device type has autocast never changes.
    """
    return torch.amp.is_autocast_available(device_type)


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in on ``device_type``; None where autocast is off or absent (e.g. meta)."""
    if autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_off(device_type: str) -> ContextManager:
    """A context that disables autocast on ``device_type`` (nothing to disable where it has none)."""
    return torch.autocast(device_type, enabled=False) if autocast_available(device_type) else contextlib.nullcontext()


def use_custom_op() -> bool:
    """Whether a kernel goes through its ``torch.library`` custom op rather than its plain autograd.Function.

    The custom ops are for graphs and dispatch modes: ``torch.compile`` traces them as opaque nodes and a
    ``TorchDispatchMode`` (``FlopCounterMode``, fake tensors) sees them by name. Eager calls skip their dispatch,
    which costs about as much CPU time as the kernel launch (and CPU time bounded eager training steps).
    """
    return torch.compiler.is_compiling() or is_in_torch_dispatch_mode()


def profiled(name: str):
    """``record_function(name)`` while a profiler records, else a no-op context.

    Names the eager kernels like their custom ops in profiles; entering a ``record_function`` costs several
    microseconds of CPU, paid ~240 times per VMamba-T training step when nobody is looking.
    """
    return record_function(name) if torch._C._autograd._profiler_enabled() else contextlib.nullcontext()


def eager_function(
        name: str,
        op_name: str,
        forward_impl: Callable,
        setup_context: Callable,
        backward: Callable,
) -> Type[torch.autograd.Function]:
    """The ``torch.autograd.Function`` named ``name`` that runs a custom op's forward implementation, context setup
    and backward without the op's dispatch, for eager calls (see ``use_custom_op``).

    Outputs after the first (of a tuple) are non-differentiable; the backward is once-differentiable (the kernels
    have no derivative of their own); both directions are named ``{op_name}_fwd`` / ``_bwd`` in profiles, like the
    op.
    """
    def forward(ctx, *inputs):
        with profiled(f'{op_name}_fwd'):
            output = forward_impl(*inputs)
        setup_context(ctx, inputs, output)
        if isinstance(output, tuple):
            ctx.mark_non_differentiable(*output[1:])
        return output

    @once_differentiable
    def backward_(ctx, *grads):
        with profiled(f'{op_name}_bwd'):
            return backward(ctx, *grads)

    # Built with type() so that autograd names the backward node after ``name`` (e.g. in profiles).
    return type(name, (torch.autograd.Function,), {
        '__doc__': f'Eager ``{op_name}``: the custom op without its dispatch.',
        'forward': staticmethod(forward), 'backward': staticmethod(backward_)})
