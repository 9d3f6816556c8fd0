"""Restart and sharding of the chunked data stages (cocoins/data/workdir.py)."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cocoins.data.workdir import KEY, WorkDir, row_keys, run_chunked

from test_data_stages import run, write_params

ROOT = Path(__file__).resolve().parents[1]


class Killed(Exception):
    pass


def killing(real_make, attr, after):
    """Wrap a backend factory so the backend's `attr` method raises after `after` calls (a kill mid-stage)."""
    calls = []

    def make(*args, **kwargs):
        backend = real_make(*args, **kwargs)
        method = getattr(backend, attr)

        def wrapped(*a, **k):
            calls.append(1)
            if len(calls) > after:
                raise Killed()
            return method(*a, **k)

        setattr(backend, attr, wrapped)
        return backend
    return make


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from cocoins.backends.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def test_killed_stages_continue_and_match_an_uninterrupted_run(tiny_llava, tmp_path, monkeypatch, capsys):
    import cocoins.backends.captioners as captioners
    import cocoins.backends.masks as masks

    caption = {"backend": "llava", "model": str(tiny_llava), "max_new_tokens": 4, "batch_size": 2,
               "chunk_size": 3, "device": "cpu"}
    mask = {"face_counter": "annotation", "chunk_size": 3}
    outputs = ["data/captions.parquet", "data/tagged.parquet", "data/subjects.parquet"]
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    write_params(clean, caption=caption, mask=mask)
    for name in ("ingest", "caption", "tag", "mask"):
        run(name)
    expected = {p: Path(p).read_bytes() for p in outputs}
    expected_masks = {p.name: p.read_bytes() for p in Path("data/masks").iterdir()}

    killed = tmp_path / "killed"
    killed.mkdir()
    monkeypatch.chdir(killed)
    write_params(killed, caption=caption, mask=mask)
    run("ingest")
    capsys.readouterr()
    # caption: 10 images in chunks of 3; killed while captioning the third chunk (2 chunks = 6 images done).
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(captioners, "make_captioner", killing(captioners.make_captioner, "caption_batch", after=2))
        run("caption")
    assert not Path("data/captions.parquet").exists()     # the final output is written only at the end
    assert len(list(Path("data/work/caption").glob("chunk-*.parquet"))) == 2
    run("caption")
    assert "processed now / reused from data/work/caption: 4 / 6" in capsys.readouterr().out
    run("tag")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(masks, "make_masker", killing(masks.make_masker, "mask_rows", after=1))
        run("mask")
    run("mask")
    assert "processed now / reused from data/work/mask: 7 / 3" in capsys.readouterr().out
    assert {p: Path(p).read_bytes() for p in outputs} == expected
    assert {p.name: p.read_bytes() for p in Path("data/masks").iterdir()} == expected_masks
    # A third run with nothing left to do reuses everything and still writes the same bytes.
    run("caption")
    assert "processed now / reused from data/work/caption: 0 / 10" in capsys.readouterr().out
    assert Path("data/captions.parquet").read_bytes() == expected["data/captions.parquet"]


def test_changed_params_start_over_and_changed_rows_are_redone(tmp_path):
    items = pd.DataFrame({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    items[KEY] = row_keys(items, ["id", "text"])
    seen = []

    def process(chunk):
        seen.extend(chunk["id"])
        return chunk.assign(out=chunk["text"].str.upper())

    work = WorkDir.open(tmp_path / "w", {"model": "m1", "batch": 1})
    assert run_chunked(items, process, work, 2, "t").table["out"].tolist() == ["X", "Y", "Z"]
    items.loc[1, "text"] = "q"   # one input changed: only that row is redone
    items[KEY] = row_keys(items, ["id", "text"])
    run = run_chunked(items, process, WorkDir.open(tmp_path / "w", {"model": "m1", "batch": 1}), 2, "t")
    assert seen == ["a", "b", "c", "b"] and run.table["out"].tolist() == ["X", "Q", "Z"]
    assert (run.processed, run.reused) == (1, 2)
    work = WorkDir.open(tmp_path / "w", {"model": "m2", "batch": 1})   # other params: stale results removed
    assert work.chunks() == []
    with pytest.raises(RuntimeError, match="one row per input row"):
        run_chunked(items, lambda c: c.iloc[:1], work, 3, "t")


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI not in the venv")
def test_two_cpu_processes_split_the_manifest(tmp_path, monkeypatch):
    """`accelerate launch --num_processes 2` on CPU: each process captions its rows, the main one merges."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, caption={"chunk_size": 2})
    run("ingest")
    run("caption")
    single = Path("data/captions.parquet").read_bytes()
    shutil.rmtree("data/work")
    Path("data/captions.parquet").unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu without GPUs: accelerate runs torch.distributed on CPU with gloo (MULTI_CPU).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(ROOT / "stages" / "caption.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chunks = sorted(p.name for p in Path("data/work/caption").glob("chunk-*.parquet"))
    assert chunks == [f"chunk-r{r:03d}-{n:06d}.parquet" for r in (0, 1) for n in range(3)]  # 5 rows each
    assert Path("data/captions.parquet").read_bytes() == single
    assert "processed now / reused from data/work/caption: 10 / 0" in proc.stdout
