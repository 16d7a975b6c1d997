import pytest
import torch

from mmrala.ops import rala_attention, rala_attention_reference, rope_angle
from mmrala.ops import rala_attention_authors as authors_rala


def make_qkv(batch, heads, head_dim, height, width, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3 * heads * head_dim, height, width, generator=generator,
                       dtype=dtype)


@pytest.mark.parametrize('head_dim,heads,height,width', [
    (64, 1, 7, 11), (64, 2, 9, 5), (96, 1, 6, 13), (96, 3, 5, 4)])
def test_reference_matches_authors_form_in_float64(head_dim, heads, height, width):
    qkv = make_qkv(2, heads, head_dim, height, width).requires_grad_()
    ours = rala_attention(qkv, heads, impl='torch')
    theirs = authors_rala(qkv, heads)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)

    grad_out = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad(ours, qkv, grad_out)
    (grad_theirs,) = torch.autograd.grad(theirs, qkv, grad_out)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-9, atol=1e-11)
    # q, k and v parts all receive gradient.
    for part in grad_ours.chunk(3, dim=1):
        assert part.abs().sum() > 0


def test_reference_accepts_a_channel_slice_of_the_qkvo_output():
    heads, head_dim = 2, 64
    qkvo = torch.randn(2, 4 * heads * head_dim, 6, 9, dtype=torch.float64)
    qkv_slice = qkvo[:, :3 * heads * head_dim]
    assert not qkv_slice.is_contiguous()
    torch.testing.assert_close(rala_attention_reference(qkv_slice, heads),
                               authors_rala(qkv_slice.contiguous(), heads))


def test_reference_float32_close_to_float64_and_half_finite_on_peaked_softmax():
    qkv = make_qkv(1, 1, 64, 12, 17) * 8   # large logits: a very peaked token softmax
    exact = rala_attention_reference(qkv, 1)
    fp32 = rala_attention_reference(qkv.float(), 1).double()
    rel = (fp32 - exact).norm() / exact.norm()
    assert rel < 1e-4
    half = rala_attention_reference(qkv.half(), 1)
    assert torch.isfinite(half).all()
    assert ((half.double() - exact).norm() / exact.norm()) < 2e-2


def test_auto_uses_the_reference_on_cpu():
    qkv = make_qkv(1, 1, 64, 5, 6, dtype=torch.float32)
    torch.testing.assert_close(rala_attention(qkv, 1), rala_attention(qkv, 1, impl='torch'),
                               rtol=0, atol=0)


def test_bad_arguments_are_explained():
    qkv = make_qkv(1, 1, 64, 4, 4)
    with pytest.raises(ValueError, match='choose one of'):
        rala_attention(qkv, 1, impl='cuda')
    with pytest.raises(ValueError, match='num_heads'):
        rala_attention(qkv[:, :190], 1)
    with pytest.raises(ValueError, match='divisible by 4'):
        rala_attention(torch.randn(1, 3 * 6, 4, 4), 1)


def test_rope_angle_is_the_authors_buffer():
    angle = rope_angle(64)
    assert angle.shape == (32,)
    assert torch.equal(angle[0::2], angle[1::2])
    assert angle[0] == 1.0 and torch.isclose(angle[-1], torch.tensor(1e-4))
