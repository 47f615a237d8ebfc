"""Joint image + mask pipelines (albumentations) and the eval-time padding to the UNet's stride.

Images are decoded once (`decode_pairs`), scaled down when larger than `max_side`, and kept as
uint8 arrays: every epoch then costs augmentation only, which on two cores matters more than
memory (1,200 NEU images are 144 MB). Mean and std come from the encoder's pretrained config.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import albumentations as A
import cv2
import numpy as np
import torch

from classification.images import decode
from segmentation.data import IGNORE, MaskSet, read_mask

STRIDE = 32  # a UNet on a 5-stage encoder halves the input five times


def scale_to(img: np.ndarray, max_side: int | None, nearest: bool = False) -> np.ndarray:
    """`img` scaled down so that its longer side is at most `max_side` (unchanged if it fits)."""
    h, w = img.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return img
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def decode_image(path: str, max_side: int | None) -> np.ndarray:
    return scale_to(decode(path), max_side)


def decode_pairs(pairs: MaskSet, max_side: int | None, masks: list | None = None,
                 workers: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image RGB uint8, mask uint8) per pair, decoded in threads. `masks` may give arrays
    (pseudo-masks in memory) instead of the files in `pairs.masks`."""
    def one(i: int):
        img = decode_image(pairs.images[i], max_side)
        mask = masks[i] if masks is not None and masks[i] is not None else read_mask(pairs.masks[i])
        mask = cv2.resize(mask, img.shape[1::-1], interpolation=cv2.INTER_NEAREST) \
            if mask.shape != img.shape[:2] else mask
        return img, mask

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(len(pairs))))


def train_transform(size: int, mean, std, augment: str = "flips", seed: int | None = None) -> A.Compose:
    """Random `size` crops (reflect-padded when smaller), flips, and for `flips` also 90-degree
    turns and a little brightness/contrast: surface defects have no up, down, left or right.
    `strong` (the pseudo-masks' pipeline in the loop) adds stronger contrast, blur, noise and
    cut-out holes whose mask pixels become IGNORE: a student that must match its teacher's mask
    through these learns more than one shown the teacher's own view again. albumentations draws
    from its own generator, not numpy's: `seed` makes the draws, and so a fit, repeatable."""
    ops = [A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
           A.RandomCrop(size, size), A.HorizontalFlip(p=0.5)]
    if augment in ("flips", "strong"):
        ops += [A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if augment == "flips":
        ops.append(A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5))
    if augment == "strong":
        ops += [A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8),
                A.GaussianBlur(sigma_limit=(0.1, 1.5), p=0.3), A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
                A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.25),
                                hole_width_range=(0.1, 0.25), fill=0, fill_mask=IGNORE, p=0.5)]
    ops.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    return A.Compose(ops, seed=seed)


def normalize(img: np.ndarray, mean, std) -> np.ndarray:
    """uint8 HWC -> float32 HWC, normalised like training."""
    return (img.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)


def pad_to_stride(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad an HWC array at the bottom and right to multiples of STRIDE; (padded, (h, w))."""
    h, w = x.shape[:2]
    ph, pw = -h % STRIDE, -w % STRIDE
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "edge"  # reflect needs the pad shorter than the side
        x = np.pad(x, ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2), mode=mode)
    return x, (h, w)


def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """HWC float32 arrays of one shape -> (B, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2)))


class PairDataset(torch.utils.data.Dataset):
    """Decoded (image, mask) arrays under a joint transform -> (image CHW float, mask HW int64)."""

    def __init__(self, arrays: list[tuple[np.ndarray, np.ndarray]], transform: A.Compose):
        self.arrays, self.transform = arrays, transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        img, mask = self.arrays[i]
        out = self.transform(image=img, mask=mask)
        return (torch.from_numpy(out["image"].transpose(2, 0, 1).copy()),
                torch.from_numpy(out["mask"].astype(np.int64)))


def eval_pair(img: np.ndarray, mask: np.ndarray, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole image for validation: normalised and padded; its mask padded with IGNORE."""
    x, (h, w) = pad_to_stride(normalize(img, mean, std))
    y = np.full(x.shape[:2], IGNORE, np.int64)
    y[:h, :w] = mask
    return to_tensor([x])[0], torch.from_numpy(y)
