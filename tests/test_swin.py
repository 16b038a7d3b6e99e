"""Swin: the same weights give timm's outputs; timm and official checkpoint layouts; published sizes; input sizes.

The references are timm's own ``SwinTransformer`` models (small widths, the real window sizes), built for the input
size under test (timm fits windows to the size it is built for; this model fits them to every input), with random
LayerNorm / bias / relative-position parameters so that a dropped, swapped or misplaced one shows. Tolerance 1e-5:
float32 rounding differences are ~1e-7 here.
"""
import re

import pytest
import torch
import timm
from timm.models._manipulate import reinit_non_persistent_buffers
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.swin_transformer import checkpoint_filter_fn as timm_checkpoint_filter_fn

import backbones  # noqa: F401  (registers the models)
from backbones.swin import SwinTransformer, WindowAttention, checkpoint_filter_fn

ATOL = 1e-5
SMALL = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))

# Published parameter counts in millions (official README, rounded), and timm's model of the same architecture.
PUBLISHED_PARAMS = {
    'zswin_tiny_patch4_window7_224': (28, 'swin_tiny_patch4_window7_224'),
    'zswin_small_patch4_window7_224': (50, 'swin_small_patch4_window7_224'),
    'zswin_base_patch4_window7_224': (88, 'swin_base_patch4_window7_224'),
    'zswin_base_patch4_window12_384': (88, 'swin_base_patch4_window12_384'),
    'zswin_large_patch4_window12_384': (197, 'swin_large_patch4_window12_384'),
}

# (window, input size): the square training size; a non-square size with a shift along one axis of the last stage
# (7 x 10 map: rows fit one window, columns do not) and stage maps padded to whole windows; window 12 likewise.
TIMM_CASES = [(7, (224, 224)), (7, (224, 320)), (12, (384, 448))]


def _timm_reference(window: int, img_size, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = TimmSwin(img_size=img_size, window_size=window, drop_path_rate=0., **SMALL).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:  # LayerNorm weight / bias and Linear biases: timm inits them to 1 / 0
                param.add_(torch.randn_like(param) * 0.2)
            elif name.endswith('relative_position_bias_table'):
                param.normal_(std=0.5)
    return model


def _ours(window: int, state_dict=None, **kwargs) -> SwinTransformer:
    """The zoo's model loaded through timm's pretrained path (so through ``checkpoint_filter_fn``, strict)."""
    overlay = dict(state_dict=state_dict) if isinstance(state_dict, dict) else dict(file=str(state_dict))
    return timm.create_model(
        'zswin_tiny_patch4_window7_224',
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        window_size=window,
        **SMALL,
        **kwargs,
    ).eval()


def _input(size, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def _official_layout(reference: torch.nn.Module) -> dict:
    """timm's state_dict renamed back to the official release layout, buffers included, in a training checkpoint."""
    out = {}
    for key, value in reference.state_dict().items():
        # Official: patch merging closes stage i (timm: opens stage i + 1); the classifier is a bare Linear.
        key = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', key)
        out[re.sub(r'^head\.fc\.', 'head.', key)] = value
    # The official blocks register relative_position_index and attn_mask as persistent buffers.
    out.update({k: v for k, v in reference.named_buffers() if k.endswith(('relative_position_index', 'attn_mask'))})
    assert {'layers.0.downsample.reduction.weight', 'head.weight', 'layers.0.blocks.1.attn_mask'} <= out.keys()
    return {'model': out}


@pytest.mark.parametrize(('window', 'size'), TIMM_CASES, ids=lambda v: str(v))
def test_same_outputs_as_timm(window, size):
    reference = _timm_reference(window, size)
    model = _ours(window, reference.state_dict())
    x = _input(size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=0)
        ref_final, ref_feats = reference.forward_intermediates(x)
        final, feats = model.forward_intermediates(x)
        torch.testing.assert_close(final, ref_final.permute(0, 3, 1, 2), atol=ATOL, rtol=0)
        torch.testing.assert_close(feats, ref_feats, atol=ATOL, rtol=0)
        torch.testing.assert_close(model.forward_features(x), final)
        features = _ours(window, reference.state_dict(), features_only=True).eval()
        torch.testing.assert_close(features(x), ref_feats, atol=ATOL, rtol=0)  # NCHW, like timm's intermediates


def test_same_gradients_as_timm():
    size = (224, 320)
    reference = _timm_reference(7, size)
    model = _ours(7, reference.state_dict(), drop_path_rate=0.)
    x = _input(size)
    for m in (reference, model):
        m.train()
        m(x).square().mean().backward()
    ref_grads = {k: p.grad for k, p in reference.named_parameters()}
    ours = checkpoint_filter_fn(ref_grads, model)  # timm names -> ours
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ours[name], atol=1e-6, rtol=1e-4, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_official_checkpoint_layout(prefix, tmp_path):
    size = (224, 320)
    reference = _timm_reference(7, size)
    checkpoint = _official_layout(reference)
    checkpoint['model'] = {prefix + k: v for k, v in checkpoint['model'].items()}
    path = tmp_path / 'swin_official.pth'
    torch.save(checkpoint, path)
    model = _ours(7, path)  # timm's file loader, then checkpoint_filter_fn, strict
    x = _input(size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=0)


def test_filter_passes_own_checkpoints_and_drops_buffers():
    reference = _timm_reference(7, 224)
    model = _ours(7, reference.state_dict())
    own = model.state_dict()
    assert checkpoint_filter_fn(own, model).keys() == own.keys()
    converted = checkpoint_filter_fn(_official_layout(reference), model)
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in converted)
    assert converted.keys() == own.keys()
    assert all(torch.equal(converted[k], own[k]) for k in own)


def test_filter_resizes_bias_tables_like_timm():
    """224 / window-7 weights into a window-12 model (the official 384 fine-tuning start)."""
    source = _timm_reference(7, 224).state_dict()
    target = timm.create_model('zswin_tiny_patch4_window7_224', window_size=12, **SMALL)
    converted = checkpoint_filter_fn(source, target)
    target.load_state_dict(converted, strict=True)
    timm_converted = timm_checkpoint_filter_fn(source, TimmSwin(img_size=384, window_size=12, **SMALL))
    table = converted['stages.2.blocks.1.attn.relative_position_bias_table']
    assert table.shape == (23 * 23, 4)
    torch.testing.assert_close(table, timm_converted['layers.2.blocks.1.attn.relative_position_bias_table'])


@pytest.mark.parametrize('name', PUBLISHED_PARAMS)
def test_published_parameter_count(name):
    published, timm_name = PUBLISHED_PARAMS[name]
    with torch.device('meta'):
        count = sum(p.numel() for p in timm.create_model(name).parameters())
        timm_count = sum(p.numel() for p in timm.create_model(timm_name).parameters())
    assert count == timm_count
    # The README rounds to whole millions (Swin-T has 28.29M: 1.03% above "28M").
    assert round(count / 1e6) == published, count


def test_window_fitted_to_a_small_map_reads_the_trained_offsets():
    """On a map smaller than the window (a 2 x 3 window here), each pair uses the table entry of its offset."""
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=2, window_size=(7, 7)).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(3, 1, 6, 8)
    pos = [(y, x_) for y in range(2) for x_ in range(3)]
    bias = torch.stack([
        torch.stack([attn.relative_position_bias_table[(yi - yj + 6) * 13 + xi - xj + 6] for yj, xj in pos])
        for yi, xi in pos
    ]).permute(2, 0, 1)  # (heads, N, N)
    q, k, v = attn.qkv(x).view(3, 1, 6, 3, 2, 4).permute(3, 0, 1, 4, 2, 5).unbind(0)
    weights = (q @ k.transpose(-1, -2) / 2 + bias).softmax(-1)
    expected = attn.proj((weights @ v).transpose(2, 3).reshape(3, 1, 6, 8))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, (2, 3)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('size', [(68, 100), (36, 32), (4, 4), (260, 140)])
def test_any_size_divisible_by_the_patch(size):
    model = timm.create_model('test_zswin', features_only=True).eval()
    with torch.no_grad():
        feats = model(_input(size))
    for feat, red, chs in zip(feats, model.feature_info.reduction(), model.feature_info.channels()):
        assert feat.shape == (2, chs, -(-size[0] // red), -(-size[1] // red))
        assert torch.isfinite(feat).all()


def test_layouts_and_masks_are_cached_per_size():
    model = timm.create_model('test_zswin').eval()
    windows = model.stages[0].blocks[1].windows
    assert all(block.windows is windows for stage in model.stages for block in stage.blocks)  # one per model
    with torch.no_grad():
        model(_input((64, 64)))
        layouts = dict(windows._layouts)
        model(_input((64, 64)))
        assert windows._layouts == layouts and all(windows._layouts[k] is v for k, v in layouts.items())
        model(_input((64, 96)))
    assert len(windows._layouts) == 2 * len(layouts)
    layout = windows.layout(16, 16, True, torch.device('cpu'))  # stage 0 at 64: 21 x 21 padded, 3 x 3 windows
    assert layout.window == (7, 7) and layout.shift == (3, 3) and layout.mask.shape == (9, 49, 49)
    assert windows.layout(2, 2, True, torch.device('cpu')).mask is None  # one 2 x 2 window: nothing to shift


def test_non_persistent_index_is_rebuilt_after_meta_init():
    fresh = timm.create_model('test_zswin')
    with torch.device('meta'):
        model = timm.create_model('test_zswin')
    model.to_empty(device='cpu')
    reinit_non_persistent_buffers(model)
    for (name, buffer), expected in zip(model.named_buffers(), fresh.buffers()):
        assert torch.equal(buffer, expected), name


def test_no_weight_decay_is_the_bias_tables():
    model = timm.create_model('test_zswin')
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters() if 'relative_position_bias_table' in n}
    assert len(model.no_weight_decay()) == sum(len(stage.blocks) for stage in model.stages)


@pytest.mark.parametrize(('kwargs', 'match'), [
    (dict(depths=(2, 2), num_heads=(1, 2, 4)), 'one entry per stage'),
    (dict(embed_dim=30, num_heads=(4, 8, 16, 32)), 'divisible by num_heads'),
    (dict(window_size=0), 'window_size'),
    (dict(window_size=(7, 7)), 'window_size'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('test_zswin', **kwargs)


def test_bad_input_sizes_name_the_problem():
    model = timm.create_model('test_zswin').eval()
    with pytest.raises(ValueError, match=r'divisible by the patch size 4, got \(66, 64\)'):
        model(_input((66, 64)))
    with pytest.raises(ValueError, match=r'in_chans=3\), got \(2, 1, 64, 64\)'):
        model(torch.zeros(2, 1, 64, 64))


def test_torch_compile_fullgraph_at_two_sizes():
    """Layouts and masks are per size: the graph specialises on the size instead of breaking."""
    torch._dynamo.reset()
    model = timm.create_model('test_zswin', depths=(2, 1, 1, 1)).eval()  # one shifted block keeps it quick
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        for size in [(64, 64), (96, 128)]:  # the second size would make sizes symbolic without specialisation
            x = _input(size)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dim=48), r'dims=\(48, 96, 192, 384\).*stem\.proj\.weight: checkpoint \(16, 3, 4, 4\) vs model '
                         r'\(48, 3, 4, 4\)'),
    (dict(depths=(2, 2, 3, 2)), r'stages\.2\.blocks: 2 blocks in the checkpoint vs 3 in the model'),
])
def test_wrong_variant_names_mismatched_keys_and_shapes(kwargs, match):
    state_dict = timm.create_model('test_zswin').state_dict()
    with pytest.raises(ValueError, match=match):
        checkpoint_filter_fn(state_dict, timm.create_model('test_zswin', **kwargs))
