"""Set-up shared by tools/train.py, tools/test.py and tools/get_flops.py.

One set of tools serves mmdet, mmseg and mmpretrain configs: the task is the config's
``default_scope``. Everything else is mmengine's own Runner. This module only adds what
the stock OpenMMLab tools lack for a CPU-only machine (gloo, plain BN, DDP without device
ids) and an exact ``--resume`` (random-number-generator state in the checkpoints).
"""
from __future__ import annotations

import os
import os.path as osp
import random
import subprocess
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook

# default_scope -> task name used in messages.
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation', 'mmpretrain': 'classification'}
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN', 'nn.SyncBatchNorm', 'SyncBatchNorm')


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


def set_work_dir(cfg: Config, work_dir: str | None, config_path: str) -> None:
    """--work-dir, else the config's work_dir, else ./work_dirs/CONFIG_NAME."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def apply_dataloader_defaults(cfg: Config, scope: str) -> None:
    """What the task's own tools add to the dataloaders of its configs.

    mmpretrain's tools batch with default_collate and pin memory; every task: no
    persistent workers when there are none (torch refuses that combination).
    """
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field)
        if not loader:
            continue
        if scope == 'mmpretrain':
            defaults = dict(pin_memory=torch.cuda.is_available(), persistent_workers=True,
                            collate_fn=dict(type='default_collate'))
            for key, value in defaults.items():
                loader.setdefault(key, value)
        if loader.get('num_workers', 0) == 0:
            loader['persistent_workers'] = False


def _replace_sync_bn(node, seen: set) -> int:
    if id(node) in seen:
        return 0
    seen.add(id(node))
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value, seen)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value, seen)
    return count


def adapt_to_machine(cfg: Config, launcher: str) -> list[str]:
    """Make a GPU recipe run on a machine without CUDA; returns what was changed.

    With CUDA nothing changes. Without it: the gloo backend instead of nccl; plain BN
    instead of SyncBN (torch's SyncBatchNorm only runs on GPUs; mmengine reverts it
    itself in a single process, but not under a launcher, so each process now keeps
    its own BN statistics); and, under a launcher, DDP without device ids.
    """
    if torch.cuda.is_available():
        return []
    notes = []
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if launcher != 'none' and dist_cfg.get('backend', 'nccl') != 'gloo':
        notes.append(f"no CUDA device: distributed backend {dist_cfg.get('backend', 'nccl')!r}"
                     " -> 'gloo'")
        dist_cfg['backend'] = 'gloo'
    n_sync_bn = _replace_sync_bn(cfg.model, set())
    if n_sync_bn:
        notes.append(f'no CUDA device: {n_sync_bn} SyncBN norm_cfg(s) in the model set to BN '
                     '(SyncBN runs on GPUs only; every process keeps its own BN statistics)')
    if launcher != 'none':
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None  # DDP of a CPU module takes no device ids
        cfg.model_wrapper_cfg = wrapper
        notes.append('no CUDA device: DistributedDataParallel on CPU (device_ids=None)')
    return notes


def init_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start torch.distributed with gloo when there is no GPU.

    mmengine's init_dist always calls torch.cuda.set_device, which fails on a CPU-only
    machine; starting the process group here first makes the Runner skip it.
    """
    if launcher == 'none' or torch.cuda.is_available() or torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        # The environment mmengine derives from SLURM's (see mmengine.dist.utils).
        proc_id = int(os.environ['SLURM_PROCID'])
        ntasks = int(os.environ['SLURM_NTASKS'])
        tasks_per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', ntasks).split('(')[0])
        node_list = os.environ['SLURM_NODELIST']
        addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ.setdefault('MASTER_ADDR', addr)
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['LOCAL_RANK'] = str(proc_id % tasks_per_node)
        os.environ['RANK'] = str(proc_id)
    elif launcher != 'pytorch':
        raise SystemExit(f'--launcher {launcher} needs CUDA; use pytorch or slurm on CPU.')
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout', 1800)
    torch_dist.init_process_group(backend='gloo', timeout=timedelta(seconds=timeout))


class RNGStateHook(Hook):
    """Saves the random-number generators of every process in each checkpoint and
    restores them on --resume, so that a resumed run draws the same drop-path masks,
    proposal samples and main-process augmentations as an uninterrupted one.

    Data workers (num_workers > 0) are seeded by mmengine from the config's seed, and an
    iteration-based loop replays its sampler on resume, so with a fixed
    ``randomness.seed`` the resumed run is the uninterrupted run.

    Only rank 0 writes checkpoints, so the states of all ranks are gathered just before
    the CheckpointHook saves (this hook runs right before it, at priority LOW).
    """

    priority = 'LOW'
    key = 'rng_states'

    def __init__(self):
        self._gathered = None  # (step, states) gathered for the checkpoint of `step`

    @staticmethod
    def _capture() -> dict:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = dict(
            python=random.getstate(),
            # As plain Python values: loadable by torch.load(weights_only=True).
            numpy=(name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
            torch=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _step(runner):
        return runner.epoch, runner.iter

    def _checkpoint_hook(self, runner):
        for hook in runner.hooks:
            if type(hook).__name__ == 'CheckpointHook':
                return hook
        return None

    def _gather(self, runner):
        if get_dist_info()[1] > 1:
            self._gathered = (self._step(runner), all_gather_object(self._capture()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        hook = self._checkpoint_hook(runner)
        if hook is not None and not hook.by_epoch and (
                hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_iter(runner))):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        hook = self._checkpoint_hook(runner)
        if hook is not None and hook.by_epoch and (
                hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_epoch(runner))):
            self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_dist_info()[1] == 1:
            checkpoint[self.key] = [self._capture()]
        elif self._gathered is not None and self._gathered[0] == self._step(runner):
            checkpoint[self.key] = self._gathered[1]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(self.key)
        if not getattr(runner, '_resume', False) or not states:
            return
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            runner.logger.warning(
                f'checkpoint holds random states of {len(states)} processes, this run has '
                f'{world_size}: random states are not restored.')
            return
        state = states[rank]
        random.setstate(state['python'])
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
        runner.logger.info('restored the random-number generator states of the checkpoint')
