"""Access control: the socket's file mode, SO_PEERCRED allow lists, admin-only
maintenance, and one daemon per socket and per store.

The suite runs as root; other peers are client_tool.py run as uid/gid 65534
through setpriv, on sockets in a folder every user may traverse.
"""

import json
import os
import re
import stat
import subprocess
import sys

import pytest

import daemon_support as support
from daemon_support import key_of, pb

OTHER_UID = 65534
OTHER_GID = 65534
CLIENT_TIMEOUT = 90

READ_WRITE_CALLS = ["Health", "Put", "PutStream", "PutMany", "Get", "GetMany", "Stat", "Has",
                    "List", "Status"]
ADMIN_CALLS = ["Pack", "Repack", "Clean", "Validate", "Delete"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")


def run_as_other(socket, calls, uid=OTHER_UID, gid=OTHER_GID):
    """client_tool.py access as uid/gid, with no supplementary groups; {call: (code, details)}."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", sys.executable,
            str(support.CLIENT_TOOL), "access", str(socket), *calls]
    env = dict(os.environ, PACKSTORE_BUILD_DIR=str(support.BUILD_DIR), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=env,
                            cwd="/")
    assert result.returncode == 0, f"the client failed:\n{result.stderr}"
    return {name: tuple(answer) for name, answer in json.loads(result.stdout).items()}


def other_data():
    """What client_tool.py access writes when run as OTHER_UID."""
    return f"written by uid {OTHER_UID}".encode()


def socket_mode(path):
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), f"{path} is not a socket"
    return stat.S_IMODE(st.st_mode)


# ---- the socket's mode ----------------------------------------------------------------


def test_socket_mode_is_0660_by_default(daemon):
    assert socket_mode(daemon.socket) == 0o660


@pytest.mark.parametrize("mode", [0o600, 0o666])
def test_socket_mode_flag(daemons, mode):
    daemon = daemons(flags={"--socket-mode": f"{mode:04o}"})
    assert socket_mode(daemon.socket) == mode
    assert support.health_check(daemon.channel) == "SERVING"


def test_socket_mode_0660_keeps_other_users_out(daemons, shared_tmp):
    daemon = daemons(workdir=shared_tmp, name="private")
    assert socket_mode(daemon.socket) == 0o660
    st = os.stat(daemon.socket)
    assert (st.st_uid, st.st_gid) == (0, 0)
    answers = run_as_other(daemon.socket, ["Health", "Put", "Has"])
    for name, (code, details) in answers.items():
        assert code != "OK", f"uid {OTHER_UID} called {name} through a 0660 root socket"
    assert not daemon.stub.Has(pb.HasRequest(keys=[key_of(other_data())]),
                               timeout=support.RPC_TIMEOUT).present[0]
    # The same daemon flags on a 0666 socket let them in: the mode was what kept them out.
    open_daemon = daemons(workdir=shared_tmp, name="open", flags={"--socket-mode": "0666"})
    answers = run_as_other(open_daemon.socket, ["Health", "Put", "Has"])
    assert answers == {"Health": ("OK", ""), "Put": ("OK", ""), "Has": ("OK", "")}, answers


# ---- allow lists ------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{"--allow-uid": "0"}, {"--allow-gid": "0"}],
                         ids=["allow-uid", "allow-gid"])
def test_peer_not_allowed_is_refused(daemons, shared_tmp, flags):
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666", **flags})
    answers = run_as_other(daemon.socket, ["Health", "Has", "Put", "PutStream", "List", "Status"])
    for name, (code, details) in answers.items():
        assert code != "OK", f"uid {OTHER_UID} not allowed, yet {name} succeeded"
        assert code in ("UNAVAILABLE", "PERMISSION_DENIED", "CANCELLED", "UNKNOWN"), (
            f"{name}: {code}: {details}")
    assert not any(daemon.stub.Has(
        pb.HasRequest(keys=[key_of(other_data()), key_of(other_data() + b" (stream)")]),
        timeout=support.RPC_TIMEOUT).present), "a refused peer's object was stored"
    # Root, allowed, is still served.
    data = b"root is allowed"
    assert support.put(daemon.stub, data).key == key_of(data)
    assert support.health_check(daemon.channel) == "SERVING"


@pytest.mark.parametrize("flags", [{"--allow-uid": ["0", str(OTHER_UID)]},
                                   {"--allow-uid": "0", "--allow-gid": str(OTHER_GID)}],
                         ids=["allow-uid", "allow-gid"])
def test_allowed_peer_reads_and_writes_but_no_maintenance(daemons, shared_tmp, flags):
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666", **flags})
    answers = run_as_other(daemon.socket, READ_WRITE_CALLS + ADMIN_CALLS)
    for name in READ_WRITE_CALLS:
        assert answers[name] == ("OK", ""), f"{name} by an allowed peer: {answers[name]}"
    for name in ADMIN_CALLS:
        code, details = answers[name]
        assert code == "PERMISSION_DENIED", f"{name} by a non-admin: {code}: {details}"
        assert re.search(rf"admin|{OTHER_UID}", details, re.I), (
            f"{name}: the refusal does not say why: {details!r}")
    # Its Delete deleted nothing; its writes are there.
    stored = [other_data(), other_data() + b" (stream)", other_data() + b" (many)"]
    present = daemon.stub.Has(pb.HasRequest(keys=[key_of(d) for d in stored]),
                              timeout=support.RPC_TIMEOUT).present
    assert list(present) == [True, True, True]
    # Root is an admin by default.
    _, _, result = support.maintenance(daemon.stub, "Validate")
    assert result.issues == 0


@pytest.mark.parametrize("flags", [{"--admin-uid": str(OTHER_UID)},
                                   {"--admin-gid": str(OTHER_GID)}],
                         ids=["admin-uid", "admin-gid"])
def test_admin_flags_grant_maintenance(daemons, shared_tmp, flags):
    daemon = daemons(workdir=shared_tmp, flags={
        "--socket-mode": "0666", "--allow-uid": ["0", str(OTHER_UID)], **flags})
    answers = run_as_other(daemon.socket, READ_WRITE_CALLS + ADMIN_CALLS)
    for name in READ_WRITE_CALLS + ADMIN_CALLS:
        assert answers[name] == ("OK", ""), f"{name} by an admin: {answers[name]}"
    present = daemon.stub.Has(pb.HasRequest(keys=[key_of(other_data())]),
                              timeout=support.RPC_TIMEOUT).present
    assert list(present) == [False], "the admin's Delete did not delete"
    # Admins named explicitly replace the default ones (the daemon's user and root).
    code, details = support.code_of(lambda: daemon.stub.Validate(pb.ValidateRequest(),
                                                                 timeout=support.RPC_TIMEOUT))
    assert code == "PERMISSION_DENIED", f"root with admins named explicitly: {code}: {details}"


# ---- one daemon per socket and per store ------------------------------------------------


def second_daemon_refused(daemons, first, **where):
    second = daemons(start=False, name="second", **where)
    second.launch()
    code = second.wait_exit(timeout=20)
    log = second.log()
    assert code == 1, f"the second daemon exited {code}:\n{log}"
    # The first one keeps serving, on its own socket.
    assert first.running()
    assert support.health_check(first.channel) == "SERVING"
    data = b"the first daemon still serves"
    assert support.put(first.stub, data, "packed").key == key_of(data)
    assert support.get_bytes(first.stub, key_of(data)) == data
    return log


def test_second_daemon_on_the_same_socket_exits(daemons, tmp_path):
    first = daemons(name="first")
    inode = os.stat(first.socket).st_ino
    log = second_daemon_refused(daemons, first, socket=first.socket, store=tmp_path / "other")
    assert str(first.socket) in log or re.search(r"another|already|in use|running", log, re.I), (
        f"the second daemon did not say why it stopped:\n{log}")
    assert os.stat(first.socket).st_ino == inode, "the second daemon replaced the socket file"
    fresh = support.stub_for(support.connect(first.socket))
    assert fresh.Status(pb.StatusRequest(), timeout=support.RPC_TIMEOUT).container_dir


def test_second_daemon_on_the_same_store_exits(daemons, tmp_path):
    first = daemons(name="first")
    log = second_daemon_refused(daemons, first, store=first.store,
                                socket=tmp_path / "second.sock")
    assert str(first.store) in log or re.search(r"another|already|lock|running|pid", log, re.I), (
        f"the second daemon did not say why it stopped:\n{log}")
    assert first.socket.exists(), "the first daemon's socket is gone"
