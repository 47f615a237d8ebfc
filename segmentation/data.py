"""Image + mask pairs: an image folder and a mask folder paired by file stem, class names, splits.

A mask is a single-channel image (PNG) of class indices, 0 = background; the value `IGNORE` (255)
marks pixels without a label (unsure pseudo-mask pixels, padding) that no loss or metric counts.
Pairs that cannot be used (no partner, unreadable, sizes that differ, indices beyond the class
list) are skipped with a reason, never a traceback.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from classification.errors import InputError, first_line
from classification.images import BadImage, probe
from classification.sources import absolute_path, find_images

_logger = logging.getLogger(__name__)

IGNORE = 255
LOSSY = (".jpg", ".jpeg", ".webp")  # a lossy mask has class indices blurred into each other
_EXIF_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height when applied


@dataclass
class MaskSet:
    """Images with their masks (None for an image still to be labelled).

    Attributes:
        stems: each image's path below the image folder without its suffix: its id and the name
            of every file written for it.
        images, masks: absolute paths.
        classes: class names, index 0 = background.
        skipped: (path, reason) for every file left out.
    """
    stems: list[str]
    images: list[str]
    masks: list[str | None]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stems)

    def subset(self, idx) -> "MaskSet":
        idx = [int(i) for i in idx]
        return MaskSet([self.stems[i] for i in idx], [self.images[i] for i in idx],
                       [self.masks[i] for i in idx], list(self.classes), [])

    def with_masks(self, masks: list[str | None]) -> "MaskSet":
        assert len(masks) == len(self)
        return MaskSet(list(self.stems), list(self.images), list(masks), list(self.classes), [])


def load_pairs(images: str | Path, masks: str | Path | None, classes_csv: str | Path | None = None,
               keep_unpaired: bool = False) -> MaskSet:
    """Pair `images/**/<stem>.*` with `masks/**/<stem>.png` and check every pair.

    Args:
        keep_unpaired: keep images without a mask (mask None: a pool to label) instead of
            reporting them as skipped.

    Raises:
        InputError: a missing folder, a bad classes.csv, or no usable pair at all.
    """
    image_files = _by_stem(_folder(images, "images"), "image")
    mask_files = _by_stem(_folder(masks, "masks"), "mask") if masks is not None else ({}, [])
    skipped = image_files[1] + mask_files[1]
    stems, skipped_pairs = _pair(image_files[0], mask_files[0], keep_unpaired)
    skipped += skipped_pairs
    classes = resolve_classes(classes_csv, masks)
    with ThreadPoolExecutor(max_workers=8) as pool:  # PIL releases the GIL while decoding
        reasons = list(pool.map(lambda s: _check_pair(image_files[0][s], mask_files[0].get(s),
                                                      classes), stems))
    for s, why in zip(stems, reasons):
        if why:
            skipped.append((why[0], why[1]))
    good = [s for s, why in zip(stems, reasons) if not why]
    if classes is None:
        classes = [f"class_{i}" for i in range(_max_index([mask_files[0].get(s) for s in good]) + 1)]
    found = MaskSet(good, [image_files[0][s] for s in good], [mask_files[0].get(s) for s in good],
                    classes, skipped)
    if not any(m is not None for m in found.masks) and not keep_unpaired:
        first = "".join(f" (first skip: {p}: {r})" for p, r in skipped[:1])
        raise InputError(f"no usable image/mask pair in {images} and {masks}{first}")
    return found


def report_skips(skipped: list[tuple[str, str]]) -> None:
    """Log the skips once the input is settled: before an error they would crowd its one line."""
    for path, reason in skipped:
        _logger.warning("skipped %s: %s", path, reason)


def _folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{what} folder not found: {path}")
    return path


def _by_stem(root: Path, what: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{stem below root: absolute path}; a stem held by two files is ambiguous, so both are skipped."""
    found: dict[str, list[str]] = {}
    for f in find_images(root):
        found.setdefault(f.relative_to(root).with_suffix("").as_posix(), []).append(absolute_path(f))
    unique = {s: paths[0] for s, paths in found.items() if len(paths) == 1}
    skipped = [(p, f"two {what} files share the stem {s!r}") for s, paths in found.items()
               if len(paths) > 1 for p in paths]
    return unique, skipped


def _pair(image_files: dict, mask_files: dict, keep_unpaired: bool):
    skipped = [(m, "mask without an image of the same stem") for s, m in mask_files.items()
               if s not in image_files]
    stems = []
    for s in sorted(image_files):
        if s in mask_files or keep_unpaired:
            stems.append(s)
        else:
            skipped.append((image_files[s], "image without a mask of the same stem"))
    return stems, skipped


def _check_pair(image: str, mask: str | None, classes: list[str] | None) -> tuple[str, str] | None:
    """(path, reason) when the pair is unusable, else None. Reads headers, and the mask's pixels."""
    try:
        probe(image)
        size = image_size(image)
    except (BadImage, OSError) as e:
        return image, f"image unreadable: {e}"
    if mask is None:
        return None
    if Path(mask).suffix.lower() in LOSSY:
        return mask, "lossy mask format; masks are PNGs of class indices"
    try:
        values = read_mask(mask)
    except BadImage as e:
        return mask, str(e)
    if values.shape[::-1] != size:
        return mask, f"mask is {values.shape[1]}x{values.shape[0]}, its image {size[0]}x{size[1]}"
    top = int(values[values != IGNORE].max(initial=0))
    if classes is not None and top >= len(classes):
        return mask, f"class index {top} in the mask, but only {len(classes)} classes are listed"
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as decoded, that is after the EXIF orientation is applied (header only)."""
    with Image.open(path) as img:
        w, h = img.size
        turned = img.getexif().get(0x0112) in _EXIF_TURNED
    return (h, w) if turned else (w, h)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as uint8 class indices (H, W). Raises BadImage for anything else."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
                raise BadImage(f"mask mode is {img.mode}; masks are single-channel images of class indices")
            values = np.asarray(img)
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types on damaged files
        raise BadImage(f"mask unreadable ({first_line(e)})") from None
    if values.size and int(values.max()) > IGNORE:
        raise BadImage(f"mask value {int(values.max())} is not a class index (0-{IGNORE})")
    return values.astype(np.uint8)


def _max_index(masks: list[str | None]) -> int:
    top = 1  # at least background and one class
    for m in masks:
        if m is not None:
            values = read_mask(m)
            top = max(top, int(values[values != IGNORE].max(initial=0)))
    return top


def resolve_classes(classes_csv: str | Path | None, masks: str | Path | None) -> list[str] | None:
    """Class names from `classes_csv`, else from a classes.csv in the mask folder or beside it;
    None when there is none (the names are then class_<i> up to the largest index found)."""
    if classes_csv is None and masks is not None:
        near = [Path(masks) / "classes.csv", Path(masks).parent / "classes.csv"]
        classes_csv = next((p for p in near if p.is_file()), None)
        if classes_csv is not None:
            _logger.debug("class names from %s", classes_csv)
    return read_classes(classes_csv) if classes_csv is not None else None


def read_classes(path: str | Path) -> list[str]:
    """`index,name` lines (a header line is allowed); indices must run 0, 1, 2, ..."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read classes file {path}: {first_line(e)}") from None
    rows = [ln.split(",", 1) for ln in lines]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]  # a header such as index,name
    if any(len(r) != 2 or not r[0].strip().isdigit() or not r[1].strip() for r in rows):
        raise InputError(f"{path}: every line must be index,name (for example 0,background)")
    indices = [int(r[0]) for r in rows]
    if indices != list(range(len(rows))) or len(rows) < 2:
        raise InputError(f"{path}: indices must run 0, 1, 2, ... with at least 2 classes "
                         f"(0 = background); found {indices[:8]}")
    return [r[1].strip() for r in rows]


def read_split(path: str | Path) -> list[str]:
    """Stems, one a line (blank lines and # comments ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read split file {path}: {first_line(e)}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def select(pairs: MaskSet, stems: list[str], source: str) -> tuple[MaskSet, MaskSet]:
    """(the pairs whose stem is listed, the others). A listed stem matches a pair's full stem or,
    when unique, its file name's stem; unknown stems are reported, not fatal."""
    index = {s: i for i, s in enumerate(pairs.stems)}
    by_name: dict[str, list[int]] = {}
    for i, s in enumerate(pairs.stems):
        by_name.setdefault(s.rsplit("/", 1)[-1], []).append(i)
    chosen, unknown = set(), []
    for s in stems:
        hit = [index[s]] if s in index else by_name.get(s, [])
        if len(hit) == 1:
            chosen.add(hit[0])
        else:
            unknown.append(s)
    if not chosen:
        raise InputError(f"no stem in {source} matches a usable image/mask pair")
    if unknown:
        _logger.warning("%d stem(s) in %s match no usable pair, e.g. %s", len(unknown), source, unknown[0])
    rest = [i for i in range(len(pairs)) if i not in chosen]
    return pairs.subset(sorted(chosen)), pairs.subset(rest)
