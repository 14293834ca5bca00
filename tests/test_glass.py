import numpy as np
import pytest
import torch
from conftest import decode_steps

import glasskit as gk
from glasskit.decode import beam_search
from glasskit.errors import ConfigError
from glasskit.models.tiger import Tiger
from glasskit.pipeline import load, model_and_batcher
from glasskit.profiles import apply_variant
from glasskit.ranking import rank
from glasskit.tokenize.sid_tier import sid_tier_counts, tier_index


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _glass(variant="sidtier+shs", **kw):
    cfg = apply_variant(gk.profile("smoke", **kw), variant)
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    return cfg, ds, table, model.eval(), batcher


def test_sid_tier_counts_match_a_direct_computation():
    cos = np.array([[1.0, -1.0, 0.05], [0.5, 0.0, -0.95], [-0.2, 0.99, 0.3]], dtype=np.float32)
    items = np.array([2, 0, 1, 1, 0])
    counts = sid_tier_counts(cos, items, np.array([0, 2, 5]), np.array([2, 5, 5]), tiers=4)
    # tiers over [-1, 1] with N=4: [-1,-.5), [-.5,0), [0,.5), [.5,1]
    expected = np.zeros((3, 3, 4))
    for b, hist in enumerate([[2, 0], [1, 1, 0], []]):
        for i in hist:
            for a in range(3):
                c = cos[i, a]
                expected[b, a, min(int(np.floor((c + 1) / 2 * 4)), 3)] += 1
    np.testing.assert_array_equal(counts, expected)
    chunked = sid_tier_counts(cos, items, np.array([0, 2, 5]), np.array([2, 5, 5]), 4, chunk=2)
    np.testing.assert_array_equal(chunked, expected)  # blocks across sample boundaries
    assert tier_index(np.array([-1.0, -0.5, 0.0, 0.4999, 0.5, 1.0]), 4).tolist() == [0, 1, 2, 2,
                                                                                   3, 3]


def test_all_switches_off_is_tiger():
    cfg, ds, table, glass, batcher = _glass("tiger")
    m = cfg.model
    tiger = Tiger(table.sizes, cfg.data.short_len, m.d_model, m.heads, m.head_dim, m.ff,
                  m.enc_layers, m.dec_layers, m.dropout).eval()
    tiger.load_state_dict(glass.state_dict(), strict=True)
    batch = batcher.batch("test", np.arange(16))
    for a, b in zip(glass(batch), tiger(batch)):
        torch.testing.assert_close(a, b)
    index = table.index()
    ra, rb = (rank(x, "sid", batch, index, 20, 20) for x in (glass, tiger))
    assert torch.equal(ra.items, rb.items)


def test_inference_retrieval_follows_each_beams_generated_first_code():
    cfg, ds, table, model, batcher = _glass()
    first = table.first
    # a sample whose history holds several first codes
    test = ds.splits["test"]
    u = int(np.argmax(ds.seqs.lengths))
    batch = batcher.batch("test", np.array([u]))
    truth = int(batch["target"][0, 0])
    hist_codes = batch["long_codes"][0, :, 0]
    other = int(next(c for c in hist_codes.tolist() if c >= 0 and c != truth))
    with torch.no_grad():  # make the model generate `other` first, never the ground truth
        model.heads[0].bias.fill_(-1e4)
        model.heads[0].bias[other] = 1e4
    calls = []
    real = model.retrieve

    def spy(long_codes, long_offsets, key, row):
        out = real(long_codes, long_offsets, key, row)
        calls.append((key.clone(), out))
        return out

    model.retrieve = spy
    beam_search(model, batch, table.index(), beam=1)
    assert calls and all(int(k) == other for k, _ in calls)
    pos, pad = calls[0][1]
    got = batch["long_codes"][0][pos[0][~pad[0]]]
    assert len(got) > 0 and (got[:, 0] == other).all()
    seqs = ds.seqs
    t = test.t[u]
    long_items = seqs.user_items(u)[max(0, t - cfg.data.short_len - cfg.data.long_max):
                                    max(0, t - cfg.data.short_len)]
    want = [i for i in long_items[::-1] if first[i] == other]  # all of them (eq. 7)
    assert cfg.model.retrieve_max is None
    assert [tuple(c) for c in got.tolist()] == [tuple(table.codes[i]) for i in want]
    model.retrieve_max = 2  # an optional cap keeps the most recent ones
    pos, pad = real(batch["long_codes"], batch["long_offsets"], torch.tensor([other]),
                    torch.tensor([0]))
    capped = batch["long_codes"][0][pos[0][~pad[0]]]
    assert [tuple(c) for c in capped.tolist()] == [tuple(table.codes[i]) for i in want[:2]]


def test_cached_decoding_equals_decoding_the_whole_prefix():
    """Beam search feeds one position per step and beams inherit their parent's retrieval;
    the logits equal those of decoding each kept prefix from scratch with its own retrieval."""
    cfg, ds, table, model, batcher = _glass("sidtier+shs+cr+sn")
    batch = batcher.batch("test", np.arange(12))
    steps = decode_steps(model, batch, table.index(), 5)
    with torch.no_grad():
        enc = model.encode(batch)
        for _, prefix, logits in steps[1:]:  # after the first code: retrieval in play
            row = torch.arange(len(prefix)) // 5
            full = model.step_logits(model.with_retrieval(enc, prefix[:, 0], row), prefix)
            torch.testing.assert_close(logits, full, atol=2e-5, rtol=1e-5)
    assert len(steps) == table.levels


def test_empty_retrieval_is_finite_and_gates_lie_in_unit_interval():
    cfg, ds, table, model, batcher = _glass()
    batch = batcher.batch("train", np.arange(32))
    batch["long_offsets"][:5] = 0  # five samples with nothing to retrieve
    model.inspect = []
    logits = model(batch)
    assert all(torch.isfinite(lg).all() for lg in logits)
    layers = [lay for rec in model.inspect for lay in rec["layers"] if "gate" in lay]
    assert layers and all(((lay["gate"] >= 0) & (lay["gate"] <= 1)).all() for lay in layers)
    for lay in layers:
        assert not set(lay["rows"].tolist()) & set(range(5))  # empty: short stream only
        assert (lay["gate"][:, 0] == 0).all() and (lay["gate"][:, 1:] > 0).any()  # BOS: no key
        assert (lay["ret_norm"][:, 0] == 0).all()
    model.inspect = []
    res = rank(model, "sid", batch, table.index(), 20, 20)
    assert torch.isfinite(res.scores[res.items >= 0]).all()
    passes = [rec for rec in model.inspect if "ret_len" in rec]
    assert len(passes) == table.levels - 1  # every step after the first reads a retrieval
    for rec in passes:
        for lay in rec["layers"]:
            assert lay["attn_ret"].shape[-1] > 0 and torch.isfinite(lay["attn_ret"]).all()
            # the retrieval attention of each row sums to one over its retrieved tokens
            torch.testing.assert_close(lay["attn_ret"].sum(-1), torch.ones_like(lay["attn_ret"][..., 0]))


def test_fixed_gate_is_one_half():
    cfg, ds, table, model, batcher = _glass("fixed-gate")
    model.inspect = []
    model(batcher.batch("train", np.arange(8)))
    g = next(lay["gate"] for rec in model.inspect for lay in rec["layers"] if "gate" in lay)
    assert torch.all(g[:, 1:] == 0.5) and torch.all(g[:, 0] == 0)


def test_no_target_or_future_item_reaches_any_stream():
    """Every stream of every sample holds exactly the items at positions before its target:
    the short window [t-S, t), the long history [t-S-L, t-S) (the pool retrieval slices), and
    SID-Tier counts over that same long history."""
    cfg, ds, table, model, batcher = _glass("sidtier+shs+cr+sn")
    seqs, S, L = ds.seqs, cfg.data.short_len, cfg.data.long_max
    checked = 0
    for split, s in ds.splits.items():
        for start in range(0, len(s), 256):
            idx = np.arange(start, min(len(s), start + 256))
            batch = batcher.batch(split, idx)
            for j, i in enumerate(idx):
                hist, t = seqs.user_items(s.user[i]), int(s.t[i])
                short = hist[max(0, t - S):t]
                long = hist[max(0, t - S - L):max(0, t - S)]
                got_short = batch["short"][j].numpy()
                got_short = got_short[got_short[:, 0] >= 0]
                np.testing.assert_array_equal(got_short, table.codes[short])
                got_long = batch["long_codes"][j].numpy()
                got_long = got_long[got_long[:, 0] >= 0]
                assert sorted(map(tuple, got_long.tolist())) == sorted(
                    map(tuple, table.codes[long].tolist()))
                assert int(batch["tier"][j].sum()) == len(long) * table.sizes[0]
                checked += 1
    assert checked == sum(len(v) for v in ds.splits.values())


def test_unknown_variant():
    with pytest.raises(ConfigError, match=r"variant 'sidtier\+magic' names no model's ablation row"):
        apply_variant(gk.profile("smoke"), "sidtier+magic")
