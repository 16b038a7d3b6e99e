"""kernels.layer_norm_2d and kernels.rms_norm: the Triton kernels (interpreter on CPU, CUDA on a GPU) against PyTorch's
layer_norm and rms_norm."""
import os

import pytest
import torch

import torch.nn.functional as F

from kernels import layer_norm_2d, rms_norm

CUDA = torch.cuda.is_available()
TRITON_DEVICE = 'cuda' if CUDA else ('cpu' if os.environ.get('TRITON_INTERPRET') == '1' else None)
needs_triton = pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')


def make(shape, channels_last, affine, dtype=torch.float32, device=TRITON_DEVICE, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g) * 2 + 0.5).to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    c = shape[1]
    w = (1 + 0.1 * torch.randn(c, generator=g)).to(device).requires_grad_() if affine[0] else None
    b = (0.1 * torch.randn(c, generator=g)).to(device).requires_grad_() if affine[1] else None
    return x, w, b


def run(x, w, b, backend, eps=1e-5):
    y = layer_norm_2d(x, w, b, eps, backend=backend)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device, y.dtype)
    params = [t for t in (x, w, b) if t is not None]
    return y, torch.autograd.grad(y, params, dy)


@needs_triton
@pytest.mark.parametrize('shape', [(2, 5, 3, 7), (3, 96, 4, 4), (1, 130, 1, 9), (2, 8, 1, 1)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('affine', [(True, True), (True, False), (False, False)])
def test_triton_matches_pytorch_in_values_gradients_and_layout(shape, channels_last, affine):
    x, w, b = make(shape, channels_last, affine)
    y, grads = run(x, w, b, 'triton')
    y_ref, grads_ref = run(x, w, b, 'torch')
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    # Output strides of timm's permute -> layer_norm -> permute; the input gradient in the input's layout.
    assert y.stride() == y_ref.stride() and y.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].stride() == x.stride()


@needs_triton
def test_half_input_under_autocast_gives_the_dtype_and_values_of_layer_norm():
    device_type = torch.device(TRITON_DEVICE).type
    x, w, b = make((2, 6, 3, 3), True, (True, True), dtype=torch.float16)
    with torch.autocast(device_type, dtype=torch.float16):
        y = layer_norm_2d(x, w, b, 1e-6, backend='triton')
        y_ref = layer_norm_2d(x, w, b, 1e-6, backend='torch')
    # float32 on CUDA (autocast runs layer_norm in float32); CPU autocast keeps float16.
    assert y.dtype == y_ref.dtype == (torch.float32 if device_type == 'cuda' else torch.float16)
    torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-3)
    assert layer_norm_2d(x, w, b, 1e-6, backend='triton').dtype == torch.float16


@needs_triton
@pytest.mark.parametrize('channels_last', [False, True])
def test_triton_takes_views_that_are_not_dense(channels_last):
    """A channel slice of a larger map (e.g. one half of a projection's output) is normalised in place."""
    x, w, b = make((2, 12, 4, 5), channels_last, (True, True))
    view = x[:, 3:9]
    # Weight and bias as every other entry of longer vectors: strided parameter views too.
    y, grads = run(view, w[::2], b[::2], 'triton')
    y_ref, grads_ref = run(view, w[::2], b[::2], 'torch')
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('backend', ['triton', 'torch'])
def test_out_dtype_rounds_the_float32_result_once(backend):
    device = TRITON_DEVICE if backend == 'triton' else 'cpu'
    if device is None:
        pytest.skip('needs CUDA or TRITON_INTERPRET=1')
    x, w, b = make((2, 6, 3, 5), True, (True, True), device=device)
    y = layer_norm_2d(x, w, b, 1e-5, backend=backend, out_dtype=torch.float16)
    y_ref = layer_norm_2d(x, w, b, 1e-5, backend='torch')
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref.half(), rtol=1e-3, atol=1e-3)
    # The backward takes the half gradient as it is (the values a cast's backward would hand over in float32).
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device, torch.float16)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy.float())
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    # A half input with a wider out_dtype is computed in float32 too: no rounding before the output's.
    x_half = x.detach().bfloat16()
    y = layer_norm_2d(x_half, w, b, 1e-5, backend=backend, out_dtype=torch.float32)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, layer_norm_2d(x_half.float(), w, b, 1e-5, backend='torch'), rtol=1e-5, atol=1e-5)


def test_layer_norm_2d_module_with_autocast_output_returns_the_autocast_dtype():
    from backbones._layers import LayerNorm2d
    norm = LayerNorm2d(6, eps=1e-5, autocast_output=True)
    x = torch.randn(2, 6, 4, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, norm(x).bfloat16(), rtol=0, atol=0)
    assert norm(x).dtype == torch.float32  # outside autocast, the input's dtype
    assert LayerNorm2d(6, device='meta', dtype=torch.float16).weight.dtype == torch.float16  # timm's kwargs


@needs_triton
def test_torch_compile_traces_the_triton_op_without_graph_breaks():
    x, w, b = make((2, 6, 3, 5), True, (True, True))

    def f(x, w, b):
        return layer_norm_2d(x * 2, w, b, 1e-5, backend='triton').square().sum()

    loss = torch.compile(f, fullgraph=True, backend='aot_eager')(x, w, b)
    grads = torch.autograd.grad(loss, [x, w, b])
    ref_loss = f(x, w, b)
    ref_grads = torch.autograd.grad(ref_loss, [x, w, b])
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize('channels_last', [False, True])
def test_pytorch_path_output_takes_in_place_ops_and_gives_timm_gradients(channels_last):
    """Like timm's LayerNorm2d, the output of the PyTorch path can be modified in place under autograd (it must not
    be a custom Function's view)."""
    from timm.layers import LayerNorm2d as TimmLayerNorm2d
    from backbones._layers import LayerNorm2d
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    grads = []
    for norm in (LayerNorm2d(8).double(), TimmLayerNorm2d(8).double()):
        leaf = x.clone().requires_grad_()
        y = norm(leaf)
        y.mul_(2)
        grads.append(torch.autograd.grad(y.square().sum(), leaf)[0])
    torch.testing.assert_close(*grads)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype, out_dtype, tol', [
    (torch.float32, None, 1e-5), (torch.float64, None, 1e-12), (torch.bfloat16, torch.float32, 1e-5),
    (torch.bfloat16, None, 2e-2)])
def test_pytorch_path_compiles_to_one_graph_like_eager(channels_last, dtype, out_dtype, tol):
    """Compiled (fullgraph: a gradient hook is a graph break on torch 2.9), the PyTorch path gives eager's values,
    dtype, channel-last layout and gradients, float64 kept in float64."""
    x, w, b = make((2, 6, 3, 5), channels_last, (True, True), dtype=dtype, device='cpu')
    if dtype == torch.float64:  # F.layer_norm on the CPU takes parameters of x's dtype
        w, b = (p.detach().double().requires_grad_() for p in (w, b))
    scale = torch.randn(2, 6, 3, 5, generator=torch.Generator().manual_seed(2))

    def f(x, w, b):
        y = layer_norm_2d(x, w, b, 1e-5, backend='torch', out_dtype=out_dtype)
        return y, (y.double() * scale).sum()

    y, loss = torch.compile(f, fullgraph=True, backend='aot_eager')(x, w, b)
    ref_y, ref_loss = f(x, w, b)
    assert y.dtype == ref_y.dtype and y.movedim(1, -1).is_contiguous() and ref_y.movedim(1, -1).is_contiguous()
    torch.testing.assert_close(y.double(), ref_y.double(), rtol=tol, atol=tol)
    for g, r in zip(torch.autograd.grad(loss, [x, w, b]), torch.autograd.grad(ref_loss, [x, w, b])):
        torch.testing.assert_close(g.double(), r.double(), rtol=tol, atol=tol)


def test_pytorch_path_compiled_backward_takes_a_strided_gradient_through_a_view():
    """F.layer_norm's backward returns a contiguous gradient where its meta function promises the strided output
    gradient's strides, so a compiled backward that viewed it failed ("view size is not compatible"): GroupMamba's
    group norm, a LayerNorm of a reshaped map."""
    x = torch.randn(2, 8, 3, 5, requires_grad=True)
    scale = torch.randn(8, 1, 1)

    def f(x):
        return (layer_norm_2d(x.reshape(4, 4, 3, 5), None, None, 1e-5, backend='torch').reshape(2, 8, 3, 5)
                * scale).sum()

    grad = torch.autograd.grad(torch.compile(f, fullgraph=True, backend='aot_eager')(x), x)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(f(x), x)[0], rtol=1e-4, atol=1e-5)


def test_bad_arguments_raise_clear_errors(monkeypatch):
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r'weight must have shape \(C,\) = \(4,\)'):
        layer_norm_2d(x, torch.ones(5), None, 1e-5)
    with pytest.raises(ValueError, match=r'x must be \(B, C, ...\)'):
        layer_norm_2d(torch.randn(4), None, None, 1e-5)
    with pytest.raises(ValueError, match='backend must be'):
        layer_norm_2d(x, None, None, 1e-5, backend='cuda')
    with pytest.raises(ValueError, match='out_dtype must be a floating dtype'):
        layer_norm_2d(x, None, None, 1e-5, out_dtype=torch.int32)
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(ValueError, match='needs CUDA tensors'):
        layer_norm_2d(x, None, None, 1e-5, backend='triton')


@needs_triton
@pytest.mark.parametrize('shape', [(2, 7, 12), (3, 5, 130), (6, 16), (2, 3, 4, 8)])
@pytest.mark.parametrize('out_dtype', [None, torch.bfloat16])
def test_rms_norm_matches_pytorch_in_values_and_gradients(shape, out_dtype):
    """rms_norm over the last dim (Vim's norm): F.rms_norm's values (rounded once to out_dtype) and gradients, the
    input gradient contiguous like the input."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=g) * 2 + 0.5).to(TRITON_DEVICE).requires_grad_()
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(TRITON_DEVICE).requires_grad_()
    results = []
    for backend in ('triton', 'torch'):
        y = rms_norm(x, w, 1e-5, out_dtype=out_dtype, backend=backend)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device, y.dtype)
        results.append((y, *torch.autograd.grad(y, (x, w), dy)))
    (y, dx, dw), (y_ref, dx_ref, dw_ref) = results
    assert y.dtype == (out_dtype or x.dtype) and y.shape == x.shape and y.is_contiguous()
    torch.testing.assert_close(y_ref, F.rms_norm(x, (shape[-1],), w, 1e-5).to(y.dtype), rtol=0, atol=0)
    tol = 1e-5 if out_dtype is None else 2 ** -7  # the interpreter's bfloat16 cast may round differently
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-4, atol=1e-4)
    assert dx.is_contiguous()


def test_rms_norm_rejects_a_weight_of_the_wrong_size():
    with pytest.raises(ValueError, match=r'weight must have shape \(D,\)'):
        rms_norm(torch.randn(2, 3, 8), torch.ones(7), 1e-5)
