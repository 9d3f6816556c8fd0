"""Printed at the end of `make repro`: the evaluation metrics and where to look next."""

from __future__ import annotations

import json
from pathlib import Path


def main() -> None:
    metrics = Path("reports/eval/metrics.json")
    if not metrics.is_file():
        print("no reports/eval/metrics.json yet; run `dvc repro`")
        return
    data = json.loads(metrics.read_text())
    print("\nCoCoIns evaluation (reports/eval/metrics.json):")
    print(f"{'set':<10} {'latent Sim':>11} {'base Sim':>9} {'gap':>8} {'latent Div':>11}")
    for name, m in data.items():
        print(f"{name:<10} {m['latent_sim']:>11.4f} {m['base_latent_sim']:>9.4f} "
              f"{m['consistency_gap']:>8.4f} {m['latent_div']:>11.4f}")
    grids = sorted(Path("reports/eval/grids").glob("*.png"))
    print(f"\ngrids: {len(grids)} PNGs in reports/eval/grids/; curves: `dvc plots show` (offline HTML)")


if __name__ == "__main__":
    main()
