"""Single-image inference (tools/infer.py, mmrala.mm.inference): the checkpoint is loaded
strictly, where the task library's own inferencer would load it leniently, and the
classes come from the checkpoint."""
from __future__ import annotations

import os.path as osp

import numpy as np
import pytest
import torch
from conftest import CONFIGS

from mmrala.checkpoint import CheckpointError
from mmrala.synthetic_data import make_object_image

CLS_CONFIG = osp.join(CONFIGS, 'quickstart', 'ravlt_t_shapes_cls.py')
CHECKPOINT_CLASSES = ['disc', 'wedge', 'box', 'spark']


@pytest.fixture(scope='module')
def cls_cfg():
    from mmengine.config import Config
    return Config.fromfile(CLS_CONFIG)


@pytest.fixture(scope='module')
def cls_state(cls_cfg):
    """The weights of the quick start's classifier (random) and a star image."""
    import copy

    from mmpretrain.apis import get_model

    from mmrala.mm.runtime import adapt_to_machine
    cfg = copy.deepcopy(cls_cfg)
    adapt_to_machine(cfg)
    torch.manual_seed(0)
    return get_model(cfg, pretrained=False, device='cpu').state_dict()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / 'star.jpg'
    make_object_image(np.random.default_rng(0), 64, 64, cls=3).save(path)
    return str(path)


def _save(state, path):
    torch.save(dict(state_dict=state, meta=dict(dataset_meta=dict(classes=CHECKPOINT_CLASSES))),
               path)
    return str(path)


def test_classification_draws_with_the_checkpoint_classes(cls_cfg, cls_state, image,
                                                          tmp_path):
    from mmrala.mm.inference import infer
    out = tmp_path / 'drawn.png'
    lines = infer(image, cls_cfg, _save(cls_state, tmp_path / 'ok.pth'), str(out),
                  device='cpu')
    assert len(lines) == 1 and lines[0].split()[0] in CHECKPOINT_CLASSES
    assert out.is_file() and out.stat().st_size > 0


def test_classification_refuses_a_checkpoint_of_another_model(cls_cfg, cls_state, image,
                                                              tmp_path):
    """A 10-class head and a missing layer: mmpretrain's inferencer would warn and keep
    random weights for them."""
    from mmrala.mm.inference import infer
    state = dict(cls_state)
    state['head.fc.weight'] = torch.zeros(10, state['head.fc.weight'].shape[1])
    del state['head.fc.bias']
    with pytest.raises(CheckpointError) as err:
        infer(image, cls_cfg, _save(state, tmp_path / 'other.pth'), str(tmp_path / 'x.png'),
              device='cpu')
    message = str(err.value)
    assert 'head.fc.weight' in message and 'head.fc.bias' in message
    assert not (tmp_path / 'x.png').exists()
