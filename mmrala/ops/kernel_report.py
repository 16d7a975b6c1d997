"""A static proof of the fused RALA kernels: what they cost on a GPU, read without one.

Every kernel launch of one forward and one backward pass of the fused op is compiled
ahead of time for a GPU target (sm_90, sm_80) with the argument specialisation a real
launch would get, once for every autotune config the op could select. From each binary
it reads:

- registers per thread, the stack frame and the spill traffic (STL / LDL instructions
  in the SASS), and the shared memory a program asks for;
- the global memory instructions by access width (LDG / STG / LDGSTS in the SASS, 2-,
  4-, 8- and 16-byte), the test of vectorised, aligned token streams;
- the instructions of the main token loop, per token: on an H100 the passes were
  latency- and issue-bound, so this count, more than bytes, is what their time follows.

It also compares, at a named workload, the bytes each pass must move (the byte model of
docs/rala_kernel.md section 6) with the bytes its launches move.

Only the CUDA tools that ship in the triton wheel are needed (ptxas, cuobjdump); no GPU,
no driver. Triton must have been imported without TRITON_INTERPRET. Imports only torch,
triton and the standard library. ``tools/rala_kernel_report.py`` prints the tables.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import os
import re
import subprocess
import tempfile
from collections import Counter

import torch

ARCHS = {'sm_90': 90, 'sm_80': 80}
# Shared memory one program can have (bytes): 227 KB on sm_90, 163 KB on sm_80. A build
# above it compiles but cannot launch.
SHARED_MEMORY_LIMIT = {'sm_90': 227 * 1024, 'sm_80': 163 * 1024}
# What one SM holds at once, per architecture: 64K 32-bit registers in four quarters,
# one per warp scheduler, each warp's in its own quarter in units of 256 (8 a thread);
# shared memory in units of 128 B (each program also takes 1 KB the system reserves);
# 64 warps and 32 programs. The occupancy tables of the CUDA programming guide, compute
# capability 8.0 and 9.0.
REGISTERS_PER_SCHEDULER = 16 * 1024
REGISTER_UNIT_PER_WARP = 256
SCHEDULERS_PER_SM = 4
SHARED_MEMORY_PER_SM = {'sm_90': 228 * 1024, 'sm_80': 164 * 1024}
SHARED_MEMORY_UNIT = 128
SHARED_MEMORY_RESERVED_PER_PROGRAM = 1024
MAX_WARPS_PER_SM = 64
MAX_PROGRAMS_PER_SM = 32
HALF_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
DTYPES = {**HALF_DTYPES, 'fp32': torch.float32}
ACCESS_WIDTHS = (1, 2, 4, 8, 16)

# Spatial sizes of the launches compiled for the table. Only alignment is specialised
# (see rala_triton._vector_width), so one size of each kind stands for every H x W: the
# first gives 16-byte aligned token rows, the second (odd H * W) does not.
ALIGNED_SIZE = (16, 24)
UNALIGNED_SIZE = (13, 21)

# RAVLT-S stage 1 of Mask R-CNN at 1344 x 800, batch 2: the workload of the byte table.
STAGE1 = dict(batch=2, heads=1, head_dim=64, height=200, width=336, dtype='bf16')


@dataclasses.dataclass
class KernelStats:
    """What one compiled kernel costs, from its binary."""
    arch: str
    dtype: str
    head_dim: int
    aligned: bool
    kernel: str
    config: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    loads: dict        # access width in bytes -> number of global load instructions
    stores: dict       # likewise for stores
    loop_instructions: int    # SASS instructions of the main loop, one iteration
    tokens_per_iteration: int  # BLOCK_L of a token pass; 0 for the combine kernel
    warps: int

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    @property
    def fits_shared_memory(self) -> bool:
        return self.shared_bytes <= SHARED_MEMORY_LIMIT[self.arch]

    @property
    def programs_per_sm(self) -> int:
        """Programs of this kernel one SM can hold at once: the warps there are to switch
        between while others wait on memory or a dot."""
        return programs_per_sm(self.arch, self.registers, self.warps, self.shared_bytes)

    @property
    def instructions_per_token(self):
        """Warp instructions the main loop issues per token (every warp runs the loop
        body once per tile of tokens_per_iteration tokens); None without a token loop."""
        if not self.tokens_per_iteration:
            return None
        return self.loop_instructions * self.warps / self.tokens_per_iteration

    @property
    def narrow_accesses(self) -> int:
        """Global loads and stores narrower than 4 bytes: scalar half-precision traffic."""
        return sum(n for width, n in {**self.loads}.items() if width < 4) + sum(
            n for width, n in self.stores.items() if width < 4)


def programs_per_sm(arch: str, registers: int, warps: int, shared_bytes: int) -> int:
    """Resident programs per SM of a kernel with ``registers`` per thread, ``warps`` per
    program and ``shared_bytes`` per program, on ``arch``."""
    unit = REGISTER_UNIT_PER_WARP
    registers_per_warp = -(-registers * 32 // unit) * unit
    warps_by_registers = (REGISTERS_PER_SCHEDULER // registers_per_warp) * SCHEDULERS_PER_SM
    shared = -(-shared_bytes // SHARED_MEMORY_UNIT) * SHARED_MEMORY_UNIT
    by_shared = SHARED_MEMORY_PER_SM[arch] // (shared + SHARED_MEMORY_RESERVED_PER_PROGRAM)
    return min(warps_by_registers // warps, MAX_WARPS_PER_SM // warps, by_shared,
               MAX_PROGRAMS_PER_SM)


# ---------------------------------------------------------------------------------------
# Launch capture: the op's own host code, with kernels that record instead of launching
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Launch:
    kernel: object          # a triton JITFunction or Autotuner
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return _jit_function(self.kernel).__name__


class _Recorder:
    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch(self.kernel, grid, args, kwargs))
        return record


def _jit_function(kernel):
    import triton
    return kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel


@functools.lru_cache(maxsize=1)
def gpu_build():
    """A private copy of mmrala.ops.rala_triton with its kernels built for the GPU.

    A copy, so that replacing its kernels by recorders leaves the real module alone.
    """
    import triton
    from triton.runtime.interpreter import InterpretedFunction
    if isinstance(triton.language.standard.zeros, InterpretedFunction):
        raise RuntimeError('the kernel report compiles for the GPU, but triton was imported '
                           'with TRITON_INTERPRET set; run it in a process without it.')
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'rala_triton.py')
    spec = importlib.util.spec_from_file_location('mmrala.ops._rala_triton_static', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_launches(dtype: torch.dtype, head_dim: int, height: int, width: int,
                    heads: int = 1, batch: int = 2, arch: str = 'sm_90'):
    """Every launch of one forward and one backward pass on a GPU of ``arch``, in order,
    with its arguments.

    qkv is the first 3C channels of a (B, 4C, H, W) conv output and the gradient is
    written into the matching slice of a 4C buffer, as in the RAVLT layer.
    """
    module = gpu_build()
    launches = []
    kernels = {name: getattr(module, name) for name in dir(module)
               if name.startswith('_rala_') and name.endswith('_kernel')}
    # The tensors are on the CPU: the host code is told the GPU it would have met, which
    # sets the launch options and the dot precision.
    saved = {**kernels, '_device_capability': module._device_capability}
    try:
        for name, kernel in kernels.items():
            setattr(module, name, _Recorder(kernel, launches))
        module._device_capability = lambda qkv: divmod(ARCHS[arch], 10)
        channels = heads * head_dim
        conv_out = torch.zeros(batch, 4 * channels, height, width, dtype=dtype)
        qkv = conv_out[:, :3 * channels]
        geometry = module._Geometry(qkv, heads)
        out, query_mean, log_sum_exp, state = module._rala_forward(qkv, geometry)
        grad_buffer = torch.zeros_like(conv_out)
        module._rala_backward(qkv, out, query_mean, log_sum_exp, state, geometry,
                              grad_buffer[:, :3 * channels])
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    return launches, geometry


def selectable_configs(kernel):
    """The triton.Config objects a launch of ``kernel`` can run with."""
    import triton
    if isinstance(kernel, triton.runtime.Autotuner):
        return list(kernel.configs)
    return [None]


def _config_label(config, kwargs) -> str:
    if config is not None:
        return f'w{config.num_warps}s{config.num_stages}'
    return f"w{kwargs.get('num_warps', 4)}s{kwargs.get('num_stages', 3)}"


def compile_launch(launch: Launch, arch: int, config=None):
    """triton.compile of ``launch`` for sm_<arch>, specialised exactly as launching it on
    such a GPU would (pointer alignment, integer divisibility, constexprs)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = _jit_function(launch.kernel)
    kwargs = dict(launch.kwargs)
    if config is not None:
        kwargs.update(config.all_kwargs())
    target = GPUTarget('cuda', arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args,
                                                          specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                          options=options.__dict__)


# ---------------------------------------------------------------------------------------
# Reading a cubin
# ---------------------------------------------------------------------------------------

def _cuda_tool(name: str) -> str:
    from triton.backends import backends
    nvidia = backends['nvidia']
    path = os.path.join(os.path.dirname(inspect.getfile(nvidia.compiler)), 'bin', name)
    if not os.path.exists(path):
        raise RuntimeError(f'{name} not found at {path}; the kernel report needs the CUDA '
                           'tools of the triton wheel (triton with its nvidia backend).')
    return path


def nvidia_toolchain_available() -> bool:
    try:
        _cuda_tool('ptxas')
        _cuda_tool('cuobjdump')
    except (ImportError, KeyError, RuntimeError):
        return False
    return True


_RESOURCE = re.compile(r'REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)')
# An instruction line of `cuobjdump -sass`: /*0a80*/  @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;
_INSTRUCTION = re.compile(r'/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)')
_WIDTH_SUFFIX = {'U8': 1, 'S8': 1, 'U16': 2, 'S16': 2, '16': 2, '64': 8, '128': 16}


def access_width(opcode: str) -> int:
    """Bytes per thread of a load / store opcode: LDG.E.U16 -> 2, LDG.E -> 4, STG.E.128 -> 16."""
    for part in opcode.split('.')[1:]:
        if part in _WIDTH_SUFFIX:
            return _WIDTH_SUFFIX[part]
    return 4


def sass_memory_counts(sass: str):
    """(global loads, global stores, spill store bytes, spill load bytes) of a SASS listing.

    Global loads count LDG and the asynchronous global-to-shared copies (LDGSTS) of
    pipelined loops; spills are the local-memory stores and loads (STL / LDL).
    """
    loads, stores = Counter(), Counter()
    spill_stores = spill_loads = 0
    for opcode in _INSTRUCTION.findall(sass):
        head = opcode.split('.')[0]
        if head in ('LDG', 'LDGSTS'):
            loads[access_width(opcode)] += 1
        elif head in ('STG', 'REDG', 'ATOMG', 'RED'):
            stores[access_width(opcode)] += 1
        elif head == 'STL':
            spill_stores += access_width(opcode)
        elif head == 'LDL':
            spill_loads += access_width(opcode)
    return dict(loads), dict(stores), spill_stores, spill_loads


# A branch of `cuobjdump -sass`: /*0f70*/  @P0 BRA 0x4a0 ;
_BRANCH = re.compile(r'/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+0x([0-9a-f]+)')
SASS_INSTRUCTION_BYTES = 16


def loop_instruction_count(sass: str) -> int:
    """Instructions of the longest loop in a SASS listing, from a backward branch to its
    target: the main token loop of a pass (0 if there is no loop)."""
    spans = [int(at, 16) - int(target, 16) for at, target in _BRANCH.findall(sass)]
    backward = [span for span in spans if span > 0]
    return max(backward) // SASS_INSTRUCTION_BYTES + 1 if backward else 0


def read_cubin(cubin: bytes):
    """(registers, stack bytes, static shared bytes, SASS text) of a single-kernel cubin."""
    with tempfile.NamedTemporaryFile(suffix='.cubin', delete=False) as handle:
        handle.write(cubin)
        path = handle.name
    try:
        usage = subprocess.run([_cuda_tool('cuobjdump'), '-res-usage', path], check=True,
                               capture_output=True, text=True).stdout
        sass = subprocess.run([_cuda_tool('cuobjdump'), '-sass', path], check=True,
                              capture_output=True, text=True).stdout
    finally:
        os.remove(path)
    match = _RESOURCE.search(usage)
    if match is None:
        raise RuntimeError(f'cannot read the resource usage from cuobjdump:\n{usage}')
    registers, stack, shared, _ = (int(v) for v in match.groups())
    return registers, stack, shared, sass


def kernel_stats(binary, arch_name, dtype_name, head_dim, aligned, kernel_name, config_label,
                 tokens_per_iteration=0):
    registers, stack, static_shared, sass = read_cubin(binary.asm['cubin'])
    loads, stores, spill_stores, spill_loads = sass_memory_counts(sass)
    return KernelStats(arch_name, dtype_name, head_dim, aligned, kernel_name, config_label,
                       registers, stack, spill_stores, spill_loads,
                       static_shared + binary.metadata.shared, loads, stores,
                       loop_instruction_count(sass), tokens_per_iteration,
                       binary.metadata.num_warps)


def collect(archs=tuple(ARCHS), dtypes=tuple(HALF_DTYPES), head_dims=(64, 96),
            alignments=(True, False), progress=None):
    """KernelStats of every distinct (kernel, specialisation, config) the op launches."""
    module = gpu_build()
    rows = []
    for arch_name in archs:
        for dtype_name in dtypes:
            for head_dim in head_dims:
                if module.tiling_class(DTYPES[dtype_name], head_dim) not in module.PASS_TILING:
                    continue    # the op refuses it on a GPU
                for aligned in alignments:
                    size = ALIGNED_SIZE if aligned else UNALIGNED_SIZE
                    launches, _ = record_launches(DTYPES[dtype_name], head_dim, *size,
                                                  arch=arch_name)
                    seen = set()
                    for launch in launches:
                        for config in selectable_configs(launch.kernel):
                            label = _config_label(config, launch.kwargs)
                            binary = compile_launch(launch, ARCHS[arch_name], config)
                            if (launch.name, label, binary.hash) in seen:
                                continue    # the same binary launched twice
                            seen.add((launch.name, label, binary.hash))
                            rows.append(kernel_stats(binary, arch_name, dtype_name, head_dim,
                                                     aligned, launch.name, label,
                                                     launch.kwargs.get('BLOCK_L', 0)))
                            if progress is not None:
                                progress(rows[-1])
    return rows


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------

PASS_NAMES = {
    '_rala_fwd_query_sum_kernel': 'F1',
    '_rala_fwd_state_kernel': 'F2',
    '_rala_fwd_output_kernel': 'F3',
    '_rala_bwd_state_grad_kernel': 'B1',
    '_rala_bwd_key_value_kernel': 'B2',
    '_rala_bwd_query_kernel': 'B3',
}


def _widths(counts: dict) -> str:
    return ' '.join(f'{counts.get(width, 0):>3}' for width in (2, 4, 8, 16))


def format_kernel_table(rows) -> str:
    header = ('| arch | dtype | d | aligned | kernel | config | regs | stack | spill B '
              '| smem B | programs / SM | loads 2/4/8/16 B | stores 2/4/8/16 B '
              '| loop instr / token |')
    lines = [header, '|' + '---|' * 14]
    for row in rows:
        name = PASS_NAMES.get(row.kernel, row.kernel.removeprefix('_rala_').removesuffix(
            '_kernel'))
        per_token = row.instructions_per_token
        lines.append(f'| {row.arch} | {row.dtype} | {row.head_dim} | '
                     f"{'yes' if row.aligned else 'no'} | {name} | {row.config} | "
                     f'{row.registers} | {row.stack_bytes} | {row.spill_bytes} | '
                     f'{row.shared_bytes} | {row.programs_per_sm} | {_widths(row.loads)} | '
                     f'{_widths(row.stores)} | '
                     f"{'-' if per_token is None else f'{per_token:.0f}'} |")
    return '\n'.join(lines)


def pass_bytes(geometry, element_size: int):
    """[(pass, model bytes, distinct bytes, requested bytes)] of one forward and backward.

    The byte model (docs/rala_kernel.md section 6) is the floor: every token tensor a
    pass reads or writes crosses DRAM exactly once, in the input dtype, and nothing else
    does. The other two count what the op's real launch geometry touches on top:

    - distinct bytes, each byte a launch reads or writes counted once: the token
      tensors, the RoPE table, the saved state and vectors, the chunk partials. The
      estimate of its DRAM traffic when nothing is evicted early;
    - requested bytes, what its programs ask of the memory system, L2 hits included:
      every program reads the state, its vectors and the RoPE rows and columns its
      chunk spans, and the last program of each (image, head) sums the partials.

    Counts from the geometry, not measurements.
    """
    tokens = geometry.batch * geometry.channels * geometry.num_tokens * element_size
    chunks = geometry.num_chunks * geometry.batch_heads
    heads = geometry.batch_heads
    flat = geometry.flat_state * 4                       # [S | km] or [dS | dkm], fp32
    vector = geometry.head_dim * 4                       # qm, dqm or a partial of one
    table = (geometry.height + geometry.width) * (geometry.head_dim // 4) * 2 * 4
    # (cos, sin) per frequency of the rows a chunk spans and the columns it covers.
    rows = min(geometry.height, geometry.chunk_tokens // geometry.width + 2)
    cols = min(geometry.width, geometry.chunk_tokens)
    rope = (rows + cols) * (geometry.head_dim // 4) * 2 * 4
    passes = [
        # pass, token tensors streamed, distinct extra bytes, requested extra bytes
        ('F1', 1, chunks * vector + heads * vector, 2 * chunks * vector + heads * vector),
        ('F2', 2, table + heads * vector + chunks * (flat + 8),
         chunks * (vector + rope + flat + 8)),
        ('combine S', 0, chunks * (flat + 8) + heads * (flat + 4),
         chunks * (flat + 8) + heads * (flat + 4)),
        ('F3', 2, table + heads * flat, chunks * (flat + rope)),
        ('B1', 2, table + heads * flat + chunks * flat, chunks * (2 * flat + rope)),
        ('combine dS', 0, chunks * flat + heads * flat, chunks * flat + heads * flat),
        ('B2', 4, table + heads * (2 * flat + 2 * vector) + chunks * vector,
         chunks * (2 * flat + 3 * vector + rope) + chunks * vector),
        ('B3', 3, table + heads * (flat + vector), chunks * (flat + vector + rope)),
    ]
    return [(name, streams * tokens, streams * tokens + distinct, streams * tokens + requested)
            for name, streams, distinct, requested in passes]


def format_byte_table(workload=STAGE1) -> str:
    module = gpu_build()
    dtype = DTYPES[workload['dtype']]
    channels = workload['heads'] * workload['head_dim']
    qkv = torch.empty(workload['batch'], 3 * channels, workload['height'], workload['width'],
                      dtype=dtype, device='meta')
    geometry = module._Geometry(qkv, workload['heads'])
    lines = [f"Workload: B={workload['batch']}, {workload['heads']} head(s), "
             f"d={workload['head_dim']}, {workload['height']}x{workload['width']} tokens, "
             f"{workload['dtype']}: {geometry.num_chunks} chunks of {geometry.chunk_tokens} "
             f'tokens per (image, head), {geometry.num_chunks * geometry.batch_heads} '
             'programs per token pass.', '',
             '| pass | byte model MB | distinct MB | ratio | requested MB | ratio |',
             '|---|---|---|---|---|---|']
    totals = {'forward': [0, 0, 0], 'backward': [0, 0, 0]}
    for name, *counts in pass_bytes(geometry, qkv.element_size()):
        side = 'forward' if name in ('F1', 'F2', 'combine S', 'F3') else 'backward'
        totals[side] = [a + b for a, b in zip(totals[side], counts)]
        lines.append(_byte_row(name, *counts))
    lines += [_byte_row(f'**{side}**', *counts) for side, counts in totals.items()]
    return '\n'.join(lines)


def _byte_row(name, model, distinct, requested) -> str:
    def ratio(value):
        return f'{value / model:.2f}' if model else '-'
    return (f'| {name} | {model / 1e6:.1f} | {distinct / 1e6:.1f} | {ratio(distinct)} | '
            f'{requested / 1e6:.1f} | {ratio(requested)} |')
