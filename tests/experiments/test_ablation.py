"""Unit ablation (PNAS 2020, METHODS B2) on hand-weighted classifiers with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from netdissect.data.classes import ClassData
from netdissect.errors import ConfigError, DatasetError
from netdissect.experiments.ablation import ClassCounts, ablate_batched, ablation, sweep
from netdissect.experiments.split import split_model
from netdissect.hooks import Trace, Zero

K, U = 4, 4
NAMES = ["a", "b", "c", "background"]


def planted_classifier() -> nn.Module:
    """Class c (0, 1, 2) is predicted from unit c alone; unit 3 carries noise and no weight.

    Class 3 ("background", bias 0.5) wins when units 0-2 are silent, so ablating unit c sends
    class c's images to class 3 and leaves the other planted classes exactly as they were."""
    conv = nn.Conv2d(4, U, 1, bias=False)
    linear = nn.Linear(U, K)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        linear.weight.zero_()
        for c in range(3):
            linear.weight[c, c] = 10.0
        linear.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.5]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()


def planted_data(per_class: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    for c in range(K):
        x = torch.zeros(per_class, 4, 5, 5)
        if c < 3:
            x[:, c] = 1.0 + torch.rand(per_class, 5, 5, generator=g)
        x[:, 3] = torch.rand(per_class, 5, 5, generator=g)
        xs.append(x)
        ts.append(torch.full((per_class,), c))
    return torch.cat(xs), torch.cat(ts)


def batches(x, t, size=5):
    return lambda: [(x[i:i + size], t[i:i + size]) for i in range(0, len(x), size)]


def test_planted_unit_drops_its_class_to_chance_and_ranks_first():
    model = planted_classifier()
    x, t = planted_data()
    result = ablation(model, "0", batches(x, t), batches(*planted_data(seed=1)), NAMES, ns=(1, 2, 3))
    assert result.method == "fx"
    np.testing.assert_allclose(result.baseline_rank, 1.0)
    for c in range(3):
        assert result.units_ranked[c, 0] == c
        assert result.importance[c, c] == pytest.approx(-0.5)
        assert result.importance[3, c] == 0.0
        top1 = result.curves.query("`class` == @c and mode == 'top' and n == 1")["value"].item()
        assert top1 == pytest.approx(0.5)
        kept = result.curves.query("`class` == @c and mode == 'all-but-top' and n == 1")["value"].item()
        assert kept == pytest.approx(1.0)


def test_batched_ablation_equals_one_by_one_exactly():
    model = planted_classifier()
    x, _ = planted_data()
    split = split_model(model, "0")
    feats = split.head(x)
    selectors = torch.zeros(U + 2, U, dtype=torch.bool)
    for u in range(U):
        selectors[u + 1, u] = True
    selectors[U + 1, :2] = True
    batched = split.tail(ablate_batched(feats, selectors)).reshape(len(selectors), len(x), K)
    for s, sel in enumerate(selectors):
        with Trace(model, ["0"], edit={"0": Zero(sel.nonzero().flatten().tolist())}) as trace:
            one = trace.forward(x)
        assert torch.equal(batched[s], one), s


def test_trace_fallback_equals_fx_and_skip_connection_falls_back():
    model = planted_classifier()
    x, t = planted_data()
    fx_split, tr_split = split_model(model, "0"), split_model(model, "0", method="trace")
    assert tr_split.method == "trace"
    sel = torch.eye(U, dtype=torch.bool)
    a = sweep(fx_split, batches(x, t)(), sel, K)
    b = sweep(tr_split, batches(x, t)(), sel, K)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_array_equal(a.correct, b.correct)

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head((self.conv(x) + x).mean((2, 3)))

    assert split_model(Skip(), "conv").method == "trace"
    with pytest.raises(ValueError, match="skip connection"):
        split_model(Skip(), "conv", method="fx")


def test_balanced_accuracy_formula():
    counts = ClassCounts(1, 2)
    logits = torch.tensor([[[1.0, 0], [1, 0], [0, 1], [1, 0]]])  # predictions 0, 0, 1, 0
    counts.update(logits, torch.tensor([0, 0, 1, 1]))
    # class 0: recall 2/2, TNR 1/2 -> 0.75; class 1: recall 1/2, TNR 2/2 -> 0.75
    np.testing.assert_allclose(counts.balanced_accuracy(), [[0.75, 0.75]])


def test_probability_metric_runs_each_class_on_its_own_images():
    model = planted_classifier()
    x, t = planted_data()
    result = ablation(model, "0", batches(x, t), batches(x, t), NAMES, metric="probability", ns=(1,))
    assert (result.units_ranked[:3, 0] == np.arange(3)).all()
    drops = result.curves.query("mode == 'top' and `class` < 3")["value"].to_numpy() - result.baseline_test[:3]
    assert (drops < -0.5).all()


def test_wrong_class_count_and_metric_are_named():
    model = planted_classifier()
    x, t = planted_data()
    with pytest.raises(ConfigError, match="outputs 4 values"):
        ablation(model, "0", batches(x, t), batches(x, t), ["a", "b"])
    with pytest.raises(ConfigError, match="metric 'bogus'"):
        ablation(model, "0", batches(x, t), batches(x, t), NAMES, metric="bogus")


def test_save_writes_tables_plots_and_page(tmp_path):
    model = planted_classifier()
    x, t = planted_data()
    result = ablation(model, "0", batches(x, t), batches(x, t), NAMES, ns=(1, 2))
    page = result.save(tmp_path / "abl", iou=[0.3, 0.2, 0.1, 0.0], labels=["p", "q", "r", "s"])
    for name in ("curves.csv", "ranking.csv", "classes.csv", "importance.npy", "curves.png", "importance_iou.png",
                 "summary.json"):
        assert (tmp_path / "abl" / name).is_file(), name
    assert "Unit ablation" in page.read_text()
    frame = result.importance_vs_iou([0.3, 0.2, 0.1, 0.0], top=1)
    assert frame["units"].sum() == 4 and frame.set_index("classes")["units"].get(0) == 1


def test_class_data_folders_list_and_split(tmp_path):
    from PIL import Image

    for name in ("b", "a"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (30, 20), (i * 40, 0, 0)).save(tmp_path / "f" / name / f"{i}.png")
    data = ClassData.from_folders(tmp_path / "f")
    assert data.classes == ("a", "b") and data.targets == (0,) * 4 + (1,) * 4
    first, second = data.split(0.5)
    assert first.targets == (0, 0, 1, 1) and {p.name for p in first.paths} == {"0.png", "1.png"}
    images, targets = next(data.batches(3, crop_size=16, resize_size=16))
    assert images.shape == (3, 3, 16, 16) and images.dtype == np.uint8
    (tmp_path / "list.txt").write_text("f/a/0.png 1\n# comment\nf/b/1.png 0\n")
    listed = ClassData.from_list(tmp_path / "list.txt", classes=["x", "y"])
    assert listed.targets == (1, 0) and listed.paths[0] == tmp_path / "f/a/0.png"
    (tmp_path / "bad.txt").write_text("f/a/0.png one\n")
    with pytest.raises(DatasetError, match="bad.txt:1"):
        ClassData.from_list(tmp_path / "bad.txt")
    with pytest.raises(DatasetError, match="class index 5"):
        ClassData((tmp_path / "x.png",), (5,), ("x",))


def test_ties_in_balanced_accuracy_are_broken_by_the_probability_drop(tmp_path):
    """No single unit changes a prediction (all importances 0); unit 1 carries more of class a's logit."""
    conv = nn.Conv2d(4, U, 1, bias=False)
    linear = nn.Linear(U, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        linear.weight.zero_()
        linear.weight[0, 0], linear.weight[0, 1] = 1.0, 3.0
        linear.bias.copy_(torch.tensor([0.0, 0.1]))
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 4, 5, 5)
    x[:4, :2] = 1.0 + torch.rand(4, 2, 5, 5, generator=g)
    x[:, 3] = torch.rand(8, 5, 5, generator=g)
    t = torch.tensor([0] * 4 + [1] * 4)
    result = ablation(model, "0", batches(x, t), batches(x, t), ["a", "b"], ns=(1,))
    assert np.all(result.importance[:, 0] == 0.0)
    assert list(result.units_ranked[0, :2]) == [1, 0]
    result.save(tmp_path / "abl")
    np.testing.assert_array_equal(np.load(tmp_path / "abl" / "units_ranked.npy"), result.units_ranked)
