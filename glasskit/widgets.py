"""The ablation dashboard (notebook 06): over the run store, choose a dataset, a metric, the
ranking (history-masked or unmasked) and ablation rows; see mean ± std over seeds with each
row's training budget as a table, each row tested against a reference row (paired over users,
Holm-corrected: glasskit.analysis.run_tables.significance_table), and a bar chart with error
bars; train the missing (row, seed) pairs in the background.

Training runs ``python -m glasskit train`` in a subprocess per pair, one at a time, fed by a
background thread, so the kernel stays responsive, a cancel stops at once (the run folder
stays resumable) and each finished run refreshes the view. Headless (papermill, ``live=False``)
the dashboard never draws into its Output widget (nbclient can block on output routed to
widgets, jupyter/nbclient#312) and the notebook renders :meth:`AblationDashboard.static`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from glasskit.analysis.run_tables import (
    BUDGET,
    budget_cells,
    effect_cell,
    row_label,
    seed_table,
    significance_table,
)
from glasskit.config import Config
from glasskit.errors import GlasskitError
from glasskit.profiles import configure
from glasskit.runs import Run, results_root, runs_root

NONE = "(none)"  # no reference row: no significance column
METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "hit@20", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@20")


@dataclass(frozen=True)
class Row:
    """An ablation row the dashboard can train: a model and, for GLASS, a variant."""

    label: str
    model: str
    variant: str | None = None

    def config(self, profile: str, dataset: str | None, data_dir: str | None, seed: int) -> Config:
        return configure(profile, dataset, data_dir, seed, model=self.model, variant=self.variant)

    def argv(self, profile: str, dataset: str | None, data_dir: str | None, seed: int) -> list[str]:
        args = ["--model", self.model, "--profile", profile, "--seed", str(seed)]
        if self.variant:
            args += ["--variant", self.variant]
        if dataset:
            args += ["--dataset", dataset]
        if data_dir:
            args += ["--data-dir", data_dir]
        return args


def default_rows() -> list[Row]:
    """Every registered model and each of its ablation rows (labels as ``compare`` prints)."""
    from glasskit.analysis.run_tables import base_label
    from glasskit.models import REGISTRY

    rows = []
    for name, entry in REGISTRY.items():
        if name != "glass":  # GLASS is its rows
            rows.append(Row(name, name))
        rows += [Row(base_label(name, v), name, v) for v in entry.variants]
    return rows


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def finished_runs(root: Path) -> list[Run]:
    """Runs in ``root`` that have test metrics (unreadable folders are skipped)."""
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.name.startswith(".") or not (p / "run.json").is_file():
            continue
        try:
            run = Run(p)
            if "test" in run.metrics():
                out.append(run)
        except GlasskitError:
            continue
    return out


def default_profile(*roots: Path | None) -> str:
    """``converge`` (the comparison's shared budget) when the stores hold finished runs of it,
    else ``quick`` (the demonstration budget)."""
    return ("converge" if any(r.info.get("profile") == "converge" for root in roots if root
                              for r in finished_runs(root)) else "quick")


class AblationDashboard:
    """Widgets over a run store. ``rows`` are what the train button can launch; the table also
    shows every other finished row of the chosen dataset found in the store. ``profile`` None:
    the comparison's budget (``converge``) once the store holds finished runs of it, else
    ``quick``. With no ``root``, the run store (:func:`runs_root`, where the train button trains)
    is read together with the committed comparison (:func:`results_root`)."""

    def __init__(self, root: str | Path | None = None, profile: str | None = None,
                 dataset: str | None = None, data_dir: str | None = None,
                 seeds: tuple[int, ...] = (0, 1, 2), rows: list[Row] | None = None,
                 default_rows: tuple[str, ...] = ("tiger", "sidtier+shs", "sidtier+shs+cr"),
                 against: str | None = "tiger", live: bool = True):
        import ipywidgets as w

        self.root = Path(root) if root is not None else runs_root()
        self.results = None if root is not None else results_root()
        self.live = live
        profile = profile or default_profile(self.root, self.results)
        self.profile, self.data_dir, self.seeds = profile, data_dir, tuple(seeds)
        self.catalog = {r.label: r for r in (rows or globals()["default_rows"]())}
        self.dataset_default = configure(profile, dataset).data.dataset
        self.runs: list[Run] = []
        self.table = pd.DataFrame()
        self.figure = go.Figure()
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None

        self.dataset = w.Dropdown(description="dataset", options=[self.dataset_default])
        self.metric = w.Dropdown(description="metric", options=list(METRICS), value="ndcg@10")
        self.ranking = w.ToggleButtons(description="ranking", options=["masked", "unmasked"])
        self.rows = w.SelectMultiple(description="rows", rows=8, layout=w.Layout(width="420px"))
        self.against = w.Dropdown(description="against", options=[NONE])
        self.against_default = against
        self.table_html = w.HTML()
        self.chart = w.Output()
        self.train_button = w.Button(description="train missing runs", icon="play")
        self.cancel_button = w.Button(description="cancel", icon="stop", disabled=True)
        self.progress = w.IntProgress(min=0, max=1, value=0, description="idle")
        self.status = w.HTML()
        self.train_button.on_click(lambda _: self.train_missing())
        self.cancel_button.on_click(lambda _: self.cancel())
        for control in (self.dataset, self.metric, self.ranking, self.rows, self.against):
            control.observe(lambda _: self.render(), names="value")
        self.refresh(default_rows)

    # -- reading the store ---------------------------------------------------------------------
    def refresh(self, select: tuple[str, ...] | None = None) -> None:
        """Re-read the run store (this profile's runs) and update the choices and the view."""
        found = {r.path.name: r for root in (self.results, self.root) if root
                 for r in finished_runs(root)}  # a run in both: the run store's
        self.runs = [r for _, r in sorted(found.items()) if r.info.get("profile") == self.profile]
        datasets = sorted({r.info.get("dataset") for r in self.runs} | {self.dataset_default})
        keep = self.dataset.value if self.dataset.value in datasets else self.dataset_default
        self.dataset.options = datasets
        self.dataset.value = keep
        labels = list(self.catalog)
        labels += sorted({row_label(r) for r in self.runs} - set(labels))
        chosen = select if select is not None else self.rows.value
        self.rows.options = labels
        self.rows.value = tuple(label for label in chosen if label in labels)
        keep = self.against.value if self.against.value != NONE else self.against_default
        self.against.options = [NONE, *labels]
        self.against.value = keep if keep in labels else NONE
        self.render()

    def selected_runs(self) -> list[Run]:
        wanted = set(self.rows.value)
        return [r for r in self.runs
                if r.info.get("dataset") == self.dataset.value and row_label(r) in wanted]

    def missing(self) -> list[tuple[Row, int]]:
        """(row, seed) pairs of the selected trainable rows without a finished run."""
        have = {(row_label(r), r.info.get("seed")) for r in self.runs
                if r.info.get("dataset") == self.dataset.value}
        return [(self.catalog[label], s) for label in self.rows.value if label in self.catalog
                for s in self.seeds if (label, s) not in have]

    # -- the view ------------------------------------------------------------------------------
    def render(self) -> None:
        runs = self.selected_runs()
        metric, ranking = self.metric.value, self.ranking.value
        columns = ["row", "seeds", metric, f"{metric} std", *BUDGET]
        t = (seed_table(runs, keys=(metric,), ranking=ranking).reset_index()[columns] if runs
             else pd.DataFrame(columns=columns))
        against, tests = self.against.value, None
        note = ""
        if runs and against != NONE and against in set(t["row"]):
            try:
                tests = significance_table(runs, against, metric, ranking=ranking).reset_index()
            except GlasskitError as e:  # e.g. runs finished before per-user results were kept
                note += f"<p>no test against {against}: {e}</p>"
        if tests is not None:
            t = t.merge(tests[["row", "effect", "ci low", "ci high", "p holm", "seeds", "seeds agree"]]
                        .rename(columns={"seeds": "paired seeds"}), on="row", how="left")
        self.table = t
        cells = t.assign(**{f"{metric} (mean ± std)": [
            f"{m:.4f}" + ("" if np.isnan(s) else f" ± {s:.4f}")
            for m, s in zip(t[metric], t[f"{metric} std"])]})
        if len(t):
            cells[list(BUDGET)] = [budget_cells(r) for _, r in t.iterrows()]
        shown = ["row", "seeds", f"{metric} (mean ± std)", *BUDGET]
        if tests is not None:
            cells[f"Δ vs {against} [95% CI]"] = [
                "reference" if r["row"] == against else "" if np.isnan(r["effect"]) else
                effect_cell(r["effect"], r["ci low"], r["ci high"], r["p holm"],
                            int(r["paired seeds"]), int(r["seeds agree"]))
                for _, r in t.iterrows()]
            cells["p (Holm)"] = ["" if np.isnan(p) else f"{p:.3g}" for p in t["p holm"]]
            shown += [f"Δ vs {against} [95% CI]", "p (Holm)"]
        cells = cells[shown]
        missing = len(self.missing())
        note += f"<p>{missing} (row, seed) pair(s) not trained yet</p>" if missing else ""
        self.table_html.value = (f"<b>{self.dataset.value}, test, {ranking}</b>"
                                 + cells.to_html(index=False, classes="glasskit-table") + note)
        self.figure = go.Figure(go.Bar(x=t["row"], y=t[metric],
                                       error_y={"type": "data", "array": t[f"{metric} std"].fillna(0)}))
        self.figure.update_layout(title=f"{metric} ({ranking}), mean ± std over seeds",
                                  yaxis_title=metric, height=380)
        if self.live and _in_kernel():  # outside a kernel plotly would open a browser
            from IPython.display import display

            self.chart.clear_output(wait=True)
            with self.chart:
                display(self.figure)

    def widget(self):
        import ipywidgets as w

        controls = w.VBox([self.dataset, self.metric, self.ranking, self.rows, self.against])
        training = w.HBox([self.train_button, self.cancel_button, self.progress])
        return w.VBox([w.HBox([controls, self.table_html]), self.chart, training, self.status])

    def static(self) -> tuple[pd.DataFrame, go.Figure]:
        """The current comparison as a table and a figure (for headless reports)."""
        return self.table, self.figure

    # -- training in the background --------------------------------------------------------------
    def train_missing(self, wait: bool = False) -> list[tuple[Row, int]]:
        """Train every missing (row, seed) pair of the current selection in the background,
        one at a time; ``wait`` blocks until done (tests, scripts)."""
        if self._worker is not None and self._worker.is_alive():
            self.status.value = "training already in progress"
            return []
        todo = self.missing()
        if not todo:
            self.status.value = "nothing to train: every selected row has all its seeds"
            return []
        epochs = {label: configure(self.profile, self.dataset.value, self.data_dir,
                                   model=r.model, variant=r.variant).train.epochs
                  for label, r in {r.label: r for r, _ in todo}.items()}
        self.progress.max = sum(epochs[r.label] for r, _ in todo)
        self.progress.value = 0
        self._cancel.clear()
        self.train_button.disabled, self.cancel_button.disabled = True, False
        self._worker = threading.Thread(target=self._train, args=(todo, epochs), daemon=True)
        self._worker.start()
        if wait:
            self._worker.join()
        return todo

    def cancel(self) -> None:
        self._cancel.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def _train(self, todo: list[tuple[Row, int]], epochs: dict[str, int]) -> None:
        env = {**os.environ, "GLASSKIT_RUNS": str(self.root)}
        done = 0
        try:
            for i, (row, seed) in enumerate(todo, 1):
                if self._cancel.is_set():
                    break
                self.progress.description = f"{i}/{len(todo)}"
                self.status.value = f"training {row.label}, seed {seed}"
                base = self.progress.value
                argv = [sys.executable, "-m", "glasskit", "train",
                        *row.argv(self.profile, self.dataset.value, self.data_dir, seed)]
                self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True, env=env)
                tail: list[str] = []
                for line in self._proc.stdout:
                    tail = (tail + [line])[-5:]
                    if re.match(r"epoch \d+:", line):
                        self.progress.value = min(self.progress.max, self.progress.value + 1)
                if self._proc.wait() != 0:
                    if self._cancel.is_set():
                        break
                    self.status.value = f"{row.label}, seed {seed} failed: {''.join(tail)[-400:]}"
                    return
                done += 1
                self.progress.value = base + epochs[row.label]  # early stopping ends it sooner
                self.refresh()  # the run landed: show it
            self.status.value = (f"cancelled after {done} run(s)" if self._cancel.is_set()
                                 else f"trained {done} run(s)")
        finally:
            self._proc = None
            self.train_button.disabled, self.cancel_button.disabled = False, True
            self.progress.description = "idle"
