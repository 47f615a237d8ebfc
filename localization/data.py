"""Images with a class and at most one box each.

Two layouts: a CSV `path,label,x0,y0,x1,y1` (boxes in original pixels, paths relative to the
CSV), or a folder per class with one such CSV at its root (the label column is then optional and
must agree with the folder). A row whose four box cells are empty is a class label without a box.
A row that cannot be used (a box outside its image, x1 <= x0, a non-numeric cell, a file that
is missing or does not decode) is left out and reported in `skipped` with its row number; input
that cannot be read at all is an `InputError`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from classification.data import ImageSet, load_labeled
from classification.errors import InputError, brief, first_line
from classification.sources import resolve_row
from localization.boxes import box_problem

_logger = logging.getLogger(__name__)

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 rotate by 90 degrees, so width and height swap


@dataclass
class BoxSet:
    """`images` (paths, hashes, labels, classes, skips) plus, row for row:

    Attributes:
        boxes: (N, 4) float64 original-pixel boxes; NaN rows have no box.
        sizes: (N, 2) int64 (width, height) as decoded (EXIF orientation applied).
    """
    images: ImageSet
    boxes: np.ndarray
    sizes: np.ndarray

    def __post_init__(self):
        assert self.boxes.shape == (len(self.images), 4), self.boxes.shape
        assert self.sizes.shape == (len(self.images), 2), self.sizes.shape

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_box(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.images.skipped

    def subset(self, idx) -> "BoxSet":
        idx = np.asarray(idx, np.int64)
        return BoxSet(self.images.subset(idx), self.boxes[idx].copy(), self.sizes[idx].copy())

    def with_boxes(self, labels: np.ndarray, boxes: np.ndarray) -> "BoxSet":
        """A copy carrying other labels and boxes (for example pseudo-boxes)."""
        return BoxSet(self.images.with_labels(labels, self.images.classes), np.asarray(boxes, np.float64).copy(),
                      self.sizes.copy())

    def concat(self, other: "BoxSet") -> "BoxSet":
        return BoxSet(self.images.concat(other.images), np.concatenate([self.boxes, other.boxes]),
                      np.concatenate([self.sizes, other.sizes]))


def load_boxes(source: str | Path, classes: list[str] | None = None) -> BoxSet:
    """Read a box CSV, or a folder per class with one box CSV at its root.

    Raises:
        InputError: missing source or columns, no usable box at all, or what `load_labeled` refuses.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"box data not found: {source}")
    csv = _folder_csv(source) if source.is_dir() else source
    rows, bad_rows = read_box_rows(csv, need_label=not source.is_dir())
    images = load_labeled(source, classes=classes)
    if source.is_dir() and csv is not None:
        _check_folder_labels(images, rows, csv)
    boxes = np.full((len(images), 4), np.nan)
    sizes = np.zeros((len(images), 2), np.int64)
    keep, skipped = [], list(images.skipped) + bad_rows
    refused = {path for path, _ in bad_rows} - set(rows)  # a bad row is not a label without a box
    for i, path in enumerate(images.paths):
        if path in refused:
            continue
        sizes[i] = oriented_size(path)
        row, box = rows.get(path, (None, None))
        problem = None if box is None else box_problem(box, *sizes[i])
        if problem:
            skipped.append((path, f"{csv}:{row}: {problem}"))
            continue
        if box is not None:
            boxes[i] = box
        keep.append(i)
    out = BoxSet(images.subset(keep), boxes[keep], sizes[keep])
    out.images.skipped = skipped
    if not out.has_box.any():
        first = f" (first skip: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"no usable box in {source}; give x0,y0,x1,y1 in original pixels{first}")
    for path, reason in skipped[len(images.skipped):]:
        _logger.warning("skipped %s: %s", path, reason)
    return out


def pool_set(images: ImageSet, known: ImageSet) -> BoxSet:
    """An unlabelled pool as a BoxSet without boxes, less the images `known` holds (same content);
    an image whose size cannot be read is left out and reported in `skipped`."""
    seen, keep, sizes, skipped = set(known.hashes), [], [], list(images.skipped)
    for i, (path, digest) in enumerate(zip(images.paths, images.hashes)):
        if digest in seen:
            continue
        try:
            sizes.append(oriented_size(path))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            skipped.append((path, f"cannot read the image size: {first_line(e)}"))
            continue
        seen.add(digest)
        keep.append(i)
    out = images.subset(keep)
    out.skipped = skipped
    return BoxSet(out, np.full((len(keep), 4), np.nan), np.array(sizes, np.int64).reshape(-1, 2))


def read_box_rows(csv: Path | None, need_label: bool):
    """({absolute path: (CSV row number, box (4,) or None)}, [(path, reason) of rows left out])."""
    if csv is None:
        return {}, []
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read CSV {csv}: {first_line(e)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    wanted = ["path", "label", *BOX_COLUMNS] if need_label else ["path", *BOX_COLUMNS]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InputError(f"{csv}: missing column(s) {', '.join(missing)}; expected a header "
                         f"{','.join(wanted)} (found {','.join(frame.columns) or 'none'})")
    root = csv.parent.resolve()
    rows, bad = {}, []
    for row, record in enumerate(frame[["path", *BOX_COLUMNS]].itertuples(index=False), start=2):
        path = resolve_row(record[0].strip(), root, csv, row, allow_absolute=True)
        box, problem = _parse_box(record[1:])
        if path in rows:
            problem = f"a second row for this image (row {rows[path][0]} kept): one box per image"
        if problem:
            bad.append((path, f"{csv}:{row}: {problem}"))
            continue
        rows[path] = (row, box)
    return rows, bad


def _parse_box(cells) -> tuple[np.ndarray | None, str | None]:
    cells = [c.strip() for c in cells]
    if not any(cells):
        return None, None
    try:
        box = np.array([float(c) for c in cells], np.float64)
    except ValueError:
        return None, f"box cells must be four numbers or all empty, got {brief(','.join(cells))}"
    return box, None


def _folder_csv(root: Path) -> Path | None:
    found = sorted(p for p in root.glob("*.csv") if p.is_file())
    if len(found) > 1:
        raise InputError(f"{root} holds {len(found)} CSV files ({', '.join(p.name for p in found[:4])}); "
                         "keep the one with the boxes")
    return found[0] if found else None


def _check_folder_labels(images: ImageSet, rows: dict, csv: Path) -> None:
    """In folder mode a CSV label, where given, must name the image's folder."""
    try:
        labels = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError):  # read_box_rows has already read it once
        return
    labels.columns = [str(c).strip().lower() for c in labels.columns]
    if "label" not in labels.columns:
        return
    folder_label = {p: images.classes[y] for p, y in zip(images.paths, images.labels)}
    root = csv.parent.resolve()
    for row, (rel, label) in enumerate(zip(labels["path"], labels["label"]), start=2):
        path = resolve_row(rel.strip(), root, csv, row, allow_absolute=True)
        if label.strip() and path in folder_label and folder_label[path] != label.strip():
            raise InputError(f"{csv}:{row}: label {brief(label.strip())} but the image is in folder "
                             f"{folder_label[path]}")


def oriented_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image as `classification.images.decode` returns it (header only)."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(_ORIENTATION, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
