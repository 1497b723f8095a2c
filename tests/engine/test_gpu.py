"""Checks that need a CUDA device (marked ``gpu``; skipped without one; run by benchmarks/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import red_model, square_concepts

import netdissect
from netdissect.stats import IoUTally, TopKQuantile, float32_below

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_known_answer_dissection_on_the_gpu_matches_the_cpu(tmp_path):
    ds = square_concepts(n=12)
    square = (ds.pixel_labels[:, 0] == 1).sum()
    q = float((square - 0.5) / (ds.pixel_labels[:, 0].size - 1))
    kw = dict(layers=["features"], quantile=q, num_workers=0, batch_size=5, progress=False)
    gpu = netdissect.dissect(red_model(), ds, out=tmp_path / "gpu", device="cuda", **kw)
    cpu = netdissect.dissect(red_model(), ds, out=tmp_path / "cpu", device="cpu", **kw)
    assert gpu.labels.set_index("unit").loc[1, "iou"] == 1.0
    assert gpu.labels[["unit", "label", "detector"]].equals(cpu.labels[["unit", "label", "detector"]])
    assert gpu.config["config"]["device"].startswith("cuda")


def test_statistics_on_the_gpu_equal_the_reference():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(6, 64, 7, 7, generator=gen)
    labels = torch.randint(0, 9, (6, 2, 56, 56), generator=gen)
    image = torch.randint(0, 9, (6, 1), generator=gen)
    category_of = torch.tensor([-1, 0, 0, 0, 1, 1, 2, 2, 2])
    q = TopKQuantile(64, 0.01, 6 * 49, device="cuda")
    q.update(acts.cuda().transpose(0, 1).reshape(64, -1))
    expected = np.quantile(acts.transpose(0, 1).reshape(64, -1).double().numpy(), 0.99, axis=1)
    assert np.array_equal(q.quantiles(), expected)
    t32 = torch.from_numpy(float32_below(expected))
    tally = IoUTally(t32.cuda(), category_of, 3, (56, 56))
    tally.update(acts.cuda(), labels.cuda(), image.cuda())
    cpu = IoUTally(t32, category_of, 3, (56, 56))  # checked against a brute-force loop in tests/stats/test_stats.py
    cpu.update(acts, labels, image)
    assert tally.intersect.device.type == "cuda"
    assert torch.equal(tally.intersect.cpu(), cpu.intersect)
    assert torch.equal(tally.activation.cpu(), cpu.activation)
    assert torch.equal(tally.mask_pixels.cpu(), cpu.mask_pixels)
