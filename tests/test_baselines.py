"""SASRec and DualGR mechanisms on constructed inputs, and the evaluation path both kinds of
model share."""

import numpy as np
import pytest
import torch
from conftest import decode_steps

import glasskit as gk
from glasskit import ranking
from glasskit.errors import ConfigError
from glasskit.evaluation import evaluate
from glasskit.models.dualgr import DualGR
from glasskit.models.layers import sid_loss
from glasskit.models.sasrec import SASRec
from glasskit.pipeline import load, model_and_batcher, training_split

SIZES = [4, 3, 2]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _dualgr(**kw):
    torch.manual_seed(0)
    first = torch.tensor([0, 1, 2, 3, 0, 1])  # item -> level-1 code
    return DualGR(SIZES, first, short_window=2, long_window=6, d=16, heads=2, head_dim=8, ff=32,
                  layers=1, dropout=0.0, **kw).eval()


def test_router_picks_the_window_whose_summary_resembles_the_target():
    m = _dualgr()
    with torch.no_grad():  # level-1 code embeddings: code 0 along x, code 1 along y
        m.emb.tok.weight[1:5].zero_()
        m.emb.tok.weight[1, 0] = 1.0
        m.emb.tok.weight[2, 1] = 1.0
    # history (oldest first): four code-0 items, then two code-1 items (the short window)
    hist = torch.tensor([[[0, 0, 0]] * 4 + [[1, 0, 0]] * 2, [[0, 0, 0]] * 4 + [[1, 0, 0]] * 2])
    state = m.encode({"hist": hist})
    window = m.route(state, torch.tensor([1, 0]))  # targets' first codes
    assert window[0].tolist() == [False] * 4 + [True] * 2  # like the short window: short
    assert window[1].all()  # mostly code 0, like the long window: long
    assert m.route(state, torch.tensor([1, 0])).sum().item() == 8
    assert _dualgr(dbr=False).route(state, torch.tensor([1, 1]))[0].all()  # w/o DBR: long only


def test_s2d_reads_only_same_first_code_actions():
    m = _dualgr()
    hist = torch.tensor([[[0, 1, 0], [2, 0, 1], [0, 2, 1], [3, 1, 0], [2, 2, 0], [1, 0, 0]]])
    state = m.encode({"hist": hist})
    window = state["windows"]["short"]
    mask = m.context_mask(state, window, torch.tensor([2]), 1, range(3))[0, 0]  # (T, U)
    assert mask[0].tolist() == window[0].tolist()  # the first token reads the routed window
    for row in mask[1:]:  # the others: items 1 and 4 (first code 2), from the whole history
        assert row.tolist() == [False, True, False, False, True, False]
    none = m.context_mask(state, window, torch.tensor([3]), 1, range(2))[0, 0]
    assert none[1].tolist() == [False, False, False, True, False, False]
    empty = m.context_mask(state, window, torch.tensor([1]), 1, range(2))[0, 0]
    assert empty[1].tolist() == [False] * 5 + [True]  # one code-1 item at the end
    no_s2d = _dualgr(s2d=False).context_mask(state, window, torch.tensor([2]), 1, range(3))[0, 0]
    assert (no_s2d == window).all()


def test_entp_negative_term_grows_with_its_probability_and_weights_by_tuples():
    m = _dualgr()
    target = torch.tensor([[0, 1, 0], [1, 2, 1]])
    logits = [torch.zeros(2, k) for k in SIZES]
    plain = sid_loss(logits, target)
    ok = torch.tensor([[True, False], [True, False]])
    losses = []
    for p in (0.01, 0.1, 0.5, 0.9):
        loss = m.entp_loss(logits, target, torch.full((2, 2), p), ok)
        losses.append((loss - plain * 2 / 4).item())  # positives' share over 2 + 2 tuples
    assert losses == sorted(losses) and losses[0] > 0  # -alpha log(1 - p1) grows with p1
    expected = 0.1 * -np.log(1 - 0.5) * 2 / 4
    assert losses[2] == pytest.approx(expected, rel=1e-5)
    batch = {"negatives": torch.tensor([[2, 3, -1], [-1, -1, -1]])}
    assert m.loss_weights(batch) == pytest.approx(
        {"negatives_per_positive": 1.0, "positive_weight": 0.5, "negative_weight": 0.05})
    assert _dualgr(entp=False).loss_weights(batch) is None


def _routing_case(m):
    """One user: four code-0 items then two code-1 items (the short window); code 0 routes to
    the long window, code 1 to the short one."""
    with torch.no_grad():  # level-1 code embeddings: code 0 along x, code 1 along y
        m.emb.tok.weight[1:5].zero_()
        m.emb.tok.weight[1, 0] = 1.0
        m.emb.tok.weight[2, 1] = 1.0
    return torch.tensor([[[0, 0, 0]] * 4 + [[1, 0, 0]] * 2])


def test_entp_scores_each_negative_under_the_window_its_own_code_routes_to():
    m = _dualgr()
    hist = _routing_case(m)
    target = torch.tensor([[0, 1, 0]])  # routes long
    negatives = torch.tensor([[1, 5, -1]])  # items 1 and 5: first code 1, which routes short
    batch = {"hist": hist, "target": target, "negatives": negatives}
    state = m.encode(batch)
    assert m.prefers_long(state, torch.tensor([0])).item() and not m.prefers_long(
        state, torch.tensor([1])).item()
    with torch.no_grad():
        loss = m(batch, loss=True)
        pos = sid_loss(m({"hist": hist, "target": target}), target)  # routed long by its code
        p_short = m({"hist": hist, "target": target, "branch": "short"})[0].softmax(-1)[0, 1]
        p_long = m({"hist": hist, "target": target, "branch": "long"})[0].softmax(-1)[0, 1]
    assert not torch.isclose(p_short, p_long)  # the two windows disagree, so routing matters
    expected = (pos + 2 * 0.1 * -torch.log1p(-p_short)) / 3
    torch.testing.assert_close(loss, expected)
    one = _dualgr(dbr=False)  # w/o DBR every tuple reads the long window, as the positive does
    _routing_case(one)
    with torch.no_grad():
        logits = one({"hist": hist, "target": target})
        p_long = logits[0].softmax(-1)[0, 1]
        expected = (sid_loss(logits, target) + 2 * 0.1 * -torch.log1p(-p_long)) / 3
        torch.testing.assert_close(one(batch, loss=True), expected)


def test_dualgr_diagnostics_do_not_read_the_target_to_pick_a_branch():
    m = _dualgr()
    hist = _routing_case(m).expand(2, -1, -1)
    target = torch.tensor([[0, 1, 0], [1, 1, 0]])  # the same user, targets routed long / short
    codes = ranking.teacher_forced_codes(m, {"hist": hist, "target": target})
    assert codes[0, 0] == codes[1, 0]  # level 1 reads no label: the same prediction for both
    with torch.no_grad():
        merged = torch.stack([m({"hist": hist, "target": target, "branch": b})[0].log_softmax(-1)
                              for b in ("long", "short")]).amax(0).argmax(-1)
    assert codes[:, 0].tolist() == merged.tolist()


def test_merged_trace_keeps_the_best_distinct_prefixes_over_branches():
    from glasskit.decode import BeamResult

    def result(prefixes, scores):
        return BeamResult(None, None, [torch.tensor([prefixes])], [torch.tensor([scores])])

    a = result([[0], [1], [2]], [-1.0, -2.0, -5.0])
    b = result([[1], [3], [-1]], [-0.5, -3.0, float("-inf")])
    merged = ranking.merged_trace([a, b], 3)[0][0]
    assert merged.tolist() == [[1], [0], [3]]  # prefix 1 kept once, with its better score
    merged = ranking.merged_trace([a, b], 5)[0][0]
    assert merged.tolist() == [[1], [0], [3], [2], [-1]]


def test_no_entp_row_is_refused_where_the_data_has_no_negatives():
    cfg = gk.configure("smoke", model="dualgr", variant="no-entp")
    ds, table = load(cfg)
    assert ds.negatives is None
    with pytest.raises(ConfigError, match=r"no-entp row\) on synthetic, which has no exposure negatives"):
        model_and_batcher(cfg, ds, table, "cpu")
    model_and_batcher(gk.configure("smoke", model="dualgr"), ds, table, "cpu")  # the full model


def test_sasrec_causal_mask_hides_later_positions():
    torch.manual_seed(0)
    m = SASRec(n_items=20, max_len=6, d=16, heads=2, head_dim=8, ff=32, layers=2, dropout=0.0).eval()
    seq = torch.tensor([[-1, 3, 5, 7, 9, 11]])
    h = m.encode(seq)
    for j in range(1, 6):  # changing a later item never changes an earlier position
        changed = seq.clone()
        changed[0, j] = 13
        h2 = m.encode(changed)
        torch.testing.assert_close(h2[0, :j], h[0, :j])
        assert not torch.allclose(h2[0, j], h[0, j])


def test_ties_break_by_item_index_and_seen_items_leave():
    items = torch.tensor([[5, 2, 9, 7, -1]])
    scores = torch.tensor([[1.0, 1.0, 2.0, 1.0, 5.0]])
    top, s = ranking.top_k_items(items, scores, 4)
    assert top.tolist() == [[9, 2, 5, 7]] and s[0, 0] == 2.0  # equal scores: lower index first
    seen = torch.zeros(1, 10, dtype=torch.bool)
    seen[0, 9] = True
    top, _ = ranking.top_k_items(items, scores, 5, seen)
    assert top.tolist() == [[2, 5, 7, -1, -1]]


@pytest.mark.parametrize("model", ["sasrec", "dualgr", "tiger"])
def test_every_model_ranks_through_the_same_masking_code(model, monkeypatch):
    cfg = gk.configure("smoke", model=model)
    ds, table = load(cfg)
    torch.manual_seed(0)
    net, batcher = model_and_batcher(cfg, ds, table, "cpu")
    calls = []
    real = ranking.top_k_items

    def spy(items, scores, k, seen=None):
        calls.append(seen is not None)
        return real(items, scores, k, seen)

    monkeypatch.setattr(ranking, "top_k_items", spy)
    out = evaluate(net, batcher, "test", cfg, masked=True)
    assert calls and all(calls)  # history masking applied there, for every kind of model
    assert 0 <= out["ndcg@10"] <= out["hit@10"] <= 1


def test_dualgr_cached_decoding_equals_decoding_the_whole_prefix():
    cfg = gk.configure("smoke", model="dualgr")
    ds, table = load(cfg)
    torch.manual_seed(0)
    net, batcher = model_and_batcher(cfg, ds, table, "cpu")
    net.eval()
    batch = batcher.batch("test", np.arange(10))
    steps = decode_steps(net, {**batch, "branch": "short"}, table.index(), 5)
    with torch.no_grad():
        for state, prefix, logits in steps:
            full = net.step_logits({**state, "first": prefix[:, 0]} if prefix.shape[1] else state, prefix)
            torch.testing.assert_close(logits, full, atol=2e-5, rtol=1e-5)


def test_sasrec_windows_cover_every_training_position_once_and_never_a_held_out_one():
    cfg = gk.configure("smoke", model="sasrec")
    ds, table = load(cfg)
    _, batcher = model_and_batcher(cfg, ds, table, "cpu")
    name = training_split(cfg, ds)
    assert name == "windows_10"
    assert training_split(cfg.replace(**{"model.train_on": "targets"}), ds) == "train"
    s = ds.splits[name]
    batch = batcher.batch(name, np.arange(len(s)))
    seq, nxt = batch["seq"].numpy(), batch["seq_targets"].numpy()
    S = seq.shape[1]
    covered = {u: [] for u in range(ds.seqs.n_users)}
    for j, (u, t) in enumerate(zip(s.user, s.t)):
        hist = ds.seqs.user_items(u)
        assert 1 <= t <= len(hist) - 3  # valid and test targets stay unseen
        assert (seq[j][seq[j] >= 0] == hist[max(0, t - S):t]).all()  # inputs before t only
        assert (nxt[j][nxt[j] >= 0] == hist[max(1, t - S + 1):t + 1]).all()
        covered[u] += list(range(max(1, t - S + 1), t + 1))
    for u, pos in covered.items():
        assert sorted(pos) == list(range(1, len(ds.seqs.user_items(u)) - 2)), u
