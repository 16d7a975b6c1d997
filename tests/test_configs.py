"""Every config in configs/ builds its model through the registry, has the parameter
count of the paper's table, and carries the authors' recipe
(docs/architecture.md#7-training-recipes). The variant facts (channels, drop-path rate)
come from the model's own ARCH_SETTINGS, the paper's figures from each config's
``paper_results`` (configs/README.md)."""
from __future__ import annotations

import functools
import glob
import os.path as osp

import pytest
from conftest import CONFIGS, load_tool
from mmengine.config import Config

from mmrala.mm.cli import build_model
from mmrala.models import ARCH_SETTINGS, RAVLT

# The configs of issue 4, by recipe: name pattern and variants. The first variant's
# config is the complete one; the others inherit it (configs/README.md).
FAMILIES = {
    'maskrcnn_ravlt_{}_coco.py': 'tsbl',
    'maskrcnn_ravlt_{}_coco_3x.py': 'sbl',
    'cascade_maskrcnn_ravlt_{}_coco_3x.py': 'sbl',
    'retinanet_ravlt_{}_coco.py': 'tsbl',
    'fpn_ravlt_{}_ade20k.py': 'tsbl',
    'upernet_ravlt_{}_ade20k.py': 'sbl',
    'ravlt_{}_in1k.py': 'tsbl',
}
CONFIG_FILES = [(pattern.format(v), pattern, v)
                for pattern, variants in FAMILIES.items() for v in variants]
VARIANT_CONFIGS = [(pattern.format(v), pattern.format(variants[0]))
                   for pattern, variants in FAMILIES.items() for v in variants[1:]]
QUICKSTART_CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(CONFIGS, 'quickstart', '*.py')))


def channels(variant):
    """The four stage widths of a variant, as a config writes them (a list)."""
    return list(ARCH_SETTINGS[variant]['embed_dims'])


@functools.cache
def load(name):
    """The parsed config (shared by the tests; they only read it)."""
    return Config.fromfile(osp.join(CONFIGS, name))


def test_configs_dir_holds_exactly_the_issue_configs():
    present = sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIGS, '*.py')))
    assert present == sorted(name for name, _, _ in CONFIG_FILES)


@pytest.mark.parametrize('name,pattern,variant', CONFIG_FILES,
                         ids=[name for name, _, _ in CONFIG_FILES])
def test_builds_with_the_papers_parameter_count(name, pattern, variant):
    cfg = load(name)
    model = build_model(cfg)
    assert isinstance(model.backbone, RAVLT)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    paper = cfg.paper_results.params_M
    assert abs(params_m - paper) <= 0.5, f'{name}: {params_m:.2f}M vs paper {paper}M'


@pytest.mark.parametrize('name,complete', VARIANT_CONFIGS,
                         ids=[name for name, _ in VARIANT_CONFIGS])
def test_variant_changes_only_the_variant(name, complete):
    """A variant config is its recipe's complete config with another backbone variant:
    arch, drop path, ImageNet file, the channels taken from the backbone, the paper's
    figures. Nothing else of the recipe may drift."""
    variant_keys = {
        'model.backbone': ('arch', 'drop_path_rate', 'init_cfg'),
        'model.neck': ('in_channels', ),
        'model.decode_head': ('in_channels', ),
        'model.auxiliary_head': ('in_channels', ),
    }

    def recipe(cfg):
        data = cfg.to_dict()
        data.pop('paper_results')
        data.pop('pretrained', None)  # the variant's ImageNet file (mmdet's Swin convention)
        for path, keys in variant_keys.items():
            node = data
            for part in path.split('.'):
                node = node.get(part) if node is not None else None
            for key in keys if node is not None else ():
                node.pop(key, None)
        return data

    assert recipe(load(name)) == recipe(load(complete))
    assert set(load(name).paper_results) >= {'params_M', 'flops_input_shape'}


@pytest.mark.parametrize('name,pattern,variant', CONFIG_FILES,
                         ids=[name for name, _, _ in CONFIG_FILES])
def test_carries_the_authors_recipe(name, pattern, variant):
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'RAVLT' and backbone.arch == variant
    assert backbone.drop_path_rate == ARCH_SETTINGS[variant]['drop_path_rate']
    assert backbone.norm_cfg.type == 'SyncBN'
    assert cfg.custom_imports.imports == ['mmrala']
    assert cfg.runner_type == 'MMRalaRunner'
    assert {hook.type for hook in cfg.custom_hooks} >= {'FiniteLossHook', 'RNGStateHook'}
    optim = cfg.optim_wrapper
    assert optim.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert optim.optimizer.type == 'AdamW'
    assert 'clip_grad' not in optim or optim.clip_grad is None

    if pattern == 'ravlt_{}_in1k.py':
        assert cfg.default_scope == 'mmpretrain'
        assert backbone.out_indices == (3, ) and backbone.out_norm is False
        assert backbone.init_cfg is None  # trained from scratch
        assert cfg.model.neck.in_channels == channels(variant)[3]
        assert optim.optimizer.lr == pytest.approx(1e-3)  # 5e-4 x 1024 / 512
        assert optim.optimizer.weight_decay == 0.05
        assert cfg.train_cfg.max_epochs == 300
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
        warmup, cosine = cfg.param_scheduler
        assert warmup.end == 5 and cosine.begin == 5 and cosine.end == 300
        assert cosine.eta_min == 1e-5
        assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
        assert cfg.model.head.loss.label_smooth_val == 0.1
        return

    # Detection and segmentation: the authors' ImageNet file, the stride 4..32 outputs.
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=f'checkpoints/RAVLT_{variant.upper()}.pth')
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.norm_eval is True
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    if pattern.startswith('upernet'):
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.decode_head.in_channels == channels(variant)
        assert cfg.model.decode_head.pool_scales == (1, 2, 3, 6)
        assert cfg.model.auxiliary_head.in_channels == channels(variant)[2]
        assert cfg.model.auxiliary_head.in_index == 2
        assert optim.optimizer.lr == 6e-5 and optim.optimizer.weight_decay == 0.01
        warmup, poly = cfg.param_scheduler
        assert warmup.end == 1500 and poly.end == 160000 and poly.power == 1.0
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.crop_size == (512, 512)
    elif pattern.startswith('fpn'):
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.neck.in_channels == channels(variant)
        assert cfg.model.neck.num_outs == 4
        assert cfg.model.decode_head.type == 'FPNHead'
        assert optim.optimizer.lr == 1e-4 and optim.optimizer.weight_decay == 1e-4
        assert cfg.train_cfg.max_iters == 80000
        assert cfg.param_scheduler[0].end == 80000
        assert cfg.crop_size == (512, 512)
    else:
        assert cfg.default_scope == 'mmdet'
        assert cfg.model.neck.in_channels == channels(variant)
        assert optim.optimizer.lr == 1e-4
        three_x = pattern.endswith('_3x.py')
        assert cfg.train_cfg.max_epochs == (36 if three_x else 12)
        warmup, steps = cfg.param_scheduler
        assert warmup.end == 500
        assert steps.milestones == ([27, 33] if three_x else [8, 11])
        if three_x:  # multi-scale training: resize 480-800 short side, or crop
            assert any(t.type == 'RandomChoice' for t in cfg.train_dataloader.dataset.pipeline)
        if pattern.startswith('retinanet'):
            assert cfg.model.neck.start_level == 1
            assert cfg.model.neck.add_extra_convs == 'on_input'
            assert optim.optimizer.weight_decay == 1e-4
        else:
            assert optim.optimizer.weight_decay == 0.05
            assert optim.paramwise_cfg.custom_keys['norm'].decay_mult == 0.
        if pattern.startswith('cascade'):
            heads = cfg.model.roi_head.bbox_head
            assert len(heads) == 3
            for head in heads:
                assert head.type == 'ConvFCBBoxHead'
                assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
                assert head.norm_cfg.type == 'SyncBN'
                assert head.loss_bbox.type == 'GIoULoss' and head.loss_bbox.loss_weight == 10.


def test_quickstart_configs_build_and_name_their_data_and_floor():
    assert QUICKSTART_CONFIGS, f'no configs in {osp.join(CONFIGS, "quickstart")}'
    for name in QUICKSTART_CONFIGS:
        cfg = load(osp.join('quickstart', name))
        assert cfg.runner_type == 'MMRalaRunner', name
        assert cfg.data_root.startswith(cfg.quickstart_data), name
        assert set(cfg.quickstart_floor) == {'metric', 'value'}, name
        model = build_model(cfg)
        assert isinstance(model.backbone, RAVLT), name


@pytest.mark.parametrize('name,count,unit,tolerance', [
    # the paper's ImageNet FLOPs: the full count in units of 2^30, to its one decimal
    ('ravlt_t_in1k.py', 'flops', 2**30, 0.05),
    # the paper's detection FLOPs: the count without attention products (mmcv's view)
    ('maskrcnn_ravlt_t_coco.py', 'flops_no_attn', 1e9, 2),
], ids=['ravlt_t_in1k', 'maskrcnn_ravlt_t_coco'])
def test_get_flops_reports_the_papers_figures(name, count, unit, tolerance, capsys):
    result = load_tool('get_flops').main([osp.join(CONFIGS, name)])
    out = capsys.readouterr().out
    assert 'backbone' in out and 'whole model' in out and 'paper (whole model)' in out
    assert result['params'] == sum(p.numel() for p in build_model(load(name)).parameters())
    assert result['flops_backbone'] < result['flops']
    paper = load(name).paper_results.flops_G
    assert abs(result[count] / unit - paper) < tolerance, (result, paper)
