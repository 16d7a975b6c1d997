"""The authors' checkpoint layout, its conversion, and safe loading (plain torch).

Loading through timm is in test_timm.py."""
import os
import pickle

import pytest
import torch
from authors_checkpoint import (
    authors_state_dict,
    save_authors_dense_file,
    save_authors_imagenet_file,
)

from mmrala.checkpoint import (
    CheckpointError,
    backbone_state_dict,
    check_backbone_state_dict,
    convert_official_state_dict,
    load_checkpoint_file,
)
from mmrala.models import RAVLT, RAVLTClassifier


def test_authors_layout_matches_the_spec(classifier_t):
    keys = authors_state_dict(classifier_t).keys()
    for expected in ['patch_embed.proj.0.weight', 'patch_embed.proj.10.running_var',
                     'layers.0.RoPE.angle', 'layers.1.blocks.1.pos.weight',
                     'layers.2.blocks.5.norm1.norm.bias', 'layers.3.blocks.0.attn.qkvo.weight',
                     'layers.0.blocks.0.attn.lepe.bias', 'layers.3.blocks.1.attn.proj.weight',
                     'layers.2.blocks.0.gamma_1', 'layers.2.blocks.0.ffn.dwconv.weight',
                     'layers.2.downsample.reduction.weight',
                     'layers.0.downsample.norm.num_batches_tracked',
                     'proj.weight', 'norm.running_mean', 'head.weight', 'head.bias']:
        assert expected in keys, expected
    assert not any(k.startswith('layers.3.downsample') for k in keys)


def test_converted_imagenet_weights_load_strictly_and_reproduce_the_model(classifier_t):
    converted = convert_official_state_dict(authors_state_dict(classifier_t))
    fresh = RAVLTClassifier('t').eval()
    fresh.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), classifier_t(x), rtol=0, atol=0)


def test_dense_file_with_extra_norms_loads_every_backbone_weight(tmp_path):
    torch.manual_seed(1)
    backbone = RAVLT('t')
    for norm in backbone.out_norms.values():
        torch.nn.init.normal_(norm.weight)
    neck = {'neck.lateral_convs.0.conv.weight': torch.randn(256, 64, 1, 1)}
    path = tmp_path / 'maskrcnn_ravlt_t.pth'
    save_authors_dense_file(backbone, path, extra=neck)
    state = backbone_state_dict(load_checkpoint_file(path)['state_dict'])
    fresh = RAVLT('t')
    checked, left_at_init = check_backbone_state_dict(fresh.state_dict(), state)
    assert left_at_init == []
    fresh.load_state_dict(checked, strict=True)
    for name, value in backbone.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_imagenet_file_into_a_dense_backbone_leaves_only_out_norms_new(classifier_t):
    state = backbone_state_dict(authors_state_dict(classifier_t))
    checked, left_at_init = check_backbone_state_dict(RAVLT('t').state_dict(), state)
    assert left_at_init and all(k.startswith('out_norms.') for k in left_at_init)
    assert not any(k.startswith('head.') for k in checked)


def test_other_variant_fails_naming_the_mismatching_keys():
    state = backbone_state_dict(authors_state_dict(RAVLTClassifier('s')))
    with pytest.raises(CheckpointError) as err:
        check_backbone_state_dict(RAVLT('b').state_dict(), state, source='RAVLT_S.pth')
    message = str(err.value)
    assert 'RAVLT_S.pth does not fit' in message and 'shape mismatches' in message
    assert 'patch_embed.proj.0.weight: checkpoint (32, 3, 3, 3) vs model (48, 3, 3, 3)' in message
    assert 'backbone weights missing' in message   # B is deeper than S


def test_missing_and_unexpected_backbone_keys_are_listed(classifier_t):
    state = backbone_state_dict(authors_state_dict(classifier_t))
    state.pop('stages.1.blocks.0.attn.qkvo.weight')
    state['stages.1.blocks.9.attn.qkvo.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r'(?s)1 backbone weights missing.*'
                       r'stages\.1\.blocks\.0\.attn\.qkvo\.weight.*1 unexpected.*blocks\.9'):
        check_backbone_state_dict(RAVLT('t').state_dict(), state)


def test_wrong_rope_buffer_is_not_a_ravlt_checkpoint(classifier_t):
    state = authors_state_dict(classifier_t)
    state['layers.0.RoPE.angle'] = state['layers.0.RoPE.angle'] * 2
    with pytest.raises(CheckpointError, match='RoPE'):
        convert_official_state_dict(state)


class NotAWeight:
    def __reduce__(self):
        return (os.getcwd, ())


def test_arbitrary_pickle_is_refused_with_weights_only(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.ones(1)}, 'hook': NotAWeight()}, path)
    with pytest.raises(CheckpointError, match='arbitrary pickle'):
        load_checkpoint_file(path)


def test_truncated_and_corrupted_files_are_refused(tmp_path, classifier_t):
    path = tmp_path / 'RAVLT_T.pth'
    save_authors_imagenet_file(classifier_t, path)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        load_checkpoint_file(truncated)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all' * 10)
    # not explained as an unsafe pickle: it is no checkpoint at all
    with pytest.raises(CheckpointError, match='is not a PyTorch checkpoint'):
        load_checkpoint_file(garbage)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint_file(tmp_path / 'nope.pth')


def test_authors_file_needs_only_namespace_allow_listed(tmp_path, classifier_t):
    path = tmp_path / 'RAVLT_T.pth'
    save_authors_imagenet_file(classifier_t, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)       # torch alone refuses argparse.Namespace
    assert 'model' in load_checkpoint_file(path)
