"""SOFT / SOFT++: equivalence with the official code, the Newton-Schulz pseudo-inverse, published sizes, errors.

The fixtures in ``fixtures/soft`` hold outputs of the official fudan-zvg/SOFT code (commit recorded in each file)
for the configuration of ``test_soft`` (widths 32-64-64-64, depth 1 per stage) at 64x64 and 64x96, with official
state_dict keys: the official init (Linear std 0.02), and a "lecunlinear" copy whose Linear weights have std
1/sqrt(fan_in), where replacing the Newton inverse by an exact one moves logits by 2.9e-4 and erf GELU for tanh
GELU by 8e-4, while official fp32 vs float64 differs by 2.1e-6 (fixture README); the tolerances sit between.
"""
from pathlib import Path

import pytest
import torch
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.soft import SoftmaxFreeAttention, checkpoint_filter_fn, resize_pos_embed
from kernels import newton_pinv

FIXTURES = Path(__file__).parent / 'fixtures' / 'soft'
PLAIN = 'soft_tiny_mirror_d32-64-64-64_depth1111_img64.pt'
LECUN = 'soft_tiny_mirror_d32-64-64-64_depth1111_img64_lecunlinear.pt'
# file -> (logits atol, features atol); observed <= 1.5e-7 / 2.9e-6 on logits.
TOLERANCES = {PLAIN: (1e-5, 1e-4), LECUN: (2e-5, 5e-5)}

# Published parameter counts (fudan-zvg/SOFT README, in millions, truncated: 45.8M is listed as 45M) and the
# relative tolerance around them.
PUBLISHED_PARAMS = {
    'soft_tiny': (13, 0.01),
    'soft_small': (24, 0.01),
    'soft_medium': (45, 0.02),
    'soft_large': (64, 0.015),
    'soft_huge': (87, 0.01),
}


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def _official_model(fixture: dict) -> torch.nn.Module:
    model = timm.create_model('test_soft', num_classes=fixture['official_kwargs']['num_classes']).eval()
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    return model


def _spd(*batch: int, m: int = 12, seed: int = 0) -> torch.Tensor:
    """Well-conditioned symmetric positive definite matrices (condition number below about 10)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, m, 2 * m, generator=g)
    return x @ x.transpose(-1, -2) / (2 * m) + 0.5 * torch.eye(m)


@pytest.mark.parametrize('name', [PLAIN, LECUN])
def test_fixture_logits_and_features(name):
    fixture = _fixture(name)
    model = _official_model(fixture)
    atol, feature_atol = TOLERANCES[name]
    with torch.no_grad():
        for x, logits in zip(fixture['inputs'], fixture['logits']):
            torch.testing.assert_close(model(x), logits, rtol=0, atol=atol)
        x = fixture['inputs'][0]
        final, stages = model.forward_intermediates(x)
        pre_logits = model.forward_head(final, pre_logits=True)
    expected = dict(zip(fixture['feature_names'], fixture['features']))
    for i, stage in enumerate(stages[:3]):
        official = expected[f'block{i + 1}[-1].out (B,N,C)']
        torch.testing.assert_close(stage.flatten(2).transpose(1, 2), official, rtol=0, atol=feature_atol)
    # The last stage's intermediate drops the class token; forward_features keeps it (normalized).
    official4 = expected['block4[-1].out (B,N,C) incl. cls at 0']
    torch.testing.assert_close(stages[3].flatten(2).transpose(1, 2), official4[:, 1:], rtol=0, atol=feature_atol)
    torch.testing.assert_close(final, model.norm(official4), rtol=0, atol=feature_atol)
    torch.testing.assert_close(pre_logits, fixture['features'][-1], rtol=0, atol=feature_atol)


def test_fixture_through_pretrained_cfg(tmp_path):
    fixture = _fixture(PLAIN)
    path = tmp_path / 'official.pth'
    torch.save({'model': {'module.' + k: v for k, v in fixture['state_dict'].items()}}, path)
    model = timm.create_model(
        'test_soft', pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(fixture['inputs'][1]), fixture['logits'][1], rtol=0, atol=1e-5)
    # Checkpoints of this implementation pass through unchanged.
    assert checkpoint_filter_fn(model.state_dict(), model).keys() == model.state_dict().keys()


def test_checkpoint_mismatch_errors():
    state = _fixture(PLAIN)['state_dict']
    model = timm.create_model('test_soft', num_classes=10)
    with pytest.raises(ValueError, match=r'stages\.2\.blocks: 2 blocks in the checkpoint vs 1 in the model'):
        checkpoint_filter_fn({**state, 'block3.1.att.norm1.weight': torch.ones(64)}, model)
    with pytest.raises(ValueError, match=r'cls_head\.weight: not in the model'):
        checkpoint_filter_fn({**state, 'cls_head.weight': torch.ones(64)}, model)
    with pytest.raises(ValueError, match=r'stages\.1\.pos_embed: checkpoint \(1, 196, 64\) vs model \(1, \d+, 64\)'):
        checkpoint_filter_fn({**state, 'pos_embed2': torch.zeros(1, 196, 64)}, model)
    wider = timm.create_model('test_soft', embed_dims=(32, 64, 96, 64), num_heads=(1, 2, 3, 2))
    with pytest.raises(ValueError, match=r'embed_dims=\(32, 64, 96, 64\).*stages\.2\.pos_embed: checkpoint '
                                         r'\(1, 196, 64\) vs model \(1, 196, 96\)'):
        checkpoint_filter_fn(state, wider)


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name):
    millions, rtol = PUBLISHED_PARAMS[name]
    counts = []
    for variant in (name, name.replace('soft_', 'soft_norm_')):
        with torch.device('meta'):
            model = timm.create_model(variant)
        counts.append(sum(p.numel() for p in model.parameters()))
    assert counts[0] == counts[1]  # SOFT++ only changes the computation
    assert int(counts[0] // 1e6) == millions
    assert abs(counts[0] / 1e6 - millions) / millions < rtol


def test_pinv_matches_torch_pinv():
    a = _spd(3, 2)
    torch.testing.assert_close(newton_pinv(a), torch.linalg.pinv(a), rtol=0, atol=2e-6)
    ridge = torch.linalg.inv(a + 0.01 * torch.eye(a.shape[-1]))
    torch.testing.assert_close(newton_pinv(a, ridge=0.01), ridge, rtol=0, atol=2e-6)
    # Too few steps are visibly off: the number of steps is what the call says.
    assert (newton_pinv(a, num_iters=3) - torch.linalg.pinv(a)).abs().max() > 1e-2


@pytest.mark.parametrize('ridge', [0., 0.01])
def test_pinv_gradient_matches_autograd_through_exact_inverse(ridge):
    a = _spd(2, 3, seed=2)
    grad_out = torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    ours = a.clone().requires_grad_()
    (newton_pinv(ours, ridge=ridge) * grad_out).sum().backward()
    exact = a.double().requires_grad_()
    (torch.linalg.inv(exact + ridge * torch.eye(a.shape[-1], dtype=torch.float64)) * grad_out.double()).sum().backward()
    torch.testing.assert_close(ours.grad, exact.grad.float(), rtol=0, atol=5e-6)


def test_pinv_is_float32_under_autocast():
    a = _spd(4, m=16, seed=4)
    expected = torch.linalg.pinv(a)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = newton_pinv(a)
        a_grad = a.clone().requires_grad_()
        newton_pinv(a_grad).sum().backward()
    assert out.dtype == torch.float32 and a_grad.grad.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    exact = a.double().requires_grad_()
    torch.linalg.inv(exact).sum().backward()
    torch.testing.assert_close(a_grad.grad, exact.grad.float(), rtol=0, atol=5e-6)
    # Half-precision inputs are inverted in float32 and returned in their dtype.
    half = newton_pinv(a.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), torch.linalg.pinv(a.bfloat16().float()), rtol=0.02, atol=0.02)


def test_pinv_rejects_non_square():
    with pytest.raises(ValueError, match='square'):
        newton_pinv(torch.ones(2, 3, 4))


def _reference_attention(attn: SoftmaxFreeAttention, x: torch.Tensor, size) -> torch.Tensor:
    """SOFT attention in float64 with exact inverses, written from the paper's formulas."""
    batch, length, dim = x.shape
    heads, d = attn.num_heads, attn.head_dim
    attn = attn.double()
    x = x.double()
    q = attn.q(x).view(batch, length, heads, d).transpose(1, 2) / d ** 0.25
    v = attn.v(x).view(batch, length, heads, d).transpose(1, 2)
    lm = attn.landmark(q.reshape(batch * heads, *size, d).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
    lm = attn.landmark_act(attn.landmark_norm(lm.reshape(batch, heads, -1, d)))
    k1 = torch.exp(-torch.cdist(q, lm) ** 2 / 2)
    k2 = torch.exp(-torch.cdist(lm, lm) ** 2 / 2)
    if attn.normalized:
        scale = torch.diag_embed(k2.sum(-1) ** -0.5)
        middle = scale @ torch.linalg.pinv(k2) @ scale
    else:
        middle = torch.linalg.inv(k2 + 0.01 * torch.eye(k2.shape[-1], dtype=k2.dtype))
    out = k1 @ middle @ k1.transpose(-1, -2) @ v
    v_map = v.transpose(2, 3).reshape(batch, heads * d, *size)
    weight = attn.v_conv.weight.repeat_interleave(d, dim=0)  # head h's filter for each of its channels
    conv = torch.nn.functional.conv2d(v_map, weight, padding=attn.v_conv.padding, groups=heads * d)
    out = out + conv.view(batch, heads, d, length).transpose(2, 3)
    return attn.proj(out.transpose(1, 2).reshape(batch, length, dim))


@pytest.mark.parametrize('normalized', [False, True])
def test_attention_matches_formula(normalized):
    torch.manual_seed(0)
    attn = SoftmaxFreeAttention(64, 2, landmark_ratio=4, v_conv_size=5, normalized=normalized).eval()
    for param in attn.parameters():  # O(1) branches, so that every term is visible
        torch.nn.init.normal_(param, std=param.shape[-1] ** -0.5 if param.dim() > 1 else 0.1)
    size = (8, 12)
    x = torch.randn(2, size[0] * size[1], 64)
    with torch.no_grad():
        expected = _reference_attention(attn, x, size)
        out = attn.float()(x, size)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-4)
    assert (expected - _reference_attention(attn, x.flip(1), size)).abs().max() > 1e-2  # the test can fail


def test_soft_norm_differs_from_soft_with_the_same_weights():
    torch.manual_seed(0)
    plain = timm.create_model('test_soft', num_classes=10).eval()
    norm = timm.create_model('test_soft', num_classes=10, normalized=True).eval()
    norm.load_state_dict(plain.state_dict())
    x = _fixture(LECUN)['inputs'][0]
    with torch.no_grad():
        plain_stage, norm_stage = plain.forward_intermediates(x, indices=[0], intermediates_only=True)[0], \
            norm.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    assert (plain_stage - norm_stage).abs().max() > 1e-3


def test_autocast_forward_matches_float32():
    fixture = _fixture(LECUN)
    model = _official_model(fixture)
    x = fixture['inputs'][0]
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model(x)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), fixture['logits'][0], rtol=0, atol=0.15)


def test_resize_pos_embed_keeps_class_entry():
    pos = torch.randn(1, 1 + 49, 8)
    out = resize_pos_embed(pos, (2, 3), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 6, 8)
    torch.testing.assert_close(out[:, 0], pos[:, 0])
    torch.testing.assert_close(resize_pos_embed(pos, (7, 7), num_prefix_tokens=1), pos)


@pytest.mark.parametrize('size', [(48, 64), (64, 80), (16, 32)])
def test_sizes_that_are_not_multiples_of_32_raise(size):
    model = timm.create_model('test_soft').eval()
    with pytest.raises(ValueError, match=f'{size[0]}x{size[1]}'):
        model(torch.randn(1, 3, *size))


def test_larger_input_features():
    model = timm.create_model('test_soft', features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 128))
    assert [f.shape for f in feats] == [
        (1, 32, 24, 32), (1, 64, 12, 16), (1, 64, 6, 8), (1, 64, 3, 4)]
