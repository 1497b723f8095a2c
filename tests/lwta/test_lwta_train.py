"""The trainer: it learns, resuming gives the same weights as an uninterrupted run, settings are checked."""

import numpy as np
import pytest
import torch

from netdissect.data.imageio import write_rgb
from netdissect.errors import ConfigError, DatasetError
from netdissect.lwta.train import FolderClassification, TrainConfig, evaluate, train
from netdissect.models import Preprocess, load_model

SMALL = "module:netdissect.lwta.nets:small_resnet"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes told apart by colour: reddish and bluish noisy squares, 12 each."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for k, name in enumerate(("blue", "red")):
        (root / name).mkdir()
        for i in range(12):
            img = rng.integers(0, 120, (20, 20, 3)).astype(np.uint8)
            img[..., 2 - 2 * k] += 120
            write_rgb(root / name / f"{i}.png", img)
    return root


CONFIG = TrainConfig(epochs=3, batch_size=8, lr=0.05, size=16, augment="crop-flip", val_fraction=0.25, seed=1)


def _model(U="4"):
    return load_model(f"lwta:{SMALL}?U={U}&classes=2").module


def test_resume_gives_the_same_result(folder, tmp_path):
    full = _model()
    result = train(full, folder, tmp_path / "full", config=CONFIG, device="cpu", progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and result.resumed_from == 0

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    part = _model()
    with pytest.raises(KeyboardInterrupt):
        train(part, folder, tmp_path / "part", config=CONFIG, device="cpu", progress=False, on_epoch=stop_after_first)
    fresh = _model()  # a new process: a fresh model, resumed from the checkpoint
    resumed = train(fresh, folder, tmp_path / "part", config=CONFIG, device="cpu", progress=False)
    assert resumed.resumed_from == 1
    for key, value in full.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    assert (tmp_path / "part" / "model.safetensors").is_file()
    assert (tmp_path / "part" / "classes.txt").read_text().split() == ["blue", "red"]
    # the saved weights load into the same spec
    loaded = load_model(f"lwta:{SMALL}?U=4&classes=2", weights=tmp_path / "part" / "model.safetensors")
    assert torch.equal(loaded.module.fc.weight, fresh.fc.weight)


def test_it_learns_an_easy_task(folder, tmp_path):
    config = TrainConfig(epochs=6, batch_size=8, lr=0.05, size=16, augment="flip", val_fraction=0.25,
                         optimizer="adamw", schedule="step", step_size=4, weight_decay=0.0)
    model = _model("2")
    val = FolderClassification(folder, "val", size=16, preprocess=Preprocess(), val_fraction=0.25)
    result = train(model, folder, tmp_path / "run", config=config, device="cpu", progress=False)
    assert result.val_acc == evaluate(model, val, device="cpu")["acc"]
    assert result.history[-1]["train_acc"] >= 0.9


def test_settings_and_data_are_checked(folder, tmp_path):
    train(_model(), folder, tmp_path / "run", config=TrainConfig(epochs=1, batch_size=8, size=16),
          device="cpu", progress=False)
    with pytest.raises(ConfigError, match="other settings \\(epochs\\)"):
        train(_model(), folder, tmp_path / "run", config=TrainConfig(epochs=2, batch_size=8, size=16),
              device="cpu", progress=False)
    with pytest.raises(ConfigError, match="the model has 6 outputs but .* has 2 classes"):
        train(load_model(SMALL).module, folder, tmp_path / "other", config=CONFIG, device="cpu", progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        FolderClassification(tmp_path / "missing", "train", size=16, preprocess=Preprocess())
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")
    c = TrainConfig(epochs=10, lr=1.0, schedule="step", step_size=3, gamma=0.5, warmup_epochs=1)
    assert [round(c.lr_at(e), 4) for e in (0, 1, 3, 4, 7)] == [0.5, 1.0, 1.0, 0.5, 0.25]
    c = TrainConfig(epochs=4, lr=1.0, schedule="cosine")
    assert [round(c.lr_at(e), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
