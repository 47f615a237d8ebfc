"""Image/mask pairing on the bundled NEU-Seg sample: stems, class names, splits, and the pairs
that must be skipped with a reason (no partner, unreadable, sizes that differ, bad indices)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from classification.errors import InputError
from segmentation.data import IGNORE, load_pairs, read_classes, read_mask, read_split, select
from segmentation.transforms import decode_pairs, pad_to_stride, train_transform

SAMPLE = "seg_sample"


@pytest.fixture
def seg(sample):
    return sample / SAMPLE


def test_sample_pairs_and_classes(seg):
    pairs = load_pairs(seg / "images", seg / "masks")
    assert len(pairs) == 33 and not pairs.skipped
    assert pairs.classes == ["background", "inclusion", "patches", "scratches"]  # from classes.csv beside masks/
    assert pairs.stems == sorted(pairs.stems) and all(m.endswith(f"{s}.png") for s, m in zip(pairs.stems, pairs.masks))
    train, test = select(pairs, read_split(seg / "splits" / "train.txt"), "train.txt")
    assert len(train) == 24 and len(test) == 9 and not set(train.stems) & set(test.stems)


def test_class_names_default_to_class_i(seg, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(seg / "masks", masks)  # no classes.csv in or beside this folder
    pairs = load_pairs(seg / "images", masks)
    assert pairs.classes == ["class_0", "class_1", "class_2", "class_3"]


def _corrupt_copy(seg, root):
    """The sample's first 9 pairs, 6 of them made bad in a different way each."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = sorted(p.stem for p in (seg / "images").iterdir())[:9]
    for s in stems:
        shutil.copy(seg / "images" / f"{s}.jpg", root / "images")
        shutil.copy(seg / "masks" / f"{s}.png", root / "masks")
    (root / "masks" / f"{stems[0]}.png").unlink()                          # image without mask
    Image.new("L", (200, 200)).save(root / "masks" / "orphan.png")           # mask without image
    Image.new("L", (100, 200)).save(root / "masks" / f"{stems[1]}.png")       # size mismatch
    (root / "images" / f"{stems[2]}.jpg").write_bytes(b"not a jpeg")        # unreadable image
    Image.new("RGB", (200, 200)).save(root / "masks" / f"{stems[3]}.png")     # colour mask
    Image.fromarray(np.full((200, 200), 7, np.uint8)).save(root / "masks" / f"{stems[4]}.png")  # index 7
    (root / "masks" / f"{stems[5]}.png").rename(root / "masks" / f"{stems[5]}.jpg")  # lossy format
    return stems


def test_bad_pairs_are_skipped_with_a_reason(seg, tmp_path):
    stems = _corrupt_copy(seg, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    pairs = load_pairs(tmp_path / "images", tmp_path / "masks", seg / "classes.csv")
    assert pairs.stems == stems[6:]
    reasons = {p.split("/")[-1]: r for p, r in pairs.skipped}
    assert reasons[f"{stems[0]}.jpg"] == "image without a mask of the same stem"
    assert reasons["orphan.png"] == "mask without an image of the same stem"
    assert reasons[f"{stems[1]}.png"] == "mask is 100x200, its image 200x200"
    assert reasons[f"{stems[2]}.jpg"].startswith("image unreadable")
    assert "single-channel" in reasons[f"{stems[3]}.png"]
    assert reasons[f"{stems[4]}.png"] == "class index 7 in the mask, but only 4 classes are listed"
    assert reasons[f"{stems[5]}.jpg"].startswith("lossy mask format")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # inputs untouched


def test_no_usable_pair_is_one_error(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    with pytest.raises(InputError, match="no usable image/mask pair"):
        load_pairs(tmp_path / "i", tmp_path / "m")
    with pytest.raises(InputError, match="masks folder not found"):
        load_pairs(tmp_path / "i", tmp_path / "nope")


@pytest.mark.parametrize("text,ok", [("index,name\n0,bg\n1,scratch\n", True), ("0,bg\n1,a\n2,b\n", True),
                                     ("0,bg\n2,a\n", False), ("0,bg\n", False), ("0;bg\n1;a\n", False)])
def test_classes_csv(tmp_path, text, ok):
    path = tmp_path / "classes.csv"
    path.write_text(text)
    if ok:
        assert read_classes(path)[0] == "bg"
    else:
        with pytest.raises(InputError):
            read_classes(path)


def test_joint_augmentation_keeps_image_and_mask_aligned(seg):
    pairs = load_pairs(seg / "images", seg / "masks")
    img, mask = decode_pairs(pairs.subset([0]), None)[0]
    # mark the defect pixels in the image itself, then check they stay under the mask's defect
    marked = img.copy()
    marked[mask > 0] = 255
    marked[mask == 0] = 0
    transform = train_transform(96, (0.5,) * 3, (0.5,) * 3, augment="light")
    for _ in range(5):
        out = transform(image=marked, mask=mask)
        assert out["image"].shape == (96, 96, 3) and out["mask"].shape == (96, 96)
        assert np.array_equal(out["image"][..., 0] > 0, out["mask"] > 0)


def test_strong_augmentation_cuts_holes_out_of_the_loss():
    img, mask = np.full((160, 160, 3), 128, np.uint8), np.ones((160, 160), np.uint8)
    transform = train_transform(128, (0.5,) * 3, (0.5,) * 3, augment="strong")
    holes = 0
    for _ in range(20):
        out = transform(image=img, mask=mask)
        assert out["image"].shape == (128, 128, 3) and set(np.unique(out["mask"])) <= {1, IGNORE}
        cut = out["mask"] == IGNORE
        holes += int(cut.any())
        assert np.allclose(out["image"][cut], -1.0)  # the hole's black pixels, normalised
    assert 0 < holes < 20


def test_a_seeded_augmentation_repeats_its_draws():
    img = np.arange(160 * 160 * 3, dtype=np.uint8).reshape(160, 160, 3)
    mask = np.zeros((160, 160), np.uint8)

    def draws(seed):
        transform = train_transform(64, (0.5,) * 3, (0.5,) * 3, augment="strong", seed=seed)
        return [transform(image=img, mask=mask)["image"] for _ in range(4)]

    assert all(np.array_equal(a, b) for a, b in zip(draws(3), draws(3)))
    assert not all(np.array_equal(a, b) for a, b in zip(draws(3), draws(4)))


def test_masks_read_as_indices_and_padding(seg):
    mask = read_mask(next((seg / "masks").iterdir()))
    assert mask.dtype == np.uint8 and mask.shape == (200, 200) and mask.max() < 4
    padded, hw = pad_to_stride(np.zeros((200, 190, 3), np.float32))
    assert padded.shape == (224, 192, 3) and hw == (200, 190) and IGNORE == 255
