"""mmengine checkpoints under torch's ``weights_only`` loading (the default since torch 2.6).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so ``resume`` and ``load_from`` meet torch's safe
unpickler, which refuses two things that mmengine's training checkpoints hold: numpy arrays and scalars (the
message hub's logs) and the message hub's ``HistoryBuffer``. The buffer's own pickled state also carries its
class-level statistics functions, which unpickle only through ``getattr``; allowing ``getattr`` would open the safe
unpickler to arbitrary attribute access, so instead a buffer is pickled as its constructor call (the statistics
functions are class-level registrations that importing their modules restores anyway). Together this keeps
``weights_only=True`` for every checkpoint written while ``heads`` is imported, as configs of this project do
through ``custom_imports``; a checkpoint written without it fails to load with torch's message naming ``getattr``.
"""
import copyreg
from typing import Any, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

__all__ = ['register_checkpoint_safe_globals']


def _reduce_history_buffer(buffer: HistoryBuffer) -> Tuple[type, Tuple[Any, ...]]:
    return HistoryBuffer, (buffer._log_history, buffer._count_history, buffer.max_length)


def register_checkpoint_safe_globals() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine training checkpoints (idempotent)."""
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    # numpy's pickling entry points and the dtypes that logs and metrics use (numpy >= 2 names them numpy._core,
    # numpy 1 numpy.core; checkpoints name the module of the numpy that wrote them).
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)]
    torch.serialization.add_safe_globals([
        HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *dtypes,
    ])
