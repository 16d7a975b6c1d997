"""Failure modes that must be loud: non-finite inputs stop training naming the image, and
tiny inputs still work (kills and resumes: tests/test_crash_safety.py)."""
from __future__ import annotations

import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import CONFIGS, TOOLS, case_options, stock_tool, tool_env

from mmrala.models import RAVLT


@pytest.mark.slow
@pytest.mark.parametrize('value,which', [('nan', 'mmrala'), ('inf', 'mmrala'),
                                         ('nan', 'stock')])
def test_nonfinite_pixels_under_amp_stop_training_naming_the_image(request, tmp_path, value,
                                                                    which):
    """A NaN or Inf pixel reaching the network (here from a custom float transform) makes
    the loss non-finite; under --amp the gradient scaler would just skip such steps.
    FiniteLossHook (declared by every mmrala config) stops the run at that iteration and
    names the image, under mmrala's train.py and mmpretrain's own."""
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
    script = osp.join(TOOLS, 'train.py') if which == 'mmrala' else stock_tool('mmpretrain',
                                                                               'train.py')
    proc = subprocess.run([sys.executable, script, str(config), '--amp',
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
