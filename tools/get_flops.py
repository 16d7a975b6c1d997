"""Parameters and FLOPs of a RAVLT model, backbone and whole model, beside the paper's.

    python tools/get_flops.py configs/maskrcnn_ravlt_s_coco.py
    python tools/get_flops.py configs/ravlt_s_in1k.py --shape 224
    python tools/get_flops.py configs/fpn_ravlt_s_ade20k.py --shape 512 2048

FLOPs are multiply-accumulates (G = 1e9) counted by mmengine.analysis on one image of
--shape (default: the shape of the paper's FLOPs for this config, from the config's
paper_results). Detectors run their test-time forward: RPN, then the RoI heads on its
proposals, mask heads on at most 100 of them (mmdet 2.x's convention, which the paper
used; mmdet 3.x's cascade runs its mask heads on all); segmentors run their decode head,
classifiers their head.

Two counts are printed:
- "all": convolutions, linear layers, norms and every matrix product, attention included
  (fvcore's convention; scaled_dot_product_attention counts Q K^T and A V);
- "no attn": without the matrix products (einsum, matmul, bmm, attention), which is what
  mmcv's FLOPs counter sees and what the authors' detection and segmentation figures
  count; they agree with it (e.g. Mask R-CNN at 1280x800, Semantic FPN at 2048x512).
The authors' ImageNet figures (fvcore) agree with "all" read in units of 2^30, which
is printed too. Element-wise ops, softmax, RoIAlign and NMS are not counted.
"""
from __future__ import annotations

import argparse
from functools import partial

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import DictAction
from mmengine.model import revert_sync_batchnorm

from mmrala.mm.cli import TASKS, build_model, load_config, task_scope

# Operators of matrix products (attention); mmcv's counter does not see them.
MATRIX_PRODUCT_OPS = ('einsum', 'matmul', 'bmm', 'mm', 'scaled_dot_product_attention')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a RAVLT model '
                                     "beside the paper's figures")
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input height and width (one number: square); default: the '
                        "shape of the paper's FLOPs for this config")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def sdpa_flop_jit(inputs, outputs):
    """scaled_dot_product_attention: Q K^T and A V, B*heads*Lq*Lk*(d + dv) MACs."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def cascade_forward_paper_convention(self, x, rpn_results_list, batch_data_samples):
    """CascadeRoIHead.forward as mmdet 2.x's forward_dummy, which the paper's figures
    count: every bbox stage on all proposals, every mask stage on the first 100 (mmdet
    3.x runs the cascade's mask heads on all proposals; its StandardRoIHead on 100)."""
    from mmdet.structures.bbox import bbox2roi
    rois = bbox2roi([result.bboxes for result in rpn_results_list])
    results = ()
    for stage in range(self.num_stages):
        bbox_results = self._bbox_forward(stage, x, rois)
        results += (bbox_results['cls_score'], bbox_results['bbox_pred'])
    if self.with_mask:
        for stage in range(self.num_stages):
            results += (self._mask_forward(stage, x, rois[:100])['mask_preds'], )
    return results


def count_proposals(roi_head, counter: list):
    """Wrap roi_head.forward to record how many proposals the RoI heads ran on."""
    forward = roi_head.forward

    def wrapped(x, rpn_results_list, batch_data_samples):
        counter.append(sum(len(result.bboxes) for result in rpn_results_list))
        return forward(x, rpn_results_list, batch_data_samples)

    roi_head.forward = wrapped


def model_inputs(model, scope, height, width):
    """Bind one dummy image to the model's tensor-mode forward; returns the input."""
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        divisor = getattr(model.data_preprocessor, 'pad_size_divisor', 32) or 1
        pad_h = -(-height // divisor) * divisor
        pad_w = -(-width // divisor) * divisor
        sample = DetDataSample(metainfo=dict(
            img_id=0, img_shape=(height, width), ori_shape=(height, width),
            pad_shape=(pad_h, pad_w), batch_input_shape=(pad_h, pad_w),
            scale_factor=(1.0, 1.0)))
        model.forward = partial(model.forward, data_samples=[sample], mode='tensor')
        return torch.rand(1, 3, pad_h, pad_w)
    model.forward = partial(model.forward, data_samples=None, mode='tensor')
    return torch.rand(1, 3, height, width)


def fmt(value, unit_scale, unit):
    return '-' if value is None else f'{value / unit_scale:.2f} {unit}'


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    paper = dict(cfg.get('paper_results', {}))
    if args.shape:
        height, width = (args.shape * 2)[:2]
    elif 'flops_input_shape' in paper:
        height, width = paper['flops_input_shape']
    else:
        raise SystemExit('give --shape H W (the config has no paper_results.flops_input_shape)')

    model = revert_sync_batchnorm(build_model(cfg)).eval()
    params_total = sum(p.numel() for p in model.parameters())
    params_backbone = sum(p.numel() for p in model.backbone.parameters())

    inputs = model_inputs(model, scope, height, width)
    proposals = []
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is not None:
        if type(roi_head).__name__ == 'CascadeRoIHead':
            roi_head.forward = partial(cascade_forward_paper_convention, roi_head)
        count_proposals(roi_head, proposals)
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad():
        flops_total = analyzer.total()
        by_module_op = analyzer.by_module_and_operator()
    flops_backbone = sum(by_module_op.get('backbone', {}).values())

    def without_products(ops):
        return sum(v for k, v in ops.items() if k not in MATRIX_PRODUCT_OPS)

    no_attn_total = without_products(by_module_op[''])
    no_attn_backbone = without_products(by_module_op.get('backbone', {}))

    paper_params = paper.get('params_M')
    paper_flops = paper.get('flops_G')
    rows = [('backbone', params_backbone, flops_backbone, no_attn_backbone),
            ('whole model', params_total, flops_total, no_attn_total),
            ('paper (whole model)', None if paper_params is None else paper_params * 1e6,
             None if paper_flops is None else paper_flops * 1e9, None)]
    lines = [f'config: {args.config} ({TASKS[scope]})',
             f'input: 1 x 3 x {height} x {width}',
             f'{"":22s}{"params":>12s}{"FLOPs all":>14s}{"FLOPs no attn":>16s}']
    for name, params, flops, no_attn in rows:
        lines.append(f'{name:22s}{fmt(params, 1e6, "M"):>12s}{fmt(flops, 1e9, "G"):>14s}'
                     f'{fmt(no_attn, 1e9, "G"):>16s}')
    lines.append(f'whole model, all, in units of 2^30: {flops_total / 2**30:.2f}')
    if proposals:
        lines.append(f'RoI heads ran on {proposals[0]} RPN proposals (mask heads on at most '
                     '100 of them)')
    metrics = {k: v for k, v in paper.items()
               if k not in ('params_M', 'flops_G', 'flops_input_shape')}
    if metrics:
        lines.append('paper results: ' + ', '.join(f'{k} {v}' for k, v in metrics.items()))
    print('\n'.join(lines))
    return dict(params=params_total, params_backbone=params_backbone, flops=flops_total,
                flops_backbone=flops_backbone, flops_no_attn=no_attn_total,
                flops_backbone_no_attn=no_attn_backbone)


if __name__ == '__main__':
    main()
