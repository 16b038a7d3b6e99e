"""Tests of the shared selective-SSM core ``backbones.ssm.SelectiveSSM``."""
import contextlib
import importlib
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from backbones.ssm import SelectiveSSM, ssm_no_weight_decay
from kernels import projected_selective_scan, selective_scan

# The package exports the function under the module's name.
selective_scan_module = importlib.import_module('kernels.selective_scan')


def _randomise(ssm: SelectiveSSM, seed: int = 0) -> SelectiveSSM:
    """Move every parameter off its (often constant) init so that a wrong index or split shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ssm.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return ssm


def _reference(ssm: SelectiveSSM, xs: torch.Tensor, z=None, route_offset: int = 0) -> torch.Tensor:
    """Per-route, per-time-step float64 loop straight from the S6 equations."""
    batch, routes, channels, length = xs.shape
    rank, dstate = ssm.dt_rank, ssm.d_state
    xs = xs.double()
    out = torch.empty_like(xs)
    for k in range(routes):
        p = 0 if ssm.shared_proj else route_offset + k
        r = route_offset + k
        dbc = torch.einsum('cd,bdl->bcl', ssm.x_proj_weight[p].double(), xs[:, k])
        dt_low, Bs, Cs = dbc[:, :rank], dbc[:, rank:rank + dstate], dbc[:, rank + dstate:]
        delta = torch.einsum('dr,brl->bdl', ssm.dt_projs_weight[p].double(), dt_low)
        delta = F.softplus(delta + ssm.dt_projs_bias[p].double()[None, :, None])
        A = -torch.exp(ssm.A_logs.double().view(ssm.num_routes, channels, dstate)[r])
        D = ssm.Ds.double().view(ssm.num_routes, channels)[r]
        h = xs.new_zeros(batch, channels, dstate)
        for t in range(length):
            dt = delta[:, :, t, None]
            h = torch.exp(dt * A) * h + dt * Bs[:, None, :, t] * xs[:, k, :, t, None]
            y = (h * Cs[:, None, :, t]).sum(-1) + D * xs[:, k, :, t]
            if z is not None:
                y = y * F.silu(z[:, k, :, t].double())
            out[:, k, :, t] = y
    return out


def test_mamba_initialisation():
    torch.manual_seed(0)
    ssm = SelectiveSSM(64, d_state=4, dt_rank=3, num_routes=4)
    assert ssm.x_proj_weight.shape == (4, 3 + 2 * 4, 64)
    assert ssm.dt_projs_weight.shape == (4, 64, 3) and ssm.dt_projs_bias.shape == (4, 64)
    assert ssm.A_logs.shape == (4 * 64, 4) and ssm.Ds.shape == (4 * 64,)
    assert ssm.x_proj_weight.abs().max() <= 64 ** -0.5
    assert ssm.dt_projs_weight.abs().max() <= 3 ** -0.5
    assert ssm.dt_projs_weight.abs().max() > 0.8 * 3 ** -0.5  # uniform over the whole range, not a tiny init
    dt = F.softplus(ssm.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log-uniform: about half of the samples below the geometric mean sqrt(1e-3 * 0.1) = 0.01
    assert 0.35 < (dt < 0.01).float().mean() < 0.65
    torch.testing.assert_close(ssm.A_logs, torch.log(torch.arange(1., 5.)).expand(4 * 64, 4))
    assert bool((ssm.Ds == 1).all())


def test_dt_init_floor():
    ssm = SelectiveSSM(256, d_state=1, dt_rank=1, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-4)
    torch.testing.assert_close(F.softplus(ssm.dt_projs_bias), torch.full((1, 256), 1e-4))


@pytest.mark.parametrize('shared_proj', [False, True])
def test_matches_reference(shared_proj):
    torch.manual_seed(0)
    ssm = _randomise(SelectiveSSM(5, d_state=3, dt_rank=2, num_routes=3, shared_proj=shared_proj))
    if shared_proj:
        assert ssm.x_proj_weight.shape[0] == ssm.dt_projs_weight.shape[0] == ssm.dt_projs_bias.shape[0] == 1
        assert ssm.A_logs.shape[0] == ssm.Ds.shape[0] == 3 * 5
    xs = torch.randn(2, 3, 5, 9)
    z = torch.randn(2, 3, 5, 9)
    with torch.no_grad():
        torch.testing.assert_close(ssm(xs).double(), _reference(ssm, xs), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(ssm(xs, z).double(), _reference(ssm, xs, z), atol=2e-5, rtol=1e-4)
        # route_offset selects the parameter groups of a subset of routes (MSVMamba's separate branches)
        torch.testing.assert_close(
            ssm(xs[:, 1:], route_offset=1).double(), _reference(ssm, xs[:, 1:], route_offset=1), atol=2e-5,
            rtol=1e-4)


def test_routes_are_independent_parameter_groups():
    torch.manual_seed(0)
    ssm = _randomise(SelectiveSSM(6, d_state=2, dt_rank=1, num_routes=4))
    xs = torch.randn(2, 4, 6, 11)
    with torch.no_grad():
        full = ssm(xs)
        for k in range(4):
            torch.testing.assert_close(ssm(xs[:, k:k + 1], route_offset=k), full[:, k:k + 1])


def test_forward_states():
    torch.manual_seed(0)
    ssm = _randomise(SelectiveSSM(4, d_state=3, dt_rank=1, num_routes=2))
    xs = torch.randn(2, 2, 4, 10)
    with torch.no_grad():
        h, C = ssm.forward_states(xs)
        assert h.shape == (2, 2, 4, 3, 10) and C.shape == (2, 2, 3, 10)
        y = (h * C[:, :, None]).sum(3) + ssm.Ds.view(1, 2, 4, 1) * xs
        torch.testing.assert_close(y, ssm(xs), atol=1e-5, rtol=1e-5)


def test_backward_reaches_every_parameter():
    ssm = SelectiveSSM(4, d_state=2, dt_rank=1, num_routes=2)
    xs = torch.randn(2, 2, 4, 8, requires_grad=True)
    ssm(xs).square().sum().backward()
    assert xs.grad is not None
    for name, p in ssm.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


@pytest.mark.parametrize('float32_output', [True, False])
def test_half_inputs_give_float32_outputs_unless_turned_off(float32_output):
    ssm = SelectiveSSM(4, d_state=2, dt_rank=1, num_routes=2, float32_output=float32_output)
    xs = torch.randn(2, 2, 4, 8)
    with torch.no_grad():
        ref = ssm(xs)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = ssm(xs.bfloat16())
    assert out.dtype == (torch.float32 if float32_output else torch.bfloat16)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    if not float32_output:  # the same result, rounded once to the inputs' dtype
        ssm.float32_output = True
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            wide = ssm(xs.bfloat16())
        torch.testing.assert_close(out, wide.bfloat16(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize('backend', ['torch', 'triton'])
@pytest.mark.parametrize('gated', [False, True])
def test_half_inputs_equal_the_official_float32_casts(backend, gated, monkeypatch):
    """The kernel computes in float32 from half inputs: casting them first (vanilla VMamba, EfficientVMamba,
    MSVMamba and GroupMamba officially do) changes no bit of the outputs or of any gradient (on CUDA, to float32
    rounding: there the fused node's kernels compute A = -exp(A_log) themselves, the reference's A comes from
    torch.exp)."""
    device = 'cpu'
    if backend == 'triton':
        triton_backend = selective_scan_module._triton_backend
        if torch.cuda.is_available():
            device = 'cuda'
        elif triton_backend is None or not triton_backend.INTERPRET:
            pytest.skip('the Triton backend needs CUDA or TRITON_INTERPRET=1 (set by conftest without a GPU)')
    monkeypatch.setattr(selective_scan_module, '_pick_backend', lambda u, requested: backend)
    ssm = SelectiveSSM(8, d_state=4, dt_rank=2, num_routes=2).to(device)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(2, 2, 8, 37, generator=g).bfloat16().to(device)
    z = torch.randn(2, 2, 8, 37, generator=g).bfloat16().to(device) if gated else None
    weight = torch.randn(2, 2, 8, 37, generator=g).to(device)
    results = []
    for cast in (False, True):
        ssm.zero_grad()
        x = xs.clone().requires_grad_()
        gate = z.clone().requires_grad_() if gated else None
        with torch.autocast(device, dtype=torch.bfloat16):
            if cast:  # the official path: float32 route inputs into the scan
                x_proj_weight, dt_proj_weight, A_log, D, delta_bias = ssm._parameters_for(x, 0)
                dts, Bs, Cs = torch.split(torch.matmul(x_proj_weight, x), [2, 4, 4], dim=2)
                u, delta = x.reshape(2, 16, 37), torch.matmul(dt_proj_weight, dts).reshape(2, 16, 37)
                y = selective_scan(u.float(), delta.float(), -torch.exp(A_log.float()), Bs.float(), Cs.float(), D,
                                   z=gate.float().reshape(u.shape) if gated else None, delta_bias=delta_bias,
                                   delta_softplus=True).view(x.shape)
            else:
                y = ssm(x, z=gate)
        (y * weight).sum().backward()
        results.append([y, x.grad] + ([gate.grad] if gated else []) + [p.grad.clone() for p in ssm.parameters()])
    interpreted = backend == 'triton' and device == 'cpu'
    exp_in_kernel = backend == 'triton' and device == 'cuda'
    for i, (ours, official) in enumerate(zip(*results)):
        assert ours.dtype == official.dtype
        if i == 1:
            # x.grad: the fused backward adds the scan's input gradient inside the x_proj GEMM, one bfloat16
            # rounding fewer than autograd's separate add.
            torch.testing.assert_close(ours.float(), official.float(), rtol=2e-2, atol=2e-2)
        elif interpreted:
            # Triton's interpreter truncates float32 -> bfloat16 stores of du and ddelta where GPUs and torch round
            # to nearest, so gradients there agree only to bfloat16 precision; on a GPU the test demands bit equality.
            torch.testing.assert_close(ours.float(), official.float(), rtol=2e-2, atol=2e-2)
        elif exp_in_kernel:
            rtol = 1e-2 if ours.dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(ours, official, rtol=rtol, atol=rtol)
        else:
            assert torch.equal(ours, official)


def test_float64_stays_float64():
    ssm = SelectiveSSM(4, d_state=2, dt_rank=1, num_routes=2).double()
    xs = torch.randn(2, 2, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        out = ssm(xs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference(ssm, xs))


def test_float32_parameters_with_float64_inputs_compute_in_float64():
    """Every path promotes like the fused node: forward_states and the composition (FLOP counting) too."""
    ssm = SelectiveSSM(3, d_state=2, dt_rank=1, num_routes=2)
    ssm64 = SelectiveSSM(3, d_state=2, dt_rank=1, num_routes=2).double()
    ssm64.load_state_dict(ssm.state_dict())
    xs = torch.randn(2, 2, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        for got, expected in ((ssm.forward_states(xs), ssm64.forward_states(xs)), ((ssm(xs),), (ssm64(xs),))):
            for g, e in zip(got, expected):
                assert g.dtype == torch.float64
                torch.testing.assert_close(g, e, rtol=0, atol=0)
        with FlopCounterMode(display=False):
            torch.testing.assert_close(ssm(xs), ssm64(xs), rtol=0, atol=0)


def test_bad_inputs_raise():
    ssm = SelectiveSSM(4, d_state=2, dt_rank=1, num_routes=2)
    with pytest.raises(ValueError, match='channels per route'):
        ssm(torch.randn(2, 2, 5, 8))
    with pytest.raises(ValueError, match='route groups'):
        ssm(torch.randn(2, 2, 4, 8), route_offset=1)
    with pytest.raises(ValueError, match=r"\(B, K, C', L\)"):
        ssm(torch.randn(2, 8, 8))
    with pytest.raises(ValueError, match='gate z'):
        ssm(torch.randn(2, 2, 4, 8), z=torch.randn(2, 2, 4, 7))
    with pytest.raises(ValueError, match='d_state'):
        SelectiveSSM(4, d_state=0, dt_rank=1)
    with pytest.raises(ValueError, match='dt_min'):
        SelectiveSSM(4, d_state=1, dt_rank=1, dt_min=0.2, dt_max=0.1)


def test_no_weight_decay_names():
    from timm.optim import param_groups_weight_decay

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ModuleDict(dict(ssm=SelectiveSSM(4, 2, 1, 2))))
    names = ssm_no_weight_decay(model)
    assert names == {'1.ssm.A_logs', '1.ssm.Ds', '1.ssm.dt_projs_bias'}
    groups = param_groups_weight_decay(model, weight_decay=0.05, no_weight_decay_list=names)
    no_decay = {id(p) for g in groups if g['weight_decay'] == 0 for p in g['params']}
    params = dict(model.named_parameters())
    assert all(id(params[n]) in no_decay for n in names)
    assert id(params['1.ssm.x_proj_weight']) not in no_decay and id(params['0.weight']) not in no_decay


def test_meta_device_construction():
    with torch.device('meta'):
        ssm = SelectiveSSM(8, d_state=4, dt_rank=1, num_routes=4)
    assert ssm.A_logs.is_meta and sum(p.numel() for p in ssm.parameters()) == 4 * (9 * 8 + 8 + 8 + 8 * 4 + 8)


class _PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('shared', [False, True])
@pytest.mark.parametrize('gated', [False, True])
def test_projected_scan_node_equals_the_composition_of_matmuls_and_selective_scan(shared, gated):
    """The fused autograd node (eager) and the composition used under torch.compile / dispatch modes agree in the
    output and every gradient."""
    g = torch.Generator().manual_seed(0)
    batch, routes, channels, length, rank, dstate = 2, 3, 5, 11, 2, 4
    f64 = dict(dtype=torch.float64)
    xs = torch.randn(batch, routes, channels, length, generator=g, **f64)
    w_x = torch.randn(1 if shared else routes, rank + 2 * dstate, channels, generator=g, **f64) * 0.3
    w_dt = torch.randn(1 if shared else routes, channels, rank, generator=g, **f64) * 0.3
    A_log = torch.log(torch.rand(routes * channels, dstate, generator=g, **f64) + 0.5)
    D = torch.randn(routes * channels, generator=g, **f64)
    bias = torch.randn(routes * channels, generator=g, **f64) * 0.1
    z = torch.randn(batch, routes * channels, length, generator=g, **f64) if gated else None
    inputs = [t.requires_grad_() for t in (xs, w_x, w_dt, A_log, D, bias) + ((z,) if gated else ())]
    dout = torch.randn(batch, routes * channels, length, generator=g, **f64)
    results = []
    for mode in (contextlib.nullcontext, _PassThrough):
        with mode():
            y = projected_selective_scan(xs, w_x, w_dt, A_log, D, z=z, delta_bias=bias, backend='torch')
        results.append([y] + list(torch.autograd.grad(y, inputs, dout)))
    for fused, composed in zip(*results):
        torch.testing.assert_close(fused, composed, rtol=1e-10, atol=1e-10)
    # Frozen projections (fine-tuning): no weight gradients, the same input gradient.
    w_x.requires_grad_(False)
    w_dt.requires_grad_(False)
    y = projected_selective_scan(xs, w_x, w_dt, A_log, D, z=z, delta_bias=bias, backend='torch')
    torch.testing.assert_close(torch.autograd.grad(y, xs, dout)[0], results[1][1], rtol=1e-10, atol=1e-10)


def test_projected_scan_rejects_mismatched_weights():
    xs = torch.randn(2, 3, 5, 7)
    with pytest.raises(ValueError, match=r'x_proj_weight must be \(K=3 or 1, out, in\)'):
        projected_selective_scan(xs, torch.randn(2, 6, 5), torch.randn(3, 5, 2), -torch.ones(15, 2))
    with pytest.raises(ValueError, match=r"x_proj_weight must have shape \(K or 1, R \+ 2N, C'\)"):
        projected_selective_scan(xs, torch.randn(3, 7, 5), torch.randn(3, 5, 2), -torch.ones(15, 2))
    with pytest.raises(ValueError, match='must both be per route'):
        projected_selective_scan(xs, torch.randn(1, 6, 5), torch.randn(3, 5, 2), -torch.ones(15, 2))
    with pytest.raises(ValueError, match=r'u must be non-empty'):
        projected_selective_scan(xs[:0], torch.randn(3, 6, 5), torch.randn(3, 5, 2), -torch.ones(15, 2))
    with pytest.raises(ValueError, match=r"A_log must be \(K C' = 15, N\)"):
        projected_selective_scan(xs, torch.randn(3, 6, 5), torch.randn(3, 5, 2), -torch.ones(5, 2))


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1' and not torch.cuda.is_available(),
                    reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('steps', [False, True])
def test_projected_scan_triton_takes_A_log_in_the_kernels(steps, monkeypatch):
    """The Triton path of the fused node passes A_log to the kernels (A = -exp(A_log) there, dA_log = dA * A at the
    end of the backward): the output and every gradient equal the PyTorch path's, for the chunked and the
    token-by-token forward, and with no gradient needed (no chunk states saved) the output is unchanged."""
    import kernels.triton_backend as triton_backend
    monkeypatch.setattr(triton_backend, 'STEPS_MIN_STATES', 2 if steps else 10 ** 9)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    g = torch.Generator().manual_seed(0)
    batch, routes, channels, length, rank, dstate = 2, 2, 4, 37, 2, 4
    xs = torch.randn(batch, routes, channels, length, generator=g)
    w_x = torch.randn(routes, rank + 2 * dstate, channels, generator=g) * 0.3
    w_dt = torch.randn(routes, channels, rank, generator=g) * 0.3
    A_log = torch.log(torch.rand(routes * channels, dstate, generator=g) + 0.5)
    D = torch.randn(routes * channels, generator=g)
    bias = torch.randn(routes * channels, generator=g) * 0.1
    z = torch.randn(batch, routes * channels, length, generator=g)
    dout = torch.randn(batch, routes * channels, length, generator=g)
    results = []
    for backend in ('triton', 'torch'):
        inputs = [t.to(device).requires_grad_() for t in (xs, w_x, w_dt, A_log, D, bias, z)]
        y = projected_selective_scan(*inputs[:5], z=inputs[6], delta_bias=inputs[5], backend=backend)
        results.append([y] + list(torch.autograd.grad(y, inputs, dout.to(device))))
    for name, got, want in zip(['y', 'dxs', 'dw_x', 'dw_dt', 'dA_log', 'dD', 'dbias', 'dz'], *results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
    # Without a backward (inference: no_grad, whether or not the weights require grad, as a model's parameters do)
    # the forward saves no chunk states; the output is the same.
    need_states = []
    forward = triton_backend.selective_scan_fwd

    def spy(*args, **kwargs):
        need_states.append(kwargs['need_states'])
        return forward(*args, **kwargs)

    monkeypatch.setattr(triton_backend, 'selective_scan_fwd', spy)
    for requires_grad in (False, True):
        with torch.no_grad():
            inputs = [t.to(device).requires_grad_(requires_grad) for t in (xs, w_x, w_dt, A_log, D, bias, z)]
            y = projected_selective_scan(*inputs[:5], z=inputs[6], delta_bias=inputs[5], backend='triton')
        torch.testing.assert_close(y, results[0][0], rtol=0, atol=0)
    projected_selective_scan(*inputs[:5], z=inputs[6], delta_bias=inputs[5], backend='triton')
    assert need_states == [False, False, True]
