"""Nothing damaged is used: for each artefact the tool writes and reads back, a few flipped bytes
are either caught and the artefact rebuilt (one warning, the same result after) or refused with
one line (exit code 2), and the images the tool read are left as they were."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from autolabel.cli import main
from classification.cache import FeatureCache
from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.data import load_unlabeled
from classification.digest import seal_ok, sealed, sidecar
from classification.errors import InputError
from classification.models import create_classifier, frozen_part
from classification.runtime import onnx_file_runner, onnx_path
from classification.transforms import data_config
from embeddings.config import IndexConfig
from embeddings.features import Embedder
from embeddings.index import EmbeddingIndex
from tests.review_run import fresh_copy, tiny_run

SIZE = 32  # the smallest input the backbone takes quickly: exports and passes in a second or two


def flip(path: Path, at: int | None = None, count: int = 8) -> None:
    """Invert `count` bytes of the file from offset `at` (default: its middle)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if at is None else at
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tree_digest(folder: Path) -> str:
    """One digest of every file's relative path and bytes under `folder`."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture(scope="module")
def lite0():
    return create_classifier(DEFAULT_MODEL, 3).eval()


# -- ONNX exports -----------------------------------------------------------------------------

def test_a_damaged_onnx_export_is_exported_again(lite0, tmp_path, caplog):
    path, x = onnx_path(lite0, SIZE, tmp_path), torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    before = onnx_file_runner(frozen_part(lite0), SIZE, path)(x)
    assert sidecar(path).is_file()
    good = path.read_bytes()
    flip(path)  # inside the weights: the file still loads, and gives other features
    damage = {"fails its checksum": lambda: None,
              "has no recorded checksum": sidecar(path).unlink}  # an export from before digests
    for why, make in damage.items():
        make()
        caplog.clear()
        after = onnx_file_runner(frozen_part(lite0), SIZE, path)(x)
        assert np.array_equal(after, before) and path.read_bytes() == good
        (message,) = warnings_in(caplog)
        assert why in message and str(path) in message
    caplog.clear()
    onnx_file_runner(frozen_part(lite0), SIZE, path)
    assert warnings_in(caplog) == []  # checked and trusted


def test_without_a_cache_folder_exports_go_to_a_private_user_folder(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = onnx_path(lite0, SIZE, None)
    root = tmp_path / "xdg" / "autolabel"
    assert path.parent == root / "onnx" and stat.S_IMODE(root.stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert onnx_path(lite0, SIZE, None).is_relative_to(tmp_path / "home" / ".cache" / "autolabel")


# -- feature cache -----------------------------------------------------------------------------

def test_flipped_bytes_in_a_feature_cache_shard_are_caught_and_recomputed(sample, tmp_path, caplog):
    """The cache's own check (zip CRC-32) catches flipped feature bytes: no second mechanism."""
    inputs = tree_digest(sample / "test")
    images = load_unlabeled(sample / "test" / "cat").subset(range(6))
    embed = lambda: Embedder(img_size=SIZE, cache=FeatureCache(tmp_path), runtime="torch", workers=0)(images)  # noqa: E731
    before = embed().feats
    (shard,) = tmp_path.rglob("shard-*.npz")
    with zipfile.ZipFile(shard) as z:
        info = z.getinfo("feats.npy")
    flip(shard, at=info.header_offset + 30 + len(info.filename) + 200)  # inside the feature rows
    caplog.clear()
    after = embed().feats
    assert np.array_equal(after, before)
    (message,) = warnings_in(caplog)
    assert "is damaged" in message and shard.name in message and "Bad CRC-32" in message
    assert tree_digest(sample / "test") == inputs


# -- index folders -----------------------------------------------------------------------------

def blobs(n: int = 400, d: int = 24) -> tuple[np.ndarray, pd.DataFrame]:
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    meta = pd.DataFrame({"path": [f"img{i}.jpg" for i in range(n)], "label": "", "hash": [f"h{i}" for i in range(n)]})
    return x, meta


@pytest.mark.parametrize("layout, damaged", [
    ("single", "index.faiss"), ("single", "metadata.csv"),
    ("shards", "index-1.faiss"), ("shards", "vectors.npy"),
])
def test_a_damaged_index_file_is_refused_in_one_line(layout, damaged, tmp_path):
    x, meta = blobs()
    cfg = IndexConfig(type="ivf", pca=8, rerank=2 if layout == "shards" else 0)
    index = EmbeddingIndex.build(x, meta, cfg)
    index.save(tmp_path / "ix", shards=2 if layout == "shards" else 1)
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert damaged in manifest["digests"]
    flip(tmp_path / "ix" / damaged)
    with pytest.raises(InputError) as e:
        EmbeddingIndex.load(tmp_path / "ix")
    message = str(e.value)
    assert "\n" not in message and f"{damaged} is damaged" in message and "`autolabel index build`" in message


def test_a_damaged_index_is_refused_by_the_cli_and_an_old_one_still_loads(tmp_path, sample, capsys):
    x, meta = blobs()
    index = EmbeddingIndex.build(x, meta, IndexConfig(pca=8))
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    flip(tmp_path / "ix" / "index.faiss")
    query = sample / "test" / "cat" / sorted(p.name for p in (sample / "test" / "cat").iterdir())[0]
    assert main(["-q", "index", "query", str(tmp_path / "ix"), str(query)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "index.faiss is damaged" in err and "Traceback" not in err
    index.save(tmp_path / "ix")  # whole again; then as saved before digests existed
    del manifest["digests"], manifest["digest"]  # nor sealed
    path.write_text(json.dumps(manifest))
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert np.array_equal(back.search(x[:20], 3)[1], index.search(x[:20], 3)[1])


# -- checkpoints -------------------------------------------------------------------------------

def test_a_damaged_checkpoint_is_refused_in_one_line(lite0, sample, tmp_path, capsys):
    cfg = TrainConfig(img_size=SIZE)
    save_checkpoint(tmp_path / "ck", lite0, ["a", "b", "c"], cfg, data_config(lite0, SIZE))
    weights = tmp_path / "ck" / "model.pt"
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["digests"]["model.pt"]
    good = weights.read_bytes()
    flip(weights)  # inside a tensor: torch.load would take it
    with pytest.raises(InputError) as e:
        load_checkpoint(tmp_path / "ck")
    assert "\n" not in str(e.value) and "model.pt is damaged" in str(e.value)
    inputs = tree_digest(sample / "test")
    out = tmp_path / "predicted.csv"
    assert main(["-q", "predict", "--checkpoint", str(tmp_path / "ck"), "--images", str(sample / "test"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.pt is damaged" in err and not out.exists()
    assert tree_digest(sample / "test") == inputs
    weights.write_bytes(good)  # as saved before digests existed: loads unchecked
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    del meta["digests"]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    model, *_ = load_checkpoint(tmp_path / "ck")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), lite0.state_dict().values()))


# -- runs: state.json and committed outputs ---------------------------------------------------------

@pytest.fixture
def run(tmp_path_factory, cache_dir, tmp_path) -> Path:
    return fresh_copy(tiny_run(tmp_path_factory, cache_dir), tmp_path / "run")


def resume(run: Path, cache_dir: Path) -> int:
    return main(["--quiet", "--no-mlflow", "--resume", str(run), "--cache-dir", str(cache_dir)])


@pytest.mark.slow  # the first to need the tiny run makes it (about 20 s)
def test_a_damaged_state_json_is_refused_in_one_line(run, cache_dir, capsys):
    text = (run / "state.json").read_text()
    at = text.index('"confidence": [') + len('"confidence": [')
    digit = next(i for i in range(at, len(text)) if text[i] in "123456789")
    (run / "state.json").write_text(text[:digit] + str(int(text[digit]) % 9 + 1) + text[digit + 1:])
    assert resume(run, cache_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json is damaged" in err and "Traceback" not in err
    assert main(["review", str(run), "--sample", "5"]) == 2  # nor drawn a review from
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json does not match its SHA-256" in err
    flip(run / "state.json")  # bytes that no longer parse
    assert resume(run, cache_dir) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow  # the first to need the tiny run makes it (about 20 s)
def test_a_damaged_trial_csv_is_refused_in_one_line(run, cache_dir, capsys):
    flip(run / "trials" / "trial_01.csv")
    assert resume(run, cache_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trials/trial_01.csv is damaged" in err and "Traceback" not in err
    (run / "trials" / "trial_01.csv").unlink()
    assert resume(run, cache_dir) == 2
    assert "trials/trial_01.csv is damaged or missing" in capsys.readouterr().err


@pytest.mark.slow  # the first to need the tiny run makes it (about 20 s)
def test_a_finished_run_redoes_its_final_fit_for_damaged_outputs(run, sample, cache_dir, capsys):
    inputs = tree_digest(sample)
    good = {name: (run / name).read_bytes() for name in ("dataset.csv", "checkpoint/model.pt", "trials/trial_01.csv")}
    flip(run / "dataset.csv")
    flip(run / "checkpoint" / "model.pt")
    assert resume(run, cache_dir) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "redoing the final fit" in warnings[0], warnings
    assert "dataset.csv" in warnings[0] and "checkpoint/model.pt" in warnings[0]
    # the same results: exactly when the run was made with this process's thread count, else to
    # float rounding (the tiny run may have been made by a test that set one thread)
    assert (run / "trials" / "trial_01.csv").read_bytes() == good["trials/trial_01.csv"]  # not rewritten
    redone, before = pd.read_csv(run / "dataset.csv"), pd.read_csv(io.BytesIO(good["dataset.csv"]))
    assert redone[["path", "label", "source"]].equals(before[["path", "label", "source"]])
    assert np.allclose(redone.confidence, before.confidence, atol=1e-4)
    weights = torch.load(run / "checkpoint" / "model.pt", weights_only=True)
    original = torch.load(io.BytesIO(good["checkpoint/model.pt"]), weights_only=True)
    assert weights.keys() == original.keys() and all(torch.allclose(weights[k], original[k], atol=1e-4)
                                                     for k in weights)
    saved = json.loads((run / "state.json").read_text())
    assert saved["finished"] and set(saved["outputs"]) == {"dataset.csv", "metrics.json", "checkpoint/model.pt",
                                                           "trials/trial_01.csv"}
    assert resume(run, cache_dir) == 0 and "already finished" in capsys.readouterr().out
    assert tree_digest(sample) == inputs


@pytest.mark.slow  # the first to need the tiny run makes it (about 20 s)
def test_a_state_json_from_before_digests_is_read_unchecked(run, cache_dir, capsys):
    saved = json.loads((run / "state.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("digest", "outputs")}
    (run / "state.json").write_text(json.dumps(old))
    flip(run / "trials" / "trial_01.csv")  # nothing recorded to check it against
    assert resume(run, cache_dir) == 0 and "already finished" in capsys.readouterr().out
    assert seal_ok(saved) and seal_ok(old) is None and sealed(old)["digest"] != saved["digest"]  # it covers the outputs
    os.remove(run / "dataset.csv")  # yet a finished run's final outputs must be there
    assert resume(run, cache_dir) == 0 and "already finished" not in capsys.readouterr().out
    assert (run / "dataset.csv").is_file() and seal_ok(json.loads((run / "state.json").read_text()))
