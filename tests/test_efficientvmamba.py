"""EfficientVMamba: equivalence with the official code, checkpoint conversion, published sizes, ES2D and input sizes.

The fixture in ``fixtures/efficientvmamba`` holds outputs of the official TerryPei/EfficientVMamba code (commit
recorded in the file) for the tiny configuration of ``test_efficientvmamba``; its ``state_dict`` uses official keys
and randomised BatchNorm statistics (eval mode). Tolerance 2e-5: official fp32 vs float64 differs by <= 1.8e-6 in
the fixture families, while zeroing the least influential parameter family (dt bias) changes these logits by 7e-3.
"""
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.efficientvmamba import checkpoint_filter_fn

FIXTURE = Path(__file__).parent / 'fixtures' / 'efficientvmamba' / 'efficientvmamba_tiny_style_dim16_d1121.pt'
ATOL = 2e-5

# Parameter counts in millions from the released training logs (classification/logs/*.txt: "params: 6.494 M");
# the README rounds them to 6M, 11M and 33M.
PUBLISHED_PARAMS = {'efficientvmamba_tiny': 6.494, 'efficientvmamba_small': 11.274, 'efficientvmamba_base': 33.717}


@pytest.fixture(scope='module')
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _official_model(fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model('test_efficientvmamba', num_classes=10, **kwargs).eval()
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


def test_fixture_mirrors_test_variant(fixture):
    """The CI variant is the fixture's official configuration (so the fixture test covers what CI runs)."""
    kw = fixture['official_kwargs']
    model = timm.create_model('test_efficientvmamba', num_classes=kw['num_classes'])
    dims = [kw['dims'] * 2 ** i for i in range(4)]
    assert [info['num_chs'] for info in model.feature_info] == dims
    assert [len(stage.blocks) for stage in model.stages] == kw['depths']
    mixer = model.stages[0].blocks[0].mixer
    assert mixer.ssm.d_state == kw['d_state'] and mixer.ssm.d_inner == int(kw['ssm_ratio'] * dims[0])
    assert mixer.scan.name == 'atrous' and mixer.scan.step == kw['step_size'] and mixer.gate
    params = {k: v for k, v in fixture['state_dict'].items() if not re.search(r'running_|num_batches', k)}
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in params.values())


def test_official_logits(fixture):
    _assert_logits(_official_model(fixture), fixture)


def test_pretrained_through_timm(fixture, tmp_path):
    """``pretrained=True`` with a checkpoint in the released layout goes through the filter and loads strictly."""
    path = tmp_path / 'efficient_vmamba_tiny.ckpt'
    torch.save({'state_dict': {'module.module.' + k: v for k, v in fixture['state_dict'].items()}}, path)
    model = timm.create_model(
        'test_efficientvmamba', pretrained=True, num_classes=10,
        pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    _assert_logits(model.eval(), fixture)


def _legacy(state_dict: dict) -> dict:
    """The legacy VMamba key names that the official ``VSSM._load_from_state_dict`` still renames."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r'^patch_embed\.0\.', 'patch_embed.proj.', k)
        k = re.sub(r'^patch_embed\.2\.', 'patch_embed.norm.', k)
        k = re.sub(r'\.blocks\.(\d+)\.norm\.', r'.blocks.\1.ln_1.', k)
        k = re.sub(r'\.op\.', '.self_attention.', k)
        out[re.sub(r'^classifier\.', '', k)] = v
    return out


@pytest.mark.parametrize('layout', ['release', 'trainer', 'legacy', 'plain'])
def test_checkpoint_layouts(fixture, layout):
    sd = fixture['state_dict']
    checkpoint = {
        'release': lambda: {'state_dict': {'module.module.' + k: v for k, v in sd.items()}},
        # The official trainer saves both; like the official loaders, the filter takes 'model'.
        'trainer': lambda: {'epoch': 299, 'model': sd, 'optimizer': {},
                            'ema_model': {'module.' + k: torch.zeros_like(v) for k, v in sd.items()}},
        'legacy': lambda: _legacy(sd),
        'plain': lambda: sd,
    }[layout]()
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_efficientvmamba', num_classes=10).eval()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


def test_own_checkpoint_passes_through(fixture):
    model = _official_model(fixture)
    own = model.state_dict()
    passed = checkpoint_filter_fn(own, model)
    assert passed.keys() == own.keys() and all(passed[k] is own[k] for k in own)


def test_detection_backbone_checkpoint(fixture):
    """An MMDetection checkpoint of ``Backbone_EfficientVSSM``: 'backbone.' keys with outnorms, no classifier."""
    generator = torch.Generator().manual_seed(0)
    backbone = {k: v for k, v in fixture['state_dict'].items() if not k.startswith('classifier.')}
    for i, dim in enumerate((16, 32, 64, 128)):
        backbone[f'outnorm{i}.weight'] = 1 + 0.1 * torch.randn(dim, generator=generator)
        backbone[f'outnorm{i}.bias'] = 0.1 * torch.randn(dim, generator=generator)
    checkpoint = {'meta': {}, 'state_dict': {
        **{'backbone.' + k: v for k, v in backbone.items()},
        'neck.lateral_convs.0.conv.weight': torch.zeros(4, 16, 1, 1),
    }}
    model = timm.create_model('test_efficientvmamba', features_only=True, feature_norm=True).eval()
    # features_only prunes the final norm and the head, which the official backbone deletes too: strict load.
    model.model.load_state_dict(checkpoint_filter_fn(checkpoint, model.model), strict=True)
    x = fixture['inputs'][0]
    with torch.no_grad():
        features = model(x)
        stages = _official_model(fixture).forward_intermediates(x, intermediates_only=True)  # logits-verified
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]
    for i, (feat, stage) in enumerate(zip(features, stages)):
        expected = F.layer_norm(stage.permute(0, 2, 3, 1), stage.shape[1:2], backbone[f'outnorm{i}.weight'],
                                backbone[f'outnorm{i}.bias']).permute(0, 3, 1, 2)
        torch.testing.assert_close(feat, expected, atol=1e-5, rtol=0)

    # A classification checkpoint into a feature-norm model keeps the initial norms (official backbone behaviour).
    model = _official_model(fixture, feature_norm=True)
    assert all(bool((n.weight == 1).all() and (n.bias == 0).all()) for n in model.feature_norms)


@pytest.mark.parametrize('kwargs, message', [
    (dict(dims=(24, 48, 96, 192)), r'stem\.0\.weight: checkpoint \(16, 3, 4, 4\) vs model \(24, 3, 4, 4\)'),
    (dict(depths=(1, 1, 3, 1)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
    (dict(d_state=8), r'stages\.0\.blocks\.0\.mixer\.ssm\.A_logs: checkpoint \(128, 16\) vs model \(128, 8\)'),
])
def test_wrong_variant_raises(fixture, kwargs, message):
    model = timm.create_model('test_efficientvmamba', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=message):
        checkpoint_filter_fn(fixture['state_dict'], model)


def test_foreign_checkpoints_raise(fixture):
    model = timm.create_model('test_efficientvmamba', num_classes=10)
    vanilla_vmamba = torch.load(
        Path(__file__).parent / 'fixtures' / 'vmamba' / 'vmamba_v0_vanilla_dim16_d1121.pt', weights_only=True)
    with pytest.raises(ValueError, match=r'stages\.0\.blocks\.0\.conv_branch\.0\.weight: missing in the checkpoint'):
        checkpoint_filter_fn(vanilla_vmamba['state_dict'], model)
    with pytest.raises(ValueError, match='not an EfficientVMamba'):
        checkpoint_filter_fn({'encoder.weight': torch.zeros(1)}, model)


def test_es2d_routes(fixture, scan_calls):
    """Four sub-lattice routes of length H/2 * W/2 in one kernel call per block (half inputs under autocast)."""
    model = _official_model(fixture)
    x = fixture['inputs'][1]  # 64x96: stage maps 16x24 and 8x12
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    seen = [(c['u'].dtype, c['u'].shape[-1], c['B'].shape[1]) for c in scan_calls]
    assert seen == [(torch.bfloat16, 8 * 12, 4), (torch.bfloat16, 4 * 6, 4)]
    torch.testing.assert_close(out.float(), fixture['logits'][1], atol=0.1, rtol=0.1)


def test_scan_option_changes_the_function(fixture):
    atrous = _official_model(fixture)
    cross = _official_model(fixture, scan='cross')  # same K=4 parameter layout, other route geometry
    x = fixture['inputs'][0]
    with torch.no_grad():
        assert (atrous(x) - cross(x)).abs().max() > 100 * ATOL


def test_input_sizes():
    model = timm.create_model('test_efficientvmamba', features_only=True).eval()
    with torch.no_grad():
        for size in [(36, 44), (4, 4), (64, 96)]:  # 36x44: odd maps from stride 8 on (ES2D and PatchMerging pad)
            feats = model(torch.randn(1, 3, *size))
            expected = [(-(-size[0] // r), -(-size[1] // r)) for r in (4, 8, 16, 32)]
            assert [tuple(f.shape[-2:]) for f in feats] == expected
            assert all(torch.isfinite(f).all() for f in feats)
    with pytest.raises(ValueError, match=r'divisible by 4, got \(62, 64\)'):
        model(torch.randn(1, 3, 62, 64))
