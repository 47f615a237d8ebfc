"""Atomic result files: write to a temporary sibling, fsync, then rename over the target.

A reader never sees a half-written file, and a crash or a full disk leaves the previous version
intact (the temporary file is removed; an ENOSPC error names the file that was being written).
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC and not e.filename:  # a failed write() names no file; say which
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=jsonable) + "\n")


def write_csv(path: str | Path, frame, sep: str = ",") -> None:
    """Write a pandas DataFrame as CSV (or TSV with sep="\\t"), atomically, without the index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, sep=sep)


def user_cache_dir() -> Path:
    """The private per-user folder for files made when no cache folder is given (ONNX exports):
    $XDG_CACHE_HOME/autolabel, else ~/.cache/autolabel, created readable by its owner only. Never a
    fixed name in a shared temporary folder, where another user could plant or read files."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative (which the XDG spec says to ignore)
        base = str(Path.home() / ".cache")
    folder = Path(base) / "autolabel"
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def write_figure(path: str | Path, fig) -> Path:
    """Save a matplotlib figure as PNG atomically (tight layout, 100 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def jsonable(obj: Any) -> Any:
    """What `write_json` writes for a value json cannot take."""
    # numpy scalars and arrays show up in metrics; keep JSON plain
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
