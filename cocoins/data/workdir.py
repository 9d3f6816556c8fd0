"""Restartable, shardable processing for the data stages (caption, tag, mask).

A stage hands `run_chunked` its input rows, a key per row and a `process(chunk) -> rows` function. Results
go to a work dir (`data/work/<stage>/`, git-ignored and not a DVC output) one chunk at a time, each
chunk a Parquet file written atomically. A stage killed at 80% finds 80% of its rows there on the next run
and processes only the rest; the final table is assembled from the chunks in input order and written once
by the stage. Keys hash each row's input values, so rows whose input changed are redone, and rows added
later (a larger `data.limit`) reuse what is done. `fingerprint.json` hashes the params that change results;
when they change, the work dir is cleared (batch size, chunk size, device, host, timeouts, retries do not).

Under `accelerate launch` (WORLD_SIZE > 1) process r takes rows r, r+W, r+2W, ... of the input, writes its
own chunks, and the main process merges after a barrier; other processes return None. Each process uses its
own GPU (`stage_device`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from tqdm import tqdm

from cocoins.io import atomic_path
from cocoins.runtime import UserError, resolve_device

KEY = "_key"
FINGERPRINT = "fingerprint.json"
# Params that do not change results: changing them keeps the work dir. Backend and model do change them and stay
# in the fingerprint (`dvc repro -f tag` with another model redoes every row). The host does not: another server
# serving the same model gives the same answers (temperature 0), and moving ollama must not throw away a day of
# captions. That is safe because a server that did not answer never leaves a row here (chat.OllamaUnavailable
# stops the stage before its chunk is written), so no cached row stands for "the host was down".
OPERATIONAL = frozenset({"batch_size", "chunk_size", "device", "host", "timeout", "retries", "retry_wait"})


class Dist:
    """This process's place among the stage's processes: torch.distributed via accelerate, or alone."""

    def __init__(self, device: str = "auto", barrier_timeout_s: int | None = None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self._state = None
        if self.world > 1:
            from accelerate import PartialState  # only under `accelerate launch`

            # The stage's device param decides the backend (gloo on CPU), not whether a GPU happens to exist:
            # `device: cpu` on a GPU machine must still run its processes on the CPU.
            # barrier_timeout_s: how long a process waits at a collective (launch.barrier_timeout_s; NCCL's
            # default of 10 minutes is shorter than the main process's merge or scoring at full scale).
            timeout = {} if barrier_timeout_s is None else {"timeout": timedelta(seconds=barrier_timeout_s)}
            self._state = PartialState(cpu=resolve_device(device).type == "cpu", **timeout)
        self.rank = self._state.process_index if self._state else 0
        self.local_rank = self._state.local_process_index if self._state else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


def stage_device(name: str, dist: Optional[Dist] = None) -> torch.device:
    """The device param resolved for this process: under accelerate each process gets its own GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and dist is not None and dist.world > 1 and device.index is None:
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return device


def row_keys(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """A stable hash of each row's input values (the columns that decide its result)."""
    return [hashlib.sha256(json.dumps([str(v) for v in values]).encode()).hexdigest()[:24]
            for values in rows[columns].itertuples(index=False, name=None)]


def result_config(params) -> dict:
    """A params dataclass as a dict, minus the operational keys that do not change results."""
    return {k: v for k, v in vars(params).items() if k not in OPERATIONAL}


@dataclass
class WorkDir:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike, config: dict, dist: Optional[Dist] = None) -> "WorkDir":
        """The work dir for results of `config`; stale results (other config) are removed first."""
        root = Path(root)
        text = json.dumps(config, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        marker = root / FINGERPRINT
        if dist is None or dist.is_main:
            if marker.is_file() and json.loads(marker.read_text()).get("sha256") != digest:
                print(f"[workdir] {root}: params changed since its results were written; starting over")
                shutil.rmtree(root)
            root.mkdir(parents=True, exist_ok=True)
            if not marker.is_file():
                with atomic_path(marker) as tmp:
                    tmp.write_text(json.dumps({"sha256": digest, "config": json.loads(text)}, indent=1) + "\n")
        if dist is not None:
            dist.barrier()
        return cls(root)

    def chunks(self) -> list[Path]:
        return sorted(self.root.glob("chunk-*.parquet"))

    def load(self) -> pd.DataFrame:
        files = self.chunks()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()

    def done_keys(self) -> set[str]:
        return {k for f in self.chunks() for k in pd.read_parquet(f, columns=[KEY])[KEY]}

    def write_chunk(self, rows: pd.DataFrame, rank: int) -> Path:
        mine = list(self.root.glob(f"chunk-r{rank:03d}-*.parquet"))
        path = self.root / f"chunk-r{rank:03d}-{len(mine):06d}.parquet"
        with atomic_path(path) as tmp:
            rows.to_parquet(tmp, index=False, engine="pyarrow")
        return path


@dataclass(frozen=True)
class ChunkRun:
    table: Optional[pd.DataFrame]   # results in input order (main process only; None elsewhere)
    processed: int                  # rows processed by this run (main: all processes; others: their own)
    reused: int                     # rows whose results were already in the work dir


def run_chunked(items: pd.DataFrame, process: Callable[[pd.DataFrame], pd.DataFrame], work: WorkDir,
                chunk_size: int, desc: str, dist: Optional[Dist] = None) -> ChunkRun:
    """Process the rows of `items` (with a `_key` column) not yet in `work`, chunk by chunk; merge all."""
    dist = dist or Dist()
    if KEY not in items:
        raise ValueError(f"items need a {KEY} column (see row_keys)")
    done = work.done_keys()
    # Every process reads the work dir before any writes to it: otherwise a fast rank's new chunks count as
    # "reused" in a slower main process's summary.
    dist.barrier()
    mine = items.iloc[dist.rank::dist.world]
    todo = mine[~mine[KEY].isin(done)]
    bar = tqdm(total=len(todo), desc=f"{desc} [{dist.rank}/{dist.world}]" if dist.world > 1 else desc,
               unit="item", disable=len(todo) == 0)
    for start in range(0, len(todo), chunk_size):
        chunk = todo.iloc[start:start + chunk_size]
        out = process(chunk.reset_index(drop=True))
        if KEY not in out or sorted(out[KEY]) != sorted(chunk[KEY]):
            raise RuntimeError(f"{desc}: process() must return one row per input row, with its {KEY}")
        work.write_chunk(out, dist.rank)
        bar.update(len(chunk))
    bar.close()
    dist.barrier()
    if not dist.is_main:
        return ChunkRun(None, len(todo), 0)
    if items.empty:   # nothing to do: process() on no rows gives the table's columns
        return ChunkRun(process(items.reset_index(drop=True)).drop(columns=KEY), 0, 0)
    results = work.load()
    results = results.drop_duplicates(KEY, keep="last").set_index(KEY)
    missing = ~items[KEY].isin(results.index)
    if missing.any():
        raise UserError(f"{work.root}: {int(missing.sum())} rows have no result after the run (a process "
                        "died?); rerun the stage to finish them")
    reused = int(items[KEY].isin(done).sum())
    return ChunkRun(results.loc[items[KEY]].reset_index(drop=True), len(items) - reused, reused)
