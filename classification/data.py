"""Image sets: discovery, labelled folders or CSVs, content de-duplication, class maps, splits.

An `ImageSet` is the unit every other module works on: absolute paths, their content hashes and
integer labels (-1 = unlabelled), plus the files that were skipped on the way in and why.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from classification.errors import InputError, brief, first_line
from classification.fileio import write_json
from classification.images import BadImage, file_digest, probe
from classification.sources import absolute_path, find_images, not_an_image, pairs_from_csv, pairs_from_folders

_logger = logging.getLogger(__name__)

UNLABELED = -1
CHUNK_ROWS = 4096  # images whose features are in memory at once when a pool is taken in chunks


@dataclass
class ImageSet:
    """Images with their identity and (optional) labels.

    Attributes:
        paths: absolute file paths, in a stable sorted order.
        hashes: content hash of each file (see `images.file_digest`).
        labels: int64 array, index into `classes`, or -1 for unlabelled.
        classes: sorted class names.
        skipped: (path, reason) for every file left out.
    """
    paths: list[str]
    hashes: list[str]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet([self.paths[i] for i in idx], [self.hashes[i] for i in idx],
                        self.labels[idx].copy(), list(self.classes), [])

    def chunks(self, size: int = CHUNK_ROWS):
        """(rows, subset) for consecutive runs of `size` images: a large pool, a chunk at a time."""
        for start in range(0, len(self), size):
            rows = np.arange(start, min(start + size, len(self)))
            yield rows, self.subset(rows)

    def concat(self, other: "ImageSet") -> "ImageSet":
        if self.classes and other.classes and self.classes != other.classes:
            raise ValueError("cannot concatenate image sets with different class lists")
        return ImageSet(self.paths + other.paths, self.hashes + other.hashes,
                        np.concatenate([self.labels, other.labels]), list(self.classes or other.classes),
                        self.skipped + other.skipped)

    def with_labels(self, labels: np.ndarray, classes: list[str]) -> "ImageSet":
        """A copy carrying `labels` (indices into `classes`), e.g. pseudo-labels or a pool's truth."""
        labels = np.asarray(labels, np.int64)
        assert labels.shape == (len(self),), (labels.shape, len(self))
        return ImageSet(list(self.paths), list(self.hashes), labels.copy(), list(classes), list(self.skipped))


def load_labeled(source: str | Path, classes: list[str] | None = None,
                 allow_absolute: bool = True) -> ImageSet:
    """Labelled images from a folder per class (`root/<class>/**/*.jpg`) or a `path,label` CSV.

    Args:
        source: the folder or the CSV file.
        classes: a fixed class list (for example a checkpoint's); default: the sorted names found.
        allow_absolute: accept absolute paths in a CSV.

    Raises:
        InputError: missing source, fewer than two classes, or a malformed CSV.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"labelled data not found: {source}")
    not_an_image(source, "labelled data is a folder per class or a path,label CSV")
    if source.is_dir():
        pairs, skipped = pairs_from_folders(source)
    else:
        pairs, skipped = pairs_from_csv(source, need_label=True, allow_absolute=allow_absolute)
    # hash (and probe) first, so that a class whose files are all unusable is not a class
    images = _hashed([p for p, _ in pairs], np.arange(len(pairs), dtype=np.int64), [], skipped)
    names = [pairs[i][1] for i in images.labels]
    found = sorted(set(names))
    classes = list(classes) if classes is not None else found
    if len(classes) < 2:
        # the error is the only output, so it carries the first skip: often the reason itself
        why = "".join(f" (skipped {len(images.skipped)}; first: {path}: {reason})"
                      for path, reason in images.skipped[:1])
        raise InputError(f"need at least 2 classes with images in {source}, found {len(found)}"
                         f"{': ' + found[0] if found else ''}{why}")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise InputError(f"labels not in the class map: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    images.labels = np.array([index[n] for n in names], dtype=np.int64)
    images.classes = classes
    _report(images.skipped)
    return images


def load_unlabeled(source: str | Path, allow_absolute: bool = True) -> ImageSet:
    """Unlabelled images: any tree of image files, or a CSV with a `path` column."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"unlabelled data not found: {source}")
    not_an_image(source, "unlabelled data is a folder of images or a CSV with a path column")
    if source.is_dir():
        paths, skipped = [absolute_path(p) for p in find_images(source)], []
    else:
        pairs, skipped = pairs_from_csv(source, need_label=False, allow_absolute=allow_absolute)
        paths = [p for p, _ in pairs]
    images = _hashed(paths, np.full(len(paths), UNLABELED, np.int64), [], skipped)
    _report(images.skipped)
    return images


def load_files(paths: list[str | Path]) -> ImageSet:
    """Unlabelled images from a list of files (for example queries on a command line)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"image not found: {missing[0]}")
    images = _hashed([absolute_path(Path(p)) for p in paths], np.full(len(paths), UNLABELED, np.int64), [], [])
    _report(images.skipped)
    return images


def dedupe(labeled: ImageSet, unlabeled: ImageSet) -> tuple[ImageSet, ImageSet]:
    """Remove repeated content: within each set keep the first copy, and an image that is both
    labelled and unlabelled stays labelled only. Labelled copies with different labels are an error.
    """
    first: dict[str, int] = {}
    keep_lb = []
    for i, (h, y) in enumerate(zip(labeled.hashes, labeled.labels)):
        if h in first:
            j = first[h]
            if labeled.labels[j] != y:
                raise InputError(f"the same image has two labels: {labeled.paths[j]} "
                                 f"({labeled.classes[labeled.labels[j]]}) and {labeled.paths[i]} "
                                 f"({labeled.classes[y]})")
            continue
        first[h] = i
        keep_lb.append(i)
    seen = set(first)
    keep_ulb = []
    for i, h in enumerate(unlabeled.hashes):
        if h not in seen:
            seen.add(h)
            keep_ulb.append(i)
    n_dup = len(labeled) - len(keep_lb) + len(unlabeled) - len(keep_ulb)
    if n_dup:
        _logger.info("de-duplicated %d repeated images by content", n_dup)
    lb, ulb = labeled.subset(keep_lb), unlabeled.subset(keep_ulb)
    lb.skipped, ulb.skipped = list(labeled.skipped), list(unlabeled.skipped)
    return lb, ulb


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random split. Every class with two or more images gets at least one validation
    image and keeps at least one training image; a class with one image stays in training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_fraction * len(idx)))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, np.int64)), np.sort(np.array(val, np.int64))


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per sample: each class is shuffled and dealt round-robin, so folds are disjoint
    and every fold gets each class as evenly as possible."""
    if n_folds < 2:
        raise InputError(f"--n-folds must be at least 2, got {n_folds}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset += len(idx)  # rotate the start so small classes do not all land in fold 0
    return folds


def save_class_map(path: str | Path, classes: list[str]) -> None:
    write_json(path, {c: i for i, c in enumerate(classes)})


def load_class_map(path: str | Path) -> list[str]:
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and undecodable bytes are ValueErrors
        raise InputError(f"cannot read class map {path}: {first_line(e)[:100]}") from None
    # {name: index} with the indices 0..C-1, each once: anything else would misname the classes
    ok = (isinstance(mapping, dict) and mapping and all(isinstance(c, str) and c for c in mapping)
          and sorted(i for i in mapping.values() if type(i) is int) == list(range(len(mapping))))
    if not ok:
        raise InputError(f"class map {path} must map each class name to its index 0..C-1 once, "
                         f"got {brief(mapping)}")
    return [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def _hashed(paths: list[str], labels: np.ndarray, classes: list[str],
            skipped: list[tuple[str, str]]) -> ImageSet:
    # Pillow warns about images between 1x and 2x its pixel limit; `probe` refuses those itself.
    # The filter is set here, around the threads, because setting it inside each one would race.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=8) as pool:  # hashing releases the GIL
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        digests = list(pool.map(_safe_digest, paths))
    ok = [i for i, d in enumerate(digests) if not d.startswith("!")]
    bad = [(paths[i], d[1:]) for i, d in enumerate(digests) if d.startswith("!")]
    return ImageSet([paths[i] for i in ok], [digests[i] for i in ok], labels[ok], classes,
                    skipped + bad)


def _safe_digest(path: str) -> str:
    """The file's digest, or "!" + the reason it cannot be used. Only regular files are opened:
    reading a named pipe or a device called x.jpg would block or never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "!not a regular file"
        digest = file_digest(path)
        probe(path)
        return digest
    except PermissionError:
        return "!permission denied"
    except OSError as e:
        return f"!cannot read ({e.strerror or type(e).__name__})"
    except BadImage as e:
        return f"!{e}"


def _report(skipped: list[tuple[str, str]]) -> None:
    """Log the skips once a set has loaded: before an error they would crowd its one line."""
    for path, reason in skipped:
        _logger.warning("skipped %s: %s", path, reason)
