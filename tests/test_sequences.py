import numpy as np
import pandas as pd
import pytest

import glasskit as gk
from glasskit.data import (
    PAD,
    Samples,
    build_sequences,
    check_no_leakage,
    long_histories,
    positive_filter,
    prepare,
    short_windows,
    split_samples,
    window_bounds,
)


def _inter(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def test_chronological_order_with_stable_tie_break():
    # user 7: items 30 and 10 share timestamp 5 and must keep their file order (30 first)
    df = _inter([(7, 30, 5), (9, 1, 1), (7, 20, 9), (7, 10, 5), (7, 40, 1), (9, 2, 2), (9, 3, 3)])
    seqs = build_sequences(df)
    assert list(seqs.user_ids) == [7, 9]
    assert list(seqs.item_ids[seqs.user_items(0)]) == [40, 30, 10, 20]
    assert list(seqs.item_ids[seqs.user_items(1)]) == [1, 2, 3]
    assert list(seqs.item_ids) == [1, 2, 3, 10, 20, 30, 40]  # re-indexed in sorted id order


def test_split_positions_and_train_cap():
    seqs = build_sequences(_inter([(0, i, i) for i in range(8)] + [(1, i, i) for i in range(3)]))
    sp = split_samples(seqs)
    assert list(sp["test"].t) == [7, 2] and list(sp["valid"].t) == [6, 1]
    assert list(sp["train"].t) == [1, 2, 3, 4, 5] and list(sp["train"].user) == [0] * 5
    capped = split_samples(seqs, train_targets_per_user=2)
    assert list(capped["train"].t) == [4, 5]


def test_windows_hand_case():
    seqs = build_sequences(_inter([(0, i, i) for i in range(10)]))
    s = Samples(np.array([0, 0]), np.array([9, 2]))
    ss, se, ls, le = window_bounds(seqs, s, short_len=3, long_max=4)
    assert list(zip(ss, se, ls, le)) == [(6, 9, 2, 6), (0, 2, 0, 0)]
    win = short_windows(seqs, s, 3)
    assert win.tolist() == [[6, 7, 8], [PAD, 0, 1]]
    longs = long_histories(seqs, s, 3, 4)
    assert longs[0].tolist() == [2, 3, 4, 5] and longs[1].tolist() == []


def test_positive_filter():
    df = pd.DataFrame({"user": [1, 1, 1], "item": [1, 2, 3], "timestamp": [1, 2, 3],
                       "label": [1, 0, 1], "rating": [5, 5, 2]})
    assert positive_filter(df).item.tolist() == [1, 3]
    assert positive_filter(df, min_rating=4).item.tolist() == [1]


@pytest.mark.parametrize("name,kw", [
    ("smoke", {}),
    ("quick", {}),
    ("quick", {"data.short_len": 5, "data.long_max": 7, "data.train_targets_per_user": 3}),
])
def test_no_leakage_over_every_sample(name, kw):
    ds = prepare(gk.profile(name, **kw))
    n = check_no_leakage(ds.seqs, ds.splits, ds.short_len, ds.long_max)
    assert n == sum(len(s) for s in ds.splits.values())
    # and directly: every input position precedes its target, within the same user
    for s in ds.splits.values():
        ss, target, ls, le = window_bounds(ds.seqs, s, ds.short_len, ds.long_max)
        assert (le <= target - np.minimum(ds.short_len, s.t)).all()
        assert (ls >= ds.seqs.offsets[s.user]).all()
        assert (target - ss == np.minimum(ds.short_len, s.t)).all()
    # the test target is each user's last interaction, the valid target the one before
    last = ds.seqs.offsets[1:] - 1
    assert (ds.seqs.offsets[ds.splits["test"].user] + ds.splits["test"].t == last).all()


def test_leakage_check_catches_a_bad_sample():
    ds = prepare(gk.profile("smoke"))
    bad = {"test": Samples(ds.splits["test"].user, ds.splits["test"].t + 1)}
    with pytest.raises(AssertionError, match="outside its user's history"):
        check_no_leakage(ds.seqs, bad, ds.short_len, ds.long_max)


def test_ml100k_has_many_shared_timestamps():
    ds = prepare(gk.profile("quick"))
    ts = ds.seqs.timestamps
    same_user = np.ones(len(ts) - 1, bool)
    same_user[ds.seqs.offsets[1:-1] - 1] = False
    share = (np.diff(ts)[same_user] == 0).mean()
    assert share > 0.3  # why the tie-break matters
    assert (np.diff(ts)[same_user] >= 0).all()
