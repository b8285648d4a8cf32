"""Fixtures for the Python client suite: the packstore package as the build
assembles it (<build>/python), against the real packstored.

The daemon fixtures (daemon, daemons, shared_tmp, the per-test deadline and
the daemon logs shown with a failure) are tests/daemon's, loaded from its
conftest.py rather than copied; daemon_support finds the build.
"""

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = TESTS_DIR.parent / "daemon"
if str(DAEMON_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS_DIR))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import daemon_support as support  # noqa: E402 - puts <build>/python on sys.path
import python_support  # noqa: E402


def _import_packstore():
    import packstore

    if getattr(packstore, "__file__", None) is None:
        # A suite that ran first (tests/systemd) imported the bare stubs of
        # <build>/proto/python as a namespace package `packstore`: forget
        # it, so that the package of <build>/python is imported instead.
        for name in [n for n in sys.modules if n == "packstore" or n.startswith("packstore.")]:
            del sys.modules[name]
        import packstore
    packstore.Client  # noqa: B018 - fails on a package without the client
    return packstore


try:
    packstore = _import_packstore()
except (ImportError, AttributeError) as error:  # pragma: no cover - a build problem
    raise ImportError(
        f"the packstore Python package is missing from {support.PROTO_PYTHON_DIR} ({error}); "
        "build it (cmake --build build/dev --target packstore_python_stubs) or point "
        "PACKSTORE_BUILD_DIR at a build folder") from error


support.export_daemon_fixtures(globals(), "packstore_daemon_fixtures")


@pytest.fixture
def client(daemon):
    """A Client on the `daemon` fixture's socket."""
    with packstore.Client(daemon.socket, timeout=python_support.CALL_TIMEOUT) as c:
        yield c

