"""The ``linzoo::`` custom ops against their registrations: ``torch.library.opcheck`` runs each op for real and
through its fake (meta) implementation and autograd registration, so that ``torch.compile`` graphs get the shapes,
strides and dtypes the kernels produce. Triton runs in the interpreter on the CPU (or on CUDA)."""
import os

import pytest
import torch

import kernels  # noqa: F401 - registers the ops
from kernels import autocast_dtype, autocast_off, triton_backend

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
    tokens = _rand(2, 7, 12).transpose(1, 2)  # rms_norm's (B, D, L) view of (B, L, D) tokens
    cases['rms_norm_fwd'] = (ops.rms_norm_fwd.default, (tokens, w.new_ones(12), 1e-5, torch.bfloat16))
    y, rstd = ops.rms_norm_fwd(tokens, w.new_ones(12), 1e-5, torch.float32)
    cases['rms_norm_bwd'] = (ops.rms_norm_bwd.default, (torch.randn_like(y), tokens, w.new_ones(12), rstd))
    return cases


def _route_gather_cases():
    index = torch.stack([torch.randperm(15, generator=torch.Generator().manual_seed(k)) for k in range(4)]).to(DEVICE)
    maps = _rand(2, 1, 6, 15)
    routes = _rand(2, 4, 6, 15)
    return {
        'route_gather_flatten': (ops.route_gather.default, (maps, index, False, False, False)),
        'route_gather_flatten_channels_last': (ops.route_gather.default,
                                               (_rand(2, 1, 15, 6), index, False, True, False)),
        'route_gather_merge': (ops.route_gather.default, (routes, index, True, False, False)),
        'route_gather_merge_channels_contiguous': (ops.route_gather.default, (routes, index, True, False, True)),
        'route_gather_merge_scaled_cast': (ops.route_gather.default,
                                           (routes, index, True, False, True, 0.5, torch.bfloat16)),
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


def test_autocast_dtype_folds_under_compile_and_follows_autocast():
    """``autocast_dtype`` constant-folds ``torch.amp.is_autocast_available`` (opaque to dynamo: a graph break per
    call in torch 2.11) but still reads the autocast state, which compiled graphs are guarded on: one fullgraph
    function returns what eager does with autocast off, bfloat16 and float16, and on a device type without
    autocast."""
    def cast(x):
        dtype = autocast_dtype(x.device.type)
        return x.to(dtype) if dtype is not None else x * 2
    compiled = torch.compile(cast, fullgraph=True, backend='aot_eager')
    x = torch.ones(3)
    assert compiled(x).dtype == torch.float32 and compiled(x)[0] == 2
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast('cpu', dtype):
            assert compiled(x).dtype == dtype
    assert compiled(x).dtype == torch.float32
    assert compiled(torch.ones(3, device='meta')).dtype == torch.float32
    with autocast_off('cpu'), autocast_off('meta'):
        assert not torch.is_autocast_enabled('cpu')
