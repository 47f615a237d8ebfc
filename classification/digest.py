"""Checksums of the files the tool writes and reads back, so that nothing damaged is used.

A file's digest is the SHA-256 of its bytes (hex), computed in 1 MiB blocks. Where it is kept
depends on the artefact: beside the file (`record`: `NAME.sha256`, for an ONNX export), in the
folder's own JSON (an index's manifest.json, a checkpoint's config.json, a run's state.json).
A JSON document can also carry the digest of its own content (`sealed` / `seal_ok`), computed
over its canonical form: keys sorted, no spaces, as it reads back from disk.

A digest that was never recorded (a file written before digests existed) is "not checked":
`matches` and `seal_ok` say None, and each caller decides what that means for its artefact.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from classification.fileio import jsonable, write_text

BLOCK = 1 << 20
SEAL = "digest"  # the key a sealed JSON document keeps its own digest under


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of the file's bytes, read block by block."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar(path: str | Path) -> Path:
    """Where `record` keeps a file's digest: NAME.sha256 beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def record(path: str | Path) -> str:
    """Write the file's digest to its sidecar (atomically) and return it."""
    digest = file_digest(path)
    write_text(sidecar(path), digest + "\n")
    return digest


def recorded(path: str | Path) -> str | None:
    """The digest `record` kept for `path`, or None when there is none (or it is unreadable)."""
    try:
        return sidecar(path).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def matches(path: str | Path, expected: str | None) -> bool | None:
    """Whether the file has the `expected` digest: None when nothing was recorded (not checked);
    False also when the file is missing or unreadable."""
    if expected is None:
        return None
    try:
        return file_digest(path) == expected
    except OSError:
        return False


def digests(folder: str | Path, names) -> dict[str, str]:
    """{name: digest} of the files `names` (relative to `folder`) that exist."""
    folder = Path(folder)
    return {name: file_digest(folder / name) for name in names if (folder / name).is_file()}


def damaged(folder: str | Path, expected: dict | None) -> list[str]:
    """The names in `expected` ({name: digest}, relative to `folder`) whose file is missing or
    differs; [] when nothing was recorded."""
    return [name for name, digest in (expected or {}).items() if not matches(Path(folder) / name, digest)]


def canonical(obj) -> str:
    """`obj` as JSON in one fixed form (the form it has once written and read back)."""
    plain = json.loads(json.dumps(obj, default=jsonable))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), allow_nan=True)


def sealed(doc: dict) -> dict:
    """`doc` with the digest of the rest of its content under `SEAL`."""
    rest = {k: v for k, v in doc.items() if k != SEAL}
    return {**rest, SEAL: bytes_digest(canonical(rest).encode())}


def seal_ok(doc: dict) -> bool | None:
    """Whether a document read back still has the content `sealed` gave it; None if unsealed."""
    if SEAL not in doc:
        return None
    rest = {k: v for k, v in doc.items() if k != SEAL}
    return doc[SEAL] == bytes_digest(canonical(rest).encode())
