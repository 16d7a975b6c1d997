"""Failure modes that must be loud or recoverable: training killed mid-run resumes from
its last checkpoint, and wrong inputs and configurations are explained."""
from __future__ import annotations

import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CONFIGS, TOOLS, case_options, last_checkpoint, tool, tool_env

from mmrala.models import RAVLT


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f'timed out after {timeout}s waiting for {what}')


def test_sigkill_mid_run_loses_at_most_the_work_since_the_last_checkpoint(request, tmp_path):
    config = osp.join(CONFIGS, 'fpn_ravlt_t_ade20k.py')
    work_dir = tmp_path / 'killed'
    options = case_options('fpn', request) + ['default_hooks.checkpoint.interval=2',
                                              'train_cfg.max_iters=6']
    cmd = [sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', str(work_dir),
           '--cfg-options', *options]
    log = open(tmp_path / 'killed.log', 'w')
    proc = subprocess.Popen(cmd, env=tool_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        # kill it after the iteration-2 checkpoint is recorded, in the middle of iteration 3
        wait_for(lambda: osp.isfile(work_dir / 'last_checkpoint'), 300, 'the first checkpoint')
        time.sleep(0.5)
        assert proc.poll() is None, 'training ended before it could be killed'
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    saved = last_checkpoint(work_dir)
    assert saved.endswith('iter_2.pth') or saved.endswith('iter_4.pth')
    assert not osp.isfile(work_dir / 'iter_6.pth')

    out = tool('train.py', config, '--work-dir', work_dir, '--resume', '--cfg-options', *options)
    resumed_at = int(saved.rsplit('_', 1)[1].split('.')[0])
    assert f'resumed epoch: 0, iter: {resumed_at}' in out
    assert osp.isfile(work_dir / 'iter_6.pth')
    final = torch.load(work_dir / 'iter_6.pth', map_location='cpu', weights_only=True)
    assert final['meta']['iter'] == 6


@pytest.mark.parametrize('value', ['nan', 'inf'])
def test_nonfinite_pixels_under_amp_stop_training_naming_the_image(request, tmp_path, value):
    """A NaN or Inf pixel reaching the network (here from a custom float transform) makes
    the loss non-finite; under --amp the gradient scaler would just skip such steps.
    FiniteLossHook (added by tools/train.py) stops the run at that iteration and names the
    image."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, 'ravlt_t_in1k.py'))
    cfg.merge_from_dict(_options_dict(case_options('in1k', request)))
    cfg.custom_imports = dict(imports=['mmrala', 'nan_pixels'], allow_failed_imports=False)
    poisoned = 'n10000007_1'  # the second image of the second class
    pipeline = cfg.train_dataloader.dataset.pipeline
    pipeline.insert(len(pipeline) - 1, dict(type='PutNaNPixels', name_contains=poisoned,
                                            value=value))
    # the whole tiny train split in one batch (RepeatAugSampler would drop some images)
    cfg.train_dataloader.batch_size = 8
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.model.train_cfg = None  # no CutMix: it may paste over the NaN corner
    config = tmp_path / 'poisoned.py'
    cfg.dump(str(config))
    env = tool_env(PYTHONPATH=os.pathsep.join([osp.dirname(CONFIGS), osp.dirname(__file__)]))
    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'train.py'), str(config), '--amp',
                           '--work-dir', str(tmp_path / 'work')], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert 'FloatingPointError' in proc.stdout, proc.stdout[-3000:]
    message = proc.stdout[proc.stdout.rindex('FloatingPointError'):]
    assert 'iteration 1 ' in message
    assert 'NaN or Inf pixel values' in message
    assert poisoned in message
    assert 'n10000000_0' not in message  # only the poisoned image is named
    assert not osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


def _options_dict(options):
    """--cfg-options strings -> the dict mmengine's DictAction would build."""
    from mmengine.config import DictAction
    parsed = {}
    for option in options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def test_image_smaller_than_the_stride_still_gives_every_output():
    # stride-2 convs with padding map any n >= 1 to ceil(n / 2): a 16x16 (or even 8x8)
    # image yields 1x1 maps at the deepest stages instead of failing
    model = RAVLT('t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 8, 8))
    assert [tuple(o.shape[-2:]) for o in outs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert all(torch.isfinite(o).all() for o in outs)
