"""Vim: equivalence with the official code, checkpoint conversion, published sizes, position embedding, scans, sizes.

The fixtures in ``fixtures/vim`` hold outputs of the official hustvl/Vim code (commit recorded in each file) for
the configuration of ``test_vim`` (D 32, depth 4, patch 16) with stride 16, stride 8 and a 64x96 model; their
``state_dict`` uses official keys. Official fp32 vs float64 differs by <= 2.1e-7 on logits and 3.6e-6 on
features, while swapping the two directions of one layer moves logits by >= 0.067 and dropping the "/2" by
>= 0.078 (fixture README); the tolerances below sit between.
"""
import argparse
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm

import backbones  # noqa: F401  (registers the models)
from backbones.vim import checkpoint_filter_fn, resample_pos_embed
from scans import create_scan

FIXTURES = Path(__file__).parent / 'fixtures' / 'vim'
FILES = [
    'vim_tiny_mirror_d32_depth4_p16_s16_img64.pt',
    'vim_tiny_mirror_d32_depth4_p16_s8_img64.pt',
    'vim_tiny_mirror_d32_depth4_p16_s16_img64x96.pt',
]
BASE = FILES[0]
ATOL = 1e-6  # logits; observed <= 1.2e-7
FEATURE_ATOL = 1e-5  # residual-stream features; observed <= 1.2e-6

# hustvl/Vim README, in whole millions, and the relative tolerance. The official Vim-Ti architecture has
# 7.15M parameters (7.25M for Ti+, whose 27x27 position embedding is larger): the README rounds it to 7M.
PUBLISHED_PARAMS = {
    'vim_tiny_patch16_224': (7, 0.04),
    'vim_tiny_patch16_stride8_224': (7, 0.04),
    'vim_small_patch16_224': (26, 0.01),
    'vim_small_patch16_stride8_224': (26, 0.01),
    'vim_base_patch16_224': (98, 0.01),
}


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def _model_kwargs(fixture: dict) -> dict:
    kw = fixture['official_kwargs']
    img_size = kw['img_size']
    return dict(
        num_classes=kw['num_classes'], patch_stride=kw['stride'],
        img_size=tuple(img_size) if isinstance(img_size, list) else img_size,
    )


def _official_model(fixture: dict, **kwargs) -> torch.nn.Module:
    model = timm.create_model('test_vim', **{**_model_kwargs(fixture), **kwargs}).eval()
    model.load_state_dict(checkpoint_filter_fn(fixture['state_dict'], model), strict=True)
    return model


def _assert_logits(model: torch.nn.Module, fixture: dict) -> None:
    with torch.no_grad():
        for x, ref in zip(fixture['inputs'], fixture['logits']):
            torch.testing.assert_close(model(x), ref, atol=ATOL, rtol=0)


def _official_param_count(dim: int, depth: int, num_patches: int, d_state: int = 16, classes: int = 1000) -> int:
    """Parameters of the official VisionMamba, from its layer shapes (in_chans 3, patch 16, expand 2, d_conv 4)."""
    inner, rank = 2 * dim, math.ceil(dim / 16)
    # conv1d (+bias), x_proj, dt_proj (+bias), A_log, D: once per direction.
    direction = inner * 4 + inner + inner * (rank + 2 * d_state) + rank * inner + inner + inner * d_state + inner
    layer = dim * 2 * inner + 2 * direction + inner * dim + dim  # in_proj, directions, out_proj, norm
    embed = 3 * 16 * 16 * dim + dim + dim + (num_patches + 1) * dim  # patch conv, cls token, pos_embed
    return embed + depth * layer + dim + dim * classes + classes  # norm_f, head


@pytest.mark.parametrize('name', PUBLISHED_PARAMS)
def test_published_parameter_count(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters())
    grid = 27 if 'stride8' in name else 14
    assert count == _official_param_count(model.embed_dim, len(model.blocks), grid * grid)
    published, tolerance = PUBLISHED_PARAMS[name]
    assert round(count / 1e6) == published and abs(count / 1e6 - published) <= tolerance * published, count


@pytest.mark.parametrize('file', FILES)
def test_fixture_mirrors_test_variant(file):
    """``test_vim`` is the fixtures' official configuration (so the fixture tests cover what CI runs)."""
    fixture = _fixture(file)
    kw = fixture['official_kwargs']
    assert (kw['bimamba_type'], kw['if_cls_token'], kw['use_middle_cls_token'], kw['if_divide_out']) == (
        'v2', True, True, True)
    assert (kw['rms_norm'], kw['residual_in_fp32'], kw['if_abs_pos_embed'], kw['if_rope']) == (True, True, True, False)
    model = timm.create_model('test_vim', **_model_kwargs(fixture))
    assert (model.embed_dim, len(model.blocks), model.patch_embed.patch_size) == (
        kw['embed_dim'], kw['depth'], kw['patch_size'])
    assert model.blocks[0].mixer.ssm.num_routes == 2
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in fixture['state_dict'].values())


@pytest.mark.parametrize('file', FILES)
def test_official_logits(file):
    fixture = _fixture(file)
    _assert_logits(_official_model(fixture), fixture)


def test_official_features():
    """Patch tokens, every block output (official residual + mixer output) and the pre-logits class token."""
    fixture = _fixture(BASE)
    model = _official_model(fixture)
    features = dict(zip(fixture['feature_names'], fixture['features']))
    x = fixture['inputs'][0]
    with torch.no_grad():
        torch.testing.assert_close(model.patch_embed(x), features['patch_embed'], atol=FEATURE_ATOL, rtol=0)
        final, intermediates = model.forward_intermediates(x)
        middle = 16 // 2
        for i, ours in enumerate(intermediates):
            tokens = features[f'layers.{i}.residual'] + features[f'layers.{i}.hidden_states(mixer_out)']
            tokens = torch.cat([tokens[:, :middle], tokens[:, middle + 1:]], dim=1)  # the class token is dropped
            torch.testing.assert_close(ours, tokens.transpose(1, 2).reshape(2, 32, 4, 4), atol=FEATURE_ATOL, rtol=0)
        pre_logits = [v for k, v in features.items() if k.startswith('pre_logits')][0]
        torch.testing.assert_close(model.forward_head(final, pre_logits=True), pre_logits, atol=FEATURE_ATOL, rtol=0)


def test_pretrained_through_timm(tmp_path):
    """``pretrained=True`` with official files goes through the filter and loads strictly (see the module docs)."""
    fixture = _fixture(BASE)
    sd = fixture['state_dict']
    overlay = dict(num_classes=10)
    model = timm.create_model(
        'test_vim', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(state_dict={'model': sd}, **overlay))
    _assert_logits(model.eval(), fixture)
    # Other input channels pass the filter's shape check: timm adapts the patch conv afterwards.
    gray = timm.create_model(
        'test_vim', pretrained=True, in_chans=1, num_classes=10, pretrained_cfg_overlay=dict(state_dict=sd, **overlay))
    assert gray.patch_embed.proj.weight.shape == (32, 1, 16, 16)
    # A DeiT-style training file pickles its argparse.Namespace, which weights_only loading must be allowed.
    path = tmp_path / 'official.pth'
    torch.save({'model': sd, 'epoch': 299, 'args': argparse.Namespace(model='vim_tiny', lr=1e-3)}, path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        model = timm.create_model(
            'test_vim', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path), **overlay))
    _assert_logits(model.eval(), fixture)


@pytest.mark.parametrize('layout', ['training_file', 'module_prefix', 'plain', 'own'])
def test_checkpoint_layouts(layout):
    fixture = _fixture(BASE)
    sd = fixture['state_dict']
    snapshot = {k: v.clone() for k, v in sd.items()}
    model = timm.create_model('test_vim', num_classes=10).eval()
    checkpoint = {
        # 'model' holds the published weights; the EMA copy must not be taken instead.
        'training_file': lambda: {'model': sd, 'model_ema': {k: torch.zeros_like(v) for k, v in sd.items()}},
        'module_prefix': lambda: {'model': {'module.' + k: v for k, v in sd.items()}},
        'plain': lambda: sd,
        'own': lambda: _official_model(fixture).state_dict(),
    }[layout]()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    _assert_logits(model, fixture)
    assert sd.keys() == snapshot.keys() and all(torch.equal(sd[k], snapshot[k]) for k in sd)  # input untouched


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dim=48), r'patch_embed\.proj\.weight: checkpoint \(32, 3, 16, 16\) vs model \(48, 3, 16, 16\)'),
    (dict(depth=3), 'blocks: 4 blocks in the checkpoint vs 3 in the model'),
    (dict(scan='cross'), r"scan 'cross' with K=4.*ssm\.x_proj_weight: checkpoint \(2, 34, 64\) vs model \(4, 34, 64\)"),
    (dict(d_state=8), r'ssm\.A_logs: checkpoint \(128, 16\) vs model \(128, 8\)'),
])
def test_wrong_variant_names_mismatched_keys_and_shapes(kwargs, match):
    model = timm.create_model('test_vim', num_classes=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(_fixture(BASE)['state_dict'], model)


def test_other_architectures_are_refused():
    sd = _fixture(BASE)['state_dict']
    model = timm.create_model('test_vim', num_classes=10)
    with pytest.raises(ValueError, match='legacy Vim with RoPE'):
        checkpoint_filter_fn({**sd, 'rope.freqs_cos': torch.zeros(196, 32)}, model)
    single = {k: v for k, v in sd.items() if not k.startswith('layers.0.mixer.x_proj_b')}
    with pytest.raises(ValueError, match=r'layers\.0\.mixer\.x_proj\.weight but not its backward twin'):
        checkpoint_filter_fn(single, model)
    with pytest.raises(ValueError, match='neither the model grid'):
        checkpoint_filter_fn({**sd, 'pos_embed': torch.zeros(1, 13, 32)}, model)
    # A head for other classes passes the filter: timm drops it when num_classes differs.
    filtered = checkpoint_filter_fn(sd, timm.create_model('test_vim', num_classes=5))
    assert filtered['head.weight'].shape == (10, 32)


def test_pos_embed_resampling_keeps_the_middle_class_entry_out_of_the_grid():
    """The class entry at M // 2 moves to the new middle untouched; only the patch grid is interpolated."""
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(1, 6, 3, 4, generator=g)  # (1, D, H, W) patch embeddings
    patches = grid.flatten(2).transpose(1, 2)
    cls_entry = torch.full((1, 1, 6), 100.)
    pos_embed = torch.cat([patches[:, :6], cls_entry, patches[:, 6:]], dim=1)  # M = 12, class at 6

    assert resample_pos_embed(pos_embed, (3, 4), (3, 4)) is pos_embed
    out = resample_pos_embed(pos_embed, (5, 7), (3, 4))
    assert out.shape == (1, 36, 6)
    torch.testing.assert_close(out[:, 35 // 2], cls_entry[:, 0], rtol=0, atol=0)
    expected = F.interpolate(grid, size=(5, 7), mode='bicubic', align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(torch.cat([out[:, :17], out[:, 18:]], dim=1), expected)
    assert out.abs().max() == 100.  # the official helper would smear the class entry into the grid


def test_stride8_model_from_stride16_checkpoint():
    """The official fine-tuning start: stride-16 weights, 4x4 -> 7x7 position grid, strict load."""
    sd = _fixture(BASE)['state_dict']
    model = timm.create_model('test_vim', num_classes=10, patch_stride=8).eval()
    filtered = checkpoint_filter_fn(sd, model)
    model.load_state_dict(filtered, strict=True)
    assert model.grid_size == (7, 7) and filtered['pos_embed'].shape == (1, 50, 32)
    torch.testing.assert_close(filtered['pos_embed'][:, 24], sd['pos_embed'][:, 8], rtol=0, atol=0)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_other_input_sizes_resample_the_position_embedding():
    """Any size the patches tile works; on the fly it equals a model resampled for good by set_input_size."""
    fixture = _fixture(BASE)
    model = _official_model(fixture)
    x_wide = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    resized = copy.deepcopy(model)
    resized.set_input_size((64, 96))
    assert resized.grid_size == (4, 6) and resized.pos_embed.shape == (1, 25, 32)
    with torch.no_grad():
        torch.testing.assert_close(resized(x_wide), model(x_wide), rtol=0, atol=0)
        assert torch.isfinite(model(torch.randn(1, 3, 16, 160))).all()
    stride8 = timm.create_model('test_vim', patch_stride=8).eval()
    with torch.no_grad():
        feats = stride8.forward_intermediates(torch.randn(1, 3, 72, 40), intermediates_only=True)
    assert [f.shape for f in feats] == [(1, 32, 8, 4)] * 4


@pytest.mark.parametrize('kwargs, size, match', [
    (dict(), (64, 70), '64x70'),
    (dict(), (8, 64), 'multiples of 16 and >= 16; got input 8x64'),
    (dict(patch_stride=8), (68, 64), r'16 \+ 8 \* n \(multiples of 8\).*68x64'),
])
def test_sizes_the_patches_do_not_tile_raise(kwargs, size, match):
    model = timm.create_model('test_vim', **kwargs)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(1, 3, *size))
    with pytest.raises(ValueError, match='img_size 20x20'):
        timm.create_model('test_vim', img_size=20)


@pytest.mark.parametrize('scan', ['raster', 'cross', 'snake', 'hilbert', 'grouped'])
def test_scan_option(scan):
    model = timm.create_model('test_vim', scan=scan).eval()
    routes = create_scan(scan).num_routes
    mixer = model.blocks[0].mixer
    assert mixer.ssm.num_routes == routes and mixer.ssm.x_proj_weight.shape[0] == routes
    assert mixer.conv1d.out_channels == 64 * (1 if scan == 'grouped' else routes)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_scan_option_changes_the_function():
    """Official weights load into any K=2 scan; only 'bidirectional' gives the official function."""
    fixture = _fixture(BASE)
    x = fixture['inputs'][0]
    with torch.no_grad():
        official = _official_model(fixture)(x)
        for scan in ('snake', 'hilbert', 'spiral'):
            assert (_official_model(fixture, scan=scan)(x) - official).abs().max() > 1e3 * ATOL


def test_scan_that_cannot_carry_the_class_token_raises():
    with pytest.raises(ValueError, match="scan 'atrous' cannot carry a middle token"):
        timm.create_model('test_vim', scan='atrous')
    with pytest.raises(ValueError, match='unknown scan'):
        timm.create_model('test_vim', scan='zigzagzag')


def test_global_pool_options():
    model = timm.create_model('test_vim', num_classes=0, global_pool='').eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        tokens = model(x)
    assert tokens.shape == (2, 25, 32)
    model.reset_classifier(0, 'token')
    torch.testing.assert_close(model.forward_head(tokens), tokens[:, 12])
    model.reset_classifier(0, 'avg')
    torch.testing.assert_close(model.forward_head(tokens), torch.cat([tokens[:, :12], tokens[:, 13:]], 1).mean(1))
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(0, 'max')


def test_features_only_of_the_published_variants():
    """Four evenly spaced blocks at the patch stride, as the official segmentation backbone."""
    for name, reduction in [('vim_small_patch16_224', 16), ('vim_tiny_patch16_stride8_224', 8)]:
        with torch.device('meta'):
            model = timm.create_model(name, features_only=True)
        assert model.feature_info.module_name() == ['blocks.5', 'blocks.11', 'blocks.17', 'blocks.23']
        assert model.feature_info.reduction() == [reduction] * 4
        assert len(model.model.blocks) == 24


def test_no_weight_decay_covers_embeddings_and_ssm():
    model = timm.create_model('test_vim')
    names = model.no_weight_decay()
    assert {'pos_embed', 'cls_token', 'blocks.3.mixer.ssm.A_logs', 'blocks.0.mixer.ssm.dt_projs_bias'} <= names


def test_autocast_keeps_a_float32_residual_stream():
    fixture = _fixture(BASE)
    model = _official_model(fixture)
    x = fixture['inputs'][0]
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            final, intermediates = model.forward_intermediates(x)
            out = model.forward_head(final)
    assert final.dtype == torch.float32 and all(f.dtype == torch.float32 for f in intermediates)
    torch.testing.assert_close(out.float(), ref, atol=0.02, rtol=0.1)
