"""benchmarks/cpu_repro.py's per-op trace: every ATen op's output hashed in order, and the first difference named."""

import gzip

import torch
from test_cpu_repro import load_bench   # benchmarks/cpu_repro.py as a module


def test_the_trace_hashes_each_op_and_compare_names_the_first_difference(tmp_path):
    bench = load_bench()
    traces = []
    for scale in (2.0, 2.0, 3.0):
        ops = bench.OpTrace()
        with ops.mode:
            x = torch.arange(4, dtype=torch.float32)
            (x * scale).sum()
        traces.append(ops.lines)
    assert [line.split("\t")[1] for line in traces[0]] == ["aten.arange.default", "aten.mul.Tensor",
                                                         "aten.sum.default"]
    assert bench.compare_traces(traces[0], traces[1]) == "the same bits for all 3 ops"
    assert bench.compare_traces(traces[0], traces[2]).startswith(
        "op 1 (aten.mul.Tensor): other output bits")
    other_path = ["0\taten.arange.default\t" + traces[0][0].split("\t")[2], "1\taten.add.Tensor\t0"]
    assert "another op (aten.mul.Tensor against aten.add.Tensor)" in bench.compare_traces(traces[0], other_path)
    path = tmp_path / "t.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(traces[0]) + "\n")
    assert bench.read_trace(path) == traces[0]
