"""VMamba: equivalence with the official code, checkpoint conversion, published sizes, scans and input sizes.

The fixtures in ``fixtures/vmamba`` hold outputs of the official MzeroMiko/VMamba code (commit recorded in each
file) for the tiny configurations of ``test_vmamba`` (v2, s1) and ``test_vanilla_vmamba`` (v0); their
``state_dict`` uses official keys. Tolerance 2e-5: official fp32 vs float64 differs by <= 3.3e-6, while
zeroing the least influential parameter family (dt bias) changes logits by >= 7e-3.
"""
import re
from pathlib import Path

import pytest
import torch
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.vmamba import checkpoint_filter_fn
from scans import create_scan

FIXTURES = Path(__file__).parent / 'fixtures' / 'vmamba'
CLASSIFIERS = {
    'vmamba_v2_s1l8_dim16_d1121.pt': 'test_vmamba',
    'vmamba_v0_vanilla_dim16_d1121.pt': 'test_vanilla_vmamba',
}
BACKBONE = 'vmamba_backbone_v2_s1l8_dim16_d1121.pt'
ATOL = 2e-5

# Published parameter counts in millions (README / assets/performance.md).
PUBLISHED_PARAMS = {
    'vmamba_tiny_s1l8': 30, 'vmamba_tiny_s2l5': 31, 'vmamba_small_s2l15': 50, 'vmamba_small_s1l20': 49,
    'vmamba_base_s2l15': 89, 'vmamba_base_s1l20': 87,
    'vanilla_vmamba_tiny': 23, 'vanilla_vmamba_small': 44, 'vanilla_vmamba_base': 76,
}


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def _official_model(model_name: str, fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model(model_name, num_classes=10, **kwargs).eval()
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
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - PUBLISHED_PARAMS[name]) <= 0.01 * PUBLISHED_PARAMS[name], count


@pytest.mark.parametrize('file', CLASSIFIERS)
def test_fixture_mirrors_test_variant(file):
    """The CI variant is the fixture's official configuration (so the fixture test covers what CI runs)."""
    fixture = _fixture(file)
    kw = fixture['official_kwargs']
    model = timm.create_model(CLASSIFIERS[file], num_classes=kw['num_classes'])
    dims = [kw['dims'] * 2 ** i for i in range(4)]
    assert [info['num_chs'] for info in model.feature_info] == dims
    assert [len(stage.blocks) for stage in model.stages] == kw['depths']
    block = model.stages[0].blocks[0]
    assert block.mixer.ssm.d_state == kw['ssm_d_state']
    assert block.mixer.ssm.d_inner == int(kw['ssm_ratio'] * dims[0])
    assert block.mixer.gate == (kw['forward_type'] == 'v0')
    assert (block.mlp is not None) == (kw['mlp_ratio'] > 0)
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in fixture['state_dict'].values())


@pytest.mark.parametrize('file', CLASSIFIERS)
def test_official_logits(file):
    fixture = _fixture(file)
    _assert_logits(_official_model(CLASSIFIERS[file], fixture), fixture)


def test_official_backbone_features():
    fixture = _fixture(BACKBONE)
    model = timm.create_model('test_vmamba', features_only=True, feature_norm=True).eval()
    # features_only prunes the final norm and head, which the official backbone deletes too: strict load.
    model.model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model.model), strict=True)
    with torch.no_grad():
        features = model(fixture['inputs'][0])
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    torch.testing.assert_close(features, fixture['features'][0], atol=ATOL, rtol=0)


def test_pretrained_through_timm(tmp_path):
    """``pretrained=True`` with a local official checkpoint goes through the filter and loads strictly."""
    fixture = _fixture('vmamba_v2_s1l8_dim16_d1121.pt')
    path = tmp_path / 'official.pth'
    torch.save({'model': fixture['state_dict'], 'epoch': 3}, path)
    model = timm.create_model(
        'test_vmamba', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    _assert_logits(model.eval(), fixture)

    backbone = _fixture(BACKBONE)
    path = tmp_path / 'backbone.pth'
    torch.save({'model': backbone['state_dict']}, path)
    features_model = timm.create_model(
        'test_vmamba', pretrained=True, features_only=True, feature_norm=True,
        pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            features_model(backbone['inputs'][0]), backbone['features'][0], atol=ATOL, rtol=0)


def _legacy(state_dict: dict) -> dict:
    """The key names of the first VMamba releases (what the official ``VSSM._load_from_state_dict`` renames)."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r'^patch_embed\.0\.', 'patch_embed.proj.', k)
        k = re.sub(r'^patch_embed\.2\.', 'patch_embed.norm.', k)
        k = re.sub(r'\.blocks\.(\d+)\.norm\.', r'.blocks.\1.ln_1.', k)
        k = re.sub(r'\.op\.', '.self_attention.', k)
        k = re.sub(r'^classifier\.', '', k)
        out[k] = v
    return out


def _module_style_ssm(state_dict: dict) -> dict:
    """The x_proj / dt_projs module names (and flattened shapes) that the official SS2D loader also accepts."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith('op.x_proj_weight'):
            k, v = k.replace('x_proj_weight', 'x_proj.weight'), v.reshape(-1, v.shape[-1], 1)
        elif k.endswith('op.dt_projs_weight'):
            k, v = k.replace('dt_projs_weight', 'dt_projs.weight'), v.reshape(-1, v.shape[-1], 1)
        elif k.endswith('op.dt_projs_bias'):
            k, v = k.replace('dt_projs_bias', 'dt_projs.bias'), v.reshape(-1)
        out[k] = v
    return out


@pytest.mark.parametrize('layout', ['legacy', 'model_ema', 'module_prefix', 'module_style_ssm', 'plain'])
def test_checkpoint_layouts(layout):
    fixture = _fixture('vmamba_v0_vanilla_dim16_d1121.pt')
    sd = fixture['state_dict']
    checkpoint = {
        'legacy': lambda: {'model': _legacy(sd), 'optimizer': {}},
        'model_ema': lambda: {'model_ema': sd},
        'module_prefix': lambda: {'model': {'module.' + k: v for k, v in sd.items()}},
        'module_style_ssm': lambda: _module_style_ssm(sd),
        'plain': lambda: sd,
    }[layout]()
    if layout == 'legacy':
        assert 'norm.weight' in checkpoint['model'] and 'head.weight' in checkpoint['model']
        assert any('.ln_1.' in k for k in checkpoint['model'])
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_vanilla_vmamba', num_classes=10).eval()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


def test_detection_checkpoint_backbone_keys():
    """An MMDetection checkpoint: 'state_dict' with 'backbone.' keys (outnorms included) next to neck / heads."""
    fixture = _fixture(BACKBONE)
    checkpoint = {'meta': {}, 'state_dict': {
        **{'backbone.' + k: v for k, v in fixture['state_dict'].items()},
        'neck.lateral_convs.0.conv.weight': torch.zeros(4, 16, 1, 1),
        'rpn_head.rpn_conv.weight': torch.zeros(4, 4, 3, 3),
    }}
    model = timm.create_model('test_vmamba', features_only=True, feature_norm=True).eval()
    model.model.load_state_dict(checkpoint_filter_fn(checkpoint, model.model), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(fixture['inputs'][0]), fixture['features'][0], atol=ATOL, rtol=0)


def test_checkpoint_conversion_edges():
    classifier = _fixture('vmamba_v2_s1l8_dim16_d1121.pt')
    backbone = _fixture(BACKBONE)
    # outnorms are dropped for a model without feature norms ...
    model = timm.create_model('test_vmamba').eval()
    converted = checkpoint_filter_fn(backbone['state_dict'], model)
    assert not any('outnorm' in k or 'feature_norms' in k for k in converted)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert set(missing) == {'norm.weight', 'norm.bias', 'head.fc.weight', 'head.fc.bias'} and not unexpected
    # ... and a feature-norm model loading a classification checkpoint keeps its initial norms (official
    # Backbone_VSSM behaviour), so an ImageNet checkpoint still loads strictly.
    model = timm.create_model('test_vmamba', num_classes=10, feature_norm=True).eval()
    model.load_state_dict(checkpoint_filter_fn(classifier['state_dict'], model), strict=True)
    assert all(bool((n.weight == 1).all() and (n.bias == 0).all()) for n in model.feature_norms)
    # Checkpoints of this implementation pass through unchanged.
    own = model.state_dict()
    passed = checkpoint_filter_fn(own, model)
    assert passed.keys() == own.keys() and all(passed[k] is own[k] for k in own)


@pytest.mark.parametrize('kwargs, match', [
    (dict(dims=(24, 48, 96, 192)), r'dims=\(24, 48, 96, 192\).*stem\.0\.weight: checkpoint \(8, 3, 3, 3\) vs model '
                                   r'\(12, 3, 3, 3\)'),
    (dict(depths=(1, 1, 3, 1)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
    (dict(scan='bidirectional'), r"scan 'bidirectional' with K=2.*ssm\.x_proj_weight: checkpoint \(4, 3, 16\) vs model "
                                 r'\(2, 3, 16\)'),
])
def test_wrong_variant_names_mismatched_keys_and_shapes(kwargs, match):
    model = timm.create_model('test_vmamba', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(_fixture('vmamba_v2_s1l8_dim16_d1121.pt')['state_dict'], model)
    # Checkpoints of this implementation are checked too.
    own = timm.create_model('test_vmamba', num_classes=10).state_dict()
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(own, model)


@pytest.mark.parametrize('scan', ['raster', 'bidirectional', 'snake4', 'hilbert', 'window2', 'atrous', 'grouped'])
def test_scan_option(scan):
    model = timm.create_model('test_vmamba', scan=scan).eval()
    routes = create_scan(scan).num_routes
    for block in (b for stage in model.stages for b in stage.blocks):
        assert block.mixer.ssm.num_routes == routes
        assert block.mixer.ssm.x_proj_weight.shape[0] == routes
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_scan_option_changes_the_function():
    # The fixture weights, because at the official init the scan term is ~1e-5 of the skip (fixture README).
    fixture = _fixture('vmamba_v2_s1l8_dim16_d1121.pt')
    cross = _official_model('test_vmamba', fixture)
    snake = _official_model('test_vmamba', fixture, scan='snake4')  # same K=4 layout, other route geometry
    x = fixture['inputs'][0]
    with torch.no_grad():
        assert (cross(x) - snake(x)).abs().max() > 100 * ATOL


def test_unknown_scan_raises():
    with pytest.raises(ValueError, match='unknown scan'):
        timm.create_model('test_vmamba', scan='zigzagzag')


def test_input_sizes():
    v2 = timm.create_model('test_vmamba', features_only=True).eval()
    with torch.no_grad():
        for size in [(37, 53), (1, 1), (224, 160)]:
            feats = v2(torch.randn(1, 3, *size))
            expected = [(-(-size[0] // r), -(-size[1] // r)) for r in (4, 8, 16, 32)]
            assert [tuple(f.shape[-2:]) for f in feats] == expected
    vanilla = timm.create_model('test_vanilla_vmamba').eval()
    with torch.no_grad():
        assert torch.isfinite(vanilla(torch.randn(1, 3, 36, 44))).all()  # odd stage sizes: PatchMerging pads
    with pytest.raises(ValueError, match='divisible by 4'):
        vanilla(torch.randn(1, 3, 62, 64))


@pytest.mark.parametrize('name', ['test_vmamba', 'test_vanilla_vmamba'])
def test_autocast_scan_precision(name, scan_calls):
    """Half inputs go to the scan and float32 comes back (vanilla VMamba's official float32 casts are implicit in
    the kernel's float32 compute: tests/test_ssm.py checks they change no bit)."""
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        scan_calls.clear()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert scan_calls and all((c['u'].dtype, c['out'].dtype) == (torch.bfloat16, torch.float32) for c in scan_calls)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.1)
