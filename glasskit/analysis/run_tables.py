"""Tables and figures read from the run store (notebooks 03 onwards)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from glasskit.config import Config, model_names
from glasskit.errors import GlasskitError
from glasskit.profiles import apply_preset, apply_variant, profile
from glasskit.runs import Run, flatten

if TYPE_CHECKING:
    import plotly.graph_objects as go


def training_curves(run: Run) -> go.Figure:
    """A run's training loss and validation metrics per epoch (plotly, imported here: the
    tables need no plotting library, e.g. ``glasskit sweep`` on a GPU machine without one)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    h = pd.DataFrame(run.metrics()["history"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation"))
    fig.add_trace(go.Scatter(x=h["epoch"], y=h["loss"], name="loss"), row=1, col=1)
    for key in ("valid_ndcg@10", "valid_hit@10"):
        fig.add_trace(go.Scatter(x=h["epoch"], y=h[key], name=key.removeprefix("valid_")),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return fig.update_layout(title=f"{run.info['name']}")


def ranking_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Hit@K and NDCG@K, masked and unmasked (the primary one first)."""
    primary = metrics["primary"]
    order = [primary, "unmasked" if primary == "masked" else "masked"]
    rows = {}
    for ranking in order:
        m = metrics[split][ranking]
        label = f"{ranking}{' (primary)' if ranking == primary else ''}"
        rows[label] = {k: v for k, v in m.items() if "@" in k}
    df = pd.DataFrame(rows).T
    cols = sorted(df.columns, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    return df[cols].round(4)


def level_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Per SID level: teacher-forced accuracy, inference precision, CRP, beam hit, Hrecall
    (empty for ID models, which have no levels)."""
    m = metrics[split][metrics["primary"]]
    if "acc" not in m:
        return pd.DataFrame(columns=["acc_i (teacher forced)", "P_i (greedy)", "CRP_d", "|E_d|",
                                     "prefix hit in beam | E_d", "Hrecall@level"])
    n = len(m["acc"])
    cols = {"acc_i (teacher forced)": "acc", "P_i (greedy)": "precision", "CRP_d": "crp",
            "|E_d|": "crp_eligible", "prefix hit in beam | E_d": "crp_hit", "Hrecall@level": "hrecall"}
    # an undefined value (None in the metrics: a level no sample reached) shows as NaN here
    return pd.DataFrame({name: pd.to_numeric(pd.Series(m[key], dtype=object)) for name, key in cols.items()}
                        ).set_axis(pd.Index(np.arange(1, n + 1), name="level")).round(4)


def base_label(model: str, variant: str | None) -> str:
    """A row's name: the variant (an ablation row) or the model. A variant named like another
    model says whose row it is: GLASS's ``tiger`` row is ``tiger (glass, switches off)``."""
    if variant is None:
        return model
    return f"{variant} ({model}, switches off)" if variant in model_names() else variant


def row_label(run: Run) -> str:
    """The row a run belongs to (:func:`base_label`), followed by every setting that departs
    from its profile's, e.g. ``sidtier+shs [model.retrieve_max=64]``."""
    cfg = run.config
    base = base_label(cfg.model.name, cfg.model.variant)
    if cfg.preset is not None:
        base += f" ({cfg.preset} preset)"
    diff = config_diff(cfg)
    return f"{base} [{', '.join(diff)}]" if diff else base


def row_name(label: str) -> str:
    """A row label without its settings and preset (``sasrec (paper preset) [seed...]`` ->
    ``sasrec``): the name the row order and ``--against`` go by."""
    base = label.split(" [")[0]
    if base.endswith(" preset)"):
        base = base[:base.rindex(" (")]
    return base


def config_diff(cfg: Config) -> list[str]:
    """``key=value`` for every setting of ``cfg`` that differs from its profile (with the same
    dataset, model, preset and variant), seed excluded."""
    ref = profile(cfg.profile, **{"data.dataset": cfg.data.dataset, "data.data_dir": cfg.data.data_dir,
                                  "model.name": cfg.model.name})
    if cfg.preset is not None:
        ref = apply_preset(ref, cfg.preset)
    if cfg.model.variant is not None:
        ref = apply_variant(ref, cfg.model.variant)
    want, have = flatten(ref.to_dict()), flatten(cfg.to_dict())
    return [f"{k.replace('/', '.')}={have[k]}" for k in sorted(have)
            if k != "seed" and have[k] != want.get(k)]


def _row_order(label: str) -> int:
    """Models in registry order, each followed by its ablation rows."""
    from glasskit.models import REGISTRY

    order = []
    for name, entry in REGISTRY.items():
        order += [name, *(base_label(name, v) for v in entry.variants)]
    base = row_name(label)
    return order.index(base) if base in order else len(order)


def group_runs(runs: list[str | Run], split: str = "test", skip_unfinished: bool = False
               ) -> dict[tuple[str, str], list[dict]]:
    """(dataset, row label) -> the metrics.json of each of its seeds, in seed order (each with
    ``seed`` added). Runs whose configs differ in anything but the seed are never pooled: a
    second config under the same label gets its config hash appended. An unfinished run (no
    ``split`` metrics) is an error unless ``skip_unfinished``."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        run = r if isinstance(r, Run) else Run(r)
        m = run.metrics()
        if split not in m:
            if skip_unfinished:
                continue
            raise GlasskitError(f"{run.path}: no {split!r} metrics (unfinished run?)")
        cfg = run.config
        dataset = cfg.data.dataset + (f"/{cfg.data.name}" if cfg.data.name else "")
        key = (dataset, row_label(run), cfg.replace(seed=0).hash())
        groups.setdefault(key, []).append({**m, "seed": cfg.seed, "run": str(run.path)})
    labels = [(d, lab) for d, lab, _ in groups]
    out = {}
    for (dataset, label, h), members in groups.items():
        seeds = sorted(m["seed"] for m in members)
        if len(seeds) != len(set(seeds)):
            raise GlasskitError(f"{dataset}/{label}: two runs with the same config and seed {seeds}")
        name = label if labels.count((dataset, label)) == 1 else f"{label} [{h[:6]}]"
        out[(dataset, name)] = sorted(members, key=lambda m: m["seed"])
    return out


def seed_table(runs: list[str | Run], split: str = "test",
               keys: tuple[str, ...] = ("hit@5", "hit@10", "ndcg@10", "hit@20"),
               skip_unfinished: bool = False, ranking: str = "primary") -> pd.DataFrame:
    """Mean ± sample std over seeds, one row per (dataset, ablation row, config without seed)
    (see :func:`group_runs`); ``ranking`` is primary, masked or unmasked. Incomplete runs are
    an error, so a table never silently averages fewer seeds than were launched, unless
    ``skip_unfinished`` (the ``seeds`` column then says how many were pooled)."""
    if ranking not in ("primary", "masked", "unmasked"):
        raise GlasskitError(f"ranking must be primary, masked or unmasked, got {ranking!r}")
    rows = []
    for (dataset, label), members in group_runs(runs, split, skip_unfinished).items():
        ms = [m[split][m["primary"] if ranking == "primary" else ranking] for m in members]
        row = {"dataset": dataset, "row": label, "seeds": len(ms),
               "ranking": members[0]["primary"] if ranking == "primary" else ranking}
        for k in keys:
            if any(k not in x or not isinstance(x[k], int | float) for x in ms):
                have = sorted(n for n, v in ms[0].items() if isinstance(v, int | float))
                raise GlasskitError(f"{dataset}/{label}: no metric {k!r} in the {split} metrics; "
                                    f"choose --keys among {', '.join(have)}")
            v = np.array([x[k] for x in ms])
            row[k] = v.mean()
            row[f"{k} std"] = v.std(ddof=1) if len(v) > 1 else np.nan
        acc = [x["acc"][0] for x in ms if x.get("acc")]
        row["acc_1"] = np.mean(acc) if acc else np.nan
        row.update(budget(members))
        rows.append(row)
    if not rows:
        raise GlasskitError("no finished runs to tabulate")
    rows.sort(key=lambda r: (r["dataset"], _row_order(r["row"]), r["row"]))
    return pd.DataFrame(rows).set_index(["dataset", "row"])


BUDGET = ("epochs", "best epoch", "train targets", "train s", "device", "parameters")


def budget(members: list[dict]) -> dict:
    """What a row's training cost, over its seeds: epochs run and the best (evaluated) epoch
    (mean), target positions predicted in training (mean; unknown for runs made before they
    were counted), training wall time (mean seconds), device(s) and parameter count."""
    def mean(key: str) -> float:
        values = [m[key] for m in members if m.get(key) is not None]
        return float(np.mean(values)) if len(values) == len(members) else np.nan

    return {"epochs": mean("epochs_run"), "best epoch": mean("best_epoch"),
            "train targets": mean("train_targets"), "train s": mean("train_seconds"),
            "device": ",".join(sorted({str(m.get("device", "?")) for m in members})),
            "parameters": mean("parameters")}


def count_label(x: float) -> str:
    """A count for a table: 17.2k, 1.25M; ? when unknown."""
    if np.isnan(x):
        return "?"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def budget_cells(r) -> list[str]:
    """A table row's BUDGET columns as text."""
    return ["?" if np.isnan(r["epochs"]) else f"{r['epochs']:.0f}",
            "?" if np.isnan(r["best epoch"]) else f"{r['best epoch']:.0f}",
            count_label(r["train targets"]), "?" if np.isnan(r["train s"]) else f"{r['train s']:.0f}",
            r["device"], count_label(r["parameters"])]


def effect_cell(effect: float, low: float, high: float, p_holm: float, seeds: int, agree: int,
                digits: int = 4) -> str:
    """A paired test as text: the effect with its 95% interval, * when Holm p < 0.05, and over
    several seeds how many gave the effect's sign, e.g. ``+0.0329 [+0.0181, +0.0481]* (3/3
    seeds)``."""
    mark = "*" if p_holm < 0.05 else ""
    over = f" ({agree}/{seeds} seeds)" if seeds > 1 else ""
    return f"{effect:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}{over}"


def markdown(table: pd.DataFrame, keys: tuple[str, ...] = ("hit@5", "hit@10", "ndcg@10", "hit@20"),
             digits: int = 4, tests: pd.DataFrame | None = None) -> str:
    """A seed_table as a Markdown table with 'mean ± std' cells, the ranking it read and each
    row's budget; with ``tests`` (a :func:`significance_table`), each row's effect against the
    reference with its 95% interval and Holm-adjusted p, significant ones marked *, and over
    several seeds how many of them gave the effect's sign."""
    head = ["dataset", "row", "ranking", "seeds", *keys, "acc_1", *BUDGET]
    if tests is not None:
        against = tests.attrs["against"]
        head += [f"Δ{tests.attrs['metric']} vs {against} [95% CI]", "p (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dataset, row), r in table.iterrows():
        cells = [dataset, row, r["ranking"], str(int(r["seeds"]))]
        for k in keys:
            sd = r[f"{k} std"]
            cells.append(f"{r[k]:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}"))
        cells += ["" if np.isnan(r["acc_1"]) else f"{r['acc_1']:.3f}",
                  *budget_cells(r)]
        if tests is not None:
            t = tests.loc[(dataset, row)] if (dataset, row) in tests.index else None
            is_ref = tests.attrs["reference"].get(dataset) == row
            if t is None or is_ref:
                cells += ["(reference)" if is_ref else "", ""]
            else:
                cells += [effect_cell(t["effect"], t["ci low"], t["ci high"], t["p holm"],
                                      t["seeds"], t["seeds agree"], digits), f"{t['p holm']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def significance_table(runs: list[str | Run], against: str, metric: str = "ndcg@10",
                       split: str = "test", ranking: str = "primary",
                       skip_unfinished: bool = False) -> pd.DataFrame:
    """Each row against the reference row ``against`` of its dataset, on the same users: per
    seed a Wilcoxon signed-rank test over users of the per-user ``metric``, combined over the
    seeds both rows have (Stouffer), Holm-adjusted over the rows of a dataset; the effect is
    the mean per-user difference (row - reference) with a paired bootstrap 95% interval (see
    glasskit.analysis.significance). Reads each run's ranks.npz: nothing is evaluated again."""
    from glasskit.analysis.significance import holm, paired_test

    groups = group_runs(runs, split, skip_unfinished)
    rows, reference = [], {}
    for dataset in dict.fromkeys(d for d, _ in groups):
        labels = [lab for d, lab in groups if d == dataset]
        named = ([lab for lab in labels if lab == against]
                 or [lab for lab in labels if against in (lab.split(" [")[0], row_name(lab))])
        if len(named) != 1:
            raise GlasskitError(f"--against {against!r}: {'no such row' if not named else 'ambiguous'} "
                                f"on {dataset}; the rows are {', '.join(labels)}")
        ref_label = reference[dataset] = named[0]
        ref = _per_user(groups[(dataset, ref_label)], split, ranking, metric)
        found = []
        for label in labels:
            if label == ref_label:
                continue
            mine = _per_user(groups[(dataset, label)], split, ranking, metric)
            for seed in set(mine) & set(ref):
                if not np.array_equal(mine[seed][0], ref[seed][0]):
                    raise GlasskitError(f"{dataset}: {label!r} and {ref_label!r} ranked different users "
                                        f"(seed {seed}): their data differ, so they cannot be paired")
            res = paired_test({s: v for s, (_, v) in mine.items()}, {s: v for s, (_, v) in ref.items()})
            found.append({"dataset": dataset, "row": label, "effect": res.effect, "ci low": res.ci[0],
                          "ci high": res.ci[1], "z": res.z, "p": res.p, "seeds": len(res.seeds),
                          "seeds agree": res.agree, "users": res.users})
        for r, p in zip(found, holm([r["p"] for r in found])):
            r["p holm"] = p
            r["significant"] = p < 0.05
        rows += found
    table = pd.DataFrame(rows, columns=["dataset", "row", "effect", "ci low", "ci high", "z", "p",
                                        "seeds", "seeds agree", "users", "p holm", "significant"])
    table = table.set_index(["dataset", "row"])
    table.attrs.update(against=against, metric=metric, reference=reference)
    return table


def _per_user(members: list[dict], split: str, ranking: str, metric: str
              ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (users, per-user metric) of a row's runs, from their ranks.npz."""
    from glasskit.analysis.significance import per_user_metric

    out = {}
    for m in members:
        ranks = Run(m["run"]).ranks()
        r = m["primary"] if ranking == "primary" else ranking
        out[m["seed"]] = (ranks[f"{split}_users"], per_user_metric(ranks[f"{split}_{r}"], metric))
    return out
