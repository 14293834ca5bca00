"""The paired statistics behind ``compare --against``, against hand-computed cases and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from glasskit.analysis.significance import (
    average_ranks,
    bootstrap_ci,
    holm,
    paired_test,
    per_user_metric,
    stouffer,
    wilcoxon,
)
from glasskit.metrics import ranking_metrics


def test_wilcoxon_by_hand():
    # differences 1, -2, 3, 0, 4: the zero is dropped, |d| ranks 1..4, W+ = 1 + 3 + 4 = 8;
    # mean n(n+1)/4 = 5, variance n(n+1)(2n+1)/24 = 7.5
    res = wilcoxon([1, 0, 3, 5, 4], [0, 2, 0, 5, 0])
    assert (res.w_plus, res.n) == (8.0, 4)
    assert res.z == pytest.approx(3 / math.sqrt(7.5))
    assert res.p == pytest.approx(0.27332167829229, rel=1e-9)
    # ties: |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3; variance 3*4*7/24 - (2^3 - 2)/48 = 3.375
    tied = wilcoxon([1, 2, 2], [0, 1, 0])
    assert tied.w_plus == 6.0 and tied.z == pytest.approx(3 / math.sqrt(3.375))
    assert wilcoxon([1, 2], [1, 2]).p == 1.0  # no difference at all


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_equals_scipy_on_per_user_ndcg_like_data(seed):
    rng = np.random.default_rng(seed)
    ranks_a, ranks_b = rng.integers(0, 25, 943), rng.integers(0, 22, 943)  # ties and zeros
    a, b = per_user_metric(ranks_a, "ndcg@10"), per_user_metric(ranks_b, "ndcg@10")
    ours = wilcoxon(a, b)
    ref = stats.wilcoxon(a, b, zero_method="wilcox", correction=False, method="approx")
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert min(ours.w_plus, ours.n * (ours.n + 1) / 2 - ours.w_plus) == pytest.approx(ref.statistic)
    np.testing.assert_allclose(average_ranks(np.abs(a - b)), stats.rankdata(np.abs(a - b)))


def test_per_user_metric_averages_to_the_ranking_metrics():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(300)])
    targets = rng.integers(0, 50, 300)
    match = ranked == targets[:, None]
    ranks = np.where(match.any(1), match.argmax(1) + 1, 0)
    ref = ranking_metrics(ranked, targets, (5, 10, 20))
    for k in ("hit@5", "ndcg@10", "hit@20", "ndcg@20"):
        assert per_user_metric(ranks, k).mean() == pytest.approx(ref[k])
    with pytest.raises(ValueError, match="hit@K or ndcg@K"):
        per_user_metric(ranks, "mrr")


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02]


def test_stouffer_and_the_bootstrap_interval():
    assert stouffer([1.0, 2.0]) == pytest.approx(3 / math.sqrt(2))
    rng = np.random.default_rng(1)
    diff = rng.normal(0.01, 0.1, (3, 900))
    low, high = bootstrap_ci(diff)
    assert low < diff.mean() < high
    se = diff.mean(0).std(ddof=1) / math.sqrt(900)  # the interval is about ±1.96 standard errors
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(np.full((2, 50), 0.3)) == pytest.approx((0.3, 0.3))


def test_paired_test_finds_a_real_difference_and_not_a_relabelling():
    rng = np.random.default_rng(2)
    ref = {s: per_user_metric(rng.integers(0, 30, 943), "ndcg@10") for s in range(3)}
    better = {s: np.minimum(1.0, v + (rng.random(943) < 0.2) * 0.3) for s, v in ref.items()}
    res = paired_test(better, ref)
    assert res.effect > 0 and res.ci[0] > 0 and res.p < 1e-6 and res.seeds == [0, 1, 2]
    expected = stouffer([wilcoxon(better[s], ref[s]).z for s in range(3)])
    assert res.z == pytest.approx(expected)
    assert res.agree == 3
    same = paired_test(ref, ref)
    assert same.effect == 0 and same.p == 1.0 and same.agree == 0
    # per-seed mean differences +0.5, +0.25, -0.25: the effect is positive, two seeds agree
    split = paired_test({0: [1.0, 0.5], 1: [0.5, 0.5], 2: [0.0, 0.0]},
                        {0: [0.5, 0.0], 1: [0.25, 0.25], 2: [0.25, 0.25]})
    assert split.effect == pytest.approx(0.5 / 3) and split.agree == 2
    # the same users' values in another order: no paired difference is expected
    shuffled = {s: rng.permutation(v) for s, v in ref.items()}
    assert paired_test(shuffled, ref).p > 0.01
    with pytest.raises(ValueError, match="no seed in common"):
        paired_test({5: ref[0]}, ref)
    with pytest.raises(ValueError, match="different numbers of users"):
        paired_test({0: ref[0][:10]}, ref)
