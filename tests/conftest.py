"""Test configuration.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU tensors. The interpreter is
chosen when ``triton.jit`` decorates a function, so the variable must be set before any kernel module is
imported; it is decided from the device nodes, without importing torch first.
"""
import glob
import os

if not glob.glob('/dev/nvidia[0-9]*'):
    os.environ.setdefault('TRITON_INTERPRET', '1')

import importlib  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402


def _backport_interpreter_index() -> None:
    """Triton 3.5's interpreter (torch 2.9's) converts a scalar to a Python int with ``int(array)``, which numpy
    2.4 refuses for its 1-element arrays, so every kernel loop over a runtime bound failed there; Triton 3.6 squeezes
    first. The same conversion, for the interpreter tests on that Triton only."""
    if os.environ.get('TRITON_INTERPRET') != '1':
        return
    try:
        import triton
        from triton.runtime import interpreter
    except ImportError:
        return
    major_minor = re.match(r'(\d+)\.(\d+)', triton.__version__)
    if major_minor is None or tuple(map(int, major_minor.groups())) >= (3, 6):
        return
    patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor_with_index(tensor):
        patch_tensor(tensor)
        tensor.__index__ = lambda self: int(self.handle.data.squeeze())

    interpreter._patch_lang_tensor = patch_tensor_with_index


_backport_interpreter_index()


@pytest.fixture
def scan_calls(monkeypatch):
    """Record every selective-scan kernel call of the eager paths (``selective_scan`` and the fused
    ``projected_selective_scan`` node) as dicts of the u / B / output tensors."""
    module = importlib.import_module('kernels.selective_scan')
    calls = []
    forward = module._fwd_impl

    def spy(u, delta, A, B, *args):
        out = forward(u, delta, A, B, *args)
        calls.append(dict(u=u, B=B, out=out[0]))
        return out

    monkeypatch.setattr(module, '_fwd_impl', spy)
    return calls
