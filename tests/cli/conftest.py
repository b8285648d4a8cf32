"""Fixtures for the command-line tool suite: the real `packstore` tool run
against the real packstored.

The daemon fixtures (daemon, daemons, shared_tmp, the per-test deadline and
the daemon logs shown with a failure) are tests/daemon's, loaded from its
conftest.py rather than copied. The tool is PACKSTORE_CLI when set, else
<build>/client/packstore (PACKSTORE_BUILD_DIR finds the build).
"""

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = TESTS_DIR.parent / "daemon"
if str(DAEMON_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS_DIR))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import daemon_support as support  # noqa: E402
from cli_support import Tool  # noqa: E402


support.export_daemon_fixtures(globals(), "packstore_cli_daemon_fixtures")


@pytest.fixture(scope="session")
def tool_binary():
    binary = Path(os.environ.get("PACKSTORE_CLI") or support.CLI_BIN).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"the packstore tool is not built: {binary} (build the packstore target, "
                    "or set PACKSTORE_CLI)", pytrace=False)
    return binary


@pytest.fixture
def tool(tool_binary, daemon):
    """The tool on the `daemon` fixture's socket (through PACKSTORE_SOCKET)."""
    return Tool(tool_binary, socket=daemon.socket)


@pytest.fixture
def tool_for(tool_binary):
    """tool_for(daemon) -> the tool on that daemon's socket."""
    return lambda d: Tool(tool_binary, socket=d.socket)


@pytest.fixture
def offline(tool_binary):
    """offline(folder) -> the tool on that store folder (--store)."""
    return lambda store: Tool(tool_binary, store=store)


@pytest.fixture
def tool_on_socket(tool_binary):
    """tool_on_socket(path) -> the tool on any socket path."""
    return lambda socket: Tool(tool_binary, socket=socket)
