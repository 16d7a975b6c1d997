"""The quick-start demo: RAVLT-T trained and evaluated end to end on the embedded shapes
dataset, on a laptop-class CPU, with pictures of its predictions on held-out images.

    python tools/run_demo.py                 # Mask R-CNN (make demo, the README's first command)
    python tools/run_demo.py fpn             # Semantic FPN segmentation
    python tools/run_demo.py cls             # image classification

Each demo
1. generates data/shapes/ with tools/make_shapes_dataset.py (once, seconds);
2. trains its config in configs/demo/ with tools/train.py (about 10 minutes on 2 CPU
   cores; a GPU is used when there is one), evaluating on the held-out images;
3. prints the metric beside the floor the config promises (``demo_floor``) and exits
   with status 1 when the metric is below it;
4. draws the predictions on a few held-out images with tools/demo.py (mmdet's, mmseg's
   or mmpretrain's visualiser) into WORK_DIR/pictures/.

Paths are relative to the current directory (data/shapes/, work_dirs/demo_<name>/).
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import subprocess
import sys
import time

TOOLS = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(TOOLS)
sys.path.insert(0, TOOLS)

DEMOS = {
    'maskrcnn': 'maskrcnn_ravlt_t_shapes.py',
    'fpn': 'fpn_ravlt_t_shapes.py',
    'cls': 'ravlt_t_shapes_cls.py',
}
# held-out images drawn by each demo (relative to the config's data root)
PICTURE_GLOBS = {
    'maskrcnn': 'val/*.jpg',
    'fpn': 'images/validation/*.jpg',
    'cls': 'val/*/*.JPEG',
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('demo', nargs='?', default='maskrcnn', choices=sorted(DEMOS),
                   help='which demo (default: maskrcnn)')
    p.add_argument('--work-dir', help='default: work_dirs/demo_<demo>')
    p.add_argument('--pictures', type=int, default=4,
                   help='how many held-out images to draw')
    return p.parse_args(argv)


def final_metrics(work_dir):
    """The last validation metrics tools/train.py logged in work_dir (mmengine's
    scalars.json of the newest run)."""
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


def main(argv=None):
    args = parse_args(argv)
    from make_shapes_dataset import make_shapes_dataset
    from mmengine.config import Config

    config = osp.join(REPO, 'configs', 'demo', DEMOS[args.demo])
    cfg = Config.fromfile(config)
    floor = cfg.demo_floor
    work_dir = args.work_dir or osp.join('work_dirs', f'demo_{args.demo}')
    start = time.time()

    print(f'[1/4] shapes dataset ({osp.abspath(cfg.demo_data)})', flush=True)
    make_shapes_dataset(cfg.demo_data, **cfg.get('demo_data_args', {}))

    print(f'[2/4] training {osp.relpath(config)} -> {work_dir}', flush=True)
    cmd = [sys.executable, osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir]
    if subprocess.call(cmd) != 0:
        raise SystemExit(f'training failed; the log is in {work_dir}')
    train_minutes = (time.time() - start) / 60

    print('[3/4] held-out result', flush=True)
    metrics = final_metrics(work_dir)
    value = metrics[floor.metric]
    ok = value >= floor.value
    print(f'  {floor.metric} = {value:.4g} on the held-out images (floor {floor.value}); '
          f'{train_minutes:.1f} min so far', flush=True)

    print(f'[4/4] pictures -> {osp.join(work_dir, "pictures")}', flush=True)
    import demo
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    data_root = cfg.val_dataloader.dataset.data_root
    images = spaced(glob.glob(osp.join(data_root, PICTURE_GLOBS[args.demo])), args.pictures)
    for image in images:
        name = osp.splitext(osp.basename(image))[0]
        demo.main([image, config, checkpoint,
                   '--out', osp.join(work_dir, 'pictures', f'{name}.png')])

    with open(osp.join(work_dir, 'demo_result.json'), 'w') as f:
        json.dump(dict(demo=args.demo, metric=floor.metric, value=value, floor=floor.value,
                       minutes=(time.time() - start) / 60, checkpoint=checkpoint), f)
    minutes = (time.time() - start) / 60
    if not ok:
        print(f'FAILED: {floor.metric} {value:.4g} is below the floor {floor.value}')
        return 1
    print(f'OK: {floor.metric} {value:.4g} >= {floor.value} ({minutes:.1f} min in all)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
