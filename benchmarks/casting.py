"""Casting measured on the trained mini-world (issue 25): does `cocoins character new --distinct` give a cast
whose members look less alike than plain code seeds?

For each library seed s (first code seed F = 1000 s), two casts of `--cast` characters:
- plain: code seeds F, F + 1, ..., as `cocoins character new NAME --seed N` makes them;
- distinct: `distinct_character` one after the other into an empty library, candidates from seed F on (each
  next member's first candidate is the seed after the last one kept), exactly what `--distinct` runs.

Both casts are then measured on noises the casting never saw (portraits at --measure-seeds), by the same
identity metric (the identity stage's trait classifier): the smallest pairwise distance (the cast's two
closest look-alikes) and the mean pairwise distance, 1 - cos of looks. Printed as a table with the mean and
spread over library seeds; the sheets of both casts for the first library seed are written as PNGs.

    nice -n 10 python benchmarks/casting.py --base /work/main/models/base --mapper /work/main/models/mapper \
        --identity /work/main/models/identity --sheets docs/images
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pairwise(looks) -> list[float]:
    from cocoins.characters.casting import look_distance

    return [look_distance(looks[i], looks[j]) for i in range(len(looks)) for j in range(i + 1, len(looks))]


def cast_sheet(pipe, codes, settings, scale: int):
    """One row per character: its portraits at the look seeds (what `character show` draws), scaled up."""
    from PIL import Image

    from cocoins.method.latent_space import image_strip

    k = len(settings.seeds)
    images = pipe.render([settings.prompt] * (len(codes) * k), codes.repeat_interleave(k, 0)[:, None],
                         list(settings.seeds) * len(codes), settings.steps, settings.guidance, settings.size,
                         settings.size, batch_size=64)
    rows = [image_strip(images[i * k:(i + 1) * k]) for i in range(len(codes))]
    gap = 4
    sheet = Image.new("RGB", (rows[0].width, len(rows) * (rows[0].height + gap) - gap), "white")
    for i, row in enumerate(rows):
        sheet.paste(row, (0, i * (row.height + gap)))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / "models/base"))
    ap.add_argument("--mapper", default=str(ROOT / "models/mapper"))
    ap.add_argument("--identity", default=str(ROOT / "models/identity"))
    ap.add_argument("--cast", type=int, default=8)
    ap.add_argument("--library-seeds", type=int, default=3)
    ap.add_argument("--min-distance", type=float, default=None, help="default: the metric's (--distinct's default)")
    ap.add_argument("--max-tries", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="portrait steps (the mini-world evaluation's 20)")
    ap.add_argument("--measure-seeds", type=int, nargs="+", default=list(range(100, 108)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sheets", default=None, help="folder for casting-plain.png and casting-distinct.png")
    args = ap.parse_args()

    import torch

    from cocoins.characters.codes import code_from_seed
    from cocoins.characters.library import CharacterLibrary
    from cocoins.characters.looks import LookSettings, distinct_character, load_identity_metric, render_looks
    from cocoins.pipeline import CoCoInsPipeline

    torch.set_num_threads(args.threads)
    pipe = CoCoInsPipeline.from_pretrained(args.base, mapper=args.mapper)
    pipe.sdxl.set_progress_bar_config(disable=True)
    metric = load_identity_metric(args.identity)
    settings = LookSettings(args.steps, 5.0, pipe.default_size)
    measure = LookSettings(args.steps, 5.0, pipe.default_size, seeds=tuple(args.measure_seeds))
    wanted = metric.distinct if args.min_distance is None else args.min_distance

    rows = []
    for s in range(args.library_seeds):
        first, start = 1000 * s, time.perf_counter()
        plain = torch.stack([code_from_seed(first + k, pipe.code_dim) for k in range(args.cast)])
        tries, reached, seed = [], 0, first
        with tempfile.TemporaryDirectory() as tmp:
            library = CharacterLibrary(tmp)
            for k in range(args.cast):
                character, result = distinct_character(pipe, library, f"c{k}", metric, settings, seed, wanted,
                                                       args.max_tries, batch_size=64)
                library.add(character)
                tries.append(result.tries)
                reached += result.reached
                seed = result.seed + 1
            distinct = torch.stack([library.get(f"c{k}").z for k in range(args.cast)])
            kept = [library.get(f"c{k}").code_seed for k in range(args.cast)]
        row = {"library_seed": s, "kept_seeds": kept, "tries": tries, "reached": reached}
        for name, codes in (("plain", plain), ("distinct", distinct)):
            d = pairwise(render_looks(pipe, codes, metric, measure, batch_size=64))
            row[name] = (min(d), statistics.fmean(d), sum(x < metric.lookalike for x in d))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(f"library seed {s}: plain min {row['plain'][0]:.3f} mean {row['plain'][1]:.3f} "
              f"({row['plain'][2]} look-alike pairs) | distinct min {row['distinct'][0]:.3f} mean "
              f"{row['distinct'][1]:.3f} ({row['distinct'][2]}) | kept seeds {kept}, tries {tries} "
              f"({row['seconds']:.0f} s)", flush=True)
        if s == 0 and args.sheets:
            out = Path(args.sheets)
            out.mkdir(parents=True, exist_ok=True)
            for name, codes in (("plain", plain), ("distinct", distinct)):
                cast_sheet(pipe, codes, settings, scale=3).save(out / f"casting-{name}.png")
            print(f"wrote {out / 'casting-plain.png'} and {out / 'casting-distinct.png'} (library seed 0: one row "
                  f"per character, its portraits at noise seeds {list(settings.seeds)})")

    def stat(name, i):
        v = [r[name][i] for r in rows]
        return f"{statistics.fmean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"

    pairs = args.cast * (args.cast - 1) // 2
    print()
    print(f"Cast of {args.cast}, {args.library_seeds} library seeds; distances 1 - cos of looks by the {metric.name} "
          f"metric at noises {args.measure_seeds[0]}..{args.measure_seeds[-1]} (not the casting's); --distinct at "
          f"min distance {wanted:g}, look-alike below {metric.lookalike:g}")
    print()
    print("| cast | min pairwise distance | mean pairwise distance | look-alike pairs (of %d) |" % pairs)
    print("|---|---|---|---|")
    for name in ("plain", "distinct"):
        label = {"plain": "plain seeds", "distinct": "--distinct"}[name]
        print(f"| {label} | {stat(name, 0)} | {stat(name, 1)} | {stat(name, 2)} |")
    print()
    print(f"--distinct reached the minimum for {sum(r['reached'] for r in rows)} of {args.cast * len(rows)} members; "
          f"candidates per member: mean {statistics.fmean([t for r in rows for t in r['tries']]):.1f}, "
          f"max {max(t for r in rows for t in r['tries'])}; {statistics.fmean([r['seconds'] for r in rows]):.0f} s per "
          f"library seed on {args.threads} threads")


if __name__ == "__main__":
    main()
