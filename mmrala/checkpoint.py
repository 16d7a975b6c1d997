"""Checkpoints: reading any file safely (weights only), checking a state dict against a
model and naming every bad key, and mapping the authors' names onto mmrala's.

Plain torch: used by the OpenMMLab glue (``init_cfg=dict(type='Pretrained')``), by
``tools/convert_official.py`` and by the timm factories.

The authors publish two kinds of files (docs/architecture.md#6-checkpoint-layouts):

* ImageNet: ``{'model': state_dict, 'args': argparse.Namespace, ...}`` with names like
  ``layers.0.blocks.1.attn.qkvo.weight`` and the head as ``proj``, ``norm``, ``head``;
* detection and segmentation: mmdet 2.x / mmseg 0.x ``{'state_dict': ...}`` with the
  same names under ``backbone.`` plus ``backbone.extra_norms.{i}.norm.*``.

Every file is read with ``torch.load(weights_only=True)``; only ``argparse.Namespace``
is allow-listed on top of torch's own safe types, and only while reading.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections import OrderedDict

import torch

from .ops import rope_angle

__all__ = ['CheckpointError', 'load_checkpoint_file', 'extract_state_dict',
           'is_official_layout', 'convert_official_state_dict', 'convert_official_checkpoint',
           'model_state_dict_from_checkpoint', 'split_official_classifier',
           'backbone_state_dict', 'check_backbone_state_dict']


# The first bytes of torch.save's zip archives and of legacy (pickle) checkpoints.
ZIP_MAGIC = b'PK\x03\x04'
PICKLE_PROTOCOL_MARK = b'\x80'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def load_checkpoint_file(path: str | os.PathLike, map_location='cpu') -> dict:
    """``torch.load`` with weights_only on, allow-listing only ``argparse.Namespace``.

    Raises :class:`CheckpointError` naming the cause for a missing, truncated or
    corrupted file, and for one that needs arbitrary pickle to load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} does not exist; check the path '
                              '(e.g. --cfg-options model.backbone.init_cfg.checkpoint=PATH).')
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL_MARK)):
        raise CheckpointError(
            f'{path!r} ({os.path.getsize(path)} bytes) is not a PyTorch checkpoint: it is '
            f'neither a torch.save zip archive nor a legacy pickle (it starts with {head!r}). '
            'Is it the right file, or an interrupted download?')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refused to load {path!r}: it needs arbitrary pickle (weights_only=True rejected '
            f'it: {str(err).splitlines()[0]}). mmrala only loads plain weights; a file like '
            'this can run code when unpickled. If you trust its source, re-save its state '
            'dict with torch.save(state_dict, ...) and pass that file instead.') from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        size = os.path.getsize(path)
        raise CheckpointError(
            f'cannot read checkpoint {path!r} ({size} bytes): the file is truncated or '
            f'corrupted ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}). '
            'Download or copy it again and compare its size and checksum.') from err


def extract_state_dict(checkpoint) -> dict:
    """The tensors of a loaded checkpoint, wherever the writer put them."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'expected a checkpoint dict, got {type(checkpoint).__name__}.')
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict(
        (name[len('module.'):] if name.startswith('module.') else name, value)
        for name, value in checkpoint.items() if isinstance(value, torch.Tensor))
    if not state_dict:
        raise CheckpointError('the checkpoint holds no tensors under "state_dict", "model" or at '
                              f'its top level (top-level keys: {sorted(checkpoint)[:10]}).')
    return state_dict


_OFFICIAL_MARKERS = re.compile(r'(^|\.)(layers\.\d+\.|extra_norms\.)')


def is_official_layout(state_dict) -> bool:
    """True for the authors' names (``layers.i.``, ``extra_norms.``), False for mmrala's."""
    return any(_OFFICIAL_MARKERS.search(name) for name in state_dict)


# (authors' pattern, mmrala replacement), applied in order to each backbone name; the
# authors' downsample ends stage i, mmrala's starts stage i + 1 (handled separately).
_RENAMES = [
    (re.compile(r'^layers\.(\d+)\.blocks\.'), r'stages.\1.blocks.'),
    (re.compile(r'\.pos\.'), '.pos_embed.'),
    (re.compile(r'\.norm([12])\.norm\.'), r'.norm\1.'),
    (re.compile(r'\.gamma_([12])$'), r'.gamma\1'),
    (re.compile(r'\.ffn\.'), '.mlp.'),
    (re.compile(r'^extra_norms\.(\d+)\.norm\.'), r'out_norms.\1.'),
]
_CLASSIFIER_HEAD = {'proj': 'head.proj', 'norm': 'head.norm', 'head': 'head.fc'}


def _rename_backbone_key(name: str) -> str:
    downsample = re.match(r'^layers\.(\d+)\.downsample\.(.*)$', name)
    if downsample:
        return f'stages.{int(downsample.group(1)) + 1}.downsample.{downsample.group(2)}'
    for pattern, replacement in _RENAMES:
        name = pattern.sub(replacement, name)
    return name


def _check_rope_angle(name, value):
    head_dim = 2 * value.numel()
    expected = rope_angle(head_dim).to(value.dtype)
    if not torch.allclose(value.cpu(), expected, rtol=1e-5, atol=1e-7):
        raise CheckpointError(f'{name} does not match the 2-D RoPE of RAVLT '
                              f'(head dim {head_dim}); this is not a RAVLT checkpoint.')


def convert_official_state_dict(state_dict) -> OrderedDict:
    """Rename the authors' keys to mmrala's.

    Works on a bare backbone (ImageNet file) and on a detection or segmentation
    ``state_dict`` whose backbone sits under ``backbone.`` (neck and heads pass through
    unchanged: their mmdet 2.x / mmseg 0.x names are the current ones). The authors'
    RoPE buffers are checked against mmrala's formula and dropped: mmrala rebuilds them.
    The ImageNet head (``proj``, ``norm``, ``head``) becomes ``head.proj``, ``head.norm``
    and ``head.fc`` of :class:`~mmrala.models.RAVLTClassifier`.
    """
    converted = OrderedDict()
    has_backbone_prefix = any(name.startswith('backbone.') for name in state_dict)
    for name, value in state_dict.items():
        prefix = ''
        if has_backbone_prefix:
            if not name.startswith('backbone.'):
                converted[name] = value
                continue
            prefix, name = 'backbone.', name[len('backbone.'):]
        if name.endswith('RoPE.angle'):
            _check_rope_angle(prefix + name, value)
            continue
        head_part = name.split('.', 1)[0]
        if not has_backbone_prefix and head_part in _CLASSIFIER_HEAD:
            new_name = _CLASSIFIER_HEAD[head_part] + name[len(head_part):]
            if head_part == 'head' and value.dim() == 4:
                value = value.flatten(1)   # the authors' 1x1 conv classifier -> nn.Linear
            converted[new_name] = value
            continue
        converted[prefix + _rename_backbone_key(name)] = value
    return converted


def convert_official_checkpoint(state_dict) -> OrderedDict:
    """An authors' file as the mmrala model that matches it: a detector or segmentor
    (``backbone.*`` renamed, neck and heads kept) or an mmpretrain ``ImageClassifier``
    (``backbone.*``, ``neck.*`` for RAVLTClsNeck, ``head.fc.*`` for LinearClsHead)."""
    if not is_official_layout(state_dict):
        raise CheckpointError("this file has no authors' RAVLT keys (layers.N..., "
                              'extra_norms...); is it already an mmrala checkpoint?')
    converted = convert_official_state_dict(state_dict)
    if any(name.startswith('backbone.') for name in converted):
        return converted
    trunk, head = split_official_classifier(converted)
    out = OrderedDict((f'backbone.{k}', v) for k, v in trunk.items())
    for name, value in head.items():
        out[f'head.{name}' if name.startswith('fc.') else f'neck.{name}'] = value
    return out


def model_state_dict_from_checkpoint(checkpoint, source='checkpoint'):
    """The whole-model state dict of a loaded checkpoint, in mmrala's names.

    Returns ``(state_dict, converted)``; ``converted`` is True for an authors' file,
    whose names were converted on the fly.
    """
    state_dict = extract_state_dict(checkpoint)
    if not is_official_layout(state_dict):
        return state_dict, False
    return convert_official_checkpoint(state_dict), True


def split_official_classifier(state_dict):
    """Split a converted ImageNet state dict into (trunk, head) parts."""
    trunk = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith('head.'))
    head = OrderedDict((k[len('head.'):], v) for k, v in state_dict.items()
                       if k.startswith('head.'))
    return trunk, head


def backbone_state_dict(state_dict) -> OrderedDict:
    """The backbone part of any RAVLT checkpoint, in mmrala's names.

    Accepts the authors' ImageNet, detection and segmentation files, mmrala's own
    checkpoints (``backbone.`` prefix) and a bare mmrala backbone state dict.
    """
    if is_official_layout(state_dict):
        state_dict = convert_official_state_dict(state_dict)
    if any(name.startswith('backbone.') for name in state_dict):
        return OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                           if k.startswith('backbone.'))
    return OrderedDict((k, v) for k, v in state_dict.items()
                       if not k.startswith(('head.', 'neck.')))


def _describe(names, limit=8):
    names = sorted(names)
    shown = ', '.join(names[:limit])
    return shown + (f' ... ({len(names) - limit} more)' if len(names) > limit else '')


def check_backbone_state_dict(model_state, checkpoint_state, source='checkpoint'):
    """Validate a backbone state dict against a model's before loading it.

    The output LayerNorms (``out_norms.*``) are new layers when fine-tuning from an
    ImageNet file, so they may be missing from a checkpoint that has none at all; those
    of stages the model does not return are dropped. Anything else missing, unexpected
    or of the wrong shape raises :class:`CheckpointError` listing the keys.

    Returns the state dict to load with ``strict=False`` and the keys left at init.
    """
    checkpoint_state = OrderedDict(checkpoint_state)
    ckpt_has_out_norms = any(k.startswith('out_norms.') for k in checkpoint_state)
    for name in [k for k in checkpoint_state
                 if k.startswith('out_norms.') and k not in model_state]:
        checkpoint_state.pop(name)
    missing = set(model_state) - set(checkpoint_state)
    allowed_missing = ({k for k in missing if k.startswith('out_norms.')}
                       if not ckpt_has_out_norms else set())
    missing -= allowed_missing
    unexpected = set(checkpoint_state) - set(model_state)
    mismatched = [f'{k}: checkpoint {tuple(checkpoint_state[k].shape)} vs model '
                  f'{tuple(model_state[k].shape)}'
                  for k in model_state if k in checkpoint_state
                  and checkpoint_state[k].shape != model_state[k].shape]
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches, first: ' + '; '.join(mismatched[:5])
                        + ' -- is this a checkpoint of another RAVLT variant (arch)?')
    if missing:
        problems.append(f'{len(missing)} backbone weights missing from the checkpoint: '
                        + _describe(missing))
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected weights in the checkpoint: '
                        + _describe(unexpected))
    if problems:
        raise CheckpointError(f'{source} does not fit this RAVLT backbone:\n  - '
                              + '\n  - '.join(problems))
    return checkpoint_state, sorted(allowed_missing)
