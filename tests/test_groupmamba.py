"""GroupMamba: equivalence with the official code, checkpoint conversion, published sizes, gradients and heads.

The fixture in ``fixtures/groupmamba`` holds outputs of the official Amshaker/GroupMamba code (commit recorded in the
file) for the configuration of ``test_groupmamba``; its ``state_dict`` uses official keys. Tolerance 5e-5: this
configuration is ill-conditioned at the fp32 level (a 1e-7 relative change of the input moves logits by 1.4e-5, and
this implementation in fp32 vs fp64 differs by 2.4e-5; official fp32 vs our fp64: 1.9e-5), while zeroing the least
influential parameter family (dt bias) moves logits by 1.7 and the inner LayerNorm eps (1e-5 -> 1e-6) by 1.5e-2.
"""
import math
from pathlib import Path

import pytest
import torch
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.groupmamba import GroupLayerNorm2d, checkpoint_filter_fn
from scans import create_scan

FIXTURE = Path(__file__).parent / 'fixtures' / 'groupmamba' / 'groupmamba_tiny_style_d1121.pt'
ATOL = 5e-5

# Published parameter counts in millions (README / paper). They leave out the distillation head: with it the
# official models have 23.36M, 34.78M and 57.15M parameters.
PUBLISHED_PARAMS = {'groupmamba_tiny': 23, 'groupmamba_small': 34, 'groupmamba_base': 57}


@pytest.fixture(scope='module')
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _official_model(fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model('test_groupmamba', num_classes=10, **kwargs).eval()
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    return model


def _assert_logits(model: torch.nn.Module, fixture: dict) -> None:
    with torch.no_grad():
        for x, ref in zip(fixture['inputs'], fixture['logits']):
            torch.testing.assert_close(model(x), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize('name', PUBLISHED_PARAMS)
def test_published_parameter_count(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('dist_head.'))
    assert abs(count / 1e6 - PUBLISHED_PARAMS[name]) <= 0.01 * PUBLISHED_PARAMS[name], count


def test_fixture_mirrors_test_variant(fixture):
    """The CI variant is the fixture's official configuration (so the fixture test covers what CI runs)."""
    kw = fixture['official_kwargs']
    model = timm.create_model('test_groupmamba', num_classes=kw['num_classes'])
    assert [info['num_chs'] for info in model.feature_info] == kw['embed_dims']
    assert [len(stage.blocks) for stage in model.stages] == kw['depths']
    assert model.stem.proj.in_channels == kw['stem_hidden_dim']
    for stage, ratio in zip(model.stages, kw['mlp_ratios']):
        block = stage.blocks[0]
        assert block.mlp.fc1.out_channels == block.mlp.fc1.in_channels * ratio
        assert block.mixer.ssm.num_routes == 4 and block.mixer.ssm.d_state == 1
        assert block.mixer.ssm.dt_rank == math.ceil(block.mixer.ssm.d_inner / 16)
    # The logits cannot tell the outer eps apart (fp32 noise level), so check the norms against the fixture notes.
    norms = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.LayerNorm, GroupLayerNorm2d))}
    inner = {n for n in norms if n.endswith(('mixer.norm', 'out_norm', 'stem.norm', 'downsample.norm'))}
    assert len(inner) == 2 * 6 + 1 + 3 and len(norms) - len(inner) == 5 + 3 + 2 + 1
    assert all(m.eps == (1e-5 if n in inner else 1e-6) for n, m in norms.items())
    assert sum(v.numel() for v in model.state_dict().values()) == sum(v.numel() for v in fixture['state_dict'].values())


def test_official_logits(fixture):
    _assert_logits(_official_model(fixture), fixture)  # 64x64 and the non-square 64x96


def test_pretrained_through_timm(fixture, tmp_path):
    """``pretrained=True`` with a file like the released ones (a plain EMA state_dict) loads strictly."""
    path = tmp_path / 'groupmamba_test_ema.pth'
    torch.save(fixture['state_dict'], path)
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model('test_groupmamba', pretrained=True, num_classes=10, pretrained_cfg_overlay=overlay)
    _assert_logits(model.eval(), fixture)

    # Another number of classes: timm replaces the class head, the filter drops the distillation head.
    other = timm.create_model('test_groupmamba', pretrained=True, num_classes=7, pretrained_cfg_overlay=overlay).eval()
    x = fixture['inputs'][1]
    with torch.no_grad():
        torch.testing.assert_close(
            other.forward_head(other.forward_features(x), pre_logits=True),
            model.forward_head(model.forward_features(x), pre_logits=True))
        assert other(x).shape == (2, 7)

    # Classification weights load before the feature wrapper prunes the head.
    features = timm.create_model(
        'test_groupmamba', pretrained=True, features_only=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            features(x), model.forward_intermediates(x, intermediates_only=True), atol=0, rtol=0)


@pytest.mark.parametrize('layout', ['model_ema', 'training', 'module_prefix', 'own'])
def test_checkpoint_layouts(fixture, layout):
    sd = fixture['state_dict']
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_groupmamba', num_classes=10).eval()
    checkpoint = {
        'model_ema': lambda: {'model_ema': sd},
        # A training checkpoint: the published numbers are the EMA's, so 'model_ema' wins over 'model'.
        'training': lambda: {'model': {k: torch.zeros_like(v) for k, v in sd.items()}, 'model_ema': sd, 'epoch': 3},
        'module_prefix': lambda: {'module.' + k: v for k, v in sd.items()},
        'own': lambda: checkpoint_filter_fn(sd, model),
    }[layout]()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dims=(16, 32, 64, 92)), r'stages\.2\.downsample\.proj\.weight: checkpoint \(76, 32, 3, 3\) vs model '
                                        r'\(64, 32, 3, 3\)'),
    (dict(depths=(1, 1, 3, 1)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
    (dict(scan='hilbert'), r'2 channel groups; official checkpoints have 4.*ssm\.x_proj_weight: checkpoint \(4, 3, 4\) '
                           r'vs model \(2, 3, 8\)'),
])
def test_wrong_variant_names_mismatched_keys_and_shapes(fixture, kwargs, match):
    model = timm.create_model('test_groupmamba', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(fixture['state_dict'], model)


def test_other_checkpoints_are_refused(fixture):
    model = timm.create_model('test_groupmamba', num_classes=10)
    vmamba = torch.load(Path(__file__).parent / 'fixtures' / 'vmamba' / 'vmamba_v2_s1l8_dim16_d1121.pt',
                        weights_only=True)['state_dict']
    with pytest.raises(ValueError, match='not a GroupMamba'):
        checkpoint_filter_fn(vmamba, model)
    gap = {k: v for k, v in fixture['state_dict'].items() if '.mamba_g3.' not in k}
    with pytest.raises(ValueError, match=r'mamba_g1, mamba_g2, mamba_g4.*numbered 1\.\.K without gaps'):
        checkpoint_filter_fn(gap, model)


def test_four_groups_scan_in_one_kernel_call(fixture, scan_calls):
    mixer = _official_model(fixture).stages[2].blocks[0].mixer
    with torch.no_grad():
        mixer(torch.randn(2, 76, 3, 5))
    calls = [(tuple(c['u'].shape), tuple(c['B'].shape)) for c in scan_calls]
    assert calls == [((2, 76, 15), (2, 4, 1, 15))]  # u (B, 4 * 19, L), grouped B (B, K=4, N=1, L)


def test_non_square_gradients_are_exact(fixture):
    """Input gradients through the column-major groups on a non-square map, against finite differences.

    The official ``CrossScan_2/4`` backward reshapes the gradient as (H, W) instead of (W, H): wrong unless H == W.
    """
    mixer = _official_model(fixture).stages[0].blocks[0].mixer.double()
    x = torch.randn(1, 16, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mixer, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_distillation_head(fixture):
    model = _official_model(fixture)
    model.set_distilled_training()
    x = fixture['inputs'][0]

    def heads(pooled):
        return model.head(pooled), model.dist_head(pooled)

    with torch.no_grad():
        cls, dist = heads(model.forward_head(model.forward_features(x), pre_logits=True))
        torch.testing.assert_close(model(x), (cls + dist) / 2)  # eval: the average, as the official model
        model.train()  # the stem's BatchNorms now use batch statistics
        cls, dist = heads(model.forward_head(model.forward_features(x), pre_logits=True))
        out = model(x)
        assert isinstance(out, tuple)
        torch.testing.assert_close(out, (cls, dist))
        model.set_distilled_training(False)  # timm's default: the average in train mode too
        torch.testing.assert_close(model(x), (cls + dist) / 2)


def test_global_pool_options():
    with pytest.raises(ValueError, match="num_classes=0"):
        timm.create_model('test_groupmamba', global_pool='')
    with pytest.raises(ValueError, match="global_pool must be 'avg'"):
        timm.create_model('test_groupmamba', global_pool='max')
    model = timm.create_model('test_groupmamba').eval()
    with pytest.raises(ValueError, match='num_classes=0'):
        model.reset_classifier(5, '')


def test_final_norm_on_the_last_feature_map():
    model = timm.create_model('test_groupmamba').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, raw = model.forward_intermediates(x)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[:3], raw[:3])
    torch.testing.assert_close(normed[3], model.norm(final.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.mark.parametrize('scan, groups', [('hilbert', 2), ('snake4', 4), ('grouped', 4)])
def test_scan_option(scan, groups):
    model = timm.create_model('test_groupmamba', scan=scan).eval()
    mixers = [b.mixer for stage in model.stages for b in stage.blocks] + [model.class_block.mixer]
    assert all(m.ssm.num_routes == groups and m.in_proj.groups == groups for m in mixers)
    assert all(isinstance(m.out_norm, GroupLayerNorm2d) and m.out_norm.num_groups == groups for m in mixers)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 40, 56))).all()


def test_scan_option_changes_the_function(fixture):
    # The fixture weights, because at the official init the scan term is tiny next to the skip (fixture README).
    cross = _official_model(fixture)
    snake = _official_model(fixture, scan='snake4')  # same K=4 layout, other route geometry
    explicit = _official_model(fixture, scan=create_scan('grouped', base='cross'))
    x = fixture['inputs'][1]
    with torch.no_grad():
        assert (cross(x) - snake(x)).abs().max() > 100 * ATOL
        torch.testing.assert_close(explicit(x), cross(x), atol=0, rtol=0)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match='not divisible by 4'):
        timm.create_model('test_groupmamba', embed_dims=(16, 32, 78, 92))
    with pytest.raises(ValueError, match='>= 16'):
        timm.create_model('test_groupmamba', embed_dims=(8, 32, 76, 92))
    with pytest.raises(ValueError, match='unknown scan'):
        timm.create_model('test_groupmamba', scan='zigzagzag')


def test_input_sizes():
    model = timm.create_model('test_groupmamba', features_only=True).eval()
    with torch.no_grad():
        for size in [(1, 1), (37, 53), (96, 40)]:
            feats = model(torch.randn(1, 3, *size))
            expected = [(-(-size[0] // r), -(-size[1] // r)) for r in (4, 8, 16, 32)]
            assert [tuple(f.shape[-2:]) for f in feats] == expected
    with pytest.raises(ValueError, match='expects input'):
        timm.create_model('test_groupmamba')(torch.randn(1, 3, 0, 8))


def test_autocast_scan_gives_float32(scan_calls):
    """Half-precision activations reach the scan as they are and float32 comes back (the official
    ``SelectiveScanCore`` casts them to float32 first, which the kernel's float32 compute makes implicit)."""
    model = timm.create_model('test_groupmamba').eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out).all()
    assert scan_calls and {(c['u'].dtype, c['out'].dtype) for c in scan_calls} == {(torch.bfloat16, torch.float32)}
