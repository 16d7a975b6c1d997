"""Run a trained RAVLT model on one image and draw the result with the task library's own
visualiser: boxes and masks (mmdet's DetLocalVisualizer), a segmentation map (mmseg's
SegLocalVisualizer) or the predicted class (mmpretrain's UniversalVisualizer). The task
comes from the config's default_scope.

    python tools/demo.py data/shapes/ade/images/validation/shapes_val_000001.jpg \
        configs/demo/fpn_ravlt_t_shapes.py work_dirs/demo_fpn/iter_700.pth \
        --out result.png
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmengine.config import DictAction  # noqa: E402
from runtime_utils import TASKS, adapt_to_machine, load_config, task_scope  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Draw the prediction of a RAVLT detector, '
                                'segmentor or classifier on one image.')
    p.add_argument('image', help='input image file')
    p.add_argument('config', help='config file, e.g. configs/demo/maskrcnn_ravlt_t_shapes.py')
    p.add_argument('checkpoint', help='checkpoint file (e.g. from tools/train.py)')
    p.add_argument('--out', default='result.png', help='where the picture goes')
    p.add_argument('--device', default=None, help="'cpu', 'cuda:0', ... (default: cuda "
                   'if available, else cpu)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detection: draw only instances scoring at least this')
    p.add_argument('--opacity', type=float, default=0.5, help='segmentation map opacity')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, key=value')
    return p.parse_args(argv)


def _read_rgb(path):
    import mmcv
    return mmcv.imread(path, channel_order='rgb')


def run_detection(cfg, args, device):
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    model = init_detector(cfg, args.checkpoint, device=device)
    result = inference_detector(model, args.image)
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='mmrala_demo'))
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample('result', _read_rgb(args.image), data_sample=result, draw_gt=False,
                       show=False, pred_score_thr=args.score_thr, out_file=args.out)
    inst = result.pred_instances
    keep = inst.scores >= args.score_thr
    classes = model.dataset_meta['classes']
    return [f'{classes[int(lbl)]} {float(s):.2f} box '
            f'{[round(float(v), 1) for v in b]}'
            for lbl, s, b in zip(inst.labels[keep], inst.scores[keep], inst.bboxes[keep])]


def run_segmentation(cfg, args, device):
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS
    model = init_model(cfg, args.checkpoint, device=device)
    result = inference_model(model, args.image)
    vis = VISUALIZERS.build(dict(type='SegLocalVisualizer', name='mmrala_demo',
                                 alpha=args.opacity))
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample('result', _read_rgb(args.image), data_sample=result, draw_gt=False,
                       show=False, out_file=args.out)
    seg = result.pred_sem_seg.data.cpu().numpy()[0]
    classes = model.dataset_meta['classes']
    ids, counts = np.unique(seg, return_counts=True)
    return [f'{classes[i]}: {100 * c / seg.size:.1f}% of the pixels' for i, c in zip(ids, counts)]


def run_classification(cfg, args, device):
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.visualization import UniversalVisualizer
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=args.checkpoint,
                                               device=device)
    sample = inferencer(args.image, return_datasamples=True)[0]  # a list of DataSamples
    classes = getattr(inferencer, 'classes', None)  # read from the checkpoint's meta
    vis = UniversalVisualizer()
    vis.visualize_cls(_read_rgb(args.image), sample, classes=classes, resize=224,
                      show=False, out_file=args.out)
    label = int(sample.pred_label[0])
    name = classes[label] if classes else str(label)
    return [f'{name} (score {float(sample.pred_score[label]):.2f})']


RUNNERS = {'mmdet': run_detection, 'mmseg': run_segmentation,
           'mmpretrain': run_classification}


def main(argv=None):
    args = parse_args(argv)
    for path, what in ((args.image, 'image'), (args.config, 'config'),
                       (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} not found: {path}')
    import torch
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    if device == 'cpu':
        adapt_to_machine(cfg, 'none')  # SyncBN -> BN: torch's SyncBN is GPU only
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    lines = RUNNERS[scope](cfg, args, device)
    print(f'{TASKS[scope]}: {args.image}')
    for line in lines:
        print('  ' + line)
    print(f'drawn to {args.out}')


if __name__ == '__main__':
    main()
