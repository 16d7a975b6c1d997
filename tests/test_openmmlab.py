"""The OpenMMLab glue: registry, init_cfg checkpoints, converted files and mmengine's own
Runner checkpoints under torch's weights-only loading."""
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from authors_checkpoint import save_authors_dense_file, save_authors_imagenet_file
from conftest import AUTHORS_PARAMS
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint

from mmrala.checkpoint import CheckpointError
from mmrala.models import RAVLT as PlainRAVLT
from mmrala.models import RAVLTClassifier

REPO = __import__('pathlib').Path(__file__).resolve().parents[1]


def scoped_registry(scope):
    module = {'mmdet': 'mmdet.registry', 'mmseg': 'mmseg.registry',
              'mmpretrain': 'mmpretrain.registry'}[scope]
    return __import__(module, fromlist=['MODELS']).MODELS


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_backbone_builds_under_every_default_scope(scope):
    registry = scoped_registry(scope)
    with DefaultScope.overwrite_default_scope(scope):
        backbone = registry.build(dict(type='RAVLT', arch='t', out_indices=(1, 2),
                                       norm_cfg=dict(type='BN', requires_grad=True)))
    assert isinstance(backbone, PlainRAVLT)
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(128, 8, 12), (256, 4, 6)]


def test_syncbn_norm_cfg_builds_sync_batchnorm():
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = scoped_registry('mmdet').build(
            dict(type='RAVLT', arch='t', norm_cfg=dict(type='SyncBN', requires_grad=True)))
    assert isinstance(backbone.patch_embed.proj[1], nn.SyncBatchNorm)
    assert isinstance(backbone.stages[1].downsample.norm, nn.SyncBatchNorm)


def test_user_config_inheriting_unmodified_mmdet_mask_rcnn(tmp_path):
    """A fresh interpreter: custom_imports alone must register RAVLT."""
    config = tmp_path / 'mask_rcnn_ravlt.py'
    config.write_text(textwrap.dedent("""
        _base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
        model = dict(
            backbone=dict(_delete_=True, type='RAVLT', arch='t', out_indices=(0, 1, 2, 3)),
            neck=dict(in_channels=[64, 128, 256, 512]))
    """))
    script = textwrap.dedent(f"""
        import sys, torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        assert 'mmrala' not in sys.modules
        cfg = Config.fromfile({str(config)!r})
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model).eval()
        assert type(model.backbone).__module__ == 'mmrala.mm.backbone', type(model.backbone)
        with torch.no_grad():
            feats = model.extract_feat(torch.randn(1, 3, 96, 128))
        print('levels', [tuple(f.shape) for f in feats])
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "levels [(1, 256, 24, 32), (1, 256, 12, 16), (1, 256, 6, 8), (1, 256, 3, 4)," \
           " (1, 256, 2, 2)]" in result.stdout


def imagenet_classifier_cfg(arch, channels):
    return dict(
        type='ImageClassifier',
        backbone=dict(type='RAVLT', arch=arch, out_indices=(3,), out_norm=False),
        neck=dict(type='RAVLTClsNeck', in_channels=channels, mid_channels=1024),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024,
                  loss=dict(type='CrossEntropyLoss')))


@pytest.mark.parametrize('arch,channels', [('t', 512), ('l', 640)])
def test_mmpretrain_classifier_has_the_authors_parameter_count(arch, channels):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = scoped_registry('mmpretrain').build(imagenet_classifier_cfg(arch, channels))
    assert sum(p.numel() for p in model.parameters()) == AUTHORS_PARAMS[arch]


def test_converted_imagenet_file_reproduces_the_authors_model_in_mmpretrain(tmp_path):
    torch.manual_seed(0)
    authors_model = RAVLTClassifier('t').eval()
    src, dst = tmp_path / 'RAVLT_T.pth', tmp_path / 'ravlt_t_mmrala.pth'
    save_authors_imagenet_file(authors_model, src)
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_official.py'),
                             str(src), str(dst)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '[3/3] wrote' in result.stdout
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = scoped_registry('mmpretrain').build(imagenet_classifier_cfg('t', 512)).eval()
    load_checkpoint(model, str(dst), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        torch.testing.assert_close(logits, authors_model(x), rtol=1e-5, atol=1e-5)


def test_init_cfg_pretrained_takes_the_authors_imagenet_file(tmp_path):
    torch.manual_seed(0)
    authors_model = RAVLTClassifier('t')
    path = tmp_path / 'RAVLT_T.pth'
    save_authors_imagenet_file(authors_model, path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = scoped_registry('mmdet').build(dict(
            type='RAVLT', arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    loaded = backbone.state_dict()
    for name, value in authors_model.state_dict().items():
        if not name.startswith('head.'):
            assert torch.equal(loaded[name], value), name


def test_init_cfg_pretrained_takes_a_detection_file_and_refuses_another_variant(tmp_path):
    torch.manual_seed(0)
    source = PlainRAVLT('s')
    path = tmp_path / 'maskrcnn_ravlt_s.pth'
    save_authors_dense_file(source, path, extra={'neck.fpn_convs.0.conv.bias': torch.zeros(256)})
    registry = scoped_registry('mmdet')
    with DefaultScope.overwrite_default_scope('mmdet'):
        ok = registry.build(dict(type='RAVLT', arch='s',
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path))))
        ok.init_weights()
        assert all(torch.equal(ok.state_dict()[k], v) for k, v in source.state_dict().items())
        wrong = registry.build(dict(type='RAVLT', arch='b',
                                    init_cfg=dict(type='Pretrained', checkpoint=str(path))))
        with pytest.raises(CheckpointError, match=r'shape mismatches, first: patch_embed'):
            wrong.init_weights()


class TinyClassifier(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = PlainRAVLT(dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1),
                                        num_heads=(1, 1, 1, 2), mlp_ratios=(2,) * 4,
                                        layer_scale_init_values=(1,) * 4), out_indices=(3,))
        self.fc = nn.Linear(64, 3)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.fc(self.backbone(inputs)[0].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return logits


class ToyDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(3, 32, 32, generator=generator), labels=index % 3)


class StartIteration(Hook):
    def before_train(self, runner):
        self.iteration = runner.iter


def make_runner(work_dir, max_iters, resume=False, hooks=()):
    return Runner(
        model=TinyClassifier(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=4),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks), resume=resume, randomness=dict(seed=0), default_scope='mmengine')


def test_mmengine_runner_checkpoints_load_with_weights_only(tmp_path):
    make_runner(tmp_path, max_iters=2).train()
    checkpoint = tmp_path / 'iter_2.pth'
    assert checkpoint.is_file()
    # torch alone refuses mmengine's HistoryBuffer and numpy state; importing mmrala fixes it
    probe = textwrap.dedent(f"""
        import pickle, sys, torch
        try:
            torch.load({str(checkpoint)!r}, weights_only=True)
        except pickle.UnpicklingError:
            print('refused without mmrala')
        import mmrala
        state = torch.load({str(checkpoint)!r}, weights_only=True)
        print('loaded with mmrala', sorted(state))
    """)
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'refused without mmrala' in result.stdout
    assert "loaded with mmrala ['message_hub', 'meta', 'optimizer', 'param_schedulers', " \
           "'state_dict']" in result.stdout
    # and the Runner resumes from it with weights_only on (torch's default)
    start = StartIteration()
    resumed = make_runner(tmp_path, max_iters=4, resume=True, hooks=[start])
    resumed.train()
    assert start.iteration == 2 and resumed.iter == 4
    assert (tmp_path / 'iter_4.pth').is_file()


class ReachesPastTheStatistics:
    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_allow_listed_getattr_answers_only_history_buffer_statistics(tmp_path):
    path = tmp_path / 'sneaky.pth'
    torch.save({'state_dict': {}, 'x': ReachesPastTheStatistics()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only for the statistics methods'):
        torch.load(path, weights_only=True)


def test_convert_official_keeps_neck_and_heads_of_a_detection_file(tmp_path):
    torch.manual_seed(0)
    backbone = PlainRAVLT('t')
    heads = {'neck.lateral_convs.0.conv.weight': torch.randn(256, 64, 1, 1),
             'roi_head.bbox_head.fc_cls.bias': torch.randn(81)}
    src, dst = tmp_path / 'maskrcnn_t_1x_12_epoch.pth', tmp_path / 'converted.pth'
    save_authors_dense_file(backbone, src, extra=heads)
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_official.py'),
                             str(src), str(dst)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    state = torch.load(dst, weights_only=True)['state_dict']
    for name, value in heads.items():
        assert torch.equal(state[name], value)
    for name, value in backbone.state_dict().items():
        assert torch.equal(state[f'backbone.{name}'], value), name
    assert not any('layers.' in k or 'extra_norms' in k or 'RoPE' in k for k in state)
    # converting an already converted file is refused with the reason
    again = subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_official.py'),
                            str(dst), str(tmp_path / 'twice.pth')], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 1 and 'already an mmrala checkpoint' in again.stderr
