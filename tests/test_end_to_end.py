"""End to end on tiny generated data in the real formats: tools/train.py trains the real
config for a few iterations and writes a checkpoint, tools/test.py evaluates that
checkpoint with the task's real metric (COCO mAP, mIoU, top-1). Mask R-CNN, UperNet and
the classifier run through mmdet's, mmseg's and mmpretrain's own tools, the others
through mmrala's.

Only data and sizes are overridden (--cfg-options): data roots, image / crop sizes,
batch and worker counts, the number of epochs / iterations, and the pretrained file
(Mask R-CNN starts from an authors'-format RAVLT-T ImageNet file through the config's
init_cfg; the other models from random weights, as the test has no real weights). For the
detectors the test also sets score_thr 0: after two iterations every class score is
still below the configs' 0.05, and COCO evaluation of zero detections reports nothing.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import pickle
import sys

import pytest
from conftest import CASES, eval_options, read_test_metrics, run_cmd, train_scalars


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CASES))
def test_train_a_few_iterations_then_evaluate(name, trained, request, tmp_path):
    run = trained.get(name, request)
    assert osp.isfile(run['checkpoint']), run['output'][-3000:]
    if CASES[name].pretrained:  # the config's init_cfg read the authors' ImageNet file
        assert 'RAVLT: loading pretrained weights from' in run['output']
    scalars = [s for s in train_scalars(run['work_dir']) if 'loss' in s]
    assert len(scalars) >= 2, 'expected a loss per iteration for at least two iterations'
    assert all(math.isfinite(s['loss']) for s in scalars)

    work_dir = tmp_path / 'test'
    extra = []
    if name in ('maskrcnn', 'in1k'):
        extra = ['--out', tmp_path / 'predictions.pkl']
    elif name == 'fpn':
        extra = ['--out', tmp_path / 'label_maps', '--show-dir', tmp_path / 'vis']
    run_cmd([sys.executable, CASES[name].tool_path('test.py'), run['config'],
             run['checkpoint'], '--work-dir', work_dir, *extra,
             '--cfg-options', *eval_options(name, request)])

    metrics = read_test_metrics(work_dir)
    for key in CASES[name].metrics:
        assert key in metrics, f'{key} missing from {metrics}'
        assert isinstance(metrics[key], (int, float)) and not math.isnan(metrics[key])

    if name == 'maskrcnn':
        with open(tmp_path / 'predictions.pkl', 'rb') as f:
            predictions = pickle.load(f)
        assert len(predictions) == 2  # the two val images
        assert {'bboxes', 'scores', 'labels', 'masks'} <= set(predictions[0]['pred_instances'])
    elif name == 'in1k':
        with open(tmp_path / 'predictions.pkl', 'rb') as f:
            predictions = pickle.load(f)
        assert len(predictions) == 4 and predictions[0]['pred_score'].shape[-1] == 1000
    elif name == 'fpn':
        assert len(os.listdir(tmp_path / 'label_maps')) == 2
        drawn = [f for _, _, files in os.walk(tmp_path / 'vis') for f in files
                 if f.endswith('.png')]
        assert len(drawn) == 2
