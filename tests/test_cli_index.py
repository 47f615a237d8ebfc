"""`autolabel index ...` and `autolabel ood score` end to end on the bundled sample."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from autolabel.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, sample, cache_dir):
    out = tmp_path_factory.mktemp("index") / "cifar"
    assert main(["-q", "index", "build", "--images", str(sample / "labeled"), "--out", str(out), "--pca", "32",
                 "--type", "ivf", "--img-size", "128", "--cache-dir", str(cache_dir), "--threads", "1"]) == 0
    return out


def test_build_add_query_recall_export(index_dir, sample, cache_dir, capsys):
    cache = ["--cache-dir", str(cache_dir)]
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["img_size"] == 128 and manifest["factory"].startswith("PCA32,L2norm,IVF")
    code, out, _ = run(capsys, "-q", "index", "add", str(index_dir), "--images", str(sample / "test"), *cache)
    assert code == 0 and "added 200 images; the index holds 240" in out
    code, out, _ = run(capsys, "-q", "index", "add", str(index_dir), "--images", str(sample / "test"), *cache)
    assert "added 0 images; the index holds 240" in out  # content already indexed is left out
    query = sample / "test" / "cat" / sorted(p.name for p in (sample / "test" / "cat").iterdir())[0]
    code, out, _ = run(capsys, "-q", "index", "query", str(index_dir), str(query), "-k", "3", "--json", *cache)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 1 and len(hits[0]["neighbours"]) == 3
    first = hits[0]["neighbours"][0]
    assert first["path"] == str(query) and first["label"] == "cat" and first["distance"] < 1e-3
    code, _, err = run(capsys, "-q", "index", "query", str(index_dir), str(query), "--rerank", "2", *cache)
    assert code == 2 and "re-ranking needs the exact vectors" in err and err.count("\n") == 1  # none kept
    code, out, _ = run(capsys, "-q", "index", "recall", str(index_dir), "--queries", str(sample / "labeled"),
                       "--k", "1,5", *cache)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "40 queries against 240 indexed images"
    recall = [float(v) for v in lines[2].split()[1:]]
    one_recall = [float(v) for v in lines[3].split()[1:]]
    assert 0.2 < recall[0] <= recall[1] <= 1 and lines[3].startswith("1-R@k") and min(one_recall) > 0.5
    code, out, _ = run(capsys, "index", "export-projector", str(index_dir))
    proj = index_dir / "projector"
    assert code == 0 and {p.name for p in proj.iterdir()} == {"vectors.tsv", "metadata.tsv", "projector_config.pbtxt", "scatter.png"}
    vectors = pd.read_csv(proj / "vectors.tsv", sep="\t", header=None)
    meta = pd.read_csv(proj / "metadata.tsv", sep="\t")
    assert vectors.shape == (240, 32) and len(meta) == 240 and set(meta.label) == set(manifest_classes(sample))


def test_ivfpq_in_shards_build_query_recall(sample, cache_dir, tmp_path, capsys):
    cache = ["--cache-dir", str(cache_dir), "--threads", "1"]
    out = tmp_path / "pq"
    code, text, _ = run(capsys, "-q", "index", "build", "--images", str(sample / "test"), "--out", str(out), "--pca", "32",
                        "--type", "ivfpq", "--shards", "2", "--rerank", "4", "--img-size", "128", *cache)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and ", 2 shards) ->" in text and [e["count"] for e in manifest["shards"]] == [100, 100]
    assert manifest["factory"].startswith("PCA32,L2norm,IVF") and manifest["factory"].endswith(",PQ4x7np")  # 7 bits: 200 rows
    assert {"index-0.faiss", "index-1.faiss", "vectors.npy"} <= {p.name for p in out.iterdir()}
    query = sample / "test" / "dog" / sorted(p.name for p in (sample / "test" / "dog").iterdir())[0]
    code, text, _ = run(capsys, "-q", "index", "query", str(out), str(query), "-k", "3", "--json", *cache)
    first = json.loads(text)[0]["neighbours"][0]
    assert code == 0 and first["path"] == str(query) and first["distance"] < 1e-3  # re-ranked: exact distances
    code, text, _ = run(capsys, "-q", "index", "recall", str(out), "--queries", str(sample / "labeled"), "--k", "1,5", *cache)
    lines = text.splitlines()
    assert code == 0 and lines[0] == "40 queries against 200 indexed images" and lines[3].startswith("1-R@k")
    assert min(float(v) for v in lines[3].split()[1:]) > 0.5
    code, text, _ = run(capsys, "-q", "index", "add", str(out), "--images", str(sample / "labeled"), *cache)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and "the index holds 240" in text and [e["count"] for e in manifest["shards"]] == [100, 140]


def manifest_classes(sample):
    return sorted(p.name for p in (sample / "labeled").iterdir())


def test_ood_score_with_truth(sample, cache_dir, tmp_path, capsys):
    rows = [(str(p), 1) for p in sorted((sample / "ood_mnist").iterdir())]
    rows += [(str(p), 0) for p in sorted((sample / "test" / "ship").iterdir())]
    pd.DataFrame(rows, columns=["path", "ood"]).to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"path": [r[0] for r in rows]}).to_csv(tmp_path / "images.csv", index=False)
    pd.DataFrame({"path": [r[0] for r in rows[:3]]}).to_csv(tmp_path / "other.csv", index=False)  # 3 digits
    code, out, _ = run(capsys, "-q", "ood", "score", "--labeled", str(sample / "labeled"), "--images",
                       str(tmp_path / "images.csv"), "--truth", str(tmp_path / "truth.csv"), "--out",
                       str(tmp_path / "scores.csv"), "--data-other", str(tmp_path / "other.csv"),
                       "--img-size", "128", "--cache-dir", str(cache_dir))
    assert code == 0 and "with truth (20 in-class, 20 out-of-class): AUROC" in out
    assert "knn+near+other: fused threshold" in out and "  near: AUROC" in out and "  other: AUROC" in out
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["path", "score", "refused", "knn", "near", "other"] and len(scores) == 40
    digits = scores.path.str.contains("ood_mnist")
    assert scores.refused[digits].mean() >= 0.6 and scores.score[digits].mean() > scores.score[~digits].mean()


@pytest.mark.parametrize("args,message", [
    (["index", "build", "--images", "data/labeled", "--out", "x", "--type", "lsh"],
     "unknown index type 'lsh'; valid: flat, ivf, hnsw, ivfpq"),
    (["index", "build", "--images", "data/labeled", "--out", "x", "--type", "ivfpq", "--pq-m", "-1"],
     "pq_m must be >= 0, got -1"),
    (["index", "build", "--images", "data/labeled", "--out", "x", "--shards", "0"], "--shards must be >= 1, got 0"),
    (["index", "query", "data", "data/test/cat/0000.jpg"], "data is not an index folder (missing index.faiss"),
    (["index", "recall", "data", "--queries", "data/test", "--k", "a"], "--k must be comma-separated integers"),
    (["ood", "score", "--labeled", "data/labeled", "--images", "data/ood_mnist", "--k", "0"], "OOD needs k >= 1"),
])
def test_index_user_errors_are_one_line(args, message, capsys, monkeypatch, sample):
    monkeypatch.chdir(sample.parent)
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1
