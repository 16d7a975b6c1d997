"""The plain torch network: parameter counts, shapes, options and error messages."""
import itertools

import pytest
import torch
import torch.nn as nn
from conftest import AUTHORS_PARAMS

from mmrala.models import ARCH_SETTINGS, RAVLT, RAVLTClassifier


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('arch', sorted(AUTHORS_PARAMS))
def test_classifier_parameter_count_equals_the_authors(arch):
    assert count(RAVLTClassifier(arch, num_classes=1000)) == AUTHORS_PARAMS[arch]


def test_dense_backbone_has_no_head_and_one_norm_per_output():
    model = RAVLT('t', out_indices=(1, 3))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith('head.') for n in names)
    assert sorted({n.split('.')[1] for n in names if n.startswith('out_norms.')}) == ['1', '3']


@pytest.mark.parametrize('size', [(64, 64), (96, 160), (97, 131), (16, 16), (33, 17)])
def test_output_shapes_for_square_non_square_odd_and_tiny_inputs(size):
    model = RAVLT('t').eval()
    height, width = size
    with torch.no_grad():
        outs = model(torch.randn(2, 3, height, width))
    expected_h, expected_w = height, width
    for stage, out in enumerate(outs):
        # each stride-2 conv (k3, p1) maps n -> ceil(n / 2); the stem has two of them
        for _ in range(2 if stage == 0 else 1):
            expected_h, expected_w = (expected_h + 1) // 2, (expected_w + 1) // 2
        assert out.shape == (2, model.embed_dims[stage], expected_h, expected_w)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('out_indices', [
    combo for r in (1, 2, 4) for combo in itertools.combinations(range(4), r)])
def test_every_out_indices_selection(out_indices):
    torch.manual_seed(0)
    model = RAVLT('t', out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 40, 56))
    assert len(outs) == len(out_indices)
    for index, out in zip(out_indices, outs):
        assert out.shape[1] == model.embed_dims[index]
        assert out.shape[-2:] == (-(-40 // 2 ** (index + 2)), -(-56 // 2 ** (index + 2)))


def test_out_norm_is_a_layernorm_over_channels():
    model = RAVLT('t', out_indices=(0,)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        normed = model(x)[0]
        raw = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    # with the LayerNorm's identity init: per pixel, standardised over the C channels
    mean, var = raw.mean(1, keepdim=True), raw.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(normed, (raw - mean) / torch.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)


def test_all_rala_and_all_softmax_models_run_and_differ_in_their_blocks():
    x = torch.randn(1, 3, 48, 40)
    for attn_types in (('rala',) * 4, ('softmax',) * 4):
        model = RAVLT('t', attn_types=attn_types).eval()
        assert {b.attn.attn_type for s in model.stages for b in s.blocks} == {attn_types[0]}
        with torch.no_grad():
            assert all(torch.isfinite(o).all() for o in model(x))


def test_drop_path_grows_linearly_to_the_given_rate():
    model = RAVLT('s', drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == sorted(rates)
    default = RAVLT('b')
    last = default.stages[-1].blocks[-1].drop_path.drop_prob
    assert last == pytest.approx(ARCH_SETTINGS['b']['drop_path_rate'])


def test_layer_scale_init_follows_the_variant():
    model = RAVLT('b')
    assert torch.all(model.stages[0].blocks[0].gamma1 == 1.0)
    assert torch.all(model.stages[2].blocks[0].gamma2 == 1e-6)


@pytest.mark.parametrize('frozen_stages', [0, 1, 2, 4])
def test_frozen_stages_freeze_the_stem_and_first_stages(frozen_stages):
    model = RAVLT('t', frozen_stages=frozen_stages)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not model.patch_embed.training
    for i, stage in enumerate(model.stages):
        frozen = i < frozen_stages
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert stage.training != frozen
        assert all(p.requires_grad != frozen for p in model.out_norms[str(i)].parameters())
    if frozen_stages == len(model.stages):
        assert not any(p.requires_grad for p in model.parameters())
        return
    # frozen weights and BN statistics do not move in a training step; the others do
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    # a random projection: the plain sum of a LayerNorm output has zero gradient
    sum((o * torch.randn_like(o)).sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    optimizer.step()
    after = model.state_dict()
    for name in before:
        is_frozen = name.startswith('patch_embed.') or any(
            name.startswith((f'stages.{i}.', f'out_norms.{i}.')) for i in range(frozen_stages))
        if is_frozen:
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before['stages.3.blocks.0.attn.proj.weight'],
                           after['stages.3.blocks.0.attn.proj.weight'])


def test_norm_eval_keeps_batchnorm_statistics_fixed():
    model = RAVLT('t', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    stats = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(s, bn.running_mean) for s, bn in zip(stats, bns))
    # without norm_eval the statistics move
    model_no_eval = RAVLT('t').train()
    bn = next(m for m in model_no_eval.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model_no_eval(torch.randn(2, 3, 32, 32))
    assert not torch.equal(before, bn.running_mean)


def test_with_cp_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    reference = RAVLT('t', drop_path_rate=0.2)
    checkpointed = RAVLT('t', drop_path_rate=0.2, with_cp=True)
    checkpointed.load_state_dict(reference.state_dict())
    assert checkpointed.with_cp and not reference.with_cp
    x = torch.randn(2, 3, 48, 64)
    results = []
    for model in (reference, checkpointed):
        model.train()
        model.zero_grad()
        torch.manual_seed(1)   # the same drop-path masks in both runs
        outs = model(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append(([o.detach() for o in outs],
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (outs_ref, grads_ref), (outs_cp, grads_cp) = results
    for a, b in zip(outs_ref, outs_cp):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert grads_ref.keys() == grads_cp.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_ref[name], grads_cp[name], rtol=1e-6, atol=1e-7,
                                   msg=name)


def test_every_parameter_gets_a_gradient():
    model = RAVLT('t').train()
    sum((o * torch.randn_like(o)).sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


def test_classifier_forward_and_timm_style_api():
    model = RAVLTClassifier('t', num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        features = model.forward_features(x)
        assert features.shape == (2, 512, 2, 2)
        assert model.forward_head(features, pre_logits=True).shape == (2, 1024)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


def test_bad_configurations_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown RAVLT arch 'xl'.*\['b', 'l', 's', 't'\]"):
        RAVLT('xl')
    with pytest.raises(ValueError, match=r"attn_types.*\('rala', 'softmax'\)"):
        RAVLT('t', attn_types=('rala', 'linear', 'softmax', 'softmax'))
    with pytest.raises(ValueError, match='one of'):
        RAVLT('t', attn_types=('rala',) * 3)
    with pytest.raises(ValueError, match='out_indices'):
        RAVLT('t', out_indices=(4,))
    with pytest.raises(ValueError, match='increasing'):
        RAVLT('t', out_indices=(3, 1))
    with pytest.raises(ValueError, match='needs all of'):
        RAVLT(dict(embed_dims=(32, 64), depths=(1, 1)))
    with pytest.raises(ValueError, match='rala_impl'):
        RAVLT('t', rala_impl='cuda')


def test_custom_arch_dict():
    arch = dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                mlp_ratios=(2, 2, 2, 2), layer_scale_init_values=(1, 1, 1, 1))
    model = RAVLT(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 64, 96, 128]


def test_wrong_channel_count_is_explained():
    model = RAVLT('t')
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\).*\(1, 1, 32, 32\)'):
        model(torch.randn(1, 1, 32, 32))
