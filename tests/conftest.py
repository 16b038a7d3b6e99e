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

import pytest  # noqa: E402


def _backport_interpreter_index() -> None:
    """Triton's interpreter up to 3.6 at least (torch 2.9's 3.5, 2.11's 3.6) converts a scalar to a Python int with
    ``int(array)``, which numpy 2.4 refuses for its 1-element arrays, so every kernel loop over a runtime bound
    failed there; Triton 3.8 squeezes first. The same conversion for every version, in interpreter mode only (on a
    Triton that already squeezes it changes nothing)."""
    if os.environ.get('TRITON_INTERPRET') != '1':
        return
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    patch_tensor = getattr(interpreter, '_patch_lang_tensor', None)
    if patch_tensor is None:
        return

    def index(self):
        return int(self.handle.data.squeeze())

    def patch_tensor_with_index(tensor, *args, **kwargs):
        patch_tensor(tensor, *args, **kwargs)
        scope = args[0] if args else kwargs.get('scope')  # Triton 3.6+ restores patched attributes through it
        if scope is not None:
            scope.set_attr(tensor, '__index__', index)
        else:
            tensor.__index__ = index

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
