"""The causal depthwise conv1d (+ SiLU): the Triton kernel against PyTorch's conv1d, values and gradients."""
import os

import pytest
import torch
import torch.nn.functional as F

from kernels import causal_conv1d

CUDA = torch.cuda.is_available()
TRITON_DEVICE = 'cuda' if CUDA else ('cpu' if os.environ.get('TRITON_INTERPRET') == '1' else None)


def reference(x, weight, bias, silu):
    taps = weight.shape[-1]
    y = F.conv1d(x, weight.view(x.shape[1], 1, taps), bias, padding=taps - 1, groups=x.shape[1])[..., :x.shape[-1]]
    return F.silu(y) if silu else y


@pytest.mark.parametrize('length', [1, 3, 7, 130])
@pytest.mark.parametrize('taps, silu, has_bias, strided', [(4, True, True, False), (4, False, False, True),
                                                             (3, True, False, True), (2, False, True, False)])
def test_torch_backend_is_nn_conv1d_cut_to_length(length, taps, silu, has_bias, strided):
    """The definition: an nn.Conv1d padded by K - 1 on both sides, outputs past the input length dropped."""
    g = torch.Generator().manual_seed(length)
    conv = torch.nn.Conv1d(6, 6, taps, groups=6, padding=taps - 1, bias=has_bias)
    x = torch.randn(2, length, 6, generator=g).transpose(1, 2) if strided else torch.randn(2, 6, length, generator=g)
    expected = conv(x)[..., :length]
    expected = F.silu(expected) if silu else expected
    out = causal_conv1d(x, conv.weight, conv.bias, activation='silu' if silu else None, backend='torch')
    torch.testing.assert_close(out, expected)
    # Causal: perturbing the last step changes nothing before it.
    x2 = x.clone()
    x2[..., -1] += 1.0
    out2 = causal_conv1d(x2, conv.weight, conv.bias, activation='silu' if silu else None, backend='torch')
    torch.testing.assert_close(out2[..., :-1], out[..., :-1])


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('length', [1, 5, 37, 300])
@pytest.mark.parametrize('taps, silu, has_bias, strided', [(4, True, True, False), (4, False, False, True),
                                                             (3, True, False, True), (2, False, True, False)])
def test_triton_matches_conv1d(length, taps, silu, has_bias, strided):
    g = torch.Generator().manual_seed(length + taps)
    channels = 10
    x = (torch.randn(3, length, channels, generator=g).transpose(1, 2) if strided
         else torch.randn(3, channels, length, generator=g)).to(TRITON_DEVICE)
    weight = (0.5 * torch.randn(channels, 1, taps, generator=g)).to(TRITON_DEVICE)
    # The bias as every other entry of a longer vector: a strided view must be read as its values.
    bias_base = torch.randn(2 * channels, generator=g).to(TRITON_DEVICE) if has_bias else None
    dy = torch.randn(3, channels, length, generator=g).to(TRITON_DEVICE)
    results = []
    for backend in ('triton', 'torch'):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias_base)]
        bias = leaves[2][::2] if has_bias else None
        out = causal_conv1d(leaves[0], leaves[1], bias, activation='silu' if silu else None, backend=backend)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], dy)
        results.append((out, grads))
    (out, grads), (ref, ref_grads) = results
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.shape == ref_grad.shape and grad.dtype == ref_grad.dtype
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
def test_triton_offsets_along_the_sequence_are_64_bit():
    """A sequence whose step stride times its length passes 2**31 elements (e.g. a channel-last (B, L, C) map
    viewed channel-first): 32-bit offsets read out of bounds (a crash in the interpreter)."""
    stride = 2 ** 30
    storage = torch.zeros(2 * stride + 1, dtype=torch.float16, device=TRITON_DEVICE)  # 4 GiB, untouched but 3 steps
    x = storage.as_strided((1, 1, 3), (1, 1, stride))
    with torch.no_grad():
        x.copy_(torch.tensor([[[1.0, 2.0, 3.0]]]))
    weight = torch.tensor([[[0.1, 0.2, 0.5]]], dtype=torch.float16, device=TRITON_DEVICE, requires_grad=True)
    outputs = []
    for backend in ('triton', 'torch'):
        leaf = x.detach().requires_grad_() if backend == 'torch' else x.requires_grad_()
        out = causal_conv1d(leaf, weight, activation='silu', backend=backend)
        outputs.append((out.float(), *torch.autograd.grad(out.float().sum(), (leaf, weight))))
    for got, expected in zip(*outputs):
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-3, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason='needs a CUDA device')
def test_triton_under_autocast_returns_autocast_dtype():
    x = torch.randn(2, 64, 197, device='cuda', dtype=torch.bfloat16)
    weight, bias = torch.randn(64, 1, 4, device='cuda'), torch.randn(64, device='cuda')
    with torch.autocast('cuda', torch.bfloat16):
        out = causal_conv1d(x, weight, bias, activation='silu')
        ref = F.silu(F.conv1d(x, weight, bias, padding=3, groups=64)[..., :197])
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('args, match', [
    ((torch.zeros(2, 4), torch.zeros(4, 1, 4)), 'x must be floating'),
    ((torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(4, 1, 4)), 'x must be floating'),
    ((torch.zeros(2, 4, 5), torch.zeros(3, 1, 4)), r'weight must be \(C, 1, K\)'),
    ((torch.zeros(2, 4, 5), torch.zeros(4, 2, 4)), r'weight must be \(C, 1, K\)'),
    ((torch.zeros(2, 4, 5), torch.zeros(4, 4), torch.zeros(3)), r'bias must be \(C,\)'),
])
def test_bad_inputs_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        causal_conv1d(*args)


def test_bad_options_raise_clear_errors(monkeypatch):
    x, w = torch.zeros(1, 2, 3), torch.zeros(2, 1, 4)
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(ValueError, match='needs CUDA tensors'):
        causal_conv1d(x, w, backend='triton')
    with pytest.raises(ValueError, match="activation must be None or 'silu'"):
        causal_conv1d(x, w, activation='gelu')
    with pytest.raises(ValueError, match="backend must be 'triton', 'torch' or None"):
        causal_conv1d(x, w, backend='cuda')
