"""Running tests of the fused kernels in Triton's interpreter, from any pytest process.

Triton decides interpreter or compiler when ``triton.jit`` decorates a function: its own
standard library when triton is imported, mmrala's kernels when mmrala.ops.rala_triton
is. Once a process has imported triton normally, the interpreter cannot be switched on
there. So, unless TRITON_INTERPRET=1 was set before triton was imported, the tests
marked ``@interpreted`` of a module run for real in one child pytest started with
TRITON_INTERPRET=1, and each reports here the outcome it had there. A test module uses
it with::

    from triton_interpreter import interpreted, run_interpreted_tests  # noqa: F401

(``run_interpreted_tests`` is an autouse module fixture: importing it is enough.)
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def triton_is_interpreted() -> bool:
    import triton
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(triton.language.standard.zeros, InterpretedFunction)


IN_INTERPRETER = triton_is_interpreted()

# Per test module: test name -> (outcome, message), and '<output>' -> the child's output.
_child_results: dict = {}


def interpreted(test):
    """Runs ``test`` here when triton is interpreted, else reports its child outcome."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if IN_INTERPRETER:
            return test(*args, **kwargs)
        module = test.__module__
        name = os.environ['PYTEST_CURRENT_TEST'].split('::')[-1].rsplit(' ', 1)[0]
        results = _child_results.get(module, {})
        outcome = results.get(name)
        if outcome is None:
            pytest.fail(f'{name} did not run in the interpreter subprocess:\n'
                        f'{results.get("<output>", "")}', pytrace=False)
        kind, message = outcome
        if kind == 'skipped':
            pytest.skip(message)
        if kind != 'passed':
            pytest.fail(f'in the TRITON_INTERPRET=1 subprocess:\n{message}', pytrace=False)
    wrapper.runs_in_interpreter = True
    return wrapper


def _run_child(module: str, items, rootdir) -> dict:
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
    env.pop('PYTEST_CURRENT_TEST', None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, 'junit.xml')
        command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                   f'--junitxml={report}', *[item.nodeid for item in items]]
        result = subprocess.run(command, env=env, cwd=str(rootdir), capture_output=True,
                                text=True, timeout=1800)
        results['<output>'] = (result.stdout + result.stderr)[-5000:]
        if os.path.exists(report):
            for case in ElementTree.parse(report).getroot().iter('testcase'):
                outcome = ('passed', '')
                for kind in ('failure', 'error', 'skipped'):
                    node = case.find(kind)
                    if node is not None:
                        outcome = (kind, f"{node.get('message', '')}\n{node.text or ''}")
                        break
                results[case.get('name')] = outcome
    return results


@pytest.fixture(scope='module', autouse=True)
def run_interpreted_tests(request):
    """Runs the selected @interpreted tests of the module in one interpreter child."""
    if IN_INTERPRETER:
        return
    items = [item for item in request.session.items
             if item.module is request.module
             and getattr(item.function, 'runs_in_interpreter', False)]
    if items:
        _child_results[request.module.__name__] = _run_child(
            request.module.__name__, items, items[0].config.rootpath)
