"""bench/bench_throughput.py's worker and FLOP count on the smoke profile (the benchmark itself
times the quick profile for minutes): both models' rows carry what the report reads."""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_throughput  # noqa: E402


def test_worker_measures_both_models_and_counts_their_flops():
    res = bench_throughput.worker(steps=1, command=False, profile="smoke")
    tiger, glass = res["models"]["tiger"], res["models"]["glass"]
    for rows in (tiger, glass):
        assert rows["train_sps_auto"] > 0 and rows["train_sps_bf16"] > 0
        assert rows["infer_ms_per_user"] > 0
    assert "tiers" not in tiger["info"] and glass["info"]["sid_tier"] and glass["info"]["hard_search"]
    assert glass["info"]["ret_tokens"] > 0  # GLASS retrieves from the long history
    # GLASS adds its SID-Tier token, tier MLP and search attention to TIGER's matmuls
    tiger_flops = bench_throughput.train_flops_per_sample(tiger["info"])
    assert bench_throughput.train_flops_per_sample(glass["info"]) > tiger_flops > 0


def test_flop_count_matches_a_hand_count():
    info = {"d": 4, "heads": 1, "head_dim": 2, "ff": 8, "enc_layers": 1, "dec_layers": 1,
            "short_len": 1, "sizes": [3]}
    # one encoder token and one decoder position: each attention 2*(4*2 + 4*4 + 2*2 + 2*4) = 72,
    # each FFN 2*2*4*8 = 128, the head 2*4*3 = 24; forward 72+128 + 72+72+128 + 24 = 496
    assert bench_throughput.train_flops_per_sample(info) == pytest.approx(3 * 496)
