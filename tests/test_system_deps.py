"""Missing system programs: a skip naming the fix on a laptop, a failure under CI=true; `make install`'s offline
plot step fails under CI=true (--strict) instead of warning."""

import pytest
from system_deps import require

from cocoins.tools import offline_plots


def test_a_missing_program_skips_with_the_fix_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromedriver missing; apt-get install chromium-driver"):
        require(False, "chromedriver", "apt-get install chromium-driver")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true a missing system dependency fails"):
        require(False, "chromedriver", "apt-get install chromium-driver")
    require(True, "chromedriver", "apt-get install chromium-driver")   # found: nothing happens


def test_offline_plots_without_npm_warns_and_fails_when_strict(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(offline_plots.shutil, "which", lambda name: None)
    assert offline_plots.main(["--install"]) == 0
    assert "warning: offline plot template not installed: npm not found" in capsys.readouterr().err
    assert offline_plots.main(["--install", "--strict"]) == 1
    assert "error: offline plot template not installed: npm not found" in capsys.readouterr().err
    assert not (tmp_path / ".dvc" / "offline-plots.html").exists()
