"""The quick start (``tools/quickstart.py``, ``make quickstart``): RAVLT-T trained from
random weights and evaluated on the generated shapes dataset, on a laptop-class CPU,
with pictures of its predictions on held-out images.

    python tools/quickstart.py             # Mask R-CNN (make quickstart)
    python tools/quickstart.py fpn         # Semantic FPN segmentation
    python tools/quickstart.py cls         # image classification

Each quick start

1. generates the shapes dataset at its config's ``quickstart_data``
   (:func:`mmrala.synthetic_data.make_shapes_dataset`; skipped when it is there);
2. trains its config in ``configs/quickstart/`` as ``tools/train.py`` does (minutes on 2
   CPU cores; a GPU is used when there is one), evaluating on the held-out images;
3. prints the metric beside the floor its config promises (``quickstart_floor``) and
   exits with status 1 when the metric is below it;
4. draws the predictions on a few held-out images (:mod:`mmrala.mm.inference`) into
   ``WORK_DIR/pictures/``.

Paths are relative to the current directory (``data/shapes/``,
``work_dirs/quickstart_<name>/``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

from mmengine.config import DictAction

from ..synthetic_data import make_shapes_dataset
from .cli import load_config
from .inference import build_predictor

# quick start -> its config in configs/quickstart/
QUICKSTARTS = {
    'maskrcnn': 'maskrcnn_ravlt_t_shapes.py',
    'fpn': 'fpn_ravlt_t_shapes.py',
    'cls': 'ravlt_t_shapes_cls.py',
}
# the held-out images each quick start draws (relative to the config's data root)
PICTURE_GLOBS = {
    'maskrcnn': 'val/*.jpg',
    'fpn': 'images/validation/*.jpg',
    'cls': 'val/*/*.JPEG',
}
# mmengine's start-up log records that run to hundreds of lines and would bury the
# training progress on the console: the machine's environment (a record whose first line
# is empty), the whole config, the hook order, and one line per parameter with its
# optimiser options (configs with a paramwise_cfg). The log file in the work dir keeps
# them all. Each is the start of a record's message.
HIDDEN_FROM_CONSOLE = ('', 'Config:', 'Hooks will be executed', 'paramwise_options -- ')
LOG_RECORD = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - [A-Z]+ - (.*)$')
# lines that are not part of a log record: Python's own reports
NOT_A_RECORD = re.compile(r'^(Traceback|\S+: \S*(Error|Warning)\b|\S*(Error|Exception)\b)')


class ConsoleFilter:
    """Decides, line by line, what of a training run's output reaches the console: all
    but the records of HIDDEN_FROM_CONSOLE, each with its continuation lines."""

    def __init__(self):
        self.hiding = False

    def shows(self, line: str) -> bool:
        record = LOG_RECORD.match(line.rstrip('\n'))
        if record:
            message = record.group(1).strip()
            self.hiding = any(message.startswith(hidden) if hidden else not message
                              for hidden in HIDDEN_FROM_CONSOLE)
        elif NOT_A_RECORD.match(line):
            self.hiding = False
        return not self.hiding


TRAIN = 'from mmrala.mm.cli import train_main; train_main()'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train RAVLT-T from random weights on the '
                                'generated shapes dataset, check its held-out metric and '
                                'draw its predictions.')
    p.add_argument('quickstart', nargs='?', default='maskrcnn', choices=sorted(QUICKSTARTS),
                   help='which model (default: maskrcnn)')
    p.add_argument('--work-dir', help='default: work_dirs/quickstart_<quickstart>')
    p.add_argument('--pictures', type=int, default=4,
                   help='how many held-out images to draw')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='override config entries, key=value, for training and pictures '
                   '(e.g. train_cfg.max_iters=100)')
    return p.parse_args(argv)


def options_dict(options: list[str]) -> dict:
    """key=value strings -> the dict mmengine's --cfg-options would build."""
    namespace = argparse.Namespace(options={})
    if options:
        DictAction(option_strings=[], dest='options')(None, namespace, options)
    return namespace.options


def train(config, work_dir, cfg_options) -> int:
    """tools/train.py on config in a child process, its console output passed through
    a ConsoleFilter; returns its exit status."""
    cmd = [sys.executable, '-c', TRAIN, config, '--work-dir', work_dir]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    env = dict(os.environ, PYTHONUNBUFFERED='1')  # progress as it happens, not in blocks
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors='replace') as proc:
        console = ConsoleFilter()
        for line in proc.stdout:
            if console.shows(line):
                sys.stdout.write(line)
                sys.stdout.flush()
    return proc.returncode


def final_metrics(work_dir):
    """The last validation metrics training logged in work_dir (mmengine's scalars.json
    of the newest run)."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise SystemExit(f'no training log under {work_dir}: did training run?')
    metrics = {}
    with open(runs[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'lr' not in record and 'loss' not in record:  # a validation record
                metrics = record
    if not metrics:
        raise SystemExit(f'{runs[-1]} holds no validation metrics: the run did not evaluate')
    return metrics


def spaced(paths, count):
    """count paths spread over the sorted list (all classes of the class folders)."""
    paths = sorted(paths)
    if len(paths) <= count:
        return paths
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def main(argv=None, configs_dir='configs/quickstart'):
    args = parse_args(argv)
    config = osp.join(configs_dir, QUICKSTARTS[args.quickstart])
    cfg = load_config(config, options_dict(args.cfg_options))
    floor = cfg.quickstart_floor
    work_dir = args.work_dir or osp.join('work_dirs', f'quickstart_{args.quickstart}')
    start = time.time()

    print(f'[1/4] shapes dataset ({osp.abspath(cfg.quickstart_data)})', flush=True)
    try:
        make_shapes_dataset(cfg.quickstart_data)
    except FileExistsError as err:
        raise SystemExit(str(err)) from None

    print(f'[2/4] training {osp.relpath(config)} -> {work_dir}', flush=True)
    if train(config, work_dir, args.cfg_options) != 0:
        raise SystemExit(f'training failed; the log is in {work_dir}')
    train_minutes = (time.time() - start) / 60

    print('[3/4] held-out result', flush=True)
    value = final_metrics(work_dir)[floor.metric]
    print(f'  {floor.metric} = {value:.4g} on the held-out images (floor {floor.value}); '
          f'{train_minutes:.1f} min so far', flush=True)

    pictures = osp.join(work_dir, 'pictures')
    print(f'[4/4] pictures -> {pictures}', flush=True)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    data_root = cfg.val_dataloader.dataset.data_root
    images = spaced(glob.glob(osp.join(data_root, PICTURE_GLOBS[args.quickstart])),
                    args.pictures)
    predict = build_predictor(cfg, checkpoint)
    for image in images:
        out = osp.join(pictures, osp.splitext(osp.basename(image))[0] + '.png')
        print(f'  {out}', flush=True)
        for line in predict(image, out):
            print(f'    {line}', flush=True)

    minutes = (time.time() - start) / 60
    with open(osp.join(work_dir, 'quickstart_result.json'), 'w') as f:
        json.dump(dict(quickstart=args.quickstart, config=config, metric=floor.metric,
                       value=value, floor=floor.value, minutes=minutes,
                       checkpoint=checkpoint), f)
    if value < floor.value:
        print(f'FAILED: {floor.metric} {value:.4g} is below the floor {floor.value}')
        return 1
    print(f'OK: {floor.metric} {value:.4g} >= {floor.value} ({minutes:.1f} min in all)')
    return 0
