"""The command lines of ``tools/train.py`` and ``tools/test.py``.

One pair of tools serves mmdet, mmseg and mmpretrain configs: the task is the config's
``default_scope``. They do what the task library's own tools do with their arguments;
everything else (CPU adaptation, strict loading, crash-safe checkpoints, exact resume,
the NaN stop) comes from the config's runner and hooks (:mod:`mmrala.mm.runtime`), so
the stock tools give the same results.
"""
from __future__ import annotations

import argparse
import importlib
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, DefaultScope
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

# default_scope -> task name used in messages.
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation', 'mmpretrain': 'classification'}


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def task_scope(cfg: Config) -> str:
    """The OpenMMLab library of a config: 'mmdet', 'mmseg' or 'mmpretrain'."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise SystemExit(
            f'the config has default_scope={scope!r}; these tools serve '
            f'{", ".join(TASKS)} configs (set default_scope in the config).')
    return scope


def build_model(cfg: Config):
    """The config's model, built through its task's registry as the runner builds it
    (with the config's top-level data_preprocessor where the model names none)."""
    scope = task_scope(cfg)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model_cfg = cfg.model.copy()
        if cfg.get('data_preprocessor') is not None:
            model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
        return registry.build(model_cfg)


def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file, e.g. configs/maskrcnn_ravlt_s_coco.py')
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument('--work-dir', help='where logs, checkpoints and metrics go '
                        '(default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help=f'override config entries, key=value (e.g. {example}); lists as key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _parse(parser, argv):
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _prepare(args) -> tuple[Config, str]:
    """The config with the arguments every tool shares applied, and its task scope."""
    cfg = load_config(args.config, args.cfg_options)
    scope = task_scope(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if scope == 'mmpretrain':
        # What mmpretrain's own tools add to its configs' dataloaders.
        import torch
        for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            loader = cfg.get(field)
            if loader:
                loader.setdefault('pin_memory', torch.cuda.is_available())
                loader.setdefault('persistent_workers', True)
                loader.setdefault('collate_fn', dict(type='default_collate'))
    return cfg, scope


def build_runner(cfg: Config) -> Runner:
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


# ---------------------------------------------------------------------------------------
# tools/train.py
# ---------------------------------------------------------------------------------------

def train_main(argv=None):
    parser = _parser('Train a RAVLT detector, segmentor or classifier (the task comes '
                     'from the config).')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (GPU only; fp32 on CPU)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume training: from CKPT if given, else from the newest intact checkpoint '
        'in the work dir. Weights, optimizer, schedulers, iteration counter and the '
        'random-number states are restored.')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rate linearly from the authors' batch "
                        '(auto_scale_lr.base_batch_size) to this run\'s batch')
    _add_run_arguments(parser, 'model.backbone.init_cfg.checkpoint=PATH '
                       'train_dataloader.batch_size=4')
    args = _parse(parser, argv)
    cfg, scope = _prepare(args)

    if args.amp and cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume

    runner = build_runner(cfg)
    runner.logger.info(f'task: {TASKS[scope]} ({scope})')
    runner.train()


# ---------------------------------------------------------------------------------------
# tools/test.py
# ---------------------------------------------------------------------------------------

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


def test_main(argv=None):
    parser = _parser('Test (and evaluate) a RAVLT detector, segmentor or classifier.')
    parser.add_argument('checkpoint', help='checkpoint file (mmrala / mmengine format, or an '
                        "authors' file, converted on the fly)")
    parser.add_argument(
        '--out', help='save the predictions: a .pkl file for detection and '
        'classification, a directory of PNG label maps for segmentation')
    parser.add_argument('--show-dir', help='draw the predictions on the images and save '
                        'them here (under the run directory for detection)')
    _add_run_arguments(parser, 'test_dataloader.dataset.data_root=data/coco/')
    args = _parse(parser, argv)
    cfg, scope = _prepare(args)
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

    runner = build_runner(cfg)
    runner.logger.info(f'task: {TASKS[scope]} ({scope})')
    if args.out and scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    elif args.out and scope == 'mmpretrain':
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))

    metrics = runner.test()
    runner.logger.info(f'metrics: {metrics}')
    return metrics
