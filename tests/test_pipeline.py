"""Dissection end to end on hand-made models with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import IDENTITY, red_model, square_concepts
from torch import nn

import netdissect
from netdissect.errors import CaptureError, ConfigError, DatasetError, LayerError
from netdissect.hooks import Trace


def exact_q(ds):
    """A quantile whose threshold falls between background (0) and the square (1)."""
    square = (ds.pixel_labels[:, 0] == 1).sum()
    n = ds.pixel_labels[:, 0].size
    return float((square - 0.5) / (n - 1))


def run(ds, out, **kw):
    kw.setdefault("quantile", exact_q(getattr(ds, "ds", ds)))
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 5)
    return netdissect.dissect(red_model(), ds, layers=["features"], out=out, progress=False, **kw)


def test_unit_firing_exactly_on_a_concept_gets_it_with_iou_one(tmp_path):
    ds = square_concepts()
    result = run(ds, tmp_path / "run")
    tally = pd.read_csv(tmp_path / "run" / "layers" / "features" / "tally.csv")
    first = tally.iloc[0]
    assert first["unit"] == 1  # 1-based unit numbering
    assert first["label"] == "square" and first["category"] == "object"
    assert first["score"] == 1.0
    assert first["object-intersect"] == first["object-truth"] == (ds.pixel_labels[:, 0] == 1).sum()
    # the unit that fires everywhere is no detector
    second = tally[tally["unit"] == 2].iloc[0]
    assert second["score"] < 0.04
    labels = result.labels
    assert list(labels.columns) == ["layer", "unit", "category", "label", "iou", "detector", "method"]
    assert (labels["method"] == "iou").all()
    assert labels.set_index("unit").loc[1, "detector"] and not labels.set_index("unit").loc[2, "detector"]
    assert list(tally.columns[:4]) == ["unit", "category", "label", "score"]
    assert list(tally.columns[4:9]) == [f"object-{c}" for c in ("label", "truth", "activation", "intersect", "iou")]


def test_thresholds_are_exact_numpy_quantiles(tmp_path):
    ds = square_concepts(n=9)
    q = 0.013
    result = run(ds, tmp_path / "run", quantile=q)
    model = red_model()
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2)
    with Trace(model.module, ["features"]) as trace:
        acts = trace.run(model.preprocess(x))["features"]
    per_unit = acts.transpose(0, 1).reshape(2, -1).double().numpy()
    assert np.array_equal(result.thresholds("features"), np.quantile(per_unit, 1 - q, axis=1))


def test_summary_counts_unique_detectors_under_both_conventions(tmp_path):
    result = run(square_concepts(), tmp_path / "run")
    layer = result.summary["layers"]["features"]
    assert layer["units"] == 2 and layer["detectors"] == 1
    per_cat = layer["unique_detectors"]["per-category"]
    top = layer["unique_detectors"]["top-label"]
    assert top["unique"] == {"object": 1, "scene": 0}
    # unit 1's best scene label (even-s) also clears 0.04, so per-category counts it
    assert per_cat["unique"]["object"] == 1 and per_cat["unique"]["scene"] == 1
    assert layer["threshold_method"]["method"] == "exact-topk"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["quantile"] == exact_q(square_concepts())
    assert config["versions"]["torch"] == torch.__version__
    assert config["data_fingerprint"] == square_concepts().fingerprint()


def test_iou_matrix_top_images_and_reload(tmp_path):
    ds = square_concepts()
    result = run(ds, tmp_path / "run", top_images=3)
    again = netdissect.Dissection.load(tmp_path / "run")
    iou = again.iou("features")
    assert iou.loc[1, "square"] == 1.0 and iou.shape == (2, 3)
    top = again.top_images("features")
    assert top["indices"].shape == (2, 3) and top["maps"].shape == (2, 3, 16, 16)
    # unit 1's top images are those with the largest red square value (all 1.0): ties to lower index
    assert top["indices"][0].tolist() == [0, 1, 2]
    assert again.image_ids[0] == "squares/0"
    pd.testing.assert_frame_equal(again.labels, result.labels)


class Interrupting:
    """Wraps a data set and raises KeyboardInterrupt on the n-th image access."""

    def __init__(self, ds, at: int | None):
        self.ds, self.at, self.calls = ds, at, 0
        self.concepts, self.image_size, self.label_size = ds.concepts, ds.image_size, ds.label_size

    def __len__(self):
        return len(self.ds)

    def _tick(self):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt

    def __getitem__(self, i):
        self._tick()
        return self.ds[i]

    def load_labels(self, i):
        self._tick()
        return self.ds.load_labels(i)

    def image_id(self, i):
        return self.ds.image_id(i)

    def fingerprint(self):
        return self.ds.fingerprint()

    def spec(self):
        return self.ds.spec()


@pytest.mark.parametrize("cache", ["disk", "recompute"])
@pytest.mark.parametrize("at,left", [(7, 19), (19, 7)])  # interrupted in pass 1, in pass 2
def test_interrupted_run_resumes_with_identical_results(tmp_path, cache, at, left):
    ds = square_concepts(n=12)
    reference = run(ds, tmp_path / "ref", activation_cache=cache)
    flaky = Interrupting(ds, at)
    with pytest.raises(KeyboardInterrupt):
        run(flaky, tmp_path / "run", activation_cache=cache, checkpoint_seconds=0)
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = Interrupting(ds, None)
    result = run(resumed, tmp_path / "run", activation_cache=cache, checkpoint_seconds=0)
    # it resumed after the last finished batch of 5: a fresh run reads 12 + 12 images
    assert resumed.calls == left
    for name in ("tally.csv",):
        a = (tmp_path / "ref" / "layers" / "features" / name).read_text()
        b = (tmp_path / "run" / "layers" / "features" / name).read_text()
        assert a == b
    assert np.array_equal(result.thresholds("features"), reference.thresholds("features"))
    assert np.array_equal(result.top_images("features")["maps"], reference.top_images("features")["maps"])


def test_changed_arguments_never_reuse_stale_state(tmp_path):
    ds = square_concepts(n=12)
    with pytest.raises(KeyboardInterrupt):
        run(Interrupting(ds, 15), tmp_path / "run", quantile=0.2, checkpoint_seconds=0)
    stale = list((tmp_path / "run" / ".cache").iterdir())
    result = run(ds, tmp_path / "run", quantile=0.1)
    run(ds, tmp_path / "fresh", quantile=0.1)
    assert (tmp_path / "run" / "layers" / "features" / "tally.csv").read_text() == (
        tmp_path / "fresh" / "layers" / "features" / "tally.csv").read_text()
    assert not any(p.exists() for p in stale)
    assert result.config["options"]["quantile"] == 0.1
    # a complete run with the same arguments is loaded, not recomputed
    counted = Interrupting(ds, None)
    run(counted, tmp_path / "run", quantile=0.1)
    assert counted.calls == 0


def test_pnas_protocol_thresholds_upsampled_and_uses_all_pixels(tmp_path):
    ds = square_concepts()
    result = run(ds, tmp_path / "run", protocol="pnas2020", quantile=None, quantile_size=(16, 16))
    config = result.config["config"]
    assert config["quantile"] == 0.01 and config["denominator"] == "all"
    counts = result.counts("features")
    # 'all': the mask term is the unit's whole mask in every category
    assert np.array_equal(counts["denominator_pixels"][:, 0], counts["mask_pixels"].astype(float))
    assert np.array_equal(counts["denominator_pixels"][:, 1], counts["mask_pixels"].astype(float))


# -- bad input ----------------------------------------------------------------------


def test_quantile_outside_open_interval_is_refused(tmp_path):
    for q in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"quantile must be in the open interval \(0, 1\)"):
            run(square_concepts(), tmp_path / "run", quantile=q)


def test_unknown_option_and_layer(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'quantle'.*did you mean 'quantile'"):
        run(square_concepts(), tmp_path / "run", quantle=0.1)
    with pytest.raises(LayerError, match="'featres'.*did you mean 'features'"):
        netdissect.dissect(red_model(), square_concepts(), layers=["featres"], out=tmp_path / "r", progress=False)


def test_layer_without_grid_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 16 * 16, 3))
    with pytest.raises(LayerError, match="'2' outputs shape \\(1, 3\\).*no spatial or token grid"):
        netdissect.dissect(model, square_concepts(), layers=["2"], out=tmp_path / "r", preprocess=IDENTITY,
                           progress=False, num_workers=0)


def test_nan_activations_are_reported(tmp_path):
    class NaNOnSecondImage(nn.Module):
        def forward(self, x):
            y = x.clone()
            if x.shape[0] > 1:
                y[1, 0, 0, 0] = float("nan")
            return y

    model = nn.Sequential(nn.Conv2d(3, 2, 1), NaNOnSecondImage())
    with pytest.raises(CaptureError, match=r"'1' produced NaN or infinite activations on images \['squares/1'\]"):
        netdissect.dissect(model, square_concepts(), layers=["1"], out=tmp_path / "r",
                           preprocess=IDENTITY, progress=False, num_workers=0, batch_size=4)


def test_label_code_absent_from_concept_table(tmp_path):
    ds = square_concepts()
    ds.pixel_labels[3, 0, 0, 0] = 7
    with pytest.raises(DatasetError, match=r"image 'squares/3' has pixel label 7, which is not in the concept table"):
        run(ds, tmp_path / "run")


def test_new_iou_cutoff_is_derived_from_saved_statistics(tmp_path):
    ds = square_concepts(n=12)
    first = run(ds, tmp_path / "run")
    assert first.summary["layers"]["features"]["detectors"] == 1
    counted = Interrupting(ds, None)
    again = run(counted, tmp_path / "run", iou_threshold=0.0)
    assert counted.calls == 0  # no image was read again
    assert again.iou_threshold == 0.0
    assert again.summary["layers"]["features"]["detectors"] == 1  # unit 2's IoU is exactly 0
    assert again.tally("features")["score"].tolist() == first.tally("features")["score"].tolist()
    per_category = again.summary["layers"]["features"]["unique_detectors"]["per-category"]["units"]
    assert per_category["scene"] == 1  # unit 1's even-s IoU > 0; unit 2's is 0


def test_broden_folder_gives_the_same_results_as_the_data_it_was_written_from(tmp_path):
    from netdissect.data.broden import write_broden
    from netdissect.data.synthetic import SyntheticConcepts

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4, padding=3), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1))
    synthetic = SyntheticConcepts(n=16, seed=3)
    folder = write_broden(synthetic, tmp_path / "broden", image_format="png")
    results = []
    for data, name in ((synthetic, "a"), (str(folder), "b")):
        results.append(netdissect.dissect(model, data, layers=["0", "2"], out=tmp_path / name, progress=False,
                                          num_workers=0, batch_size=6, quantile=0.02))
    for layer in ("0", "2"):
        a, b = (r.tally(layer) for r in results)
        pd.testing.assert_frame_equal(a, b)
        assert (a["score"] > 0).all()


def test_numeric_looking_concept_names_stay_text(tmp_path):
    from netdissect.data.memory import ArrayConcepts
    from netdissect.data.protocol import Concept, ConceptTable

    ds = square_concepts()
    table = ConceptTable([Concept(1, "007", "object"), Concept(2, "sky", "object"), Concept(3, "1e5", "scene")],
                         ["object", "scene"])
    ds = ArrayConcepts(ds.images, ds.pixel_labels, table, ds.image_labels, name="0012")
    result = run(ds, tmp_path / "run")
    assert result.labels.set_index("unit").loc[1, "label"] == "007"
    assert result.tally("features")["scene-label"].tolist() == ["1e5", "1e5"]
    assert result.image_ids[0] == "0012/0"
