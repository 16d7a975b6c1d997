"""RAVLT as a timm model, checked as timm's own tests check every model: the registry and
default cfgs, forward and backward, features_only and forward_intermediates, the pooling and
classifier contract, construction arguments, torch.fx, and pretrained loading."""
import os

import pytest
import timm
import torch
from authors_checkpoint import save_authors_imagenet_file
from conftest import AUTHORS_PARAMS
from timm.layers import create_feature_extractor, get_notrace_functions, get_notrace_modules
from torchvision.models import feature_extraction as tv_fx

from mmrala.checkpoint import CheckpointError
from mmrala.models import RAVLTClassifier

VARIANTS = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l')
# timm's tracer settings, as its own FX tests use them
FX_TRACER_KWARGS = dict(leaf_modules=get_notrace_modules(),
                        autowrap_functions=get_notrace_functions(), param_shapes_constant=True)


def ceil_div(size, reduction):
    return -(-size // reduction)


@pytest.fixture
def tiny_input():
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 48)


@pytest.mark.parametrize('name', VARIANTS)
def test_registered_with_a_default_cfg_naming_the_authors_file(name):
    assert name in timm.list_models('ravlt*')
    assert f'{name}.in1k' in timm.list_models('ravlt*', pretrained=True)
    assert timm.get_pretrained_cfg_value(name, 'input_size') == (3, 224, 224)
    assert timm.get_pretrained_cfg_value(name, 'file') == f'RAVLT_{name[-1].upper()}.pth'
    # built on the meta device: the full-size variants cost no memory or init time
    model = timm.create_model(name, device='meta')
    assert isinstance(model, RAVLTClassifier)
    cfg = model.pretrained_cfg
    assert (cfg['crop_pct'], cfg['interpolation'], cfg['mean'], cfg['std']) == (
        0.9, 'bicubic', (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert cfg['paper_ids'] == 'arXiv:2411.07635'
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert sum(p.numel() for p in model.parameters()) == AUTHORS_PARAMS[name[len('ravlt_'):]]
    assert model.num_features == (640 if name == 'ravlt_l' else 512)
    assert model.head_hidden_size == 1024


def test_default_cfg_shapes_pooling_and_classifier_contract():
    """timm's test_model_default_cfgs, at the default cfg's input size."""
    model = timm.create_model('ravlt_t').eval()
    pool_size = model.pretrained_cfg['pool_size']
    x = torch.randn(1, *model.pretrained_cfg['input_size'])
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model(x)
        assert features.shape == (1, model.num_features, *pool_size)
        assert pre_logits.shape == (1, model.head_hidden_size)
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()

        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre_logits, rtol=0, atol=0)

        # global_pool='' keeps the head's per-pixel layers (conv, BN, Swish) and skips the
        # pool: the unpooled map averages to the pooled features
        model.reset_classifier(0, '')
        unpooled = model(x)
        assert unpooled.shape == (1, model.head_hidden_size, *pool_size)
        torch.testing.assert_close(unpooled.mean((2, 3)), pre_logits, rtol=1e-5, atol=1e-6)

        # a classifier without pooling gives per-pixel logits
        model.reset_classifier(10, '')
        dense = model(x)
        assert dense.shape == (1, 10, *pool_size)
        fc = model.get_classifier()
        torch.testing.assert_close(dense[0, :, 3, 4], fc(unpooled[0, :, 3, 4]))

        model.reset_classifier(10, 'avg')
        assert model(x).shape == (1, 10)
        model.reset_classifier(0, 'catavgmax')
        assert model(x).shape == (1, 2 * 1024) and model.head_hidden_size == 2 * 1024

        no_head = timm.create_model('ravlt_t', num_classes=0, global_pool='').eval()
        assert no_head(x).shape == (1, 1024, *pool_size)


def test_backward_reaches_every_parameter():
    """timm's test_model_backward."""
    model = timm.create_model('ravlt_t', num_classes=42).train()
    outputs = model(torch.randn(2, 3, 96, 96))
    outputs.mean().backward()
    assert outputs.shape == (2, 42) and torch.isfinite(outputs).all()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3)])
def test_features_only_matches_feature_info_and_forward_intermediates(out_indices, tiny_input):
    kwargs = {} if out_indices == (0, 1, 2, 3) else dict(out_indices=out_indices)
    torch.manual_seed(0)
    features = timm.create_model('ravlt_t', features_only=True, **kwargs).eval()
    assert type(features).__name__ == 'FeatureListNet'
    all_channels, all_reductions = [64, 128, 256, 512], [4, 8, 16, 32]
    assert features.feature_info.channels() == [all_channels[i] for i in out_indices]
    assert features.feature_info.reduction() == [all_reductions[i] for i in out_indices]
    assert features.feature_info.module_name() == [f'stages.{i}' for i in out_indices]

    torch.manual_seed(0)   # the same weights: FeatureListNet renames the stages
    model = timm.create_model('ravlt_t').eval()
    assert torch.equal(features.stages_3.blocks[1].mlp.fc2.weight,
                       model.stages[3].blocks[1].mlp.fc2.weight)
    with torch.no_grad():
        outs = features(tiny_input)
        intermediates = model.forward_intermediates(tiny_input, indices=out_indices,
                                                    intermediates_only=True)
    assert len(outs) == len(out_indices)
    for out, ref, channels, reduction in zip(outs, intermediates,
                                             features.feature_info.channels(),
                                             features.feature_info.reduction()):
        assert out.shape == (2, channels, ceil_div(64, reduction), ceil_div(48, reduction))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_forward_intermediates_follows_timm_semantics(tiny_input):
    model = timm.create_model('ravlt_t').eval()
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(tiny_input)
        torch.testing.assert_close(final, model.forward_features(tiny_input), rtol=0, atol=0)
        assert [t.shape[1] for t in intermediates] == [64, 128, 256, 512]
        last_two = model.forward_intermediates(tiny_input, indices=2, intermediates_only=True)
        for a, b in zip(last_two, intermediates[2:]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        early, (stage1,) = model.forward_intermediates(tiny_input, indices=[1], stop_early=True)
        torch.testing.assert_close(early, intermediates[1], rtol=0, atol=0)
        torch.testing.assert_close(stage1, intermediates[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        model.forward_intermediates(tiny_input, output_fmt='NHWC')


def test_getter_and_fx_feature_classes_agree_with_the_default(tiny_input):
    torch.manual_seed(0)
    reference = timm.create_model('ravlt_t', features_only=True).eval()
    for feature_cls in ('getter', 'fx'):
        torch.manual_seed(0)   # the same weights under each wrapper's own module names
        other = timm.create_model('ravlt_t', features_only=True, feature_cls=feature_cls).eval()
        with torch.no_grad():
            for a, b in zip(other(tiny_input), reference(tiny_input)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prune_intermediate_layers_keeps_what_the_indices_need(tiny_input):
    full = timm.create_model('ravlt_t').eval()
    pruned = timm.create_model('ravlt_t').eval()
    pruned.load_state_dict(full.state_dict())
    assert pruned.prune_intermediate_layers(indices=(1, 2)) == [1, 2]
    assert len(pruned.stages) == 3
    assert not any(k.startswith(('stages.3.', 'head.')) for k in pruned.state_dict())
    assert (pruned.num_features, pruned.head_hidden_size, pruned.num_classes) == (256, 256, 0)
    with torch.no_grad():
        kept = pruned.forward_intermediates(tiny_input, indices=(1, 2), intermediates_only=True)
        reference = full.forward_intermediates(tiny_input, indices=(1, 2),
                                               intermediates_only=True)
        for a, b in zip(kept, reference):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # with the head pruned, forward is the last kept stage's map
        torch.testing.assert_close(pruned(tiny_input), reference[-1], rtol=0, atol=0)
    keep_head = timm.create_model('ravlt_t')
    keep_head.prune_intermediate_layers(indices=1, prune_head=False)
    assert len(keep_head.stages) == 4 and keep_head.get_classifier().out_features == 1000


def test_device_dtype_and_in_chans_construction(tiny_input):
    model = timm.create_model('ravlt_t', device='cpu', dtype=torch.bfloat16, num_classes=5)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {('cpu', torch.bfloat16)}
    model.reset_classifier(7)
    assert model.get_classifier().weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = model.eval()(tiny_input[:, :, :32, :32].bfloat16())
    assert out.shape == (2, 7) and out.dtype == torch.bfloat16 and torch.isfinite(out).all()

    gray = timm.create_model('ravlt_t', in_chans=1, num_classes=3).eval()
    assert gray.in_chans == gray.in_channels == 1
    assert gray.patch_embed.proj[0].weight.shape[1] == 1
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 1, H, W\)'):
        gray(tiny_input)


def test_set_grad_checkpointing_changes_no_output_or_gradient():
    torch.manual_seed(0)
    reference = timm.create_model('ravlt_t', drop_path_rate=0.0, num_classes=4)
    checkpointed = timm.create_model('ravlt_t', drop_path_rate=0.0, num_classes=4)
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.set_grad_checkpointing()
    assert checkpointed.with_cp and not reference.with_cp
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (reference, checkpointed):
        out = model.train()(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=0)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-6, atol=1e-7, msg=name)
    checkpointed.set_grad_checkpointing(False)
    assert not checkpointed.with_cp


def test_fx_symbolic_trace_matches_eager_and_keeps_the_input_check(tiny_input):
    model = timm.create_model('ravlt_t').eval()
    traced = torch.fx.symbolic_trace(model)
    leaves = {getattr(node.target, '__name__', '') for node in traced.graph.nodes
              if node.op == 'call_function'}
    assert {'rala_gated_attention', 'rope_pair_phases', 'apply_rope',
            '_checked_images'} <= leaves
    with torch.no_grad():
        assert torch.equal(traced(tiny_input), model(tiny_input))
    with pytest.raises(ValueError, match='expects images of shape'):
        traced(tiny_input[:, :1])


def test_fx_feature_extraction_forward_and_backward():
    """timm's test_model_forward_fx / test_model_backward_fx, through torchvision's
    feature extractor with timm's tracer settings."""
    model = timm.create_model('ravlt_t', num_classes=42)
    train_nodes, eval_nodes = tv_fx.get_graph_node_names(model, tracer_kwargs=FX_TRACER_KWARGS)
    fx_model = tv_fx.create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
        tracer_kwargs=FX_TRACER_KWARGS)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model.eval()(x)
        (fx_out,) = fx_model.eval()(x).values()
    assert torch.equal(fx_out, expected)

    (outputs,) = fx_model.train()(x).values()
    outputs.mean().backward()
    assert outputs.shape == (2, 42)
    assert [n for n, p in fx_model.named_parameters() if p.grad is None] == []
    assert sum(p.numel() for p in fx_model.parameters()) == sum(
        p.numel() for p in model.parameters())


def test_fx_stage_outputs_match_forward_intermediates(tiny_input):
    backbone = timm.create_model('ravlt_t').eval()
    extractor = create_feature_extractor(backbone, {'stages.1': 'c3', 'stages.3': 'c5'})
    with torch.no_grad():
        outs = extractor(tiny_input)
        reference = backbone.forward_intermediates(tiny_input, indices=(1, 3),
                                                   intermediates_only=True)
    assert list(outs) == ['c3', 'c5']
    for out, ref in zip(outs.values(), reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_pretrained_loads_the_authors_file(tmp_path, classifier_t, tiny_input):
    path = tmp_path / 'RAVLT_T.pth'
    save_authors_imagenet_file(classifier_t, path)
    overlay = dict(file=str(path))
    model = timm.create_model('ravlt_t', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_input), classifier_t(tiny_input), rtol=0, atol=0)

    # another class count keeps the trunk and the head's conv, with its own classifier
    ten_way = timm.create_model('ravlt_t', pretrained=True, num_classes=10,
                                pretrained_cfg_overlay=overlay)
    assert ten_way.get_classifier().out_features == 10
    torch.testing.assert_close(ten_way.head.proj.weight, classifier_t.head.proj.weight)

    features = timm.create_model('ravlt_t', pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        reference = classifier_t.forward_intermediates(tiny_input, intermediates_only=True)
        for out, ref in zip(features(tiny_input), reference):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)

    # timm's in_chans rule: a one-channel stem sums the RGB filters
    gray = timm.create_model('ravlt_t', pretrained=True, in_chans=1, num_classes=0,
                             pretrained_cfg_overlay=overlay).eval()
    torch.testing.assert_close(gray.patch_embed.proj[0].weight,
                               classifier_t.patch_embed.proj[0].weight.sum(1, keepdim=True))
    gray_image = tiny_input[:, :1]   # the same as an RGB image with three equal channels
    with torch.no_grad():
        rgb_features = classifier_t.forward_features(gray_image.expand(-1, 3, -1, -1))
        torch.testing.assert_close(gray(gray_image), classifier_t.forward_head(
            rgb_features, pre_logits=True), rtol=1e-4, atol=1e-5)

    # a state dict in memory goes through the same filter
    in_memory = timm.create_model('ravlt_t', pretrained=True, pretrained_cfg_overlay=dict(
        state_dict=torch.load(path, weights_only=False))).eval()
    with torch.no_grad():
        torch.testing.assert_close(in_memory(tiny_input), model(tiny_input), rtol=0, atol=0)


def test_pretrained_failures_name_the_cause(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'RAVLT_T\.pth'.*pretrained_cfg_overlay"):
        timm.create_model('ravlt_t', pretrained=True)

    small = tmp_path / 'RAVLT_S.pth'
    save_authors_imagenet_file(RAVLTClassifier('s'), small)
    with pytest.raises(CheckpointError, match=r'(?s)RAVLT_S\.pth does not fit.*shape mismatches'):
        timm.create_model('ravlt_t', pretrained=True, pretrained_cfg_overlay=dict(file=small))

    # the file is read by mmrala's weights-only loader, not unpickled
    evil = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.ones(1)}, 'hook': os.system}, evil)
    with pytest.raises(CheckpointError, match='arbitrary pickle'):
        timm.create_model('ravlt_t', pretrained=True, pretrained_cfg_overlay=dict(file=evil))
