"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """One torch thread: tiny tensors and models run fastest that way (thread-pool wake-ups
    dominate gradcheck's many calls) and do not fight other processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
