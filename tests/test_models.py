"""The timm contract, checked for every model of the project.

The behavioural tests run on the tiny CI variants: every registered project model whose name starts with
``test_`` (a new family only has to register a ``test_<family>`` variant to be covered). The cheap
structural tests run on every project model, built on the meta device. Input 64x64, batch 2.
"""
import math

import pytest
import torch
import timm
from timm.layers import get_channel_dim
from timm.models import model_entrypoint
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

import backbones  # noqa: F401  (registers the project's models)

PROJECT_MODELS = sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith('backbones.'))
TEST_MODELS = [n for n in PROJECT_MODELS if n.startswith('test_')]
SIZE = 64
BATCH = 2

# Parameters that must never decay, by name: SSM A_log / D / dt bias, relative-position bias tables, absolute
# position embeddings and class tokens, the sine frequencies of Hyena implicit filters.
NO_WEIGHT_DECAY_PARAMS = (
    'A_logs', 'Ds', 'dt_projs_bias', 'relative_position_bias_table', 'pos_embed', 'cls_token', 'freq')

over_test_models = pytest.mark.parametrize('name', TEST_MODELS)
over_all_models = pytest.mark.parametrize('name', PROJECT_MODELS)


def _input(channels: int = 3, size=(SIZE, SIZE), seed: int = 0) -> torch.Tensor:
    return torch.randn(BATCH, channels, *size, generator=torch.Generator().manual_seed(seed))


def _create(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


def test_registry_has_ci_variants():
    assert TEST_MODELS, 'no project test_* models registered'
    assert set(TEST_MODELS) < set(PROJECT_MODELS)


@over_test_models
def test_forward(name):
    model = _create(name).eval()
    with torch.no_grad():
        out = model(_input())
    assert out.shape == (BATCH, model.num_classes)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])


@over_test_models
def test_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=42, drop_rate=0.1, drop_path_rate=0.1).train()
    out = model(_input())
    assert out.shape == (BATCH, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'parameters without gradient: {missing}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@over_test_models
def test_features_only(name):
    model = _create(name, features_only=True).eval()
    info = model.feature_info
    assert len(info.channels()) >= 3
    assert info.reduction() == sorted(info.reduction())
    with torch.no_grad():
        feats = model(_input())
    assert len(feats) == len(info.channels())
    for feat, chs, red in zip(feats, info.channels(), info.reduction()):
        assert feat.shape == (BATCH, chs, math.ceil(SIZE / red), math.ceil(SIZE / red))  # NCHW
        assert torch.isfinite(feat).all()

    subset = _create(name, features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        feats13 = subset(_input())
    assert [f.shape[1] for f in feats13] == [info.channels()[1], info.channels()[3]]
    torch.testing.assert_close(feats13, [feats[1], feats[3]])


@over_test_models
def test_forward_intermediates(name):
    model = _create(name).eval()
    x = _input()
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(intermediates) == len(model.feature_info)
        for feat, info in zip(intermediates, model.feature_info):
            assert feat.shape == (BATCH, info['num_chs'], SIZE // info['reduction'], SIZE // info['reduction'])
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two, intermediates[-2:])
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early, intermediates[:1])
        _, early = model.forward_intermediates(x, indices=[0], stop_early=True)
        torch.testing.assert_close(early, intermediates[:1])
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)


@over_test_models
def test_reset_classifier(name):
    model = _create(name).eval()
    x = _input()
    with torch.no_grad():
        features = model.forward_features(x)
        # The channel axis follows output_fmt, as in timm: NCHW maps, NHWC maps, NLC token sequences.
        assert features.shape[get_channel_dim(getattr(model, 'output_fmt', 'NCHW'))] == model.num_features
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (BATCH, model.head_hidden_size)

        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre_logits)

        model.reset_classifier(0, '')
        out = model(x)
        assert out.shape == features.shape  # unpooled: the layout of forward_features

        unpooled = _create(name, num_classes=0, global_pool='').eval()
        assert unpooled(x).shape == out.shape

        model.reset_classifier(5, 'avg')
        assert model(x).shape == (BATCH, 5) and model.get_classifier().out_features == 5


@over_test_models
def test_num_classes_and_in_chans_overrides(name):
    model = _create(name, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert model(_input(channels=1)).shape == (BATCH, 7)
        with pytest.raises(ValueError, match='in_chans'):
            model(_input(channels=3))


@over_test_models
def test_grad_checkpointing_matches(name):
    model = _create(name).eval()  # eval: no dropout / drop path, so both passes compute the same function
    x = _input()
    out = model(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    out_ckpt = model(x)
    out_ckpt.square().mean().backward()
    torch.testing.assert_close(out_ckpt, out, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=lambda m: f'{n}: {m}')


@over_test_models
def test_non_square_input(name):
    model = _create(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(_input(size=(SIZE, 3 * SIZE // 2)))
    for feat, red in zip(feats, model.feature_info.reduction()):
        assert feat.shape[-2:] == (math.ceil(SIZE / red), math.ceil(3 * SIZE // 2 / red))
        assert torch.isfinite(feat).all()


@over_test_models
def test_odd_size_works_or_raises_value_error(name):
    """Detection feeds arbitrary sizes: a model either takes 37x53 or says clearly that it cannot."""
    model = _create(name).eval()
    try:
        with torch.no_grad():
            out = model(_input(size=(37, 53)))
    except ValueError as e:
        assert '37' in str(e) and '53' in str(e), f'the error should name the size: {e}'
    else:
        assert out.shape == (BATCH, model.num_classes) and torch.isfinite(out).all()


@over_test_models
def test_bad_input_raises_value_error(name):
    model = _create(name).eval()
    with pytest.raises(ValueError, match='expects input'):
        model(torch.randn(BATCH, 3, SIZE))
    with pytest.raises(ValueError, match='expects input'):
        model.forward_intermediates(_input(channels=4))


@over_test_models
def test_no_weight_decay(name):
    model = _create(name)
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    special = {n for n in params if n.rsplit('.', 1)[-1] in NO_WEIGHT_DECAY_PARAMS}
    assert special and special <= names
    groups = param_groups_weight_decay(model, weight_decay=0.05, no_weight_decay_list=names)
    decayed = {id(p) for g in groups if g['weight_decay'] > 0 for p in g['params']}
    assert not any(id(params[n]) in decayed for n in special)


@over_test_models
def test_group_matcher(name):
    model = _create(name)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    assert sum(len(g['params']) for g in groups) == len(list(model.parameters()))
    assert len({g['lr_scale'] for g in groups}) > 2  # stem, stages and head are told apart


@over_test_models
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_torch_compile_traces_one_graph(name, device):
    """``torch.compile`` traces the whole model (fullgraph: no graph break), in training mode under autocast and in
    eval, and matches eager. On CUDA the Triton kernels enter the graph as custom ops. A graph break per block
    (once from ``torch.amp.is_autocast_available``, opaque to torch 2.11's dynamo) made the resumed frames
    recompile per block and compiled training half as fast as eager."""
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    model = _create(name).to(device)
    x = _input().to(device)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    with torch.autocast(device, torch.bfloat16):
        compiled(x).float().sum().backward()
    model.eval()
    # On CUDA the compiled graph takes the custom ops where eager takes fused autograd nodes, and cuDNN convolutions
    # run in TF32: float32 results differ in the last bits (SOFT's Newton-Schulz iterations: 2.7e-5 on an H100).
    tolerance = dict(rtol=1e-3, atol=1e-4) if device == 'cuda' else dict(rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), **tolerance)


@over_all_models
def test_structure_and_pretrained_cfg(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state
    assert cfg['classifier'] + '.weight' in state
    assert cfg.get('license') and cfg.get('origin_url')
    if not name.startswith('test_') and 'no released weights' not in cfg.get('notes', ''):
        assert cfg.get('url') or cfg.get('hf_hub_id'), f'{name} has no pretrained weights source'
    assert model.num_features > 0 and model.head_hidden_size > 0 and model.num_classes == cfg['num_classes']
    reductions = [info['reduction'] for info in model.feature_info]
    assert len(reductions) >= 3 and reductions == sorted(reductions)
    assert all(info['num_chs'] > 0 for info in model.feature_info)
    assert model.no_weight_decay() <= set(dict(model.named_parameters()))
