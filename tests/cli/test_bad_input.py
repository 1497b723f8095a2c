"""Every bad input through the command line: exit status 2, one line naming the culprit, no traceback,
finished results untouched (issue 8, kind 5)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import square_concepts
from PIL import Image
from torch import nn

from netdissect.data.broden import write_broden
from netdissect.data.imageio import write_label_png

PY = sys.executable
# a tiny model spec keeps every subprocess fast: module:helpers_models:tiny (written below)
MODEL_FILE = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "tinymodel.py").write_text(MODEL_FILE)
    good = write_broden(square_concepts(n=6, size=32), root / "good", image_format="png")
    finished = root / "finished"
    done = run(root, "dissect", "--data", str(good), "--out", str(finished))
    assert done.returncode == 0, done.stderr
    return root, good, finished


def run(root: Path, *args: str, workers: str = "1"):
    extra = []
    if args and args[0] == "dissect":
        extra = ["--model", "module:tinymodel:tiny", "--layers", "2", "--batch-size", "3", "--workers", workers,
                 "--no-progress", "--no-report"]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run([PY, "-m", "netdissect", *args, *extra], capture_output=True, text=True, timeout=300,
                          env=env, cwd=root)


def copy_data(root: Path, good: Path, name: str) -> Path:
    import shutil

    dest = root / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(good, dest)
    return dest


def first_image(data: Path) -> tuple[Path, Path]:
    with open(data / "index.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return data / "images" / row["image"], data / "images" / row["object"].split(";")[0]


def assert_one_clear_line(proc, *culprits: str, status: int = 2):
    err = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr, proc.stderr
    assert len(err) == 1, proc.stderr
    for c in culprits:
        assert c in err[0], err[0]


def test_unreadable_image_in_a_worker(workspace):
    root, good, finished = workspace
    data = copy_data(root, good, "unreadable")
    image, _ = first_image(data)
    image.write_bytes(b"this is not a png")
    proc = run(root, "dissect", "--data", str(data), "--out", str(root / "r1"))
    assert_one_clear_line(proc, str(image), "cannot be read as an image")


def test_wrong_image_size_in_a_worker(workspace):
    root, good, _ = workspace
    data = copy_data(root, good, "wrongsize")
    image, _ = first_image(data)
    Image.new("RGB", (20, 20)).save(image)
    proc = run(root, "dissect", "--data", str(data), "--out", str(root / "r2"))
    assert_one_clear_line(proc, str(image), "20x20")


def test_unknown_pixel_label_code(workspace):
    root, good, _ = workspace
    data = copy_data(root, good, "badcode")
    _, label = first_image(data)
    write_label_png(label, np.full((32, 32), 99, dtype=np.int32))
    proc = run(root, "dissect", "--data", str(data), "--out", str(root / "r3"), workers="0")
    assert_one_clear_line(proc, str(label), "99", "not in label.csv")


def test_unknown_image_level_label(workspace):
    root, good, _ = workspace
    data = copy_data(root, good, "badscene")
    rows = list(csv.DictReader(open(data / "index.csv", newline="")))
    rows[1]["scene"] = "77"
    with open(data / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = run(root, "dissect", "--data", str(data), "--out", str(root / "r4"))
    assert_one_clear_line(proc, "77")


def test_decompression_bomb_image(workspace):
    root, good, _ = workspace
    data = copy_data(root, good, "bomb")
    image, _ = first_image(data)
    Image.new("1", (20000, 20000)).save(image)  # 400 megapixels: PIL refuses to decode it
    proc = run(root, "dissect", "--data", str(data), "--out", str(root / "r5"))
    assert_one_clear_line(proc, str(image), "too large to decode")


@pytest.mark.parametrize("device,message", [
    ("gpu0", "'gpu0' is not a torch device"),
    ("cuda:7", "cuda:7"),
])
def test_bad_devices_leave_finished_results_untouched(workspace, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    root, good, finished = workspace
    before = (finished / "summary.json").read_bytes()
    proc = run(root, "dissect", "--data", str(good), "--out", str(finished), "--device", device)
    assert_one_clear_line(proc, message)
    assert (finished / "summary.json").read_bytes() == before


def test_out_naming_an_existing_file(workspace):
    root, good, _ = workspace
    target = root / "a_file.txt"
    target.write_text("keep me")
    proc = run(root, "dissect", "--data", str(good), "--out", str(target))
    assert_one_clear_line(proc, str(target), "existing file")
    assert target.read_text() == "keep me"


def test_report_of_a_run_whose_npz_holds_objects(workspace):
    import shutil

    root, _, finished = workspace
    run_dir = root / "pickled"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(finished, run_dir)
    top = run_dir / "layers" / "2" / "top_images.npz"
    np.savez(top, indices=np.array([{"evil": 1}], dtype=object), scores=np.zeros(1), maps=np.zeros(1))
    proc = run(root, "report", str(run_dir), "--no-progress")
    assert_one_clear_line(proc, str(top), "pickled objects")


def test_a_users_data_set_with_a_wrong_sample_shape_is_named(tmp_path):
    import netdissect
    from netdissect.errors import DatasetError

    class Broken:
        def __init__(self):
            self.ds = square_concepts(n=4, size=16)
            self.concepts, self.image_size, self.label_size = self.ds.concepts, (16, 16), (16, 16)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            s = self.ds[i]
            if i == 2:
                s.pixel_labels = s.pixel_labels[:, :8]  # wrong label size
            return s

        def load_labels(self, i):
            return self[i]

        def image_id(self, i):
            return f"mine/{i}"

        def fingerprint(self):
            return "broken"

        def spec(self):
            return "broken"

    model = nn.Sequential(nn.Conv2d(3, 2, 1))
    with pytest.raises(DatasetError, match=r"pixel labels of image 'mine/2' have shape \(2, 8, 16\)"):
        netdissect.dissect(model, Broken(), layers=["0"], out=tmp_path / "r", num_workers=0, progress=False)
