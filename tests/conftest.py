"""Shared fixtures for the project's tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread: on a small shared machine, two threads fight and run slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
