"""Run an ablation table of the paper through DVC experiments and render it beside the paper's numbers.

    python -m cocoins.eval.ablate table3 [--rows 0,3] [--jobs 1] [--rerun] [--no-run] [--out reports/ablations]

For each row of the table (cocoins/eval/ablations.py) not already run as an experiment of HEAD, queues
`dvc exp run --queue -n <table>-<row> -S ...`, runs the queue (`dvc exp run --run-all`), reads
`dvc exp show --json` and writes `<out>/<table>.md` and `<out>/<table>.csv`. Rows whose settings the params
schema does not allow (e.g. loss.distance=dreamsim) are listed with the reason and not run. Run it from the
repository root with the venv active, on a committed HEAD (DVC experiments start from a commit).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from cocoins.config import ParamsError, parse_params
from cocoins.eval.ablations import COLUMNS, METRICS_FILE, PAPER_COLUMNS, TABLES, Row, Table, experiment_name
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
                if bool(node.get("error")) == failed:
                    metrics = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data", {})
                    found.setdefault(node["name"], flatten(metrics))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)

    walk(show)
    return found


def render(table: Table, rows: list[tuple[int, Row]], results: dict[str, dict], problems: dict[int, str],
           out_dir: Path) -> str:
    """Write <out>/<table>.md and .csv; return the Markdown."""
    values = {}
    for i, row in rows:
        metrics = results.get(experiment_name(table, row))
        values[i] = {c: None if metrics is None else metrics.get(key) for c, key in COLUMNS.items()}
    # A column null in every row (its metric model absent in this setup) says nothing; it is listed instead.
    shown = [c for c in COLUMNS if any(v[c] is not None for v in values.values())]
    omitted = [c for c in COLUMNS if c not in shown]
    header = ["row", "-S settings", *shown, *(f"paper {c}" for c in PAPER_COLUMNS), "experiment / status"]
    body = []
    for i, row in rows:
        name = experiment_name(table, row)
        status = problems.get(i) or (name if name in results else f"{name}: no result (`dvc queue logs {name}`)")
        body.append([row.label, " ".join(row.settings), *(values[i][c] for c in shown), *row.paper, status])
    md = (f"# {table.title}\n\nOurs: `{METRICS_FILE}` of each experiment (Sim, Div: Portraits face metrics; CLIP: "
          f"Scenes; id: the synthetic world's trait-classifier identity metric; latent: Portraits latent-space "
          f"metrics; scene fid: Scenes scene fidelity, the trait classifier's scene head on the prompted scene). "
          f"n/a: null in the metrics file (see its null_reasons). Paper: as printed (face Sim, Div on "
          f"Portraits, CLIP on Scenes).\n\n" + markdown_table(header, body))
    if omitted:
        md += f"\nOmitted (null in every row): {', '.join(omitted)}.\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"{table.name}.md") as tmp:
        tmp.write_text(md)
    with atomic_path(out_dir / f"{table.name}.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows([["" if v is None else v for v in r] for r in body])
    return md


def ablate(name: str, root: Path = Path("."), rows: Optional[list[int]] = None, jobs: int = 1, rerun: bool = False,
           run: bool = True, out_dir: Optional[Path] = None) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r}; choose from {', '.join(TABLES)}")
    table = TABLES[name]
    picked = [(i, r) for i, r in enumerate(table.rows) if rows is None or i in rows]
    problems = {i: f"not run: {p}" for i, r in picked if (p := row_problem(r, root / "params.yaml"))}
    show = exp_show(root)
    existing, failed = experiments(show), experiments(show, failed=True)
    queued = []
    for i, row in picked:
        exp = experiment_name(table, row)
        if i in problems or (exp in existing and not rerun):
            continue
        if exp in existing:
            dvc("exp", "remove", exp, cwd=root)
        if exp in failed:   # its queue entry still holds the name
            dvc("queue", "remove", exp, cwd=root)
        dvc("exp", "run", "--queue", "-n", exp, *[a for s in row.settings for a in ("-S", s)], cwd=root)
        queued.append(exp)
    if queued and run:
        print(f"running {len(queued)} experiment(s): {', '.join(queued)}", file=sys.stderr)
        dvc("exp", "run", "--run-all", "-j", str(jobs), cwd=root)
    return render(table, picked, experiments(exp_show(root)), problems, out_dir or root / "reports" / "ablations")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cocoins.eval.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--rows", default=None, help="comma-separated row indices (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at a time")
    parser.add_argument("--rerun", action="store_true", help="rerun rows that already have an experiment")
    parser.add_argument("--no-run", action="store_true", help="only queue; render what has results")
    parser.add_argument("--out", default=None, help="output folder (default reports/ablations)")
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")] if args.rows else None
    try:
        md = ablate(args.table, Path("."), rows, args.jobs, args.rerun, not args.no_run,
                    Path(args.out) if args.out else None)
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    print(md)


if __name__ == "__main__":
    main()
