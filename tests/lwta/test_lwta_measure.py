"""Sparsity is 1/U on real images; explanations; dissecting a sampling LWTA model is batch-independent."""


import numpy as np
import pytest
import torch

from netdissect.data.synthetic import SyntheticConcepts
from netdissect.lwta.measure import explain, explanation_html, image_batches, layer_U, sparsity
from netdissect.models import load_model

SMALL = "module:netdissect.lwta.nets:small_resnet"


@pytest.mark.parametrize("U", [2, 4, 8])
def test_sparsity_is_one_over_u_on_real_images(U):
    loaded = load_model(f"lwta:{SMALL}?U={U}")
    table = sparsity(loaded.module, image_batches("synthetic:n=6,size=64", loaded.preprocess, batch_size=4))
    lwta_rows = table[table["layer"] != "(all)"]
    assert len(lwta_rows) == 9 and (lwta_rows["U"] == U).all()
    assert np.allclose(lwta_rows["active"], 1 / U, atol=1e-4)
    assert np.allclose(lwta_rows["expected"], 1 / U)


def test_sparsity_of_the_relu_baseline():
    loaded = load_model(SMALL)
    table = sparsity(loaded.module, image_batches("synthetic:n=4,size=64", loaded.preprocess))
    assert (table["kind"].iloc[:-1] == "ReLU").all()
    assert 0.05 < table["active"].iloc[-1] < 0.95


def test_explain_lists_one_winner_per_block_sorted(tmp_path):
    loaded = load_model(f"lwta:{SMALL}?U=4&mode=argmax")
    image = SyntheticConcepts(n=1, size=64)[0].image
    assert layer_U(loaded.module, "layer3") == 4
    table = explain(loaded.module, image, "layer3", preprocess=loaded.preprocess)
    assert len(table) == 64 // 4 and list(table["rank"]) == list(range(1, 17))
    assert (np.diff(table["value"]) <= 0).all()
    assert sorted((table["unit"] - 1) // 4) == list(range(16))  # one unit of every block
    with torch.no_grad():
        acts = {}
        h = loaded.module.layer3.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
        loaded.module(loaded.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None]))
        h.remove()
    means = acts["a"][0].mean((1, 2)).view(16, 4)
    assert set(table["unit"]) == set((torch.arange(16) * 4 + means.argmax(1) + 1).tolist())
    page = explanation_html(table, image, layer="layer3", title="small <resnet>")
    assert "small &lt;resnet&gt;" in page and page.count("<tr>") == 17
