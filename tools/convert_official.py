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
import sys
import time
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmrala.convert import (  # noqa: E402
    CheckpointError,
    convert_official_state_dict,
    extract_state_dict,
    is_official_layout,
    load_checkpoint_file,
    split_official_classifier,
)


def to_mmrala(state_dict) -> OrderedDict:
    if not is_official_layout(state_dict):
        raise CheckpointError('this file has no authors\' RAVLT keys (layers.N..., '
                              'extra_norms...); is it already an mmrala checkpoint?')
    converted = convert_official_state_dict(state_dict)
    if any(name.startswith('backbone.') for name in converted):
        return converted
    trunk, head = split_official_classifier(converted)
    out = OrderedDict((f'backbone.{k}', v) for k, v in trunk.items())
    for name, value in head.items():
        out[f'head.{name}' if name.startswith('fc.') else f'neck.{name}'] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help="the authors' checkpoint (.pth)")
    parser.add_argument('dst', help='where to write the mmrala checkpoint')
    args = parser.parse_args(argv)

    start = time.time()
    print(f'[1/3] reading {args.src}', flush=True)
    try:
        state_dict = extract_state_dict(load_checkpoint_file(args.src))
        print(f'[2/3] converting {len(state_dict)} tensors', flush=True)
        converted = to_mmrala(state_dict)
    except CheckpointError as err:
        parser.exit(1, f'error: {err}\n')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    meta = dict(converted_from=os.path.basename(args.src), converter='mmrala')
    torch.save(dict(meta=meta, state_dict=converted), args.dst)
    print(f'[3/3] wrote {len(converted)} tensors to {args.dst} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
