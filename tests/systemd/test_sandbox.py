"""The unit's sandbox fits what packstored does. systemd cannot run here
(it is not the init process of a build container), so the daemon runs under
strace while a client exercises every call, and what it asked the kernel
for is held to the unit: SystemCallFilter=@system-service and
RestrictAddressFamilies=AF_UNIX."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

import systemd_harness as harness
from systemd_harness import pb, pb_grpc

SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)")
SOCKET_FAMILY = re.compile(r"^\d+\s+socket(?:pair)?\((AF_[A-Z0-9]+)")


def syscall_filter_set(group, seen=None):
    """The system calls a SystemCallFilter= group allows, nested groups expanded."""
    seen = seen if seen is not None else set()
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    names = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            if line not in seen:
                seen.add(line)
                names |= syscall_filter_set(line, seen)
        else:
            names.add(line)
    return names


def child_pid(pid, timeout=harness.START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("strace started no child")


def exercise(sock, daemon):
    with harness.channel_to(sock) as channel:
        stub = pb_grpc.ObjectStoreStub(channel)
        keys = []
        for i in range(4):
            keys.append(harness.put_get_round_trip(channel, os.urandom(1000 + i),
                                                   mode=pb.PUT_MODE_LOOSE))
        # Scheduled maintenance first: an explicit Pack would leave it no work.
        daemon.wait_for_log("auto-pack: packed")
        daemon.wait_for_log("checkpoint:")
        for i in range(4):
            keys.append(harness.put_get_round_trip(channel, b"abc" * 1000 + bytes([i]),
                                                   mode=pb.PUT_MODE_PACKED))
        big = os.urandom(3 * 1024 * 1024)

        def chunks():
            step = 1 << 20
            for offset in range(0, len(big), step):
                message = pb.PutStreamRequest(data=big[offset:offset + step])
                if offset == 0:
                    message.options.mode = pb.PUT_MODE_PACKED
                    message.options.compression = pb.COMPRESSION_AUTO
                message.finish_write = offset + step >= len(big)
                yield message

        keys.append(stub.PutStream(chunks(), timeout=harness.RPC_TIMEOUT).object.key)
        list(stub.PutMany(iter([pb.PutManyRequest(objects=[b"m%d" % i for i in range(20)])]),
                          timeout=harness.RPC_TIMEOUT))
        for key in keys:
            list(stub.Get(pb.GetRequest(key=key, verify=True), timeout=harness.RPC_TIMEOUT))
        list(stub.GetMany(pb.GetManyRequest(keys=keys), timeout=harness.RPC_TIMEOUT))
        stub.Stat(pb.StatRequest(keys=keys), timeout=harness.RPC_TIMEOUT)
        stub.Has(pb.HasRequest(keys=keys), timeout=harness.RPC_TIMEOUT)
        list(stub.List(pb.ListRequest(), timeout=harness.RPC_TIMEOUT))
        stub.Status(pb.StatusRequest(), timeout=harness.RPC_TIMEOUT)
        for call, request in [(stub.Pack, pb.PackRequest()), (stub.Clean, pb.CleanRequest()),
                              (stub.Delete, pb.DeleteRequest(keys=keys[:2])),
                              (stub.Repack, pb.RepackRequest()),
                              (stub.Validate, pb.ValidateRequest())]:
            list(call(request, timeout=harness.RPC_TIMEOUT))
        assert harness.health(channel) == 1


def test_daemon_stays_inside_the_units_sandbox(spawn, workdir):
    for tool in ("strace", "systemd-analyze"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    trace = workdir / "strace.txt"
    sock = workdir / "packstore.sock"
    argv = ["strace", "-f", "-qq", "-e", "signal=none", "-o", trace,
            *harness.daemon_argv(workdir / "store", sock, "--auto-pack", "true",
                                 "--pack-loose-objects", "2", "--maintenance-interval", "1",
                                 "--checkpoint-interval", "1", "--unmap-idle-interval", "1",
                                 "--log-level", "debug")]
    launcher = spawn(argv, workdir / "packstored.log")
    launcher.wait_serving()
    pid = child_pid(launcher.pid)
    try:
        exercise(sock, launcher)
        os.kill(pid, signal.SIGHUP)
        launcher.wait_for_log("reloaded the configuration")
        os.kill(pid, signal.SIGTERM)
        assert launcher.wait_exit() == 0
        assert "stopped after" in launcher.log()
    except BaseException:
        # Killing strace (the fixture's cleanup) would leave the daemon
        # running, detached from it.
        try:
            if "packstored" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass
        raise

    used, families = set(), set()
    for line in trace.read_text(errors="replace").splitlines():
        match = SYSCALL.match(line)
        if match:
            used.add(match.group(1))
        match = SOCKET_FAMILY.match(line)
        if match:
            families.add(match.group(1))
    used.discard("execve")  # strace starting the daemon, before any filter applies
    assert len(used) > 30, f"the trace looks empty: {sorted(used)}"
    outside = used - syscall_filter_set("@system-service")
    assert not outside, f"system calls SystemCallFilter=@system-service would deny: {outside}"
    assert families <= {"AF_UNIX"}, f"RestrictAddressFamilies=AF_UNIX would deny {families}"
