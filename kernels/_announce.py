"""Say once which backend a kernel family uses (never a silent fallback)."""
import logging

import torch

_logger = logging.getLogger('kernels')
_announced = set()


def announce(key: str, message: str, warn: bool = False) -> None:
    """Log ``message`` the first time ``key`` is seen (as a warning with ``warn``)."""
    # Skipped while torch.compile traces: a log call would break the graph, and eager runs say it anyway.
    if key not in _announced and not torch.compiler.is_compiling():
        _announced.add(key)
        (_logger.warning if warn else _logger.info)(message)
