"""Single-image inference (``tools/infer.py``): a trained RAVLT model on one image, drawn
with the task library's own visualiser: boxes and masks (mmdet's DetLocalVisualizer), a
segmentation map (mmseg's SegLocalVisualizer) or the predicted class (mmpretrain's
UniversalVisualizer). The task comes from the config's ``default_scope``.

The task libraries' own entry points (``init_detector``, ``init_model``, the
classification inferencer's ``pretrained=``) load checkpoints leniently: a checkpoint of
another model would give silent random weights. Here the model is built without weights
and the checkpoint loaded strictly (:func:`load_strictly`).
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction

from ..checkpoint import load_checkpoint_file
from .cli import TASKS, load_config, task_scope
from .runtime import adapt_to_machine, load_model_weights


def load_strictly(model, path):
    """Load the checkpoint at path into model, every weight present and of the right
    shape, and set model.dataset_meta from the checkpoint's meta (its classes)."""
    checkpoint = load_checkpoint_file(path)
    load_model_weights(model, checkpoint, path)
    dataset_meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    if dataset_meta:
        model.dataset_meta = dataset_meta
    return model


def _read_rgb(path):
    import mmcv
    return mmcv.imread(path, channel_order='rgb')


def _detector(cfg, checkpoint, device, score_thr, opacity):
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    with warnings.catch_warnings():
        # built without weights on purpose; load_strictly sets the checkpoint's classes
        warnings.filterwarnings('ignore', 'checkpoint is None, use COCO classes')
        model = init_detector(cfg, None, device=device)
    load_strictly(model, checkpoint)
    classes = model.dataset_meta['classes']
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='mmrala_infer'))
    vis.dataset_meta = model.dataset_meta

    def predict(image, out):
        result = inference_detector(model, image)
        vis.add_datasample('result', _read_rgb(image), data_sample=result, draw_gt=False,
                           show=False, pred_score_thr=score_thr, out_file=out)
        inst = result.pred_instances
        keep = inst.scores >= score_thr
        return [f'{classes[int(label)]} {float(score):.2f} box '
                f'{[round(float(v), 1) for v in box]}'
                for label, score, box in zip(inst.labels[keep], inst.scores[keep],
                                             inst.bboxes[keep])]
    return predict


def _segmentor(cfg, checkpoint, device, score_thr, opacity):
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS
    model = load_strictly(init_model(cfg, None, device=device), checkpoint)
    classes = model.dataset_meta['classes']
    vis = VISUALIZERS.build(dict(type='SegLocalVisualizer', name='mmrala_infer',
                                 alpha=opacity))
    vis.dataset_meta = model.dataset_meta

    def predict(image, out):
        result = inference_model(model, image)
        vis.add_datasample('result', _read_rgb(image), data_sample=result, draw_gt=False,
                           show=False, out_file=out)
        seg = result.pred_sem_seg.data.cpu().numpy()[0]
        ids, counts = np.unique(seg, return_counts=True)
        return [f'{classes[i]}: {100 * c / seg.size:.1f}% of the pixels'
                for i, c in zip(ids, counts)]
    return predict


def _classifier(cfg, checkpoint, device, score_thr, opacity):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    from mmpretrain.visualization import UniversalVisualizer
    model = load_strictly(get_model(cfg, pretrained=False, device=device), checkpoint)
    # the classes saved in the checkpoint, else those of the config's dataset class
    classes = (getattr(model, 'dataset_meta', None) or model._dataset_meta).get('classes')
    inferencer = ImageClassificationInferencer(model, pretrained=False, classes=classes,
                                               device=device)
    vis = UniversalVisualizer()

    def predict(image, out):
        sample = inferencer(image, return_datasamples=True)[0]  # a list of DataSamples
        vis.visualize_cls(_read_rgb(image), sample, classes=classes, resize=224,
                          show=False, out_file=out)
        label = int(sample.pred_label[0])
        name = classes[label] if classes else str(label)
        return [f'{name} (score {float(sample.pred_score[label]):.2f})']
    return predict


TASK_PREDICTORS = {'mmdet': _detector, 'mmseg': _segmentor, 'mmpretrain': _classifier}


def build_predictor(cfg: Config, checkpoint, device=None, score_thr=0.3, opacity=0.5):
    """The model of cfg with the checkpoint's weights, as a function predict(image, out)
    that draws its prediction on image to out and returns it in words: a line per
    instance scoring at least score_thr (detection), per class (segmentation, drawn at
    opacity) or the top class (classification). device: default cuda:0 if available,
    else cpu."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    import torch
    device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    cfg = copy.deepcopy(cfg)  # the task libraries' init functions edit it
    scope = task_scope(cfg)
    if device == 'cpu':
        adapt_to_machine(cfg)  # SyncBN -> BN: torch's SyncBN is GPU only
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    task_predict = TASK_PREDICTORS[scope](cfg, checkpoint, device, score_thr, opacity)

    def predict(image, out='result.png') -> list[str]:
        if not osp.isfile(image):
            raise FileNotFoundError(f'image not found: {image}')
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        return task_predict(image, out)
    return predict


def infer(image, cfg: Config, checkpoint, out='result.png', device=None, score_thr=0.3,
          opacity=0.5) -> list[str]:
    """Predict on one image with the model of cfg and checkpoint and draw the prediction
    to out (:func:`build_predictor`)."""
    if not osp.isfile(image):
        raise FileNotFoundError(f'image not found: {image}')
    return build_predictor(cfg, checkpoint, device, score_thr, opacity)(image, out)


def infer_main(argv=None):
    p = argparse.ArgumentParser(description='Draw the prediction of a RAVLT detector, '
                                'segmentor or classifier on one image.')
    p.add_argument('image', help='input image file')
    p.add_argument('config', help='config file, e.g. '
                   'configs/quickstart/maskrcnn_ravlt_t_shapes.py')
    p.add_argument('checkpoint', help='checkpoint file (e.g. from tools/train.py)')
    p.add_argument('--out', default='result.png', help='where the picture goes')
    p.add_argument('--device', default=None, help="'cpu', 'cuda:0', ... (default: cuda "
                   'if available, else cpu)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detection: draw only instances scoring at least this')
    p.add_argument('--opacity', type=float, default=0.5, help='segmentation map opacity')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, key=value')
    args = p.parse_args(argv)
    if not osp.isfile(args.config):
        raise SystemExit(f'config not found: {args.config}')
    cfg = load_config(args.config, args.cfg_options)
    try:
        lines = infer(args.image, cfg, args.checkpoint, args.out, args.device,
                      args.score_thr, args.opacity)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    print(f'{TASKS[task_scope(cfg)]}: {args.image}')
    for line in lines:
        print('  ' + line)
    print(f'drawn to {args.out}')
