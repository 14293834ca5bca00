import math

import numpy as np
import pytest

from glasskit.metrics import (
    crp,
    hierarchical_recall,
    inference_precision,
    level_accuracy,
    ranking_metrics,
)


def test_ranking_metrics_by_hand():
    ranked = np.array([[5, 3, 9], [1, 2, 3], [7, 8, 4], [4, -1, -1]])
    targets = np.array([3, 1, 0, 4])  # ranks 2, 1, absent, 1
    m = ranking_metrics(ranked, targets, ks=(1, 3))
    assert m["hit@1"] == 0.5 and m["hit@3"] == 0.75
    assert m["ndcg@1"] == 0.5
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 + 0 + 1) / 4)
    assert all(isinstance(v, float) for v in m.values())
    assert set(ranking_metrics(np.zeros((2, 20), int), np.ones(2, int))) == {
        f"{m}@{k}" for m in ("hit", "ndcg") for k in (1, 3, 5, 10, 20)}


def test_ranking_metrics_bad_input():
    with pytest.raises(ValueError, match="exceeds"):
        ranking_metrics(np.zeros((2, 5), int), np.zeros(2, int), ks=(10,))
    with pytest.raises(ValueError, match="n = len"):
        ranking_metrics(np.zeros((2, 5), int), np.zeros(3, int), ks=(1,))


def test_crp_by_hand():
    targets = np.array([[1, 2], [0, 0], [3, 1]])
    beams = [
        np.array([[[0], [1], [2]], [[0], [3], [1]], [[1], [2], [0]]]),  # ranks 2, 1, miss
        np.array([[[0, 1], [1, 2], [1, 0]], [[0, 1], [3, 0], [0, 0]], [[0, 0], [1, 1], [2, 2]]]),
    ]
    out = crp(beams, targets)
    assert out["eligible"] == [3, 2]
    assert out["hit"] == pytest.approx([2 / 3, 1.0])
    assert out["crp"] == pytest.approx([1.5, (2 + 3) / 2])
    assert hierarchical_recall(beams, targets) == pytest.approx([2 / 3, 2 / 3])


def test_crp_eligibility_chains():
    targets = np.array([[0, 0, 0]])
    beams = [np.array([[[1]]]), np.array([[[0, 0]]]), np.array([[[0, 0, 0]]])]
    out = crp(beams, targets)
    # undefined levels are None (null in metrics.json), never NaN: NaN != NaN breaks equality
    assert out == {"eligible": [1, 0, 0], "hit": [0.0, None, None], "crp": [None, None, None]}


def test_inference_precision_is_none_where_no_sample_reaches_a_level():
    targets = np.array([[1, 2, 3], [1, 2, 3]])
    greedy = np.array([[0, 2, 3], [0, 2, 3]])  # level 1 always wrong: levels 2, 3 unreached
    assert inference_precision(greedy, targets) == [0.0, None, None]


def test_level_accuracy_and_inference_precision():
    targets = np.array([[1, 2, 3], [1, 2, 3], [1, 0, 0], [4, 4, 4]])
    greedy = np.array([[1, 2, 3], [1, 2, 0], [1, 1, 0], [0, 4, 4]])
    assert level_accuracy(greedy, targets) == pytest.approx([0.75, 0.75, 0.75])
    # P_1 = 3/4; P_2 = P(l2 right | l1 right) = 2/3; P_3 = 1/2 (code 3 right though l2 wrong
    # in row 3 does not count)
    assert inference_precision(greedy, targets) == pytest.approx([0.75, 2 / 3, 0.5])
