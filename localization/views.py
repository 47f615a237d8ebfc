"""Model inputs from images: augmentation, letterbox (or stretch), normalisation, and the
geometry row of every view.

Augmentation runs on the letterboxed image with albumentations, image and box jointly (bbox
params). The same call carries three reference points (keypoint params) from which the view's
exact axis-aligned geometry is read; the letterbox then follows as plain arithmetic. So each view
of an image is an image tensor plus a geometry row (`boxes.py`), and any box, a human one now or
a pseudo-box found later, maps onto a cached view without decoding the image again.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from classification.images import BadImage, decode
from classification.transforms import DataConfig
from localization.boxes import compose, flip_geometry, map_boxes, resize_geometry, resize_plan

_INTERP = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
EVAL, FLIP = -1, -2  # view specs besides augmentation seeds (>= 0): the plain view and its mirror


def _geometric(scale: float, shift: float) -> list:
    # No rotation or shear: they would turn a box into a larger, looser box.
    return [A.HorizontalFlip(p=0.5),
            A.Affine(scale=(1 - scale, 1 + scale), translate_percent=(-shift, shift), rotate=0, shear=0,
                     keep_ratio=True, border_mode=cv2.BORDER_CONSTANT, fill=127, p=1.0)]


def _colour(strength: float) -> list:
    return [A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=strength / 8, p=0.8),
            A.ToGray(p=0.05)]


AUGMENTATIONS = {
    "none": lambda: [],
    "flip": lambda: [A.HorizontalFlip(p=0.5)],
    "light": lambda: _geometric(0.1, 0.05) + _colour(0.2),
    "medium": lambda: _geometric(0.2, 0.1) + _colour(0.3),
    "strong": lambda: _geometric(0.3, 0.15) + _colour(0.4) + [A.GaussianBlur(blur_limit=(3, 5), p=0.2)],
}


def create_augmentation(name: str) -> A.Compose:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
    ops = AUGMENTATIONS[name]()
    if not ops:  # nothing moves: no box or keypoint processing to set up (albumentations warns)
        return A.Compose([])
    return A.Compose(ops,
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True,
                                              min_visibility=0.0),
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


@dataclass
class View:
    """image: (3, size, size) float32 normalised; geo: (6,) geometry row; box: the given box in
    normalised model coordinates as albumentations moved it (None without one)."""
    image: torch.Tensor
    geo: np.ndarray
    box: np.ndarray | None = None


class ViewMaker:
    """Builds views of decoded images for one input size, resize mode and augmentation."""

    def __init__(self, data_cfg: DataConfig, resize: str, augmentation: str = "none"):
        self.cfg, self.resize, self.augmentation = data_cfg, resize, augmentation
        self.transform = create_augmentation(augmentation)
        self.interp = _INTERP.get(data_cfg.interpolation, cv2.INTER_CUBIC)
        self.fill = tuple(int(round(255 * m)) for m in data_cfg.mean)  # normalises to 0

    def make(self, img: np.ndarray, spec: int = EVAL, box: np.ndarray | None = None) -> View:
        """View `spec` of `img`: EVAL, FLIP, or an augmentation seed (>= 0)."""
        h, w = img.shape[:2]
        geo = np.array([1.0, 0.0, 1.0, 0.0, w, h])
        if spec == FLIP:
            img, geo = img[:, ::-1], flip_geometry(w, h)
        out, letter = self.letterbox(img)
        geo = compose(letter, geo)
        moved = None if box is None else map_boxes(box, geo)[0]
        if spec >= 0 and len(self.transform.transforms):
            # augmenting the letterboxed image keeps the whole canvas in the model's frame, so
            # what is visible is the moved image within [0, size]^2 (what `to_model` clips to)
            out, aug, moved = self._augment(out, spec, moved)
            geo = compose(aug, geo)
        norm = None if moved is None else np.clip(moved, 0, self.cfg.size) / self.cfg.size
        return View(self.normalise(out), geo, norm)

    def _augment(self, img, seed, box):
        h, w = img.shape[:2]
        self.transform.set_random_seed(seed)
        # pixel-centre keypoints of the edge points (0, 0), (w, 0), (0, h): albumentations moves
        # keypoints as pixel indices and boxes as edges, half a pixel apart
        refs = [[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5]]
        bboxes = [list(np.clip(box, 0, [w, h, w, h]))] if box is not None else np.zeros((0, 4))
        out = self.transform(image=np.ascontiguousarray(img), bboxes=bboxes, box_ids=[0] * len(bboxes),
                             keypoints=refs)
        (ox, oy), (px, _), (_, qy) = (np.asarray(k[:2], np.float64) + 0.5 for k in out["keypoints"])
        geo = np.array([(px - ox) / w, ox, (qy - oy) / h, oy, w, h])
        moved = np.asarray(out["bboxes"][0], np.float64) if len(out["bboxes"]) else None
        if box is not None and moved is None:
            moved = np.zeros(4)  # shifted out of sight: an empty box
        return out["image"], geo, moved

    def letterbox(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resize by the longest side and pad (or stretch) to size x size; also its geometry."""
        h, w = img.shape[:2]
        size = self.cfg.size
        new_w, new_h, left, top = resize_plan(w, h, size, self.resize)
        out = cv2.resize(np.ascontiguousarray(img), (new_w, new_h), interpolation=self.interp)
        out = cv2.copyMakeBorder(out, top, size - new_h - top, left, size - new_w - left,
                                 cv2.BORDER_CONSTANT, value=self.fill)
        return out, resize_geometry(w, h, size, self.resize)

    def normalise(self, img: np.ndarray) -> torch.Tensor:
        x = (img.astype(np.float32) / 255.0 - np.float32(self.cfg.mean)) / np.float32(self.cfg.std)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class ViewDataset(Dataset):
    """Item i: `(i, images (V, 3, S, S), geos (V, 6), None)` for the view specs `specs[i]`, or
    `(i, None, None, reason)` for a file that does not decode (a reported skip, not a crash)."""

    def __init__(self, paths: list[str], maker: ViewMaker, specs: list[list[int]]):
        assert len(paths) == len(specs)
        self.paths, self.maker, self.specs = paths, maker, specs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = decode(self.paths[i])
        except BadImage as e:
            return i, None, None, str(e)
        views = [self.maker.make(img, spec) for spec in self.specs[i]]
        return i, torch.stack([v.image for v in views]), np.stack([v.geo for v in views]), None


def collate_views(batch):
    """(indices decoded (B,), images (B, V, 3, S, S) or None, geos (B, V, 6), [(index, reason)])."""
    good = [b for b in batch if b[1] is not None]
    bad = [(i, why) for i, x, _, why in batch if x is None]
    if not good:
        return np.zeros(0, np.int64), None, np.zeros((0, 0, 6)), bad
    return (np.array([b[0] for b in good], np.int64), torch.stack([b[1] for b in good]),
            np.stack([b[2] for b in good]), bad)


def view_loader(dataset: ViewDataset, batch_size: int, workers: int) -> DataLoader:
    """In order; decoding and augmentation in `workers` processes (one JPEG thread caps throughput)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_views, prefetch_factor=4 if workers else None)
