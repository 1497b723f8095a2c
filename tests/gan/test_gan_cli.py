"""`netdissect gan ablate|insert|ace` and `netdissect edit` on the painter generator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from gan_helpers import painter
from PIL import Image

import netdissect
from netdissect.cli import main

GEN = ["--generator", "module:gan_helpers:painter", "--layer", "units", "--device", "cpu"]


def test_gan_commands_write_their_figures(tmp_path, capsys):
    n = 6
    run = tmp_path / "run"
    netdissect.dissect(generator=painter(), segmenter="color", samples=n, layers=["units"], out=run,
                       quantile=(n * 256 - 0.5) / (n * 1024 - 1), batch_size=4, num_workers=0, progress=False)
    out = tmp_path / "ablate"
    assert main(["gan", "ablate", *GEN, "--concept", "green-c", "--run", str(run), "--samples", "4",
                 "--out", str(out)]) == 0
    table = pd.read_csv(out / "ablation.csv")
    assert table["k"].tolist() == [0, 1, 2, 3] and table["drop"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert (out / "ablation.png").is_file() and Image.open(out / "ablation_strip.png").size[1] > 64

    out = tmp_path / "insert"
    assert main(["gan", "insert", *GEN, "--concept", "blue-c", "--units", "2", "--samples", "3",
                 "--out", str(out)]) == 0
    ctx = pd.read_csv(out / "insertion_context.csv", keep_default_na=False).set_index("context")
    assert ctx.loc["blue-c", "mean_added"] == 0 and ctx.loc["black-c", "mean_added"] == 64
    assert json.loads((out / "insertion.json").read_text())["values"] == [2.0]
    assert np.loadtxt(out / "insertion_cells.csv", delimiter=",").shape == (4, 4)

    out = tmp_path / "ace"
    assert main(["gan", "ace", *GEN, "--concept", "blue-c", "--run", str(run), "--k", "1", "--samples", "4",
                 "--search", "20", "--train", "4", "--optimize", "--epochs", "1", "--out", str(out)]) == 0
    ace = json.loads((out / "ace.json").read_text())
    assert ace["iou_top"]["units"] == [2] and ace["iou_top"]["ace"] == 1.0
    assert ace["optimized_top"]["units"] == [2] and (out / "alpha.npy").is_file()

    image = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), [0, 0, 255], np.uint8)).save(image)
    out = tmp_path / "edit"
    assert main(["edit", *GEN, "--units", "2", "--image", str(image), "--box", "0,0,32,64", "--steps", "30",
                 "--out", str(out)]) == 0
    edited = np.asarray(Image.open(out / "edited.png"))
    recon = np.asarray(Image.open(out / "reconstruction.png"))
    assert (edited[:, :32, 2] == 0).all() and (recon[:, :32, 2] > 0).any()  # blue switched off on the left
    assert np.array_equal(edited[:, 32:], recon[:, 32:])
    assert {p.name for p in out.iterdir()} >= {"original.png", "reconstruction.png", "edited.png",
                                               "before_after.png", "edit.json"}
    assert "inversion error" in capsys.readouterr().out


def test_gan_commands_refuse_bad_input(capsys):
    assert main(["gan", "ablate", *GEN, "--concept", "red-c", "--out", "/tmp/x"]) == 2
    assert "exactly one of --run" in capsys.readouterr().err
    assert main(["gan", "ablate", *GEN, "--concept", "red-c", "--units", "a,b", "--out", "/tmp/x"]) == 2
    assert "--units 'a,b' must be comma-separated integers" in capsys.readouterr().err
