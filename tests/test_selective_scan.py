"""The selective scan: every backend against the float64 oracle, in values and in every gradient."""
import os

import pytest
import torch

from kernels import available_backends, selective_scan, selective_scan_oracle

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'
# Triton runs on CUDA tensors, or on CPU tensors in the interpreter (never both in one process).
TRITON_DEVICE = 'cuda' if CUDA else ('cpu' if INTERPRET else None)
CPU_BACKENDS = ['torch'] + (['triton'] if TRITON_DEVICE == 'cpu' and 'triton' in available_backends() else [])
GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_inputs(batch=2, dim=8, length=37, dstate=4, groups=2, has_z=True, has_bias=True, has_d=True,
                hidden_states=False, grouped_layout=True, dtype=torch.float32, device='cpu', seed=0):
    """Inputs drawn like mamba_ssm's tests: A = -0.5 rand, delta = 0.5 rand, bias = 0.5 rand."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, normal=True):
        x = torch.randn(*shape, generator=gen) if normal else torch.rand(*shape, generator=gen)
        return (x * scale).to(device)

    bc_shape = (batch, groups, dstate, length) if grouped_layout else (batch, dstate, length)
    inputs = dict(
        u=rand(batch, dim, length).to(dtype),
        delta=rand(batch, dim, length, scale=0.5, normal=False).to(dtype),
        A=-0.5 * rand(dstate and dim, dstate, normal=False) - 0.05,
        B=rand(*bc_shape).to(dtype),
        C=None if hidden_states else rand(*bc_shape).to(dtype),
        D=rand(dim) if has_d and not hidden_states else None,
        z=rand(batch, dim, length).to(dtype) if has_z and not hidden_states else None,
        delta_bias=rand(dim, scale=0.5, normal=False) if has_bias else None,
    )
    return {k: (v.requires_grad_() if v is not None else None) for k, v in inputs.items()}


def run_with_grads(inputs, seed=1, **kwargs):
    out = selective_scan(**inputs, **kwargs)
    main = out[0] if isinstance(out, tuple) else out
    grad_out = torch.randn(main.shape, generator=torch.Generator().manual_seed(seed)).to(main.device, main.dtype)
    names = [k for k in GRAD_NAMES if inputs[k] is not None]
    grads = torch.autograd.grad(main, [inputs[k] for k in names], grad_out)
    return out, dict(zip(names, grads))


def assert_close(actual, expected, rtol, atol, what):
    """Elementwise |a - e| <= atol * max|e| + rtol * |e|: the scale-free form of mamba_ssm's check.

    The scale is floored at 1e-5 of the unit-scale inputs: a gradient that is exactly zero (dA of a one-token
    sequence, whose h_{-1} is 0) comes out of float32 arithmetic on a GPU as rounding noise (6e-9 seen)."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    scale = expected.abs().max().clamp_min(1e-5)
    err = (actual - expected).abs() - rtol * expected.abs()
    assert err.max() <= atol * scale, f'{what}: max error {(actual - expected).abs().max():.3e} (scale {scale:.3e})'


def check_against_oracle(inputs, rtol, atol, **kwargs):
    out, grads = run_with_grads(inputs, **kwargs)
    ref, ref_grads = run_with_grads(inputs, **dict(kwargs, backend='oracle'))
    if isinstance(out, tuple):
        assert_close(out[1], ref[1], rtol, atol, 'last_state')
        out, ref = out[0], ref[0]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert_close(out, ref, rtol, atol, 'out')
    for name in ref_grads:
        assert grads[name].shape == inputs[name].shape and grads[name].dtype == inputs[name].dtype, name
        assert_close(grads[name], ref_grads[name], rtol, atol, f'd{name}')


CASES = {
    # name: (make_inputs kwargs, selective_scan kwargs)
    'vmamba_k4_n1': (dict(dim=8, groups=4, dstate=1, length=45, has_z=False), dict(delta_softplus=True)),
    'vim_gated_n4': (dict(dim=6, groups=1, dstate=4, length=33), dict(delta_softplus=True)),
    'odd_n3_groups2': (dict(dim=6, groups=2, dstate=3, length=70), dict(delta_softplus=True)),
    'no_softplus_no_bias': (dict(dim=4, groups=1, dstate=2, length=29, has_bias=False), dict()),
    'no_d_no_z': (dict(dim=4, groups=2, dstate=2, length=16, has_d=False, has_z=False), dict(delta_softplus=True)),
    'bc_3d_layout': (dict(dim=5, groups=1, dstate=2, length=17, grouped_layout=False), dict(delta_softplus=True)),
    'length_1': (dict(dim=4, groups=1, dstate=2, length=1), dict(delta_softplus=True)),
    'last_state': (dict(dim=4, groups=2, dstate=2, length=40), dict(delta_softplus=True, return_last_state=True)),
    'last_state_one_chunk': (dict(dim=4, groups=2, dstate=3, length=13),
                             dict(delta_softplus=True, return_last_state=True)),
    'hidden_states': (dict(dim=4, groups=2, dstate=2, length=35, hidden_states=True),
                      dict(delta_softplus=True, return_hidden_states=True)),
    'hidden_states_n1': (dict(dim=6, groups=1, dstate=1, length=20, hidden_states=True),
                         dict(delta_softplus=True, return_hidden_states=True)),
    'groups_dim_not_pow2': (dict(dim=12, groups=2, dstate=1, length=50), dict(delta_softplus=True)),
}


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('case', list(CASES))
def test_cpu_backend_matches_oracle(backend, case):
    make_kwargs, kwargs = CASES[case]
    check_against_oracle(make_inputs(**make_kwargs), rtol=6e-4, atol=2e-3, backend=backend, **kwargs)


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('rows', ['per_program', 'per_program_two_launches', 'atomic'])
def test_triton_dB_dC_sums_per_program_or_atomic(rows, monkeypatch):
    from kernels import triton_backend
    batch, dim, groups, dstate, length = 3, 32, 2, 3, 40
    block_d = triton_backend.launch_config(dstate, length, dim // groups, backward=True, rows=batch * dim)[0]
    programs = dim // groups // block_d
    assert programs > 1
    sample_bytes = programs * groups * dstate * length * 4 * 2
    monkeypatch.setattr(triton_backend, 'PARTIAL_MIN_PROGRAMS', 10 ** 9 if rows == 'atomic' else 1)
    if rows == 'per_program_two_launches':  # rows for two samples: launches of 2 and 1
        monkeypatch.setattr(triton_backend, 'PARTIAL_BYTES', 2 * sample_bytes)
    expected = {'per_program': batch, 'per_program_two_launches': 2, 'atomic': 0}[rows]
    assert triton_backend.partial_batch(batch, groups, dstate, length, programs, True) == expected
    inputs = make_inputs(batch=batch, device=TRITON_DEVICE, dim=dim, groups=groups, dstate=dstate, length=length)
    check_against_oracle(inputs, rtol=6e-4, atol=2e-3, backend='triton', delta_softplus=True)


STEPS_CASES = [name for name, (make_kwargs, kwargs) in CASES.items()
               if make_kwargs.get('dstate', 4) > 1 and not kwargs.get('return_hidden_states')]


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('tiles', ['chunk', 'sub_tiles'])
@pytest.mark.parametrize('case', STEPS_CASES)
def test_triton_steps_forward_matches_oracle(case, tiles, monkeypatch):
    """The token-by-token forward (N >= 8 on the GPU), forced for every N here, with a state chunk as one tile or
    walked in smaller tiles (long sequences); the chunked backward starts from the chunk states it saves."""
    from kernels import triton_backend
    monkeypatch.setattr(triton_backend, 'STEPS_MIN_STATES', 2)
    if tiles == 'sub_tiles':
        monkeypatch.setattr(triton_backend, 'STEPS_TILE_SHORT', 2)
        monkeypatch.setattr(triton_backend, 'STEPS_TILE_LONG', 4)
    make_kwargs, kwargs = CASES[case]
    inputs = make_inputs(**dict(make_kwargs, device=TRITON_DEVICE))
    batch, dim, length = inputs['u'].shape
    assert triton_backend.steps_forward(inputs['A'].shape[1], length, batch * dim)
    check_against_oracle(inputs, rtol=6e-4, atol=2e-3, backend='triton', **kwargs)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_strided_parameter_views(backend):
    """D and delta_bias as every other entry of longer vectors (views, not copies) are read as their values."""
    inputs = make_inputs(dim=6, groups=2, dstate=2, length=21)
    g = torch.Generator().manual_seed(3)
    for name in ('D', 'delta_bias'):
        inputs[name] = (0.5 * torch.rand(12, generator=g)).requires_grad_()[::2]
    out = selective_scan(**inputs, delta_softplus=True, backend=backend)
    ref = selective_scan(**inputs, delta_softplus=True, backend='oracle')
    assert_close(out, ref, 6e-4, 2e-3, 'out')


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_half_inputs_with_float32_output(backend):
    inputs = make_inputs(dim=4, groups=2, dstate=2, length=24, dtype=torch.float16)
    out = selective_scan(**inputs, delta_softplus=True, out_dtype=torch.float32, backend=backend)
    ref = selective_scan_oracle(**{k: v.detach() if v is not None else None for k, v in inputs.items()},
                                delta_softplus=True)
    assert out.dtype == torch.float32
    assert_close(out, ref, 3e-3, 5e-3, 'out')


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_extreme_steps(backend):
    """delta past the softplus threshold (dt = delta) and tiny decays (a -> 0) stay finite and exact."""
    inputs = make_inputs(dim=4, groups=1, dstate=2, length=21, has_z=False)
    with torch.no_grad():
        inputs['delta'][:, :2] += 30.0
        inputs['A'][0] = -50.0
    check_against_oracle(inputs, rtol=6e-4, atol=2e-3, backend=backend, delta_softplus=True)


@pytest.mark.parametrize('length', [1, 15, 16, 17, 48, 100])
@pytest.mark.parametrize('reverse', [False, True])
def test_linear_recurrence_matches_a_loop(length, reverse):
    from kernels.torch_backend import linear_recurrence
    gen = torch.Generator().manual_seed(length)
    a, b = torch.rand(2, 3, length, generator=gen, dtype=torch.float64), torch.randn(2, 3, length, generator=gen,
                                                                                      dtype=torch.float64)
    steps = range(length - 1, -1, -1) if reverse else range(length)
    h, expected = torch.zeros(2, 3, dtype=torch.float64), torch.empty_like(b)
    for t in steps:
        h = a[..., t] * h + b[..., t]
        expected[..., t] = h
    torch.testing.assert_close(linear_recurrence(a, b, reverse=reverse), expected)


def test_delta_dtype_may_differ_from_u():
    """Unlike mamba_ssm (Expected delta.scalar_type() == input_type) a float32 delta with half u is fine."""
    inputs = make_inputs(dim=4, groups=1, dstate=2, length=8, dtype=torch.float16)
    inputs['delta'] = inputs['delta'].detach().float().requires_grad_()
    out, grads = run_with_grads(inputs, delta_softplus=True, backend='torch')
    assert out.dtype == torch.float16 and grads['delta'].dtype == torch.float32


@pytest.mark.parametrize('backend', ['torch'] + (['triton'] if TRITON_DEVICE else []))
def test_torch_compile_traces_without_graph_breaks(backend):
    device = TRITON_DEVICE if backend == 'triton' else 'cpu'
    inputs = make_inputs(dim=4, groups=2, dstate=2, length=40, device=device)

    def f(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan(u * 2, delta, A, B, C, D, z, delta_bias, delta_softplus=True, backend=backend).sum()

    compiled = torch.compile(f, fullgraph=True, backend='aot_eager')
    loss = compiled(**inputs)
    grads = torch.autograd.grad(loss, [inputs[k] for k in GRAD_NAMES])
    ref_loss = f(**inputs)
    ref_grads = torch.autograd.grad(ref_loss, [inputs[k] for k in GRAD_NAMES])
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


BAD_INPUTS = {
    'u rank': (lambda i: i.update(u=i['u'][0]), 'u must be \\(batch, D, L\\)'),
    'delta shape': (lambda i: i.update(delta=i['delta'][:, :, :-1]), 'delta must have shape'),
    'A rows': (lambda i: i.update(A=i['A'][:-1]), 'A must be \\(D=8, N\\)'),
    'B batch': (lambda i: i.update(B=i['B'][:1]), 'B must be \\(batch=2'),
    'groups do not divide D': (lambda i: i.update(B=torch.randn(2, 3, 4, 37), C=torch.randn(2, 3, 4, 37)),
                               'must be divisible by the number of B groups G=3'),
    'C states': (lambda i: i.update(C=i['C'][:, :, :2]), 'C has N=2 states but A has N=4'),
    'integer u': (lambda i: i.update(u=i['u'].long()), 'u must be a real floating-point tensor'),
    'D shape': (lambda i: i.update(D=torch.randn(3)), 'D must have shape \\(D,\\)'),
    'z shape': (lambda i: i.update(z=torch.randn(2, 8, 5)), 'z must have shape'),
    'missing C': (lambda i: i.update(C=None), 'C is required'),
    'device mismatch': (lambda i: i.update(D=torch.randn(8, device='meta')), 'D is on meta but u is on cpu'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(case):
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(dim=8, dstate=4).items()}
    mutate, message = BAD_INPUTS[case]
    mutate(inputs)
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs, backend='torch')


def test_bad_options_raise_clear_errors():
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(dim=4, dstate=2).items()}
    with pytest.raises(ValueError, match='backend must be one of'):
        selective_scan(**inputs, backend='cuda')
    with pytest.raises(ValueError, match='out_dtype must be None'):
        selective_scan(**inputs, out_dtype=torch.float16)
    with pytest.raises(ValueError, match='C must be None with return_hidden_states'):
        selective_scan(**inputs, return_hidden_states=True)


GPU_CASES = {
    'vmamba_v2_stage1_like': (dict(batch=2, dim=64, groups=4, dstate=1, length=3136, has_z=False),
                              dict(delta_softplus=True)),
    # 196 tokens: the rows forward and the backward on 4-token aligned rows (32-token chunks of 8 channels).
    'vmamba_v2_stage3_like': (dict(batch=2, dim=64, groups=4, dstate=1, length=196), dict(delta_softplus=True)),
    'vmamba_v2_stage4_like': (dict(batch=2, dim=96, groups=4, dstate=1, length=49, has_z=False),
                              dict(delta_softplus=True)),
    'vanilla_n16': (dict(batch=2, dim=32, groups=4, dstate=16, length=784, has_z=False), dict(delta_softplus=True)),
    'vim_gated_n16': (dict(batch=2, dim=48, groups=1, dstate=16, length=197), dict(delta_softplus=True)),
    # N = 12 < N_PAD = 16: the token-by-token forward's padded states load zeros from clamped rows.
    'padded_states_n12': (dict(batch=2, dim=32, groups=2, dstate=12, length=100), dict(delta_softplus=True,
                                                                                         return_last_state=True)),
    'odd_everything': (dict(batch=3, dim=30, groups=3, dstate=5, length=1001), dict(delta_softplus=True,
                                                                                      return_last_state=True)),
    'hidden_states': (dict(batch=2, dim=16, groups=1, dstate=1, length=600, hidden_states=True),
                      dict(delta_softplus=True, return_hidden_states=True)),
    # Spatial-Mamba's stage-3 call: the rows forward writing hidden states.
    'hidden_states_rows': (dict(batch=2, dim=64, groups=2, dstate=1, length=196, hidden_states=True),
                           dict(delta_softplus=True, return_hidden_states=True)),
}
GPU_TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}


class _LaunchSpy:
    """Counts the launches of a CachedLauncher."""

    def __init__(self, launcher):
        self.launcher, self.calls = launcher, 0

    def __getitem__(self, grid):
        self.calls += 1
        return self.launcher[grid]


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('forward', ['rows', 'chunks'])
def test_triton_n1_forwards_match_oracle(forward, monkeypatch):
    """Both N = 1 forwards: the rows forward (programs of 32 channels whose chunks cross row ends, a masked tail, the
    chunk states it saves for the backward) and the chunked forward it replaces up to ``ROWS_MAX_LENGTH``."""
    from kernels import triton_backend
    if forward == 'chunks':
        monkeypatch.setattr(triton_backend, 'ROWS_MAX_LENGTH', 0)
    spy = _LaunchSpy(triton_backend._selective_scan_fwd_rows_launch)
    monkeypatch.setattr(triton_backend, '_selective_scan_fwd_rows_launch', spy)
    inputs = make_inputs(batch=2, dim=64, groups=2, dstate=1, length=37, device=TRITON_DEVICE)
    check_against_oracle(inputs, rtol=6e-4, atol=2e-3, backend='triton', delta_softplus=True, return_last_state=True)
    assert spy.calls == (1 if forward == 'rows' else 0)
    # Rows that are not one contiguous stream (u sliced from longer rows) take the chunked forward.
    spy.calls = 0
    u_wide = torch.zeros(2, 64, 40, device=TRITON_DEVICE)
    u_wide[..., :37] = inputs['u'].detach()
    u_view = u_wide[..., :37].requires_grad_()
    check_against_oracle(dict(inputs, u=u_view), rtol=6e-4, atol=2e-3, backend='triton', delta_softplus=True)
    assert spy.calls == 0


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', list(GPU_TOLERANCES), ids=str)
@pytest.mark.parametrize('case', list(GPU_CASES))
def test_triton_on_gpu_matches_oracle(case, dtype):
    make_kwargs, kwargs = GPU_CASES[case]
    inputs = make_inputs(device='cuda', dtype=dtype, **make_kwargs)
    rtol, atol = GPU_TOLERANCES[dtype]
    # The oracle sees the same (rounded) half inputs, so the comparison measures the kernel's own error.
    check_against_oracle(inputs, rtol=rtol, atol=atol, backend='triton', **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
def test_triton_model_size_tiles_on_gpu(dtype, monkeypatch):
    # Model-size calls take wider N = 16 programs than the small cases above (launch_config keeps MIN_PROGRAMS in
    # flight); here those tiles at sizes the oracle can check: 8 channels backward, 16 forward at L >= 1024.
    from kernels import triton_backend
    monkeypatch.setattr(triton_backend, 'MIN_PROGRAMS', 1)
    launcher = triton_backend._selective_scan_bwd_launch
    launcher.table.clear()
    assert triton_backend.launch_config(16, 197, 48, backward=True, rows=96)[0] == 8
    assert triton_backend.launch_config(16, 1100, 48, backward=False, rows=96)[0] == 16
    for length in (197, 1100):
        inputs = make_inputs(device='cuda', dtype=dtype, batch=2, dim=96, groups=2, dstate=16, length=length)
        check_against_oracle(inputs, *GPU_TOLERANCES[dtype], backend='triton', delta_softplus=True)
    # The short N = 16 backward takes its cross-lane steps in inline PTX (its layout check passed: the launcher
    # accepted the compiled kernel), 8 channels per warp, as many warps as divide the group (2 of 48 channels, 4 of
    # 64), or, where the check fails, Triton's own scans and reductions.
    assert triton_backend.lane_ptx(16, 8, 16, 1, 48) == (16, 2)
    assert triton_backend.lane_ptx(16, 8, 16, 1, 64) == (32, 4)
    assert triton_backend.lane_ptx(16, 8, 16, 1, 8) == (8, 1)
    inputs = make_inputs(device='cuda', dtype=dtype, batch=2, dim=128, groups=2, dstate=16, length=197)
    check_against_oracle(inputs, *GPU_TOLERANCES[dtype], backend='triton', delta_softplus=True)
    launched = {dict(key[-1])['BLOCK_D']: entry[2] for key, entry in launcher.table.items()
                if ('LANE_PTX', True) in key[-1]}
    assert launched == {16: True, 32: True}
    monkeypatch.setattr(triton_backend, '_lane_ptx_layout_ok', lambda compiled: False)
    launcher.table.clear()
    inputs = make_inputs(device='cuda', dtype=dtype, batch=2, dim=96, groups=2, dstate=16, length=197)
    check_against_oracle(inputs, *GPU_TOLERANCES[dtype], backend='triton', delta_softplus=True)
    launcher.table.clear()  # the refusals above were this test's
    # N = 1, L = 49 (VMamba-T stage 4): the rows forward (32 channels per program, 256-token chunks across rows),
    # then the chunked forward it replaces, whose 8-token chunks save every other state for the backward.
    assert triton_backend.rows_forward(1, 49, 32) == 32
    assert triton_backend.launch_config(1, 49, 64, backward=False, rows=128)[:2] == (16, 8)
    inputs = make_inputs(device='cuda', dtype=dtype, batch=2, dim=128, groups=4, dstate=1, length=49, has_z=False)
    for rows_max_length in (256, 0):
        monkeypatch.setattr(triton_backend, 'ROWS_MAX_LENGTH', rows_max_length)
        check_against_oracle(inputs, *GPU_TOLERANCES[dtype], backend='triton', delta_softplus=True,
                             return_last_state=True)


def test_forward_chunks_tile_the_backward_chunks(monkeypatch):
    """Whatever tile the forward takes, its chunks tile the backward's: the states it saves (one per
    ``state_chunk`` tokens) are the starts of the chunks the backward walks."""
    from kernels import triton_backend
    monkeypatch.setattr(triton_backend, 'INTERPRET', False)  # the GPU's tiles, not the interpreter's
    for dstate in (1, 2, 16):
        for length in (1, 7, 49, 64, 65, 196, 197, 256, 257, 784, 1024, 3136, 6085):
            chunk = triton_backend.state_chunk(dstate, length)
            backward = triton_backend.launch_config(dstate, length, 96, backward=True, rows=128 * 96)
            forward = triton_backend.launch_config(dstate, length, 96, backward=False, rows=128 * 96)
            assert backward[1] == chunk and chunk % forward[1] == 0, (dstate, length, forward, backward)


def test_steps_forward_caps_registers_where_programs_outnumber_an_uncapped_wave(monkeypatch):
    from kernels import triton_backend
    monkeypatch.setattr(triton_backend, '_multiprocessors', lambda device: 132)  # an H100
    assert not triton_backend.steps_register_cap(768, torch.device('cuda', 0))  # Vim-T's call at batch 32
    assert triton_backend.steps_register_cap(1536, torch.device('cuda', 0))  # at batch 64


@pytest.mark.gpu
def test_steps_forward_takes_n16_calls_unless_long_with_few_rows():
    """The forward kernel choice on the model shapes it was measured on (benchmarks/selective_scan.md)."""
    from kernels.triton_backend import steps_forward
    assert steps_forward(16, 197, 128 * 768)  # Vim-T's call at 224 px
    assert steps_forward(16, 197, 1 * 768)  # and at batch 1
    assert steps_forward(16, 784, 128 * 1536)  # vanilla VMamba-T stage 2
    assert steps_forward(16, 3136, 128 * 768)  # vanilla VMamba-T stage 1
    assert steps_forward(16, 6085, 32 * 768)  # Vim-T at 1248 px
    assert not steps_forward(16, 3136, 8 * 768)  # long with few rows: each token's latency exposed
    assert not steps_forward(4, 197, 128 * 768)  # small N scans chunks
    assert not steps_forward(1, 197, 128 * 768)


@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
def test_triton_steps_forward_on_gpu(dtype):
    # A long sequence with few rows takes the token-by-token forward at its real tile (16 channels, N = 16).
    from kernels import triton_backend
    assert triton_backend.steps_forward(16, 1100, 192)
    inputs = make_inputs(device='cuda', dtype=dtype, batch=2, dim=96, groups=2, dstate=16, length=1100)
    check_against_oracle(inputs, *GPU_TOLERANCES[dtype], backend='triton', delta_softplus=True, return_last_state=True)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
def test_torch_backend_on_gpu_matches_triton():
    inputs = make_inputs(device='cuda', dim=16, groups=4, dstate=2, length=300)
    out, grads = run_with_grads(inputs, delta_softplus=True, backend='triton')
    ref, ref_grads = run_with_grads(inputs, delta_softplus=True, backend='torch')
    assert_close(out, ref, 1e-4, 1e-4, 'out')
    for name in grads:
        assert_close(grads[name], ref_grads[name], 1e-4, 1e-4, name)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs a CUDA device (the interpreter runs atomics in order)')
def test_triton_backward_is_deterministic_with_rows_per_program(monkeypatch):
    from kernels import triton_backend
    monkeypatch.setattr(triton_backend, 'PARTIAL_MIN_PROGRAMS', 1)
    inputs = make_inputs(device='cuda', batch=4, dim=256, groups=2, dstate=16, length=500)
    first = run_with_grads(inputs, delta_softplus=True, backend='triton')[1]
    second = run_with_grads(inputs, delta_softplus=True, backend='triton')[1]
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_lane_ptx_layout_check_reads_the_compiled_layout():
    # The backward's inline PTX assumes 4 tokens per thread, lane = 4 x channel + token // 4; the check reads the
    # layout Triton gave every inline-asm op from the TTGIR and refuses any other (or none).
    triton_backend = pytest.importorskip('kernels.triton_backend')

    def compiled(size, threads, channels=8, warps='[1, 1]'):
        ttgir = (f'#blocked2 = #ttg.blocked<{{sizePerThread = {size}, threadsPerWarp = {threads}, '
                 f'warpsPerCTA = {warps}, order = [1, 0]}}>\n'
                 '%s = tt.elementwise_inline_asm "mov.u32 ln, %laneid;" {pure = true} %a, %b : '
                 f'tensor<{channels}x16xf32, #blocked2>, tensor<{channels}x16xf32, #blocked2> -> '
                 f'tensor<{channels}x16xf32, #blocked2>\n')
        return type('Compiled', (), {'asm': {'ttgir': ttgir}})()

    assert triton_backend._lane_ptx_layout_ok(compiled('[1, 4]', '[8, 4]'))
    assert triton_backend._lane_ptx_layout_ok(compiled('[1, 4]', '[8, 4]', 32, '[4, 1]'))  # a warp per 8 channels
    assert not triton_backend._lane_ptx_layout_ok(compiled('[1, 4]', '[8, 4]', 32, '[2, 2]'))
    assert not triton_backend._lane_ptx_layout_ok(compiled('[1, 1]', '[2, 16]'))
    assert not triton_backend._lane_ptx_layout_ok(type('Compiled', (), {'asm': {'ttgir': ''}})())


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or the Triton interpreter')
def test_sum_parts_sums_the_middle_axis_and_casts():
    # The backward's finishing sums in one launch: per-program dB / dC rows (12 programs of a group, bf16 out) beside
    # per-sample parameter gradients (float32 out), parts not a multiple of the kernel's 16-part tiles.
    from kernels import triton_backend
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 12, 600, torch.bfloat16), (6, 12, 600, torch.bfloat16), (1, 37, 300, torch.float32),
              (1, 37, 1, torch.float32), (1, 37, 16, torch.float32)]
    jobs = [(torch.randn(outer, parts, inner, generator=gen).to(TRITON_DEVICE),
             torch.full((outer, inner), float('nan'), dtype=dtype, device=TRITON_DEVICE), outer, parts)
            for outer, parts, inner, dtype in shapes]
    triton_backend.sum_parts(jobs)
    for x, out, _, _ in jobs:
        assert_close(out, x.double().sum(1).to(out.dtype), 1e-2 if out.dtype == torch.bfloat16 else 1e-6, 1e-6,
                     'sum')
    with pytest.raises(ValueError, match='contiguous float32 x'):
        triton_backend.sum_parts([(jobs[0][0].double(),) + jobs[0][1:]])


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or the Triton interpreter')
def test_padded_rows_copies_strided_rows_with_zero_tails():
    # The backward's B / C rows padded to whole chunks, from strided views as the fused projection passes them.
    from kernels import triton_backend
    x_dbl = torch.randn(3, 2, 4 + 2 * 5, 37).to(TRITON_DEVICE)
    B, C = x_dbl[:, :, 4:9], x_dbl[:, :, 9:].to(torch.float64)
    B_pad, C_pad = triton_backend.padded_rows(B, C, 48)
    assert B_pad.shape == C_pad.shape == (3, 2, 5, 48) and (B_pad.dtype, C_pad.dtype) == (B.dtype, C.dtype)
    assert B_pad.is_contiguous() and C_pad.is_contiguous()
    assert torch.equal(B_pad[..., :37], B) and torch.equal(C_pad[..., :37], C)
    assert not B_pad[..., 37:].any() and not C_pad[..., 37:].any()


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or the Triton interpreter')
def test_vector_rows_copies_only_rows_that_cannot_load_as_vectors():
    # The vector loads of B / C (4 tokens each) need whole, aligned rows: rows that are copy nothing.
    from kernels import triton_backend
    B, C = torch.randn(2, 3, 2, 4, 48).to(TRITON_DEVICE).unbind(1)[:2]
    B_vec, C_vec = triton_backend.vector_rows(B, C, 48)
    assert B_vec is B and C_vec is C
    for B_other, length in ((B[..., :44], 48), (B[..., 1:45], 44), (B, 64)):  # short rows, unaligned start, longer
        B_vec, C_vec = triton_backend.vector_rows(B_other, C[..., :B_other.shape[-1]], length)
        assert B_vec.shape[-1] == C_vec.shape[-1] == length and B_vec.data_ptr() != B_other.data_ptr()
        assert torch.equal(B_vec[..., :B_other.shape[-1]], B_other)
