"""Tests of `netdissect data info` and `netdissect data check` (netdissect.data.broden.check)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdissect.cli import main
from netdissect.data.broden import BrodenDataset, check_broden, data_info, write_broden
from netdissect.data.imageio import read_label_png, write_label_png
from netdissect.data.synthetic import SyntheticConcepts
from netdissect.errors import DatasetError

N = 10


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_broden(SyntheticConcepts(n=N, size=32), tmp_path_factory.mktemp("t") / "syn", image_format="png")


@pytest.fixture
def copy(written, tmp_path):
    dst = tmp_path / "broden"
    shutil.copytree(written, dst)
    return dst


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_rows(path: Path, data: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(data)


# -- info ----------------------------------------------------------------------------------


def test_info_recorded_and_scanned_match_brute_force(written):
    ds = SyntheticConcepts(n=N, size=32)
    cats = list(ds.concepts.categories)
    cat_of = ds.concepts.category_index()
    # brute force: per category, share of label pixels with a label of it; per concept, images holding it
    covered = np.zeros(len(cats))
    freq = {}
    for i in range(N):
        s = ds.load_labels(i)
        for g in range(len(cats)):
            covered[g] += (cat_of[s.pixel_labels] == g).any(0).sum()
        for v in s.image_labels:
            covered[cat_of[v]] += 16 * 16
        for v in set(np.unique(s.pixel_labels).tolist()) | set(s.image_labels.tolist()):
            if v:
                freq[v] = freq.get(v, 0) + 1
    scanned = data_info(written, scan=True, top=3, workers=2)
    recorded = data_info(written, top=3)
    assert scanned.images == N and scanned.splits == {"train": N}
    assert scanned.image_size == (32, 32) and scanned.label_size == (16, 16)
    assert [c.name for c in scanned.categories] == cats
    for g, (a, b) in enumerate(zip(scanned.categories, recorded.categories)):
        members = [c for c in ds.concepts if c.category == cats[g]]
        assert a.concepts == b.concepts == len(members)
        assert a.present == b.present == sum(1 for c in members if freq.get(c.number))
        assert a.pixel_coverage == pytest.approx(covered[g] / (N * 16 * 16))
        assert b.pixel_coverage is None
        assert [(n, k) for n, k, _ in a.top] == [(n, k) for n, k, _ in b.top]  # recorded stats = measured
        assert a.top[0][1] == max(freq.get(c.number, 0) for c in members)
    assert scanned.categories[0].name == "color" and scanned.categories[0].pixel_coverage == pytest.approx(1.0)
    text = scanned.format()
    assert f"images: {N} (train: {N})" in text and "100.0%" in text


def test_info_cli(written, capsys):
    assert main(["data", "info", str(written)]) == 0
    out = capsys.readouterr().out
    assert f"images: {N} (train: {N})" in out and "pixel coverage (--scan)" in out
    assert all(cat in out for cat in ("color", "object", "part", "texture", "scene"))


# -- check --------------------------------------------------------------------------------------


def test_clean_folder_has_no_problems(written, capsys):
    assert check_broden(written) == []
    assert main(["data", "check", str(written)]) == 0
    assert capsys.readouterr().out.strip().endswith(": OK")


def test_each_problem_is_reported_precisely(copy, capsys):
    ds = BrodenDataset(copy)
    index = rows(copy / "index.csv")
    header = index[0]
    # 1. a missing image (row 1 = line 2)
    (copy / "images" / index[1][0]).unlink()
    # 2. an unreadable image (line 3)
    (copy / "images" / index[2][0]).write_bytes(b"not a png")
    # 3. a label map of the wrong size (line 4, object column)
    obj = index[3][header.index("object")].split(";")[0]
    write_label_png(copy / "images" / obj, np.zeros((15, 16), np.int64))
    # 4. an unknown label code (line 5, colour column)
    col = index[4][header.index("color")].split(";")[0]
    labels = read_label_png(copy / "images" / col)
    labels[0, 0] = 999
    write_label_png(copy / "images" / col, labels)
    # 5. an object layer moved into the part column (line 6)
    cells = index[5]
    moved = cells[header.index("object")].split(";")[0]
    cells[header.index("part")] = ";".join(filter(None, [cells[header.index("part")], moved]))
    cells[header.index("object")] = ";".join(cells[header.index("object")].split(";")[1:])
    write_rows(copy / "index.csv", index)
    # 6. category.csv count off by one
    cat = rows(copy / "category.csv")
    cat[1][cat[0].index("count")] = str(int(cat[1][cat[0].index("count")]) + 1)
    write_rows(copy / "category.csv", cat)

    problems = check_broden(copy, workers=2)
    text = "\n".join(map(str, problems))
    first_object = moved
    expected = [
        rf"\[image\] image .*{index[1][0]} \(index.csv line 2\) does not exist",
        rf"\[image\] image .*{index[2][0]} \(index.csv line 3\) cannot be read",
        rf"\[labels\] label PNG .*{obj} is 15x16 \(HxW\) but the data set's label size \(sh x sw\) is 16x16 "
        rf"\(index.csv line 4, column 'object'\)",
        rf"\[codes\] label PNG .*{col} \(index.csv line 5, column 'color'\) holds label code\(s\) 999 not in label.csv",
        rf"\[category\] label \d+ \('\w+'\) appears in column 'part' of 1 image\(s\) \(first: index.csv line 6, "
        rf"{first_object}\), but label.csv lists it only under object",
        r"\[categories\] .*category.csv line 2: category 'color' has count 12 but c_color.csv lists 11 labels",
    ]
    for pattern in expected:
        assert any(re.search(pattern, str(p)) for p in problems), (pattern, text)
    kinds = sorted(p.kind for p in problems)
    assert kinds.count("image") == 2 and kinds.count("labels") == 1 and kinds.count("codes") == 1
    assert main(["data", "check", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "does not exist" in captured.out and "problem(s)" in captured.err
    del ds


def test_structural_errors_are_reported_alone(copy):
    index = rows(copy / "index.csv")
    for r in index:
        del r[-1]  # drop the last category column
    write_rows(copy / "index.csv", index)
    problems = check_broden(copy)
    assert len(problems) == 1 and problems[0].kind == "structure"
    assert "missing column(s) scene" in problems[0].message and "index.csv" in problems[0].message


def test_c_file_and_label_csv_disagree(copy):
    lab = rows(copy / "label.csv")
    # label 1 (black-c) claims the object category too, but c_object.csv does not list it
    lab[1][lab[0].index("category")] = lab[1][lab[0].index("category")] + ";object(2)"
    write_rows(copy / "label.csv", lab)
    problems = check_broden(copy)
    assert [str(p) for p in problems] == [
        "[categories] label.csv line 2 lists label 1 ('black-c') under 'object', but c_object.csv does not list it"
    ]


def test_duplicate_rows(copy, capsys):
    """An image listed twice would be counted twice by dissect: check and the reader give the same one error."""
    index = rows(copy / "index.csv")
    index.append(index[1])  # line N + 2 repeats line 2
    index.append(["./" + index[4][0]] + index[4][1:])  # the same file, written differently
    write_rows(copy / "index.csv", index)
    problems = check_broden(copy)
    assert len(problems) == 1 and problems[0].kind == "structure"
    with pytest.raises(DatasetError) as e:
        BrodenDataset(copy)
    assert problems[0].message == str(e.value)
    assert str(e.value) == (
        f"{copy.resolve() / 'index.csv'} lists 2 images more than once, and each listing would be counted: "
        f"{index[1][0]} on lines 2, {N + 2}; {index[4][0]} on lines 5, {N + 3}; list each image once"
    )
    assert main(["data", "check", str(copy)]) == 1
    assert f"{index[1][0]} on lines 2, {N + 2}" in capsys.readouterr().out


def with_columns(root: Path, columns: list[str]) -> None:
    """Rewrite index.csv with these category columns (in this order); absent ones are empty."""
    index = rows(root / "index.csv")
    header = index[0][:6] + columns
    write_rows(root / "index.csv", [header] + [[dict(zip(index[0], r)).get(c, "") for c in header]
                                              for r in index[1:]])


def test_columns_of_categories_not_in_category_csv_are_a_note(copy, capsys):
    """index.csv with an extra empty 'material' column, as the original tools write it: read, with a note."""
    cats = list(BrodenDataset(copy).concepts.categories)
    assert "material" not in cats
    with_columns(copy, cats[:3] + ["material"] + cats[3:])
    assert check_broden(copy) == []
    assert main(["data", "check", str(copy)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^note: index\.csv column\(s\) material is not a category of category\.csv .* ignored",
                     out, re.M)
    assert out.strip().endswith(": OK")
    info = data_info(copy)
    assert [c.name for c in info.categories] == cats and len(info.notes) == 1
    assert main(["data", "info", str(copy)]) == 0
    assert "note: index.csv column(s) material is not a category" in capsys.readouterr().out
    # Entries in an ignored column are a problem: dissect would not see them.
    index = rows(copy / "index.csv")
    index[3][index[0].index("material")] = "5"
    write_rows(copy / "index.csv", index)
    assert [str(p) for p in check_broden(copy)] == [
        f"[categories] {copy.resolve() / 'index.csv'}: column 'material' holds entries in 1 row(s) (first: line 4), "
        f"but category.csv does not list category 'material': they are ignored"
    ]


def test_image_level_zero_means_no_label(copy):
    """The real Broden has image-level cells '0': no label, as dissect reads them; not an unknown label."""
    index = rows(copy / "index.csv")
    col = index[0].index("scene")
    assert all(r[col] for r in index[1:])  # every synthetic image has a scene
    index[2][col] = "0"
    write_rows(copy / "index.csv", index)
    assert check_broden(copy) == []
    scene = next(c for c in data_info(copy).categories if c.name == "scene")
    assert scene.images == N - 1
    assert list(BrodenDataset(copy).load_labels(1).image_labels) in ([], [0])


def test_check_reads_truncated_images(copy):
    index = rows(copy / "index.csv")
    path = copy / "images" / index[1][0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = check_broden(copy)
    assert len(problems) == 1 and problems[0].kind == "image" and "cannot be read" in problems[0].message
    Image.open(copy / "images" / index[2][0]).verify()  # the others are fine
