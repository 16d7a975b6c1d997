"""The quick-start demos (tools/run_demo.py), run in full as a user runs them: generate
the shapes dataset, train RAVLT-T from random weights, evaluate on the held-out images,
draw pictures. Each must reach the floor its config promises (``demo_floor``); these are
the slowest tests of the suite (minutes each on 2 CPU cores)."""
from __future__ import annotations

import json
import os.path as osp
import subprocess
import sys

import pytest
from conftest import CONFIGS, TOOLS, tool_env

sys.path.insert(0, TOOLS)
from run_demo import DEMOS  # noqa: E402  (demo name -> config file in configs/demo/)


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    """One directory for all demos, so the shapes dataset is generated once."""
    return tmp_path_factory.mktemp('demo')


@pytest.mark.parametrize('demo', list(DEMOS))
def test_demo_reaches_its_floor_and_draws_pictures(demo, demo_dir):
    from mmengine.config import Config
    floor = Config.fromfile(osp.join(CONFIGS, 'demo', DEMOS[demo])).demo_floor

    proc = subprocess.run([sys.executable, osp.join(TOOLS, 'run_demo.py'), demo],
                          cwd=demo_dir, env=tool_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=1500)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:]

    work_dir = demo_dir / 'work_dirs' / f'demo_{demo}'
    result = json.loads((work_dir / 'demo_result.json').read_text())
    assert result['metric'] == floor.metric and result['floor'] == floor.value
    assert result['value'] >= floor.value
    assert f'OK: {floor.metric} {result["value"]:.4g} >= {floor.value}' in out
    print(f'{demo}: {floor.metric} = {result["value"]:.4f} (floor {floor.value}), '
          f'{result["minutes"]:.1f} min')

    # the data came from the generator, in the real layout, next to where it ran
    assert (demo_dir / 'data' / 'shapes' / 'DONE').is_file()
    pictures = sorted((work_dir / 'pictures').glob('*.png'))
    assert len(pictures) == 4, pictures
    from PIL import Image
    for path in pictures:
        with Image.open(path) as img:
            assert img.width >= 64 and img.height >= 64
            # drawn over, not a blank canvas
            assert len(set(img.convert('RGB').getdata())) > 50
