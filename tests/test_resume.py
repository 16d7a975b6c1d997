"""A run stopped after iteration k and continued with --resume ends with the same weights
and the same losses as an uninterrupted run (Semantic FPN, RAVLT-T: drop path, dropout
and random augmentation all active)."""
from __future__ import annotations

import os.path as osp

import torch
from conftest import CONFIGS, case_options, tool, train_scalars

import mmrala  # noqa: F401  (allow-lists mmengine's checkpoint classes for torch.load)

K, N = 2, 2


def losses(work_dir):
    return {s['step']: s['loss'] for s in train_scalars(work_dir) if 'loss' in s}


def test_resume_reproduces_the_uninterrupted_run(request, tmp_path):
    config = osp.join(CONFIGS, 'fpn_ravlt_t_ade20k.py')
    options = case_options('fpn', request) + [f'default_hooks.checkpoint.interval={K}']
    full, part = tmp_path / 'full', tmp_path / 'part'

    tool('train.py', config, '--work-dir', full, '--cfg-options', *options,
         f'train_cfg.max_iters={K + N}')
    tool('train.py', config, '--work-dir', part, '--cfg-options', *options,
         f'train_cfg.max_iters={K}')
    assert osp.isfile(part / f'iter_{K}.pth')
    out = tool('train.py', config, '--work-dir', part, '--resume', '--cfg-options', *options,
               f'train_cfg.max_iters={K + N}')
    assert 'restored the random-number generator states' in out
    assert f'resumed epoch: 0, iter: {K}' in out

    full_losses, part_losses = losses(full), losses(part)
    assert sorted(part_losses) == list(range(1, K + N + 1))
    for step in range(K + 1, K + N + 1):
        assert part_losses[step] == full_losses[step], (step, part_losses, full_losses)

    # weights_only stays on: importing mmrala allow-lists mmengine's checkpoint classes
    a = torch.load(full / f'iter_{K + N}.pth', map_location='cpu', weights_only=True)
    b = torch.load(part / f'iter_{K + N}.pth', map_location='cpu', weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
