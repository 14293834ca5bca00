"""A run keeps the SID table it trains against (``sids.npz``) and reads its checkpoints only
against it. The tokenizer is trained in floats: on another processor, or under another kernel
setting on the same one, it gives other codes for the same items (measured on the Toys
tokenizer: 99% of items changed a code between AVX-512 and AVX2 kernels). A run resumed there
once trained on against the new codes without a word (its loss jumped from 7.9 to 11.3).
Here "another machine" is a tokenizer that gives the same items other codes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import glasskit as gk
import glasskit.pipeline as pipeline
from glasskit.errors import GlasskitError
from glasskit.evaluation import evaluate_run
from glasskit.runs import Run
from glasskit.tokenize import SidTable
from glasskit.train import Interrupted, train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def _another_machine(monkeypatch) -> None:
    """From now on the tokenizer gives every item another item's codes (shapes unchanged)."""
    real = pipeline.tokenize_dataset

    def other(ds):
        table = real(ds)
        perm = np.random.default_rng(1).permutation(table.n_items)
        return dataclasses.replace(table, codes=table.codes[perm])

    monkeypatch.setattr(pipeline, "tokenize_dataset", other)


def _interrupted(cfg, out):
    with pytest.raises(Interrupted):
        train(cfg, out=out, progress=False, stop_after=1)
    return out


def test_a_run_resumed_where_the_tokenizer_differs_keeps_its_own_codes(tmp_path, monkeypatch):
    cfg = gk.profile("smoke")
    here = pipeline.load(cfg)[1]
    straight = train(cfg, out=tmp_path / "a", progress=False).metrics()
    run = _interrupted(cfg, tmp_path / "b")
    assert SidTable.load(run / "sids.npz").fingerprint() == here.fingerprint()

    _another_machine(monkeypatch)
    elsewhere = pipeline.load(cfg)[1]
    assert elsewhere.fingerprint() != here.fingerprint()
    assert (elsewhere.codes != here.codes).any(axis=1).mean() > 0.5
    resumed = train(cfg, out=run, progress=False).metrics()
    assert resumed["test"] == straight["test"]  # as if it had never moved
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    # evaluated again later, still against its own codes
    again = evaluate_run(Run(run), device="cpu")
    assert again["masked"]["ndcg@10"] == pytest.approx(straight["test"]["masked"]["ndcg@10"])

    (run / "sids.npz").unlink()  # its table lost: the checkpoint is refused, not misread
    with (pytest.warns(UserWarning, match=r"made before runs kept their SID table"),
          pytest.raises(GlasskitError, match=r"trained against another SID table .* sids\.npz")):
        evaluate_run(Run(run), device="cpu")


def test_resuming_without_the_runs_table_is_refused(tmp_path, monkeypatch):
    cfg = gk.profile("smoke")
    run = _interrupted(cfg, tmp_path / "r")
    (run / "sids.npz").unlink()
    _another_machine(monkeypatch)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(GlasskitError, match="another SID table"):
        train(cfg, out=run, progress=False)
    assert (run / "last.pt").read_bytes() == before  # nothing trained over it
    assert not (run / "sids.npz").exists()  # nor another table pinned in its place


def test_a_checkpoint_that_does_not_record_its_table_is_refused(tmp_path):
    """Checkpoints made before runs kept their table cannot be checked: a SID model's is
    refused (retrain), never read against whatever this machine's tokenizer gives."""
    cfg = gk.profile("smoke")
    run = _interrupted(cfg, tmp_path / "r")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        del ckpt["sid_fingerprint"]
        torch.save(ckpt, run / name)
    with pytest.raises(GlasskitError, match="does not record the SID table .* --fresh"):
        train(cfg, out=run, progress=False)


def test_a_kept_table_that_does_not_fit_is_refused_and_fresh_replaces_it(tmp_path, monkeypatch):
    cfg = gk.profile("smoke")
    run = _interrupted(cfg, tmp_path / "r")
    table = SidTable.load(run / "sids.npz")
    dataclasses.replace(table, codes=table.codes[:-3]).save(run / "sids.npz")
    with pytest.raises(GlasskitError, match=r"sids\.npz: the run's SID table .* does not fit"):
        train(cfg, out=run, progress=False)

    _another_machine(monkeypatch)  # --fresh retrains against this machine's table and keeps it
    train(cfg, out=run, resume=False, progress=False)
    kept = SidTable.load(run / "sids.npz").fingerprint()
    assert kept == pipeline.load(cfg)[1].fingerprint() != table.fingerprint()
