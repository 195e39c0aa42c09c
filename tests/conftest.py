"""Shared fixtures for the project's tests."""

import os
import shutil

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread: on a small shared machine, two threads fight and run slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def require_programs(*names: str, install: str) -> list[str]:
    """The paths of system programs a test needs (pip cannot install them).

    Missing ones skip the test with the command that installs them; under CI (CI=true), where .ci/run
    installs them, a missing program fails the test instead, so a skip never passes for a check.
    """
    paths = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        reason = f"needs {', '.join(missing)}, not installed: {install}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: .ci/run installs it)")
        pytest.skip(reason)
    return paths
