"""Bad params stop a stage with one line naming the key and the fix, exit 1, nothing written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("change, message", [
    ({"data": {"source": "imagenet"}}, "data.source = 'imagenet' is not allowed; set it to one of: synthetic, celeba, folder"),
    ({"data": {"source": "celeba", "root": "missing/celeba"}}, "data.root = 'missing/celeba' does not exist"),
    ({"data": {"identities": "ten"}}, "data.identities = 'ten' is not allowed; set it to an integer"),
])
def test_ingest_refuses_bad_params(tmp_path, change, message):
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for group, values in change.items():
        params[group].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "stages/ingest.py"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: params.yaml: {message}" + lines[0].split(message, 1)[1]]
    assert not (tmp_path / "data").exists()
