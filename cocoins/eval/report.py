"""Scores -> the files DVC reads: metrics.json (per set and overall) and the per-subject / per-setting plot data.

metrics.json stays flat per set so `dvc exp show` / `dvc metrics diff` columns read like the paper's tables:
`portraits.face_sim`, `portraits.base_face_sim`, `scenes.clip`, ... The primary method (CoCoIns) has bare
names; every other method is prefixed with its name (`base_`, `storydiffusion_`). Beside every Sim, Div and
scene fidelity stand its bootstrap interval (`identity_div_ci_low`, `identity_div_ci_high`) and its value within
each subject (`identity_div_man`, `identity_div_man_ci_low`, ...): across subjects, the sex difference alone adds
diversity that no code had to create. `overall` is the mean of the sets' values, without intervals. A null
metric is written as null (DVC omits it from its tables) and its reason goes to `<set>.null_reasons`
(data-caused) or `overall.null_reasons` (absent model), which `dvc exp show` shows as text.
"""

from __future__ import annotations

from typing import Optional

from cocoins.eval.scoring import WITH_INTERVAL, Scores

GAPS = {"consistency_gap": "latent_sim", "face_sim_gap": "face_sim", "identity_sim_gap": "identity_sim"}
RATIOS = {"scene_fidelity_ratio": "scene_fidelity"}    # primary / reference (the issue: >= 0.9 on Scenes)
# Written per subject into metrics.json (with intervals); PLOTTED get a bar chart per subject and per setting.
PER_SUBJECT = ("face_sim", "face_div", "latent_sim", "latent_div", "identity_sim", "identity_div")
PLOTTED = ("face_sim", "face_div", "clip", "dreamsim", "latent_sim", "latent_div", "identity_sim", "identity_div",
           "trait_agreement", "scene_fidelity")


def _round(v):
    """6 significant digits: stable diffs, and tiny latent Div values (1e-4 at the embedded scale) survive."""
    return float(f"{v:.6g}") if isinstance(v, float) else v


def _gap(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else _round(a - b)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else _round(a / b)


def subject_keys(row: dict, prefix: str) -> dict:
    """`<prefix><metric>_<subject>` (and its `_ci_low` / `_ci_high`) of one per-subject score row."""
    subject = row["subject"].replace(" ", "_")
    out = {}
    for m in PER_SUBJECT:
        out[f"{prefix}{m}_{subject}"] = _round(row.get(m))
        for side in ("low", "high"):
            out[f"{prefix}{m}_{subject}_ci_{side}"] = _round(row.get(f"{m}_ci_{side}"))
    return out


def dvc_metrics(scores: Scores, primary: str = "cocoins", reference: Optional[str] = "base") -> dict:
    out = {}
    for set_name, methods in [*scores.sets.items(), ("overall", scores.overall)]:
        flat: dict = {}
        for method, metrics in methods.items():
            prefix = "" if method == primary else f"{method}_"
            flat.update({prefix + k: _round(v) for k, v in metrics.items()})
            for row in scores.subjects:
                if set_name != "overall" and row["set"] == set_name and row["method"] == method:
                    flat.update(subject_keys(row, prefix))
        if primary in methods and reference in methods:
            for gap, metric in GAPS.items():
                flat[gap] = _gap(methods[primary].get(metric), methods[reference].get(metric))
            for ratio, metric in RATIOS.items():
                flat[ratio] = _ratio(methods[primary].get(metric), methods[reference].get(metric))
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
    """Plot data files (name -> rows), one bar chart each: `<set>_<metric>_per_<subject|setting>` for every
    metric of PLOTTED with at least one value there, so `dvc plots show` draws no empty panel (a metric whose
    model is absent has no file), and only where the set has two subjects or settings or more (Portraits has
    one setting: its panel would repeat the set's value). Each row is one (subject or setting, method):
    `label` like "man / cocoins", `value`, and `ci_low` / `ci_high` where the metric has an interval (else null)."""
    tables: dict[str, list[dict]] = {}
    for kind, rows in (("subject", scores.subjects), ("setting", scores.settings)):
        for set_name in scores.sets:
            part = [r for r in rows if r["set"] == set_name]
            if len({r[kind] for r in part}) < 2:
                continue
            for m in PLOTTED:
                if not any(r.get(m) is not None for r in part):
                    continue
                ci = m in WITH_INTERVAL
                tables[f"{set_name}_{m}_per_{kind}"] = [
                    {"label": r["label"], kind: r[kind], "method": r["method"], "value": _round(r.get(m)),
                     "ci_low": _round(r.get(f"{m}_ci_low")) if ci else None,
                     "ci_high": _round(r.get(f"{m}_ci_high")) if ci else None} for r in part]
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
