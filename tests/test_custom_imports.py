"""A user config that inherits an unmodified mmdet Mask R-CNN config or an unmodified
mmseg UperNet config and swaps in RAVLT through custom_imports trains with OpenMMLab's
own Runner (no mmrala tool, mmrala not imported by anything but custom_imports)."""
from __future__ import annotations

import sys
import textwrap

import pytest
from conftest import ade_options, coco_options, run_cmd, tool_env

pytestmark = pytest.mark.slow

USER_CONFIGS = {
    'mmdet_mask_rcnn': """
        _base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
        model = dict(
            backbone=dict(_delete_=True, type='RAVLT', arch='t', out_indices=(0, 1, 2, 3)),
            neck=dict(in_channels=[64, 128, 256, 512]))
        """,
    'mmseg_upernet': """
        _base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
        custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
        model = dict(
            pretrained=None,
            backbone=dict(_delete_=True, type='RAVLT', arch='t', out_indices=(0, 1, 2, 3)),
            decode_head=dict(in_channels=[64, 128, 256, 512]),
            auxiliary_head=dict(in_channels=256))
        """,
}

# OpenMMLab's Runner exactly as mmdet's / mmseg's tools/train.py drive it.
RUNNER_SCRIPT = """
import argparse, sys
from mmengine.config import Config, DictAction
from mmengine.runner import Runner
config, work_dir = sys.argv[1], sys.argv[2]
parser = argparse.ArgumentParser()
parser.add_argument('--cfg-options', nargs='+', action=DictAction)
assert 'mmrala' not in sys.modules
cfg = Config.fromfile(config)  # imports custom_imports
assert 'mmrala' in sys.modules
cfg.merge_from_dict(parser.parse_args(sys.argv[3:]).cfg_options)
cfg.work_dir = work_dir
Runner.from_cfg(cfg).train()
print('TRAINED', type(Runner).__name__)
"""


@pytest.mark.parametrize('name', list(USER_CONFIGS))
def test_user_config_with_ravlt_trains_one_iteration(name, request, tmp_path):
    config = tmp_path / f'{name}.py'
    config.write_text(textwrap.dedent(USER_CONFIGS[name]))
    if name == 'mmdet_mask_rcnn':
        # two images, batch 2: one iteration
        options = coco_options(request.getfixturevalue('coco_root')) + [
            'train_dataloader.dataset.indices=2']
    else:
        options = ade_options(request.getfixturevalue('ade_root')) + [
            'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1']
    options += ['default_hooks.logger.interval=1']
    out = run_cmd([sys.executable, '-c', RUNNER_SCRIPT, str(config), str(tmp_path / 'work'),
                   '--cfg-options', *options], env=tool_env())
    assert 'TRAINED' in out
    assert 'Iter(train) [1/1]' in out or 'Epoch(train) [1][1/1]' in out
