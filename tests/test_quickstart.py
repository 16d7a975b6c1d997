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

from mmrala.mm.quickstart import HIDDEN_FROM_CONSOLE, QUICKSTARTS


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """One directory for all quick starts, so the shapes dataset is generated once."""
    return tmp_path_factory.mktemp('quickstart')


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

    # a quiet console: the training progress, not the per-parameter option dump of
    # configs with a paramwise_cfg (the log file keeps it)
    assert 'Iter(train)' in out or 'Epoch(train)' in out
    assert not any(hidden in out for hidden in HIDDEN_FROM_CONSOLE)
    if cfg.optim_wrapper.get('paramwise_cfg'):
        log = '\n'.join(path.read_text() for path in work_dir.glob('*/*.log'))
        assert HIDDEN_FROM_CONSOLE[0] in log

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
