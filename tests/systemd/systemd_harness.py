"""What the systemd suite needs to run the real packstored: where the build
is, the generated stubs, a stand-in for systemd's notification socket, and
a daemon process whose log can be waited on.

The build folder comes from PACKSTORE_BUILD_DIR (default build/dev, relative
to the repository root). Only the standard library and grpc are used.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_build = Path(os.environ.get("PACKSTORE_BUILD_DIR", "build/dev"))
BUILD_DIR = _build if _build.is_absolute() else REPO_ROOT / _build
DAEMON_BIN = BUILD_DIR / "server" / "daemon" / "packstored"
PROTO_PYTHON_DIR = BUILD_DIR / "proto" / "python"
CONFIGURED_UNITS_DIR = BUILD_DIR / "systemd"
SOURCE_SYSTEMD_DIR = REPO_ROOT / "systemd"

if str(PROTO_PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PROTO_PYTHON_DIR))

import grpc  # noqa: E402

from packstore.v1 import packstore_pb2 as pb  # noqa: E402
from packstore.v1 import packstore_pb2_grpc as pb_grpc  # noqa: E402

# Every wait is bounded: a daemon that hangs fails the test, not the suite.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
RPC_TIMEOUT = 10.0

# What systemd sets for a service; the daemon must not inherit the
# caller's (pytest may itself run under systemd).
SYSTEMD_VARIABLES = (
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
)


def short_tempdir():
    """A fresh folder under /tmp: Unix socket paths must fit in 107 bytes,
    which pytest's own temporary folders do not promise."""
    return Path(tempfile.mkdtemp(prefix="psd-", dir="/tmp"))


def clean_environment(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class NotifySocket:
    """Plays systemd's side of sd_notify: a datagram socket that collects
    what the daemon sends, one message per datagram."""

    def __init__(self, path=None, abstract_name=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract_name is not None:
            self.sock.bind("\0" + abstract_name)
            self.address = "@" + abstract_name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages = []

    def close(self):
        self.sock.close()

    def _receive(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(min(remaining, 0.2))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return True
        self.messages.append(data.decode())
        return True

    def assignments(self):
        """Every line received so far, in order."""
        return [line for message in self.messages for line in message.split("\n") if line]

    def wait_for(self, line, timeout=START_TIMEOUT, count=1):
        """Waits until `line` (e.g. "READY=1") was received `count` times."""
        deadline = time.monotonic() + timeout
        while self.assignments().count(line) < count:
            if not self._receive(deadline):
                raise AssertionError(
                    f"no {line!r} (x{count}) within {timeout}s; received {self.messages!r}"
                )

    def collect(self, seconds):
        """Receives whatever comes in the next `seconds`."""
        deadline = time.monotonic() + seconds
        while self._receive(deadline):
            pass


class Daemon:
    """One packstored process (or a launcher that execs it), its stderr in
    a log file."""

    def __init__(self, argv, log_path, env=None):
        self.argv = [str(arg) for arg in argv]
        self.log_path = Path(log_path)
        self.env = env if env is not None else clean_environment()
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text, timeout=START_TIMEOUT, after=0):
        """Waits until `text` appears in the log past offset `after`; fails
        early when the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log[after:]:
                return log
            if self.process.poll() is not None:
                raise AssertionError(
                    f"packstored exited ({self.process.returncode}) before logging {text!r}:\n{log}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log within {timeout}s:\n{log}")
            time.sleep(0.05)

    def wait_serving(self, timeout=START_TIMEOUT):
        return self.wait_for_log("serving ", timeout)

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"packstored did not exit within {timeout}s:\n{self.log()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def daemon_argv(store, socket_path=None, *flags, init=True):
    argv = [DAEMON_BIN, "--store", store]
    if socket_path is not None:
        argv += ["--socket", socket_path]
    if init:
        argv.append("--init")
    # No maintenance the test did not ask for, and a reserve that does not
    # depend on how full this machine's disk is.
    defaults = {"--auto-pack": "false", "--free-disk-reserve": "1MiB"}
    given = {flag for flag in flags if isinstance(flag, str) and flag.startswith("--")}
    for flag, value in defaults.items():
        if flag not in given:
            argv += [flag, value]
    return argv + [str(flag) for flag in flags]


def channel_to(socket_path):
    return grpc.insecure_channel("unix:" + str(socket_path))


def health(channel, service="", timeout=RPC_TIMEOUT, wait_for_ready=False):
    """grpc.health.v1.Health/Check called generically (no health stubs are
    packaged): the status number, 1 = SERVING."""
    name = service.encode()
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: (bytes([0x0A, len(name)]) + name) if name else b"",
        response_deserializer=lambda raw: raw,
    )
    raw = check(None, timeout=timeout, wait_for_ready=wait_for_ready)
    # HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, one byte.
    return raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0


def put_get_round_trip(channel, data, mode=pb.PUT_MODE_AUTO, wait_for_ready=False):
    """Puts `data`, reads it back; returns the key."""
    stub = pb_grpc.ObjectStoreStub(channel)
    answer = stub.Put(
        pb.PutRequest(options=pb.PutOptions(mode=mode), data=data),
        timeout=RPC_TIMEOUT,
        wait_for_ready=wait_for_ready,
    )
    key = answer.object.key
    got = b"".join(m.data for m in stub.Get(pb.GetRequest(key=key), timeout=RPC_TIMEOUT))
    assert got == data
    return key
