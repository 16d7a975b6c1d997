"""Print the static proof of the fused RALA kernels: no GPU needed.

Compiles every kernel launch of a forward and backward pass for sm_90 and sm_80 (with
the ptxas and cuobjdump of the triton wheel) and prints registers, spills, shared
memory and global accesses by width per kernel, then the bytes each pass moves at
RAVLT-S's stage 1 against the byte model. See mmrala/ops/kernel_report.py.

    python tools/rala_kernel_report.py                      # the full table (minutes)
    python tools/rala_kernel_report.py --arch sm_90 --dtype bf16 --head-dim 64
"""
from __future__ import annotations

import argparse
import os
import sys

from mmrala.ops import kernel_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', nargs='+', default=list(kernel_report.ARCHS),
                        choices=list(kernel_report.ARCHS))
    parser.add_argument('--dtype', nargs='+', default=list(kernel_report.HALF_DTYPES),
                        choices=list(kernel_report.DTYPES))
    parser.add_argument('--head-dim', nargs='+', type=int, default=[64, 96])
    parser.add_argument('--aligned-only', action='store_true',
                        help='skip the builds for H * W that are not a multiple of the vector')
    parser.add_argument('--bytes-only', action='store_true', help='print only the byte table')
    args = parser.parse_args(argv)
    if os.environ.get('TRITON_INTERPRET', '0') not in ('', '0'):
        parser.error('unset TRITON_INTERPRET: the report compiles for the GPU.')
    if not args.bytes_only:
        if not kernel_report.nvidia_toolchain_available():
            parser.error('triton without its CUDA tools (ptxas, cuobjdump): nothing to compile.')
        alignments = (True,) if args.aligned_only else (True, False)
        rows = kernel_report.collect(args.arch, args.dtype, args.head_dim, alignments,
                                     progress=lambda row: print('.', end='', flush=True,
                                                                file=sys.stderr))
        print(file=sys.stderr)
        print(kernel_report.format_kernel_table(rows))
        print()
        bad = [row for row in rows if row.spill_bytes
               or (row.aligned and row.dtype in kernel_report.HALF_DTYPES
                   and row.narrow_accesses)]
        print(f'{len(rows)} kernel builds; {len(bad)} spill or make 2-byte accesses where '
              'the rows are aligned.')
        print()
    print(kernel_report.format_byte_table())
    return 0


if __name__ == '__main__':
    sys.exit(main())
