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
import gc
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from glasskit.config import Config, TrainConfig
from glasskit.data import Dataset, prepare
from glasskit.device import cpu_bf16_native, machine_name, resolve_device
from glasskit.errors import GlasskitError
from glasskit.evaluation import (
    evaluate,
    final_metrics,
    model_kind,
    primary_ranking,
    run_sid_table,
    say_beam,
)
from glasskit.io import save_npz
from glasskit.models.interface import StagedTraining, WeighsLoss
from glasskit.pipeline import load, model_and_batcher, training_split
from glasskit.runs import (
    Run,
    check_run_folder,
    checkpoint_state,
    finished_run,
    load_checkpoint,
    open_run,
    resume_checkpoint,
    run_lock,
    run_name,
    runs_root,
    save_checkpoint,
)
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
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                             fused=fused_adamw(next(model.parameters()).device))


def fused_adamw(device: torch.device) -> bool | None:
    """AdamW's fused kernels on CUDA (one launch for every parameter); torch's default
    elsewhere."""
    return True if device.type == "cuda" else None


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of one process of a distributed run: its own GPU on CUDA (``LOCAL_RANK``),
    else ``device`` (gloo on CPU)."""
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


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


def warmup_length(train_cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Warmup steps: ``train.warmup_epochs`` of an epoch's steps when set, else
    ``train.warmup_steps``."""
    if train_cfg.warmup_epochs is None:
        return train_cfg.warmup_steps
    return max(1, math.ceil(train_cfg.warmup_epochs * steps_per_epoch))


def _schedule(step: int, warmup: int, total: int, kind: str = "cosine") -> float:
    """The learning-rate factor: linear warmup, then cosine decay to 0 at ``total`` steps or
    constant (``train.schedule``)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


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
        device = rank_device(device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    path = Path(out) if out else None
    if path is not None and rank == 0:
        check_run_folder(path, replace=not resume)  # before any work: a wrong --out fails fast
    if world > 1 and rank > 0:
        dist.barrier()  # rank 0 prepares the data first: the others read its caches
    ds, table = load(cfg)
    if world > 1 and rank == 0:
        dist.barrier()
    path = path or runs_root() / run_name(cfg, cfg.model.name, ds.fingerprint)
    lock = run_lock(path) if rank == 0 else contextlib.nullcontext()
    with lock:
        if rank == 0:
            path = check_run_folder(path, replace=not resume)  # again, now that it is locked
            if resume and world == 1 and (done := finished_run(path, cfg, ds.fingerprint)):
                return done  # checkpoints are not needed to reuse a finished run
        table = run_sid_table(path, table, cfg, ds.fingerprint, resume)  # a resumed run: its own
        return _train(cfg, ds, table, path, device, resume, progress, stop_after)


def stored_run(cfg: Config) -> Run | None:
    """This config's finished run in the run store, found without training: the run that
    ``train(cfg)`` would reuse, judged from its results alone; None if there is none yet."""
    fingerprint = prepare(cfg).fingerprint
    return finished_run(runs_root() / run_name(cfg, cfg.model.name, fingerprint), cfg, fingerprint)


def _train(cfg: Config, ds: Dataset, table: SidTable, path: Path, device: torch.device,
           resume: bool, progress: bool, stop_after: int | None) -> Run | None:
    rank, world, _ = _dist_info()
    torch.manual_seed(cfg.seed)
    model, batcher = model_and_batcher(cfg, ds, table, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = make_optimizer(model, cfg)
    train_split = training_split(cfg, ds)
    if len(ds.splits[train_split]) < world:
        raise GlasskitError(
            f"{ds.cfg.data.dataset}: {len(ds.splits[train_split])} training samples for {world} "
            "process(es), so nothing would be trained: a user gives training targets only from "
            "4 interactions on (the last is the test target, the one before it the validation "
            "target, and each target needs an earlier item as input); use data with longer "
            "histories")
    n_train = len(ds.splits[train_split]) // world
    per_epoch = ds.targets_per_epoch(train_split)
    final_stage = model.final_stage_epoch() if isinstance(model, StagedTraining) else 0
    if final_stage >= cfg.train.epochs:
        raise GlasskitError(
            f"{cfg.model.name}: its final training stage (whose checkpoints are the ones evaluated) "
            f"begins at epoch {final_stage + 1}, but train.epochs is {cfg.train.epochs}: raise "
            f"train.epochs, shorten model.stages, or set model.evaluate_any_stage=true")
    steps_per_epoch = math.ceil(n_train / cfg.train.batch_size)
    total = steps_per_epoch * cfg.train.epochs
    warmup = warmup_length(cfg.train, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, warmup, total, cfg.train.schedule))

    say_beam(cfg, ds)
    run = open_run(cfg, path, resume, ds.fingerprint, table) if rank == 0 else None
    sid_fp = table.fingerprint()  # every checkpoint records the table it was trained against
    sid_check = table if model_kind(cfg) == "sid" else None  # and a SID model's is checked
    masked = primary_ranking(ds) == "masked"
    if rank == 0 and isinstance(model, WeighsLoss):
        _say_loss_weights(model, batcher, train_split, cfg, run)
    state = {"epoch": 0, "best": -1.0, "bad": 0, "history": [], "seconds": 0.0, "targets": 0}
    if world > 1:
        path_box = [str(run.path) if run else None]
        dist.broadcast_object_list(path_box, src=0)
        path = Path(path_box[0])
    ckpt = resume_checkpoint(path, cfg, device, ds.fingerprint, sid_check) if resume else None
    if resume and ckpt is None and rank == 0 and (recorded := run.metrics().get("epochs_run")):
        warnings.warn(  # a queue goes on, but not silently over the recorded epochs
            f"{path}: metrics.json records {recorded} trained epoch(s) but last.pt is missing, so "
            "the run trains again from epoch 1 and its history is replaced (to resume instead, "
            "stop now and put the checkpoints back: a run moved between machines needs last.pt, "
            "last.opt.pt, best.pt and best.opt.pt)",
            stacklevel=2)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = ckpt["state"]
        state.setdefault("targets", None)  # a run made before targets were counted: unknown
        done = state["epoch"] >= cfg.train.epochs or state["bad"] >= cfg.train.patience
        if done and world == 1 and "test" in run.metrics() and (run.path / "ranks.npz").is_file():
            return run  # a finished run: reuse it (one without per-user results is evaluated again)
        if state["best"] >= 0 and not (path / "best.pt").is_file():  # fail now, not at the end
            best = state["epoch"] - state["bad"]
            raise GlasskitError(
                f"{path / 'last.pt'} resumes epoch {state['epoch']}, but best.pt (its best epoch, "
                f"{best}) is missing, so the run could not be evaluated at its end: put best.pt "
                "back beside last.pt (a run moved between machines needs last.pt, last.opt.pt, "
                "best.pt and best.opt.pt), or retrain it with --fresh")

    # a run from before tables were kept (an ID model's, whose checkpoint needs no table)
    if rank == 0 and not (run.path / "sids.npz").is_file():
        table.save(run.path / "sids.npz")
    made_on = {"machine": machine_name(device), "precision": train_precision(device, cfg.train.amp)}
    while state["epoch"] < cfg.train.epochs and state["bad"] < cfg.train.patience:
        epoch = state["epoch"]
        torch.manual_seed(cfg.seed * 1000 + epoch)
        if isinstance(model, StagedTraining):  # GEMs' indexer stages, §3.4
            model.set_epoch(epoch)
        net.train()
        t0 = time.time()
        usable = n_train * world
        batches = batcher.iterate(train_split, cfg.train.batch_size, shuffle=True,
                                  seed=cfg.seed * 1000 + epoch, shard=(rank, world))
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not progress or rank != 0 or not sys.stderr.isatty(), leave=False)
        total_loss, seen_samples = torch.zeros((), device=device), 0  # this rank's samples
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
        if state["targets"] is not None:  # target positions predicted
            state["targets"] += round(per_epoch * seen_samples * world / len(ds.splits[train_split]))
        record = {"epoch": epoch + 1, "loss": float(total_loss) / max(1, seen_samples),
                  "lr": sched.get_last_lr()[0], "train_seconds": time.time() - t0, **made_on}
        valid = evaluate(model, batcher, "valid", cfg, masked)  # every rank its share of users
        if rank == 0:
            record.update({f"valid_{k}": v for k, v in valid.items()})
            state["history"].append(record)
            score = valid["ndcg@10"]
            state["epoch"] = epoch + 1
            if epoch < final_stage:  # an earlier training stage: never evaluated, never stops
                pass
            elif score > state["best"]:
                state["best"], state["bad"] = score, 0
                save_checkpoint(run.path / "best.pt", checkpoint_state(
                    model, opt, sched, state, cfg, ds.fingerprint, sid_fp))
            else:
                state["bad"] += 1
            save_checkpoint(run.path / "last.pt", checkpoint_state(
                model, opt, sched, state, cfg, ds.fingerprint, sid_fp))
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

    if world > 1:
        dist.barrier()  # rank 0 has written best.pt
    if rank == 0 and progress:
        print(_stop_reason(state, cfg), flush=True)
    final = load_checkpoint(path / "best.pt", cfg, device, ds.fingerprint, sid_check)
    model.load_state_dict(final["model"])
    metrics, ranks = final_metrics(model, batcher, cfg, ds)  # every rank its share of users
    if rank == 0:
        best_epoch = final["state"]["epoch"] - final["state"]["bad"]
        save_npz(run.path / "ranks.npz", **ranks)
        run.log_metrics(**metrics, history=state["history"], epochs_run=state["epoch"],
                        train_seconds=state["seconds"], world_size=world,
                        train_targets=state["targets"],
                        parameters=sum(p.numel() for p in model.parameters()),
                        device=str(device), machine=_made_on(state["history"], "machine", made_on),
                        train_precision=_made_on(state["history"], "precision", made_on),
                        best_epoch=best_epoch, **({"best_stage": model.stage_at(best_epoch - 1)}
                                                  if isinstance(model, StagedTraining) else {}))
    if world > 1:
        del net  # DDP: collected below with its reducer, not at interpreter exit
        _leave_process_group()
    return run


def _leave_process_group() -> None:
    """End a distributed run's process group while the interpreter is whole. DDP training
    leaves gloo state in reference cycles; freed only at interpreter exit, it aborts the process
    after every file is written ("terminate called without an active exception"): 13 of 400
    two-process gloo launches on torch 2.13 with a bare barrier and destroy_process_group, none
    of 450 with the cycles collected first (bench/ddp_teardown.py)."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def _made_on(history: list[dict], key: str, now: dict[str, str]) -> str:
    """The run's processors (or precisions) in the order its epochs met them, joined by " + "
    when a resumed run trained on more than one (epochs recorded before machines were: none)."""
    seen = dict.fromkeys(h[key] for h in history if key in h) or {now[key]: None}
    return " + ".join(seen)


class Diverged(GlasskitError):
    """The training loss became NaN or infinite: nothing of that epoch is saved."""


def _say_loss_weights(model: WeighsLoss, batcher, split: str, cfg: Config, run: Run) -> None:
    """Print once per run, and record, what the loss's normalisation gives each of its terms,
    measured on the first ``train.batch_size`` training samples."""
    n = min(len(batcher.ds.splits[split]), cfg.train.batch_size)
    with torch.no_grad():
        weights = model.loss_weights(batcher.batch(split, np.arange(n)))
    if weights is None:
        return
    run.log_metrics(loss_weights=weights)
    print(f"{cfg.model.name} loss weights (first {n} training samples): "
          + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()), flush=True)


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


