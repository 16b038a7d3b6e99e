"""The ``linzoo::`` custom ops against their registrations: ``torch.library.opcheck`` runs each op for real and
through its fake (meta) implementation and autograd registration, so that ``torch.compile`` graphs get the shapes,
strides and dtypes the kernels produce. Triton runs in the interpreter on the CPU (or on CUDA)."""
import os

import pytest
import torch

import kernels  # noqa: F401 - registers the ops
from kernels import triton_backend

if torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1':
    import kernels.route_gather  # noqa: F401 - registers linzoo::route_gather (imported by scans on first use)

CUDA = torch.cuda.is_available()
DEVICE = 'cuda' if CUDA else ('cpu' if os.environ.get('TRITON_INTERPRET') == '1' else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
ops = torch.ops.linzoo


def _rand(*shape, **kwargs):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), **kwargs).to(DEVICE)


def _layer_norm_cases():
    x = _rand(2, 8, 3, 5)
    w, b = _rand(8), _rand(8)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    unmergeable = _rand(2, 8, 6, 5)[:, :, ::2]  # spatial dims that do not merge into one stride
    cases = {}
    for name, inp in (('channel_first', x), ('channels_last', channels_last), ('unmergeable', unmergeable)):
        cases[f'layer_norm_fwd_{name}'] = (ops.layer_norm_2d_fwd.default, (inp, w, b, 1e-5, torch.float32))
        y, mean, rstd = ops.layer_norm_2d_fwd(inp, w, b, 1e-5, torch.float32)
        cases[f'layer_norm_bwd_{name}'] = (ops.layer_norm_2d_bwd.default, (torch.randn_like(y), inp, w, mean, rstd))
    cases['layer_norm_fwd_half_out'] = (ops.layer_norm_2d_fwd.default, (x, None, None, 1e-6, torch.bfloat16))
    return cases


def _route_gather_cases():
    index = torch.stack([torch.randperm(15, generator=torch.Generator().manual_seed(k)) for k in range(4)]).to(DEVICE)
    maps = _rand(2, 1, 6, 15)
    routes = _rand(2, 4, 6, 15)
    return {
        'route_gather_flatten': (ops.route_gather.default, (maps, index, False, False, False)),
        'route_gather_flatten_channels_last': (ops.route_gather.default, (_rand(2, 1, 15, 6), index, False, True, False)),
        'route_gather_merge': (ops.route_gather.default, (routes, index, True, False, False)),
        'route_gather_merge_channels_contiguous': (ops.route_gather.default, (routes, index, True, False, True)),
    }


def _scan_cases():
    batch, dim, groups, dstate, length = 2, 8, 2, 3, 40
    u, delta = _rand(batch, dim, length), 0.5 * _rand(batch, dim, length).sigmoid()
    A = -_rand(dim, dstate).abs() - 0.05
    x_dbl = _rand(batch, groups, 1 + 2 * dstate, length)  # B and C as slices, like the projected scan's
    B, C = x_dbl[:, :, 1:1 + dstate], x_dbl[:, :, 1 + dstate:]
    D, z, bias = _rand(dim), _rand(batch, dim, length), _rand(dim)
    cases = {}
    for backend in ('triton', 'torch'):
        fwd = (u, delta, A, B, C, D, z, bias, True, False, False, backend)
        cases[f'scan_fwd_{backend}'] = (ops.selective_scan_fwd.default, fwd)
        cases[f'scan_fwd_hidden_states_{backend}'] = (
            ops.selective_scan_fwd.default, (u, delta, A, B, None, None, None, bias, True, True, False, backend))
        out, _, states = ops.selective_scan_fwd(*fwd)
        cases[f'scan_bwd_{backend}'] = (ops.selective_scan_bwd.default,
                                        (torch.randn_like(out), u, delta, A, B, C, D, z, bias, states, True, False,
                                         backend))
    return cases


def _causal_conv1d_cases():
    x, weight, bias = _rand(2, 6, 13), _rand(6, 1, 4), _rand(6)
    strided = _rand(2, 13, 6).transpose(1, 2)
    y = ops.causal_conv1d_fwd(x, weight, bias, True, torch.float32)
    return {
        'causal_conv1d_fwd': (ops.causal_conv1d_fwd.default, (x, weight, bias, True, torch.float32)),
        'causal_conv1d_fwd_strided_no_bias': (ops.causal_conv1d_fwd.default, (strided, weight, None, False,
                                                                               torch.float32)),
        'causal_conv1d_bwd': (ops.causal_conv1d_bwd.default, (torch.randn_like(y), x, weight, bias, True)),
    }


CASES = {**_layer_norm_cases(), **_route_gather_cases(), **_scan_cases(), **_causal_conv1d_cases()} \
    if DEVICE is not None else {}


@pytest.mark.parametrize('case', list(CASES))
def test_custom_op_registrations(case):
    op, args = CASES[case]
    torch.library.opcheck(op, args, test_utils=('test_schema', 'test_autograd_registration', 'test_faketensor',
                                                'test_aot_dispatch_dynamic'))


def test_scan_backward_with_per_program_rows(monkeypatch):
    monkeypatch.setattr(triton_backend, 'PARTIAL_MIN_PROGRAMS', 1)
    op, args = CASES['scan_bwd_triton']
    torch.library.opcheck(op, args)
