"""How far apart characters' looks lie on the trained mini-world: the numbers behind the casting thresholds
(cocoins.characters.looks: TRAIT_LOOKALIKE, TRAIT_DISTINCT).

For code seeds 0..N-1, each code's look (cocoins.characters.looks.render_looks: portraits at the sheet's noises
0-3, read by the identity stage's trait classifier) and its look at noises 4-7. Prints quantiles (5, 25, 50, 75,
95 %) of: one code against itself at the other noises (its own spread), two codes at the same noises, two codes
at different noises; and of pairs among the first 20 codes with the nouns man and woman.

    nice -n 10 python benchmarks/look_spread.py --base /work/main/models/base --mapper /work/main/models/mapper \
        --identity /work/main/models/identity
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / "models/base"))
    ap.add_argument("--mapper", default=str(ROOT / "models/mapper"))
    ap.add_argument("--identity", default=str(ROOT / "models/identity"))
    ap.add_argument("--codes", type=int, default=40)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    import numpy as np
    import torch

    from cocoins.characters.casting import look_distance
    from cocoins.characters.codes import code_from_seed
    from cocoins.characters.looks import LookSettings, load_identity_metric, render_looks
    from cocoins.pipeline import CoCoInsPipeline

    torch.set_num_threads(2)
    pipe = CoCoInsPipeline.from_pretrained(args.base, mapper=args.mapper)
    pipe.sdxl.set_progress_bar_config(disable=True)
    metric, n = load_identity_metric(args.identity), args.codes
    codes = torch.stack([code_from_seed(s, pipe.code_dim) for s in range(n)])
    a = render_looks(pipe, codes, metric, LookSettings(args.steps, 5.0, pipe.default_size), batch_size=64)
    b = render_looks(pipe, codes, metric, LookSettings(args.steps, 5.0, pipe.default_size, seeds=(4, 5, 6, 7)),
                     batch_size=64)
    own = [look_distance(x, y) for x, y in zip(a, b)]
    pairs = [look_distance(a[i], a[j]) for i in range(n) for j in range(i + 1, n)]
    cross = [look_distance(a[i], b[j]) for i in range(n) for j in range(n) if i != j]

    def q(v):
        return np.percentile(v, [5, 25, 50, 75, 95]).round(4)

    print("self (same code, other noises):", q(own), "max", max(own))
    print("pairs (two codes, same noises):", q(pairs))
    print("cross (two codes, other noises):", q(cross))
    for noun in ("man", "woman"):
        c = render_looks(pipe, codes[:20], metric, LookSettings(args.steps, 5.0, pipe.default_size, noun=noun),
                         batch_size=64)
        print(noun, "pairs:", q([look_distance(c[i], c[j]) for i in range(20) for j in range(i + 1, 20)]))


if __name__ == "__main__":
    main()
