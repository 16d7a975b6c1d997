"""Shared fixtures of the downstream tests: tiny datasets in the real formats, the
``--cfg-options`` that shrink the real configs to them, and helpers that run the tools
as a user would (subprocesses)."""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from mmrala.synthetic_data import make_tiny_ade20k, make_tiny_coco, make_tiny_imagenet

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
CONFIGS = osp.join(REPO, 'configs')


def tool_env(**extra):
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '2')
    env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env['PYTHON'] = sys.executable  # for tools/dist_*.sh
    env.update(extra)
    return env


def run_cmd(cmd, timeout=600, env=None, cwd=REPO):
    """Run a command; on failure show the end of its output. Returns the output."""
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f'command failed (rc {proc.returncode}, {time.time() - start:.0f}s): '
                    f'{" ".join(map(str, cmd))}\n...{proc.stdout[-6000:]}')
    return proc.stdout


def tool(name, *args, timeout=600, env=None):
    return run_cmd([sys.executable, osp.join(TOOLS, name), *map(str, args)], timeout, env)


# The authors' parameter counts of the ImageNet models (1000 classes), per variant.
AUTHORS_PARAMS = {'t': 14_897_768, 's': 25_591_208, 'b': 48_241_288, 'l': 95_242_440}


def load_tool(name):
    """A module of tools/ (e.g. 'get_flops'), imported from its file."""
    import importlib.util
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def stock_tool(package, name):
    """A task library's own tool as pip installs it (``<package>/.mim/tools/NAME``)."""
    import importlib
    path = osp.join(osp.dirname(importlib.import_module(package).__file__), '.mim', 'tools',
                    name)
    assert osp.isfile(path), f'{package} ships no {name} at {path}'
    return path


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f'timed out after {timeout}s waiting for {what}')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def read_test_metrics(work_dir):
    """The metrics mmengine's LoggerHook wrote for the (latest) test run in work_dir."""
    paths = sorted(p for p in glob.glob(osp.join(work_dir, '*', '*.json'))
                   if osp.basename(p)[:-5] == osp.basename(osp.dirname(p)))
    assert paths, f'no test metrics json under {work_dir}'
    with open(paths[-1]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def train_scalars(work_dir):
    """Every line of the training scalars.json files in work_dir, in run order."""
    lines = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return lines


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    from mmdet.datasets import CocoDataset
    root = tmp_path_factory.mktemp('coco')
    return str(make_tiny_coco(root, CocoDataset.METAINFO['classes'])) + '/'


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory):
    return str(make_tiny_ade20k(tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016')) + '/'


@pytest.fixture(scope='session')
def classifier_t():
    """A RAVLT-T classifier in eval mode with random weights and non-trivial BatchNorm
    statistics, so that a checkpoint round trip must carry them. Do not modify it."""
    import torch

    from mmrala.models import RAVLTClassifier
    torch.manual_seed(0)
    model = RAVLTClassifier('t').eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope='session')
def authors_imagenet_t(tmp_path_factory):
    """A RAVLT-T ImageNet checkpoint in the authors' file format (random weights)."""
    import torch
    from authors_checkpoint import save_authors_imagenet_file

    from mmrala.models import RAVLTClassifier
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('authors') / 'RAVLT_T.pth'
    save_authors_imagenet_file(RAVLTClassifier('t'), path)
    return str(path)


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory):
    return str(make_tiny_imagenet(tmp_path_factory.mktemp('imagenet'))) + '/'


def _loaders(key, value):
    return [f'{loader}.{key}={value}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def coco_options(root, size=(160, 128)):
    """Real COCO config -> tiny COCO at data_root, images resized to size (w, h)."""
    scale = f'({size[0]},{size[1]})'
    ann = f'{root}annotations/instances_val2017.json'
    return [*_loaders('dataset.data_root', root), *_loaders('num_workers', 1),
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
            f'train_dataloader.dataset.pipeline.2.scale={scale}',
            f'val_dataloader.dataset.pipeline.1.scale={scale}',
            f'test_dataloader.dataset.pipeline.1.scale={scale}',
            'train_cfg.max_epochs=1', 'train_cfg.val_begin=1000']


def ade_options(root, crop=64):
    """Real ADE20K config -> tiny ADE20K at data_root, crop x crop training crops."""
    scale = f'({4 * crop},{crop})'
    return [*_loaders('dataset.data_root', root), *_loaders('num_workers', 1),
            f'train_dataloader.dataset.pipeline.2.scale={scale}',
            f'train_dataloader.dataset.pipeline.3.crop_size=({crop},{crop})',
            f'model.data_preprocessor.size=({crop},{crop})',
            f'val_dataloader.dataset.pipeline.1.scale={scale}',
            f'test_dataloader.dataset.pipeline.1.scale={scale}',
            'train_cfg.max_iters=2', 'train_cfg.val_begin=1000',
            'default_hooks.checkpoint.interval=2']


def imagenet_options(root, size=64):
    """Real ImageNet config -> tiny folder tree at data_root, size x size crops."""
    return [*_loaders('dataset.data_root', root), *_loaders('num_workers', 1),
            *_loaders('batch_size', 4),
            f'train_dataloader.dataset.pipeline.1.scale={size}',
            f'val_dataloader.dataset.pipeline.1.scale={round(size / 0.875)}',
            f'val_dataloader.dataset.pipeline.2.crop_size={size}',
            f'test_dataloader.dataset.pipeline.1.scale={round(size / 0.875)}',
            f'test_dataloader.dataset.pipeline.2.crop_size={size}',
            'train_cfg.max_epochs=1', 'train_cfg.val_begin=1000']


COMMON = ['randomness.seed=0', 'default_hooks.logger.interval=1',
          'log_processor.window_size=1']


@dataclass
class Case:
    config: str
    data: str  # fixture name of the data root
    options: object  # root -> list of --cfg-options
    metrics: tuple  # keys the test run must report
    # fixture name of the authors' ImageNet file the backbone starts from (the config's
    # init_cfg, pointed at it); None: random initialisation
    pretrained: str | None = None
    # the task library whose own tools/train.py and tools/test.py run this case; None:
    # mmrala's tools
    stock_tools: str | None = None

    def tool_path(self, name):
        return stock_tool(self.stock_tools, name) if self.stock_tools else osp.join(TOOLS, name)


# One case of each task library runs through that library's own tools.
CASES = {
    'maskrcnn': Case('maskrcnn_ravlt_t_coco.py', 'coco_root', coco_options,
                     ('coco/bbox_mAP', 'coco/segm_mAP'), pretrained='authors_imagenet_t',
                     stock_tools='mmdet'),
    'retinanet': Case('retinanet_ravlt_t_coco.py', 'coco_root', coco_options,
                      ('coco/bbox_mAP', )),
    'fpn': Case('fpn_ravlt_t_ade20k.py', 'ade_root', ade_options, ('mIoU', 'aAcc')),
    # UperNet exists for S, B and L only; S at 64x64 crops is small enough.
    'upernet': Case('upernet_ravlt_s_ade20k.py', 'ade_root', ade_options, ('mIoU', 'aAcc'),
                    stock_tools='mmseg'),
    'in1k': Case('ravlt_t_in1k.py', 'imagenet_root', imagenet_options,
                 ('accuracy/top1', 'accuracy/top5'), stock_tools='mmpretrain'),
}


def case_options(name, request):
    case = CASES[name]
    root = request.getfixturevalue(case.data)
    if case.pretrained:
        init = f'model.backbone.init_cfg.checkpoint={request.getfixturevalue(case.pretrained)}'
    else:
        init = 'model.backbone.init_cfg=None'
    return [*COMMON, init, *case.options(root)]


# Test-time only: keep the low-score detections of barely trained detectors (all their
# class scores are still below the configs' 0.05, and COCO evaluation of no detections
# reports no metric).
SCORE_THR_0 = {'maskrcnn': ['model.test_cfg.rcnn.score_thr=0.0'],
               'retinanet': ['model.test_cfg.score_thr=0.0']}


def eval_options(name, request):
    return case_options(name, request) + SCORE_THR_0.get(name, [])


class TrainedRuns:
    """Trains each case once per session (tools/train.py) and shares the checkpoint."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.runs = {}

    def get(self, name, request):
        if name not in self.runs:
            work_dir = str(self.tmp.mktemp(f'train_{name}'))
            config = osp.join(CONFIGS, CASES[name].config)
            start = time.time()
            out = run_cmd([sys.executable, CASES[name].tool_path('train.py'), config,
                           '--work-dir', work_dir, '--cfg-options',
                           *case_options(name, request)])
            self.runs[name] = dict(work_dir=work_dir, checkpoint=last_checkpoint(work_dir),
                                   config=config, output=out, seconds=time.time() - start)
        return self.runs[name]


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    return TrainedRuns(tmp_path_factory)
