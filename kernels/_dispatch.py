"""How the kernel families dispatch: say once which backend is in use, and when to skip the custom ops."""
import contextlib
import logging

import torch
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
