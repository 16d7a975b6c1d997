"""The quick start (tools/quickstart.py), run in full as a user runs it: generate the
shapes dataset, train RAVLT-T from random weights, evaluate on the held-out images, draw
pictures. Each must reach the floor its config promises (``quickstart_floor``); these
are the slowest tests of the suite (4 to 9 minutes each on 2 CPU cores)."""
from __future__ import annotations

import json
import os.path as osp
import subprocess
import sys

import pytest
from conftest import CONFIGS, TOOLS, tool_env

from mmrala.mm.quickstart import QUICKSTARTS, ConsoleFilter


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """One directory for all quick starts, so the shapes dataset is generated once."""
    return tmp_path_factory.mktemp('quickstart')


STARTUP = """\
11/23 05:57:57 - mmengine - INFO -{space}
------------------------------------------------------------
System environment:
    sys.platform: linux
11/23 05:57:57 - mmengine - INFO - Config:
auto_scale_lr = dict(base_batch_size=16, enable=False)
11/23 05:57:59 - mmengine - INFO - Hooks will be executed in the following order:
before_run:
(VERY_HIGH   ) RuntimeInfoHook
11/23 05:57:59 - mmengine - INFO - task: detection (mmdet)
11/23 05:58:00 - mmengine - INFO - paramwise_options -- backbone.stages.0.blocks.0.norm1.weight:lr=0.0002
11/23 05:58:01 - mmengine - WARNING - "FileClient" will be deprecated in future.
11/23 05:58:14 - mmengine - INFO - Iter(train) [10/60]  base_lr: 2.0000e-05  loss: 5.7549
11/23 05:58:15 - mmengine - INFO - Config:
model = dict(
/venv/lib/python3.11/site-packages/mmdet/foo.py:12: UserWarning: something to know
Traceback (most recent call last):
  File "train.py", line 3, in <module>
RuntimeError: what went wrong
""".format(space=' ')


def test_console_shows_progress_warnings_and_errors_but_not_the_startup_dumps():
    console = ConsoleFilter()
    shown = ''.join(line for line in STARTUP.splitlines(True) if console.shows(line))
    for hidden in ('System environment', 'sys.platform', 'auto_scale_lr', 'RuntimeInfoHook',
                   'paramwise_options', 'model = dict('):
        assert hidden not in shown, hidden
    for kept in ('task: detection', '"FileClient"', 'Iter(train) [10/60]', 'UserWarning',
                 'Traceback', 'File "train.py"', 'RuntimeError: what went wrong'):
        assert kept in shown, kept


@pytest.mark.slow
@pytest.mark.parametrize('name', list(QUICKSTARTS))
def test_quickstart_reaches_its_floor_and_draws_pictures(name, run_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, 'quickstart', QUICKSTARTS[name]))
    floor = cfg.quickstart_floor

    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'quickstart.py'), name],
                          cwd=run_dir, env=tool_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=1500)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:]

    work_dir = run_dir / 'work_dirs' / f'quickstart_{name}'
    result = json.loads((work_dir / 'quickstart_result.json').read_text())
    assert result['metric'] == floor.metric and result['floor'] == floor.value
    assert result['value'] >= floor.value
    assert f'OK: {floor.metric} {result["value"]:.4g} >= {floor.value}' in out
    print(f'{name}: {floor.metric} = {result["value"]:.4f} (floor {floor.value}), '
          f'{result["minutes"]:.1f} min')

    # a quiet console: the training progress, not the start-up dumps (the log file keeps
    # them)
    assert 'Iter(train)' in out or 'Epoch(train)' in out
    log = '\n'.join(path.read_text() for path in work_dir.glob('*/*.log'))
    dumps = ['System environment:', 'Hooks will be executed in the following order:']
    if cfg.optim_wrapper.get('paramwise_cfg'):
        dumps.append('paramwise_options -- ')
    for dump in dumps:
        assert dump in log and dump not in out, dump
    # the training's part of the console (the dataset's progress, printed before it, is
    # one line per 100 images when the output is not a terminal)
    training = out.split('[2/4] training', 1)[1].split('[3/4]', 1)[0]
    assert training.count('\n') < 200, training[-3000:]

    # the data came from the generator, in the real layout, next to where it ran
    assert (run_dir / 'data' / 'shapes' / 'DONE').is_file()
    pictures = sorted((work_dir / 'pictures').glob('*.png'))
    assert len(pictures) == 4, pictures
    from PIL import Image
    for path in pictures:
        with Image.open(path) as img:
            assert img.width >= 64 and img.height >= 64
            # drawn over, not a blank canvas
            assert len(set(img.convert('RGB').getdata())) > 50
