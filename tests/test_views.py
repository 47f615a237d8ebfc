"""The view store and the disk cache hold features on disk, not in memory, and give back exactly
what was put in; full-batch L-BFGS summed block by block equals one whole batch."""
import numpy as np
import pytest
import torch

import classification.train.views as views_mod
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.losses import create_loss
from classification.train.steps import ViewSet, lbfgs_epoch_fn
from classification.train.views import ViewStore


def _views(n=50, slots=3, dim=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(slots, n, dim)).astype(np.float16)
    distinct = np.random.default_rng(seed + 1).integers(1, slots + 1, n)
    return x, distinct


def test_store_round_trip_take_and_blocks(monkeypatch):
    monkeypatch.setattr(views_mod, "BLOCK_BYTES", 7 * 3 * 8 * 2)  # 7 rows per block
    x, distinct = _views()
    with ViewStore.from_array(x, distinct) as store:
        assert store.block_rows == 7
        assert np.array_equal(store.read(0, 50), x.transpose(1, 0, 2))
        slots, rows = np.array([2, 0, 1]), np.array([49, 3, 3])
        assert np.array_equal(store.take(slots, rows).numpy(), x[slots, rows].astype(np.float32))
        weight = np.linspace(1, 2, 50).astype(np.float32)
        rows = np.array([40, 2, 9])
        view_w = store.view_weights(rows, weight)
        for r in range(50):  # weight shared by the distinct views of the chosen rows, else 0
            want = [weight[r] / distinct[r] if r in rows and s < distinct[r] else 0 for s in range(3)]
            assert np.allclose(view_w[r], want)
        got = list(store.blocks(view_w))
        assert [(start, stop) for _, start, stop, _ in got] == [(0, 7), (7, 14), (35, 42)]  # zero blocks skipped
        for feats, start, stop, w in got:
            assert np.array_equal(feats.numpy(), x[:, start:stop].transpose(1, 0, 2).reshape(-1, 8).astype(np.float32))
            assert np.array_equal(w.numpy(), view_w[start:stop].reshape(-1))


@pytest.mark.parametrize("block_rows", [1, 4, 1000])
def test_blockwise_lbfgs_matches_one_batch(monkeypatch, block_rows):
    """The same seeds and data give the same head whether the loss is summed over 1 block or many."""
    x, distinct = _views(n=40, slots=3, dim=6)
    y = np.random.default_rng(3).integers(0, 3, 40)
    w = np.random.default_rng(4).uniform(0.5, 1, 40).astype(np.float32)
    rows = np.arange(0, 40, 2)
    heads = []
    for block in (block_rows, 10_000):
        monkeypatch.setattr(views_mod, "BLOCK_BYTES", block * 3 * 6 * 2)
        torch.manual_seed(0)
        head = torch.nn.Linear(6, 3)
        opt = torch.optim.LBFGS(head.parameters(), lr=1.0)
        with ViewStore.from_array(x, distinct) as store:
            epoch = lbfgs_epoch_fn(head, opt, create_loss("ce"), ViewSet(store, y, w), rows, TrainConfig().l2)
            loss = [epoch(i) for i in range(2)]
        heads.append((head.weight.detach().numpy().copy(), loss))
    assert np.allclose(heads[0][0], heads[1][0], atol=1e-4)
    assert np.allclose(heads[0][1], heads[1][1], rtol=1e-5)


def test_disk_cache_keeps_only_an_index_and_reads_rows_back(tmp_path):
    cache = FeatureCache(tmp_path)
    feats = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    keys = [f"k{i}" for i in range(300)]
    for s in range(0, 300, 100):
        cache.put("ns", keys[s:s + 100], feats[s:s + 100])
    assert cache._mem == {}  # no rows in memory: they are read from the shards
    got, hit = cache.get("ns", keys[::-1] + ["missing"])
    assert hit[:-1].all() and not hit[-1] and np.array_equal(got[:300], feats[::-1])


def test_a_shard_whose_rows_fail_their_crc_is_dropped_on_read(tmp_path):
    FeatureCache(tmp_path).put("ns", ["a", "b"], np.arange(2048, dtype=np.float32).reshape(2, 1024))
    shard = next((tmp_path / "ns").glob("*.npz"))
    data = bytearray(shard.read_bytes())
    middle = data.index(np.float32(700).tobytes())  # inside the feats member, not the key list
    data[middle] ^= 0xFF
    shard.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path)
    feats, hit = cache.get("ns", ["a", "b"])
    assert feats is None and not hit.any() and not shard.exists()
    assert cache.get("ns", ["a"])[1].tolist() == [False]  # forgotten, so it is recomputed
