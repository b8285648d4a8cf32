"""Fixtures for the daemon integration suite: the real packstored, started on
a temporary store and socket, held to the wire contract
(proto/packstore/v1/packstore.proto).

`daemons` starts daemons with given flags and always kills them at teardown;
`daemon` is one daemon with the suite's default flags. When a test fails,
the tail of each of its daemons' logs is printed with the failure.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

import daemon_support as support
from daemon_support import pb

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# A backstop per test: a hang fails the test instead of blocking the suite.
TEST_TIMEOUT = float(os.environ.get("PACKSTORE_TEST_TIMEOUT", "180"))
LOG_TAIL_LINES = 60

# Flags every daemon of the suite gets unless a test says otherwise: no
# maintenance the tests did not ask for, and a disk reserve small enough not
# to depend on how full the machine's disk is.
DEFAULT_FLAGS = {
    "--auto-pack": "false",
    "--free-disk-reserve": "16MiB",
}


class DaemonError(AssertionError):
    """packstored did not start or stop as expected."""


class Daemon:
    """One packstored process on `store` and `socket`, its log in `log_path`."""

    def __init__(self, workdir, store=None, socket=None, flags=None, init=True, name="packstored"):
        self.workdir = Path(workdir)
        self.name = name
        self.store = Path(store) if store else self.workdir / "store"
        self.socket = Path(socket) if socket else self.workdir / "packstore.sock"
        self.log_path = self.workdir / f"{name}.log"
        self.flags = dict(DEFAULT_FLAGS)
        self.flags.update(flags or {})
        self.extra_args = []
        self.init = init
        self.process = None
        self.returncode = None
        self._channel = None
        self._stub = None
        self._extra_channels = []
        self._log_offset = 0

    # -- process ----------------------------------------------------------------

    def argv(self):
        if not support.DAEMON_BIN.exists():
            pytest.fail(
                f"packstored is not built: {support.DAEMON_BIN} is missing "
                "(ninja -C build/dev, or set PACKSTORE_BUILD_DIR)"
            )
        argv = [str(support.DAEMON_BIN), "--store", str(self.store), "--socket", str(self.socket)]
        if self.init:
            argv.append("--init")
        for flag, value in self.flags.items():
            if value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                argv += [flag, str(item)]
        return argv + list(self.extra_args)

    def launch(self):
        """Starts the process without waiting for it to serve."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.close_channel()
        self.returncode = None
        log = open(self.log_path, "ab")
        self._log_offset = log.tell()
        log.write(f"==== {' '.join(self.argv())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        return self

    def start(self, timeout=STARTUP_TIMEOUT):
        """Starts the daemon and waits until health says SERVING."""
        self.launch()
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = "the socket did not appear"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.returncode = self.process.returncode
                raise DaemonError(
                    f"{self.name} exited {self.returncode} before serving:\n{self.log_tail()}"
                )
            if self.socket.exists():
                channel = support.connect(self.socket)
                try:
                    last = support.health_check(channel, timeout=1.0)
                    if last == "SERVING":
                        return
                except grpc.RpcError as error:
                    last = f"{error.code().name}: {error.details()}"
                finally:
                    channel.close()
            time.sleep(0.05)
        raise DaemonError(
            f"{self.name} not SERVING after {timeout:.0f} s ({last}):\n{self.log_tail()}"
        )

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the process to exit; its exit code (DaemonError on timeout)."""
        try:
            self.returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DaemonError(
                f"{self.name} still running after {timeout:.0f} s:\n{self.log_tail()}")
        return self.returncode

    def running(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        """SIGKILL, then reap."""
        self.close_channel()
        if self.running():
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; SIGKILL if it does not exit in time. The exit code."""
        self.close_channel()
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
                raise DaemonError(
                    f"{self.name} ignored SIGTERM for {timeout:.0f} s:\n{self.log_tail()}"
                )
        return self.returncode

    # -- client -----------------------------------------------------------------

    @property
    def channel(self):
        if self._channel is None:
            self._channel = support.connect(self.socket)
        return self._channel

    @property
    def stub(self):
        if self._stub is None:
            self._stub = support.stub_for(self.channel)
        return self._stub

    def new_stub(self):
        """A stub on a connection of its own (gRPC Python shares one connection
        between channels to the same address unless told not to); closed with
        the daemon."""
        channel = support.connect(self.socket, own_connection=True)
        self._extra_channels.append(channel)
        return support.stub_for(channel)

    def close_channel(self):
        for channel in [self._channel] + self._extra_channels:
            if channel is not None:
                channel.close()
        self._channel = self._stub = None
        self._extra_channels = []

    def status(self):
        return self.stub.Status(pb.StatusRequest(), timeout=support.RPC_TIMEOUT)

    # -- log --------------------------------------------------------------------

    def log(self, this_run_only=False):
        try:
            with open(self.log_path, "rb") as log:
                if this_run_only:
                    log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=LOG_TAIL_LINES):
        text = self.log().splitlines()
        return "\n".join(text[-lines:])


# ---- fixtures --------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for daemon in getattr(item, "packstore_daemons", []):
            report.sections.append(
                (f"{daemon.name} log (last {LOG_TAIL_LINES} lines)", daemon.log_tail())
            )


@pytest.fixture(autouse=True)
def _test_deadline(request):
    """Fails a test that runs longer than TEST_TIMEOUT."""
    with support.deadline_alarm(TEST_TIMEOUT, request.node.name):
        yield


@pytest.fixture
def shared_tmp():
    """A temporary folder every user may traverse (0755), for sockets other
    uids must reach; pytest's own tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="packstore-daemon-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons(request, tmp_path):
    """A factory: daemons(flags={...}, store=..., socket=..., init=True, start=True).

    Every daemon it made is killed at teardown; when the test failed, their
    log tails are shown with the failure.
    """
    made = []
    request.node.packstore_daemons = made

    def make(flags=None, store=None, socket=None, init=True, start=True, name=None,
             workdir=None):
        name = name or f"packstored-{len(made)}"
        folder = Path(workdir) if workdir else tmp_path
        daemon = Daemon(folder, store=store or folder / f"store-{len(made)}",
                        socket=socket or folder / f"{name}.sock", flags=flags, init=init,
                        name=name)
        made.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make

    for daemon in made:
        try:
            daemon.kill()
        except Exception:  # noqa: BLE001 - teardown goes on for the others
            pass


@pytest.fixture
def daemon(daemons):
    """One daemon with the suite's default flags on a new store."""
    return daemons(name="packstored")
