"""SIGKILL a stage process once it has written what a resume must keep (shared by the resume-after-kill tests)."""

import signal
import time
from typing import Callable


def kill_when(victim, ready: Callable[[], bool], what: str, timeout_s: float = 240) -> None:
    """Wait until `ready()` while `victim` (a Popen with text stdout) runs, then SIGKILL it and reap it."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert victim.poll() is None, f"the stage exited before {what}:\n" + victim.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:g} s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
