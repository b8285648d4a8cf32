"""Shared by the Python client suite and the client processes it starts
(client_worker.py): where things are, and how to start a client process.

tests/daemon/daemon_support.py finds the build (PACKSTORE_BUILD_DIR) and
puts <build>/python, the assembled packstore package, on sys.path.
"""

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = TESTS_DIR.parent / "daemon"
if str(DAEMON_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS_DIR))

import daemon_support as support  # noqa: E402

WORKER = TESTS_DIR / "client_worker.py"
PACKAGE_DIR = support.PROTO_PYTHON_DIR

# Every client call of the suite has a deadline: a hang fails a test.
CALL_TIMEOUT = 60.0
WORKER_TIMEOUT = 150.0


def client_env():
    """The environment of a client process: the package and the suites'
    helpers on its path, no bytecode written into the build or the tree."""
    path = [str(PACKAGE_DIR), str(TESTS_DIR), str(DAEMON_TESTS_DIR)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1",
                PACKSTORE_BUILD_DIR=str(support.BUILD_DIR))


def worker_argv(*args, user=None):
    """The command line of client_worker.py with `args`; with `user` (uid,
    gid), run as that user with no supplementary groups (needs root)."""
    argv = [sys.executable, str(WORKER), *map(str, args)]
    if user is not None:
        uid, gid = user
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    return argv


def run_worker(*args, user=None, timeout=WORKER_TIMEOUT):
    """Runs client_worker.py to its end; the CompletedProcess (text)."""
    return subprocess.run(worker_argv(*args, user=user), capture_output=True, text=True,
                          timeout=timeout, env=client_env(), cwd="/")
