"""Fixtures for the reliability suite: bad input, bad disks and a full file
system against the real packstored.

The daemon fixtures (daemon, daemons, shared_tmp, the per-test deadline and
the daemon logs shown with a failure) are tests/daemon's, loaded from its
conftest.py rather than copied; daemon_support finds the build.
"""

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = TESTS_DIR.parent / "daemon"
for folder in (DAEMON_TESTS_DIR, TESTS_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import daemon_support as support  # noqa: E402 - puts <build>/python on sys.path

support.export_daemon_fixtures(globals(), "packstore_reliability_daemon_fixtures")
