#!/usr/bin/env python
"""Convert an authors' RAVLT checkpoint (ImageNet, detection or segmentation) to mmrala.

    python tools/convert_official.py RAVLT_S.pth checkpoints/ravlt_s_in1k_mmrala.pth

ImageNet files become an mmpretrain ``ImageClassifier`` checkpoint (``backbone.*``,
``neck.*`` for RAVLTClsNeck, ``head.fc.*`` for LinearClsHead), usable with
``tools/test.py configs/ravlt_s_in1k.py``. Detection and segmentation files keep their
neck and heads and get the backbone renamed. The input is read with weights_only=True.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from mmrala.checkpoint import (
    CheckpointError,
    convert_official_checkpoint,
    extract_state_dict,
    load_checkpoint_file,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="the authors' checkpoint (.pth)")
    parser.add_argument('dst', help='where to write the mmrala checkpoint')
    parser.add_argument('--force', action='store_true',
                        help='overwrite dst if it exists (never allowed when dst is src)')
    args = parser.parse_args(argv)
    if os.path.exists(args.dst) and os.path.samefile(args.src, args.dst):
        parser.exit(1, f'error: {args.dst} is the input file; the authors\' original is never '
                    'overwritten. Give another output path.\n')
    if os.path.exists(args.dst) and not args.force:
        parser.exit(1, f'error: {args.dst} already exists; pass --force to overwrite it.\n')

    start = time.time()
    print(f'[1/3] reading {args.src}', flush=True)
    try:
        state_dict = extract_state_dict(load_checkpoint_file(args.src))
        print(f'[2/3] converting {len(state_dict)} tensors', flush=True)
        converted = convert_official_checkpoint(state_dict)
    except CheckpointError as err:
        parser.exit(1, f'error: {err}\n')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    meta = dict(converted_from=os.path.basename(args.src), converter='mmrala')
    torch.save(dict(meta=meta, state_dict=converted), args.dst)
    print(f'[3/3] wrote {len(converted)} tensors to {args.dst} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
