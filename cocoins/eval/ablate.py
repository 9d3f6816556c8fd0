"""Run an ablation table of the paper through DVC experiments and render it beside the paper's numbers.

    python -m cocoins.eval.ablate table3 [--rows 0,3] [--seeds 0,1,2] [--set eval.cpu_threads=1] [--jobs 1]
                                         [--rerun] [--no-run] [--out reports/ablations]

For each row of the table (cocoins/eval/ablations.py) not already run as an experiment, queues
`dvc exp run --queue -n <table>-<row> -S ...`, runs the queue (`dvc exp run --run-all`), reads
`dvc exp show --json` and writes `<out>/<table>.md` and `<out>/<table>.csv`. With `--seeds`, every row runs
once per training seed (`-S train.seed=K`, experiment `<table>-<row>-s<K>`) and each cell is the mean +/- the
sample standard deviation over the seeds: one training run is not a result. `--set` adds settings to every row
that must not change a score (thread counts). Rows whose settings the params schema does not allow (e.g.
loss.distance=dreamsim) are listed with the reason and not run. Run it from the repository root with the venv
active, on a committed HEAD (DVC experiments start from a commit).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from cocoins.config import ParamsError, parse_params
from cocoins.eval.ablations import (COLUMNS, METRICS_FILE, PAPER_COLUMNS, RATIOS, TABLES, Row, Table,
                                    experiment_name)
from cocoins.eval.report import markdown_table
from cocoins.io import atomic_path


def dvc(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc.stdout


def exp_show(root: Path) -> list | dict:
    """`dvc exp show --json -A`: experiments of every commit, so rows queued before a later commit are found."""
    return json.loads(dvc("exp", "show", "--json", "-A", cwd=root) or "[]")


def row_problem(row: Row, params_path: Path) -> str:
    """'' if the row's -S settings pass the params schema, else the schema's message."""
    raw = yaml.safe_load(params_path.read_text()) or {}
    for setting in row.settings:
        key, _, value = setting.partition("=")
        group, _, name = key.partition(".")
        raw.setdefault(group, {})[name] = yaml.safe_load(value)
    try:
        parse_params(raw, base_dir=params_path.parent)
    except ParamsError as err:
        return str(err)
    return ""


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def experiments(show: list | dict, failed: bool = False) -> dict[str, dict]:
    """{experiment name: flattened metrics of METRICS_FILE} from `dvc exp show --json` (DVC 3 layout).

    A failed experiment is left out (`failed=True`: only those are returned): its entry carries an error and
    the metrics of the commit it started from, which are not its own.
    """
    found: dict[str, dict] = {}

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            data = node.get("data")
            if node.get("name") and isinstance(data, dict) and "metrics" in data:
                metrics = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data")
                # A queued, killed or still running experiment has no metrics file of its own yet: no result.
                if bool(node.get("error")) == failed and (failed or metrics):
                    found.setdefault(node["name"], flatten(metrics or {}))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)

    walk(show)
    return found


def seeded_name(table: Table, row: Row, seed: Optional[int]) -> str:
    """The experiment of one row and training seed (None: the row's single run, named as before seeds)."""
    name = experiment_name(table, row)
    return name if seed is None else f"{name}-s{seed}"


def row_values(metrics: dict) -> dict[str, Optional[float]]:
    """One experiment's cells: COLUMNS read from its metrics, then the RATIOS of two of them."""
    values = {c: metrics.get(key) for c, key in COLUMNS.items()}
    for c, (num, den) in RATIOS.items():
        n, d = values.get(num), values.get(den)
        values[c] = n / d if isinstance(n, (int, float)) and isinstance(d, (int, float)) and d else None
    return values


def mean_sd(xs: list[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def render(table: Table, rows: list[tuple[int, Row]], results: dict[str, dict], problems: dict[int, str],
           out_dir: Path, seeds: Optional[list[int]] = None) -> str:
    """Write <out>/<table>.md and .csv; return the Markdown. With seeds: mean +/- sd over the rows' seeds."""
    names = {i: [seeded_name(table, row, s) for s in (seeds or [None])] for i, row in rows}
    found = {i: [n for n in names[i] if n in results] for i, _ in rows}
    stats: dict[int, dict[str, Optional[tuple[float, Optional[float], int]]]] = {}
    for i, _ in rows:
        per_run = [row_values(results[n]) for n in found[i]]
        stats[i] = {}
        for c in [*COLUMNS, *RATIOS]:
            xs = [v[c] for v in per_run]
            # A cell averages only complete columns: a null in one seed would bias the mean of the others.
            ok = bool(xs) and all(isinstance(x, (int, float)) for x in xs)
            stats[i][c] = (*mean_sd([float(x) for x in xs]), len(xs)) if ok else None
    # A column null in every row (its metric model absent in this setup) says nothing; it is listed instead.
    columns = [*COLUMNS, *RATIOS]
    shown = [c for c in columns if any(stats[i][c] is not None for i, _ in rows)]
    omitted = [c for c in columns if c not in shown]

    def cell(st) -> object:
        if st is None:
            return None
        mean, sd, n = st
        if seeds is None:
            return mean
        text = f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"
        return text if n == len(seeds) else f"{text} (n={n})"

    header = ["row", "-S settings", *shown, *(f"paper {c}" for c in PAPER_COLUMNS), "experiment / status"]
    body, csv_rows = [], []
    for i, row in rows:
        missing = [n for n in names[i] if n not in results]
        status = problems.get(i) or ", ".join(
            [*found[i], *(f"{n}: no result (`dvc queue logs {n}`)" for n in missing)])
        body.append([row.label, " ".join(row.settings), *(cell(stats[i][c]) for c in shown), *row.paper, status])
        csv_cells = []   # unseeded: the value; seeded: mean, sd, n
        for c in shown:
            st = stats[i][c] or (None, None, None)
            csv_cells += [st[0]] if seeds is None else list(st)
        csv_rows.append([row.label, " ".join(row.settings), *csv_cells, *row.paper, status])
    seeds_text = "" if seeds is None else (
        f" Each cell: mean ± sample standard deviation over training seeds {', '.join(map(str, seeds))} "
        f"(`-S train.seed=K`; n=... where fewer seeds have a result).")
    md = (f"# {table.title}\n\nOurs: `{METRICS_FILE}` of each experiment (Sim, Div: Portraits face metrics; CLIP: "
          f"Scenes; id: the synthetic world's trait-classifier identity metric, Portraits unless 'Scenes', 'base': "
          f"the base model without a pseudo-word on the same jobs; id Div share: the codes' Div over the base's "
          f"per-image Div; latent: Portraits latent-space metrics; scene fid: Scenes scene fidelity, the trait "
          f"classifier's scene head on the prompted scene, and its share of the base's). n/a: null in the metrics "
          f"file (see its null_reasons). Paper: as printed (face Sim, Div on Portraits, CLIP on Scenes).{seeds_text}"
          f"\n\n" + markdown_table(header, body))
    if omitted:
        md += f"\nOmitted (null in every row): {', '.join(omitted)}.\n"
    csv_header = ["row", "-S settings",
                  *([*shown] if seeds is None else [h for c in shown for h in (c, f"{c} sd", f"{c} n")]),
                  *(f"paper {c}" for c in PAPER_COLUMNS), "experiment / status"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"{table.name}.md") as tmp:
        tmp.write_text(md)
    with atomic_path(out_dir / f"{table.name}.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(csv_header)
            writer.writerows([["" if v is None else v for v in r] for r in csv_rows])
    return md


def queued_names(status: str) -> list[str]:
    """Names of the entries `dvc queue status` lists as Queued (columns: task, name, created, status)."""
    names = []
    for line in status.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[-1] == "Queued" and cols[0] != "Task":
            names.append(cols[1])
    return names


def ablate(name: str, root: Path = Path("."), rows: Optional[list[int]] = None, jobs: int = 1, rerun: bool = False,
           run: bool = True, out_dir: Optional[Path] = None, seeds: Optional[list[int]] = None,
           extra: tuple[str, ...] = ()) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r}; choose from {', '.join(TABLES)}")
    table = TABLES[name]
    picked = [(i, r) for i, r in enumerate(table.rows) if rows is None or i in rows]
    problems = {i: f"not run: {p}" for i, r in picked
                if (p := row_problem(Row(r.label, (*r.settings, *extra), r.paper, r.slug), root / "params.yaml"))}
    waiting = queued_names(dvc("queue", "status", cwd=root))
    mine = {seeded_name(table, row, seed) for i, row in picked if i not in problems for seed in seeds or [None]}
    if run and (others := [n for n in waiting if n not in mine]):
        # They would run first, each from the commit it was queued on; measured: the queue's worker then stopped
        # after one of them and `--run-all` waited with nothing running.
        raise SystemExit(f"{len(others)} other experiment(s) queued earlier are still waiting ({', '.join(others)}): "
                         "run them with `dvc exp run --run-all` or drop them with `dvc queue remove --queued`")
    show = exp_show(root)
    existing, failed = experiments(show), experiments(show, failed=True)
    queued = []
    for i, row in picked:
        for seed in seeds or [None]:
            exp = seeded_name(table, row, seed)
            if i in problems or (exp in existing and not rerun):
                continue
            if exp in waiting:   # queued by an earlier `--no-run`: run it as it is
                queued.append(exp)
                continue
            if exp in existing:
                dvc("exp", "remove", exp, cwd=root)
            if exp in failed:   # its queue entry still holds the name
                dvc("queue", "remove", exp, cwd=root)
            settings = [*row.settings, *([] if seed is None else [f"train.seed={seed}"]), *extra]
            dvc("exp", "run", "--queue", "-n", exp, *[a for s in settings for a in ("-S", s)], cwd=root)
            queued.append(exp)
    if queued and run:
        print(f"running {len(queued)} experiment(s): {', '.join(queued)}", file=sys.stderr)
        dvc("exp", "run", "--run-all", "-j", str(jobs), cwd=root)
    return render(table, picked, experiments(exp_show(root)), problems, out_dir or root / "reports" / "ablations",
                  seeds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cocoins.eval.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--rows", default=None, help="comma-separated row indices (default: all)")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds: one run of each row per seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting added to every row, for what does not change a score (e.g. eval.cpu_threads=1)")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at a time")
    parser.add_argument("--rerun", action="store_true", help="rerun rows that already have an experiment")
    parser.add_argument("--no-run", action="store_true", help="only queue; render what has results")
    parser.add_argument("--out", default=None, help="output folder (default reports/ablations)")
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")] if args.rows else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    if any("=" not in s or s.startswith("train.seed=") for s in args.set):
        parser.error("--set takes KEY=VALUE settings other than train.seed (use --seeds)")
    try:
        md = ablate(args.table, Path("."), rows, args.jobs, args.rerun, not args.no_run,
                    Path(args.out) if args.out else None, seeds, tuple(args.set))
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    print(md)


if __name__ == "__main__":
    main()
