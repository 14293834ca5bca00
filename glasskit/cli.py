"""``python -m glasskit``: data statistics, notebook reports (and later stages)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from glasskit.config import DATASETS, PROFILES, load_config, model_entry, model_names
from glasskit.errors import GlasskitError
from glasskit.profiles import configure, variant_owner


def _config(args: argparse.Namespace, model: str | None = None, variant: str | None = None,
            explicit: dict[str, Any] | None = None):
    """The config the flags name, through ``configure``'s one order of precedence: profile,
    model, variant, then explicit values (``--codebooks``, ``--epochs``, ``--set``, ...)."""
    seed = getattr(args, "seed", None)
    return configure(args.profile or "quick", args.dataset, args.data_dir, 0 if seed is None else seed,
                     model=model, variant=variant, explicit=explicit,
                     preset=getattr(args, "preset", None))


def cmd_data(args: argparse.Namespace) -> int:
    from glasskit.data import prepare

    ds = prepare(_config(args, explicit=_overrides(args.set)))
    print(json.dumps(ds.stats()))
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from glasskit.pipeline import load, retrieval_lengths
    from glasskit.tokenize import sid_stats

    extra: dict[str, Any] = {}
    if args.method:
        extra["tokenizer.method"] = args.method
    if args.codebooks:
        extra["tokenizer.codebooks"] = _int_list(args.codebooks, "--codebooks")
    cfg = _config(args, explicit={**_overrides(args.set), **extra})
    ds, table = load(cfg)
    stats = sid_stats(table, ds.embeddings())
    lengths = retrieval_lengths(ds, table.first)
    stats["retrieved_len_test_mean"] = round(float(lengths.mean()), 3)
    stats["retrieved_len_test_zero_share"] = round(float((lengths == 0).mean()), 4)
    print(json.dumps(stats))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GlasskitError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from glasskit.train import train

    cfg = _train_config(args)
    run = train(cfg, out=args.out, resume=not args.fresh, progress=not args.quiet)
    if run is None:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    m = run.metrics()
    print(json.dumps({"run": str(run.path), "primary": m.get("primary"),
                      "test": m.get("test", {}).get(m.get("primary", "masked"))}))
    return 0


def _train_config(args: argparse.Namespace):
    """The config ``train`` runs: a run's ``config.yaml`` (``--config``), or the profile, data,
    model and variant named by the flags."""
    if args.config:
        given = [f for f, v in (("--profile", args.profile), ("--dataset", args.dataset),
                                ("--data-dir", args.data_dir), ("--model", args.model),
                                ("--variant", args.variant), ("--codebooks", args.codebooks),
                                ("--preset", args.preset),
                                ("--seed", args.seed), ("--epochs", args.epochs)) if v is not None]
        if given:
            raise GlasskitError(f"--config gives the whole config; {', '.join(given)} would change "
                                "it: use --set KEY=VALUE instead")
        cfg = load_config(args.config)
        explicit = {**({"train.device": args.device} if args.device else {}), **_overrides(args.set)}
        return cfg.replace(**explicit) if explicit else cfg
    if args.variant and args.model and args.variant not in model_entry(args.model).variants:
        owner = variant_owner(args.variant)
        raise GlasskitError(f"--variant {args.variant} is a row of {owner}, not of --model "
                            f"{args.model}: drop --model, or pass --model {owner}")
    model = args.model or (variant_owner(args.variant) if args.variant else "tiger")
    extra: dict[str, Any] = {}
    if args.codebooks:
        extra["tokenizer.codebooks"] = _int_list(args.codebooks, "--codebooks")
    if args.device:
        extra["train.device"] = args.device
    if args.epochs is not None:
        extra["train.epochs"] = args.epochs
    return _config(args, model, args.variant, {**extra, **_overrides(args.set)})


def _overrides(items: list[str]) -> dict[str, Any]:
    """``--set section.key=value`` pairs. Values are read as YAML (64, 0.5, null, [8, 8],
    true), except that on/off/yes/no stay words (``--set train.amp=off``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise GlasskitError(f"--set: expected section.key=value, got {item!r}")
        if text.strip().lower() in ("on", "off", "yes", "no", "y", "n"):
            out[key.strip()] = text.strip()
            continue
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            why = " ".join(str(e).split())
            raise GlasskitError(f"--set {item!r}: value is not valid YAML ({why})") from None
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from glasskit.evaluation import evaluate_run
    from glasskit.runs import Run

    print(json.dumps(evaluate_run(Run(args.run), args.split, args.beam, args.device or "auto")))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from glasskit.analysis.run_tables import markdown, seed_table, significance_table

    keys = tuple(k.strip() for k in args.keys.split(",") if k.strip())
    table = seed_table(args.runs, split=args.split, keys=keys, skip_unfinished=args.partial,
                       ranking=args.ranking)
    tests = None
    if args.against:
        tests = significance_table(args.runs, args.against, args.metric, args.split, args.ranking,
                                   skip_unfinished=args.partial)
    print(markdown(table, keys, tests=tests))
    return 0


SWEEP_MARK = "<!-- written by glasskit sweep; rewritten after every run -->"
COMPARISON_ROWS = "sasrec,tiger,glass:sidtier+shs,glass:sidtier+shs+cr,dualgr,gems,intrr"


def _job_name(cfg: Any, model: str, variant: str | None) -> str:
    data = f"{cfg.data.dataset}{'/' + cfg.data.name if cfg.data.name else ''}"
    return f"{data} seed {cfg.seed} {model}{':' + variant if variant else ''}"


def _write_sweep_tables(args: argparse.Namespace, done: list[str], planned: int) -> None:
    """A sweep's tables of its finished runs (in the grid's order), both rankings, with the
    paired tests against each ``--against`` row that has a run, and a header that counts them."""
    from collections import Counter
    from pathlib import Path

    from glasskit.analysis.run_tables import markdown, seed_table, significance_table
    from glasskit.io import write_text
    from glasskit.runs import Run, runs_root

    text = []
    for ranking in ("masked", "unmasked"):
        table = seed_table(done, ranking=ranking)
        text.append(f"### {ranking}\n\n{markdown(table)}")
        for ref in filter(None, args.against.split(",")):
            try:
                tests = significance_table(done, ref, ranking=ranking)
            except GlasskitError:  # the reference row has no finished run yet
                continue
            text.append(f"#### {ranking}, against {ref}\n\n{markdown(table, tests=tests)}")
    machines = Counter(", ".join(filter(None, (m.get("machine", "unrecorded"),
                                                m.get("train_precision"))))
                       for m in (Run(p).metrics() for p in done))
    made_on = ", ".join(f"{m} ({k} run{'s' * (k > 1)})" for m, k in sorted(machines.items()))
    here, store = Path(args.out).resolve().parent, runs_root().resolve()
    shown = store.relative_to(here) if store.is_relative_to(here) else store  # a committed
    # table beside its store names no one machine's folders
    header = (f"{SWEEP_MARK}\n# {args.profile} budget: {len(done)}/{planned} runs finished (store "
              f"{shown}; processors: {made_on})\n\n")
    write_text(args.out, header + "\n\n".join(text) + "\n")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train every (seed, dataset, row) one at a time, seed-major so that one seed of every row
    lands first; a rerun resumes (finished runs are reused, an interrupted one continues from
    its last epoch). After each run the tables are rewritten (``--out``); they hold every
    finished run of the grid, those that lie ahead of the sweep included (finished by an earlier
    sweep or out of order), and say how many that is."""
    from pathlib import Path

    from glasskit.analysis.run_tables import base_label
    from glasskit.runs import runs_root
    from glasskit.train import stored_run, train

    out = Path(args.out)
    if out.exists() and (not out.is_file() or not out.read_text(errors="replace").startswith(SWEEP_MARK)):
        raise GlasskitError(f"--out {out}: exists and is not a table a sweep wrote; nothing was "
                            "changed. Choose another --out")
    rows = [(r.split(":")[0], r.split(":")[1] if ":" in r else None) for r in args.rows.split(",")]
    names = [base_label(model, variant) for model, variant in rows]  # as the tables name them
    unknown = [a for a in filter(None, args.against.split(",")) if a not in names]
    if unknown:  # found out only after hours of training, and then a table without its tests
        raise GlasskitError(f"--against {','.join(unknown)}: not a row of this sweep; nothing was "
                            f"trained. Name one of its rows as the tables do ({', '.join(names)}), "
                            "or give --against '' for tables without paired tests")
    datasets = [tuple(d.partition("=")[::2]) for d in args.datasets.split(",")] if args.datasets else [
        (None, "")]
    seeds = _int_list(args.seeds, "--seeds")
    jobs = [(seed, dataset, model, variant) for seed in seeds for dataset in datasets
            for model, variant in rows]
    cfgs = [configure(args.profile, name, folder or args.data_dir, seed, model=model,
                      variant=variant, preset=args.preset, explicit=_overrides(args.set))
            for seed, (name, folder), model, variant in jobs]  # a wrong setting fails at once
    finished = {n: str(run.path) for n, cfg in enumerate(cfgs) if (run := stored_run(cfg))}
    if args.tables_only:
        missing = [_job_name(cfg, model, variant) for n, ((_, _, model, variant), cfg)
                   in enumerate(zip(jobs, cfgs)) if n not in finished]
        if not finished:
            raise GlasskitError(f"--tables-only: none of the sweep's {len(jobs)} runs is finished in "
                                f"the run store ({runs_root()}); nothing was written. Train them "
                                "first (the same command without --tables-only)")
        _write_sweep_tables(args, [finished[i] for i in sorted(finished)], len(jobs))
        print(f"{len(finished)}/{len(jobs)} runs finished; not yet: " + ("; ".join(missing) or "none"))
        print(f"tables: {args.out}")
        return 0
    for n, ((_, _, model, variant), cfg) in enumerate(zip(jobs, cfgs)):
        print(f"[{n + 1}/{len(jobs)}] {_job_name(cfg, model, variant)}"
              f"{' (finished: read from its record)' * (n in finished)}", flush=True)
        finished[n] = str(train(cfg, progress=not args.quiet).path)
        _write_sweep_tables(args, [finished[i] for i in sorted(finished)], len(jobs))
    print(f"tables: {args.out}")
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    from glasskit.reports import build_reports

    params: dict[str, Any] = {"profile": args.profile or "quick"}
    if args.dataset:
        params["dataset"] = args.dataset
    if args.data_dir:
        params["data_dir"] = args.data_dir
    only = args.only.split(",") if args.only else None
    per_notebook: dict[str, dict[str, Any]] = {}
    for item in args.param:
        nb, sep, rest = item.partition(":")
        name, eq, value = rest.partition("=")
        if not (sep and eq and len(nb) == 2 and nb.isdigit() and name):
            raise GlasskitError(f"--param {item!r}: expected NN:NAME=VALUE, e.g. 04:gems_streams=[]")
        try:
            per_notebook.setdefault(nb, {})[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            why = " ".join(str(e).split())
            raise GlasskitError(f"--param {item!r}: the value is not valid YAML ({why}); write it as "
                                "in a YAML file, e.g. 01:seed=1 or 04:gems_streams=[mid]") from None
    results = build_reports(params, args.out, only, per_notebook=per_notebook)
    print(json.dumps({r.notebook: round(r.seconds, 1) for r in results}))
    return 0


def cmd_strip(args: argparse.Namespace) -> int:
    from pathlib import Path

    from glasskit.notebook import strip_outputs

    paths = args.paths or sorted(Path(__file__).resolve().parent.parent.glob("notebooks/*.ipynb"))
    changed = [str(p) for p in paths if strip_outputs(p)]
    print(json.dumps({"stripped": changed}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glasskit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dataset", default=None, choices=DATASETS,
                        help="default: the profile's own (smoke: synthetic; quick, paper: ml-100k)")
        sp.add_argument("--data-dir", default=None, help="folder with the dataset's files")
        sp.add_argument("--profile", default=None, choices=PROFILES, help="default: quick")

    def settings(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config value, e.g. --set data.name=Sports_and_Outdoors")

    d = sub.add_parser("data", help="print a dataset's statistics as one JSON object")
    common(d)
    settings(d)
    d.add_argument("--seed", type=int, default=None)
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("tokenize", help="build or load the SID table and print its statistics")
    common(t)
    t.add_argument("--method", choices=("rqvae", "rqkmeans"), default=None)
    t.add_argument("--codebooks", default=None, help="sizes per level, e.g. 64,128,128")
    t.add_argument("--seed", type=int, default=None)
    settings(t)
    t.set_defaults(func=cmd_tokenize)

    tr = sub.add_parser("train", help="train a model and write a run (config, checkpoints, metrics)")
    common(tr)
    tr.add_argument("--model", default=None, choices=model_names(),
                    help="default: the model whose row --variant names, else tiger")
    tr.add_argument("--variant", default=None,
                    help="an ablation row of the model, e.g. sidtier+shs for glass")
    tr.add_argument("--preset", default=None, choices=("paper",),
                    help="the model's paper's own sizes and tokenizer over the profile (named in "
                         "every table row that uses it)")
    tr.add_argument("--codebooks", default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"))
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<hash>)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any config value, e.g. --set model.retrieve_max=64 --set train.amp=off")
    tr.add_argument("--config", default=None, metavar="PATH",
                    help="a whole config, e.g. a run's config.yaml (then only --set changes it)")
    tr.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a run's best checkpoint")
    ev.add_argument("--run", required=True)
    ev.add_argument("--split", default="test", choices=("valid", "test"))
    ev.add_argument("--beam", type=int, default=None)
    ev.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"))
    ev.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="mean ± std over seeds of finished runs, as a Markdown table")
    c.add_argument("runs", nargs="+", help="run directories (every seed of every row)")
    c.add_argument("--split", default="test", choices=("valid", "test"))
    c.add_argument("--partial", action="store_true", help="skip unfinished runs instead of failing")
    c.add_argument("--keys", default="hit@5,hit@10,ndcg@10,hit@20", help="metrics, comma-separated")
    c.add_argument("--ranking", default="primary", choices=("primary", "masked", "unmasked"))
    c.add_argument("--against", default=None, metavar="ROW",
                   help="test every row against this one (paired over users, per seed, combined "
                        "over seeds, Holm-corrected), e.g. --against tiger")
    c.add_argument("--metric", default="ndcg@10", help="the per-user metric --against tests")
    c.set_defaults(func=cmd_compare)

    sw = sub.add_parser("sweep", help="train a comparison (rows x datasets x seeds), one run at a "
                        "time, resumable, and write its tables with budgets and paired tests")
    sw.add_argument("--profile", default="converge", choices=PROFILES)
    sw.add_argument("--preset", default=None, choices=("paper",),
                    help="each model at its paper's own sizes and tokenizer")
    sw.add_argument("--datasets", default=None, metavar="NAME[=DIR],...",
                    help="comma-separated, each with its folder where it needs one, e.g. "
                         "ml-100k,ml-latest-small=../shared/data/ml-latest-small (default: the "
                         "profile's own)")
    sw.add_argument("--data-dir", default=None, help="the folder of datasets given without one")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value for every run, e.g. --set data.name=Toys_and_Games")
    sw.add_argument("--seeds", default="0,1,2")
    sw.add_argument("--rows", default=COMPARISON_ROWS, help="model[:variant],...")
    sw.add_argument("--against", default="tiger,sasrec", help="reference rows of the paired tests")
    sw.add_argument("--out", default="reports/comparison.md")
    sw.add_argument("--quiet", action="store_true")
    sw.add_argument("--tables-only", action="store_true",
                    help="write the tables from the grid's finished runs and train nothing")
    sw.set_defaults(func=cmd_sweep)

    st = sub.add_parser("strip-notebooks", help="clear outputs of notebooks before committing them")
    st.add_argument("paths", nargs="*", help="default: the notebooks/ of this checkout")
    st.set_defaults(func=cmd_strip)

    r = sub.add_parser("reports", help="execute the notebooks into reports/ with papermill")
    common(r)
    r.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,02")
    r.add_argument("--out", default="reports")
    r.add_argument("--param", action="append", default=[], metavar="NN:NAME=VALUE",
                   help="a parameter of notebook NN (YAML value), e.g. 04:gems_streams=[]")
    r.set_defaults(func=cmd_reports)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GlasskitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = (" train resumes from the last finished epoch, exactly, when run again with the "
                 "same command." if args.command == "train" else
                 " reports already built are unchanged." if args.command == "reports" else "")
        print(f"interrupted (Ctrl-C).{again}", file=sys.stderr)
        return 130
