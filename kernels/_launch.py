"""Triton launches that find their compiled kernel by a cheap key: the CPU time of eager models.

``kernel[grid](*args, **meta)`` binds the arguments and builds Triton's specialisation key in Python on every call
(argument binding, per-argument specialisation, the key's string form, the options' repr): 24.7-26.6 us of CPU
per route-gather launch on an H100 host, 17.9 through this class, 7-11 for the compiled kernel's launcher alone
(tenth session, benchmarks/models.md). Eager Vim and VMamba are bound by CPU time in the forward, with four to six
Triton launches per block. ``CachedLauncher`` keys the compiled kernel on what decides Triton's specialisation,
finer than Triton does (the values of the scalar arguments, the dtype and 16-byte alignment of each pointer, the
constexprs and options, the device), and on a hit launches the compiled kernel itself (``compiled[grid](*args)``,
Triton's launch of ahead-of-time compiled kernels, which honours its launch hooks). A miss and the interpreter take
``kernel[grid]``.
"""
import os
from typing import Any, Callable, Dict, Optional, Tuple

import triton
from triton.runtime import driver

from ._dispatch import announce

__all__ = ['CachedLauncher']

_INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
# Entries per kernel before the table is cleared (a model sees a handful of shapes; varying input sizes add more).
_MAX_ENTRIES = 4096


class CachedLauncher:
    """``launcher[grid](*args, **meta)`` == ``kernel[grid](*args, **meta)``, cheaper on the CPU when repeated.

    The kernel's pointer parameters (names ending in ``_ptr``) must come first and be passed positionally as
    tensors; the rest of the positional arguments are scalars; constexprs and launch options come as keywords.
    """

    def __init__(self, kernel: triton.runtime.JITFunction):
        self.kernel = kernel
        names = list(kernel.arg_names)
        self.num_pointers = next((i for i, name in enumerate(names) if not name.endswith('_ptr')), len(names))
        if any(name.endswith('_ptr') for name in names[self.num_pointers:]):
            raise ValueError(f'CachedLauncher: the pointer parameters of {kernel.__name__} must come first: {names}')
        self.names = names
        self.table: Dict[Tuple[Any, ...], Tuple[Any, Tuple[Any, ...]]] = {}
        self.enabled = not _INTERPRET

    def __getitem__(self, grid: Tuple[int, ...]):
        return lambda *args, **meta: self.launch(grid, args, meta)

    def launch(self, grid: Tuple[int, ...], args: Tuple[Any, ...], meta: Dict[str, Any],
               accept: Optional[Callable[[Any], bool]] = None) -> bool:
        """Launch; with ``accept``, only if ``accept(compiled kernel)`` holds (checked once per compiled kernel, which
        is compiled without running first). Returns whether it launched."""
        if not self.enabled:
            if accept is not None and not accept(self.kernel.warmup(*args, grid=grid, **meta)):
                return False
            self.kernel[grid](*args, **meta)
            return True
        device = driver.active.get_current_device()
        pointers = args[:self.num_pointers]
        key = (device, tuple([(t.dtype, t.data_ptr() & 15 == 0) for t in pointers]), args[self.num_pointers:],
               tuple(meta.items()))
        entry = self.table.get(key)
        if entry is None:
            if accept is None:
                compiled = self.kernel[grid](*args, **meta)
            else:
                compiled = self.kernel.warmup(*args, grid=grid, **meta)
            if hasattr(compiled, 'result'):  # an asynchronous compile's future
                compiled = compiled.result()
            accepted = accept is None or accept(compiled)
            if accept is not None and accepted:
                self.kernel[grid](*args, **meta)
            if len(self.table) >= _MAX_ENTRIES:
                self.table.clear()
            # The launcher takes every parameter in order, constexprs included (it skips them).
            self.table[key] = (compiled, tuple(meta[name] for name in self.names[len(args):]), accepted)
            return accepted
        compiled, constexprs, accepted = entry
        if not accepted:
            return False
        try:
            # The compiled kernel's own launch path (triton.compile(...)[grid](...)): a 3-D grid, every parameter in
            # order.
            compiled[tuple(grid) + (1,) * (3 - len(grid))](*args, *constexprs)
        except TypeError as e:  # a Triton whose compiled kernels launch differently: Triton's own path from now on
            self.enabled = False
            announce(f'launch:{self.kernel.__name__}', f'CachedLauncher: the compiled kernel of this Triton '
                     f'({triton.__version__}) rejected the call ({e}); {self.kernel.__name__} launches through '
                     'kernel[grid] (more CPU time per launch)', warn=True)
            self.kernel[grid](*args, **meta)
        return True
