"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def private_proxy_cache(tmp_path_factory):
    """Searches share one proxy cache (autoloss.utils.cache); in tests it is a temporary folder, not
    the user's ~/.cache/autoloss."""
    old = os.environ.get("AUTOLOSS_CACHE")
    os.environ["AUTOLOSS_CACHE"] = str(tmp_path_factory.mktemp("autoloss-cache"))
    yield
    if old is None:
        os.environ.pop("AUTOLOSS_CACHE", None)
    else:
        os.environ["AUTOLOSS_CACHE"] = old


@pytest.fixture(autouse=True, scope="session")
def eager_losses():
    """Surrogates run their eager kernel in tests (AUTOLOSS_COMPILE=0): a compilation costs
    seconds to a minute, so only tests/test_compiled.py compiles, on purpose and once per graph."""
    old = os.environ.get("AUTOLOSS_COMPILE")
    os.environ["AUTOLOSS_COMPILE"] = "0"
    yield
    if old is None:
        os.environ.pop("AUTOLOSS_COMPILE", None)
    else:
        os.environ["AUTOLOSS_COMPILE"] = old


@pytest.fixture
def single_thread():
    """One torch thread: tiny tensors and models run fastest that way (thread-pool wake-ups
    dominate gradcheck's many calls) and do not fight other processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
