"""backbones._layers: the shared layers behave like the timm layers they replace."""
import pytest
import torch
from timm.layers import DropPath as TimmDropPath

from backbones._layers import DropPath


@pytest.mark.parametrize('drop_prob', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('training', [True, False])
def test_drop_path_add_equals_shortcut_plus_timm_drop_path(drop_prob, training):
    ours, timm_drop = DropPath(drop_prob).train(training), TimmDropPath(drop_prob).train(training)
    shortcut = torch.randn(16, 3, 4, 5, requires_grad=True)
    x = torch.randn(16, 3, 4, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    dout = torch.randn(16, 3, 4, 5)
    torch.manual_seed(0)
    out = ours.add(shortcut, x)
    grads = torch.autograd.grad(out, (shortcut, x), dout)
    torch.manual_seed(0)
    ref = shortcut + timm_drop(x)
    ref_grads = torch.autograd.grad(ref, (shortcut, x), dout)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)  # the product rounds in float32, not bfloat16
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r)
