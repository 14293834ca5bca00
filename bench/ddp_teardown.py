"""How often a two-process gloo run aborts at exit, ending its process group as glasskit's
trainer does (``glasskit.train._leave_process_group``) against a bare barrier and
``destroy_process_group``, side by side: the arms alternate launch by launch, so load on the
machine falls on both alike.

    .venv/bin/python bench/ddp_teardown.py --runs 150          # about 27 minutes on 2 cores

Each launch is ``torchrun --standalone --nproc_per_node 2`` on this file: a small DDP model
trained 30 steps on CPU, one all_gather_object, then the arm's ending. On torch 2.13 a bare
ending aborts a few launches in a hundred after the last line of Python has run ("terminate
called without an active exception"); a launch counts as failed on any non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ARMS = ("bare", "glasskit")


def worker(arm: str) -> None:
    """One rank of a launch."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(500, 32), torch.nn.Linear(32, 500))
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters())
    for _ in range(30):
        x = torch.randint(0, 500, (64,))
        loss = torch.nn.functional.cross_entropy(net(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"rank": dist.get_rank()})
    dist.barrier()
    if arm == "glasskit":
        from glasskit.train import _leave_process_group

        del net
        _leave_process_group()
    else:
        dist.barrier()
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=150, help="launches per arm")
    args = ap.parse_args()
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLASSKIT_TEARDOWN_ARM": ""}
    failed = {arm: 0 for arm in ARMS}
    example: dict[str, str] = {}
    for i in range(args.runs):
        for arm in ARMS:
            env["GLASSKIT_TEARDOWN_ARM"] = arm
            out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", __file__],
                                 capture_output=True, text=True, env=env, timeout=300)
            if out.returncode:
                failed[arm] += 1
                example.setdefault(arm, out.stderr.strip().splitlines()[0])
        if (i + 1) % 25 == 0:
            print(f"{i + 1} launches per arm: " + ", ".join(f"{a} {failed[a]} failed" for a in ARMS),
                  flush=True)
    print("\n| ending | launches | failed | first line of a failure |\n|---|---|---|---|")
    for arm in ARMS:
        print(f"| {arm} | {args.runs} | {failed[arm]} | {example.get(arm, '')} |")


if __name__ == "__main__":
    if arm := os.environ.get("GLASSKIT_TEARDOWN_ARM"):
        worker(arm)
    else:
        main()
