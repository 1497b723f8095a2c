"""Known answers for the LWTA layer: one winner per block, tau -> 0, straight-through gradients, seeded sampling."""

import pytest
import torch

from netdissect.errors import ConfigError, LayerError
from netdissect.lwta import LWTA, kl_loss, lwta, sample_ids, winner_rule
from netdissect.lwta.layer import gumbel_like, kl_uniform

SHAPES = [(3, 8, 5, 4), (2, 7, 12), (5, 16)]


def _blocks_nonzero(y, U):
    dim = 1 if y.dim() == 4 else y.dim() - 1
    h = y.movedim(dim, -1)
    return (h.reshape(*h.shape[:-1], h.shape[-1] // U, U) != 0).sum(-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("U", [2, 4])
@pytest.mark.parametrize("setting", ["train", "sample", "argmax"])
def test_exactly_one_winner_per_block(shape, U, setting):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    if shape[-1] % U or (len(shape) == 4 and shape[1] % U):
        pytest.skip("U does not divide the features")
    layer = LWTA(U, mode="argmax" if setting == "argmax" else "sample")
    layer.train(setting == "train")
    y = layer(x)
    assert y.shape == x.shape
    assert (_blocks_nonzero(y, U) == 1).all()
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # the winner passes its value unchanged (negative ones too)
    assert (x[kept] < 0).any()


def test_argmax_mode_picks_the_largest():
    x = torch.tensor([[1.0, -3.0, 0.5, 2.0], [-1.0, -0.5, 4.0, 3.0]])
    y = LWTA(2, mode="argmax").eval()(x)
    assert torch.equal(y, torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, -0.5, 4.0, 0.0]]))


def test_conv_blocks_are_consecutive_channels_per_position():
    x = torch.zeros(1, 4, 1, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 2.0, 4.0, 3.0])
    x[0, :, 0, 1] = torch.tensor([5.0, 2.0, 1.0, 3.0])
    y = lwta(x, 2)
    assert y[0, :, 0, 0].tolist() == [0.0, 2.0, 4.0, 0.0]
    assert y[0, :, 0, 1].tolist() == [5.0, 0.0, 0.0, 3.0]


def test_training_sample_at_small_tau_is_the_argmax_of_the_perturbed_logits():
    torch.manual_seed(1)
    x = torch.randn(4, 8, 3, 3)
    layer = LWTA(4, tau=1e-4).train()
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    g = gumbel_like(x)
    assert torch.equal(y, lwta(x, 4, noise=g))
    # the relaxed sample softmax((h + g) / tau) is the hard one-hot as tau -> 0
    h = (x + g).movedim(1, -1).reshape(4, 3, 3, 2, 4)
    soft = torch.softmax(h / 1e-4, -1)
    hard = torch.nn.functional.one_hot(h.argmax(-1), 4).float()
    assert torch.allclose(soft, hard, atol=1e-6)
    # without noise the training winner is the deterministic argmax
    assert torch.equal(lwta(x, 4, noise=torch.zeros_like(x), straight_through=True), lwta(x, 4))


@pytest.mark.parametrize("tau", [0.5, 1.67])
def test_straight_through_gradient_reaches_winners_and_logits_only(tau):
    torch.manual_seed(2)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    g = gumbel_like(x).double()
    w = torch.randn(3, 8, dtype=torch.float64)
    (lwta(x, 4, tau=tau, noise=g, straight_through=True) * w).sum().backward()
    # closed form: d/dh_j = w_j onehot_j + (1/tau) y_j (c_j - sum_i y_i c_i), c = w * h, y = softmax((h + g) / tau)
    h, gb, wb = x.detach().view(3, 2, 4), g.view(3, 2, 4), w.view(3, 2, 4)
    y = torch.softmax((h + gb) / tau, -1)
    onehot = torch.nn.functional.one_hot((h + gb).argmax(-1), 4).double()
    c = wb * h
    expected = wb * onehot + y * (c - (y * c).sum(-1, keepdim=True)) / tau
    assert torch.allclose(x.grad.view(3, 2, 4), expected)
    # with the softmax path removed, losers get no gradient at all
    x.grad = None
    (lwta(x, 4, tau=tau, noise=g) * w).sum().backward()
    assert torch.equal(x.grad.view(3, 2, 4) != 0, onehot.bool())


def test_u1_is_identity_and_bad_options_raise():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(LWTA(1).train()(x), x)
    with pytest.raises(ConfigError, match="U must be a positive integer"):
        LWTA(0)
    with pytest.raises(ConfigError, match="mode"):
        LWTA(2, mode="greedy")
    with pytest.raises(LayerError, match="6 features are not divisible into blocks of U=4"):
        LWTA(4)(torch.randn(2, 6))


@torch.no_grad()
def test_seeded_sampling_does_not_depend_on_the_batch():
    torch.manual_seed(3)
    x = torch.randn(6, 8, 4, 4)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), LWTA(4), torch.nn.Conv2d(8, 8, 1), LWTA(2)).eval()
    ids = [10, 11, 12, 13, 14, 15]
    with sample_ids(model, ids):
        whole = model(x)
    perm = [4, 0, 5, 2]
    # (a convolution over another batch may differ in the last bits: compare winners exactly, values closely)
    with sample_ids(model, [ids[i] for i in perm]):
        part = model(x[perm])
    assert torch.equal(part != 0, whole[perm] != 0) and torch.allclose(part, whole[perm], atol=1e-6)
    for i in (1, 3):
        with sample_ids(model, [ids[i]]):
            one = model(x[i:i + 1])
        assert torch.equal(one != 0, whole[i:i + 1] != 0) and torch.allclose(one, whole[i:i + 1], atol=1e-6)
    with sample_ids(model, [99] * 6):  # another id: other winners (the noise matters)
        assert not torch.equal(model(x), whole)
    model[1].seed = 5  # another seed: other winners
    with sample_ids(model, ids):
        assert not torch.equal(model(x), whole)


def test_winner_rule_and_kl():
    model = torch.nn.Sequential(LWTA(4, mode="argmax"), LWTA(2, mode="argmax"))
    assert winner_rule(model) == {"layers": 2, "U": [2, 4], "mode": "argmax"}
    model[0].mode = "sample"
    assert winner_rule(model)["mode"] == "mixed" and winner_rule(model)["seed"] == 0
    assert winner_rule(torch.nn.ReLU()) is None
    # KL to the uniform prior: 0 for equal logits, log U for a one-hot block
    assert float(kl_uniform(torch.zeros(2, 4), 4)) == pytest.approx(0.0, abs=1e-7)
    assert float(kl_uniform(torch.tensor([[1e4, 0, 0, 0]]), 4)) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    layer = LWTA(4, kl=True).train()
    layer(torch.randn(2, 8))
    assert float(kl_loss(layer)) > 0
