"""The shared layers: dropout, attention (beam folding, vocabulary multisets), the KV cache."""

import pytest
import torch

from glasskit.models.layers import Attention, DecoderLayer, KVCache, attend_mask, dropout


def test_dropout_rate_and_expectation():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.1, training=True)
    kept = (y != 0).float().mean().item()
    # the keep rate is 1 - round(p * 65536) / 65536 = 0.899994; 400k draws: sd 0.0005
    assert abs(kept - 0.9) < 0.003
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 65536 / (65536 - 6554)))
    assert abs(y.mean().item() - 1.0) < 0.005  # unbiased: E[y] = x
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    torch.manual_seed(1)
    a = dropout(x, 0.1, True)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(x, 0.1, True))  # seeded


def test_beams_fold_onto_their_samples_memory():
    torch.manual_seed(0)
    attn = Attention(16, 2, 8).eval()
    mem = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    x = torch.randn(3 * 5, 2, 16)  # 5 beams per sample, sample-major
    out, w = attn(x, mem, mask=attend_mask(pad), need_weights=True)
    rep = mem.repeat_interleave(5, 0)
    ref, ref_w = attn(x, rep, mask=attend_mask(pad.repeat_interleave(5, 0)), need_weights=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w, ref_w)
    fast, _ = attn(x, mem, mask=attend_mask(pad))  # fused kernel, same numbers
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert w[5:10, :, :, 4:].abs().max() == 0  # sample 1's beams never see its padding
    with pytest.raises(ValueError, match="do not fold"):
        attn(torch.randn(4, 2, 16), mem)


def test_attention_over_a_vocabulary_multiset_equals_attention_over_its_tokens():
    torch.manual_seed(0)
    attn = Attention(16, 2, 8).eval()
    table = torch.randn(9, 16)
    x = torch.randn(3, 2, 16)
    tokens = [[1, 1, 4, 6, 1], [2, 3, 3, 3], [5]]  # repeated ids count as often as they occur
    count = torch.zeros(3, 9)
    for n, row in enumerate(tokens):
        for i in row:
            count[n, i] += 1
    log_count = count.clamp_min(1).log().masked_fill(count == 0, float("-inf"))
    out, mass = attn.over_vocab(x, table, log_count, need_weights=True)
    for n, row in enumerate(tokens):
        ref, ref_w = attn(x[n:n + 1], table[row][None], need_weights=True)
        torch.testing.assert_close(out[n:n + 1], ref, atol=1e-6, rtol=1e-5)
        for i in set(row):  # the mass on an id is the weight of all its copies
            pos = [j for j, t in enumerate(row) if t == i]
            torch.testing.assert_close(mass[n, :, :, i], ref_w[0][:, :, pos].sum(-1))
    assert mass[0, :, :, 0].abs().max() == 0  # an absent id gets nothing


def test_kv_cache_decoding_equals_the_full_causal_pass():
    torch.manual_seed(0)
    layer = DecoderLayer(16, 2, 8, 32, dropout=0.0).eval()
    mem = torch.randn(2, 5, 16)
    ctx = {"kv": layer.cross.keys_values(mem), "mask": attend_mask(torch.zeros(2, 5, dtype=torch.bool))}
    x = torch.randn(2, 4, 16)
    full = layer(x, ctx)
    cache = KVCache()
    steps = [layer(x[:, t:t + 1], {**ctx, "cache": cache}) for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    kept = cache.select(torch.tensor([1, 1, 0]))
    assert kept.k.shape == (3, 2, 4, 8) and torch.equal(kept.k[2], cache.k[0])
