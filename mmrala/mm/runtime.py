"""mmrala's run-time guarantees as mmengine components.

Every mmrala config declares them (``configs/_base_/mmrala_runtime.py``), so they hold
under OpenMMLab's stock ``tools/train.py`` and ``tools/test.py`` as much as under
mmrala's own:

* :class:`MMRalaRunner` (``runner_type='MMRalaRunner'``): runs GPU recipes on machines
  without CUDA (gloo, plain BN, DDP on CPU, fp32 instead of AMP), loads every checkpoint
  strictly (naming each bad key), resumes only from an intact checkpoint, names the file
  behind a dataset error, and names the rank that stopped answering in a distributed run;
* :class:`CrashSafeCheckpointHook`: write, fsync, rename, then point ``last_checkpoint``
  at it, and only then delete old checkpoints;
* :class:`MainProcessLoggerHook`: one writer of the test metrics file in distributed runs;
* :class:`RNGStateHook`: exact ``--resume`` of iteration-based runs;
* ``FiniteLossHook`` (in :mod:`.hooks`): stops at the first NaN/Inf loss.
"""
from __future__ import annotations

import copy
import fnmatch
import glob
import json
import os
import os.path as osp
import random
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook, Hook, LoggerHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from ..checkpoint import CheckpointError, load_checkpoint_file, model_state_dict_from_checkpoint

# Long enough for a rank-0-only checkpoint save or evaluation step on a slow disk, short
# enough that a frozen peer is reported within two minutes instead of gloo's 30.
DEFAULT_CPU_DIST_TIMEOUT_S = 120
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN', 'nn.SyncBatchNorm', 'SyncBatchNorm')
LAST_CHECKPOINT = 'last_checkpoint'
PARTIAL_SUFFIX = '.partial'


# ---------------------------------------------------------------------------------------
# Machine adaptation
# ---------------------------------------------------------------------------------------

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


def adapt_to_machine(cfg) -> list[str]:
    """Make a GPU recipe run on a machine without CUDA; returns what was changed.

    With CUDA nothing changes. Without it: the gloo backend instead of nccl; plain BN
    instead of SyncBN (torch's SyncBatchNorm runs on GPUs only, and mmengine reverts it
    by itself only in a single process, so each process now keeps its own statistics);
    fp32 instead of AMP; and, under a launcher, DDP without device ids.
    """
    if torch.cuda.is_available():
        return []
    notes = []
    launcher = cfg.get('launcher', 'none')
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
    optim_wrapper = cfg.get('optim_wrapper') or {}
    if optim_wrapper.get('type') == 'AmpOptimWrapper':
        optim_wrapper['type'] = 'OptimWrapper'
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_wrapper.pop(amp_only, None)
        notes.append('no CUDA device: mixed precision (AmpOptimWrapper) needs a GPU; '
                     'training in fp32')
    if launcher != 'none':
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None  # DDP of a CPU module takes no device ids
        cfg.model_wrapper_cfg = wrapper
        notes.append('no CUDA device: DistributedDataParallel on CPU (device_ids=None)')
    return notes


def cpu_dist_timeout(cfg) -> int:
    """Seconds a collective may wait on CPU/gloo: ``env_cfg.dist_cfg.timeout``, else
    :data:`DEFAULT_CPU_DIST_TIMEOUT_S`."""
    return int(cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout',
                                                             DEFAULT_CPU_DIST_TIMEOUT_S))


def init_cpu_distributed(cfg) -> None:
    """Start torch.distributed with gloo when there is no GPU.

    mmengine's init_dist always calls torch.cuda.set_device, which fails on a CPU-only
    machine; a process group started here first makes the Runner skip it.
    """
    launcher = cfg.get('launcher', 'none')
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
    torch_dist.init_process_group(backend='gloo',
                                  timeout=timedelta(seconds=cpu_dist_timeout(cfg)))


def _is_timeout(err: BaseException) -> bool:
    text = str(err).lower()
    return any(word in text for word in ('timed out', 'timeout', 'connection closed by peer',
                                         'connection reset by peer'))


class _Heartbeat:
    """Every rank stamps the time into the process group's key-value store every few
    seconds from a background thread. A rank that is killed, frozen or swapped out stops
    stamping, so when a collective times out the surviving ranks can name it (the
    collectives themselves only report that a pair connection timed out)."""

    INTERVAL_S = 5.0

    def __init__(self):
        self.rank, self.world_size = get_dist_info()
        self.store = torch_dist.distributed_c10d._get_default_store()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name='mmrala-heartbeat')

    @staticmethod
    def _key(rank: int) -> str:
        return f'mmrala/heartbeat/{rank}'

    def _beat(self):
        while not self._stop.is_set():
            try:
                self.store.set(self._key(self.rank), repr(time.time()))
            except RuntimeError:
                return  # the store is gone: the job is ending
            self._stop.wait(self.INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def silent_ranks(self) -> dict[int, float | None]:
        """Other ranks whose last stamp is older than three intervals: rank -> seconds
        since it (None: never stamped)."""
        silent, now = {}, time.time()
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            try:
                last = (float(self.store.get(self._key(rank)))
                        if self.store.check([self._key(rank)]) else None)
            except RuntimeError:
                last = None
            if last is None or now - last > 3 * self.INTERVAL_S:
                silent[rank] = None if last is None else now - last
        return silent


@contextmanager
def _name_unresponsive_peers(timeout_s):
    """Turn a collective's timeout into an error that says which rank stopped answering."""
    rank, world_size = get_dist_info()
    if world_size == 1 or not torch_dist.is_initialized():
        yield
        return
    with _Heartbeat() as heartbeat:
        try:
            yield
        except RuntimeError as err:
            if not _is_timeout(err):
                raise
            silent = heartbeat.silent_ranks()
            if silent:
                who = 'Silent: ' + ', '.join(
                    f'rank {r} (no sign of life for {age:.0f} s)' if age is not None
                    else f'rank {r} (never started)' for r, age in sorted(silent.items())) + '.'
            else:
                who = ('Every other rank is still alive, so the ranks are waiting in different '
                       'collectives (a code path that only some ranks take?).')
            raise RuntimeError(
                f'rank {rank} of {world_size}: a collective operation got no answer within '
                f'{timeout_s} s: a peer process stopped responding. {who} Look at that '
                "rank's log (killed, frozen, out of memory, stuck on I/O?). The wait is "
                'env_cfg.dist_cfg.timeout (seconds) in the config.') from err


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------

def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(partial: str, final: str) -> None:
    """Make ``partial`` durable, then give it its final name in one atomic step."""
    _fsync_path(partial)
    os.replace(partial, final)
    _fsync_path(osp.dirname(osp.abspath(final)))


def write_text_atomically(path: str, text: str) -> None:
    partial = path + PARTIAL_SUFFIX
    with open(partial, 'w') as f:
        f.write(text)
    commit_file(partial, path)


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook with an order of operations that survives a kill.

    mmengine deletes the oldest checkpoint first, then writes the new one in place and
    then ``last_checkpoint``: a kill during the write leaves a truncated file and a
    pointer to a deleted one. Here the checkpoint is written to a hidden ``.partial``
    file in the same folder, fsynced and renamed; ``last_checkpoint`` is replaced the
    same way after that; old checkpoints are deleted last. At every instant the folder
    holds an intact checkpoint to resume from. Other storage backends keep mmengine's
    behaviour.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            # what a save killed before its rename left behind
            for leftover in glob.glob(osp.join(self.out_dir, f'.*{PARTIAL_SUFFIX}')):
                os.remove(leftover)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        stale_steps = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale_steps.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        partial_name = f'.{filename}{PARTIAL_SUFFIX}'
        runner.save_checkpoint(
            self.out_dir, partial_name, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        commit_file(osp.join(self.out_dir, partial_name), self.last_ckpt)
        write_text_atomically(osp.join(runner.work_dir, LAST_CHECKPOINT), self.last_ckpt)
        for stale in stale_steps:
            path = osp.join(self.out_dir, self.filename_tmpl.format(stale))
            if osp.isfile(path):
                os.remove(path)


@HOOKS.register_module()
class MainProcessLoggerHook(LoggerHook):
    """mmengine's LoggerHook, with the test metrics file written by the main process only.

    mmengine writes ``<timestamp>.json`` after a test from every rank, and every rank
    shares rank 0's timestamp, so two ranks write one file at once: a shorter write over
    a longer one leaves the tail of the longer, and the file is no longer JSON. The
    validation and training logs already go through the visualizer, which writes from
    the main process only.
    """

    def after_test_epoch(self, runner, metrics=None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)


# a stock hook type in a config's default_hooks -> the mmrala hook that replaces it
SAFER_DEFAULT_HOOKS = {
    'checkpoint': (CheckpointHook, 'CrashSafeCheckpointHook'),
    'logger': (LoggerHook, 'MainProcessLoggerHook'),
}


def use_safer_default_hooks(cfg) -> None:
    """Swaps the stock hooks of ``cfg.default_hooks`` for mmrala's, keeping their
    arguments; a config that chose another hook type keeps it."""
    default_hooks = cfg.get('default_hooks') or {}
    for name, (stock, safer) in SAFER_DEFAULT_HOOKS.items():
        hook = default_hooks.get(name)
        if hook and hook.get('type') in (stock.__name__, stock):
            hook['type'] = safer


def _is_intact_checkpoint(path: str) -> bool:
    try:
        checkpoint = load_checkpoint_file(path)
    except CheckpointError:
        return False
    return isinstance(checkpoint, dict) and 'state_dict' in checkpoint and 'meta' in checkpoint


def find_resume_checkpoint(work_dir: str, logger) -> str | None:
    """The checkpoint ``--resume`` (without a path) continues from.

    ``last_checkpoint`` when it names an intact file; otherwise the newest intact
    ``*.pth`` in the work dir, saying why. ``None`` only when the work dir holds no
    checkpoint at all. Checkpoints that are all unreadable stop the run: starting over
    would overwrite them.
    """
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if osp.isfile(pointer):
        with open(pointer) as f:
            pointed = f.read().strip()
        if not pointed:
            problem = f'{pointer} is empty'
        elif not osp.isfile(pointed):
            problem = f'{pointer} names {pointed}, which does not exist'
        elif not _is_intact_checkpoint(pointed):
            problem = f'{pointer} names {pointed}, which cannot be read (truncated?)'
        else:
            return pointed
    else:
        problem = f'there is no {pointer}'
    candidates = sorted((path for path in glob.glob(osp.join(work_dir, '*.pth'))
                         if not osp.basename(path).startswith('best_')),
                        key=osp.getmtime, reverse=True)
    for path in candidates:
        if _is_intact_checkpoint(path):
            logger.warning(f'--resume: {problem}; resuming from the newest intact checkpoint '
                           f'in the work dir, {path}.')
            return path
    if candidates:
        raise CheckpointError(
            f'--resume: {problem}, and none of the {len(candidates)} checkpoints in {work_dir} '
            f'can be read ({", ".join(map(osp.basename, candidates[:5]))}). Refusing to '
            'start over on top of them: move them away to start from scratch, or pass '
            '--resume PATH with a good checkpoint.')
    return None


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------

def _dataset_files(dataset_cfg) -> tuple[str, str]:
    root = dataset_cfg.get('data_root') or ''
    ann_file = dataset_cfg.get('ann_file') or ''
    if ann_file and root and not osp.isabs(ann_file):
        ann_file = osp.join(root, ann_file)
    prefix = dataset_cfg.get('data_prefix') or {}
    image_dir = prefix.get('img') or prefix.get('img_path') or prefix.get('img_prefix') or ''
    if root and image_dir and not osp.isabs(image_dir):
        image_dir = osp.join(root, image_dir)
    return ann_file, image_dir or root


def _why_empty(dataset_cfg) -> str:
    """Reads the dataset's files to tell 'no images' from 'no class matched'."""
    ann_file, image_dir = _dataset_files(dataset_cfg)
    classes = (dataset_cfg.get('metainfo') or {}).get('classes')
    if ann_file.endswith('.json') and osp.isfile(ann_file):
        with open(ann_file) as f:
            content = json.load(f)
        images = content.get('images') or []
        if not images:
            return f'the annotation file {ann_file} lists no images'
        names = [c.get('name') for c in content.get('categories') or []]
        if classes is not None and not set(classes) & set(names):
            return (f'none of the classes {list(classes)[:8]} of the config is among the '
                    f'categories of {ann_file} ({names[:8]}); fix metainfo.classes')
        return (f'{ann_file} lists {len(images)} images, but none is left after the '
                'dataset\'s filters (filter_cfg: images without annotations are dropped)')
    if image_dir and osp.isdir(image_dir):
        count = sum(len(files) for _, _, files in os.walk(image_dir))
        if count == 0:
            return f'the image folder {image_dir} holds no files'
        return (f'none of the {count} files under {image_dir} matched the dataset\'s image '
                'suffix and its annotation files (check img_suffix / seg_map_suffix)')
    return f'neither the annotation file {ann_file!r} nor the image folder {image_dir!r} exists'


def _dataset_error(dataset_cfg, err: Exception) -> Exception:
    """What a dataset's build error means, naming its files; other errors unchanged."""
    kind = dataset_cfg.get('type', 'dataset')
    ann_file, image_dir = _dataset_files(dataset_cfg)
    if isinstance(err, json.JSONDecodeError):
        return RuntimeError(f'{kind}: the annotation file {ann_file} is not valid JSON '
                            f'({err}). Is it the right file, and complete?')
    if isinstance(err, ValueError) and 'need at least one array' in str(err):
        # mmengine's BaseDataset concatenates its (empty) list of samples
        return RuntimeError(f'{kind} (ann_file={ann_file!r}, images={image_dir!r}) has no '
                            f'samples: {_why_empty(dataset_cfg)}.')
    return err


# ---------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------

@RUNNERS.register_module()
class MMRalaRunner(Runner):
    """mmengine's Runner with mmrala's guarantees; a config selects it with
    ``runner_type='MMRalaRunner'``, which the stock tools honour.

    The config's ``CheckpointHook`` and ``LoggerHook`` become
    :class:`CrashSafeCheckpointHook` and :class:`MainProcessLoggerHook`, with the same
    arguments, and loaders without workers drop ``persistent_workers`` (torch
    refuses the combination, and a config's ``num_workers=0`` override would hit it).

    Extra config keys:
        optional_checkpoint_keys: model weights (fnmatch patterns, e.g.
            ``'roi_head.bbox_head.fc_cls.*'``) that a checkpoint loaded by ``load_from``,
            ``tools/test.py`` or ``--resume`` may lack; every other weight must be
            present and of the right shape.
    """

    optional_checkpoint_keys: tuple = ()
    dist_timeout_s: int = DEFAULT_CPU_DIST_TIMEOUT_S

    @classmethod
    def from_cfg(cls, cfg) -> MMRalaRunner:
        cfg = copy.deepcopy(cfg)
        notes = adapt_to_machine(cfg)
        for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            loader = cfg.get(field)
            if loader and loader.get('num_workers', 0) == 0:
                loader['persistent_workers'] = False  # torch refuses it without workers
        use_safer_default_hooks(cfg)
        init_cpu_distributed(cfg)
        runner = super().from_cfg(cfg)
        runner.optional_checkpoint_keys = tuple(cfg.get('optional_checkpoint_keys', ()))
        runner.dist_timeout_s = (cpu_dist_timeout(cfg) if not torch.cuda.is_available()
                                 else cfg.get('env_cfg', {}).get('dist_cfg', {})
                                 .get('timeout', 1800))
        for note in notes:
            runner.logger.info(note)
        return runner

    def train(self):
        with _name_unresponsive_peers(self.dist_timeout_s):
            return super().train()

    def test(self):
        with _name_unresponsive_peers(self.dist_timeout_s):
            return super().test()

    def val(self):
        with _name_unresponsive_peers(self.dist_timeout_s):
            return super().val()

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        dataset_cfg = dataloader.get('dataset') if isinstance(dataloader, dict) else None
        if not isinstance(dataset_cfg, dict):
            return Runner.build_dataloader(dataloader, seed, diff_rank_seed)
        try:
            loader = Runner.build_dataloader(dataloader, seed, diff_rank_seed)
        except (json.JSONDecodeError, ValueError) as err:
            explained = _dataset_error(dataset_cfg, err)
            if explained is err:
                raise
            raise explained from err
        if getattr(loader.dataset, 'cat_ids', None) == []:
            # mmdet's CocoDataset keeps the images but drops every box when no class name
            # matches a category: it would train and test on nothing.
            raise RuntimeError(f"{dataset_cfg.get('type')}: {_why_empty(dataset_cfg)}.")
        return loader

    def load_or_resume(self) -> None:
        if self._has_loaded or not (self._resume and self._load_from is None):
            return super().load_or_resume()
        resume_from = find_resume_checkpoint(self.work_dir, self.logger)
        if resume_from is None:
            self.logger.info(f'--resume: no checkpoint in {self.work_dir} yet; training '
                             'starts from scratch.')
            return None
        self.resume(resume_from)
        self._has_loaded = True

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):
        """Like mmengine's, but always strict (``strict`` is ignored): every weight of the
        model must be in the checkpoint with its shape, except ``optional_checkpoint_keys``;
        an authors' file is converted on the fly."""
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        load_model_weights(model, checkpoint, filename, self.optional_checkpoint_keys,
                           self.logger)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


def load_model_weights(model, checkpoint, source, optional_keys=(), logger=None):
    """Load a whole-model checkpoint (detector, segmentor, classifier) strictly.

    Raises :class:`~mmrala.checkpoint.CheckpointError` naming every missing, unexpected or
    mis-shaped weight; ``optional_keys`` (fnmatch patterns) may be missing.
    """
    model_state = model.state_dict()
    state, converted = model_state_dict_from_checkpoint(checkpoint, source)
    if converted and logger is not None:
        logger.info(f"{source}: an authors' checkpoint; its names were converted on the fly "
                    '(tools/convert_official.py does it once).')
    missing = sorted(k for k in set(model_state) - set(state)
                     if not any(fnmatch.fnmatchcase(k, p) for p in optional_keys))
    unexpected = sorted(set(state) - set(model_state))
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in model_state.items() if k in state and state[k].shape != v.shape]
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches: ' + '; '.join(mismatched[:6])
                        + (' ...' if len(mismatched) > 6 else '')
                        + ' -- a checkpoint of another variant (arch) or class count?')
    if missing:
        problems.append(f'{len(missing)} weights missing from the checkpoint: '
                        + ', '.join(missing[:8]) + (' ...' if len(missing) > 8 else ''))
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected weights: ' + ', '.join(unexpected[:8])
                        + (' ...' if len(unexpected) > 8 else ''))
    classifier_parts = ('backbone.', 'neck.', 'head.')
    if missing and all(k.startswith(classifier_parts) for k in state) and \
            any(not k.startswith(classifier_parts) for k in missing):
        problems.append('the checkpoint holds a backbone only (e.g. ImageNet weights): '
                        "start a model from it with model.backbone.init_cfg=dict("
                        "type='Pretrained', checkpoint=PATH) instead of load_from")
    if problems:
        raise CheckpointError(
            f'{source} does not fit this model ({type(model).__name__}):\n  - '
            + '\n  - '.join(problems) + '\n  Use the checkpoint of this config, or list '
            'weights the model may train from scratch in optional_checkpoint_keys.')
    model.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------------------
# Exact resume
# ---------------------------------------------------------------------------------------

class _RestoreAfterSkip:
    """Wraps the training data iterator on resume: after the loop has skipped the
    batches already trained on, the random states of the checkpoint are restored."""

    def __init__(self, iterator, skips: int, restore):
        self.iterator, self.skips, self.restore = iterator, skips, restore

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        self.skips -= 1
        if self.skips == 0:
            self.restore()
        return batch


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the random-number generators of every process in each checkpoint and
    restores them on ``--resume``, so that a resumed run draws the same drop-path masks,
    proposal samples and augmentations as an uninterrupted one.

    An iteration-based loop replays its sampler on resume and skips the batches already
    trained on; with ``num_workers=0`` those skipped batches go through the pipeline in
    the main process and draw from its generators. The states are therefore restored
    after the skip, right before the first new batch: the resumed run is the
    uninterrupted run whether the data workers are processes (seeded by mmengine from
    ``randomness.seed``) or not. Epoch-based loops resume at an epoch boundary, where
    the states are restored at load time.

    Only rank 0 writes checkpoints, so the states of all ranks are gathered just before
    the CheckpointHook saves (this hook runs right before it, at priority LOW).
    """

    priority = 'LOW'
    key = 'rng_states'

    def __init__(self):
        self._gathered = None  # (step, states) gathered for the checkpoint of `step`
        self._pending = None   # the states to restore once the resumed loop is in place

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
    def _apply(state: dict) -> None:
        random.setstate(state['python'])
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])

    @staticmethod
    def _step(runner):
        return runner.epoch, runner.iter

    @staticmethod
    def _checkpoint_hook(runner):
        return next((hook for hook in runner.hooks if isinstance(hook, CheckpointHook)), None)

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
        self._pending = states[rank]
        if not hasattr(runner.train_loop, 'dataloader_iterator'):
            self._restore(runner)  # epoch-based: nothing is skipped

    def _restore(self, runner):
        if self._pending is not None:
            self._apply(self._pending)
            self._pending = None
            runner.logger.info('restored the random-number generator states of the checkpoint')

    def before_train_epoch(self, runner) -> None:
        loop = runner.train_loop
        if self._pending is None or not hasattr(loop, 'dataloader_iterator'):
            return
        if runner.iter == 0:
            self._restore(runner)
        else:
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop.dataloader_iterator, runner.iter, lambda: self._restore(runner))
