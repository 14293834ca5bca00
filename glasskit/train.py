"""One training loop for every model: device choice, bf16 autocast, AdamW with warm-up and
cosine decay, gradient clipping, early stopping on validation NDCG@10, best and last
checkpoints, resume after an interruption, per-epoch metrics in the run store, and multi-GPU
(or multi-process CPU) training through ``torchrun`` + DistributedDataParallel.

Every epoch reseeds torch with ``seed * 1000 + epoch`` and shuffles with the same number, so an
interrupted run resumed from its last checkpoint ends with the metrics an uninterrupted run
would have had.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from glasskit.batching import Batcher
from glasskit.config import Config
from glasskit.data import Dataset
from glasskit.decode import beam_search
from glasskit.device import cpu_bf16_native, resolve_device
from glasskit.errors import GlasskitError
from glasskit.io import atomic_write
from glasskit.metrics import (
    crp,
    hierarchical_recall,
    inference_precision,
    level_accuracy,
    ranking_metrics,
)
from glasskit.pipeline import load, model_and_batcher
from glasskit.ranking import rank
from glasskit.runs import Run, check_run_folder, create_run, run_lock, run_name, runs_root
from glasskit.tokenize import SidTable


class Interrupted(Exception):
    """Raised by ``stop_after`` to simulate an interruption (tests)."""


def train_precision(device: torch.device, amp: str) -> str:
    """"bf16" or "fp32": ``amp`` auto takes bf16 on CUDA and on CPUs that multiply bf16
    natively (AVX512-BF16, AMX), where bench/bench_throughput.py measures it faster."""
    if amp == "bf16" or (amp == "auto" and (device.type == "cuda"
                                            or (device.type == "cpu" and cpu_bf16_native()))):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, amp: str):
    """bf16 autocast for training (see :func:`train_precision`). Evaluation never autocasts:
    it ranks in fp32, and the output heads project in fp32 even under autocast."""
    if train_precision(device, amp) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over every parameter (fused kernels on CUDA)."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                             weight_decay=cfg.train.weight_decay, fused=fused or None)


def train_step(net: torch.nn.Module, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               cfg: Config, device: torch.device, model: torch.nn.Module | None = None
               ) -> torch.Tensor:
    """One optimisation step: the model's loss under the configured autocast, backward,
    gradient clipping, AdamW. ``net`` may be the DDP wrapper of ``model``. Returns the loss
    (a tensor, so the caller decides when to synchronise)."""
    model = model or net
    with autocast(device, cfg.train.amp):
        loss = net(batch, loss=True)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip,
                                       foreach=True)
    opt.step()
    return loss.detach()


def primary_ranking(ds: Dataset) -> str:
    """History-masked when users never repeat an item (MovieLens), unmasked otherwise."""
    seqs = ds.seqs
    users = np.repeat(np.arange(seqs.n_users), seqs.lengths)
    pairs = np.unique(users.astype(np.int64) * seqs.n_items + seqs.items)
    return "masked" if len(pairs) == len(seqs.items) else "unmasked"


@torch.no_grad()
def evaluate(model, batcher: Batcher, split: str, cfg: Config, masked: bool,
             full: bool = False) -> dict[str, Any]:
    """Rank the catalogue for every sample of ``split`` (glasskit.ranking: beam search for SID
    models, every item for ID models; always fp32). ``full`` adds, for SID models, acc_i, P_i,
    CRP and hierarchical recall."""
    was_training = model.training
    model.eval()
    t = cfg.train
    kind = model_kind(cfg)
    full = full and kind == "sid"
    index = batcher.table.index(batcher.device) if kind == "sid" else None
    n = len(batcher.ds.splits[split])
    ranked, targets, beams, greedy, argmax, gold = [], [], [], [], [], []
    for start in range(0, n, t.eval_batch_size):
        idx = np.arange(start, min(n, start + t.eval_batch_size))
        batch = batcher.batch(split, idx)
        seen = batcher.seen(split, idx) if masked else None
        res = rank(model, kind, batch, index, beam_for(cfg, batcher.ds), max(t.ks), seen=seen)
        ranked.append(res.items.cpu().numpy())
        targets.append(batch["target_item"].cpu().numpy())
        if full:
            beams.append([b.cpu().numpy() for b in res.trace])
            g = beam_search(model, batch, index, 1, 1)
            logits = model(batch)
            greedy.append(g.trace[-1][:, 0].cpu().numpy())
            argmax.append(torch.stack([lg.argmax(-1) for lg in logits], 1).cpu().numpy())
            gold.append(batch["target"].cpu().numpy())
    out: dict[str, Any] = ranking_metrics(np.concatenate(ranked), np.concatenate(targets),
                                          tuple(t.ks))
    if full:
        trace = [np.concatenate([b[d] for b in beams]) for d in range(len(beams[0]))]
        gold_codes = np.concatenate(gold)
        out["acc"] = level_accuracy(np.concatenate(argmax), gold_codes)
        out["precision"] = inference_precision(np.concatenate(greedy), gold_codes)
        c = crp(trace, gold_codes)
        out["crp"], out["crp_eligible"], out["crp_hit"] = c["crp"], c["eligible"], c["hit"]
        out["hrecall"] = hierarchical_recall(trace, gold_codes)
    model.train(was_training)
    return out


def beam_for(cfg: Config, ds: Dataset) -> int:
    """``train.beam``, capped at what the catalogue can fill (a wider beam keeps nothing more
    and costs time), never below the largest K."""
    return min(cfg.train.beam, max(ds.seqs.n_items, max(cfg.train.ks)))


def _say_beam(cfg: Config, ds: Dataset) -> None:
    if beam_for(cfg, ds) < cfg.train.beam:
        warnings.warn(f"beam {cfg.train.beam} exceeds the {ds.seqs.n_items} items of the catalogue: "
                      f"ranking with beam {beam_for(cfg, ds)}, which keeps every item", stacklevel=3)


def model_kind(cfg: Config) -> str:
    """"sid" (beam search over semantic IDs) or "id" (scores every item)."""
    from glasskit.models import REGISTRY

    return REGISTRY[cfg.model.name].kind


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def _save(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically; a failed write (a full disk) leaves the previous one."""
    import shutil

    try:
        atomic_write(path, lambda p: torch.save(obj, p))
    except (RuntimeError, OSError) as e:
        free = shutil.disk_usage(path.parent).free
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise GlasskitError(
            f"{path}: could not write the checkpoint ({why}); {free / 2**20:.0f} MiB are free on "
            f"that disk: if no space is left on the device, free some and run the same command "
            f"again to resume. The previous {path.name}, if any, is intact") from None


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(cfg: Config, out: str | Path | None = None, resume: bool = True,
          progress: bool = True, stop_after: int | None = None) -> Run | None:
    """Train ``cfg.model`` and evaluate it; returns the run (config, checkpoints, metrics), or
    None on the non-zero ranks of a distributed run.

    The run folder (``out``, default ``runs/<model>-<data>-<config hash>-<data fingerprint>``)
    is locked while training. A folder holding this config's run on this data is resumed (or
    reused when finished); one made from another config or from other data is refused (pass
    ``resume=False``, ``--fresh``, to retrain into it)."""
    cfg.validate()
    rank, world, local_rank = _dist_info()
    device = resolve_device(cfg.train.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    path = Path(out) if out else None
    if path is not None and rank == 0:
        check_run_folder(path, replace=not resume)  # before any work: a wrong --out fails fast
    ds, table = load(cfg)
    path = path or runs_root() / run_name(cfg, cfg.model.name, ds.fingerprint)
    lock = run_lock(path) if rank == 0 else contextlib.nullcontext()
    with lock:
        if rank == 0:
            path = check_run_folder(path, replace=not resume)  # again, now that it is locked
        return _train(cfg, ds, table, path, device, resume, progress, stop_after)


def _train(cfg: Config, ds: Dataset, table: SidTable, path: Path, device: torch.device,
           resume: bool, progress: bool, stop_after: int | None) -> Run | None:
    rank, world, _ = _dist_info()
    torch.manual_seed(cfg.seed)
    model, batcher = model_and_batcher(cfg, ds, table, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = make_optimizer(model, cfg)
    train_split = getattr(model, "train_split", "train")  # SASRec: one window per user
    if len(ds.splits[train_split]) < world:
        raise GlasskitError(
            f"{ds.cfg.data.dataset}: {len(ds.splits[train_split])} training samples for {world} "
            "process(es), so nothing would be trained: a user gives training targets only from "
            "4 interactions on (the last is the test target, the one before it the validation "
            "target, and each target needs an earlier item as input); use data with longer "
            "histories")
    n_train = len(ds.splits[train_split]) // world
    steps_per_epoch = math.ceil(n_train / cfg.train.batch_size)
    total = steps_per_epoch * cfg.train.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, cfg.train.warmup_steps, total))

    _say_beam(cfg, ds)
    run = _open_run(cfg, path, resume, ds.fingerprint) if rank == 0 else None
    masked = primary_ranking(ds) == "masked"
    state = {"epoch": 0, "best": -1.0, "bad": 0, "history": [], "seconds": 0.0}
    if world > 1:
        path_box = [str(run.path) if run else None]
        dist.broadcast_object_list(path_box, src=0)
        path = Path(path_box[0])
    ckpt = _resume_from(path, cfg, device, ds.fingerprint) if resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = ckpt["state"]
        done = state["epoch"] >= cfg.train.epochs or state["bad"] >= cfg.train.patience
        if done and world == 1 and "test" in run.metrics():
            return run  # a finished run: reuse it

    while state["epoch"] < cfg.train.epochs and state["bad"] < cfg.train.patience:
        epoch = state["epoch"]
        torch.manual_seed(cfg.seed * 1000 + epoch)
        if hasattr(model, "set_epoch"):  # staged training (GEMs' indexer, §3.4)
            model.set_epoch(epoch)
        net.train()
        t0 = time.time()
        usable = n_train * world
        batches = batcher.iterate(train_split, cfg.train.batch_size, shuffle=True,
                                  seed=cfg.seed * 1000 + epoch, shard=(rank, world))
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not progress or rank != 0 or not sys.stderr.isatty(), leave=False)
        total_loss, seen_samples = torch.zeros((), device=device), 0
        first_bad = torch.full((), -1, device=device, dtype=torch.long)  # step of a non-finite loss
        for step, (idx, batch) in enumerate(bar):
            if step >= steps_per_epoch or seen_samples >= usable:
                break
            loss = train_step(net, batch, opt, cfg, device, model)  # through DDP when wrapped
            sched.step()
            total_loss += loss * len(idx)
            seen_samples += len(idx)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            if step % 20 == 0:  # a host sync: not every step
                _stop_if_diverged(first_bad, epoch, steps_per_epoch, cfg, state)
                bar.set_postfix(loss=f"{float(total_loss) / seen_samples:.3f}")
        _stop_if_diverged(first_bad, epoch, steps_per_epoch, cfg, state)
        state["seconds"] += time.time() - t0
        record = {"epoch": epoch + 1, "loss": float(total_loss) / max(1, seen_samples),
                  "lr": sched.get_last_lr()[0], "train_seconds": time.time() - t0}
        if rank == 0:
            valid = evaluate(model, batcher, "valid", cfg, masked)
            record.update({f"valid_{k}": v for k, v in valid.items()})
            state["history"].append(record)
            score = valid["ndcg@10"]
            state["epoch"] = epoch + 1
            if score > state["best"]:
                state["best"], state["bad"] = score, 0
                _save(run.path / "best.pt", checkpoint(model, opt, sched, state, cfg, ds))
            else:
                state["bad"] += 1
            _save(run.path / "last.pt", checkpoint(model, opt, sched, state, cfg, ds))
            run.log_metrics(history=state["history"], epochs_run=state["epoch"])
            if progress:
                print(f"epoch {epoch + 1}: loss {record['loss']:.4f} valid ndcg@10 {score:.4f} "
                      f"hit@10 {valid['hit@10']:.4f} ({record['train_seconds']:.1f}s)", flush=True)
        else:
            state["epoch"] = epoch + 1
        if world > 1:
            box = [state["bad"]]
            dist.broadcast_object_list(box, src=0)
            state["bad"] = box[0]
        if stop_after is not None and state["epoch"] >= stop_after:
            raise Interrupted(f"stopped after epoch {state['epoch']}")

    if rank == 0:
        if progress:
            print(_stop_reason(state, cfg), flush=True)
        final = load_checkpoint(run.path / "best.pt", cfg, device, ds.fingerprint)
        model.load_state_dict(final["model"])
        metrics = final_metrics(model, batcher, cfg, ds)
        run.log_metrics(**metrics, history=state["history"], epochs_run=state["epoch"],
                        train_seconds=state["seconds"], world_size=world,
                        device=str(device), train_precision=train_precision(device, cfg.train.amp),
                        best_epoch=final["state"]["epoch"] - final["state"]["bad"])
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run


class Diverged(GlasskitError):
    """The training loss became NaN or infinite: nothing of that epoch is saved."""


def _stop_if_diverged(first_bad: torch.Tensor, epoch: int, steps: int, cfg: Config,
                      state: dict) -> None:
    step = int(first_bad)
    if step < 0:
        return
    kept = (f"last.pt still holds epoch {state['epoch']}, the last good one"
            if state["epoch"] else "no checkpoint was written")
    raise Diverged(f"training loss became NaN or infinite at epoch {epoch + 1}, step {step + 1} of "
                   f"{steps} (train.lr {cfg.train.lr}, train.grad_clip {cfg.train.grad_clip}); the "
                   f"run stopped and {kept}. Lower train.lr or check the data, then train again "
                   "(a changed config trains into a new run folder, or pass --fresh)")


def _stop_reason(state: dict, cfg: Config) -> str:
    best = state["epoch"] - state["bad"]
    if state["bad"] >= cfg.train.patience:
        return (f"stopped early after epoch {state['epoch']}: validation NDCG@10 has not improved "
                f"for {cfg.train.patience} epochs (best {state['best']:.4f} at epoch {best}); "
                "evaluating that epoch's checkpoint")
    return (f"finished all {cfg.train.epochs} epochs; best validation NDCG@10 {state['best']:.4f} "
            f"at epoch {best}; evaluating that epoch's checkpoint")


def final_metrics(model, batcher: Batcher, cfg: Config, ds: Dataset) -> dict[str, Any]:
    primary = primary_ranking(ds)
    out: dict[str, Any] = {"primary": primary}
    for split in ("valid", "test"):
        out[split] = {
            "masked": evaluate(model, batcher, split, cfg, masked=True, full=primary == "masked"),
            "unmasked": evaluate(model, batcher, split, cfg, masked=False,
                                 full=primary == "unmasked"),
        }
    return out


def checkpoint(model, opt, sched, state: dict, cfg: Config, ds: Dataset) -> dict:
    """Tensors and plain data only, so that loading never needs to unpickle code."""
    return {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
            "state": {**state, "history": list(state["history"])}, "config_hash": cfg.hash(),
            "data_fingerprint": ds.fingerprint, "model_name": cfg.model.name}


def load_checkpoint(path: Path, cfg: Config, device: torch.device,
                    data_fingerprint: str | None = None) -> dict:
    """A checkpoint of this config (and, when given, of this data), read with
    ``weights_only=True``: a file that names any class or function beyond tensors and plain
    data is refused (:class:`RefusedCheckpoint`) before any of it runs."""
    if not path.is_file():
        raise GlasskitError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # whatever torch raises, we decide from the file itself
        unsafe = unsafe_globals(path)
        if unsafe:
            raise RefusedCheckpoint(
                f"{path}: refused: it holds objects other than tensors and plain data (it names "
                f"{', '.join(unsafe[:3])}); glasskit never unpickles code from a run folder. Delete "
                "it, or retrain with --fresh") from None
        why = type(e).__name__ if "weights_only" in str(e) else (str(e).splitlines() or [""])[0]
        raise DamagedCheckpoint(f"{path}: damaged checkpoint ({why or type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DamagedCheckpoint(f"{path}: not a glasskit checkpoint")
    if ckpt.get("config_hash") != cfg.hash():
        raise GlasskitError(f"{path}: checkpoint was written for another config "
                            f"(hash {ckpt.get('config_hash')}, this config {cfg.hash()})")
    if data_fingerprint is not None and ckpt.get("data_fingerprint") != data_fingerprint:
        raise GlasskitError(f"{path}: checkpoint was trained on other data (fingerprint "
                            f"{ckpt.get('data_fingerprint')}, the data now {data_fingerprint}); "
                            "retrain with --fresh")
    return ckpt


def unsafe_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle names beyond what ``weights_only``
    loading allows, read statically (nothing is unpickled): torch's own scan for its zip
    format; for any other file, every global a pickle stream names. Empty for a file that is
    merely damaged."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        try:
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # an unreadable archive is damaged, not unsafe
            return []
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # the stream ends or breaks: what was named so far counts
        pass
    return names


class DamagedCheckpoint(GlasskitError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


class RefusedCheckpoint(GlasskitError):
    """A checkpoint that names code to run: never loaded, never fallen back from."""


def _resume_from(path: Path, cfg: Config, device: torch.device, data_fingerprint: str
                 ) -> dict | None:
    """The checkpoint to resume from: last.pt, or best.pt with a warning when last.pt is
    damaged (resuming from the best epoch replays the later ones exactly: every epoch is
    reseeded). None when the run has no checkpoint yet."""
    last, best = path / "last.pt", path / "best.pt"
    if not last.is_file():
        return None
    try:
        return load_checkpoint(last, cfg, device, data_fingerprint)
    except DamagedCheckpoint as e:
        if best.is_file():
            try:
                ckpt = load_checkpoint(best, cfg, device, data_fingerprint)
            except DamagedCheckpoint:
                pass
            else:
                warnings.warn(f"{e}; resuming from {best.name} (epoch {ckpt['state']['epoch']})",
                              stacklevel=3)
                return ckpt
        raise GlasskitError(f"{e}, and no readable best.pt to fall back to; start over with "
                            "--fresh") from None


def _open_run(cfg: Config, path: Path, resume: bool, data_fingerprint: str) -> Run:
    """The run folder: resumed when it holds this config's run on this data, else created
    (or, with ``resume=False``, replaced)."""
    if (path / "run.json").is_file():
        run = Run(path)
        if resume:
            info = run.info
            if info.get("config_hash") != cfg.hash():
                raise GlasskitError(f"{path}: holds a run of another config; choose another --out "
                                    "or pass --fresh to replace it")
            if info.get("data_fingerprint") != data_fingerprint:
                raise GlasskitError(
                    f"{path}: holds a run made from other data (fingerprint "
                    f"{info.get('data_fingerprint')}, the data now {data_fingerprint}): its results "
                    "do not describe this data; choose another --out or pass --fresh to retrain")
            _set_aside_damaged_metrics(run)
            return run
    return create_run(cfg, cfg.model.name, name=path.name, root=path.parent, overwrite=True,
                      data_fingerprint=data_fingerprint)


def _set_aside_damaged_metrics(run: Run) -> None:
    """A damaged metrics.json is renamed (kept, hidden) so that resuming rebuilds it: the
    history from the checkpoint, the final metrics by evaluating the best checkpoint again."""
    try:
        run.metrics()
    except GlasskitError as e:
        kept = run.path / f".metrics.json.damaged-{int(time.time())}"
        os.replace(run.path / "metrics.json", kept)
        warnings.warn(f"{e}; kept as {kept.name}, rebuilding it from the checkpoints", stacklevel=4)


def load_run_model(run: Run, device: str = "auto") -> tuple[Any, Batcher, SidTable, Config]:
    """The best model of a finished run, with its batcher and SID table; refused when the
    run's data has changed since it was trained."""
    info = run.info
    if "data_fingerprint" not in info:
        raise GlasskitError(f"{run.path}: made by an older glasskit that did not record its data; "
                            "its metrics.json stays readable, retrain it to evaluate again")
    cfg = run.config
    dev = resolve_device(device)
    ds, table = load(cfg)
    if ds.fingerprint != info["data_fingerprint"]:
        raise GlasskitError(f"{run.path}: trained on other data (fingerprint "
                            f"{info['data_fingerprint']}, the data now {ds.fingerprint}); retrain "
                            "it (train --fresh) before evaluating")
    model, batcher = model_and_batcher(cfg, ds, table, dev)
    model.load_state_dict(load_checkpoint(run.path / "best.pt", cfg, dev, ds.fingerprint)["model"])
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
    _say_beam(cfg, batcher.ds)
    out: dict[str, Any] = {"run": str(run.path), "split": split, "beam": beam_for(cfg, batcher.ds),
                           "primary": primary}
    for ranking in ("masked", "unmasked"):
        out[ranking] = evaluate(model, batcher, split, cfg, masked=ranking == "masked",
                                full=ranking == primary)
    return out
