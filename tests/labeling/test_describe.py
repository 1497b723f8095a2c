"""netdissect.describe end to end on planted units and a planted image-text model with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from words_helpers import WORDS, PlantedImageText, colour_model, colour_probe

import netdissect
from netdissect.errors import ConfigError, DatasetError, RunInUseError
from netdissect.labeling.similarity import list_similarities

SIMILARITIES = ["cos", "cos3", "rank_reorder", "wpmi", "soft_wpmi"]


def run(ds, out, **kw):
    kw.setdefault("concepts", WORDS)
    kw.setdefault("image_text", PlantedImageText())
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 32)
    return netdissect.describe(colour_model(), ds, out=out, progress=False, **kw)


@pytest.fixture(scope="module")
def probe():
    return colour_probe()


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_every_similarity_ranks_the_planted_concept_first(probe, tmp_path, pool):
    ds, _ = probe
    assert set(SIMILARITIES) <= set(list_similarities())
    for name in SIMILARITIES:
        result = run(ds, tmp_path / "run", layers=["features", "fc"], similarity=name, pool=pool)
        labels = result.labels
        assert list(labels.columns[:5]) == ["layer", "unit", "label", "score", "concept"]
        assert list(labels["layer"]) == ["features"] * 4 + ["fc"] * 4
        # unit k fires exactly on the images of colour k: conv maps (pooled) and the linear layer alike
        assert list(labels["label"]) == WORDS * 2, (name, labels)
        assert (labels["score"] >= labels["score_2"]).all()
        assert result.method == f"words-{name}" and result.info["similarity"] == name


def test_one_pass_feeds_summaries_and_image_embeddings_and_is_reused(probe, tmp_path):
    ds, _ = probe
    it = PlantedImageText()
    first = run(ds, tmp_path / "run", layers=["features"], image_text=it, similarity="soft_wpmi", batch_size=50)
    batches = -(-len(ds) // 50)
    assert it.calls == batches + 1  # one call per batch, and one black image for the embedding size
    # another similarity function reuses the finished pass: no new image embeddings
    it.calls = 0
    second = run(ds, tmp_path / "run", layers=["features"], image_text=it, similarity="cos", batch_size=50)
    assert it.calls == 1 and list(second.labels["label"]) == WORDS
    # the same arguments again: the finished table is returned as it is
    it.calls = 0
    again = run(ds, tmp_path / "run", layers=["features"], image_text=it, similarity="soft_wpmi", batch_size=50)
    assert it.calls == 0 and again.labels.equals(first.labels)
    from netdissect.results.description import word_methods

    assert word_methods(tmp_path / "run") == ["words-cos", "words-soft_wpmi"]


class Interrupting(PlantedImageText):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def encode_images(self, images):
        if self.calls == self.after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return super().encode_images(images)


def test_an_interrupted_pass_resumes_to_the_same_labels(probe, tmp_path):
    ds, _ = probe
    whole = run(ds, tmp_path / "whole", layers=["features", "fc"], batch_size=20, top=4)
    with pytest.raises(KeyboardInterrupt):
        run(ds, tmp_path / "run", layers=["features", "fc"], batch_size=20, top=4, image_text=Interrupting(4),
            checkpoint_seconds=0)
    assert not (tmp_path / "run" / "labels").exists()
    it = PlantedImageText()
    resumed = run(ds, tmp_path / "run", layers=["features", "fc"], batch_size=20, top=4, image_text=it)
    assert it.calls == 1 + (len(ds) // 20 - 3)  # the probe image, then only the batches not saved
    pd.testing.assert_frame_equal(resumed.labels, whole.labels)


def test_words_beside_a_dissection_and_their_agreement(probe, tmp_path):
    ds, concept = probe
    out = tmp_path / "run"
    # each colour covers a quarter of the pixels: the top 20% of a unit's activations lie inside its colour
    dissection = netdissect.dissect(colour_model(), ds, layers=["features"], out=out, progress=False, num_workers=0,
                                    batch_size=32, quantile=0.2)
    iou = dissection.labels.sort_values("unit")
    assert list(iou["label"]) == [f"{w}-c" for w in WORDS] and iou["detector"].all()
    words = run(ds, out, layers=["features"])
    assert words.has_dissection
    again = netdissect.Dissection.load(out)
    assert again.label_methods() == ["iou", "words-soft_wpmi"]
    table = again.label_table("words-soft_wpmi")
    assert list(table["label"]) == WORDS and table["label"].map(type).eq(str).all()
    assert (again.labels["method"] == "iou").all()
    agree = words.agreement()
    row = agree.iloc[0]
    assert row["layer"] == "features" and row["units"] == 4 and row["detectors"] == 4
    assert row["detectors_equal"] == 1.0 and row["detectors_contains"] == 1.0 and np.isnan(row["others_equal"])
    # the dissection itself is untouched
    assert json.loads((out / "summary.json").read_text()) == dissection.summary


def test_describe_only_run_directory(probe, tmp_path):
    ds, _ = probe
    out = tmp_path / "words"
    result = run(ds, out, layers=["fc"], similarity="wpmi")
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["words-wpmi.csv", "words-wpmi.json"]
    assert not (out / "summary.json").exists() and not result.has_dissection
    loaded = netdissect.Description.load(out)
    pd.testing.assert_frame_equal(loaded.labels, result.labels)
    assert loaded.info["model"] == "tests:ColourUnits" and loaded.info["units"] == {"fc": 4}
    with pytest.raises(DatasetError, match="word descriptions only.*Description.load"):
        netdissect.Dissection.load(out)
    with pytest.raises(DatasetError, match="no dissection"):
        loaded.agreement()
    metrics = loaded.evaluate(WORDS, text_model=PlantedImageText())
    assert metrics == {"units": 4, "top1": 1.0, "top5": 1.0, "mean_cos": 1.0}
    assert "words-wpmi" in repr(loaded)


def test_broden_vocabulary_maps_words_back_to_concepts(probe, tmp_path):
    from netdissect.data.broden import write_broden

    ds, _ = probe
    folder = write_broden(ds, tmp_path / "broden")
    result = run(ds, tmp_path / "run", layers=["features"], concepts=f"broden:{folder}")
    assert list(result.labels["label"]) == WORDS
    assert list(result.labels["concept"]) == [f"{w}-c" for w in WORDS]
    assert result.info["vocabulary"] == f"broden:{folder}" and result.info["words"] == 4


def test_closed_vocabulary_default_and_unknown_words(probe, tmp_path):
    ds, _ = probe
    result = run(ds, tmp_path / "run", layers=["fc"], concepts=None)  # the planted model's own 4 words
    assert list(result.labels["label"]) == WORDS and result.info["vocabulary"] == "model"
    with pytest.raises(ConfigError, match="'purple' is not in the planted vocabulary"):
        run(ds, tmp_path / "run2", layers=["fc"], concepts=WORDS + ["purple"])
    assert not (tmp_path / "run2" / ".describe").exists()  # refused before the pass over the images


def test_bad_arguments_say_what_is_allowed(probe, tmp_path):
    ds, _ = probe
    with pytest.raises(ConfigError, match="soft_wpmi"):
        run(ds, tmp_path / "a", layers=["fc"], similarity="softwpmi")
    with pytest.raises(ConfigError, match="pool 'median'"):
        run(ds, tmp_path / "a", layers=["fc"], pool="median")
    with pytest.raises(ConfigError, match="each once"):
        run(ds, tmp_path / "a", layers=["fc", "fc"])
    with pytest.raises(ConfigError, match="no parameter"):
        run(ds, tmp_path / "a", layers=["fc"], similarity_params={"topk": 3})
    with pytest.raises(netdissect.NetDissectError, match="nope"):
        run(ds, tmp_path / "a", layers=["nope"])


def test_a_run_directory_in_use_is_refused(probe, tmp_path):
    ds, _ = probe
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from netdissect.results import lock
        lock.acquire({str(out)!r})
        print("locked", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError):
            run(ds, out, layers=["fc"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_results_do_not_depend_on_the_batch_size(probe, tmp_path):
    ds, _ = probe
    a = run(ds, tmp_path / "a", layers=["features"], batch_size=7, similarity="cos")
    b = run(ds, tmp_path / "b", layers=["features"], batch_size=64, similarity="cos")
    assert list(a.labels["label"]) == list(b.labels["label"])
    np.testing.assert_allclose(a.labels["score"], b.labels["score"], rtol=1e-5)
    assert torch.get_num_threads() >= 1
