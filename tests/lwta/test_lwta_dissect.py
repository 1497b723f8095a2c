"""Dissecting a sampling LWTA model: both passes and any batching see the same activations; the rule is recorded."""

import json

import numpy as np

SMALL = "module:netdissect.lwta.nets:small_resnet"


def test_dissect_a_sampling_lwta_model_is_batch_independent_and_recorded(tmp_path):
    from netdissect import dissect

    spec = f"lwta:{SMALL}?U=4&seed=2"
    runs = []
    # a: the second pass runs the model again; b: other batches; d: the second pass reads pass 1's activations
    for name, batch, cache in (("a", 4, "recompute"), ("b", 5, "recompute"), ("d", 4, "disk")):
        runs.append(dissect(spec, "synthetic:n=8,size=32", layers=["layer3"], out=tmp_path / name,
                            batch_size=batch, progress=False, device="cpu", activation_cache=cache))
    a, b, d = runs
    for layer in ("layer3",):
        for other in (b, d):
            assert np.allclose(a.thresholds(layer), other.thresholds(layer), atol=1e-5)
            assert np.allclose(a.iou(layer).to_numpy(), other.iou(layer).to_numpy(), atol=1e-6)
    info = json.loads((tmp_path / "a" / "config.json").read_text())
    rule = info["options"]["lwta"]
    assert rule["mode"] == "sample" and rule["seed"] == 2 and rule["U"] == [4] and "per-image" in rule["noise"]
    # argmax mode is recorded too, and is another run (another key)
    c = dissect(f"lwta:{SMALL}?U=4&mode=argmax", "synthetic:n=8,size=32", layers=["layer3"], out=tmp_path / "c",
                batch_size=4, progress=False, device="cpu")
    assert c.info.options["lwta"] == {"layers": 9, "U": [4], "mode": "argmax"}
