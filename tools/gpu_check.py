#!/usr/bin/env python
"""The fused RALA kernel's GPU checks in one command, most important first, in a budget.

Steps, in this order (``--steps`` picks some, the order stays):

    gpu_tests        pytest tests/test_rala_triton_gpu.py: the op against float64 at
                     detection sizes, bitwise repeatability, no recompiles per image size
    benchmark_quick  tools/benchmark_rala.py --quick: correctness, then each pass, the core
                     against its peers and the layer's saved bytes at RAVLT-S stage 1
    scaling          tools/benchmark_rala.py --scaling: the RAVLT-S backbone step against
                     input size, fused against reference, as CSV and PNG
    benchmark        tools/benchmark_rala.py: every workload (stages 1 and 2, d 64 and 96)

A step starts only while at least its ``min_seconds`` of the budget are left, and is
stopped when the budget runs out, so that the command ends inside a lease of GPU time
however slow a step turns out to be. Each step's output goes to the terminal and to
OUT/<step>.log; OUT/summary.txt names the GPU, the versions and the date, and says of
each step whether it passed, failed, was stopped or was not run. The exit status is 1
when a step failed or was stopped.

Without a CUDA GPU the steps still run, in their CPU modes (the GPU tests skip, the
benchmark runs in Triton's interpreter at small sizes): that checks this tool, not the
kernels.

    python tools/gpu_check.py --out gpu_check            # 8 minutes at most
    python tools/gpu_check.py --out gpu_check --budget 300 --steps gpu_tests benchmark_quick
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple
    # Below this much budget the step is not started: it could not finish.
    min_seconds: int


def steps(out_dir: str):
    benchmark = (sys.executable, os.path.join(REPO, 'tools', 'benchmark_rala.py'))
    return (
        Step('gpu_tests', (sys.executable, '-m', 'pytest', '-v', '-p', 'no:cacheprovider',
                           os.path.join(REPO, 'tests', 'test_rala_triton_gpu.py')), 30),
        Step('benchmark_quick', benchmark + ('--quick',), 90),
        Step('scaling', benchmark + ('--scaling', '--csv', os.path.join(out_dir, 'scaling.csv'),
                                     '--plot', os.path.join(out_dir, 'scaling.png')), 90),
        Step('benchmark', benchmark, 120),
    )


STEP_NAMES = tuple(step.name for step in steps(''))


def describe_machine() -> list[str]:
    """Lines naming the date, the GPU, the versions and the commit, for the summary."""
    import torch
    lines = [f'date: {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}']
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f'device: {props.name}, {props.multi_processor_count} SMs, '
                     f'{props.total_memory / 2**30:.0f} GiB')
    else:
        lines.append('device: no CUDA GPU (CPU modes: these results check the tool, not the '
                     'kernels)')
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'not installed'
    lines.append(f'python {sys.version.split()[0]}, torch {torch.__version__}, '
                 f'triton {triton_version}')
    try:
        commit = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True)
        dirty = subprocess.run(['git', '-C', REPO, 'status', '--porcelain',
                                '--untracked-files=no'], capture_output=True, text=True)
    except FileNotFoundError:
        return lines  # no git: a copy of the working tree
    if commit.returncode == 0:
        lines.append(f'commit: {commit.stdout.strip()}'
                     + (' with uncommitted changes' if dirty.stdout.strip() else ''))
    return lines


def run_step(step: Step, log_path: str, seconds: float) -> tuple[int | None, float]:
    """(exit status, or None when stopped at ``seconds``; wall seconds), copying the
    step's output to the terminal and to ``log_path`` as it comes."""
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    start = time.monotonic()
    with open(log_path, 'w') as log:
        # Its own process group, so that stopping it also stops what it started (the
        # compile workers of torch.compile, pytest's children).
        process = subprocess.Popen(step.argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def copy_output():
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if log.closed:    # given up on after a stop
                    return
                log.write(line)
                log.flush()

        copier = threading.Thread(target=copy_output, daemon=True)
        copier.start()
        try:
            status = process.wait(timeout=seconds)
            copier.join()
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = None
            # A process that left the group could hold the output open: don't wait on it.
            copier.join(timeout=10)
    return status, time.monotonic() - start


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='gpu_check',
                        help='folder for the logs, the scaling CSV and PNG and summary.txt')
    parser.add_argument('--budget', type=float, default=480,
                        help='seconds for all steps together (default 480)')
    parser.add_argument('--steps', nargs='+', choices=STEP_NAMES, default=list(STEP_NAMES),
                        help='steps to run, in the fixed order above (default all)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    out_dir = os.path.abspath(args.out)
    summary = describe_machine()
    for line in summary:
        print(line, flush=True)
    deadline = time.monotonic() + args.budget
    failed = False
    for step in steps(out_dir):
        if step.name not in args.steps:
            continue
        left = deadline - time.monotonic()
        if left < step.min_seconds:
            result = f'not run: {left:.0f} s of the budget left, it needs {step.min_seconds} s'
        else:
            print(f'\n== {step.name}: {" ".join(step.argv)}', flush=True)
            status, seconds = run_step(step, os.path.join(out_dir, f'{step.name}.log'), left)
            if status is None:
                result = f'stopped at the end of the budget after {seconds:.0f} s'
                failed = True
            elif status:
                result = f'failed (exit status {status}) in {seconds:.0f} s'
                failed = True
            else:
                result = f'passed in {seconds:.0f} s'
        summary.append(f'{step.name}: {result}')
        print(f'== {step.name}: {result}', flush=True)
    with open(os.path.join(out_dir, 'summary.txt'), 'w') as handle:
        handle.write('\n'.join(summary) + '\n')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
