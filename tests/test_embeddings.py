"""The embeddings package: FAISS index, recall, OOD scores; on seeded vectors and the bundled sample."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from classification.data import load_labeled, load_unlabeled
from classification.errors import InputError
from embeddings.api import exact_search
from embeddings.config import IndexConfig
from embeddings.features import Embedder, l2_normalize
from embeddings.index import EmbeddingIndex
from embeddings.ood import KnnOOD, auroc, fpr_at_tpr, score_ood
from embeddings.recall import drop_self, one_recall_at_k, recall_at_k


def blobs(n=600, dim=48, n_classes=6, seed=0):
    """Seeded clustered unit vectors with labels, and a metadata table for them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 2
    labels = rng.integers(0, n_classes, n)
    x = l2_normalize(centres[labels] + rng.normal(size=(n, dim)))
    meta = pd.DataFrame({"path": [f"img{i}.jpg" for i in range(n)], "label": [f"c{c}" for c in labels],
                         "hash": [f"h{i}" for i in range(n)]})
    return x, labels, meta


def test_recall_at_k_matches_brute_force_numpy():
    x, labels, meta = blobs()
    q, db = slice(0, 100), slice(100, None)
    index = EmbeddingIndex.build(x[db], meta.iloc[db], IndexConfig(type="flat", pca=0))
    _, I = index.search(x[q], 10)
    d2 = ((x[q, None, :] - x[None, db, :]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :10]
    assert (I[:, :3] == nn[:, :3]).mean() > 0.99  # ties aside, the same neighbours
    for k in (1, 3, 5, 10):
        brute = np.mean([labels[q][i] in labels[db][nn[i, :k]] for i in range(100)])
        assert recall_at_k(I, labels[q], labels[db], k) == pytest.approx(brute)
    assert 0.3 < recall_at_k(I, labels[q], labels[db], 1) <= recall_at_k(I, labels[q], labels[db], 10)


def test_one_recall_and_drop_self():
    I_exact = np.array([[4, 1], [2, 3]])
    assert one_recall_at_k(np.array([[1, 4], [3, 0]]), I_exact, 1) == 0.0
    assert one_recall_at_k(np.array([[1, 4], [3, 0]]), I_exact, 2) == 0.5
    D, I = drop_self(np.array([[0.0, 1.0, 2.0]]), np.array([[7, 3, 5]]), np.array(["a"]),
                     np.array(["x"] * 3 + ["b", "x", "c", "x", "a"]), 2)
    assert I.tolist() == [[3, 5]] and D.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_query_round_trip(kind, tmp_path):
    x, _, meta = blobs(n=2000)
    index = EmbeddingIndex.build(x, meta, IndexConfig(type=kind, pca=16, nprobe=4))
    D, I = index.search(x[:50], 5)
    index.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["index.faiss", "manifest.json", "metadata.csv"]
    for mmap in (False, True):
        back = EmbeddingIndex.load(tmp_path / "ix", mmap=mmap)
        D2, I2 = back.search(x[:50], 5)
        assert np.array_equal(I, I2) and np.allclose(D, D2)
        assert back.meta.path.tolist() == meta.path.tolist()
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["pca_dim"] == 16 and manifest["count"] == 2000 and manifest["index_type"] == kind
    assert 0 < manifest["explained_variance_ratio"] < 1
    assert (I[:, 0] == np.arange(50)).all()  # each vector finds itself first


def test_approximate_index_recall_against_exact():
    x, _, meta = blobs(n=4000, dim=64)
    for kind in ("ivf", "hnsw"):
        index = EmbeddingIndex.build(x[500:], meta.iloc[500:], IndexConfig(type=kind, pca=32, nprobe=8))
        _, I = index.search(x[:500], 10)
        _, I_exact = exact_search(index, x[:500], 10)
        assert one_recall_at_k(I, I_exact, 10) > 0.9


def test_manifest_mismatch_is_refused(tmp_path):
    x, _, meta = blobs(n=300)
    EmbeddingIndex.build(x, meta, IndexConfig(pca=8)).save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    good = manifest_path.read_text()
    manifest_path.write_text(good.replace('"count": 300', '"count": 301'))
    with pytest.raises(InputError, match="does not match its manifest: manifest count 301 but index holds 300"):
        EmbeddingIndex.load(tmp_path / "ix")
    manifest_path.write_text(good)
    meta_path = tmp_path / "ix" / "metadata.csv"
    meta_path.write_text("\n".join(meta_path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(InputError, match="metadata.csv has 299 rows"):
        EmbeddingIndex.load(tmp_path / "ix")
    with pytest.raises(InputError, match="not an index folder"):
        EmbeddingIndex.load(tmp_path)


def test_add_grows_the_index(tmp_path):
    x, _, meta = blobs(n=900)
    index = EmbeddingIndex.build(x[:600], meta.iloc[:600], IndexConfig(type="ivf", pca=16))
    index.add(x[600:], meta.iloc[600:])
    index.save(tmp_path / "ix")
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert back.index.ntotal == 900 and back.meta.id.tolist() == list(range(900))
    _, I = back.search(x[850:860], 1)
    assert I[:, 0].tolist() == list(range(850, 860))
    with pytest.raises(InputError, match="vectors have 5 dimensions but the index takes 48"):
        back.add(np.zeros((1, 5), np.float32), meta.iloc[:1])


def test_auroc_and_fpr_on_known_scores():
    s_in, s_out = np.arange(100.0), np.arange(50.0, 150.0)
    assert auroc(s_in, s_out) == pytest.approx(0.875, abs=0.001)  # overlap 1/4 of pairs, half of it lost
    assert auroc(s_in, s_in + 1000) == 1.0 and auroc(s_in, s_in) == pytest.approx(0.5)
    assert fpr_at_tpr(s_in, s_out, 0.95) == pytest.approx(0.46)  # 50..95 pass a threshold of 95


def test_knn_ood_threshold_keeps_tpr_of_references():
    x, _, _ = blobs(n=400)
    det = KnnOOD(k=3, tpr=0.9).fit(x)
    assert det.k_ == 3 and (det.calibration_ <= det.threshold_).mean() >= 0.9
    far = l2_normalize(np.random.default_rng(1).normal(size=(50, x.shape[1])))
    assert det.refuse(det.score(far)).mean() > 0.9


def test_mnist_digits_score_as_out_of_class(sample, cache):
    embedder = Embedder(cache=cache, img_size=128)
    labeled = load_labeled(sample / "labeled")
    digits, _, _ = score_ood(labeled, load_unlabeled(sample / "ood_mnist"), embedder, k=5)
    cifar, detector, _ = score_ood(labeled, load_labeled(sample / "test"), embedder, k=5)
    assert len(digits) == 20 and digits.refused.mean() >= 0.6
    assert cifar.refused.mean() <= 0.15
    assert auroc(cifar.score.to_numpy(), digits.score.to_numpy()) > 0.9
