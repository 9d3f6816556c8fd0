"""Ablation tables: row definitions against the schema and the README, exp-show parsing, rendering, and the
whole `python -m cocoins.eval.ablate` on a small copy of the project (slow)."""

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from system_deps import require

from cocoins.eval.ablate import experiments, flatten, render, row_problem
from cocoins.eval.ablations import COLUMNS, TABLES, experiment_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_row_passes_the_params_schema_unless_its_parameter_does_not_exist():
    for table in TABLES.values():
        assert len({experiment_name(table, r) for r in table.rows}) == len(table.rows)
        for row in table.rows:
            problem = row_problem(row, ROOT / "params.yaml")
            if row.settings == ("loss.distance=dreamsim",):
                assert "loss.distance = 'dreamsim' is not allowed" in problem
            else:
                assert problem == "", f"{table.name} {row.label}: {problem}"
            assert re.fullmatch(r"[a-z0-9-]+", experiment_name(table, row))


def test_rows_agree_with_the_readme_mapping():
    lines = [l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("| Table ")]
    assert len(lines) >= 10
    for line in lines:
        number = re.match(r"\| Table (\d+)", line).group(1)
        rows = TABLES[f"table{number}"].rows
        settings = re.findall(r"`([^`]+)`", line)
        if not settings:                                    # "defaults": the row marked (ours)
            assert any("(ours)" in r.label for r in rows)
            continue
        key = settings[0].split()[0].split("=")[0]
        groups = [settings[0].split()] + [[f"{key}={v}"] for v in settings[1:]]   # "`k=10` / `50`"
        for group in groups:
            assert any(set(group) <= set(r.settings) for r in rows), f"README {group} has no row in table{number}"


def _exp_show(name: str, latent_sim: float, error: dict | None = None) -> dict:
    metrics = {"portraits": {"latent_sim": latent_sim, "latent_div": 0.01, "face_sim": 0.5}, "scenes": {"clip": 0.3}}
    return {"rev": "abc", "name": name, "error": error, "experiments": None,
            "data": {"params": {}, "metrics": {"reports/eval/metrics.json": {"data": metrics}}}}


def test_a_failed_experiment_is_not_a_result():
    # DVC lists a failed run with an error and the metrics of the commit it started from: not its own.
    failed = _exp_show("table4-mask", 0.9, error={"msg": "Experiment run failed", "type": ""})
    show = [{"rev": "123", "name": "main", "data": {"metrics": {}},
             "experiments": [{"name": "table4-mask", "executor": {"state": "failed"}, "revs": [failed]},
                             {"name": "table4-ours", "executor": None, "revs": [_exp_show("table4-ours", 0.5)]}]}]
    assert "table4-ours" in experiments(show) and "table4-mask" not in experiments(show)
    assert set(experiments(show, failed=True)) == {"table4-mask"}


def test_exp_show_parsing_and_rendering(tmp_path):
    show = [{"rev": "workspace", "name": None, "data": {"metrics": {}}, "experiments": None},
            {"rev": "123", "name": "main", "data": {"metrics": {}},
             "experiments": [{"name": "table12-b1", "executor": None, "revs": [_exp_show("table12-b1", 0.25)]},
                             {"name": "table12-b3", "executor": None, "revs": [_exp_show("table12-b3", 0.75)]}]}]
    found = experiments(show)
    assert found["table12-b1"]["portraits.latent_sim"] == 0.25 and found["table12-b3"]["scenes.clip"] == 0.3
    table = TABLES["table12"]
    md = render(table, list(enumerate(table.rows)), found, {}, tmp_path)
    # Columns null in every row (face Div and the identity metrics here) are omitted and listed.
    assert "| beta = 1 | loss.beta=1 | 0.500 | 0.300 | 0.250 | 0.010 | 0.528 | 0.735 | 0.291 | table12-b1 |" in md
    assert "Omitted (null in every row): Div, id Sim, id Div, base id Sim, base id Div, id Sim Scenes" in md
    assert "table12-b2: no result" in md
    rows = list(csv.DictReader((tmp_path / "table12.csv").open()))
    assert [r["latent Sim"] for r in rows] == ["0.25", "", "0.75"] and rows[0]["paper Sim"] == "0.528"
    assert {"Sim", "CLIP", "latent Sim", "latent Div"} <= set(rows[0]) and "Div" not in rows[0]


@pytest.mark.slow
def test_ablate_runs_two_rows_as_dvc_experiments(tmp_path):
    from test_pipeline_dvc import run as _run, small_project   # the DVC test's small world and helpers

    env = small_project(tmp_path)
    # The baseline run fills DVC's run cache, so each experiment reruns only train and evaluate.
    _run("dvc repro -q && git add -A && git commit -qm run", tmp_path, env)
    out = _run(f"{sys.executable} -m cocoins.eval.ablate table3 --rows 0,3", tmp_path, env)
    assert "| Pos | loss.negative=none loss.schedule=true |" in out
    rows = list(csv.DictReader((tmp_path / "reports/ablations/table3.csv").open()))
    assert [r["experiment / status"] for r in rows] == ["table3-pos", "table3-ours"]
    # Real scores: finite cosines in [-1, 1] (float("inf") == float("inf") would pass an equality check).
    assert all(math.isfinite(float(r[k])) and -1 <= float(r[k]) <= 1 for r in rows for k in ("latent Sim", "latent Div"))
    assert [r["paper Sim"] for r in rows] == ["0.394", "0.6"]
    show = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=tmp_path, env=env, check=True,
                                     capture_output=True, text=True).stdout)
    negative = {e["name"]: e["revs"][0]["data"]["params"]["params.yaml"]["data"]["loss"]["negative"]
                for node in show for e in (node.get("experiments") or [])}
    assert negative == {"table3-pos": "none", "table3-ours": "reciprocal"}
    # A second call finds both experiments and runs nothing.
    again = _run(f"{sys.executable} -m cocoins.eval.ablate table3 --rows 0,3 --no-run", tmp_path, env)
    assert again.count("table3-") == 2
    # With seeds every row is queued once per training seed, under its own name, with the --set settings.
    seeded = _run(f"{sys.executable} -m cocoins.eval.ablate table3 --rows 0 --seeds 0,1 --set eval.cpu_threads=2 "
                  f"--no-run", tmp_path, env)
    assert "table3-pos-s0: no result" in seeded and "table3-pos-s1: no result" in seeded
    queue = _run("dvc queue status", tmp_path, env)
    assert "table3-pos-s0" in queue and "table3-pos-s1" in queue and "Queued" in queue
    # `dvc plots diff` across the two experiments renders offline, every evaluation plot with both (last: without
    # the template this test skips here, or fails under CI=true, after every check above ran).
    template = ROOT / ".dvc" / "offline-plots.html"
    require(template.is_file(), "the offline plot template .dvc/offline-plots.html",
            "`make install` writes it with npm (Debian: apt-get install npm)")
    shutil.copy2(template, tmp_path / ".dvc" / template.name)
    log = _run("dvc plots diff table3-pos table3-ours -o plots_diff", tmp_path, env)
    page = (tmp_path / "plots_diff" / "index.html").read_text()
    assert "failed to load" not in log and "cdn.jsdelivr" not in page and "vegaEmbed" in page
    # One panel per evaluation plot file with data (its path is the title); none for CLIP (no model here).
    for title in ("reports/eval/plots/portraits_latent_sim_per_subject.json",
                  "reports/eval/plots/scenes_identity_div_per_setting.json"):
        assert title in page
    assert "clip_per_" not in page
    assert '"rev": "table3-pos"' in page and '"rev": "table3-ours"' in page


def _id_metrics(sim: float, div: float, base_div: float, scene_fid: float | None) -> dict:
    return flatten({"portraits": {"identity_sim": sim, "identity_div": div, "base_identity_sim": 0.66,
                                  "base_identity_div": base_div},
                    "scenes": {"scene_fidelity": scene_fid, "base_scene_fidelity": 1.0}})


def test_seeded_rows_render_mean_and_sample_sd_and_the_div_share(tmp_path):
    table = TABLES["table5"]
    results = {"table5-same-prompt-s0": _id_metrics(0.8, 0.2, 0.4, 0.9),
               "table5-same-prompt-s1": _id_metrics(0.9, 0.3, 0.4, 0.95),
               "table5-same-noise-s0": _id_metrics(0.7, 0.1, 0.5, None),   # one seed only, scene fid null
               "table5-same-noise": _id_metrics(0.1, 0.1, 0.1, 0.1)}       # an unseeded run is not a seed's
    md = render(table, list(enumerate(table.rows)), results, {}, tmp_path, seeds=[0, 1])
    lines = {l.split(" | ")[0]: l for l in md.splitlines() if l.startswith("| ")}
    # Sim 0.8, 0.9: mean 0.85, sd (ddof 1) 0.0707; Div share 0.5, 0.75: mean 0.625, sd 0.1768.
    assert "| 0.850 ± 0.071 | 0.250 ± 0.071 | 0.660 ± 0.000 | 0.400 ± 0.000 |" in lines["| prompts =, noise !="]
    assert "0.625 ± 0.177" in lines["| prompts =, noise !="] and "0.925 ± 0.035" in lines["| prompts =, noise !="]
    assert "0.700 (n=1)" in lines["| prompts !=, noise ="] and "0.200 (n=1)" in lines["| prompts !=, noise ="]
    assert "table5-same-noise-s1: no result" in lines["| prompts !=, noise ="]
    assert "n/a" in lines["| prompts !=, noise != (ours)"] and "table5-ours-s0: no result" in md
    rows = list(csv.DictReader((tmp_path / "table5.csv").open()))
    assert math.isclose(float(rows[0]["id Sim"]), 0.85) and rows[0]["id Sim n"] == "2"
    assert math.isclose(float(rows[0]["id Div share sd"]), 0.25 / math.sqrt(2))
    assert rows[1]["scene fid"] == "" and rows[1]["id Sim sd"] == "" and rows[1]["id Sim n"] == "1"


def test_an_experiment_without_its_own_metrics_file_is_not_a_result():
    # A queued or killed experiment is listed by `dvc exp show` with no metrics of its own.
    killed = {"rev": "k", "name": "fig5-ours-s1", "error": None, "data": {"params": {}, "metrics": {}}}
    show = [{"rev": "123", "name": "main", "data": {"metrics": {}},
             "experiments": [{"name": "fig5-ours-s1", "revs": [killed]},
                             {"name": "fig5-ours-s0", "revs": [_exp_show("fig5-ours-s0", 0.5)]}]}]
    assert set(experiments(show)) == {"fig5-ours-s0"}


def test_entries_left_queued_are_found_in_the_queue_status():
    from cocoins.eval.ablate import queued_names

    status = """Task     Name                        Created    Status
cc56f0c  table5-same-prompt-s1       03:54 AM   Success
83892fa  fig5-ours-s2                04:51 AM   Queued
3f706e6  table3-ours-s0              05:46 AM   Queued
9a1b2c3  table3-pos-s1               05:47 AM   Failed

Worker status: 0 active, 0 idle
"""
    assert queued_names(status) == ["fig5-ours-s2", "table3-ours-s0"]
    assert queued_names("Task     Name   Created    Status\n\nWorker status: 0 active, 0 idle\n") == []


def test_other_entries_left_queued_stop_a_run_and_its_own_are_run_not_queued_again(monkeypatch, tmp_path):
    import cocoins.eval.ablate as ablate_module

    root = Path(__file__).resolve().parents[1]
    calls = []
    status = {"text": "Task     Name             Created    Status\n3f706e6  table3-ours-s0   05:46 AM   Queued\n"
                      "83892fa  fig5-ours-s2     04:51 AM   Queued\n"}

    def fake_dvc(*args, cwd):
        calls.append(args)
        return status["text"] if args[:2] == ("queue", "status") else "[]" if args[:2] == ("exp", "show") else ""

    monkeypatch.setattr(ablate_module, "dvc", fake_dvc)
    with pytest.raises(SystemExit, match="fig5-ours-s2"):
        ablate_module.ablate("table3", root, rows=[3], seeds=[0, 1], out_dir=tmp_path)
    assert not any(c[:2] == ("exp", "run") for c in calls)
    status["text"] = status["text"].splitlines()[0] + "\n" + status["text"].splitlines()[1] + "\n"
    calls.clear()
    ablate_module.ablate("table3", root, rows=[3], seeds=[0, 1], out_dir=tmp_path)
    queued = [c[c.index("-n") + 1] for c in calls if c[:3] == ("exp", "run", "--queue")]
    assert queued == ["table3-ours-s1"] and ("exp", "run", "--run-all", "-j", "1") in calls
