"""SASRec and DualGR mechanisms on constructed inputs, and the evaluation path both kinds of
model share."""

import numpy as np
import pytest
import torch
from conftest import decode_steps

import glasskit as gk
from glasskit import ranking
from glasskit.evaluation import evaluate
from glasskit.models.dualgr import DualGR
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


def test_entp_negative_term_is_zero_without_negatives_and_grows_with_their_probability():
    m = _dualgr()
    target = torch.tensor([[0, 1, 0], [1, 2, 1]])
    logits = [torch.zeros(2, k) for k in SIZES]
    plain = m.entp_loss(logits, target, None)
    none = m.entp_loss(logits, target, torch.full((2, 3), -1))
    assert plain == none  # no negatives: next-token prediction alone
    losses = []
    for p in (0.1, 1.0, 3.0, 6.0):  # raise the level-1 logit of code 2 (items 2)
        lg = [torch.zeros(2, k) for k in SIZES]
        lg[0][:, 2] = p
        neg = m.entp_loss(lg, target, torch.tensor([[2, -1, -1], [2, -1, -1]]))
        pos = m.entp_loss(lg, target, None) * 2 / 4  # positives' share over 2 + 2 tuples
        losses.append((neg - pos).item())
    assert losses == sorted(losses) and losses[0] > 0  # -alpha log(1 - p1) grows with p1
    assert _dualgr(entp=False).entp_loss(logits, target, torch.tensor([[2, -1, -1]] * 2)) == plain


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
