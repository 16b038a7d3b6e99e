"""M2-ViT: published size, the FFT long convolution, bidirectional vs causal mixing, Monarch MLPs, input sizes."""
import pytest
import torch
import timm

from backbones.m2vit import HyenaMixer, M2ViT, fft_long_conv


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _count(name, **kwargs):
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('name,kwargs,published', [
    # The paper's 45M is the backbone (see the module docstring); the 1000-class head adds 0.77M.
    ('m2vit_base_patch16_224', dict(num_classes=0), 45e6),
])
def test_published_parameter_count(name, kwargs, published):
    count = _count(name, **kwargs)
    assert abs(count - published) <= 0.01 * published, f'{name}: {count / 1e6:.2f}M vs published {published / 1e6}M'


def test_parameter_count_pieces():
    """Head 768 * 1000 + 1000 on top; Monarch MLPs cost more than 4-block block-diagonal ones at 4 blocks."""
    base = _count('m2vit_base_patch16_224', num_classes=0)
    assert _count('m2vit_base_patch16_224') - base == 768 * 1000 + 1000
    assert _count('m2vit_base_patch16_224', num_classes=0, mlp_layer='monarch') > base


def _direct_conv(v, k, bidirectional):
    """y[t] = sum_s k[t - s] v[s] by explicit sums, float64; k indexed from offset -(L-1) (bidirectional) or 0."""
    length = v.shape[-1]
    y = torch.zeros_like(v, dtype=torch.float64)
    origin = length - 1 if bidirectional else 0
    for t in range(length):
        for s in range(length):
            if bidirectional or s <= t:
                y[..., t] += k[:, t - s + origin].double() * v[..., s].double()
    return y


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('length', [1, 2, 7, 16])
def test_fft_long_conv_is_linear_convolution(bidirectional, length):
    v = _randn(2, 3, length, seed=1)
    k = _randn(3, 2 * length - 1 if bidirectional else length, seed=2)
    torch.testing.assert_close(fft_long_conv(v, k, bidirectional).double(), _direct_conv(v, k, bidirectional),
                               rtol=1e-5, atol=1e-5)


def test_fft_long_conv_float32_under_autocast_and_bad_filter():
    v, k = _randn(2, 3, 9, seed=1).bfloat16(), _randn(3, 17, seed=2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = fft_long_conv(v, k, True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), _direct_conv(v.float(), k, True), rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match='needs 9 taps, got 17'):
        fft_long_conv(v, k, False)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_mixer_sees_the_future_only_when_bidirectional(bidirectional):
    torch.manual_seed(0)
    mixer = HyenaMixer(8, bidirectional=bidirectional, emb_dim=5, order=8).eval()
    x = _randn(1, 12, 8, seed=1)
    x_changed = x.clone()
    x_changed[:, 8:] += 1  # change the last four tokens only
    with torch.no_grad():
        diff = (mixer(x) - mixer(x_changed)).abs().amax(dim=-1)[0]
    assert (diff[8:] > 1e-3).all()
    if bidirectional:
        assert (diff[:8] > 1e-3).all()
    else:  # only FFT round-off reaches the past
        assert diff[:8].max() < 1e-5 * diff[8:].max()


def test_filter_is_generated_for_any_length():
    torch.manual_seed(0)
    mixer = HyenaMixer(8, emb_dim=5, order=8)
    assert mixer.filter(5).shape == (8, 9) and mixer.filter(200).shape == (8, 399)
    causal = HyenaMixer(8, bidirectional=False, emb_dim=5, order=8)
    assert causal.filter(5).shape == (8, 5)


def test_monarch_mlp_layer_trains():
    torch.manual_seed(0)
    model = timm.create_model('test_m2vit', mlp_layer='monarch', num_classes=3)
    out = model(_randn(2, 3, 32, 48, seed=1))
    out.sum().backward()
    assert out.shape == (2, 3) and all(p.grad is not None for p in model.parameters())
    fc1 = model.blocks[0].mlp.fc1
    assert fc1.w1.shape == (4, 8, 8) and fc1.w2.shape == (4, 32, 8)


def test_input_sizes_and_errors():
    torch.manual_seed(0)
    model = timm.create_model('test_m2vit', features_only=True).eval()
    with torch.no_grad():
        feats = model(_randn(1, 3, 48, 80, seed=1))
    assert [f.shape for f in feats] == [(1, 32, 3, 5)] * 4
    classifier = timm.create_model('test_m2vit').eval()
    with pytest.raises(ValueError, match='multiples of 16.*40x64'):
        classifier(_randn(1, 3, 40, 64))
    with pytest.raises(ValueError, match='mlp_layer'):
        M2ViT(mlp_layer='dense')
    with pytest.raises(ValueError, match='img_size 100x100'):
        M2ViT(img_size=100)
    with pytest.raises(ValueError, match='multiples of nblocks=5'):
        M2ViT(embed_dim=32, depth=1, nblocks=5)
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        M2ViT(embed_dim=32, depth=1, global_pool='token')


def test_no_weight_decay_is_the_implicit_filters():
    model = timm.create_model('test_m2vit')
    names = model.no_weight_decay()
    assert names == {n for n, _ in model.named_parameters() if '.filter.' in n}
    assert 'blocks.0.mixer.filter.mlp.1.freq' in names and 'blocks.0.mixer.in_proj.weight' not in names
