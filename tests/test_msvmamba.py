"""MSVMamba: equivalence with the official code, checkpoint conversion, published sizes, MS2D scans and input sizes.

The fixture in ``fixtures/msvmamba`` holds outputs of the official YuHengsss/MSVMamba code (master, commit recorded
in the file) for the tiny configuration of ``test_msvmamba``; its ``state_dict`` uses official keys. Tolerance
2e-5: official fp32 vs float64 differs by 1.2e-6, while zeroing the least influential parameter family (dt bias)
changes these logits by 2e-2.
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm

import backbones  # noqa: F401  (registers the models)
from scans import Scan, create_scan
from backbones.msvmamba import MS2D, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
FIXTURE = FIXTURES / 'msvmamba' / 'msvmamba_nano_style_dim16_d1121.pt'
ATOL = 2e-5

# Parameter counts in millions from the comments of the official configs (configs/ms_vssm/vssm_*_224_ms.yaml:
# "6.86M, 0.88G"); the README rounds them to 7M, 12M and 33M.
PUBLISHED_PARAMS = {'msvmamba_nano': 6.86, 'msvmamba_micro': 11.88, 'msvmamba_tiny': 33.08}


@pytest.fixture(scope='module')
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def _official_model(fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model('test_msvmamba', num_classes=10, **kwargs).eval()
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
    assert (kw['sscore_type'], kw['ms_split'], kw['ms_stage']) == ('multiscale_4scan_12', [1, 3], [0, 1, 2, 3])
    assert kw['add_se'] and kw['convFFN'] and kw['mlp_ratio'] == 0 and kw['ffn_dropout'] == 0
    model = timm.create_model('test_msvmamba', num_classes=kw['num_classes'])
    dims = [kw['dims'] * 2 ** i for i in range(4)]
    assert [info['num_chs'] for info in model.feature_info] == dims
    assert [len(stage.blocks) for stage in model.stages] == kw['depths']
    mixer = model.stages[0].blocks[0].mixer
    assert mixer.ssm.d_state == kw['ssm_d_state'] and mixer.ssm.d_inner == int(kw['ssm_ratio'] * dims[0])
    assert (mixer.scan.name, mixer.scan_low.name, mixer.scan_low.routes) == ('raster', 'concat', (2, 1, 3))
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in fixture['state_dict'].values())


def test_official_logits(fixture):
    _assert_logits(_official_model(fixture), fixture)


def test_pretrained_through_timm(fixture, tmp_path):
    """``pretrained=True`` with a checkpoint in the official trainer layout goes through the filter, strictly."""
    path = tmp_path / 'ckpt_epoch_299.pth'
    torch.save({'model': fixture['state_dict'], 'epoch': 299}, path)
    model = timm.create_model(
        'test_msvmamba', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    _assert_logits(model.eval(), fixture)


@pytest.mark.parametrize('layout', ['trainer', 'ddp', 'plain'])
def test_checkpoint_layouts(fixture, layout):
    sd = fixture['state_dict']
    checkpoint = {
        # The official trainer saves both; like the official loaders, the filter takes 'model'.
        'trainer': lambda: {'model': sd, 'model_ema': {k: torch.zeros_like(v) for k, v in sd.items()}},
        'ddp': lambda: {'module.' + k: v for k, v in sd.items()},
        'plain': lambda: sd,
    }[layout]()
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_msvmamba', num_classes=10).eval()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


def test_own_checkpoint_passes_through(fixture):
    model = _official_model(fixture)
    own = model.state_dict()
    passed = checkpoint_filter_fn(own, model)
    assert passed.keys() == own.keys() and all(passed[k] is own[k] for k in own)


def test_detection_backbone_checkpoint(fixture):
    """An MMDetection/MMSegmentation checkpoint of ``MM_VSSM``: 'backbone.' keys with outnorms, no classifier."""
    generator = torch.Generator().manual_seed(0)
    backbone = {k: v for k, v in fixture['state_dict'].items() if not k.startswith('classifier.')}
    for i, dim in enumerate((16, 32, 64, 128)):
        backbone[f'outnorm{i}.weight'] = 1 + 0.1 * torch.randn(dim, generator=generator)
        backbone[f'outnorm{i}.bias'] = 0.1 * torch.randn(dim, generator=generator)
    checkpoint = {'meta': {}, 'state_dict': {
        **{'backbone.' + k: v for k, v in backbone.items()},
        'decode_head.conv_seg.weight': torch.zeros(4, 16, 1, 1),
    }}
    model = timm.create_model('test_msvmamba', features_only=True, feature_norm=True).eval()
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


@pytest.mark.parametrize('kwargs, message', [
    (dict(dims=(24, 48, 96, 192)), r'stem\.0\.weight: checkpoint \(16, 3, 4, 4\) vs model \(24, 3, 4, 4\)'),
    (dict(depths=(1, 1, 3, 1)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
    (dict(d_state=4), r'stages\.0\.blocks\.0\.mixer\.ssm\.A_logs: checkpoint \(64, 1\) vs model \(64, 4\)'),
    (dict(scan='cross'), r'K=1\+4.*mixer\.ssm\.Ds: checkpoint \(64,\) vs model \(160,\)'),
])
def test_wrong_variant_raises(fixture, kwargs, message):
    model = timm.create_model('test_msvmamba', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=message):
        checkpoint_filter_fn(fixture['state_dict'], model)


def test_foreign_checkpoints_raise():
    model = timm.create_model('test_msvmamba', num_classes=10)
    vanilla_vmamba = torch.load(FIXTURES / 'vmamba' / 'vmamba_v0_vanilla_dim16_d1121.pt', weights_only=True)
    message = r'stages\.0\.blocks\.0\.mixer\.ssm\.A_logs: checkpoint \(128, 16\) vs model \(64, 1\)'
    with pytest.raises(ValueError, match=message):
        checkpoint_filter_fn(vanilla_vmamba['state_dict'], model)
    with pytest.raises(ValueError, match='not an MSVMamba'):
        checkpoint_filter_fn({'encoder.weight': torch.zeros(1)}, model)


def test_ms2d_scan_calls(fixture, scan_calls):
    """Per block: the full-res raster route (group 1) and ONE low-res sequence of 3 routes (group 0)."""
    model = _official_model(fixture)
    x = fixture['inputs'][1]  # 64x96: stage maps 16x24, 8x12, 4x6, 2x3 (low res 8x12, 4x6, 2x3, 1x2)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    blocks = [(16 * 24, 8 * 12), (8 * 12, 4 * 6), (4 * 6, 2 * 3), (4 * 6, 2 * 3), (2 * 3, 1 * 2)]
    seen = [(c['u'].dtype, c['u'].shape[-1], c['B'].shape[1]) for c in scan_calls]
    assert seen == [call for full, low in blocks for call in ((torch.bfloat16, full, 1), (torch.bfloat16, 3 * low, 1))]
    torch.testing.assert_close(out.float(), fixture['logits'][1], atol=0.1, rtol=0.1)


def test_state_carries_across_low_res_routes(fixture):
    """The official low-res branch is one sequence: three separate scans (fresh state per route) differ."""
    class ThreeRoutes(Scan):  # the same three routes as separate routes: K=3, each starting from a zero state
        num_routes = visits_per_token = 3

        def _build_routes(self, height: int, width: int) -> torch.Tensor:
            return create_scan('cross').index_plan(height, width)[[2, 1, 3]]

    joined = _official_model(fixture)
    separate = timm.create_model('test_msvmamba', num_classes=10, scan_low=ThreeRoutes()).eval()
    state = joined.state_dict()
    missing, _ = separate.load_state_dict({k: v for k, v in state.items() if '.ssm.' not in k}, strict=False)
    assert all('.ssm.' in k for k in missing)
    for mixer_joined, mixer_sep in zip(joined.modules(), separate.modules()):
        if isinstance(mixer_sep, MS2D):
            ssm_j, ssm_s, d = mixer_joined.ssm, mixer_sep.ssm, mixer_joined.ssm.d_inner
            with torch.no_grad():
                for name in ('x_proj_weight', 'dt_projs_weight', 'dt_projs_bias'):
                    getattr(ssm_s, name).copy_(getattr(ssm_j, name)[[0, 0, 0, 1]])
                for name in ('A_logs', 'Ds'):
                    getattr(ssm_s, name).copy_(getattr(ssm_j, name).view(2, d, -1)[[0, 0, 0, 1]].reshape(
                        getattr(ssm_s, name).shape))
    x = fixture['inputs'][0]
    with torch.no_grad():
        assert (joined(x) - separate(x)).abs().max() > 100 * ATOL


def test_scan_options():
    model = timm.create_model('test_msvmamba', scan='bidirectional', scan_low='hilbert').eval()
    assert model.stages[0].blocks[0].mixer.ssm.num_routes == 2 + 2
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()
    with pytest.raises(ValueError, match='splits channels'):
        timm.create_model('test_msvmamba', scan='grouped')
    with pytest.raises(ValueError, match='unknown scan'):
        timm.create_model('test_msvmamba', scan_low='nope')


def test_input_sizes():
    model = timm.create_model('test_msvmamba', features_only=True).eval()
    with torch.no_grad():
        for size in [(36, 44), (4, 4), (64, 96)]:  # 36x44: odd maps from stride 8 on (low-res branch rounds up)
            feats = model(torch.randn(1, 3, *size))
            expected = [(-(-size[0] // r), -(-size[1] // r)) for r in (4, 8, 16, 32)]
            assert [tuple(f.shape[-2:]) for f in feats] == expected
            assert all(torch.isfinite(f).all() for f in feats)
    with pytest.raises(ValueError, match=r'divisible by 4, got \(62, 64\)'):
        model(torch.randn(1, 3, 62, 64))
