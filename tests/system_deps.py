"""System programs some tests need (npm's plot template, Chromium, chromedriver): without one a test skips with
the fix named, except under CI=true, where `.ci/run` installed them and a missing one is a failure."""

import os

import pytest


def require(found: bool, what: str, fix: str) -> None:
    if found:
        return
    message = f"{what} missing; {fix}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (under CI=true a missing system dependency fails the test)", pytrace=False)
    pytest.skip(message)
