"""UnitSummary: each image's per-unit summary (CLIP-Dissect's q_k), mergeable and resumable; Engine(grid=False)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netdissect.engine.checkpoint import Checkpoint
from netdissect.engine.distributed import Dist
from netdissect.engine.passes import Engine, Pass
from netdissect.engine.sources import ConceptSource
from netdissect.errors import ConfigError, LayerError
from netdissect.stats.summary import UnitSummary, summarize


def test_summaries_of_maps_tokens_and_linear_outputs():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 4, 6, generator=g)
    assert torch.equal(summarize(maps), maps.mean(dim=(2, 3)))
    assert torch.equal(summarize(maps, "max"), maps.amax(dim=(2, 3)))
    tokens = torch.randn(3, 1 + 16, 7, generator=g)  # class token + a 4x4 grid, 7 features
    assert torch.equal(summarize(tokens), tokens[:, 0])
    assert torch.allclose(summarize(tokens, tokens="mean"), tokens[:, 1:].mean(1))
    grid_only = torch.randn(3, 9, 7, generator=g)  # no class token: every token is a patch
    assert torch.allclose(summarize(grid_only, tokens="mean"), grid_only.mean(1))
    linear = torch.randn(3, 10, generator=g)
    assert torch.equal(summarize(linear), linear) and torch.equal(summarize(linear, "max"), linear)
    with pytest.raises(ConfigError, match="pool 'median'"):
        summarize(maps, "median")
    with pytest.raises(ConfigError, match="tokens 'first'"):
        UnitSummary(3, 5, tokens="first")
    with pytest.raises(LayerError, match="shape"):
        summarize(torch.zeros(2, 3, 4, 5, 6))


def test_shards_merge_to_the_whole_and_state_round_trips():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(10, 4, 3, 3, generator=g)
    whole = UnitSummary(10, 4, pool="max")
    whole.update(acts, torch.arange(10))
    a, b = UnitSummary(10, 4, pool="max"), UnitSummary(10, 4, pool="max")
    a.update(acts[:6], torch.arange(6))
    b.update(acts[6:], torch.arange(6, 10))
    with pytest.raises(ValueError, match="4 of 10 images"):
        a.result()
    a.merge(b)
    assert torch.equal(a.result(), whole.result())
    c = UnitSummary(10, 4, pool="max")
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.values, whole.values) and c.filled.all()
    with pytest.raises(ValueError):
        UnitSummary(10, 4, pool="mean").load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        a.merge(UnitSummary(10, 5, pool="max"))
    with pytest.raises(ValueError, match="expected 4 units"):
        a.update(torch.zeros(1, 3, 2, 2), torch.tensor([0]))


class TokenNet(nn.Module):
    """``block`` returns (B, 1 + 4, 3) tokens (class token = the channel means); ``head`` a linear layer."""

    def __init__(self):
        super().__init__()
        self.block = nn.Identity()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        patches = nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # (B, 4, 3)
        tokens = self.block(torch.cat([x.mean(dim=(2, 3)).unsqueeze(1), patches], 1))
        return self.head(tokens[:, 0])


def test_engine_hands_raw_outputs_to_a_pass_without_grid(tmp_path):
    from helpers import IDENTITY, square_concepts

    ds = square_concepts(n=6, size=8)
    source = ConceptSource(ds, IDENTITY)
    seen = {}

    def collect(grid):
        def update(batch, acts, labels):
            seen[grid] = {k: tuple(v.shape) for k, v in acts.items()}

        return update

    dist = Dist()
    for grid, layers in ((False, ["block", "head"]), (True, ["block"])):
        ckpt = Checkpoint(tmp_path / str(grid), "k" * 64, dist=dist)
        ckpt.prepare()
        engine = Engine(source, TokenNet().eval(), layers, device=torch.device("cpu"), checkpoint=ckpt,
                        batch_size=3, dist=dist, progress=False, grid=grid)
        engine.run(Pass("p", UnitSummary(6, 3), collect(grid)))
    assert seen[False] == {"block": (3, 5, 3), "head": (3, 2)}  # tokens with the class token, linear (B, U)
    assert seen[True] == {"block": (3, 3, 2, 2)}  # the default: a grid without the class token
