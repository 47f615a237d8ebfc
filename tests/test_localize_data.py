"""Box CSVs: rows that cannot be used are reported with their row number, labels without a box
are kept as labels, folder-per-class layouts work, unusable input is a one-line InputError."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from classification.errors import InputError
from classification.images import decode
from localization.data import load_boxes, oriented_size

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "boxes_sample"


def copy_sample(root: Path, n: int = 6) -> pd.DataFrame:
    """The first n rows of the bundled sample's labels.csv, with their images, under root."""
    frame = pd.read_csv(SAMPLE / "labels.csv").groupby("label").head(n // 3).reset_index(drop=True)
    for rel in frame.path:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / rel, root / rel)
    return frame


def test_bundled_sample_loads_with_sizes_matching_the_files():
    data = load_boxes(SAMPLE / "labels.csv")
    assert len(data) == 36 and data.has_box.all() and not data.skipped
    assert data.images.classes == ["Abyssinian", "Bengal", "american_bulldog"]
    for i in (0, 17, 35):
        assert tuple(data.sizes[i]) == Image.open(data.images.paths[i]).size
    assert (data.boxes[:, 2] <= data.sizes[:, 0]).all() and (data.boxes[:, 3] <= data.sizes[:, 1]).all()


def test_bad_rows_are_reported_and_left_out(tmp_path):
    frame = copy_sample(tmp_path, n=9).astype(object)
    w, h = Image.open(tmp_path / frame.path[1]).size
    frame.loc[1, "x1"] = w + 5                       # outside the image
    frame.loc[2, ["x0", "x1"]] = [40, 40]            # x1 <= x0
    frame.loc[3, "y1"] = "tall" * 500                # not a number (and long: quoted briefly)
    frame.loc[4, ["x0", "y0", "x1", "y1"]] = ""      # a label without a box: kept
    missing = {"path": "images/Bengal/none.jpg", "label": "Bengal", "x0": 1, "y0": 1, "x1": 5, "y1": 5}
    frame = pd.concat([frame, pd.DataFrame([missing, frame.iloc[0].to_dict()])], ignore_index=True)
    frame.to_csv(tmp_path / "boxes.csv", index=False)
    before = (tmp_path / "boxes.csv").read_bytes()
    data = load_boxes(tmp_path / "boxes.csv")
    reasons = {Path(p).name: r for p, r in data.skipped}
    assert len(data) == 9 - 3 and data.has_box.sum() == 5
    assert f"boxes.csv:3: box (" in reasons[Path(frame.path[1]).name] and "outside the" in reasons[Path(frame.path[1]).name]
    assert "boxes.csv:4: empty box" in reasons[Path(frame.path[2]).name]
    assert "boxes.csv:5: box cells must be four numbers" in reasons[Path(frame.path[3]).name]
    assert len(reasons[Path(frame.path[3]).name]) < 200
    assert reasons["none.jpg"] == "listed in the CSV but not found"
    assert "a second row for this image (row 2 kept)" in reasons[Path(frame.path[0]).name]
    kept = [Path(p).name for p in data.images.paths]
    assert Path(frame.path[4]).name in kept and not data.has_box[kept.index(Path(frame.path[4]).name)]
    assert (tmp_path / "boxes.csv").read_bytes() == before  # inputs are never modified


def test_folder_per_class_with_a_box_csv(tmp_path):
    frame = copy_sample(tmp_path / "set", n=6)
    root = tmp_path / "set" / "images"
    frame.assign(path=frame.path.str.replace("images/", "", regex=False)).drop(columns="label").iloc[:4] \
        .to_csv(root / "boxes.csv", index=False)
    data = load_boxes(root)
    assert len(data) == 6 and data.has_box.sum() == 4  # the two images without a row: labels only
    assert sorted(data.images.classes) == sorted(frame.label.unique())


def test_folder_label_that_disagrees_is_an_error(tmp_path):
    frame = copy_sample(tmp_path / "set", n=6)
    root = tmp_path / "set" / "images"
    wrong = frame.assign(path=frame.path.str.replace("images/", "", regex=False))
    wrong.loc[0, "label"] = "Bengal" if wrong.label[0] != "Bengal" else "Abyssinian"
    wrong.to_csv(root / "boxes.csv", index=False)
    with pytest.raises(InputError, match="boxes.csv:2: label .* but the image is in folder"):
        load_boxes(root)


@pytest.mark.parametrize("content,message", [
    ("path,label,x0,y0\na.jpg,cat,1,2\n", "missing column\\(s\\) x1, y1"),
    ("path,label,x0,y0,x1,y1\n", "need at least 2 classes"),
])
def test_unusable_csv_is_one_input_error(tmp_path, content, message):
    (tmp_path / "b.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        load_boxes(tmp_path / "b.csv")


def test_no_usable_box_at_all_is_an_error(tmp_path):
    frame = copy_sample(tmp_path, n=6)
    frame.assign(x1=frame.x0).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(InputError, match="no usable box in .*first skip: .*empty box"):
        load_boxes(tmp_path / "b.csv")


def test_exif_rotated_size_is_the_decoded_size(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: decoded as 20 x 40
    img.save(tmp_path / "r.jpg", exif=exif)
    assert oriented_size(tmp_path / "r.jpg") == (20, 40)
    assert decode(tmp_path / "r.jpg").shape[:2] == (40, 20)  # (H, W) as decoding returns it
