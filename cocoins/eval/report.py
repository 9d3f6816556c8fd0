"""Scores -> the files DVC reads: metrics.json (per set and overall) and the per-subject / per-setting plot data.

metrics.json stays flat per set so `dvc exp show` / `dvc metrics diff` columns read like the paper's tables:
`portraits.face_sim`, `portraits.base_face_sim`, `scenes.clip`, ... The primary method (CoCoIns) has bare
names; every other method is prefixed with its name (`base_`, `storydiffusion_`). A null metric is written as
null (DVC omits it from its tables) and its reason goes to `<set>.null_reasons` (data-caused) or
`overall.null_reasons` (absent model), which `dvc exp show` shows as text.
"""

from __future__ import annotations

from typing import Optional

from cocoins.eval.scoring import Scores

GAPS = {"consistency_gap": "latent_sim", "face_sim_gap": "face_sim", "identity_sim_gap": "identity_sim"}


def _round(v):
    """6 significant digits: stable diffs, and tiny latent Div values (1e-4 at the embedded scale) survive."""
    return float(f"{v:.6g}") if isinstance(v, float) else v


def _gap(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else _round(a - b)


def dvc_metrics(scores: Scores, primary: str = "cocoins", reference: Optional[str] = "base") -> dict:
    out = {}
    for set_name, methods in [*scores.sets.items(), ("overall", scores.overall)]:
        flat: dict = {}
        for method, metrics in methods.items():
            prefix = "" if method == primary else f"{method}_"
            flat.update({prefix + k: _round(v) for k, v in metrics.items()})
        if primary in methods and reference in methods:
            for gap, metric in GAPS.items():
                flat[gap] = _gap(methods[primary].get(metric), methods[reference].get(metric))
        reasons = {k[len(set_name) + 1:]: v for k, v in scores.reasons.items() if k.startswith(f"{set_name}.")}
        if set_name == "overall":
            reasons.update(scores.unavailable)
        if reasons:
            flat["null_reasons"] = dict(sorted(reasons.items()))
        out[set_name] = flat
    return out


def nested_metrics(scores: Scores) -> dict:
    """The score_folder layout: {set: {method: metrics}}, overall, and every null's reason."""
    return {"sets": {s: {m: {k: _round(v) for k, v in ms.items()} for m, ms in methods.items()}
                     for s, methods in scores.sets.items()},
            "overall": {m: {k: _round(v) for k, v in ms.items()} for m, ms in scores.overall.items()},
            "null_reasons": {**scores.unavailable, **scores.reasons}}


def plot_tables(scores: Scores) -> dict[str, list[dict]]:
    """Plot data files (name -> rows): `<set>_subjects` and `<set>_settings` (every set, so dvc.yaml's plots
    always find their files).
    Each row is one (subject or setting, method) with a `label` like "man / cocoins" for the bar charts."""
    tables: dict[str, list[dict]] = {}
    for kind, rows in (("subjects", scores.subjects), ("settings", scores.settings)):
        for set_name in scores.sets:
            part = [{k: _round(v) for k, v in r.items()} for r in rows if r["set"] == set_name]
            if part:
                tables[f"{set_name}_{kind}"] = part
    return tables


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def markdown_table(header: list[str], rows: list[list]) -> str:
    cell = _cell
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
