"""Casts and copies per train step at the tiny size, with the full-size run's precision (issue 26).

    python benchmarks/step_casts.py                              # batch 4, latents 16 px, bf16 towers (the loop's path)
    python benchmarks/step_casts.py --precision bf16-autocast    # bf16 towers + bf16 autocast (the path before issue 26)
    python benchmarks/step_casts.py --precision fp32             # the mini-world's own precision (no autocast)

The same path as `stages/train.py` + `cocoins/training/loop.py` at full size: frozen towers stored in bf16, the
mapper in fp32, and autocast as `cocoins.training.loop.tower_autocast` says for the towers' dtype (off for bf16
towers; `bf16-autocast` forces it on, as accelerate's autocast did before), then backward. One warm-up step, then
one step under `torch.profiler` on the CPU. Counted: casts (aten::to, aten::_to_copy) and copies (aten::copy_),
per step, grouped by the step's phase (record_function labels in cocoins/training/step.py) and by the nearest
project / diffusers / transformers frame of their call stack; and the text encoders' forward calls per step, with
the rows they encode. Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import traceback
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import build, one_step  # noqa: E402

from cocoins.method.losses import LossConfig  # noqa: E402
from cocoins.method.triplets import TripletConfig  # noqa: E402
from cocoins.training.loop import tower_autocast  # noqa: E402
from cocoins.training.step import CocoinsStep  # noqa: E402

CASTS = ("aten::to", "aten::_to_copy")
COPIES = ("aten::copy_",)
PHASES = ("cocoins/draw", "cocoins/text_encoders_3B_grad", "cocoins/unet_3B_grad",
          "cocoins/references_2B_no_grad", "cocoins/loss")
OWN_FRAMES = ("cocoins/", "diffusers/", "transformers/", "benchmarks/train_step.py")


def origin(stack: list[str]) -> str:
    """The innermost frame of the project or of the model libraries: where the op was asked for."""
    for frame in stack:
        if any(part in frame for part in OWN_FRAMES) and "torch/" not in frame:
            return frame.split("site-packages/")[-1].split(str(ROOT) + "/")[-1]
    return "(other)"


def count(args) -> dict:
    args.device, args.latent_size = "cpu", args.latent_size
    pipe, encoder, mapper, spec, batch = build(args)
    towers = torch.float32 if args.precision == "fp32" else torch.bfloat16
    pipe.to(dtype=towers)   # stages/train.py on CUDA: frozen weights in the mixed-precision dtype
    step_fn = CocoinsStep(pipe.unet, encoder, spec, 256, LossConfig(), TripletConfig())
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-4, weight_decay=0.2)
    autocasts = args.precision == "bf16-autocast" or (args.precision == "bf16" and tower_autocast(towers).enabled)
    text_calls = collections.Counter()
    for k, text_encoder in enumerate((pipe.text_encoder, pipe.text_encoder_2)):
        text_encoder.register_forward_pre_hook(
            lambda m, a, kw, k=k: text_calls.update({f"calls {k + 1}": 1, f"rows {k + 1}": len(a[0])}),
            with_kwargs=True)

    def step(k):
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocasts else contextlib.nullcontext():
            return one_step(step_fn, mapper, optimizer, batch, k, 3)

    step(0)
    text_calls.clear()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False, with_stack=True) as prof:
        step(1)
    text_encoder_calls = dict(text_calls)
    events = prof.events()
    # Phase of each op: the record_function range that encloses it (by time interval on the same thread).
    ranges = [(e.name, e.time_range.start, e.time_range.end) for e in events if e.name in PHASES]

    def phase(e):
        for name, start, end in ranges:
            if start <= e.time_range.start and e.time_range.end <= end:
                return name
        return "outside phases (backward, optimizer)"

    def outer_op(e):
        """The outermost aten op above e (the op that asked for the cast or copy), or e itself."""
        top, node = e, e.cpu_parent
        while node is not None:
            if node.name.startswith("aten::"):
                top = node
            node = node.cpu_parent
        return top.name

    by_op = collections.Counter()
    totals = collections.Counter()
    by_phase = collections.Counter()
    for e in events:
        kind = "cast" if e.name in CASTS else "copy" if e.name in COPIES else None
        if kind is None:
            continue
        totals[e.name] += 1
        by_phase[(kind, phase(e))] += 1
        by_op[(kind, outer_op(e))] += 1
    # The profiler's CPU events carry no Python stack here; a dispatch mode sees every cast and copy below
    # autocast with the Python frame that asked for it (backward ops run in the autograd engine: no frame).
    with OriginCounter() as counter:
        step(2)  # a third step: the origins of its ops (counts match the profiled step's forward)
    return {"totals": totals, "by_phase": by_phase, "by_op": by_op, "by_origin": counter.counts,
            "text_encoder_calls": text_encoder_calls, "autocast": autocasts}


class OriginCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        kind = "cast" if name in ("aten._to_copy", "aten.to") else "copy" if name == "aten.copy_" else None
        if kind is not None:
            frames = [f"{f.filename}:{f.lineno} {f.name}" for f in reversed(traceback.extract_stack())]
            self.counts[(kind, origin(frames))] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--latent-size", type=int, default=16)
    parser.add_argument("--precision", choices=("bf16", "bf16-autocast", "fp32"), default="bf16")
    parser.add_argument("--top", type=int, default=15, help="origins listed per kind")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = count(args)
    print(f"one train step, batch {args.batch_size}, latents {args.latent_size}px, precision {args.precision}, "
          f"autocast {'on' if result['autocast'] else 'off'}")
    calls = result["text_encoder_calls"]
    print(f"  text-encoder forward calls per step: encoder 1 {calls['calls 1']} ({calls['rows 1']} rows), "
          f"encoder 2 {calls['calls 2']} ({calls['rows 2']} rows)")
    for name in CASTS + COPIES:
        print(f"  {name:16s} {result['totals'][name]:6d}")
    print("by phase:")
    for (kind, ph), n in sorted(result["by_phase"].items()):
        print(f"  {kind:5s} {ph:40s} {n:6d}")
    for kind in ("cast", "copy"):
        print(f"outermost aten op above each {kind} (profiled step):")
        rows = sorted(((n, o) for (k, o), n in result["by_op"].items() if k == kind), reverse=True)
        for n, o in rows[:args.top]:
            print(f"  {n:6d}  {o}")
    for kind in ("cast", "copy"):
        print(f"Python frame asking for a {kind} (dispatch mode, forward only; autocast's own casts are not seen):")
        rows = sorted(((n, o) for (k, o), n in result["by_origin"].items() if k == kind), reverse=True)
        for n, o in rows[:args.top]:
            print(f"  {n:6d}  {o}")


if __name__ == "__main__":
    main()
