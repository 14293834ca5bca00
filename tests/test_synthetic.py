import numpy as np
import pytest

import glasskit as gk
from glasskit.config import SyntheticConfig
from glasskit.data import long_histories, prepare, short_windows
from glasskit.data.synthetic import generate
from glasskit.errors import ConfigError


def test_seeded_and_deterministic():
    cfg = SyntheticConfig(users=20, items=128, clusters=4, fine_per_cluster=4, min_len=10,
                          max_len=50, dim=8)
    a, b, c = generate(cfg, 1), generate(cfg, 1), generate(cfg, 2)
    assert a.interactions.equals(b.interactions)
    np.testing.assert_array_equal(a.embeddings[1], b.embeddings[1])
    assert not a.interactions.equals(c.interactions)
    lengths = a.interactions.groupby("user").size()
    assert lengths.between(10, 50).all()


def test_histories_up_to_100k():
    cfg = SyntheticConfig(users=2, items=256, clusters=8, fine_per_cluster=4,
                          min_len=100_000, max_len=100_000, dim=8)
    raw = generate(cfg, 0)
    assert raw.interactions.groupby("user").size().tolist() == [100_000, 100_000]
    assert raw.interactions.groupby("user")["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()


def test_long_history_predicts_the_fine_part_the_recent_window_lacks():
    ds = prepare(gk.profile("quick", **{"data.dataset": "synthetic"}))
    items = ds.raw.items.set_index("item").loc[ds.seqs.item_ids]
    cluster, fine = items["cluster"].to_numpy(), items["fine"].to_numpy()
    test = ds.splits["test"]
    targets = ds.seqs.items[ds.seqs.offsets[test.user] + test.t]
    windows = short_windows(ds.seqs, test, ds.short_len)
    longs = long_histories(ds.seqs, test, ds.short_len, ds.long_max)

    def vote(hist, c):
        same = fine[hist[cluster[hist] == c]]
        return np.bincount(same).argmax() if len(same) else -1

    long_hit = np.mean([vote(h, cluster[t]) == fine[t] for h, t in zip(longs, targets)])
    short_hit = np.mean([vote(w[w >= 0], cluster[t]) == fine[t] for w, t in zip(windows, targets)])
    chance = 1 / ds.cfg.synthetic.fine_per_cluster
    assert long_hit > 0.7 > 4 * chance
    assert long_hit > short_hit + 0.3
    # and the recent window predicts the coarse part: last item's cluster has few successors
    last = windows[:, -1]
    assert len(set(zip(cluster[last], cluster[targets]))) < 0.6 * ds.cfg.synthetic.clusters ** 2


def test_embeddings_carry_the_cluster_structure():
    raw = generate(SyntheticConfig(), 0)
    emb = raw.embeddings[1]
    c = raw.items["cluster"].to_numpy()
    sim = emb @ emb.T
    same = c[:, None] == c[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.3


def test_bad_synthetic_config():
    with pytest.raises(ConfigError, match="synthetic lengths"):
        gk.profile("smoke", **{"synthetic.max_len": 200_000})
    with pytest.raises(ConfigError, match="synthetic.items must be >="):
        gk.profile("smoke", **{"synthetic.items": 3})
