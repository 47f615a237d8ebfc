"""Where image paths come from: a folder tree, a folder per class, or a CSV of paths (and labels).

Paths are resolved and checked here (escaping the data root, absolute paths, NUL characters,
symlink loops); reading the images themselves is `classification.images`' job.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from classification.errors import InputError, first_line
from classification.images import is_image_path

_logger = logging.getLogger("classification.data")


def find_images(root: str | Path) -> list[Path]:
    """All image files under `root`, recursively, sorted; symlinked folders are not followed."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in filenames if is_image_path(f))
    return sorted(found)


def not_an_image(source: Path, expected: str) -> None:
    """An image given where a folder or CSV belongs would otherwise be parsed as CSV text."""
    if source.is_file() and is_image_path(source):
        raise InputError(f"{source} is an image file; {expected}")


def pairs_from_folders(root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    pairs, skipped = [], []
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for d in class_dirs:
        files = find_images(d)
        if not files:
            skipped.append((str(d), "empty class folder"))
        pairs.extend((absolute_path(f), d.name) for f in files)
    loose = sorted(p for p in root.iterdir() if p.is_file() and is_image_path(p))
    skipped.extend((absolute_path(p), "not in a class folder (labelled images go in a folder per class)")
                   for p in loose)
    return pairs, skipped


def pairs_from_csv(csv: Path, need_label: bool, allow_absolute: bool):
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read CSV {csv}: {first_line(e)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame.rename(columns={"file": "path", "filepath": "path", "class": "label", "tag": "label"})
    twice = sorted(set(frame.columns[frame.columns.duplicated()]))
    if twice:  # frame["path"] would be a frame, and iterating it would yield column names as paths
        raise InputError(f"{csv}: more than one column means {', '.join(twice)} "
                         "(path, file and filepath are synonyms, as are label, class and tag); keep one")
    wanted = ["path", "label"] if need_label else ["path"]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InputError(f"{csv}: missing column(s) {', '.join(missing)}; expected a header "
                         f"{','.join(wanted)} (found {','.join(frame.columns) or 'none'})")
    root = csv.parent.resolve()
    pairs, skipped, seen = [], [], {}
    for row, rel in enumerate(frame["path"], start=2):
        path = resolve_row(rel.strip(), root, csv, row, allow_absolute)
        label = frame["label"].iloc[row - 2].strip() if need_label else ""
        if need_label and not label:
            raise InputError(f"{csv}:{row}: empty label for {rel}")
        if path in seen:
            if seen[path] != label:
                raise InputError(f"{csv}:{row}: {rel} appears twice with different labels "
                                 f"({seen[path]} and {label}); keep one row")
            continue
        seen[path] = label
        if not os.path.lexists(path):  # anything else that is there gets its precise reason from _hashed
            skipped.append((path, "listed in the CSV but not found"))
            continue
        pairs.append((path, label))
    return pairs, skipped


def resolve_row(rel: str, root: Path, csv: Path, row: int, allow_absolute: bool) -> str:
    if not rel:
        raise InputError(f"{csv}:{row}: empty path")
    if "\0" in rel:  # the OS cannot even look such a name up
        raise InputError(f"{csv}:{row}: path {rel} contains a NUL character")
    candidate = Path(rel)
    if candidate.is_absolute():
        if not allow_absolute:
            raise InputError(f"{csv}:{row}: absolute path {rel} is not allowed here; "
                             f"give paths relative to {root}")
        return absolute_path(candidate)
    resolved = Path(absolute_path(root / candidate))
    if not resolved.is_relative_to(root):
        raise InputError(f"{csv}:{row}: path {rel} escapes the data root {root}")
    return str(resolved)


def absolute_path(path: Path) -> str:
    """`path` resolved (symlinks followed), or only made absolute where it cannot be resolved
    (a symlink loop): the file is then reported as unreadable instead of stopping the load."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return os.path.abspath(path)


def _walk_error(err: OSError) -> None:
    _logger.warning("skipped %s: %s", err.filename, err.strerror or err)
