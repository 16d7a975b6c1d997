"""The fused RALA kernels (mmrala/ops/rala_triton.py), run on the CPU by Triton's interpreter.

Triton decides interpreter or compiler when ``triton.jit`` decorates a function: its own
standard library (tl.zeros, tl.sum, ...) when triton is imported, our kernels when
mmrala.ops.rala_triton is. Once anything in a process has imported triton normally,
the interpreter cannot be switched on there, and an interpreted triton cannot compile
for the GPU. So, unless TRITON_INTERPRET=1 was set before triton was imported, the
kernel tests below (marked @interpreted) run for real in one child pytest process
started with TRITON_INTERPRET=1, and each reports here the outcome it had there. The
suite may then run in one process next to the GPU tests and anything importing triton.

Compared against the float64 convex-form reference (and once against the authors'
``k * alpha * L`` formulation written out below), fed the same rounded inputs.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip('triton')

import mmrala  # noqa: E402
import mmrala.ops as rala_ops  # noqa: E402
from mmrala.ops import rala_attention, rala_attention_reference, rope_frequencies  # noqa: E402

KERNEL_MODULE = 'mmrala.ops.rala_triton'

# Relative RMS error allowed against float64, per input dtype. Measured in the
# interpreter (fp32 maths, dot operands rounded to the input dtype): fp32 ~1.5e-6,
# bf16 ~4e-3 and fp16 ~4e-4, mostly the rounding of the output itself (the
# interpreter's fp32 -> bf16 store truncates). The fp32 limit is loose enough for the
# summation order of a different tile size.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


def _triton_is_interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(triton.language.standard.zeros, InterpretedFunction)


IN_INTERPRETER = _triton_is_interpreted()
_child_results: dict = {}


def interpreted(test):
    """Runs ``test`` here when triton is interpreted, else reports its child outcome."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if IN_INTERPRETER:
            return test(*args, **kwargs)
        name = os.environ['PYTEST_CURRENT_TEST'].split('::')[-1].rsplit(' ', 1)[0]
        outcome = _child_results.get(name)
        if outcome is None:
            pytest.fail(f'{name} did not run in the interpreter subprocess:\n'
                        f'{_child_results.get("<output>", "")}', pytrace=False)
        kind, message = outcome
        if kind == 'skipped':
            pytest.skip(message)
        if kind != 'passed':
            pytest.fail(f'in the TRITON_INTERPRET=1 subprocess:\n{message}', pytrace=False)
    wrapper.runs_in_interpreter = True
    return wrapper


def _run_in_interpreter_subprocess(items) -> None:
    """One child pytest, TRITON_INTERPRET=1 from its start, for the selected tests."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(mmrala.__file__)))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [package_root, env.get('PYTHONPATH')]))
    env.pop('PYTEST_CURRENT_TEST', None)
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, 'junit.xml')
        command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                   f'--junitxml={report}', *[item.nodeid for item in items]]
        result = subprocess.run(command, env=env, cwd=str(items[0].config.rootpath),
                                capture_output=True, text=True, timeout=1800)
        _child_results['<output>'] = (result.stdout + result.stderr)[-5000:]
        if not os.path.exists(report):
            return
        for case in ElementTree.parse(report).getroot().iter('testcase'):
            outcome = ('passed', '')
            for kind in ('failure', 'error', 'skipped'):
                node = case.find(kind)
                if node is not None:
                    outcome = (kind, f"{node.get('message', '')}\n{node.text or ''}")
                    break
            _child_results[case.get('name')] = outcome


@pytest.fixture(scope='module', autouse=True)
def _interpreter_subprocess(request):
    if IN_INTERPRETER:
        return
    items = [item for item in request.session.items
             if item.module is request.module
             and getattr(item.function, 'runs_in_interpreter', False)]
    if items:
        _run_in_interpreter_subprocess(items)


@pytest.fixture(scope='module')
def kernels():
    """mmrala.ops.rala_triton, its kernels built for the interpreter."""
    module = importlib.import_module(KERNEL_MODULE)
    if IN_INTERPRETER and not module.KERNELS_INTERPRETED:
        # Imported while TRITON_INTERPRET was unset: build its kernels again.
        module = importlib.reload(module)
    return module


def _rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()


def _conv_output(batch, heads, head_dim, height, width, dtype, seed=0):
    """A (B, 4C, H, W) tensor like the qkvo conv output; its first 3C channels are qkv."""
    gen = torch.Generator().manual_seed(seed)
    channels = heads * head_dim
    return torch.randn(batch, 4 * channels, height, width, generator=gen).to(dtype)


def _run_triton(conv_out: torch.Tensor, heads: int, grad: torch.Tensor):
    """Output and gradient of the whole conv output (zero on the o channels)."""
    leaf = conv_out.detach().clone().requires_grad_()
    channels3 = 3 * conv_out.shape[1] // 4
    out = rala_attention(leaf[:, :channels3], heads, impl='triton')
    out.backward(grad)
    return out.detach(), leaf.grad


def _run_float64(fn, qkv: torch.Tensor, heads: int, grad: torch.Tensor):
    leaf = qkv.detach().double().requires_grad_()
    out = fn(leaf, heads)
    out.backward(grad.double())
    return out.detach(), leaf.grad


def authors_rala(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The authors' formulation (RAVLT.md section 1), with their (L, d) RoPE tensors."""
    batch, channels3, height, width = qkv.shape
    channels = channels3 // 3
    head_dim = channels // num_heads
    tokens = height * width
    q, k, v = (t.transpose(-1, -2) for t in
               qkv.reshape(batch, 3, num_heads, head_dim, tokens).unbind(1))  # (B, n, L, d)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    q_mean = q.mean(dim=-2, keepdim=True)
    alpha = torch.softmax(head_dim ** -0.5 * q_mean @ k.transpose(-1, -2), dim=-1)
    k = k * alpha.transpose(-1, -2) * tokens

    # The authors' RoPE.angle buffer, [t0, t0, t1, t1, ...], here in the input dtype.
    angle = rope_frequencies(head_dim, dtype=qkv.dtype).repeat_interleave(2)   # (d/2,)
    rows = torch.arange(height).to(qkv)[:, None, None] * angle            # (H, 1, d/2)
    cols = torch.arange(width).to(qkv)[None, :, None] * angle             # (1, W, d/2)
    phase = torch.cat([rows.expand(height, width, -1), cols.expand(height, width, -1)], -1)
    phase = phase.reshape(tokens, head_dim)

    def rope(x):
        rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
        return x * phase.cos() + rotated * phase.sin()

    z = 1.0 / (q @ k.mean(dim=-2, keepdim=True).transpose(-1, -2) + 1e-6)
    kv = (rope(k).transpose(-1, -2) * tokens ** -0.5) @ (v * tokens ** -0.5)
    out = rope(q) @ kv * z                                                # (B, n, L, d)
    return out.transpose(-1, -2).reshape(batch, channels, height, width)


# heads = 1: 19 x 29 = 551 tokens, three chunks of 256 (the last one 39 tokens), tiles
# of 64 with a ragged tail. heads = 3: 7 x 9 = 63 tokens, a single partial tile.
CASES = [(1, (19, 29)), (3, (7, 9))]


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16],
                         ids=['fp32', 'bf16', 'fp16'])
@pytest.mark.parametrize('head_dim', [64, 96])
@pytest.mark.parametrize('heads,size', CASES, ids=['1head-19x29', '3heads-7x9'])
@interpreted
def test_matches_float64_reference(dtype, head_dim, heads, size):
    conv_out = _conv_output(2, heads, head_dim, *size, dtype)
    channels = heads * head_dim
    grad = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1)).to(dtype)

    out, grad_conv = _run_triton(conv_out, heads, grad)
    ref_out, ref_grad = _run_float64(rala_attention_reference, conv_out[:, :3 * channels],
                                     heads, grad)

    assert out.dtype == dtype and out.shape == (2, channels, *size)
    assert grad_conv.dtype == dtype
    tol = TOLERANCE[dtype]
    errors = {'out': _rel_rms(out, ref_out)}
    for index, name in enumerate(('dq', 'dk', 'dv')):
        part = slice(index * channels, (index + 1) * channels)
        errors[name] = _rel_rms(grad_conv[:, part], ref_grad[:, part])
    assert all(err < tol for err in errors.values()), errors
    assert torch.count_nonzero(grad_conv[:, 3 * channels:]) == 0


def test_authors_formulation_equals_convex_form():
    """The convex form the kernel implements is the authors' layer, exactly."""
    conv_out = _conv_output(2, 2, 32, 6, 11, torch.float64)
    qkv = conv_out[:, :192]
    grad = torch.randn(2, 64, 6, 11, dtype=torch.float64)
    ref = _run_float64(rala_attention_reference, qkv, 2, grad)
    authors = _run_float64(authors_rala, qkv, 2, grad)
    assert _rel_rms(ref[0], authors[0]) < 1e-12
    assert _rel_rms(ref[1], authors[1]) < 1e-12


@interpreted
def test_matches_authors_formulation():
    conv_out = _conv_output(1, 1, 64, 11, 17, torch.float32, seed=3)
    grad = torch.randn(1, 64, 11, 17)
    out, grad_conv = _run_triton(conv_out, 1, grad)
    ref_out, ref_grad = _run_float64(authors_rala, conv_out[:, :192], 1, grad)
    assert _rel_rms(out, ref_out) < TOLERANCE[torch.float32]
    assert _rel_rms(grad_conv[:, :192], ref_grad) < TOLERANCE[torch.float32]


@interpreted
def test_repeated_runs_are_bitwise_identical():
    conv_out = _conv_output(2, 1, 64, 19, 29, torch.bfloat16, seed=4)
    grad = torch.randn(2, 64, 19, 29).to(torch.bfloat16)
    first = _run_triton(conv_out, 1, grad)
    second = _run_triton(conv_out, 1, grad)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


@interpreted
def test_reads_channel_slices_in_place(kernels):
    """A slice of the 4C conv output is read with its strides, not copied; a contiguous
    3C tensor and a channels-last one (which is copied) give bitwise the same result."""
    conv_out = _conv_output(2, 1, 64, 9, 13, torch.float32, seed=5)
    leaf = conv_out.clone().requires_grad_()
    qkv = leaf[:, :192]
    out = rala_attention(qkv, 1, impl='triton')

    saved_qkv, query_mean, log_sum_exp, state = out.grad_fn.saved_tensors
    assert saved_qkv.data_ptr() == qkv.data_ptr() and saved_qkv.stride() == qkv.stride()
    # Beyond its input the op keeps qm, lse and [S | km] per (image, head), nothing else.
    assert query_mean.shape == (2, 64) and log_sum_exp.shape == (2,)
    assert state.shape == (2, 64 * 64 + 64)

    grad = torch.randn_like(out)
    out.backward(grad)
    for variant in (conv_out[:, :192].contiguous(),
                    conv_out[:, :192].contiguous(memory_format=torch.channels_last)):
        variant = variant.clone().requires_grad_()
        other = rala_attention(variant, 1, impl='triton')
        other.backward(grad)
        assert torch.equal(other, out)
        assert torch.equal(variant.grad, leaf.grad[:, :192])


@interpreted
def test_fp16_state_gradients_beyond_fp16_range():
    """Same-sign upstream gradients of 7000 (a loss scaler makes such) drive dS to about
    7.6e4, past the fp16 maximum, while dQ0, dK0 and dV stay near 1.3e4. Without the
    power-of-two scaling of the state operands, the fp16 dots of B2 and B3 give inf."""
    conv_out = 0.3 * _conv_output(1, 1, 64, 19, 29, torch.float32, seed=6)
    conv_out = conv_out.to(torch.float16)
    grad = torch.full((1, 64, 19, 29), 7000.0, dtype=torch.float16)
    _, grad_conv = _run_triton(conv_out, 1, grad)
    _, ref_grad = _run_float64(rala_attention_reference, conv_out[:, :192], 1, grad)
    assert torch.isfinite(grad_conv).all()
    assert _rel_rms(grad_conv[:, :192], ref_grad) < TOLERANCE[torch.float16]


def test_chunking_depends_on_tokens_only(kernels):
    for tokens in (1, 63, 255, 256, 551, 3136, 16_800, 67_200, 10**7):
        chunk = kernels.chunk_tokens_for(tokens)
        assert chunk & (chunk - 1) == 0
        assert kernels.MIN_CHUNK_TOKENS <= chunk <= kernels.MAX_CHUNK_TOKENS
        assert chunk % 64 == 0    # whole tiles of every BLOCK_L used


def test_auto_stays_on_torch_on_cpu():
    qkv = _conv_output(1, 1, 64, 5, 7, torch.float32)[:, :192]
    assert not rala_ops._triton_usable(qkv)
    assert torch.equal(rala_attention(qkv, 1), rala_attention_reference(qkv, 1))


@interpreted
def test_clear_errors(kernels, monkeypatch):
    qkv = _conv_output(1, 1, 64, 5, 7, torch.float32)[:, :192]
    with pytest.raises(ValueError, match='head dims'):
        rala_attention(_conv_output(1, 1, 8, 5, 7, torch.float32)[:, :24], 1, impl='triton')

    # Kernels built for the GPU, a CPU tensor given.
    monkeypatch.setattr(kernels, 'KERNELS_INTERPRETED', False)
    monkeypatch.delenv('TRITON_INTERPRET')
    with pytest.raises(RuntimeError, match='CUDA tensors'):
        rala_attention(qkv, 1, impl='triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    with pytest.raises(RuntimeError, match='set after'):
        rala_attention(qkv, 1, impl='triton')
    monkeypatch.undo()

    # triton not importable.
    monkeypatch.delattr(rala_ops, 'rala_triton', raising=False)
    monkeypatch.setitem(sys.modules, KERNEL_MODULE, None)
    with pytest.raises(RuntimeError, match='needs the triton package'):
        rala_attention(qkv, 1, impl='triton')


def test_import_without_triton():
    """mmrala.ops imports and runs the reference when triton cannot be imported."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, mmrala.ops as ops\n"
            "qkv = torch.randn(1, 192, 5, 7)\n"
            "assert ops.rala_attention(qkv, 1).shape == (1, 64, 5, 7)\n"
            "try:\n"
            "    ops.rala_attention(qkv, 1, impl='triton')\n"
            "except RuntimeError as err:\n"
            "    assert 'triton' in str(err)\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Ahead-of-time compilation for a GPU. The interpreter does not type-check like the
# compiler does; compiling every launch of a forward and backward pass for sm_90 (no
# GPU needed, ptxas ships with triton) catches what it lets through.
# ---------------------------------------------------------------------------------------

def _nvidia_toolchain_available() -> bool:
    try:
        from triton.backends import backends
    except ImportError:
        return False
    nvidia = backends.get('nvidia')
    if nvidia is None:
        return False
    ptxas = os.path.join(os.path.dirname(inspect.getfile(nvidia.compiler)), 'bin', 'ptxas')
    return os.path.exists(ptxas)


class _CompileOnly:
    """Stands in for a kernel: ``kernel[grid](...)`` compiles for ``target`` instead of
    launching, with the signature the launch would have used and the largest autotune
    config (the one most likely to exceed a resource)."""

    TYPES = {torch.float32: '*fp32', torch.bfloat16: '*bf16', torch.float16: '*fp16'}

    def __init__(self, kernel, target, compiled):
        self.kernel, self.target, self.compiled = kernel, target, compiled

    def __getitem__(self, grid):
        import triton
        from triton.compiler import ASTSource

        def launch(*args, **kwargs):
            kernel, options = self.kernel, {}
            if isinstance(kernel, triton.runtime.Autotuner):
                config = kernel.configs[-1]
                options = dict(num_warps=config.num_warps, num_stages=config.num_stages)
                kernel = kernel.fn
            values = dict(zip(kernel.arg_names, args))
            values.update({k: v for k, v in kwargs.items() if k in kernel.arg_names})
            options.update({k: v for k, v in kwargs.items() if k not in kernel.arg_names})
            signature, constants = {}, {}
            for param in kernel.params:
                value = values[param.name]
                if param.is_constexpr:
                    signature[param.name], constants[param.name] = 'constexpr', value
                elif isinstance(value, torch.Tensor):
                    signature[param.name] = self.TYPES[value.dtype]
                elif isinstance(value, int):
                    signature[param.name] = 'i32' if abs(value) < 2 ** 31 else 'i64'
                else:
                    signature[param.name] = 'fp32'
            binary = triton.compile(ASTSource(kernel, signature, constants),
                                    target=self.target, options=options)
            self.compiled.append((kernel.__name__, binary.metadata.shared))
        return launch


@pytest.mark.skipif(IN_INTERPRETER, reason='compiling needs triton imported without the interpreter')
@pytest.mark.skipif(not _nvidia_toolchain_available(), reason='triton without its CUDA backend')
@pytest.mark.parametrize('dtype,head_dim,precision', [(torch.bfloat16, 64, None),
                                                      (torch.float16, 96, None),
                                                      (torch.float32, 64, 'tf32x3')],
                         ids=['bf16-d64', 'fp16-d96', 'fp32-d64'])
def test_kernels_compile_for_sm90(monkeypatch, dtype, head_dim, precision):
    from triton.backends.compiler import GPUTarget

    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    path = os.path.join(os.path.dirname(rala_ops.__file__), 'rala_triton.py')
    spec = importlib.util.spec_from_file_location('mmrala.ops._rala_triton_sm90', path)
    gpu_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_build)
    assert not gpu_build.KERNELS_INTERPRETED

    compiled = []
    target = GPUTarget('cuda', 90, 32)
    for name in dir(gpu_build):
        if name.startswith('_rala_') and name.endswith('_kernel'):
            setattr(gpu_build, name, _CompileOnly(getattr(gpu_build, name), target, compiled))
    mode = 0 if dtype == torch.float32 else 1
    gpu_build._dot_config = lambda qkv: (mode, precision or 'ieee')

    qkv = torch.zeros(2, 4 * head_dim, 13, 21, dtype=dtype)[:, :3 * head_dim]
    geometry = gpu_build._Geometry(qkv, 1)
    out, query_mean, log_sum_exp, state = gpu_build._rala_forward(qkv, geometry)
    gpu_build._rala_backward(qkv, out, query_mean, log_sum_exp, state, geometry)
    assert len(compiled) == 8
    # The largest autotune config is compiled; an H100 block gets at most 227 KB.
    assert all(shared <= 227 * 1024 for _, shared in compiled), compiled
