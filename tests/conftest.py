"""Test configuration.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU tensors. The interpreter is
chosen when ``triton.jit`` decorates a function, so the variable must be set before any kernel module is
imported; it is decided from the device nodes, without importing torch first.
"""
import glob
import os

if not glob.glob('/dev/nvidia[0-9]*'):
    os.environ.setdefault('TRITON_INTERPRET', '1')
