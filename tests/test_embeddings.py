"""The embeddings package: FAISS index, recall, OOD scores; on seeded vectors and the bundled sample."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from classification.data import load_labeled, load_unlabeled
from classification.digest import SEAL
from classification.errors import InputError
from embeddings.api import exact_search
from embeddings.config import IndexConfig
from embeddings.exact import knn_blocks
from embeddings.features import Embedder, l2_normalize
from embeddings.index import EmbeddingIndex
from embeddings.ood import KnnOOD, auroc, fpr_at_tpr, score_ood
from embeddings.projector import stored_vectors
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


@pytest.fixture
def one_thread():
    """faiss on one thread: OPQ and PQ training run many short parallel loops, which wait on busy
    cores when the machine is loaded (ten times slower with 2 threads on 2 busy cores here)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


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


def unsealed(manifest: dict) -> dict:
    """A manifest without its seal: how index folders were saved before manifests were sealed."""
    return {k: v for k, v in manifest.items() if k != SEAL}


def test_manifest_mismatch_is_refused(tmp_path):
    x, _, meta = blobs(n=300)
    EmbeddingIndex.build(x, meta, IndexConfig(pca=8)).save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    good = manifest_path.read_text()
    manifest_path.write_text(good.replace('"count": 300', '"count": 301'))
    with pytest.raises(InputError, match="manifest.json is damaged"):  # a hand edit breaks its seal
        EmbeddingIndex.load(tmp_path / "ix")
    manifest_path.write_text(json.dumps(unsealed(json.loads(good)) | {"count": 301}))  # as saved before seals
    with pytest.raises(InputError, match="does not match its manifest: manifest count 301 but index holds 300"):
        EmbeddingIndex.load(tmp_path / "ix")
    manifest_path.write_text(good)
    meta_path = tmp_path / "ix" / "metadata.csv"
    meta_path.write_text("\n".join(meta_path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(InputError, match="metadata.csv is damaged"):  # its checksum
        EmbeddingIndex.load(tmp_path / "ix")
    manifest_path.write_text(json.dumps({k: v for k, v in unsealed(json.loads(good)).items() if k != "digests"}))
    with pytest.raises(InputError, match="metadata.csv has 299 rows"):  # a folder from before digests
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


def test_ivfpq_memory_reranked_recall_and_round_trip(tmp_path, one_thread):
    x, _, meta = blobs(n=20_500, dim=64, n_classes=50)
    db, q = x[500:], x[:500]
    cfg = IndexConfig(type="ivfpq", pca=0, nlist=64, rerank=10, train_size=2500)
    index = EmbeddingIndex.build(db, meta.iloc[500:], cfg)
    assert index.manifest["factory"] == "L2norm,OPQ8,IVF64,PQ8x8np"
    assert index.memory_bytes() <= len(db) * 64 * 4 / 8  # codes, ids and quantisers against float32 flat
    _, I_exact = knn_blocks(q, [db], 10)
    D, I = index.search(q, 10)
    coarse = one_recall_at_k(index.search(q, 10, rerank=0)[1], I_exact, 10)
    assert one_recall_at_k(I, I_exact, 10) >= 0.8 and one_recall_at_k(I, I_exact, 10) > coarse
    assert np.allclose(D[:, 0], np.linalg.norm(db[I[:, 0]] - q, axis=1), atol=1e-5)  # re-ranked distances are exact
    index.save(tmp_path / "ix")
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert names == ["index.faiss", "manifest.json", "metadata.csv", "vectors.npy"]
    back = EmbeddingIndex.load(tmp_path / "ix", mmap=True)
    D2, I2 = back.search(q, 10)
    assert np.array_equal(I, I2) and np.allclose(D, D2) and isinstance(back.vectors, np.memmap)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_streamed_build_equals_build_from_the_whole_array(kind, tmp_path, one_thread):
    x, _, meta = blobs(n=6000)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    cfg = IndexConfig(type=kind, pca=16, rerank=2, train_size=2500)  # trains on a sample of 2,500 rows
    whole = EmbeddingIndex.build(x, meta, cfg)
    D, I = whole.search(x[:100], 10)
    for feats in (mm, lambda: (mm[s: s + 999] for s in range(0, len(mm), 999))):
        streamed = EmbeddingIndex.build(feats, meta, cfg)
        D2, I2 = streamed.search(x[:100], 10)
        assert np.array_equal(I, I2) and np.allclose(D, D2, atol=1e-5) and streamed.manifest == whole.manifest
    with pytest.raises(ValueError, match="feature blocks hold 5000 rows for 6000 metadata rows"):
        EmbeddingIndex.build(lambda: iter([mm[:5000]]), meta, cfg)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_sharded_index_searches_like_the_whole(kind, tmp_path, one_thread):
    x, _, meta = blobs(n=3000)
    cfg = IndexConfig(type=kind, pca=16, nprobe=4, rerank=3 if kind == "ivfpq" else 0, train_size=1500)
    index = EmbeddingIndex.build(x, meta, cfg)
    D, I = index.search(x[:50], 5)
    index.save(tmp_path / "ix", shards=3)
    names = {p.name for p in (tmp_path / "ix").iterdir()}
    assert {"index-0.faiss", "index-1.faiss", "index-2.faiss"} <= names and "index.faiss" not in names
    assert [e["count"] for e in json.loads((tmp_path / "ix" / "manifest.json").read_text())["shards"]] == [1000] * 3
    for mmap in (False, True):
        D2, I2 = EmbeddingIndex.load(tmp_path / "ix", mmap=mmap).search(x[:50], 5)
        assert np.array_equal(I, I2) and np.allclose(D, D2)
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert np.allclose(stored_vectors(back), stored_vectors(index))
    back.add(x[:30], meta.iloc[:30])  # the last shard grows
    back.save(tmp_path / "ix")
    grown = EmbeddingIndex.load(tmp_path / "ix")
    assert [e["count"] for e in grown.manifest["shards"]] == [1000, 1000, 1030]
    _, I3 = grown.search(x[:5], 2)
    assert np.sort(I3, axis=1).tolist() == [[i, 3000 + i] for i in range(5)]  # each vector and its copy
    grown.save(tmp_path / "one", shards=1)
    assert np.array_equal(EmbeddingIndex.load(tmp_path / "one").search(x[:50], 5)[1], grown.search(x[:50], 5)[1])


def test_shard_and_config_problems_are_refused(tmp_path, one_thread):
    x, _, meta = blobs(n=900)
    index = EmbeddingIndex.build(x, meta, IndexConfig(type="ivf", pca=8))
    index.save(tmp_path / "ix", shards=2)
    manifest_path, shard = tmp_path / "ix" / "manifest.json", tmp_path / "ix" / "index-1.faiss"
    good = unsealed(json.loads(manifest_path.read_text()))  # edited below, as a manifest from before seals
    shard.rename(tmp_path / "spare")
    errors = []
    with pytest.raises(InputError, match=r"missing shard index-1.faiss \(the manifest lists 2\)") as e:
        EmbeddingIndex.load(tmp_path / "ix")
    errors.append(e)
    (tmp_path / "spare").rename(shard)
    good["shards"][0]["count"] += 1
    manifest_path.write_text(json.dumps(good))
    with pytest.raises(InputError, match="does not match its manifest: index-0.faiss holds 450 vectors, manifest 451") as e:
        EmbeddingIndex.load(tmp_path / "ix")
    errors.append(e)
    hnsw = EmbeddingIndex.build(x, meta, IndexConfig(type="hnsw", pca=8))
    for idx, shards, message in [(hnsw, 2, "a hnsw index cannot be split into shards; use --type flat, ivf or ivfpq"),
                                 (index, 0, r"shards must be between 1 and the number of vectors \(900\), got 0")]:
        with pytest.raises(InputError, match=message) as e:
            idx.save(tmp_path / "other", shards=shards)
        errors.append(e)
    with pytest.raises(InputError, match="re-ranking needs the exact vectors, which this index does not keep") as e:
        index.search(x[:2], 3, rerank=2)
    errors.append(e)
    with pytest.raises(InputError, match="pq_m 10 must divide the index dimension 16; try 4, 8") as e:
        EmbeddingIndex.build(x, meta, IndexConfig(type="ivfpq", pca=16, pq_m=10))
    errors.append(e)
    for field in ("pq_m", "rerank", "train_size"):
        with pytest.raises(InputError, match=f"{field} must be >= 0, got -1") as e:
            IndexConfig(**{field: -1})
        errors.append(e)
    assert all("\n" not in str(e.value) for e in errors)


def test_format_1_folder_still_loads(tmp_path):
    x, _, meta = blobs(n=500)
    index = EmbeddingIndex.build(x, meta, IndexConfig(type="ivf", pca=8))
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    manifest = unsealed(json.loads(path.read_text()))
    for key in ("shards", "vectors"):
        del manifest[key]
    for key in ("pq_m", "rerank", "train_size", "seed"):
        del manifest["config"][key]
    path.write_text(json.dumps({**manifest, "format": 1}))
    back = EmbeddingIndex.load(tmp_path / "ix")
    assert np.array_equal(back.search(x[:20], 3)[1], index.search(x[:20], 3)[1]) and back.vectors is None


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
