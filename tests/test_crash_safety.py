"""Training runs that are killed, frozen or resumed, with mmrala's tools and with the
stock tools of mmdet, mmseg and mmpretrain (their ``.mim/tools/``): checkpoints survive a
kill at any point of a save, ``--resume`` never starts over on top of them and continues
exactly, and a frozen distributed peer is reported within the configured timeout."""
from __future__ import annotations

import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch
from conftest import (
    CONFIGS,
    REPO,
    TOOLS,
    case_options,
    free_port,
    last_checkpoint,
    run_cmd,
    stock_tool,
    tool_env,
    train_scalars,
    wait_for,
)

from mmrala.mm.runtime import find_resume_checkpoint

pytestmark = pytest.mark.slow

FPN = osp.join(CONFIGS, 'fpn_ravlt_t_ade20k.py')


def train_cmd(which, work_dir, *args):
    script = osp.join(TOOLS, 'train.py') if which == 'mmrala' else stock_tool('mmseg', 'train.py')
    return [sys.executable, script, FPN, '--work-dir', str(work_dir), *map(str, args)]


def losses(work_dir):
    return {s['step']: s['loss'] for s in train_scalars(work_dir) if 'loss' in s}


def resumed_iteration(output):
    marker = 'resumed epoch: 0, iter: '
    assert marker in output, output[-3000:]
    return int(output.split(marker)[1].split()[0].rstrip(','))


# ---------------------------------------------------------------------------------------
# Crash-safe checkpoints
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('point', ['write', 'rename', 'pointer'])
def test_a_kill_at_any_point_of_a_save_leaves_a_checkpoint_to_resume(request, tmp_path, point):
    work_dir = tmp_path / 'work'
    options = case_options('fpn', request) + [
        'train_cfg.max_iters=3', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=1']
    killed = subprocess.run(
        [sys.executable, osp.join(REPO, 'tests', 'crash_at.py'), point, '2',
         osp.join(TOOLS, 'train.py'), FPN, '--work-dir', str(work_dir),
         '--cfg-options', *options],
        env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    # The first checkpoint is still there and intact, and last_checkpoint names it
    # (with max_keep_ckpts=1 mmengine had deleted it before writing the second).
    assert last_checkpoint(work_dir) == str(work_dir / 'iter_1.pth')
    assert torch.load(work_dir / 'iter_1.pth', weights_only=True)['meta']['iter'] == 1
    if point != 'pointer':
        assert not osp.exists(work_dir / 'iter_2.pth')

    if point != 'write':
        # --resume itself is run once, below; the other points leave the same state
        assert find_resume_checkpoint(str(work_dir), logger=None) == str(work_dir / 'iter_1.pth')
        return
    out = run_cmd([*train_cmd('mmrala', work_dir, '--resume'), '--cfg-options', *options])
    assert resumed_iteration(out) == 1
    assert torch.load(work_dir / 'iter_3.pth', weights_only=True)['meta']['iter'] == 3
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) == ['iter_3.pth']


def test_resume_with_a_lost_pointer_takes_the_newest_checkpoint(request, tmp_path):
    work_dir = tmp_path / 'work'
    options = case_options('fpn', request) + ['default_hooks.checkpoint.interval=1']
    run_cmd([*train_cmd('mmrala', work_dir), '--cfg-options', *options,
             'train_cfg.max_iters=2'])
    os.remove(work_dir / 'last_checkpoint')
    out = run_cmd([*train_cmd('mmrala', work_dir, '--resume'), '--cfg-options', *options,
                   'train_cfg.max_iters=3'])
    assert 'resuming from the newest intact checkpoint' in out
    assert resumed_iteration(out) == 2


# ---------------------------------------------------------------------------------------
# Exact resume, with and without data workers, with mmrala's and mmseg's train.py
# ---------------------------------------------------------------------------------------

def resume_options(request, num_workers):
    return case_options('fpn', request) + [
        'default_hooks.checkpoint.interval=2', 'train_cfg.max_iters=6',
        *(f'{loader}.num_workers={num_workers}'
          for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'))]


@pytest.fixture(scope='module')
def uninterrupted(request, tmp_path_factory):
    """The uninterrupted 6-iteration run for each num_workers, trained once."""
    runs = {}

    def get(num_workers):
        if num_workers not in runs:
            work_dir = tmp_path_factory.mktemp(f'uninterrupted_{num_workers}')
            run_cmd([*train_cmd('mmrala', work_dir), '--cfg-options',
                     *resume_options(request, num_workers)])
            runs[num_workers] = work_dir
        return runs[num_workers]
    return get


# mmseg's own train.py runs the same config the same way, so its resumed run is compared
# with the run of mmrala's train.py.
@pytest.mark.parametrize('which,num_workers', [('mmrala', 1), ('mmrala', 0), ('stock', 0)])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(request, tmp_path, uninterrupted,
                                                              which, num_workers):
    options = resume_options(request, num_workers)
    full, part = uninterrupted(num_workers), tmp_path / 'part'

    log = open(tmp_path / 'killed.log', 'w')
    proc = subprocess.Popen([*train_cmd(which, part), '--cfg-options', *options],
                            env=tool_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: osp.isfile(part / 'last_checkpoint') or proc.poll() is not None, 300,
                 'the first checkpoint')
        assert proc.poll() is None, ('training ended before it could be killed:\n'
                                     + (tmp_path / 'killed.log').read_text()[-3000:])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    out = run_cmd([*train_cmd(which, part, '--resume'), '--cfg-options', *options])
    start = resumed_iteration(out)
    assert start in (2, 4)
    assert 'restored the random-number generator states' in out
    full_losses, part_losses = losses(full), losses(part)
    for step in range(start + 1, 7):
        assert part_losses[step] == full_losses[step], (step, part_losses, full_losses)
    a = torch.load(full / 'iter_6.pth', map_location='cpu', weights_only=True)['state_dict']
    b = torch.load(part / 'iter_6.pth', map_location='cpu', weights_only=True)['state_dict']
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


# ---------------------------------------------------------------------------------------
# Distributed runs whose peer stops answering
# ---------------------------------------------------------------------------------------

def processes_with(tag, rank):
    """PIDs of the processes whose environment holds MMRALA_TEST_TAG=tag and RANK=rank."""
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = dict(item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item)
        except OSError:
            continue
        if env.get(b'MMRALA_TEST_TAG') == tag.encode() and env.get(b'RANK') == str(rank).encode():
            pids.append(int(pid))
    return pids


def test_a_frozen_peer_is_reported_by_rank_within_the_timeout(request, tmp_path):
    timeout = 20
    work_dir = tmp_path / 'dist'
    tag = uuid.uuid4().hex
    options = case_options('fpn', request) + [
        'train_cfg.max_iters=1000', f'env_cfg.dist_cfg.timeout={timeout}']
    cmd = ['bash', osp.join(TOOLS, 'dist_train.sh'), FPN, '2', '--work-dir', str(work_dir),
           '--cfg-options', *options]
    log_path = tmp_path / 'dist.log'
    log = open(log_path, 'w')
    # its own session, so that the whole tree (torchrun and both ranks) can be killed
    proc = subprocess.Popen(cmd, env=tool_env(PORT=str(free_port()), MMRALA_TEST_TAG=tag,
                                              OMP_NUM_THREADS='1'),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    frozen = []
    try:
        wait_for(lambda: re.search(r'Iter\(train\) \[ *2/1000\]', log_path.read_text()), 300,
                 'two training iterations')
        frozen = processes_with(tag, 1)
        assert frozen, 'rank 1 not found'
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.time()
        wait_for(lambda: 'a peer process stopped responding' in log_path.read_text(),
                 timeout + 90, 'the report of the frozen peer')
        reported_after = time.time() - stopped_at
    finally:
        for pid in frozen:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
    text = log_path.read_text()
    assert reported_after < timeout + 60, reported_after
    assert 'rank 0 of 2' in text
    report = text.split('a peer process stopped responding.')[1][:300]
    assert report.startswith(' Silent: rank 1 (no sign of life for'), text[-4000:]
