"""Evaluate a checkpoint with OpenMMLab's Runner: COCO box / mask mAP (mmdet), mIoU
(mmseg) or top-1 / top-5 accuracy (mmpretrain); the config's default_scope decides.

    python tools/test.py configs/maskrcnn_ravlt_s_coco.py work_dirs/.../epoch_12.pth
    bash tools/dist_test.sh configs/maskrcnn_ravlt_s_coco.py CKPT 8 --out results.pkl

The metrics are logged and written to WORK_DIR/TIMESTAMP/TIMESTAMP.json.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from runtime_utils import (  # noqa: E402
    TASKS,
    adapt_to_machine,
    apply_dataloader_defaults,
    init_cpu_distributed,
    load_config,
    set_work_dir,
    task_scope,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a RAVLT detector, '
                                     'segmentor or classifier.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (mmrala / mmengine format)')
    parser.add_argument('--work-dir', help='where the metrics and logs go '
                        '(default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--out', help='save the predictions: a .pkl file for detection and '
        'classification, a directory of PNG label maps for segmentation')
    parser.add_argument('--show-dir', help='draw the predictions on the images and save '
                        'them here (under the run directory for detection)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, key=value (e.g. test_dataloader.dataset.data_root'
        '=data/coco/); lists as key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, scope: str, show_dir: str) -> None:
    """Turn on the task's visualization hook, saving the drawn predictions to show_dir."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise SystemExit('--show-dir needs a visualization hook in default_hooks')
    if scope == 'mmdet':  # DetVisualizationHook: saves to WORK_DIR/TIMESTAMP/show_dir
        hook['draw'] = True
        hook['test_out_dir'] = show_dir
    elif scope == 'mmseg':  # SegVisualizationHook: the visualizer saves to its save_dir
        hook['draw'] = True
        hook['interval'] = 1  # every image, not every 50th
        cfg.visualizer['save_dir'] = show_dir
    else:  # mmpretrain VisualizationHook
        hook['enable'] = True
        hook['interval'] = 1
        hook['out_dir'] = show_dir


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint
    cfg.resume = False

    if args.show_dir:
        enable_visualization(cfg, scope, args.show_dir)
    if args.out and scope == 'mmseg':
        # IoUMetric writes one PNG label map per image (ADE20K format) to output_dir.
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise SystemExit('--out must be a .pkl file for detection and classification')

    apply_dataloader_defaults(cfg, scope)
    notes = [f'task: {TASKS[scope]} ({scope})'] + adapt_to_machine(cfg, args.launcher)
    init_cpu_distributed(cfg, args.launcher)

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    for note in notes:
        runner.logger.info(note)

    if args.out and scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    elif args.out and scope == 'mmpretrain':
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))

    metrics = runner.test()
    runner.logger.info(f'metrics: {metrics}')
    return metrics


if __name__ == '__main__':
    main()
