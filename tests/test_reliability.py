"""Nothing lost, nothing silently wrong: the guarantees of the README's reliability
section that need no training run (the kill, resume and distributed ones are in
tests/test_crash_safety.py)."""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from authors_checkpoint import save_authors_dense_file
from conftest import CONFIGS, REPO, tool_env

from mmrala.checkpoint import CheckpointError, load_checkpoint_file
from mmrala.mm import load_model_weights
from mmrala.mm.runtime import (
    MainProcessLoggerHook,
    MMRalaRunner,
    find_resume_checkpoint,
    use_safer_default_hooks,
)
from mmrala.models import RAVLT as PlainRAVLT

CONVERTER = osp.join(REPO, 'tools', 'convert_official.py')


def convert(*args):
    return subprocess.run([sys.executable, CONVERTER, *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=tool_env())


@pytest.fixture(scope='module')
def authors_detection_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('authors') / 'maskrcnn_t_1x.pth'
    save_authors_dense_file(PlainRAVLT('t'), path,
                            extra={'neck.lateral_convs.0.conv.weight': torch.randn(256, 64, 1, 1)})
    return path


# ---------------------------------------------------------------------------------------
# Converters and generators never overwrite what they did not create
# ---------------------------------------------------------------------------------------

def test_converter_refuses_to_overwrite_its_input(authors_detection_file, tmp_path):
    src = tmp_path / 'RAVLT_T_det.pth'
    src.write_bytes(authors_detection_file.read_bytes())
    before = src.read_bytes()
    for dst in (src, tmp_path / '.' / 'RAVLT_T_det.pth'):
        result = convert(src, dst, '--force')
        assert result.returncode == 1
        assert 'is the input file' in result.stderr
    assert src.read_bytes() == before


def test_converter_overwrites_an_existing_output_only_with_force(authors_detection_file,
                                                                 tmp_path):
    dst = tmp_path / 'converted.pth'
    dst.write_bytes(b'an earlier result')
    result = convert(authors_detection_file, dst)
    assert result.returncode == 1 and 'pass --force' in result.stderr
    assert dst.read_bytes() == b'an earlier result'
    result = convert(authors_detection_file, dst, '--force')
    assert result.returncode == 0, result.stderr
    assert 'backbone.stages.0.blocks.0.attn.qkvo.weight' in load_checkpoint_file(dst)['state_dict']


# ---------------------------------------------------------------------------------------
# Weights-only loading, whatever the environment says
# ---------------------------------------------------------------------------------------

class WritesAFileWhenUnpickled:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


LOAD_WITH_MMENGINE = '''
import sys
import mmrala  # registers the weights-only loader
from mmengine.runner.checkpoint import _load_checkpoint
try:
    _load_checkpoint(sys.argv[1], map_location='cpu')
except Exception as err:
    print(type(err).__name__, err)
    sys.exit(3)
'''


def test_mmengine_loads_weights_only_even_when_the_environment_forbids_it(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'malicious.pth'
    torch.save({'state_dict': {}, 'payload': WritesAFileWhenUnpickled(str(marker))}, path)
    env = tool_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    result = subprocess.run([sys.executable, '-c', LOAD_WITH_MMENGINE, str(path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert 'CheckpointError' in result.stdout and 'arbitrary pickle' in result.stdout
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# Strict loading of whole-model checkpoints (load_from, tools/test.py, --resume, tools/infer.py)
# ---------------------------------------------------------------------------------------

def build_detector(config):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.norm_cfg = dict(type='BN')
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def maskrcnn_t():
    torch.manual_seed(0)
    return build_detector('maskrcnn_ravlt_t_coco.py')


def test_a_checkpoint_of_another_variant_is_refused_naming_the_keys(maskrcnn_t):
    model_s = build_detector('maskrcnn_ravlt_s_coco.py')
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model_s, {'state_dict': maskrcnn_t.state_dict()}, 'ravlt_t.pth')
    message = str(err.value)
    assert 'ravlt_t.pth does not fit this model' in message
    assert 'shape mismatches' in message and 'backbone.stages.2' in message
    assert 'weights missing from the checkpoint' in message  # S has more blocks


def test_missing_weights_are_refused_unless_declared_optional(maskrcnn_t):
    state = {k: v for k, v in maskrcnn_t.state_dict().items()
             if not k.startswith('roi_head.bbox_head.fc_cls.')}
    target = build_detector('maskrcnn_ravlt_t_coco.py')
    with pytest.raises(CheckpointError, match='roi_head.bbox_head.fc_cls.weight'):
        load_model_weights(target, {'state_dict': state}, 'partial.pth')
    load_model_weights(target, {'state_dict': state}, 'partial.pth',
                       optional_keys=('roi_head.bbox_head.fc_cls.*',))
    assert torch.equal(target.backbone.stages[0].blocks[0].attn.qkvo.weight,
                       maskrcnn_t.backbone.stages[0].blocks[0].attn.qkvo.weight)


def test_an_authors_detection_file_is_converted_on_the_fly(authors_detection_file):
    detector = build_detector('maskrcnn_ravlt_t_coco.py')
    checkpoint = load_checkpoint_file(authors_detection_file)
    # the file holds a backbone and one neck weight: everything else is reported missing,
    # under mmrala's names (the conversion happened)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(detector, checkpoint, 'maskrcnn_t_1x.pth')
    assert 'backbone.' not in str(err.value).split('missing from the checkpoint:')[1][:200]
    optional = ('neck.*', 'rpn_head.*', 'roi_head.*')
    load_model_weights(detector, checkpoint, 'maskrcnn_t_1x.pth', optional_keys=optional)
    torch.manual_seed(0)
    expected = PlainRAVLT('t').state_dict()   # the fixture's backbone, seed for seed
    for name, value in expected.items():
        assert torch.equal(detector.backbone.state_dict()[name], value), name


def test_a_backbone_only_file_as_load_from_points_to_init_cfg(tmp_path, maskrcnn_t):
    backbone_only = {f'backbone.{k}': v for k, v in maskrcnn_t.backbone.state_dict().items()}
    with pytest.raises(CheckpointError, match=r'model\.backbone\.init_cfg'):
        load_model_weights(build_detector('maskrcnn_ravlt_t_coco.py'),
                           {'state_dict': backbone_only}, 'backbone.pth')


# ---------------------------------------------------------------------------------------
# Which checkpoint --resume continues from
# ---------------------------------------------------------------------------------------

class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)

    info = warning


def save_fake_checkpoint(path, step):
    torch.save({'state_dict': {'w': torch.full((2,), float(step))}, 'meta': {'iter': step}},
               path)
    return str(path)


def test_resume_follows_last_checkpoint_when_it_is_intact(tmp_path):
    save_fake_checkpoint(tmp_path / 'iter_2.pth', 2)
    newest = save_fake_checkpoint(tmp_path / 'iter_4.pth', 4)
    (tmp_path / 'last_checkpoint').write_text(newest)
    log = Log()
    assert find_resume_checkpoint(str(tmp_path), log) == newest and not log.lines


@pytest.mark.parametrize('pointer', ['missing', 'empty', 'deleted', 'truncated'])
def test_resume_without_a_usable_pointer_takes_the_newest_intact_checkpoint(tmp_path, pointer):
    older = save_fake_checkpoint(tmp_path / 'iter_2.pth', 2)
    newer = save_fake_checkpoint(tmp_path / 'iter_4.pth', 4)
    os.utime(older, (1, 1))
    if pointer == 'empty':
        (tmp_path / 'last_checkpoint').write_text('')
    elif pointer == 'deleted':
        (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    elif pointer == 'truncated':
        data = open(newer, 'rb').read()
        open(newer, 'wb').write(data[:len(data) // 2])
        (tmp_path / 'last_checkpoint').write_text(newer)
    log = Log()
    expected = older if pointer == 'truncated' else newer
    assert find_resume_checkpoint(str(tmp_path), log) == expected
    assert len(log.lines) == 1 and 'newest intact checkpoint' in log.lines[0]
    assert expected in log.lines[0]


def test_resume_refuses_to_start_over_on_top_of_unreadable_checkpoints(tmp_path):
    (tmp_path / 'iter_2.pth').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='Refusing to start over'):
        find_resume_checkpoint(str(tmp_path), Log())


def test_resume_in_an_empty_work_dir_starts_fresh(tmp_path):
    assert find_resume_checkpoint(str(tmp_path), Log()) is None


def test_every_config_gets_the_safer_stock_hooks_with_their_arguments():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, 'quickstart', 'maskrcnn_ravlt_t_shapes.py'))
    expected = {name: dict(hook) for name, hook in cfg.default_hooks.items()}
    use_safer_default_hooks(cfg)
    assert cfg.default_hooks.checkpoint.type == 'CrashSafeCheckpointHook'
    assert cfg.default_hooks.logger.type == 'MainProcessLoggerHook'
    for name, hook in cfg.default_hooks.items():
        assert {k: v for k, v in hook.items() if k != 'type'} == \
            {k: v for k, v in expected[name].items() if k != 'type'}


class EpochEndRunner:
    """What LoggerHook.after_test_epoch reads from a runner."""

    def __init__(self, log_dir):
        self.log_dir, self.test_dataloader, self.logger = str(log_dir), [0, 1], Log()
        self.log_processor = self

    @staticmethod
    def get_log_after_epoch(runner, batches, mode, with_non_scalar=False):
        return {'coco/bbox_mAP': 0.5, 'time': 1.25}, f'Epoch({mode}) [{batches}]'


@pytest.mark.parametrize('main', [True, False])
def test_only_the_main_process_writes_the_test_metrics(tmp_path, monkeypatch, main):
    """Every rank used to write <timestamp>.json at once (the same name on all ranks),
    which left trailing bytes of the longer write: not JSON any more."""
    from mmrala.mm import runtime
    monkeypatch.setattr(runtime, 'is_main_process', lambda: main)
    hook = MainProcessLoggerHook()
    hook.json_log_path = 'run.json'
    hook.after_test_epoch(EpochEndRunner(tmp_path))
    written = tmp_path / 'run.json'
    assert written.is_file() == main
    if main:
        assert json.loads(written.read_text()) == {'coco/bbox_mAP': 0.5, 'time': 1.25}


# ---------------------------------------------------------------------------------------
# Dataset errors name the file and the cause
# ---------------------------------------------------------------------------------------

def coco_loader(root, ann_file, classes=None):
    dataset = dict(type='CocoDataset', data_root=str(root), ann_file=ann_file,
                   data_prefix=dict(img='images/'), pipeline=[])
    if classes:
        dataset['metainfo'] = dict(classes=classes)
    return dict(batch_size=1, num_workers=0, dataset=dataset,
                sampler=dict(type='DefaultSampler', shuffle=False))


def build_in_scope(scope, loader):
    from mmengine.registry import DefaultScope, init_default_scope
    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return MMRalaRunner.build_dataloader(loader)


def test_annotation_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / 'instances.json').write_text('<html>not found</html>')
    with pytest.raises(RuntimeError, match='instances.json is not valid JSON'):
        build_in_scope('mmdet', coco_loader(tmp_path, 'instances.json'))


def test_coco_file_without_images_says_so(tmp_path):
    content = dict(images=[], annotations=[], categories=[dict(id=1, name='person')])
    (tmp_path / 'instances.json').write_text(json.dumps(content))
    with pytest.raises(RuntimeError, match='lists no images'):
        build_in_scope('mmdet', coco_loader(tmp_path, 'instances.json'))


def test_coco_classes_that_match_nothing_are_named(tmp_path):
    content = dict(images=[dict(id=1, file_name='a.jpg', width=8, height=8)],
                   annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4, 4],
                                     area=16, iscrowd=0)],
                   categories=[dict(id=1, name='person')])
    (tmp_path / 'instances.json').write_text(json.dumps(content))
    with pytest.raises(RuntimeError, match=r"none of the classes \['cat'\]"):
        build_in_scope('mmdet', coco_loader(tmp_path, 'instances.json', classes=('cat',)))


def test_empty_ade_folder_says_so(tmp_path):
    (tmp_path / 'images' / 'training').mkdir(parents=True)
    (tmp_path / 'annotations' / 'training').mkdir(parents=True)
    loader = dict(batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler'),
                  dataset=dict(type='ADE20KDataset', data_root=str(tmp_path), pipeline=[],
                               data_prefix=dict(img_path='images/training',
                                                seg_map_path='annotations/training')))
    with pytest.raises(RuntimeError, match='images/training holds no files'):
        build_in_scope('mmseg', loader)


# ---------------------------------------------------------------------------------------
# mmseg's model.pretrained
# ---------------------------------------------------------------------------------------

def mmseg_upernet_with_ravlt(pretrained):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(osp.dirname(__import__('mmseg').__file__), '.mim',
                                   'configs', '_base_', 'models', 'upernet_r50.py'))
    cfg.model.pretrained = pretrained
    cfg.model.backbone = dict(type='RAVLT', arch='t', norm_cfg=dict(type='BN'))
    cfg.model.decode_head.in_channels = [64, 128, 256, 512]
    cfg.model.auxiliary_head.in_channels = 256
    cfg.model.data_preprocessor = None
    return cfg.model


def build_segmentor(model_cfg):
    from mmengine.registry import DefaultScope, init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(model_cfg)


def test_mmseg_pretrained_path_becomes_init_cfg(tmp_path):
    torch.manual_seed(1)
    source = PlainRAVLT('t')
    path = tmp_path / 'ravlt_t_backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    with pytest.warns(FutureWarning, match="'pretrained' is deprecated"):
        segmentor = build_segmentor(mmseg_upernet_with_ravlt(str(path)))
    assert segmentor.backbone.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    segmentor.backbone.init_weights()
    assert torch.equal(segmentor.backbone.stages[1].blocks[0].attn.qkvo.weight,
                       source.stages[1].blocks[0].attn.qkvo.weight)


def test_mmseg_pretrained_of_another_backbone_names_the_key_to_change():
    with pytest.raises(ValueError, match=r'model\.pretrained=None'):
        build_segmentor(mmseg_upernet_with_ravlt('open-mmlab://resnet50_v1c'))
