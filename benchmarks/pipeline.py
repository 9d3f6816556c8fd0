"""Pipeline benchmark: cold / warm `dvc repro` of the embedded default, peak memory, optional install
and test-suite times. Prints the numbers; nothing here is asserted.

    python benchmarks/pipeline.py                 # cold + warm dvc repro in a fresh copy
    python benchmarks/pipeline.py --install       # also time a fresh venv install (minutes)
    python benchmarks/pipeline.py --tests         # also time `pytest` (the `make test` body)
    python benchmarks/pipeline.py --per-stage --json T.json   # the cold run stage by stage (dvc.yaml order),
                                                  # each stage's seconds in T.json (benchmarks/stage_flops.py)
    python benchmarks/pipeline.py --per-stage --baseline REV --json T.json
                                                  # the cold DAG of commit REV, then of this working tree, back
                                                  # to back on this machine: each stage's new/old time ratio
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and f != "dvc.lock":
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    template = ROOT / ".dvc" / "offline-plots.html"
    if template.is_file():
        shutil.copy2(template, dest / ".dvc" / template.name)


def export_revision(rev: str, dest: Path) -> None:
    """The files of commit `rev` (what `git archive` holds), less its dvc.lock: the project as it was."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    template = ROOT / ".dvc" / "offline-plots.html"
    if template.is_file():
        shutil.copy2(template, dest / ".dvc" / template.name)


def ratios(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    """new / old seconds for each stage both runs have, and for their sums ("total")."""
    both = [k for k in new if k in old and old[k] > 0]
    if not both:
        raise ValueError(f"the two runs share no timed stage (new: {sorted(new)}, old: {sorted(old)})")
    out = {k: round(new[k] / old[k], 3) for k in both}
    out["total"] = round(sum(new[k] for k in both) / sum(old[k] for k in both), 3)
    return out


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def stage_names(project: Path) -> list[str]:
    """dvc.yaml's stages in the order written, which is upstream first (a stage run before its inputs exist
    fails, so a wrong order cannot pass unnoticed)."""
    import yaml

    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def lock_differences(produced: str, committed: str) -> list[str]:
    """Stages whose dvc.lock entries differ. Compared parsed, not as text: DVC writes a stage where it was first
    locked, so a lock grown stage by stage over commits lists them in another order than a cold run writes."""
    import yaml

    a, b = (yaml.safe_load(text).get("stages", {}) for text in (produced, committed))
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def cold_run(work: Path, env: dict, per_stage: bool) -> dict:
    """`dvc repro` from nothing in `work` (a project copy, made a git repo here), then a warm one."""
    env = {**env, "PYTHONPATH": str(work)}
    git_env = {**env, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    timed(["bash", "-c", "git init -q && git add -A && git commit -qm bench"], work, git_env)  # DVC needs git
    measured: dict = {}
    if per_stage:
        stages = {}
        for name in stage_names(work):
            stages[name] = timed(["dvc", "repro", "--single-item", name], work, env)
            print(f"  {name:<12} {stages[name]:8.1f} s", flush=True)
        measured["stages"] = {k: round(v, 1) for k, v in stages.items()}
        cold = sum(stages.values())
    else:
        cold = timed(["dvc", "repro"], work, env)
    warm = timed(["dvc", "repro"], work, env)
    print(f"dvc repro, cold: {cold:.1f} s; warm: {warm:.1f} s", flush=True)
    measured.update(cold_s=round(cold, 1), warm_s=round(warm, 1))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--tests", action="store_true")
    parser.add_argument("--per-stage", action="store_true", help="time the cold run one stage at a time")
    parser.add_argument("--baseline", metavar="REV", help="first time the cold DAG of this commit, then this tree's")
    parser.add_argument("--json", type=Path, help="write the measured seconds here")
    args = parser.parse_args()
    measured: dict = {"cores": os.cpu_count()}
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    if args.baseline:
        rev = subprocess.run(["git", "rev-parse", args.baseline], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip()
        print(f"baseline {rev[:12]}:")
        with tempfile.TemporaryDirectory() as tmp:
            export_revision(rev, Path(tmp))
            measured["baseline"] = {"rev": rev, **cold_run(Path(tmp), env, args.per_stage)}
        print("this working tree:")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        work.mkdir()
        copy_project(work)
        if args.install:
            seconds = timed(["bash", "-c", "python3 -m venv .venv && .venv/bin/pip install -q pip==26.3 && "
                             ".venv/bin/pip install -q -c constraints.txt -e '.[test]' && "
                             ".venv/bin/pip install -q -c constraints.txt --no-deps facenet-pytorch==2.6.0"],
                            work, {**os.environ})
            print(f"install (fresh venv): {seconds:.1f} s")
            shutil.rmtree(work / ".venv")
        measured.update(cold_run(work, env, args.per_stage))
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        # Over every child so far: with --baseline the old commit's stages count too.
        print(f"peak RSS of the largest stage process{' (both runs)' if args.baseline else ''}: {peak_mb:.0f} MB")
        differ = lock_differences((work / "dvc.lock").read_text(), (ROOT / "dvc.lock").read_text()) \
            if (ROOT / "dvc.lock").is_file() else ["(no committed dvc.lock)"]
        print(f"dvc.lock the same as the committed one, stage by stage: {not differ}"
              + (f" (differ: {', '.join(differ)})" if differ else ""))
        measured["lock_stages_differing"] = differ
        if args.json:
            shutil.copy2(work / "dvc.lock", args.json.with_suffix(".dvc.lock"))
        measured["peak_rss_mb"] = round(peak_mb)
    if args.baseline:
        old = measured["baseline"].get("stages", {"dag": measured["baseline"]["cold_s"]})
        new = measured.get("stages", {"dag": measured["cold_s"]})
        measured["new_over_baseline"] = ratios(new, old)
        print("new / baseline: " + ", ".join(f"{k} {v:.3f}" for k, v in measured["new_over_baseline"].items()))
    if args.tests:
        seconds = timed([sys.executable, "-m", "pytest", "-q"], ROOT, {**os.environ, "DVC_NO_ANALYTICS": "1"})
        print(f"pytest (make test body): {seconds:.1f} s")
        measured["pytest_s"] = round(seconds, 1)
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1) + "\n")


if __name__ == "__main__":
    main()
