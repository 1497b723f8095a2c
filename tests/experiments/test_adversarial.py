"""Which units an attack moves (PNAS 2020, METHODS B4), measured on planted models."""

import numpy as np
import pytest
import torch
from torch import nn

from netdissect.errors import ConfigError
from netdissect.experiments.adversarial import Z99, adversarial, attack, group_changes, peak_activations


def identity_net(units=4, classes=3):
    conv = nn.Conv2d(3, units, 1, bias=False)
    fc = nn.Linear(units, classes)
    with torch.no_grad():
        conv.weight.zero_()
        for k in range(min(3, units)):
            conv.weight[k, k] = 1.0
        fc.weight.copy_(torch.eye(classes, units) * 5)
        fc.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveMaxPool2d(1), nn.Flatten(), fc).eval()


def test_peak_changes_of_a_planted_perturbation():
    model = identity_net()
    x = torch.full((2, 3, 5, 5), 0.2)
    adv = x.clone()
    adv[0, 1, 2, 3] = 0.9  # unit 1's peak: 0.2 -> 0.9 in image 0
    adv[1, 2] = 0.05  # unit 2's peak: 0.2 -> 0.05 in image 1
    change = (peak_activations(model, "0", adv) - peak_activations(model, "0", x)).abs().numpy()
    expected = np.zeros((2, 4))
    expected[0, 1], expected[1, 2] = 0.7, 0.15
    np.testing.assert_allclose(change, expected, atol=1e-6)


def test_group_means_and_intervals():
    changes = np.array([[1.0, 0.0, 3.0, 0.5], [2.0, 0.0, 1.0, 0.5], [3.0, 0.0, 2.0, 1.5]])
    ranked = np.array([[0, 1, 2, 3], [2, 3, 0, 1]])
    g = group_changes(changes, targets=[0, 0, 0], sources=[1, 1, 1], ranked=ranked, top=1).set_index("group")
    assert g.loc["target", "mean"] == pytest.approx(2.0)
    assert g.loc["source", "mean"] == pytest.approx(2.0)
    assert g.loc["other", "mean"] == pytest.approx((0.25 + 0.25 + 0.75) / 3)
    half = Z99 * np.std([1, 2, 3], ddof=1) / np.sqrt(3)
    assert g.loc["target", "ci99_high"] == pytest.approx(2.0 + half)
    with pytest.raises(ConfigError, match="do not fit"):
        group_changes(changes, [0], [1], ranked)


@pytest.mark.parametrize("method", ["pgd", "cw"])
def test_targeted_attack_moves_the_target_units(method, tmp_path):
    model = identity_net()
    torch.manual_seed(0)
    images = torch.rand(6, 3, 6, 6) * 0.3
    images[:, 0] += 0.5  # class 0 everywhere
    targets = [1, 2, 1, 2, 1, 2]
    ranked = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3]])
    options = {"eps": 0.6, "steps": 20} if method == "pgd" else {"c": 10.0, "steps": 100, "lr": 0.05}
    result = adversarial(model, "0", images, targets, ranked, mean=(0, 0, 0), std=(1, 1, 1), method=method, top=1,
                         **options)
    assert (result.sources == 0).all()
    assert result.success_rate == 1.0
    g = result.groups.set_index("group")["mean"]
    assert g["target"] > 0.05 and g["target"] > g["other"]
    np.testing.assert_array_equal(result.changes[:, 3], 0.0)  # unit 3 has no input weight
    page = result.save(tmp_path / "a", ["x", "y", "z"])
    assert page.is_file() and (tmp_path / "a" / "changes.png").is_file()


def test_attack_checks_its_input():
    model = identity_net()
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        attack(model, torch.full((1, 3, 4, 4), 2.0), torch.tensor([1]))
    with pytest.raises(ConfigError, match="method 'fgsm'"):
        attack(model, torch.rand(1, 3, 4, 4), torch.tensor([1]), method="fgsm")
    with pytest.raises(ConfigError, match="attack steps 0"):
        attack(model, torch.rand(1, 3, 4, 4), torch.tensor([1]), steps=0)
    with pytest.raises(ConfigError, match="attack eps -1"):
        attack(model, torch.rand(1, 3, 4, 4), torch.tensor([1]), eps=-1.0)


def test_adversarial_checks_targets_and_classes_before_attacking():
    model, images = identity_net(), torch.rand(2, 3, 4, 4)
    ranked = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3]])
    kw = {"mean": (0, 0, 0), "std": (1, 1, 1)}
    with pytest.raises(ConfigError, match="targets 7: class indices run from 0 to 2"):
        adversarial(model, "0", images, [1, 7], ranked, **kw)
    with pytest.raises(ConfigError, match="1 targets for 2 images"):
        adversarial(model, "0", images, [1], ranked, **kw)
    with pytest.raises(ConfigError, match="no images"):
        adversarial(model, "0", images[:0], [], ranked, **kw)
    with pytest.raises(ConfigError, match="outputs 3 values per image but the unit ranking has 2 classes"):
        adversarial(model, "0", images, [1, 0], ranked[:2], **kw)


def test_cw_keeps_the_image_when_no_step_reaches_the_target():
    from netdissect.experiments.adversarial import cw_l2

    model = identity_net()
    images = torch.rand(3, 3, 6, 6) * 0.3
    images[:, 0] += 0.5
    same = cw_l2(model, images, torch.tensor([1, 2, 1]), c=0.0, steps=5, lr=0.05)  # no pull towards the target
    torch.testing.assert_close(same, images)
    moved = cw_l2(model, images, torch.tensor([1, 2, 1]), c=10.0, steps=100, lr=0.05)
    assert (model(moved).argmax(1) == torch.tensor([1, 2, 1])).all()
