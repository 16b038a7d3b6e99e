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
