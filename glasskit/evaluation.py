"""Evaluation: every model's samples ranked through one path (glasskit.ranking: beam search for
SID models, the whole catalogue for ID models; history masking and tie-breaking shared), the
metrics of both rankings, and a finished run's best checkpoint loaded and evaluated again.
Always fp32: evaluation never autocasts, whatever the training used."""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glasskit.batching import Batcher
from glasskit.config import Config
from glasskit.data import Dataset
from glasskit.device import resolve_device
from glasskit.errors import GlasskitError
from glasskit.metrics import (
    crp,
    hierarchical_recall,
    inference_precision,
    level_accuracy,
    ranking_metrics,
    target_ranks,
)
from glasskit.pipeline import load, model_and_batcher
from glasskit.ranking import greedy_codes, rank, teacher_forced_codes
from glasskit.runs import Run, load_checkpoint
from glasskit.tokenize import SidTable


def primary_ranking(ds: Dataset) -> str:
    """``train.ranking`` when it names one (a published protocol); else history-masked when
    users never repeat an item (MovieLens), unmasked otherwise."""
    if ds.cfg.train.ranking != "auto":
        return ds.cfg.train.ranking
    seqs = ds.seqs
    users = np.repeat(np.arange(seqs.n_users), seqs.lengths)
    pairs = np.unique(users.astype(np.int64) * seqs.n_items + seqs.items)
    return "masked" if len(pairs) == len(seqs.items) else "unmasked"


def evaluate(model, batcher: Batcher, split: str, cfg: Config, masked: bool,
             full: bool = False) -> dict[str, Any]:
    """The metrics of :func:`evaluate_samples`."""
    return evaluate_samples(model, batcher, split, cfg, masked, full)[0]


@torch.no_grad()
def evaluate_samples(model, batcher: Batcher, split: str, cfg: Config, masked: bool,
                     full: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """Rank the catalogue for every sample of ``split`` (glasskit.ranking: beam search for SID
    models, every item for ID models; always fp32). ``full`` adds, for SID models, acc_i, P_i,
    CRP and hierarchical recall; none of them reads the target beyond teacher forcing: for a
    model with several branches (DualGR) they follow the merged ranking (glasskit.ranking:
    merged beams, the best-scoring greedy path, each code's best probability over branches).
    Also returns each sample's target rank (1-based in the top max(K), 0 when not there), what
    paired tests read.

    Under torch.distributed (``torchrun``) every rank takes its share of the evaluation batches
    (batch b to rank b mod world, so each batch holds the samples it holds in one process) and
    the per-sample results are gathered on every rank: the metrics equal one process's."""
    was_training = model.training
    model.eval()
    t = cfg.train
    kind = model_kind(cfg)
    full = full and kind == "sid"
    index = batcher.table.index(batcher.device) if kind == "sid" else None
    n = len(batcher.ds.splits[split])
    rank_, world = _rank_world()
    starts = list(range(0, n, t.eval_batch_size))
    parts: dict[int, dict[str, Any]] = {}
    for b in range(rank_, len(starts), world):
        idx = np.arange(starts[b], min(n, starts[b] + t.eval_batch_size))
        batch = batcher.batch(split, idx)
        seen = batcher.seen(split, idx) if masked else None
        res = rank(model, kind, batch, index, beam_for(cfg, batcher.ds), max(t.ks), seen=seen)
        part = {"ranked": res.items.cpu().numpy(), "targets": batch["target_item"].cpu().numpy()}
        if full:
            part["beams"] = [x.cpu().numpy() for x in res.trace]
            part["greedy"] = greedy_codes(model, batch, index).cpu().numpy()
            part["argmax"] = teacher_forced_codes(model, batch).cpu().numpy()
            part["gold"] = batch["target"].cpu().numpy()
        parts[b] = part
    if world > 1:
        gathered: list[dict[int, dict[str, Any]] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, parts)
        parts = {b: p for shard in gathered for b, p in shard.items()}
    parts_in_order = [parts[b] for b in range(len(starts))]
    ranked = np.concatenate([p["ranked"] for p in parts_in_order])
    targets = np.concatenate([p["targets"] for p in parts_in_order])
    out: dict[str, Any] = ranking_metrics(ranked, targets, tuple(t.ks))
    if full:
        beams = [p["beams"] for p in parts_in_order]
        trace = [np.concatenate([b[d] for b in beams]) for d in range(len(beams[0]))]
        gold_codes = np.concatenate([p["gold"] for p in parts_in_order])
        out["acc"] = level_accuracy(np.concatenate([p["argmax"] for p in parts_in_order]), gold_codes)
        out["precision"] = inference_precision(np.concatenate([p["greedy"] for p in parts_in_order]),
                                               gold_codes)
        c = crp(trace, gold_codes)
        out["crp"], out["crp_eligible"], out["crp_hit"] = c["crp"], c["eligible"], c["hit"]
        out["hrecall"] = hierarchical_recall(trace, gold_codes)
    model.train(was_training)
    return out, target_ranks(ranked, targets)


def _rank_world() -> tuple[int, int]:
    """This process's rank and the world size under torch.distributed, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def beam_for(cfg: Config, ds: Dataset) -> int:
    """``train.beam``, capped at what the catalogue can fill (a wider beam keeps nothing more
    and costs time), never below the largest K."""
    return min(cfg.train.beam, max(ds.seqs.n_items, max(cfg.train.ks)))


def say_beam(cfg: Config, ds: Dataset) -> None:
    if beam_for(cfg, ds) < cfg.train.beam:
        warnings.warn(f"beam {cfg.train.beam} exceeds the {ds.seqs.n_items} items of the catalogue: "
                      f"ranking with beam {beam_for(cfg, ds)}, which keeps every item", stacklevel=3)


def model_kind(cfg: Config) -> str:
    """"sid" (beam search over semantic IDs) or "id" (scores every item)."""
    from glasskit.models import REGISTRY

    return REGISTRY[cfg.model.name].kind


def final_metrics(model, batcher: Batcher, cfg: Config, ds: Dataset
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Both splits' metrics in both rankings, and the per-user results: ``{split}_users`` and
    ``{split}_{ranking}`` (each user's target rank, 0 beyond max K), as a run's ranks.npz."""
    primary = primary_ranking(ds)
    out: dict[str, Any] = {"primary": primary}
    ranks: dict[str, np.ndarray] = {}
    for split in ("valid", "test"):
        out[split] = {}
        ranks[f"{split}_users"] = ds.splits[split].user.astype(np.int64)
        for ranking in ("masked", "unmasked"):
            out[split][ranking], ranks[f"{split}_{ranking}"] = evaluate_samples(
                model, batcher, split, cfg, masked=ranking == "masked", full=primary == ranking)
    return out, ranks


def run_sid_table(path: Path, built: SidTable, cfg: Config, data_fingerprint: str,
                  resume: bool = True) -> SidTable:
    """The SID table the run in ``path`` trains (or was trained) against: the one it keeps in
    ``sids.npz`` when it is resumed and holds this config's run on this data, else ``built``
    (this machine's, which :func:`glasskit.runs.open_run` pins). A kept table that does not
    fit the items or the tokenizer's shape is refused."""
    kept = path / "sids.npz"
    if not resume or not kept.is_file() or not (path / "run.json").is_file():
        return built
    info = Run(path).info
    if info.get("config_hash") != cfg.hash() or info.get("data_fingerprint") != data_fingerprint:
        return built  # not this run: open_run refuses the folder
    try:
        table = SidTable.load(kept)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise GlasskitError(f"{kept}: the run's SID table cannot be read ({e}); its checkpoints "
                            "cannot be read without it: retrain the run with --fresh") from None
    if (table.n_items, table.method, table.collisions, table.semantic_levels,
            table.sizes[:table.semantic_levels]) != (
            built.n_items, built.method, built.collisions, built.semantic_levels,
            built.sizes[:built.semantic_levels]):
        raise GlasskitError(
            f"{kept}: the run's SID table ({table.n_items} items, {table.method} "
            f"{table.sizes[:table.semantic_levels]}) does not fit this data and tokenizer "
            f"({built.n_items} items, {built.method} {built.sizes[:built.semantic_levels]}): "
            "it belongs to another run; retrain this one with --fresh")
    return table


def load_run_data(run: Run) -> tuple[Dataset, SidTable]:
    """A run's dataset and the SID table it was trained against (its ``sids.npz``; a run made
    before runs kept their table gets this machine's, with a warning); refused when the run's
    data has changed since it was trained."""
    info = run.info
    if "data_fingerprint" not in info:
        raise GlasskitError(f"{run.path}: made by an older glasskit that did not record its data; "
                            "its metrics.json stays readable, retrain it to evaluate again")
    ds, table = load(run.config)
    if ds.fingerprint != info["data_fingerprint"]:
        raise GlasskitError(f"{run.path}: trained on other data (fingerprint "
                            f"{info['data_fingerprint']}, the data now {ds.fingerprint}); retrain "
                            "it (train --fresh) before evaluating")
    if not (run.path / "sids.npz").is_file():
        warnings.warn(f"{run.path}: made before runs kept their SID table (sids.npz), so the "
                      "table is built again here; on another processor it can differ from the "
                      "one the run trained against", stacklevel=2)
    return ds, run_sid_table(run.path, table, run.config, ds.fingerprint)


def load_run_model(run: Run, device: str = "auto") -> tuple[Any, Batcher, SidTable, Config]:
    """The best model of a finished run, with its batcher and the SID table it was trained
    against (:func:`load_run_data`)."""
    cfg = run.config
    dev = resolve_device(device)
    ds, table = load_run_data(run)
    model, batcher = model_and_batcher(cfg, ds, table, dev)
    sid_check = table if model_kind(cfg) == "sid" else None
    model.load_state_dict(load_checkpoint(run.path / "best.pt", cfg, dev, ds.fingerprint,
                                          sid_check)["model"])
    model.eval()
    return model, batcher, table, cfg


def evaluate_run(run: Run, split: str = "test", beam: int | None = None,
                 device: str = "auto") -> dict[str, Any]:
    """Both rankings (masked, unmasked) of a run's best checkpoint, optionally at another beam."""
    model, batcher, _, cfg = load_run_model(run, device)
    if beam is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, beam=beam))
        cfg.train.validate()
    primary = primary_ranking(batcher.ds)
    say_beam(cfg, batcher.ds)
    out: dict[str, Any] = {"run": str(run.path), "split": split, "beam": beam_for(cfg, batcher.ds),
                           "primary": primary}
    for ranking in ("masked", "unmasked"):
        out[ranking] = evaluate(model, batcher, split, cfg, masked=ranking == "masked",
                                full=ranking == primary)
    return out
