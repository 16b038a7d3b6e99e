"""How the kernel families dispatch: say once which backend is in use, and when to skip the custom ops."""
import logging

import torch
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
