"""Train a RAVLT model with OpenMMLab's Runner: detection (mmdet), semantic segmentation
(mmseg) or ImageNet classification (mmpretrain); the config's default_scope decides.

    python tools/train.py configs/maskrcnn_ravlt_s_coco.py
    bash tools/dist_train.sh configs/maskrcnn_ravlt_s_coco.py 8 [--amp]

Runs on GPUs and on CPU-only machines (gloo, plain BN; see tools/runtime_utils.py).
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
    RNGStateHook,
    adapt_to_machine,
    apply_dataloader_defaults,
    init_cpu_distributed,
    load_config,
    set_work_dir,
    task_scope,
)

from mmrala.mm import FiniteLossHook  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a RAVLT detector, segmentor or '
                                     'classifier (the task comes from the config).')
    parser.add_argument('config', help='config file, e.g. configs/maskrcnn_ravlt_s_coco.py')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (GPU only; ignored on CPU)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume training: from CKPT if given, else from the latest checkpoint in '
        'the work dir. Weights, optimizer, schedulers, iteration counter and the '
        'random-number states are restored.')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rate linearly from the authors' batch "
                        '(auto_scale_lr.base_batch_size) to this run\'s batch')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, key=value (e.g. model.backbone.init_cfg.checkpoint'
        '=PATH train_dataloader.batch_size=4); lists as key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)

    notes = [f'task: {TASKS[scope]} ({scope})']
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            notes.append('--amp ignored: mixed precision needs a GPU; training in fp32')
        elif cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            notes.append('--amp: the config already uses AmpOptimWrapper')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
            notes.append('--amp: AmpOptimWrapper with dynamic loss scaling')

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    apply_dataloader_defaults(cfg, scope)
    notes += adapt_to_machine(cfg, args.launcher)
    init_cpu_distributed(cfg, args.launcher)

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.register_hook(RNGStateHook())
    if not any(isinstance(h, FiniteLossHook) for h in runner.hooks):
        runner.register_hook(FiniteLossHook())
    for note in notes:
        runner.logger.info(note)
    runner.train()


if __name__ == '__main__':
    main()
