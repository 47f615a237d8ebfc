"""Image sets: discovery, folders and CSVs, de-duplication, class maps and stratified splits."""
from __future__ import annotations

import numpy as np
import pytest

from classification.data import (dedupe, find_images, load_class_map, load_labeled, load_unlabeled,
                                 save_class_map, stratified_folds, stratified_split)
from classification.errors import InputError
from tests.conftest import make_image


def test_bundled_sample_layout(sample):
    lb = load_labeled(sample / "labeled")
    assert lb.classes == sorted(lb.classes) and len(lb.classes) == 10
    assert np.bincount(lb.labels).tolist() == [4] * 10
    assert len(load_unlabeled(sample / "unlabeled")) == 460
    assert (sample / "unlabeled_truth.csv").is_file()


def test_discovery_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ["b/Z.PNG", "a.jpeg", "b/c/y.Jpg", "notes.txt", "d.TIFF"]:
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            make_image(tmp_path / name, fmt="PNG")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpeg", "b/Z.PNG", "b/c/y.Jpg", "d.TIFF"]


def test_csv_labels_resolve_relative_to_the_csv(tmp_path):
    make_image(tmp_path / "imgs" / "1.png", fmt="PNG", color=(1, 2, 3))
    make_image(tmp_path / "imgs" / "2.png", fmt="PNG", color=(4, 5, 6))
    (tmp_path / "labels.csv").write_text("path,label\nimgs/1.png,cat\nimgs/2.png,dog\n")
    lb = load_labeled(tmp_path / "labels.csv")
    assert lb.classes == ["cat", "dog"] and lb.labels.tolist() == [0, 1]


@pytest.mark.parametrize("text,message", [
    ("file_name,label\nx.png,cat\n", "missing column"),
    ("path,label\n../../etc/passwd,cat\n", "escapes the data root"),
    ("path,label\nimgs/1.png,cat\nimgs/1.png,dog\n", "appears twice with different labels"),
])
def test_bad_csvs_are_clear_errors(tmp_path, text, message):
    make_image(tmp_path / "imgs" / "1.png", fmt="PNG")
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        load_labeled(tmp_path / "labels.csv")


def test_absolute_paths_can_be_refused(tmp_path):
    img = make_image(tmp_path / "a.png", fmt="PNG")
    (tmp_path / "labels.csv").write_text(f"path,label\n{img},cat\n")
    with pytest.raises(InputError, match="absolute path"):
        load_labeled(tmp_path / "labels.csv", allow_absolute=False)


def test_one_class_is_an_error(tmp_path):
    make_image(tmp_path / "only" / "a.png", fmt="PNG")
    with pytest.raises(InputError, match="at least 2 classes"):
        load_labeled(tmp_path)


def test_an_image_both_labelled_and_unlabelled_counts_as_labelled(tmp_path):
    a = make_image(tmp_path / "lb" / "cat" / "a.png", fmt="PNG", color=(1, 1, 1))
    make_image(tmp_path / "lb" / "dog" / "b.png", fmt="PNG", color=(2, 2, 2))
    (tmp_path / "ulb").mkdir()
    (tmp_path / "ulb" / "copy.png").write_bytes(a.read_bytes())
    make_image(tmp_path / "ulb" / "new.png", fmt="PNG", color=(3, 3, 3))
    lb, ulb = dedupe(load_labeled(tmp_path / "lb"), load_unlabeled(tmp_path / "ulb"))
    assert len(lb) == 2 and [p.rsplit("/", 1)[1] for p in ulb.paths] == ["new.png"]


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = np.repeat(np.arange(5), 4)
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert set(labels[va]) == set(range(5)) and set(labels[tr]) == set(range(5))
    assert not set(tr) & set(va) and len(tr) + len(va) == 20
    assert np.array_equal(va, stratified_split(labels, 0.2, seed=3)[1])
    assert not np.array_equal(va, stratified_split(labels, 0.2, seed=4)[1])


def test_folds_are_disjoint_and_stratified():
    labels = np.repeat(np.arange(3), 10)
    folds = stratified_folds(labels, 5, seed=0)
    for f in range(5):
        assert np.bincount(labels[folds == f], minlength=3).tolist() == [2, 2, 2]


def test_class_map_round_trip(tmp_path):
    save_class_map(tmp_path / "classes.json", ["b", "a", "c"])
    assert load_class_map(tmp_path / "classes.json") == ["b", "a", "c"]


def test_chunks_cover_the_set_in_order(sample):
    images = load_labeled(sample / "labeled")
    got = list(images.chunks(size=7))
    assert [len(rows) for rows, _ in got] == [7] * (len(images) // 7) + ([len(images) % 7] if len(images) % 7 else [])
    assert np.array_equal(np.concatenate([rows for rows, _ in got]), np.arange(len(images)))
    assert sum((chunk.paths for _, chunk in got), []) == images.paths
    assert np.array_equal(np.concatenate([chunk.labels for _, chunk in got]), images.labels)
