"""GEMs and IntRR mechanisms on constructed inputs."""

import numpy as np
import pytest
import torch
from conftest import decode_steps

import glasskit as gk
from glasskit.decode import beam_search
from glasskit.errors import ConfigError
from glasskit.models.gems import GemsDecoderLayer, IndexerBlock
from glasskit.models.intrr import RAN, IntRR
from glasskit.models.layers import EncoderLayer, attend_mask
from glasskit.pipeline import load, model_and_batcher


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def test_indexer_top_k_selects_the_highest_scoring_keys(monkeypatch):
    torch.manual_seed(0)
    block = IndexerBlock(8, 2, 4, 16, 0.0, indexer_heads=1, kl_queries=4).eval()
    x = torch.randn(1, 6, 8)
    pad = torch.zeros(1, 6, dtype=torch.bool)
    pad[0, 5] = True
    scores = torch.tensor([[[5.0, 1, 4, 0, 3, 9]] * 6])  # key 5 is padding: never chosen
    monkeypatch.setattr(block, "indexer_scores", lambda h, queries=None: scores)
    chosen = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    chosen[..., [0, 2]] = True  # the two best real keys for every query
    h = block.ln1(x)
    ref = x + block.attn(h, h, mask=chosen)[0]
    ref = ref + block.ff(block.ln2(ref))
    for gather_from in (8, 1):  # the masked fused kernel and the gathered keys agree
        block.gather_from = gather_from
        out, _ = block(x, pad, select=2, fit=False)
        torch.testing.assert_close(out, ref)
    full, _ = block(x, pad, select=0, fit=False)  # brute force reads every real key
    h_full = x + block.attn(h, h, mask=attend_mask(pad))[0]
    torch.testing.assert_close(full, h_full + block.ff(block.ln2(h_full)))


def test_the_indexer_learns_only_from_its_kl():
    torch.manual_seed(0)
    block = IndexerBlock(8, 2, 4, 16, 0.0, indexer_heads=1, kl_queries=3)
    x = torch.randn(2, 6, 8, requires_grad=True)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    out, kl = block(x, pad, select=3, fit=True)  # stage 3: selection and the KL
    idx_params = [block.idx_q.weight, block.idx_k.weight, block.idx_w.weight]
    main = torch.autograd.grad(out.sum(), idx_params + [block.attn.q.weight], allow_unused=True)
    assert all(g is None for g in main[:3])  # the main loss never reaches the indexer
    assert main[3] is not None
    grads = torch.autograd.grad(kl, idx_params + [block.attn.q.weight, x], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:3])  # the KL trains it
    assert grads[3] is None and grads[4] is None  # and nothing else: target and input detached


def test_sum_fusion_has_no_parameters_and_adds_the_streams():
    torch.manual_seed(0)
    streams = ["recent", "mid", "lifecycle"]
    summed = GemsDecoderLayer(8, 2, 4, 16, 0.0, streams, gate=False).eval()
    gated = GemsDecoderLayer(8, 2, 4, 16, 0.0, streams, gate=True)
    extra = {n for n, _ in gated.named_parameters()} - {n for n, _ in summed.named_parameters()}
    assert extra == {"gate.weight", "gate.bias"}  # only the gate variant learns a weighting
    mems = {s: torch.randn(2, 5, 8) for s in streams}
    ctx = {"kv": {s: summed.cross[s].keys_values(m) for s, m in mems.items()},
           "mask": {s: attend_mask(torch.zeros(2, 5, dtype=torch.bool)) for s in streams},
           "has": {s: torch.ones(2, dtype=torch.bool) for s in streams}, "segments": {}}
    x = torch.randn(2, 3, 8)
    out = summed(x, ctx)
    h = summed.ln_self(x)
    x1 = x + summed.self_attn(h, h, causal=True)[0]
    ref = 0
    for s in streams:  # eq. 10-11
        d = x1 + summed.cross[s](summed.ln_cross[s](x1), kv=ctx["kv"][s], mask=ctx["mask"][s])[0]
        ref = ref + d + summed.ff[s](summed.ln_ff[s](d))
    torch.testing.assert_close(out, ref)
    # a sample whose history has no mid-term items gets nothing but the residual from that stream
    ctx["has"]["mid"] = torch.tensor([True, False])
    out = summed(x, ctx)
    d = x1 + summed.cross["mid"](summed.ln_cross["mid"](x1), kv=ctx["kv"]["mid"], mask=ctx["mask"]["mid"])[0]
    mid = d + summed.ff["mid"](summed.ln_ff["mid"](d))
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1], (ref - mid + x1)[1])


def test_ran_teacher_forcing_uses_the_ground_truth_codes():
    torch.manual_seed(0)
    ran = RAN([4, 3, 5], 8)
    x = torch.randn(3, 8)
    codes = torch.tensor([[1, 2, 0], [3, 0, 4], [0, 1, 1]])
    forced, total = ran.run(x, codes)
    for level in (1, 2):  # the context is the ground-truth codewords, whatever was predicted
        ctx = sum(ran.codebooks[m][codes[:, m]] for m in range(level))
        torch.testing.assert_close(forced[level], ran.logits(ran.hidden(x, ctx, level), level))
    torch.testing.assert_close(total, sum(ran.codebooks[m][codes[:, m]] for m in range(3)))
    soft, _ = ran.run(x)  # redistribution mode differs after the first level
    torch.testing.assert_close(soft[0], forced[0])
    assert not torch.allclose(soft[1], forced[1])


def test_intrr_backbone_reads_one_token_per_item(monkeypatch):
    cfg = gk.configure("smoke", model="intrr")
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    assert isinstance(model, IntRR)
    lengths = []
    real = EncoderLayer.forward

    def spy(self, x, mask):
        lengths.append(x.shape[1])
        return real(self, x, mask)

    monkeypatch.setattr(EncoderLayer, "forward", spy)
    batch = batcher.batch("test", np.arange(8))
    model.eval()(batch)
    assert lengths and set(lengths) == {cfg.data.short_len}  # not short_len x levels
    assert table.levels > 1
    with torch.no_grad():  # beam search over the RAN alone, constrained to existing SIDs
        res = beam_search(model, batch, table.index(), 5)
        logits = model(batch)
    top = res.trace[0][:, 0, 0]
    assert (top == logits[0].masked_fill(~table.index().first_mask, -1e9).argmax(-1)).all()


def test_gems_streams_split_by_thresholds_and_stages_follow_epochs():
    cfg = gk.configure("smoke", model="gems", **{"model.stages": [1, 2]})
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    for epoch, stage in ((0, 1), (1, 2), (2, 2), (3, 3), (9, 3)):
        model.set_epoch(epoch)
        assert int(model.stage) == stage
    state = model.encode(batcher.batch("test", np.arange(8)))
    recent, mid = cfg.data.short_len, cfg.data.short_len + cfg.data.long_max // 2
    assert state["mems"]["recent"][0].shape[1] == recent  # eq. 1: T_recent items
    assert state["mems"]["mid"][0].shape[1] == mid - recent
    assert state["mems"]["lifecycle"][0].shape[1] == cfg.model.memory  # compressed
    for variant, names in (("recent-only", {"recent"}), ("fusion-b", {"all"}), ("fusion-a", {"all"})):
        v = gk.configure("smoke", variant=variant)
        m, b = model_and_batcher(v, ds, table, "cpu")
        assert set(m.encode(b.batch("test", np.arange(4)))["mems"]) == names


def test_gems_stream_shares_sum_to_one_and_follow_the_streams():
    from glasskit.analysis.trace import gems_stream_shares

    base = gk.configure("smoke", model="gems")
    ds, table = load(base)
    for variant in (None, "fusion-a", "fusion-b", "fusion-c", "recent-only"):
        cfg = gk.configure("smoke", model="gems", variant=variant)
        torch.manual_seed(0)
        model, batcher = model_and_batcher(cfg, ds, table, "cpu")
        shares = gems_stream_shares(model, batcher, "test", np.arange(32))
        per_cell = shares.groupby(["layer", "level"])["share"].sum()
        assert np.allclose(per_cell, 1.0, atol=1e-4), (variant, per_cell)
        assert len(per_cell) == cfg.model.dec_layers * table.levels
        by = shares.groupby("stream")[["share", "present"]].mean()
        assert by.loc["recent", "present"] == 1.0
        if variant == "recent-only":
            assert by.loc["recent", "share"] == pytest.approx(1.0)
            assert by.loc[["mid", "lifecycle"], "present"].eq(0).all()
        else:
            assert by.loc["mid", "share"] > 0 and by.loc["lifecycle", "share"] > 0


@pytest.mark.parametrize("variant", [None, "fusion-a", "fusion-c"])
def test_gems_cached_decoding_equals_decoding_the_whole_prefix(variant):
    cfg = gk.configure("smoke", model="gems", variant=variant)
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    model.set_epoch(99)  # stage 3: the indexer's top-k in play
    model.eval()
    steps = decode_steps(model, batcher.batch("test", np.arange(10)), table.index(), 5)
    assert len(steps) == table.levels
    with torch.no_grad():
        for state, prefix, logits in steps:
            torch.testing.assert_close(logits, model.step_logits(state, prefix), atol=2e-5, rtol=1e-5)


def test_gems_evaluates_a_stage_3_checkpoint_and_stops_only_within_stage_3(tmp_path):
    """gems.md §3.4: the indexer's top-k attention is what GEMs deploys, so the evaluated
    checkpoint is a stage-3 one and early stopping counts from stage 3 on (issue 19, 1)."""
    from glasskit.errors import GlasskitError
    from glasskit.train import train

    cfg = gk.configure("smoke", model="gems", **{"model.stages": [1, 1], "train.epochs": 4,
                                                 "train.patience": 1})
    m = train(cfg, out=tmp_path / "staged", progress=False).metrics()
    assert m["best_stage"] == 3 and m["best_epoch"] >= 3 and m["epochs_run"] >= 3
    short = gk.configure("smoke", model="gems", **{"model.stages": [2, 2]})
    with pytest.raises(GlasskitError, match=r"final training stage .* begins at epoch 5, but "
                                            r"train.epochs is 3"):
        train(short, out=tmp_path / "short", progress=False)
    assert not (tmp_path / "short" / "best.pt").exists()
    anyway = short.replace(**{"model.evaluate_any_stage": True})
    assert train(anyway, out=tmp_path / "any", progress=False).metrics()["best_stage"] in (1, 2)


def test_gems_empty_streams_give_finite_outputs_and_no_gradient_from_nothing():
    """A sample whose history never reaches the mid-term or lifecycle stream attends over a fully
    padded memory: the loss and every gradient stay finite in all three stages, and when no
    sample has a stream, that stream's decoder cross-attention receives no gradient at all
    (issue 19, 5)."""
    cfg = gk.configure("smoke", model="gems")
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    batch = batcher.batch("train", np.arange(16))
    hist = batch["hist"].clone()
    recent = cfg.data.short_len
    hist[:8, : hist.shape[1] - recent] = -1  # half the samples: the recent stream only
    model.train()
    for epoch in (0, 1, 2):  # stages 1, 2 and 3 on smoke
        model.set_epoch(epoch)
        for b in ({**batch, "hist": hist}, {**batch, "hist": hist[:8]}):
            b = {k: v[: len(b["hist"])] if torch.is_tensor(v) and len(v) == 16 else v
                 for k, v in b.items()}
            model.zero_grad()
            loss = model(b, loss=True)
            assert torch.isfinite(loss)
            loss.backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            assert all(torch.isfinite(g).all() for g in grads.values()), epoch
    # the last batch had no sample with a mid-term or lifecycle stream
    for name, g in grads.items():
        if ".cross.mid." in name or ".cross.lifecycle." in name:
            assert not g.any(), name


def test_gems_residual_stream_sum_counts_the_residual_once():
    """eq. 11 as written, Σ_s D_s*, equals the residual form D′ + Σ_s (D_s* − D′) plus (S − 1)
    copies of D′; with one stream the two forms agree (issue 19, 4)."""
    torch.manual_seed(0)
    streams = ["recent", "mid", "lifecycle"]
    literal = GemsDecoderLayer(16, 2, 8, 32, 0.0, streams, gate=False)
    residual = GemsDecoderLayer(16, 2, 8, 32, 0.0, streams, gate=False, residual=True)
    residual.load_state_dict(literal.state_dict())
    x = torch.randn(3, 2, 16)
    mem = {s: torch.randn(3, 5, 16) for s in streams}
    ctx = {"kv": {s: literal.cross[s].keys_values(mem[s]) for s in streams},
           "mask": {s: None for s in streams}, "has": {s: torch.ones(3, dtype=torch.bool) for s in streams},
           "segments": {}}
    h = literal.self_block(x)
    gap = literal(x, ctx) - residual(x, ctx)
    torch.testing.assert_close(gap, 2 * h, rtol=1e-5, atol=1e-5)
    single = GemsDecoderLayer(16, 2, 8, 32, 0.0, ["recent"], gate=False)
    single_res = GemsDecoderLayer(16, 2, 8, 32, 0.0, ["recent"], gate=False, residual=True)
    single_res.load_state_dict(single.state_dict())
    one = {k: {"recent": v["recent"]} if isinstance(v, dict) and "recent" in v else v
           for k, v in ctx.items()}
    one["kv"] = {"recent": single.cross["recent"].keys_values(mem["recent"])}
    torch.testing.assert_close(single(x, one), single_res(x, one))
    cfg = gk.configure("smoke", model="gems", **{"model.stream_sum": "residual"})
    assert all(layer.residual for layer in model_and_batcher(cfg, *load(cfg), "cpu")[0].decoder)


@pytest.mark.parametrize("variant", ["no-user-tf", "no-aln", "no-redistribution", "no-shared-ran"])
def test_intrr_table_4_rows_switch_what_they_name(variant):
    """intrr.md Table 4 as registered rows (issue 19, 7): each changes exactly its component."""
    cfg = gk.configure("smoke", variant=variant)
    assert cfg.model.name == "intrr" and cfg.model.variant == variant
    ds, table = load(cfg)
    torch.manual_seed(0)
    model, batcher = model_and_batcher(cfg, ds, table, "cpu")
    base_cfg = gk.configure("smoke", model="intrr")
    torch.manual_seed(0)
    base, _ = model_and_batcher(base_cfg, ds, table, "cpu")
    batch = batcher.batch("train", np.arange(8))
    model.eval()
    base.eval()
    e, _ = model.item_side()
    e_base, _ = base.item_side()
    if variant == "no-redistribution":  # E_i is the lookup of the item's SID path
        lookup = sum(model.ran.codebooks[m][model.item_codes[:, m]] for m in range(model.levels))
        torch.testing.assert_close(e, lookup)
    else:
        torch.testing.assert_close(e, e_base)
    if variant == "no-shared-ran":
        assert model.user_ran is not model.ran
        assert any(k.startswith("separate_ran.") for k in model.state_dict())
    else:
        assert model.user_ran is model.ran
        assert set(model.state_dict()) == set(base.state_dict())  # same weights, same keys
    with torch.no_grad():
        loss, loss_base = model(batch, loss=True), base(batch, loss=True)
    if variant == "no-aln":
        assert model.align_weight == 0 and loss < loss_base
    elif variant == "no-user-tf":  # levels after the first see predicted, not gold, contexts
        lg, lg_base = model(batch), base(batch)
        torch.testing.assert_close(lg[0], lg_base[0])
        assert not torch.allclose(lg[1], lg_base[1])
    assert torch.isfinite(loss)


def test_intrr_alignment_over_the_batch_items_reaches_only_those_items():
    """``model.align_items = "batch"`` (issue 19, 7): L_aln averages eq. 8 over the items a batch
    holds, so an item outside the batch gets no gradient; ``catalogue`` reaches every item."""
    grads, losses = {}, {}
    for mode in ("catalogue", "batch"):
        cfg = gk.configure("smoke", model="intrr", **{"model.align_items": mode})
        ds, table = load(cfg)
        torch.manual_seed(0)
        model, batcher = model_and_batcher(cfg, ds, table, "cpu")
        batch = batcher.batch("train", np.arange(4))
        model.eval()
        loss = model(batch, loss=True)
        loss.backward()
        grads[mode], losses[mode] = model.uid.weight.grad.norm(dim=-1), loss.detach()
        seq = batch["seq"]
        inside = torch.unique(torch.cat([seq[seq >= 0], batch["target_item"]]))
        state = model.encode(batch)
        hand = sum(torch.nn.functional.cross_entropy(lg[inside], model.item_codes[inside, i])
                   for i, lg in enumerate(state["item_logits"]))
        if mode == "batch":
            torch.testing.assert_close(model.align_loss(state, batch), hand)
    outside = torch.ones(len(grads["batch"]), dtype=torch.bool)
    outside[inside] = False
    assert outside.any() and (grads["batch"][outside] == 0).all()
    assert (grads["catalogue"][outside] > 0).all()
    assert not torch.isclose(losses["batch"], losses["catalogue"])
    with pytest.raises(ConfigError, match="align_items"):
        gk.configure("smoke", model="intrr", **{"model.align_items": "items"})
