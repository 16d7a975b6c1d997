"""tools/gpu_check.py, the GPU checks in one budgeted command, run on the CPU: its steps'
order, its budget, what it stops and what its summary says."""
from __future__ import annotations

import subprocess
import sys
import time

from conftest import TOOLS, load_tool, tool_env

gpu_check = load_tool('gpu_check')


def test_runs_steps_in_order_until_the_budget_is_short(tmp_path):
    """The GPU tests run (and skip, without CUDA); with less budget left than the quick
    benchmark needs, it is not started, and the summary says so."""
    out = tmp_path / 'out'
    needs = {step.name: step.min_seconds for step in gpu_check.steps(str(out))}
    budget = 60
    assert needs['gpu_tests'] < budget < needs['benchmark_quick']
    proc = subprocess.run(
        [sys.executable, f'{TOOLS}/gpu_check.py', '--out', str(out), '--budget', str(budget),
         '--steps', 'benchmark_quick', 'gpu_tests'],
        env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = (out / 'summary.txt').read_text().splitlines()
    assert summary[0].startswith('date: ')
    assert summary[1].startswith('device: no CUDA GPU')
    assert summary[2].startswith(f'python {sys.version.split()[0]}, torch ')
    results = {line.split(': ', 1)[0]: line.split(': ', 1)[1] for line in summary[3:]
               if not line.startswith('commit: ')}
    assert list(results) == ['gpu_tests', 'benchmark_quick']
    assert results['gpu_tests'].startswith('passed in ')
    assert results['benchmark_quick'].startswith('not run: ')
    assert results['benchmark_quick'].endswith(f"it needs {needs['benchmark_quick']} s")

    log = (out / 'gpu_tests.log').read_text()
    assert 'skipped' in log and 'needs a CUDA GPU' in log
    assert sorted(path.name for path in out.iterdir()) == ['gpu_tests.log', 'summary.txt']


def _running(pid: int) -> bool:
    # A killed process whose parent is gone may stay a zombie until it is reaped.
    try:
        with open(f'/proc/{pid}/status') as handle:
            return 'State:\tZ' not in handle.read()
    except FileNotFoundError:
        return False


def test_a_step_past_its_time_is_stopped_and_a_failure_is_reported(tmp_path):
    sleeper = gpu_check.Step('sleeper', (sys.executable, '-c', (
        'import subprocess, sys, time\n'
        'child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])\n'
        'print(child.pid, flush=True)\n'
        'time.sleep(120)\n')), 0)
    status, seconds = gpu_check.run_step(sleeper, str(tmp_path / 'sleeper.log'), 3)
    assert status is None and 3 <= seconds < 30
    # What the step started is stopped with it.
    child = int((tmp_path / 'sleeper.log').read_text().split()[0])
    for _ in range(50):    # SIGKILL is delivered, not waited for
        if not _running(child):
            break
        time.sleep(0.1)
    assert not _running(child)

    failing = gpu_check.Step('failing', (sys.executable, '-c',
                                         'print("off by one"); raise SystemExit(3)'), 0)
    status, _ = gpu_check.run_step(failing, str(tmp_path / 'failing.log'), 30)
    assert status == 3
    assert (tmp_path / 'failing.log').read_text() == 'off by one\n'
