"""Half-precision behaviour of RAVLT: autocast through a whole model, and the RALA core
on inputs that make its token softmax very peaked."""
import pytest
import torch

from mmrala.models import RAVLT
from mmrala.ops import rala_attention_authors as authors_rala
from mmrala.ops import rala_attention_reference


def relative_rms(actual, expected):
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.mark.parametrize('dtype,tolerance', [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_autocast_forward_and_backward_stay_finite_and_close_to_fp32(dtype, tolerance):
    torch.manual_seed(0)
    model = RAVLT('t', drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 64, 80)
    projections = None
    results = {}
    for mode in ('fp32', 'half'):
        model.zero_grad()
        with torch.autocast('cpu', dtype=dtype, enabled=mode == 'half'):
            outs = model(x)
        projections = projections or [torch.randn(o.shape) for o in outs]
        loss = sum((o.float() * p).mean() for o, p in zip(outs, projections))   # a mean loss, as in training
        loss.backward()
        results[mode] = ([o.float().detach() for o in outs],
                         torch.cat([p.grad.flatten() for p in model.parameters()]))
    for half, full in zip(results['half'][0], results['fp32'][0]):
        assert torch.isfinite(half).all()
        assert relative_rms(half, full) < tolerance
    assert torch.isfinite(results['half'][1]).all()
    assert relative_rms(results['half'][1], results['fp32'][1]) < 4 * tolerance


def test_peaked_softmax_overflows_the_authors_form_but_not_ours_in_fp16():
    # keys aligned with the mean query and a large scale: alpha is nearly one-hot, so the
    # authors' k * alpha * L reaches ~ L * max(k) and overflows fp16 at L = 64 * 64
    torch.manual_seed(0)
    heads, head_dim, height, width = 1, 64, 64, 64
    qkv = torch.randn(1, 3 * head_dim, height, width) * 0.1
    qkv[:, :head_dim] += 2.0                                  # q well above zero
    qkv[:, head_dim:2 * head_dim, 10, 20] += 60.0             # one dominant key
    exact = rala_attention_reference(qkv.double(), heads)
    theirs = authors_rala(qkv.half(), heads)
    assert not torch.isfinite(theirs).all()
    ours = rala_attention_reference(qkv.half(), heads)
    assert torch.isfinite(ours).all()
    assert relative_rms(ours, exact) < 1e-2
