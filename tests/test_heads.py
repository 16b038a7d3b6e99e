"""heads/ and configs/ against the real MMDetection, MMSegmentation and mmengine (skipped when they are absent).

Every config is built (on the meta device: the full-size models, without their cost); training steps, the
optimizer constructor and short Runner trainings use the tiny ``test_*`` zoo models at 64x64.
"""
import argparse
import glob
import os
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

pytest.importorskip('mmcv.ops', reason='needs mmcv with ops: bash tools/install_openmmlab.sh')
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import timm  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS, init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import backbones  # noqa: E402,F401
from heads import LinZooBackbone, SimpleFeaturePyramid, TimmLayerDecayOptimWrapperConstructor  # noqa: E402
from mm_helpers import (narrow_mask_rcnn, tiny_config, use_tiny_ade20k, use_tiny_coco, write_ade20k,  # noqa: E402
                        write_coco)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(str(ROOT / 'configs' / '*' / '*' / '*.py'))
    if '/_base_/' not in path)
TINY_FAMILIES = ['test_vmamba', 'test_vanilla_vmamba', 'test_efficientvmamba', 'test_msvmamba', 'test_spatialmamba',
                 'test_groupmamba', 'test_zswin', 'test_soft', 'test_vim', 'test_m2vit']


def _registry(cfg: Config):
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS as scoped
    else:
        from mmseg.registry import MODELS as scoped
    return scoped


def _family_of(config: str) -> str:
    return config.split('/')[2]


# --------------------------------------------------------------------------------------------------------- configs

@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_its_model(config):
    cfg = Config.fromfile(str(ROOT / config))
    assert cfg.custom_imports == dict(imports=['heads'], allow_failed_imports=False)
    header = open(ROOT / config).read().split('\n_base_')[0]
    published = re.search(r'Published: (box AP [\d.]+, mask AP [\d.]+|mIoU [\d.]+)', header)
    assert published or 'no RetinaNet result' in header, f'{config}: the header must state what it reproduces'
    with torch.device('meta'):
        model = _registry(cfg).build(cfg.model)
    expected = {'mask-rcnn': 'MaskRCNN', 'retinanet': 'RetinaNet', 'upernet': 'EncoderDecoder'}
    assert type(model).__name__ == expected[Path(config).name.split('_')[0]]
    backbone = model.backbone
    assert isinstance(backbone, LinZooBackbone) and backbone.arch == cfg.model.backbone.arch
    assert type(backbone.body).__module__ == f'backbones.{_family_of(config)}'
    # The pyramid takes what the backbone gives: FPN / UPerHead in_channels, or one width for the simple pyramid.
    if isinstance(model.neck if hasattr(model, 'neck') else None, SimpleFeaturePyramid):
        assert cfg.model.neck.in_channels == backbone.out_channels[-1]
    elif cfg.default_scope == 'mmdet':
        assert list(cfg.model.neck.in_channels) == list(backbone.out_channels)
    else:
        assert list(cfg.model.decode_head.in_channels) == list(backbone.out_channels)
        assert cfg.model.auxiliary_head.in_channels == backbone.out_channels[2]
    if 'init_cfg' in cfg.model.backbone:
        assert cfg.model.backbone.init_cfg.checkpoint


def test_configs_cover_the_published_results():
    names = {Path(c).name for c in CONFIGS}
    for short in ['vmamba-t-s1l8', 'vmamba-t-s2l5', 'vmamba-s-s2l15', 'vmamba-b-s2l15', 'vanilla-vmamba-t',
                  'vanilla-vmamba-s', 'vanilla-vmamba-b', 'msvmamba-m', 'msvmamba-t', 'spatialmamba-t',
                  'spatialmamba-s', 'spatialmamba-b', 'swin-t', 'swin-s', 'swin-b']:
        assert f'mask-rcnn_{short}_fpn_1x_coco.py' in names
        assert f'upernet_{short}_8xb2-160k_ade20k-512x512.py' in names
    for short in ['vmamba-t-s1l8', 'vmamba-t-s2l5', 'vmamba-s-s2l15', 'vanilla-vmamba-t', 'vanilla-vmamba-s',
                  'msvmamba-m', 'msvmamba-t', 'spatialmamba-t', 'spatialmamba-s', 'swin-t', 'swin-s']:
        assert f'mask-rcnn_{short}_fpn_ms-crop-3x_coco.py' in names
    assert {'upernet_vim-ti_sfp_4xb8-60k_ade20k-512x512.py', 'upernet_vim-s_sfp_4xb8-60k_ade20k-512x512.py'} <= names
    retina_families = {_family_of(c) for c in CONFIGS if Path(c).name.startswith('retinanet_')}
    assert retina_families == {'vmamba', 'efficientvmamba', 'msvmamba', 'spatialmamba', 'groupmamba', 'swin', 'soft',
                               'vim', 'm2vit'}


# ------------------------------------------------------------------------------------------------------ train step

def _det_batch() -> Dict:
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64), (3, 64, 64)], num_items=[2, 3], num_classes=80,
                          with_mask=True)


def _seg_batch() -> Dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64), generator=generator))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator) for _ in range(2)]
    return dict(inputs=inputs, data_samples=samples)


TRAIN_STEP_CASES = [
    ('configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py', 'test_vmamba'),
    ('configs/detection/vmamba/mask-rcnn_vanilla-vmamba-t_fpn_ms-crop-3x_coco.py', 'test_vanilla_vmamba'),
    ('configs/detection/msvmamba/mask-rcnn_msvmamba-m_fpn_1x_coco.py', 'test_msvmamba'),
    ('configs/detection/spatialmamba/mask-rcnn_spatialmamba-t_fpn_1x_coco.py', 'test_spatialmamba'),
    ('configs/detection/swin/mask-rcnn_swin-t_fpn_1x_coco.py', 'test_zswin'),
    ('configs/detection/efficientvmamba/retinanet_efficientvmamba-t_fpn_1x_coco.py', 'test_efficientvmamba'),
    ('configs/detection/groupmamba/retinanet_groupmamba-t_fpn_1x_coco.py', 'test_groupmamba'),
    ('configs/detection/soft/retinanet_soft-t_fpn_1x_coco.py', 'test_soft'),
    ('configs/detection/vim/retinanet_vim-ti_sfp_1x_coco.py', 'test_vim'),
    ('configs/detection/m2vit/retinanet_m2vit-b_sfp_1x_coco.py', 'test_m2vit'),
    ('configs/segmentation/vmamba/upernet_vmamba-t-s1l8_8xb2-160k_ade20k-512x512.py', 'test_vmamba'),
    ('configs/segmentation/spatialmamba/upernet_spatialmamba-t_8xb2-160k_ade20k-512x512.py', 'test_spatialmamba'),
    ('configs/segmentation/swin/upernet_swin-t_8xb2-160k_ade20k-512x512.py', 'test_zswin'),
    ('configs/segmentation/vim/upernet_vim-ti_sfp_4xb8-60k_ade20k-512x512.py', 'test_vim'),
]


@pytest.mark.parametrize('config, arch', TRAIN_STEP_CASES)
def test_train_step_has_finite_losses_and_reaches_every_backbone_parameter(config, arch):
    torch.manual_seed(0)
    cfg = tiny_config(config, arch)
    cfg.model.backbone.drop_path_rate = 0.  # a block dropped for the whole batch would get no gradient
    model = _registry(cfg).build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(_det_batch() if cfg.default_scope == 'mmdet' else _seg_batch(), True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert all(np.isfinite(float(v)) for v in log_vars.values()), log_vars
    loss.backward()
    unreached = [name for name, p in model.backbone.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not unreached, f'{arch} in {config}: no gradient reaches {unreached}'


# -------------------------------------------------------------------------------------------------------- backbone

@pytest.mark.parametrize('arch', TINY_FAMILIES)
def test_backbone_outputs_nchw_maps_at_their_strides(arch):
    plain = not hasattr(timm.create_model(arch), 'stages')
    out_indices = (1, 3) if plain else (0, 1, 2, 3)
    backbone = LinZooBackbone(arch, out_indices=out_indices).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        outs = backbone(x)
    assert isinstance(outs, tuple) and len(outs) == len(out_indices)
    expected_strides = (16, 16) if plain else (4, 8, 16, 32)
    assert backbone.out_strides == expected_strides
    for out, channels, stride in zip(outs, backbone.out_channels, backbone.out_strides):
        assert out.shape == (2, channels, 64 // stride, 96 // stride)
    # The body keeps only what the outputs need: every parameter takes part.
    sum(o.sum() for o in backbone(x)).backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_backbone_out_norms_follow_the_official_backbones():
    # VMamba's outnorm{i} come from the model (and load from official detection checkpoints); Swin gets them here.
    vmamba = LinZooBackbone('test_vmamba')
    assert vmamba.body.feature_norms is not None and vmamba.out_norms is None
    swin = LinZooBackbone('test_zswin')
    assert swin.out_norms is not None and len(swin.out_norms) == 4
    soft = LinZooBackbone('test_soft')
    assert soft.out_norms is None and not hasattr(soft.body, 'feature_norms')
    assert LinZooBackbone('test_soft', out_norms=True).out_norms is not None
    assert LinZooBackbone('test_vmamba', out_norms=False).body.feature_norms is None


def test_backbone_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"did you mean .*vmamba_tiny_s1l8"):
        LinZooBackbone('vmamba_tiny_s1l9')
    with pytest.raises(ValueError, match='must name a model of the zoo'):
        LinZooBackbone('resnet50')
    with pytest.raises(ValueError, match=r'out_indices must be increasing stages indices in 0\.\.3'):
        LinZooBackbone('test_vmamba', out_indices=(0, 4))
    with pytest.raises(ValueError, match=r'blocks indices in 0\.\.3'):
        LinZooBackbone('test_vim', out_indices=(2, 1))
    with pytest.raises(ValueError, match='frozen_stages must be in -1..4'):
        LinZooBackbone('test_vmamba', frozen_stages=5)
    with pytest.raises(ValueError, match=r"init_cfg must be None or dict\(type='Pretrained'"):
        LinZooBackbone('test_vmamba', init_cfg=dict(type='Kaiming', layer='Conv2d'))


def test_frozen_stages_and_norm_eval():
    # Spatial-Mamba's stem and downsampling layers have BatchNorms.
    backbone = LinZooBackbone('test_spatialmamba', frozen_stages=1, norm_eval=True)
    backbone.train()
    body = backbone.body
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert not any(p.requires_grad for p in body.stages[0].parameters())
    assert all(p.requires_grad for p in body.stages[1].parameters())
    assert not body.stem.training and not body.stages[0].training
    assert body.stages[1].blocks.training
    batch_norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    assert LinZooBackbone('test_spatialmamba').train().body.stem.training

    stem_stats = [b.clone() for b in body.stem.buffers()]
    outs = backbone(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is None for p in body.stages[0].parameters())
    assert all(p.grad is not None for p in body.stages[1].parameters())
    assert all(torch.equal(a, b) for a, b in zip(stem_stats, body.stem.buffers()))

    vim = LinZooBackbone('test_vim', frozen_stages=2)  # the patch embedding and blocks 0-1
    assert not vim.body.pos_embed.requires_grad and not any(p.requires_grad for p in vim.body.blocks[1].parameters())
    assert all(p.requires_grad for p in vim.body.blocks[2].parameters())


def test_with_cp_checkpoints_blocks_and_keeps_the_result():
    torch.manual_seed(0)
    plain = LinZooBackbone('test_vmamba')
    checkpointed = LinZooBackbone('test_vmamba', with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert all(stage.grad_checkpointing for stage in checkpointed.body.stages)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    for a, b in zip(plain(x), checkpointed(x)):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in checkpointed(x)).backward()
    assert all(p.grad is not None for p in checkpointed.parameters())


# ------------------------------------------------------------------------------------------------------ pretrained

def _save_timm_checkpoint(arch: str, path: Path, seed: int = 1) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = timm.create_model(arch).state_dict()
    torch.save(state, path)
    return state


@pytest.mark.parametrize('arch, out_indices', [
    ('test_vmamba', (0, 1, 2, 3)),
    ('test_vmamba', (0, 1, 2)),  # the last stage removed: checked against a whole model, loaded partly
    ('test_zswin', (1, 2, 3)),
    ('test_vim', (3,)),
    ('test_soft', (0, 1, 2, 3)),
])
def test_pretrained_init_cfg_loads_a_zoo_checkpoint(tmp_path, arch, out_indices):
    state = _save_timm_checkpoint(arch, tmp_path / 'ckpt.pth')
    init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth'))
    backbone = LinZooBackbone(arch, out_indices=out_indices, init_cfg=init_cfg)
    before = {k: v.clone() for k, v in backbone.body.state_dict().items()}
    backbone.init_weights()
    loaded = backbone.body.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if k in state)
    assert any(not torch.equal(before[k], loaded[k]) for k in loaded if k in state)


def test_pretrained_official_detection_backbone_gives_the_official_features(tmp_path):
    # The fixture holds the official VMamba detection backbone (MM_VSSM: outnorm{i} included) and its outputs.
    fixture = torch.load(ROOT / 'tests/fixtures/vmamba/vmamba_backbone_v2_s1l8_dim16_d1121.pt', weights_only=True)
    torch.save({'model': fixture['state_dict']}, tmp_path / 'official.pth')
    init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'official.pth'))
    backbone = LinZooBackbone('test_vmamba', init_cfg=init_cfg)
    backbone.init_weights()
    with torch.no_grad():
        features = backbone.eval()(fixture['inputs'][0])
    for ours, official in zip(features, fixture['features'][0]):
        torch.testing.assert_close(ours, official, atol=2e-5, rtol=0)


def test_pretrained_init_cfg_survives_the_detector_init_and_timm_init_weights(tmp_path):
    # mmengine's init_weights visits every child; timm's own init_weights must not re-draw the loaded weights.
    state = _save_timm_checkpoint('test_vmamba', tmp_path / 'ckpt.pth')
    cfg = tiny_config('configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py', 'test_vmamba')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth'))
    model = _registry(cfg).build(cfg.model)
    model.init_weights()
    loaded = model.backbone.body.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if k in state)


def test_pretrained_init_cfg_reads_official_checkpoints_with_training_args(tmp_path):
    # Official Vim checkpoints pickle their argparse namespace next to the weights; anything else is refused.
    state = _save_timm_checkpoint('test_vim', tmp_path / 'plain.pth')
    torch.save(dict(model=state, args=argparse.Namespace(lr=1e-3)), tmp_path / 'official.pth')
    backbone = LinZooBackbone('test_vim', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'official.pth')))
    backbone.init_weights()
    assert torch.equal(backbone.body.pos_embed, state['pos_embed'])
    torch.save(dict(model=state, trainer=_Unpicklable()), tmp_path / 'objects.pth')
    backbone = LinZooBackbone('test_vim', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'objects.pth')))
    with pytest.raises(ValueError, match=r"holds Python objects .*_Unpicklable.*torch.save\(torch.load\(PATH"):
        backbone.init_weights()


class _Unpicklable:
    """A training-time object that torch's weights_only loader does not allow."""


def test_pretrained_init_cfg_raises_on_another_variant(tmp_path):
    _save_timm_checkpoint('test_vanilla_vmamba', tmp_path / 'other.pth')
    backbone = LinZooBackbone('test_vmamba', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'other.pth')))
    with pytest.raises(ValueError, match=r"LinZooBackbone\('test_vmamba'\): checkpoint .*other\.pth does not fit"):
        backbone.init_weights()
    _save_timm_checkpoint('test_soft', tmp_path / 'soft.pth')
    backbone = LinZooBackbone('test_zswin', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'soft.pth')))
    with pytest.raises(ValueError, match='does not fit'):
        backbone.init_weights()


# ------------------------------------------------------------------------------------------------------- optimizer

def test_layer_decay_constructor_scales_lr_per_group_matcher_layer():
    model = nn.Module()
    model.backbone = LinZooBackbone('test_vim')  # patch embedding (layer 0), blocks 0-3 (layers 1-4)
    model.decode_head = nn.Conv2d(32, 8, 1)
    base_lr, rate = 1e-3, 0.5
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='TimmLayerDecayOptimWrapperConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05)),
        paramwise_cfg=dict(layer_decay_rate=rate, custom_keys={'decode_head': dict(lr_mult=2.0)})))
    optimizer = constructor(model).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(g['params'][0])]: g for g in optimizer.param_groups}
    assert len(groups) == len(list(model.parameters()))

    def lr(name):
        return groups[name]['lr']

    assert lr('backbone.body.patch_embed.proj.weight') == pytest.approx(base_lr * rate ** 5)
    assert lr('backbone.body.pos_embed') == pytest.approx(base_lr * rate ** 5)
    for i in range(4):
        assert lr(f'backbone.body.blocks.{i}.mixer.in_proj.weight') == pytest.approx(base_lr * rate ** (4 - i))
    assert lr('decode_head.weight') == pytest.approx(2 * base_lr)
    # no_weight_decay() names and 1-D parameters: no decay; matrices keep the optimizer's.
    assert groups['backbone.body.pos_embed']['weight_decay'] == 0
    assert groups['backbone.body.blocks.0.mixer.ssm.A_logs']['weight_decay'] == 0
    assert groups['decode_head.bias']['weight_decay'] == 0
    assert groups['backbone.body.blocks.0.mixer.in_proj.weight'].get('weight_decay', 0.05) == 0.05

    with pytest.raises(ValueError, match='layer_decay_rate must be a number in'):
        TimmLayerDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-3)), dict())
    other = nn.Module()
    other.backbone = nn.Conv2d(3, 8, 3)
    with pytest.raises(TypeError, match='backbone is a LinZooBackbone or a timm model'):
        TimmLayerDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-3)),
                                              dict(layer_decay_rate=0.9))(other)


def test_simple_feature_pyramid_levels():
    neck = SimpleFeaturePyramid(in_channels=32, out_channels=16, scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5)
    outs = neck((torch.randn(1, 32, 8, 12),))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 32, 48), (1, 16, 16, 24), (1, 16, 8, 12), (1, 16, 4, 6),
                                              (1, 16, 2, 3)]
    per_level = neck(tuple(torch.randn(1, 32, 8, 12) for _ in range(4)))
    assert len(per_level) == 5
    with pytest.raises(ValueError, match='one backbone map or one per scale factor'):
        neck((torch.randn(1, 32, 8, 12),) * 2)
    with pytest.raises(ValueError, match='scale factors must be 4, 2, 1 or 0.5'):
        SimpleFeaturePyramid(in_channels=32, scale_factors=(3.0,))


# ---------------------------------------------------------------------------------------------------------- runner

@HOOKS.register_module(name='LinZooTestRecordFirstIter', force=True)
class _RecordFirstIter(Hook):
    """Remembers the iteration a training run starts at (after a resume: the checkpoint's)."""
    first_iters: List[int] = []

    def before_train(self, runner) -> None:
        _RecordFirstIter.first_iters.append(runner.iter)


def _runner_cfg(cfg: Config, work_dir: Path, name: str) -> Config:
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name
    cfg.visualizer.name = f'visualizer_{name}'
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = [dict(type='LinZooTestRecordFirstIter')]
    return cfg


def _losses(runner: Runner) -> np.ndarray:
    return runner.message_hub.get_scalar('train/loss').data[0]


def test_runner_trains_resumes_and_evaluates_mask_rcnn_on_a_tiny_coco(tmp_path):
    ann_file = write_coco(tmp_path / 'coco')
    cfg = tiny_config('configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py', 'test_vmamba')
    narrow_mask_rcnn(cfg)
    cfg = _runner_cfg(cfg, tmp_path / 'work', 'det')
    use_tiny_coco(cfg, tmp_path / 'coco', ann_file)
    cfg.optim_wrapper.optimizer.lr = 1e-3
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
    cfg.train_cfg.update(max_epochs=3, val_interval=3)
    cfg.default_hooks.checkpoint.interval = 3
    _RecordFirstIter.first_iters = []

    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = _losses(runner)
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean(), losses
    checkpoint = tmp_path / 'work' / 'epoch_3.pth'
    assert checkpoint.exists()
    torch.load(checkpoint)  # torch's weights_only default reads it: heads registered what it needs

    cfg.train_cfg.max_epochs = 4
    cfg.experiment_name = 'det_resumed'
    cfg.visualizer.name = 'visualizer_det_resumed'
    cfg.resume, cfg.load_from = True, str(checkpoint)
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert _RecordFirstIter.first_iters == [0, 12] and resumed.iter == 16 and resumed.epoch == 4
    metrics = resumed.val()
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert np.isfinite(metrics[key]) and 0 <= metrics[key] <= 1


def test_runner_trains_resumes_and_evaluates_vim_upernet_on_a_tiny_ade20k(tmp_path):
    # The Vim config: simple feature pyramid, layer-decay constructor and sliding-window test, end to end.
    write_ade20k(tmp_path / 'ade')
    cfg = tiny_config('configs/segmentation/vim/upernet_vim-ti_sfp_4xb8-60k_ade20k-512x512.py', 'test_vim')
    cfg = _runner_cfg(cfg, tmp_path / 'work', 'seg')
    use_tiny_ade20k(cfg, tmp_path / 'ade')
    cfg.model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
    cfg.train_cfg.update(max_iters=16, val_interval=16)
    cfg.default_hooks.checkpoint.interval = 8
    _RecordFirstIter.first_iters = []

    runner = Runner.from_cfg(cfg)
    runner.train()
    groups = runner.optim_wrapper.optimizer.param_groups
    assert len({round(g['initial_lr'], 12) for g in groups}) > 3  # the constructor's per-layer rates
    losses = _losses(runner)
    assert len(losses) == 16 and np.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean(), losses
    checkpoint = tmp_path / 'work' / 'iter_8.pth'
    assert checkpoint.exists() and (tmp_path / 'work' / 'iter_16.pth').exists()

    cfg.train_cfg.max_iters = 12
    cfg.experiment_name = 'seg_resumed'
    cfg.visualizer.name = 'visualizer_seg_resumed'
    cfg.resume, cfg.load_from = True, str(checkpoint)
    cfg.train_cfg.val_interval = 100
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert _RecordFirstIter.first_iters == [0, 8] and resumed.iter == 12

    cfg.resume, cfg.load_from = False, str(tmp_path / 'work' / 'iter_16.pth')
    cfg.experiment_name = 'seg_test'
    cfg.visualizer.name = 'visualizer_seg_test'
    metrics = Runner.from_cfg(cfg).test()
    assert 0 <= metrics['mIoU'] <= 100 and metrics['aAcc'] > 0
