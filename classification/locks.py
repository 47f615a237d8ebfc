"""Advisory locks: one writer at a time on a run folder or an index folder.

`fcntl.flock` on a small lock file: the kernel drops the lock when the process ends, however it
ends, so a killed writer never leaves a folder locked. The file holds the writer's pid, only to
name it in the refusal. A second writer is refused with one line rather than made to wait: its
work would start from a state the first is about to change.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from classification.errors import InputError


@contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold `lock_file`'s lock for the block, or raise InputError naming `what` and its holder."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise InputError(f"{what} is in use by another autolabel process{by}; "
                             "wait for it to finish, or use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def run_lock(folder: Path) -> Path:
    """A run folder's lock file (inside it: a run folder is never replaced)."""
    return Path(folder) / ".lock"


def index_lock(folder: Path) -> Path:
    """An index folder's lock file: beside it, since saving swaps in a new folder."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"
