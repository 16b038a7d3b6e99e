"""Spatial-Mamba: equivalence with the official code, the fused state fusion, checkpoint conversion, published sizes.

The fixture in ``fixtures/spatialmamba`` holds outputs of the official EdwardChasel/Spatial-Mamba code (commit recorded
in the file) for the configuration of ``test_spatialmamba``, computed with the UNFUSED state fusion (the official
training-path math); its ``state_dict`` uses official keys. Tolerance 2e-5: the official fp32 vs fp64 logits differ by
1.8e-6, while zeroing the least influential parameter family tested (alpha) moves logits by 0.16 (fixture notes).
"""
import math
from pathlib import Path

import pytest
import torch
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.spatialmamba import StateFusion, checkpoint_filter_fn
from scans import create_scan

FIXTURE = Path(__file__).parent / 'fixtures' / 'spatialmamba' / 'spatialmamba_tiny_style_dim12_d1121.pt'
ATOL = 2e-5

# Published parameter counts in millions (README / paper).
PUBLISHED_PARAMS = {'spatialmamba_tiny': 27, 'spatialmamba_small': 43, 'spatialmamba_base': 96}


@pytest.fixture(scope='module')
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _official_model(fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model('test_spatialmamba', num_classes=10, **kwargs).eval()
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    return model


def _fusions(model: torch.nn.Module):
    return [m for m in model.modules() if isinstance(m, StateFusion)]


def _set_unfused(model: torch.nn.Module) -> torch.nn.Module:
    """Eval model whose state fusions run the training-path convolutions (how the fixture logits were made)."""
    for fusion in _fusions(model):
        fusion.train()
    return model


def _assert_logits(model: torch.nn.Module, fixture: dict) -> None:
    with torch.no_grad():
        for x, ref in zip(fixture['inputs'], fixture['logits']):
            torch.testing.assert_close(model(x), ref, atol=ATOL, rtol=0)


def _randomise_fusions(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for fusion in _fusions(model):
            for p in fusion.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize('name', PUBLISHED_PARAMS)
def test_published_parameter_count(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - PUBLISHED_PARAMS[name]) <= 0.01 * PUBLISHED_PARAMS[name], count


def test_fixture_mirrors_test_variant(fixture):
    """The CI variant is the fixture's official configuration (so the fixture test covers what CI runs)."""
    kw = fixture['official_kwargs']
    model = timm.create_model('test_spatialmamba', num_classes=kw['num_classes'])
    assert [info['num_chs'] for info in model.feature_info] == [kw['dims'] * 2 ** i for i in range(4)]
    assert [len(stage.blocks) for stage in model.stages] == kw['depths']
    for stage in model.stages:
        block = stage.blocks[0]
        dim = block.cpe1.in_channels
        assert block.mlp.fc1.out_features == dim * kw['mlp_ratio']
        ssm = block.mixer.ssm
        assert (ssm.num_routes, ssm.d_state, ssm.d_inner) == (1, kw['d_state'], 2 * dim)
        assert ssm.dt_rank == math.ceil(dim / 16)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3 * 5 + 1 and all(m.eps == 1e-5 for m in norms)
    assert sum(v.numel() for v in model.state_dict().values()) == sum(v.numel() for v in fixture['state_dict'].values())


def test_official_logits_unfused(fixture):
    _assert_logits(_set_unfused(_official_model(fixture)), fixture)  # 64x64 and the non-square 64x96


def test_official_logits_fused(fixture):
    model = _official_model(fixture)
    assert not any(f.training for f in _fusions(model))
    _assert_logits(model, fixture)


def test_pretrained_through_timm(fixture, tmp_path):
    """``pretrained=True`` with a file laid out like the released ones (``{'model': state_dict}``) loads strictly."""
    path = tmp_path / 'spatialmamba_test.pth'
    torch.save({'model': fixture['state_dict'], 'epoch': 299}, path)
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model('test_spatialmamba', pretrained=True, num_classes=10, pretrained_cfg_overlay=overlay)
    _assert_logits(model.eval(), fixture)

    other = timm.create_model(
        'test_spatialmamba', pretrained=True, num_classes=7, pretrained_cfg_overlay=overlay).eval()
    x = fixture['inputs'][1]
    with torch.no_grad():
        torch.testing.assert_close(
            other.forward_head(other.forward_features(x), pre_logits=True),
            model.forward_head(model.forward_features(x), pre_logits=True))
        assert other(x).shape == (2, 7)

    features = timm.create_model(
        'test_spatialmamba', pretrained=True, features_only=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            features(x), model.forward_intermediates(x, intermediates_only=True), atol=0, rtol=0)


@pytest.mark.parametrize('layout', ['model_ema', 'module_prefix', 'own'])
def test_checkpoint_layouts(fixture, layout):
    sd = fixture['state_dict']
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_spatialmamba', num_classes=10).eval()
    checkpoint = {
        'model_ema': lambda: {'model_ema': sd},
        'module_prefix': lambda: {'module.' + k: v for k, v in sd.items()},
        'own': lambda: checkpoint_filter_fn(sd, model),
    }[layout]()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


def test_detection_backbone_checkpoint(fixture):
    """An MMDetection checkpoint of ``MM_SpatialMamba``: ``backbone.`` keys with the ``outnorm{i}`` LayerNorms."""
    sd = {k: v for k, v in fixture['state_dict'].items() if not k.startswith(('norm.', 'head.'))}
    g = torch.Generator().manual_seed(0)
    for i, dim in enumerate((12, 24, 48, 96)):
        sd[f'outnorm{i}.weight'] = 1 + 0.1 * torch.randn(dim, generator=g)
        sd[f'outnorm{i}.bias'] = 0.1 * torch.randn(dim, generator=g)
    checkpoint = {'state_dict': {**{'backbone.' + k: v for k, v in sd.items()}, 'neck.lateral.weight': torch.ones(1)}}
    model = timm.create_model('test_spatialmamba', features_only=True, feature_norm=True).eval()
    inner = model.model
    missing, unexpected = inner.load_state_dict(checkpoint_filter_fn(checkpoint, inner), strict=False)
    assert not unexpected and set(missing) <= {'norm.weight', 'norm.bias'}  # pruned by the feature wrapper
    reference = _official_model(fixture)
    x = fixture['inputs'][1]
    with torch.no_grad():
        raw = reference.forward_intermediates(x, intermediates_only=True)
        for i, (feat, raw_feat) in enumerate(zip(model(x), raw)):
            expected = torch.nn.functional.layer_norm(
                raw_feat.permute(0, 2, 3, 1), raw_feat.shape[1:2], sd[f'outnorm{i}.weight'], sd[f'outnorm{i}.bias'])
            torch.testing.assert_close(feat, expected.permute(0, 3, 1, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dim=16), r'dims=\(16, 32, 64, 128\).*stem\.conv1\.norm\.weight: checkpoint \(6,\) vs model \(8,\)'),
    (dict(depths=(1, 1, 3, 1)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
    (dict(scan='cross'), r"scan 'cross' with 4 route\(s\); official checkpoints have 1.*"
                         r'ssm\.x_proj_weight: checkpoint \(1, 3, 24\) vs model \(4, 3, 24\)'),
    (dict(d_state=2), r'ssm\.x_proj_weight: checkpoint \(1, 3, 24\) vs model \(1, 5, 24\)'),
])
def test_wrong_variant_names_mismatched_keys_and_shapes(fixture, kwargs, match):
    model = timm.create_model('test_spatialmamba', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(fixture['state_dict'], model)


def test_other_checkpoints_are_refused():
    model = timm.create_model('test_spatialmamba', num_classes=10)
    vmamba = torch.load(Path(__file__).parent / 'fixtures' / 'vmamba' / 'vmamba_v2_s1l8_dim16_d1121.pt',
                        weights_only=True)['state_dict']
    with pytest.raises(ValueError, match='not a Spatial-Mamba'):
        checkpoint_filter_fn(vmamba, model)


@pytest.mark.parametrize('size', [(1, 1), (2, 3), (6, 6), (13, 7), (4, 17)])
def test_fused_kernel_is_exact(size):
    """One 11x11 replicate-padded kernel == the three dilated convolutions, also on maps smaller than the kernel."""
    fusion = StateFusion(5).double()
    _randomise_fusions(fusion)
    h = torch.randn(3, 5, *size, dtype=torch.float64)
    torch.testing.assert_close(fusion.forward_fused(h), fusion.forward_unfused(h), atol=1e-12, rtol=0)
    # Sanity of the layout: 1 + 8 * 3 taps, the centre shared by the three kernels.
    assert int((fusion.fused_weight()[0, 0] != 0).sum()) == 25


def test_fused_model_is_exact_in_float64(fixture):
    fused = _official_model(fixture).double()
    unfused = _set_unfused(_official_model(fixture).double())
    x = fixture['inputs'][1].double()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), unfused(x), atol=1e-10, rtol=0)


def test_fused_kernel_follows_weight_changes(fixture):
    """The official eval cache goes stale after the first eval forward; here every change is seen."""
    model = _official_model(fixture)
    x = fixture['inputs'][0]

    def check(changed_from):
        with torch.no_grad():
            out = model(x)
            assert (out - changed_from).abs().max() > 100 * ATOL
            _set_unfused(model)
            torch.testing.assert_close(out, model(x), atol=ATOL, rtol=0)
            for fusion in _fusions(model):
                fusion.eval()
        return out

    with torch.no_grad():
        first = model(x)
    # An optimizer step (in place on the parameters).
    optimizer = torch.optim.SGD([p for f in _fusions(model) for p in f.parameters()], lr=50.)
    model(x).square().mean().backward()
    optimizer.step()
    after_step = check(first)
    # load_state_dict (copies into the existing parameters).
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _randomise_fusions(model, seed=1)
    model.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(x), after_step, atol=0, rtol=0)
    _randomise_fusions(model, seed=2)
    check(after_step)
    # .to(): new parameter tensors in another dtype.
    model.double()
    with torch.no_grad():
        _set_unfused(model)
        reference = model(x.double())
        for fusion in _fusions(model):
            fusion.eval()
        torch.testing.assert_close(model(x.double()), reference, atol=1e-10, rtol=0)


def test_fused_path_gradients_match_unfused(fixture):
    """The eval-mode fused kernel is differentiable and gives the training path's parameter gradients."""
    x = fixture['inputs'][1][:1].double()
    grads = []
    for unfused in (False, True):
        model = _official_model(fixture).double()
        if unfused:
            _set_unfused(model)
        model(x).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if 'state_fusion' in n})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-9, rtol=1e-7, msg=name)


def test_one_hidden_state_scan_per_block(fixture, monkeypatch):
    import backbones.ssm

    calls = []
    scan_fn = backbones.ssm.selective_scan

    def spy(u, delta, A, B, C=None, *args, **kwargs):
        calls.append((tuple(u.shape), tuple(B.shape), C is None, kwargs.get('return_hidden_states')))
        return scan_fn(u, delta, A, B, C, *args, **kwargs)

    monkeypatch.setattr(backbones.ssm, 'selective_scan', spy)
    with torch.no_grad():
        _official_model(fixture)(fixture['inputs'][1])
    # One forward row-major route per block, B (batch, K=1, N=1, L), all states returned, no C.
    expected = [(24, 16 * 24), (48, 8 * 12), (96, 4 * 6), (96, 4 * 6), (192, 2 * 3)]
    assert calls == [((2, width, length), (2, 1, 1, length), True, True) for width, length in expected]


@pytest.mark.parametrize('scan, d_state', [('raster', 1), ('raster', 3), ('cross', 1), ('hilbert', 2)])
def test_identity_fusion_is_the_plain_scan(scan, d_state):
    """With the fusion an identity, the mixer's readout is the scan's merge of the ordinary SSM output.

    Checks the route layout and the C / D readout for any scan and state size against ``SelectiveSSM.forward``.
    """
    model = timm.create_model('test_spatialmamba', scan=scan, d_state=d_state).double()
    mixer = model.stages[1].blocks[0].mixer
    with torch.no_grad():
        for p in mixer.ssm.parameters():
            # Values exact in float32: the core hands A, D and the dt bias to the kernel in float32.
            p.add_(0.3 * torch.randn_like(p)).copy_(p.float())
        mixer.state_fusion.kernel_d1.zero_()[:, :, 1, 1] = 1
        mixer.state_fusion.alpha.copy_(torch.tensor([1., 0., 0.]))
        u = torch.randn(2, mixer.d_inner, 5, 7, dtype=torch.float64)
        expected = mixer.scan.merge(mixer.ssm(mixer.scan.flatten(u)), (5, 7))
        for training in (True, False):
            mixer.train(training)
            torch.testing.assert_close(mixer._fused_readout(u), expected, atol=1e-10, rtol=0)


def test_scan_option():
    model = timm.create_model('test_spatialmamba', scan='snake4').eval()
    assert all(b.mixer.ssm.num_routes == 4 for s in model.stages for b in s.blocks)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 40, 56))).all()
    with pytest.raises(ValueError, match='every route must visit every token'):
        timm.create_model('test_spatialmamba', scan='atrous')
    with pytest.raises(ValueError, match='every route must visit every token'):
        timm.create_model('test_spatialmamba', scan='grouped')
    with pytest.raises(ValueError, match='unknown scan'):
        timm.create_model('test_spatialmamba', scan='zigzagzag')
    padded = timm.create_model('test_spatialmamba', scan=create_scan('window', window_size=3, pad=True)).eval()
    with torch.no_grad(), pytest.raises(ValueError, match='exactly once'):
        padded(torch.randn(1, 3, 40, 40))  # stage 1 is 10x10: padded windows


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match='even int'):
        timm.create_model('test_spatialmamba', embed_dim=13)
    with pytest.raises(ValueError, match='depths'):
        timm.create_model('test_spatialmamba', depths=(1, -1, 2, 1))


def test_input_sizes():
    model = timm.create_model('test_spatialmamba', features_only=True).eval()
    with torch.no_grad():
        for size in [(1, 1), (37, 53), (96, 40)]:
            feats = model(torch.randn(1, 3, *size))
            expected = [(-(-size[0] // r), -(-size[1] // r)) for r in (4, 8, 16, 32)]
            assert [tuple(f.shape[-2:]) for f in feats] == expected
            assert all(torch.isfinite(f).all() for f in feats)
    with pytest.raises(ValueError, match='expects input'):
        timm.create_model('test_spatialmamba')(torch.randn(1, 3, 0, 8))


def test_autocast_keeps_states_in_float32(monkeypatch):
    """Under autocast the scan takes half-precision inputs and returns float32 states (the official kernel)."""
    import backbones.ssm

    seen = []
    scan_fn = backbones.ssm.selective_scan

    def spy(u, *args, **kwargs):
        out = scan_fn(u, *args, **kwargs)
        seen.append((u.dtype, out.dtype))
        return out

    monkeypatch.setattr(backbones.ssm, 'selective_scan', spy)
    model = timm.create_model('test_spatialmamba').eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out).all()
    assert seen and set(seen) == {(torch.bfloat16, torch.float32)}
