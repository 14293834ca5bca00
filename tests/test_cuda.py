"""What glasskit does only on CUDA: the branches testable on a CPU run everywhere; the tests
marked ``cuda`` need a device (bench/gpu_check.py runs them on the GPU machine)."""

from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

import glasskit as gk
from glasskit.batching import Batcher
from glasskit.device import resolve_device
from glasskit.errors import ConfigError
from glasskit.pipeline import load, model_and_batcher
from glasskit.train import fused_adamw, make_optimizer, rank_device, train_precision, train_step

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSKIT_CACHE", str(tmp_path / "cache"))


def test_batches_go_to_a_gpu_through_pinned_memory_without_blocking():
    tensor = mock.MagicMock()
    cuda = torch.device("cuda")
    Batcher._to(SimpleNamespace(device=cuda), tensor)
    tensor.pin_memory.assert_called_once_with()
    tensor.pin_memory.return_value.to.assert_called_once_with(cuda, non_blocking=True)
    tensor = mock.MagicMock()
    Batcher._to(SimpleNamespace(device=torch.device("cpu")), tensor)
    tensor.pin_memory.assert_not_called()  # a CPU batch is never pinned
    tensor.to.assert_called_once_with(torch.device("cpu"))


def test_fused_adamw_on_cuda_only_and_one_gpu_per_rank():
    assert fused_adamw(torch.device("cuda", 1)) is True
    assert fused_adamw(torch.device("cpu")) is None
    net = torch.nn.Linear(2, 2)
    opt = make_optimizer(net, gk.profile("smoke"))
    assert not opt.defaults["fused"]
    assert rank_device(torch.device("cuda"), 3) == torch.device("cuda", 3)
    assert rank_device(torch.device("cpu"), 3) == torch.device("cpu")


def test_device_choice_and_precision():
    assert train_precision(torch.device("cuda"), "auto") == "bf16"
    assert train_precision(torch.device("cuda"), "off") == "fp32"
    if not CUDA:
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="device 'cuda' requested but CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.cuda
@needs_cuda
def test_a_bf16_training_step_on_cuda_is_finite_with_fused_adamw():
    cfg = gk.configure("smoke", model="glass", variant="sidtier+shs", **{"train.amp": "bf16"})
    ds, table = load(cfg)
    device = torch.device("cuda")
    model, batcher = model_and_batcher(cfg, ds, table, device)
    batch = batcher.batch("train", np.arange(64))
    assert all(t.is_cuda for t in batch.values() if isinstance(t, torch.Tensor))
    opt = make_optimizer(model, cfg)
    assert opt.defaults["fused"] is True
    loss = train_step(model, batch, opt, cfg, device)
    assert torch.isfinite(loss) and loss.device.type == "cuda"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("model", ["tiger", "sasrec"])
def test_cuda_evaluation_ranks_as_the_cpu_does(model):
    """The same weights rank the test users on the GPU in fp32 as on the CPU (the top-20 lists
    agree for nearly every user; float reductions differ in their last bits)."""
    from glasskit.ranking import rank

    cfg = gk.configure("smoke", model=model)
    ds, table = load(cfg)
    torch.manual_seed(0)
    lists = {}
    state = None
    for dev in ("cpu", "cuda"):
        net, batcher = model_and_batcher(cfg, ds, table, torch.device(dev))
        if state is None:
            state = net.state_dict()
        net.load_state_dict(state)
        net.eval()
        idx = np.arange(len(ds.splits["test"]))
        kind = "sid" if model == "tiger" else "id"
        index = table.index(batcher.device) if kind == "sid" else None
        lists[dev] = rank(net, kind, batcher.batch("test", idx), index, 20, 20).items.cpu().numpy()
    agree = (lists["cpu"] == lists["cuda"]).all(1).mean()
    assert agree >= 0.9, agree


@pytest.mark.slow
def test_gpu_check_runs_its_code_path_on_a_cpu_with_the_prepared_caches_alone(tmp_path):
    """bench/gpu_check.py end to end on the smoke profile, on the CPU, in a process where
    scikit-learn, scipy and plotly cannot be imported (the GPU machine has none of them): with
    the caches prepared beforehand, training, FLOP counting and evaluation need only what
    bench/gpu_prep.py carries."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    for row in ("tiger", "glass:sidtier+shs"):
        model, _, variant = row.partition(":")
        load(gk.configure("smoke", model=model, variant=variant or None))
    code = ("import runpy, sys\n"
            "for m in ('sklearn', 'scipy', 'plotly'): sys.modules[m] = None\n"
            "sys.argv = ['gpu_check.py', '--device', 'cpu', '--profile', 'smoke', '--rows',\n"
            "            'tiger,glass:sidtier+shs', '--no-tests', '--out', sys.argv[1]]\n"
            "runpy.run_path('bench/gpu_check.py', run_name='__main__')\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [r["row"] for r in result["rows"]] == ["tiger", "glass:sidtier+shs"]
    for r in result["rows"]:
        assert r["finite_loss"] and r["samples_per_s"] > 0 and r["step_flop"] > 1e6
        assert 0 <= r["ndcg@10"] <= r["hit@10"] <= 1
    assert result["inference_ms"]["tiger"] > 0 and result["peak_tflops"] > 0
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| glass:sidtier+shs | fp32 |" in table and "GLASS/TIGER" in table


def test_glass_trains_under_autocast_where_index_copy_does_not_promote(monkeypatch):
    """CUDA's autocast leaves index_copy alone, so GLASS's eq. 13 mix (fp32, from the fp32 BOS
    switch) into a bf16 Z_short raised there (the first GPU check); the CPU's autocast promotes.
    With index_copy as strict as CUDA's, a bf16 training step of GLASS runs on the CPU too."""
    strict = torch.Tensor.index_copy

    def index_copy(self, dim, index, source):
        if self.dtype != source.dtype:
            raise RuntimeError(f"index_copy_(): self {self.dtype} and source {source.dtype}")
        return strict(self, dim, index, source)

    monkeypatch.setattr(torch.Tensor, "index_copy", index_copy)
    cfg = gk.configure("smoke", model="glass", variant="sidtier+shs", **{"train.amp": "bf16"})
    ds, table = load(cfg)
    device = torch.device("cpu")
    model, batcher = model_and_batcher(cfg, ds, table, device)
    batch = batcher.batch("train", np.arange(64))
    loss = train_step(model, batch, make_optimizer(model, cfg), cfg, device)
    assert torch.isfinite(loss)
