"""Every config in configs/ builds its model through the registry, has the parameter
count of the paper's table, and carries the authors' recipe (RAVLT.md section 7)."""
from __future__ import annotations

import functools
import importlib
import os.path as osp

import pytest
from conftest import CONFIGS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

VARIANTS = {
    't': dict(channels=[64, 128, 256, 512], drop_path_rate=0.1),
    's': dict(channels=[64, 128, 320, 512], drop_path_rate=0.15),
    'b': dict(channels=[96, 192, 384, 512], drop_path_rate=0.4),
    'l': dict(channels=[96, 192, 448, 640], drop_path_rate=0.55),
}
# The configs of issue 4, by task: name pattern and variants.
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
# The paper's parameter counts (RAVLT.md section 7 and the authors' README), in millions.
PAPER_PARAMS_M = {
    'maskrcnn_ravlt_{}_coco.py': dict(t=33, s=44, b=67, l=114),
    'maskrcnn_ravlt_{}_coco_3x.py': dict(s=44, b=67, l=114),
    'cascade_maskrcnn_ravlt_{}_coco_3x.py': dict(s=82, b=105, l=152),
    'retinanet_ravlt_{}_coco.py': dict(t=24, s=34, b=57, l=104),
    'fpn_ravlt_{}_ade20k.py': dict(t=18, s=28, b=51, l=98),
    'upernet_ravlt_{}_ade20k.py': dict(s=55, b=77, l=125),
    'ravlt_{}_in1k.py': dict(t=15, s=26, b=48, l=95),
}


@functools.cache
def load(name):
    """The parsed config (shared by the tests; they only read it)."""
    return Config.fromfile(osp.join(CONFIGS, name))


def build(cfg):
    import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model_cfg = cfg.model.copy()
        if cfg.get('data_preprocessor') is not None:
            model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
        return registry.build(model_cfg)


def test_configs_dir_holds_exactly_the_issue_configs():
    import glob
    present = sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIGS, '*.py')))
    assert present == sorted(name for name, _, _ in CONFIG_FILES)


@pytest.mark.parametrize('name,pattern,variant', CONFIG_FILES,
                         ids=[name for name, _, _ in CONFIG_FILES])
def test_builds_with_the_papers_parameter_count(name, pattern, variant):
    cfg = load(name)
    model = build(cfg)
    assert type(model.backbone).__name__ == 'RAVLT'
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    paper = PAPER_PARAMS_M[pattern][variant]
    assert cfg.paper_results.params_M == paper
    assert abs(params_m - paper) <= 0.5, f'{name}: {params_m:.2f}M vs paper {paper}M'


@pytest.mark.parametrize('name,pattern,variant', CONFIG_FILES,
                         ids=[name for name, _, _ in CONFIG_FILES])
def test_carries_the_authors_recipe(name, pattern, variant):
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'RAVLT' and backbone.arch == variant
    assert backbone.drop_path_rate == VARIANTS[variant]['drop_path_rate']
    assert backbone.norm_cfg.type == 'SyncBN'
    assert cfg.custom_imports.imports == ['mmrala']
    optim = cfg.optim_wrapper
    assert optim.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert optim.optimizer.type == 'AdamW'
    assert 'clip_grad' not in optim or optim.clip_grad is None

    if pattern == 'ravlt_{}_in1k.py':
        assert cfg.default_scope == 'mmpretrain'
        assert backbone.out_indices == (3, ) and backbone.out_norm is False
        assert backbone.init_cfg is None  # trained from scratch
        assert cfg.model.neck.in_channels == VARIANTS[variant]['channels'][3]
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
    channels = VARIANTS[variant]['channels']
    if pattern.startswith('upernet'):
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.decode_head.in_channels == channels
        assert cfg.model.decode_head.pool_scales == (1, 2, 3, 6)
        assert cfg.model.auxiliary_head.in_channels == channels[2]
        assert cfg.model.auxiliary_head.in_index == 2
        assert optim.optimizer.lr == 6e-5 and optim.optimizer.weight_decay == 0.01
        warmup, poly = cfg.param_scheduler
        assert warmup.end == 1500 and poly.end == 160000 and poly.power == 1.0
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.crop_size == (512, 512)
    elif pattern.startswith('fpn'):
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.neck.in_channels == channels and cfg.model.neck.num_outs == 4
        assert cfg.model.decode_head.type == 'FPNHead'
        assert optim.optimizer.lr == 1e-4 and optim.optimizer.weight_decay == 1e-4
        assert cfg.train_cfg.max_iters == 80000
        assert cfg.param_scheduler[0].end == 80000
        assert cfg.crop_size == (512, 512)
    else:
        assert cfg.default_scope == 'mmdet'
        assert cfg.model.neck.in_channels == channels
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


@pytest.mark.parametrize('name,expected', [
    # the paper's ImageNet FLOPs: the full count in units of 2^30
    ('ravlt_t_in1k.py', lambda r: round(r['flops'] / 2**30, 1) == 2.4),
    # the paper's detection FLOPs: the count without attention products (mmcv's view)
    ('maskrcnn_ravlt_t_coco.py', lambda r: abs(r['flops_no_attn'] / 1e9 - 219) < 2),
], ids=['ravlt_t_in1k', 'maskrcnn_ravlt_t_coco'])
def test_get_flops_reports_the_papers_figures(name, expected, capsys):
    import sys
    sys.path.insert(0, osp.join(osp.dirname(CONFIGS), 'tools'))
    import get_flops
    result = get_flops.main([osp.join(CONFIGS, name)])
    out = capsys.readouterr().out
    assert 'backbone' in out and 'whole model' in out and 'paper (whole model)' in out
    assert result['params'] == sum(p.numel() for p in build(load(name)).parameters())
    assert result['flops_backbone'] < result['flops']
    assert expected(result), result
