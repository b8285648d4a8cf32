"""Fixtures for the load suite: crash and soak runs against the real
packstored (tests/load/load_support.py starts it and the client
processes). Each test gets a deadline of its own, longer than the other
suites' because the runs are long by design."""

import os
import sys
from pathlib import Path

import pytest

LOAD_DIR = Path(__file__).resolve().parent
if str(LOAD_DIR) not in sys.path:
    sys.path.insert(0, str(LOAD_DIR))

import load_support  # noqa: E402,F401 - finds the build, fails plainly without it
import daemon_support as support  # noqa: E402 - on the path load_support set

TEST_TIMEOUT = float(os.environ.get("PACKSTORE_LOAD_TEST_TIMEOUT", "900"))


@pytest.fixture(autouse=True)
def _load_test_deadline(request):
    """Fails a test that runs longer than TEST_TIMEOUT."""
    with support.deadline_alarm(TEST_TIMEOUT, request.node.name):
        yield
