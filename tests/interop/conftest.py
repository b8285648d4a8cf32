"""Fixtures for the cross-language suite: C++ clients (client_worker, built
with the tests), the packstore tool and Python processes on one real
packstored. The daemon fixtures are tests/daemon's, loaded from its
conftest.py rather than copied.
"""

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = TESTS_DIR.parent / "daemon"
if str(DAEMON_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS_DIR))

import daemon_support as support  # noqa: E402

support.export_daemon_fixtures(globals(), "packstore_interop_daemon_fixtures")
