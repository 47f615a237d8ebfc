"""Shards: an index saved over several files, each a contiguous range of ids, searched as one.

Each shard file is a complete faiss index, readable on its own: the same trained chain (PCA,
L2norm, OPQ) and quantisers, and the vectors of its range numbered from 0. Loading puts the
shards' inner indexes under one threaded `faiss.IndexShards` with successive ids (shard i's ids are
offset by the sizes of shards 0..i-1) behind one copy of the chain, so a query is transformed once,
the shards are searched in parallel and the ids that come back are global. A sharded index grows
by its last shard.

Cutting works for flat and IVF-type indexes, whose vectors are independent of each other (an IVF
shard keeps the inverted lists' entries of its range); an HNSW graph cannot be cut into parts that
search like the whole.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import faiss
import numpy as np

from classification.digest import damaged
from classification.errors import InputError, first_line


class ShardedIndex(faiss.IndexShards):
    """A threaded IndexShards with successive ids over the shards' inner indexes. It keeps the
    shards (`parts`, full indexes with their chain) alive and reconstructs across them, which
    faiss's IndexShards cannot do."""

    parts = ()  # declared on the class, or faiss's wrapper refuses to set it

    def __init__(self, parts: list):
        inner = [faiss.downcast_index(p.index) for p in parts]
        super().__init__(inner[0].d, True, True)
        self.parts = list(parts)
        for index in inner:
            self.add_shard(index)

    def reconstruct_n(self, n0: int = 0, ni: int = -1, x=None) -> np.ndarray:
        """Stored vectors n0 .. n0 + ni - 1 (all from n0 with ni = -1), shard after shard."""
        ni = self.ntotal - n0 if ni < 0 else ni
        out, start = [], 0
        for part in self.parts:
            lo, hi = max(n0, start), min(n0 + ni, start + part.ntotal)
            if lo < hi:
                out.append(faiss.downcast_index(part.index).reconstruct_n(lo - start, hi - lo))
            start += part.ntotal
        return np.concatenate(out) if out else np.empty((0, self.d), np.float32)


def check_count(count: int, n: int, kind) -> None:
    """Refuse a shard count outside 1..n, or shards for a type that cannot be cut."""
    if count < 1 or count > max(1, n):
        raise InputError(f"shards must be between 1 and the number of vectors ({n}), got {count}")
    if count > 1 and not kind.shardable:
        raise InputError(f"a {kind.name} index cannot be split into shards; use --type flat, ivf or ivfpq")


def join(parts: list) -> tuple[faiss.IndexPreTransform, ShardedIndex]:
    """One searchable index over `parts`: the first part's chain in front of a ShardedIndex."""
    sharded = ShardedIndex(parts)
    index = faiss.IndexPreTransform(sharded)  # borrows the chain: parts[0] owns it, `sharded` keeps parts[0]
    chain = parts[0].chain
    for i in reversed(range(chain.size())):
        index.prepend_transform(chain.at(i))
    return index, sharded


def merge(parts: list) -> faiss.Index:
    """A single index holding the parts' vectors in order (from copies: `parts` stay as they are)."""
    out = faiss.deserialize_index(faiss.serialize_index(parts[0]))
    base = faiss.downcast_index(out.index)
    for part in parts[1:]:
        copy = faiss.deserialize_index(faiss.serialize_index(part))  # owns the inner index: keep it alive
        base.merge_from(faiss.downcast_index(copy.index), out.ntotal if isinstance(base, faiss.IndexIVF) else 0)
        out.ntotal = base.ntotal
    return out


def write_parts(parts: list, folder: Path) -> list[dict]:
    """Write the parts as they are; the manifest entries of the files."""
    for i, part in enumerate(parts):
        faiss.write_index(part, str(folder / f"index-{i}.faiss"))
    return [_entry(folder, i, part.ntotal) for i, part in enumerate(parts)]


def write_split(index: faiss.IndexPreTransform, count: int, folder: Path) -> list[dict]:
    """Write one unsharded index as `count` files of contiguous, near-equal id ranges."""
    bounds = np.linspace(0, index.ntotal, count + 1).round().astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        with _only_range(index, int(a), int(b)):
            faiss.write_index(index, str(folder / f"index-{i}.faiss"))
    return [_entry(folder, i, int(b - a)) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _entry(folder: Path, i: int, count: int) -> dict:
    name = f"index-{i}.faiss"
    return {"file": name, "count": int(count), "bytes": (folder / name).stat().st_size}


@contextlib.contextmanager
def _only_range(index: faiss.IndexPreTransform, a: int, b: int):
    """`index` holding only its vectors a .. b-1, renumbered from 0, until the block ends."""
    base, ntotal = faiss.downcast_index(index.index), index.ntotal
    if isinstance(base, faiss.IndexIVF):
        base.make_direct_map(False)  # it would be written for every id
        part = faiss.ArrayInvertedLists(base.nlist, base.code_size)
        base.invlists.copy_subset_to(part, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, a, b)
        for lst in range(base.nlist):
            if part.list_size(lst):
                faiss.rev_swig_ptr(part.get_ids(lst), part.list_size(lst))[:] -= a
        lists, own = base.invlists, base.own_invlists
        base.own_invlists = False  # so that swapping the part in does not free the full lists
        base.replace_invlists(part, False)
        base.ntotal = b - a
        restore = lambda: (base.replace_invlists(lists, own), setattr(base, "ntotal", ntotal))  # noqa: E731
    else:
        part = faiss.IndexFlat(base.d, base.metric_type)
        part.add(base.reconstruct_n(a, b - a))
        index.index = part
        restore = lambda: setattr(index, "index", base)  # noqa: E731
    index.ntotal = b - a
    try:
        yield
    finally:
        restore()
        index.ntotal = ntotal


def check_digests(folder: Path, expected) -> None:
    """Refuse an index folder whose files differ from the digests its manifest recorded (None:
    saved before digests existed, not checked), before any is read. A missing file is left to the
    checks that name what it is."""
    if expected is not None and not isinstance(expected, dict):
        raise InputError(f"index {folder} has a malformed digest list in manifest.json; "
                         "rebuild the index with `autolabel index build`")
    bad = [name for name in damaged(folder, expected) if (folder / name).is_file()]  # a missing one: below
    if bad:
        raise InputError(f"index {folder}: {bad[0]} is damaged (its SHA-256 does not match manifest.json); "
                         "rebuild the index with `autolabel index build`")


def read_parts(folder: Path, entries, flags: int) -> tuple[list, list[str]]:
    """The shard files listed in the manifest, and what disagrees with it."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"file", "count", "bytes"} <= e.keys()
                                                for e in entries):
        raise InputError(f"index {folder} has a malformed shard list in manifest.json; rebuild the index")
    parts, problems = [], []
    for e in entries:
        path = folder / str(e["file"])
        if not path.is_file():
            raise InputError(f"index {folder} is missing shard {e['file']} (the manifest lists {len(entries)})")
        if path.stat().st_size != e["bytes"]:
            problems.append(f"{e['file']} has {path.stat().st_size} bytes, manifest {e['bytes']}")
        try:
            parts.append(faiss.read_index(str(path), flags))
        except RuntimeError as err:
            raise InputError(f"cannot read {path}: {first_line(err)}") from None
        if not isinstance(parts[-1], faiss.IndexPreTransform):
            raise InputError(f"{path} is not a shard of an autolabel index (no PCA / L2norm chain)")
        if parts[-1].ntotal != e["count"]:
            problems.append(f"{e['file']} holds {parts[-1].ntotal} vectors, manifest {e['count']}")
    if len({(p.d, faiss.downcast_index(p.index).d) for p in parts}) > 1:
        problems.append("shards of different dimensions")
    return parts, problems
