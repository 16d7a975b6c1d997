"""``pip install mmrala`` needs only torch and timm: the network, the op and the timm
models work in a process where no OpenMMLab package can be imported."""
import subprocess
import sys

from conftest import tool_env

WITHOUT_OPENMMLAB = '''
import sys
for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
    sys.modules[name] = None   # what Python does for a package that is not installed
import timm, torch
import mmrala
assert sys.modules['mmengine'] is None and 'mmrala.mm' not in sys.modules
model = timm.create_model('ravlt_t', num_classes=10).eval()
with torch.no_grad():
    print(tuple(model(torch.randn(1, 3, 64, 64)).shape))
print(tuple(o.shape[1] for o in mmrala.models.RAVLT('t').eval()(torch.randn(1, 3, 32, 32))))
'''


def test_import_and_timm_models_work_without_openmmlab():
    result = subprocess.run([sys.executable, '-c', WITHOUT_OPENMMLAB], env=tool_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ['(1,', '10)', '(64,', '128,', '256,', '512)']
