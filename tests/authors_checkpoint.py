"""Builds state dicts in the authors' key layout (docs/architecture.md#6-checkpoint-layouts) from an mmrala
model, independently of ``mmrala.checkpoint``, so that the converter is tested against the
documented layout rather than against itself."""
import argparse
import re

import torch

from mmrala.ops import rope_angle

BLOCK_PARTS = {'pos_embed.': 'pos.', 'norm1.': 'norm1.norm.', 'norm2.': 'norm2.norm.',
               'attn.': 'attn.', 'mlp.': 'ffn.', 'gamma1': 'gamma_1', 'gamma2': 'gamma_2'}
HEAD_PARTS = {'head.proj.': 'proj.', 'head.norm.': 'norm.', 'head.fc.': 'head.'}


def authors_name(name):
    if name.startswith('patch_embed.proj.'):
        return name
    match = re.match(r'stages\.(\d+)\.downsample\.(.*)', name)
    if match:
        return f'layers.{int(match[1]) - 1}.downsample.{match[2]}'
    match = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.(.*)', name)
    if match:
        for ours, theirs in BLOCK_PARTS.items():
            if match[3].startswith(ours):
                return f'layers.{match[1]}.blocks.{match[2]}.{theirs}{match[3][len(ours):]}'
    match = re.match(r'out_norms\.(\d+)\.(.*)', name)
    if match:
        return f'extra_norms.{match[1]}.norm.{match[2]}'
    for ours, theirs in HEAD_PARTS.items():
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(f'no authors\' name for {name}')


def authors_state_dict(model):
    """The authors' state dict of an mmrala RAVLT / RAVLTClassifier ``model``."""
    state = {}
    for name, value in model.state_dict().items():
        value = value.clone()
        if name == 'head.fc.weight':
            value = value[:, :, None, None]     # their classifier is a 1x1 conv
        state[authors_name(name)] = value
    for i, heads in enumerate(model.num_heads):
        state[f'layers.{i}.RoPE.angle'] = rope_angle(model.embed_dims[i] // heads)
    return state


def save_authors_imagenet_file(model, path):
    args = argparse.Namespace(model='RAVLT', lr=1e-3, epochs=300)
    torch.save({'model': authors_state_dict(model), 'args': args, 'epoch': 299}, path)


def save_authors_dense_file(backbone, path, extra=None):
    state = {f'backbone.{k}': v for k, v in authors_state_dict(backbone).items()}
    state.update(extra or {})
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, path)
