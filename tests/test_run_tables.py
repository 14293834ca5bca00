import numpy as np
import pytest

import glasskit as gk
from glasskit.analysis.run_tables import markdown, seed_table
from glasskit.cli import main
from glasskit.errors import GlasskitError
from glasskit.profiles import apply_variant
from glasskit.runs import create_run


def _run(root, cfg, hit10, seed):
    cfg = cfg.replace(seed=seed)
    run = create_run(cfg, cfg.model.name, name=f"{cfg.model.variant}-{cfg.hash()[:6]}", root=root)
    test = {"hit@5": hit10 / 2, "hit@10": hit10, "ndcg@10": hit10 / 3, "hit@20": hit10 * 1.5,
            "acc": [0.5, 0.2, 0.1]}
    run.log_metrics(primary="masked", test={"masked": test}, train_seconds=10.0 * (seed + 1))
    return run


def test_seed_table_pools_seeds_per_row_and_never_across_configs(tmp_path, capsys):
    base = gk.profile("smoke")
    glass = apply_variant(base.replace(**{"model.name": "glass"}), "sidtier+shs")
    runs = [_run(tmp_path, base, 0.1, 0), _run(tmp_path, base, 0.3, 1),
            _run(tmp_path, glass, 0.2, 0), _run(tmp_path, glass, 0.4, 1), _run(tmp_path, glass, 0.9, 2),
            _run(tmp_path, glass.replace(**{"model.retrieve_max": 8}), 0.5, 0)]
    t = seed_table(runs)
    rows = list(t.index.get_level_values("row"))
    assert rows[0] == "tiger" and len(rows) == 3
    assert rows[1:] == ["sidtier+shs", "sidtier+shs [model.retrieve_max=8]"]  # named, not hashed
    tiger = t.loc[("synthetic", "tiger")]
    assert tiger["seeds"] == 2 and tiger["hit@10"] == pytest.approx(0.2)
    assert tiger["hit@10 std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert tiger["train s"] == pytest.approx(15.0)
    three = t[t["seeds"] == 3].iloc[0]
    assert three["hit@10"] == pytest.approx(0.5) and three["ndcg@10"] == pytest.approx(0.5 / 3)
    single = t[t["seeds"] == 1].iloc[0]
    assert np.isnan(single["hit@10 std"])
    text = markdown(t)
    assert "0.2000 ± 0.1414" in text and text.count("\n") == 4

    unfinished = create_run(base.replace(seed=5), "tiger", root=tmp_path)
    assert main(["compare", *[str(r.path) for r in runs[:2]], str(unfinished.path)]) == 2
    assert main(["compare", "--partial", *[str(r.path) for r in runs[:2]], str(unfinished.path)]) == 0
    assert "| synthetic | tiger | masked | 2 |" in capsys.readouterr().out


def test_seed_table_refuses_unfinished_and_duplicate_runs(tmp_path):
    cfg = gk.profile("smoke")
    unfinished = create_run(cfg, "tiger", root=tmp_path)
    with pytest.raises(GlasskitError, match="no 'test' metrics"):
        seed_table([unfinished])
    with pytest.raises(GlasskitError, match="no finished runs"):
        seed_table([unfinished], skip_unfinished=True)
    a = _run(tmp_path / "a", cfg, 0.1, 0)
    b = _run(tmp_path / "b", cfg, 0.2, 0)
    with pytest.raises(GlasskitError, match="same config and seed"):
        seed_table([a, b])
