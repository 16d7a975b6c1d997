"""tools/dist_test.sh and tools/dist_train.sh with 2 processes on the CPU (torchrun,
gloo): distributed testing reproduces the single-process metrics and predictions, and
distributed training runs."""
from __future__ import annotations

import os.path as osp
import pickle

import numpy as np
import pytest
from conftest import (
    REPO,
    case_options,
    eval_options,
    free_port,
    last_checkpoint,
    read_test_metrics,
    run_cmd,
    tool,
    tool_env,
    train_scalars,
)

pytestmark = pytest.mark.slow

# One thread per process in both runs, so that both compute the very same numbers.
ONE_THREAD = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def test_dist_test_two_processes_give_the_single_process_results(trained, request, tmp_path):
    run = trained.get('maskrcnn', request)
    options = eval_options('maskrcnn', request)
    single, dist = tmp_path / 'single', tmp_path / 'dist'
    tool('test.py', run['config'], run['checkpoint'], '--work-dir', single,
         '--out', single / 'predictions.pkl', '--cfg-options', *options,
         env=tool_env(**ONE_THREAD))
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_test.sh'), run['config'],
                   run['checkpoint'], '2', '--work-dir', dist,
                   '--out', dist / 'predictions.pkl', '--cfg-options', *options],
                  env=tool_env(PORT=str(free_port()), **ONE_THREAD))
    assert "'gloo'" in out  # the CPU fallback was taken and said so

    single_metrics, dist_metrics = read_test_metrics(single), read_test_metrics(dist)
    keys = [k for k in single_metrics if k.startswith('coco/')]
    assert 'coco/bbox_mAP' in keys and 'coco/segm_mAP' in keys
    assert {k: dist_metrics[k] for k in keys} == {k: single_metrics[k] for k in keys}

    with open(single / 'predictions.pkl', 'rb') as f:
        single_preds = pickle.load(f)
    with open(dist / 'predictions.pkl', 'rb') as f:
        dist_preds = pickle.load(f)
    assert [p['img_id'] for p in dist_preds] == [p['img_id'] for p in single_preds]
    for a, b in zip(single_preds, dist_preds):
        for key in ('bboxes', 'scores', 'labels'):
            np.testing.assert_allclose(np.asarray(b['pred_instances'][key]),
                                       np.asarray(a['pred_instances'][key]), rtol=1e-5,
                                       atol=1e-4)


def test_dist_train_two_processes_runs_checkpoints_and_resumes(request, tmp_path):
    # Semantic FPN: its FPNHead has SyncBN, which the CPU run must turn into BN.
    work_dir = tmp_path / 'dist_train'
    config = osp.join(REPO, 'configs', 'fpn_ravlt_t_ade20k.py')
    options = case_options('fpn', request)
    dist_train = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '2',
                  '--work-dir', work_dir]
    out = run_cmd([*dist_train, '--cfg-options', *options],
                  env=tool_env(PORT=str(free_port())))
    assert 'SyncBN' in out and "'gloo'" in out
    assert last_checkpoint(work_dir).endswith('iter_2.pth')
    assert osp.isfile(last_checkpoint(work_dir))

    # --resume under the launcher: the random states of both processes come back.
    out = run_cmd([*dist_train, '--resume', '--cfg-options', *options,
                   'train_cfg.max_iters=3'], env=tool_env(PORT=str(free_port())))
    assert 'restored the random-number generator states' in out
    losses = [s for s in train_scalars(work_dir) if 'loss' in s]
    assert [s['step'] for s in losses] == [1, 2, 3]
    assert last_checkpoint(work_dir).endswith('iter_3.pth')
