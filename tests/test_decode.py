import itertools

import numpy as np
import pytest
import torch

from glasskit.decode import beam_search
from glasskit.errors import GlasskitError
from glasskit.models.tiger import Tiger
from glasskit.ranking import rank
from glasskit.tokenize import PrefixIndex

SIZES = [3, 4, 3]


def _setup(seed=0, n_items=14):
    rng = np.random.default_rng(seed)
    all_sids = np.array(list(itertools.product(*[range(k) for k in SIZES])))
    codes = all_sids[rng.choice(len(all_sids), n_items, replace=False)]
    torch.manual_seed(seed)
    model = Tiger(SIZES, short_len=4, d=16, heads=2, head_dim=8, ff=32, enc_layers=1,
                  dec_layers=1, dropout=0.0).eval()
    short = torch.as_tensor(codes[rng.integers(0, n_items, (5, 4))])
    short[0, :2] = -1  # a padded window
    return codes, model, {"short": short}


@torch.no_grad()
def _exact_scores(model, batch, codes):
    """Log-probability of every valid SID, by running the decoder on each path."""
    state = model.encode(batch)
    B = batch["short"].shape[0]
    out = np.zeros((B, len(codes)))
    for i, sid in enumerate(codes):
        for level in range(len(SIZES)):
            prefix = torch.as_tensor(sid[:level]).expand(B, level)
            logp = model.step_logits(state, prefix).log_softmax(-1)
            out[:, i] += logp[:, sid[level]].numpy()
    return out


def test_beam_search_is_exact_when_the_beam_covers_every_path():
    codes, model, batch = _setup()
    index = PrefixIndex(codes, SIZES)
    res = rank(model, "sid", batch, index, beam=len(codes), k=5)
    exact = _exact_scores(model, batch, codes)
    for b in range(exact.shape[0]):
        top = np.argsort(-exact[b], kind="stable")[:5]
        assert res.items[b].tolist() == top.tolist()
        np.testing.assert_allclose(res.scores[b].detach().numpy(), exact[b, top], atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3, 6])
def test_beam_search_returns_only_valid_sids(beam):
    codes, model, batch = _setup(seed=beam)
    index = PrefixIndex(codes, SIZES)
    res = beam_search(model, batch, index, beam=beam)
    valid = {tuple(c) for c in codes.tolist()}
    for d, kept in enumerate(res.trace):
        assert kept.shape[:2] == (5, beam) and kept.shape[2] == d + 1
        prefixes = {tuple(c[: d + 1]) for c in codes.tolist()}
        for row in kept.reshape(-1, d + 1).tolist():
            assert row[0] == -1 or tuple(row) in prefixes
    for item in res.items.flatten().tolist():
        assert item == -1 or tuple(codes[item].tolist()) in valid


def test_history_mask_removes_seen_items_and_keeps_k():
    codes, model, batch = _setup()
    index = PrefixIndex(codes, SIZES)
    free = rank(model, "sid", batch, index, beam=6, k=4)
    seen = torch.zeros(5, len(codes), dtype=torch.bool)
    seen[torch.arange(5), free.items[:, 0]] = True  # hide each user's top item
    masked = rank(model, "sid", batch, index, beam=6, k=4, seen=seen)
    assert (masked.items >= 0).all()
    assert not seen.gather(1, masked.items).any()
    assert (masked.items[:, 0] == free.items[:, 1]).all()


def test_beam_smaller_than_k_is_refused():
    codes, model, batch = _setup()
    with pytest.raises(GlasskitError, match=r"beam \(5\) must be at least the largest K \(10\)"):
        rank(model, "sid", batch, PrefixIndex(codes, SIZES), beam=5, k=10)


def test_kept_collisions_expand_in_item_order():
    codes = np.array([[0, 1], [0, 1], [1, 0], [2, 2]])
    index = PrefixIndex(codes, [3, 3])
    assert index.max_group == 2
    assert index.expand(torch.tensor([[0, 1], [2, 2], [1, 1]])).tolist() == [[0, 1], [3, -1],
                                                                            [-1, -1]]
