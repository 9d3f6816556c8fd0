"""Printed at the end of `make repro`: the evaluation metrics and where to look next."""

from __future__ import annotations

import json
from pathlib import Path

# (header, key in reports/eval/metrics.json); a set without a key (the training-data row has no latent
# metrics, a run without the identity stage has no identity metrics) prints "-".
COLUMNS = (("id Sim", "identity_sim"), ("base", "base_identity_sim"), ("id Div", "identity_div"),
           ("base", "base_identity_div"), ("latent Sim", "latent_sim"), ("base", "base_latent_sim"),
           ("latent Div", "latent_div"))


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def render(metrics: dict) -> str:
    """One line per prompt set (and the data row) with the columns above; '-' where a value is absent."""
    width = max(len(h) for h, _ in COLUMNS) + 2
    lines = [f"{'set':<10}" + "".join(f"{h:>{width}}" for h, _ in COLUMNS)]
    for name, values in metrics.items():
        lines.append(f"{name:<10}" + "".join(f"{_cell(values.get(key)):>{width}}" for _, key in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    metrics = Path("reports/eval/metrics.json")
    if not metrics.is_file():
        print("no reports/eval/metrics.json yet; run `dvc repro`")
        return
    print("\nCoCoIns evaluation (reports/eval/metrics.json; base: the same prompts with no pseudo-word):")
    print(render(json.loads(metrics.read_text())))
    grids = sorted(Path("reports/eval/grids").glob("*.png"))
    print(f"\ngrids: {len(grids)} PNGs in reports/eval/grids/; curves: `dvc plots show` (offline HTML)")


if __name__ == "__main__":
    main()
