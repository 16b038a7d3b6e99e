"""Block-diagonal and order-2 Monarch products against the dense matrices they represent, in values and gradients."""
import pytest
import torch

from kernels import blockdiag_matmul, blockdiag_to_dense, monarch_matmul, monarch_to_dense

# (k, q, p, l, s, r) with k * q == l * r: square blocks, the M2 MLP shapes scaled down, non-square blocks, and
# block counts that differ between the factors.
MONARCH_SHAPES = [(4, 4, 4, 4, 4, 4), (4, 3, 2, 4, 6, 3), (4, 8, 8, 4, 2, 8), (2, 6, 3, 3, 5, 4), (3, 2, 5, 1, 7, 6)]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize('shape', MONARCH_SHAPES)
def test_monarch_matches_dense_values_and_gradients(shape):
    k, q, p, l, s, r = shape
    w1, w2 = _randn(k, q, p, seed=1).requires_grad_(), _randn(l, s, r, seed=2).requires_grad_()
    x = _randn(2, 3, k * p, seed=3).requires_grad_()
    out = monarch_matmul(x, w1, w2)
    ref = x @ monarch_to_dense(w1, w2).t()
    assert out.shape == (2, 3, s * l)
    torch.testing.assert_close(out, ref)
    grad_out = _randn(*out.shape, seed=4)
    grads = torch.autograd.grad(out, (x, w1, w2), grad_out)
    ref_grads = torch.autograd.grad(ref, (x, w1, w2), grad_out)
    for name, g, g_ref in zip(('x', 'w1', 'w2'), grads, ref_grads):
        torch.testing.assert_close(g, g_ref, msg=lambda m: f'd{name}: {m}')


def test_monarch_dense_structure():
    """The permutation mixes: with square 4-block factors every output depends on every input (a single
    block-diagonal factor would leave 3/4 of the dense matrix zero), and the dense matrix has 2 * 4 * 16 degrees
    of freedom, not 64^2."""
    w1, w2 = _randn(4, 4, 4, seed=1), _randn(4, 4, 4, seed=2)
    dense = monarch_to_dense(w1, w2)
    assert dense.shape == (16, 16) and (dense != 0).all()
    assert (blockdiag_to_dense(w1) == 0).sum() == 16 * 16 * 3 // 4


def test_monarch_identity_factors_give_the_permutation():
    """Identity blocks: M is the reshape-transpose permutation P_out P (x viewed (4, 4) -> transposed twice)."""
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    x = _randn(16)
    torch.testing.assert_close(monarch_matmul(x, eye, eye), x)
    w2 = torch.eye(8, 4, dtype=torch.float64).expand(4, 8, 4)  # keeps the permuted inputs, then zero rows
    out = monarch_matmul(x, eye, w2).reshape(8, 4)  # (s, l): row a of chunk j is out[a, j]
    torch.testing.assert_close(out[:4], x.reshape(4, 4))
    assert (out[4:] == 0).all()


@pytest.mark.parametrize('shape', [(4, 3, 2), (1, 5, 7), (3, 2, 2)])
def test_blockdiag_matches_dense(shape):
    k, q, p = shape
    w = _randn(*shape, seed=1).requires_grad_()
    bias = _randn(k * q, seed=2).requires_grad_()
    x = _randn(5, k * p, seed=3).requires_grad_()
    out = blockdiag_matmul(x, w, bias)
    ref = x @ blockdiag_to_dense(w).t() + bias
    torch.testing.assert_close(out, ref)
    grad_out = _randn(*out.shape, seed=4)
    for g, g_ref in zip(torch.autograd.grad(out, (x, w, bias), grad_out),
                        torch.autograd.grad(ref, (x, w, bias), grad_out)):
        torch.testing.assert_close(g, g_ref)


def test_float32_and_autocast():
    w1, w2 = _randn(4, 3, 2, seed=1).float(), _randn(4, 6, 3, seed=2).float()
    x = _randn(7, 8, seed=3).float()
    ref = x.double() @ monarch_to_dense(w1.double(), w2.double()).t()
    torch.testing.assert_close(monarch_matmul(x, w1, w2).double(), ref, rtol=1e-5, atol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = monarch_matmul(x, w1, w2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=5e-2, atol=5e-2)


def test_bad_shapes_raise():
    w1, w2 = _randn(4, 3, 2), _randn(4, 6, 3)
    with pytest.raises(ValueError, match='input has 9 features'):
        monarch_matmul(_randn(2, 9), w1, w2)
    with pytest.raises(ValueError, match='do not chain|takes'):
        monarch_matmul(_randn(2, 8), w1, _randn(4, 6, 4))
    with pytest.raises(ValueError, match='blocks, out_per_block, in_per_block'):
        monarch_matmul(_randn(2, 8), w1, _randn(24, 3))
    with pytest.raises(ValueError, match='input has 7 features'):
        blockdiag_matmul(_randn(2, 7), w1)
