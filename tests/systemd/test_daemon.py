"""packstored as systemd runs it, with real processes and sockets: socket
activation, sd_notify (READY, STOPPING, WATCHDOG, RELOADING), SIGHUP
reloads, one daemon per socket and per store, the socket's mode, journald
log lines, --help, the config file and scheduled maintenance."""

import os
import signal
import socket
import stat
import subprocess
import threading
import time

import grpc
import pytest

import systemd_harness as harness
from systemd_harness import pb, pb_grpc


def start_daemon(spawn, workdir, *flags, env=None, name="packstored", store=None, sock=None):
    store = store or workdir / "store"
    sock = sock or workdir / "packstore.sock"
    argv = harness.daemon_argv(store, sock, *flags)
    return spawn(argv, workdir / f"{name}.log", env)


# ---- (b) socket activation ----------------------------------------------------


def test_socket_activation_serves_on_the_passed_socket(spawn, workdir, notify_socket):
    if not os.path.exists("/usr/bin/systemd-socket-activate"):
        pytest.fail("systemd-socket-activate is not installed (Debian package systemd)")
    sock = workdir / "activated.sock"
    # --socket names another path: an adopted socket wins over it.
    unused = workdir / "unused.sock"
    argv = ["systemd-socket-activate", "-l", sock, "--fdname=packstore",
            "-E", f"NOTIFY_SOCKET={notify_socket.address}",
            *harness.daemon_argv(workdir / "store", unused)]
    daemon = spawn(argv, workdir / "activated.log")
    daemon.wait_for_log("Listening on")
    # The launcher execs packstored at the first connection, in place.
    with harness.channel_to(sock) as channel:
        assert harness.health(channel, wait_for_ready=True) == 1
        assert harness.health(channel, "packstore.v1.ObjectStore") == 1
        harness.put_get_round_trip(channel, b"socket-activated object")
        harness.put_get_round_trip(channel, os.urandom(300 * 1024), mode=pb.PUT_MODE_LOOSE)
    notify_socket.wait_for("READY=1")
    log = daemon.wait_for_log(f"using the socket systemd passed: {sock}")
    assert f"serving {workdir / 'store'} on {sock}" in log
    assert not unused.exists() and not (workdir / "unused.sock.lock").exists()
    assert daemon.stop() == 0
    notify_socket.wait_for("STOPPING=1")
    # The socket belongs to whoever passed it: left in place.
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)


# ---- (c) sd_notify ----------------------------------------------------------------


def test_notify_ready_then_stopping(spawn, workdir, notify_socket):
    daemon = start_daemon(spawn, workdir, env=harness.clean_environment(
        NOTIFY_SOCKET=notify_socket.address))
    notify_socket.wait_for("READY=1")
    ready_message = next(m for m in notify_socket.messages if "READY=1" in m.split("\n"))
    assert f"STATUS=serving {workdir / 'store'} on {workdir / 'packstore.sock'}" in ready_message
    # READY=1 means serving: a client gets an answer right away.
    with harness.channel_to(workdir / "packstore.sock") as channel:
        assert harness.health(channel) == 1
    assert "STOPPING=1" not in notify_socket.assignments()
    daemon.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING=1")
    assert daemon.wait_exit() == 0
    lines = notify_socket.assignments()
    assert lines.index("READY=1") < lines.index("STOPPING=1")


def test_notify_to_an_abstract_socket(spawn, workdir):
    name = f"packstore-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = harness.NotifySocket(abstract_name=name)
    try:
        daemon = start_daemon(spawn, workdir, env=harness.clean_environment(
            NOTIFY_SOCKET=listener.address))
        listener.wait_for("READY=1")
        assert daemon.stop() == 0
        listener.wait_for("STOPPING=1")
    finally:
        listener.close()


def test_watchdog_pings_while_serving(spawn, workdir, notify_socket):
    daemon = start_daemon(spawn, workdir, env=harness.clean_environment(
        NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC=4_000_000))
    notify_socket.wait_for("READY=1")
    # At once, then every WATCHDOG_USEC / 2 = 2 s, each after a liveness
    # probe that must answer within WATCHDOG_USEC / 4.
    notify_socket.wait_for("WATCHDOG=1", timeout=6, count=2)
    assert "liveness check failed" not in daemon.log()


def test_watchdog_meant_for_another_process_is_left_alone(spawn, workdir, notify_socket):
    start_daemon(spawn, workdir, env=harness.clean_environment(
        NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC=200000, WATCHDOG_PID=1))
    notify_socket.wait_for("READY=1")
    notify_socket.collect(1.0)
    assert "WATCHDOG=1" not in notify_socket.assignments()


def test_no_notify_socket_is_fine_and_reflection_is_served(spawn, workdir):
    daemon = start_daemon(spawn, workdir)
    daemon.wait_serving()
    with harness.channel_to(workdir / "packstore.sock") as channel:
        reflection = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        # ServerReflectionRequest { string list_services = 7; } = "*"
        answers = list(reflection(iter([b"\x3a\x01*"]), timeout=harness.RPC_TIMEOUT))
        assert answers and b"packstore.v1.ObjectStore" in answers[0]
        assert b"grpc.health.v1.Health" in answers[0]
    assert daemon.stop() == 0


# ---- (d) SIGHUP --------------------------------------------------------------------


def write_config(path, **settings):
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))


def test_sighup_reloads_log_level_and_keeps_serving(spawn, workdir, notify_socket):
    config = workdir / "packstored.conf"
    write_config(config, **{"log-level": "info", "max-object-size": "1MiB"})
    daemon = start_daemon(spawn, workdir, "--config", config, env=harness.clean_environment(
        NOTIFY_SOCKET=notify_socket.address))
    notify_socket.wait_for("READY=1")
    sock = workdir / "packstore.sock"
    with harness.channel_to(sock) as channel:
        harness.put_get_round_trip(channel, b"before the reload")
    assert "connection from uid" not in daemon.log(), "debug lines at level info"

    write_config(config, **{"log-level": "debug", "max-object-size": "2MiB", "workers": 3,
                            "store": "/elsewhere"})
    offset = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    log = daemon.wait_for_log("reloaded the configuration", after=offset)
    assert "log-level info -> debug" in log[offset:]
    assert "max-object-size 1MiB -> 2MiB" in log[offset:]
    # What only a restart can change is said, not applied; flags given on
    # the command line (--store) win over the file.
    log = daemon.wait_for_log("workers 0 -> 3 takes effect only at the next start", after=offset)
    assert "/elsewhere" not in log
    notify_socket.wait_for("RELOADING=1")
    notify_socket.wait_for("READY=1", count=2)
    lines = notify_socket.assignments()
    assert lines.index("RELOADING=1") < len(lines) - 1 - lines[::-1].index("READY=1")

    # Still serving, and now logging at debug level.
    with harness.channel_to(sock) as channel:
        harness.put_get_round_trip(channel, b"after the reload")
    daemon.wait_for_log("connection from uid", after=offset)

    # A config that does not parse is refused; the daemon goes on as it was.
    config.write_text("log-level = shouting\n")
    offset = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reload failed, the running configuration stays", after=offset)
    notify_socket.wait_for("READY=1", count=3)
    with harness.channel_to(sock) as channel:
        harness.put_get_round_trip(channel, b"after a failed reload")
    assert daemon.stop() == 0


# ---- (e) one daemon per socket, one per store -----------------------------------


def test_second_daemon_on_the_same_socket_is_refused(spawn, workdir):
    first = start_daemon(spawn, workdir)
    first.wait_serving()
    sock = workdir / "packstore.sock"
    second = start_daemon(spawn, workdir, name="second", store=workdir / "other-store")
    assert second.wait_exit() == 1
    log = second.log()
    assert f"socket {sock} is in use by another packstored (pid {first.pid})" in log, log
    assert not (workdir / "other-store").exists(), "refused before touching its store"
    # The first one never noticed.
    with harness.channel_to(sock) as channel:
        assert harness.health(channel) == 1
        harness.put_get_round_trip(channel, b"still the first daemon")
    assert first.stop() == 0


def test_second_daemon_on_the_same_store_is_refused(spawn, workdir):
    first = start_daemon(spawn, workdir)
    first.wait_serving()
    other_sock = workdir / "other.sock"
    second = start_daemon(spawn, workdir, name="second", sock=other_sock)
    assert second.wait_exit() == 1
    log = second.log()
    assert f"store {workdir / 'store'} is in use by another writer" in log, log
    assert str(first.pid) in log, "names the holder"
    assert not other_sock.exists(), "the refused daemon leaves no socket behind"
    with harness.channel_to(workdir / "packstore.sock") as channel:
        harness.put_get_round_trip(channel, b"first daemon unaffected")
    assert first.stop() == 0


def test_stale_socket_file_is_replaced(spawn, workdir):
    sock = workdir / "packstore.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays: what a killed daemon leaves
    daemon = start_daemon(spawn, workdir)
    daemon.wait_serving()
    with harness.channel_to(sock) as channel:
        assert harness.health(channel) == 1
    assert daemon.stop() == 0
    assert not sock.exists(), "a socket bound here is removed at exit"


def test_restart_after_kill_recovers_and_serves(spawn, workdir):
    daemon = start_daemon(spawn, workdir)
    daemon.wait_serving()
    with harness.channel_to(workdir / "packstore.sock") as channel:
        key = harness.put_get_round_trip(channel, b"survives a SIGKILL", mode=pb.PUT_MODE_PACKED)
    daemon.kill()
    again = start_daemon(spawn, workdir, name="again")
    again.wait_serving()
    with harness.channel_to(workdir / "packstore.sock") as channel:
        stub = pb_grpc.ObjectStoreStub(channel)
        data = b"".join(m.data for m in stub.Get(pb.GetRequest(key=key),
                                                 timeout=harness.RPC_TIMEOUT))
        assert data == b"survives a SIGKILL"
    assert again.stop() == 0


def test_missing_store_without_init_says_how_to_fix_it(spawn, workdir):
    argv = harness.daemon_argv(workdir / "nothing-here", workdir / "packstore.sock", init=False)
    daemon = spawn(argv, workdir / "packstored.log")
    assert daemon.wait_exit() == 1
    assert "--init" in daemon.log()


# ---- (f) the socket's mode --------------------------------------------------------


@pytest.mark.parametrize("flag, expected", [(None, 0o660), ("0600", 0o600), ("666", 0o666)])
def test_bound_socket_mode(spawn, workdir, flag, expected):
    flags = ["--socket-mode", flag] if flag else []
    sock = workdir / "run" / "packstore" / "packstore.sock"  # parents created
    daemon = start_daemon(spawn, workdir, *flags, sock=sock)
    daemon.wait_serving()
    mode = os.lstat(sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == expected, oct(stat.S_IMODE(mode))
    assert daemon.stop() == 0


def test_bad_socket_mode_is_a_usage_error(workdir):
    result = subprocess.run(harness.daemon_argv(workdir / "store", workdir / "s.sock",
                                                "--socket-mode", "0999"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "octal" in result.stderr


# ---- access --------------------------------------------------------------------------


def test_peer_not_in_the_allow_lists_is_refused(spawn, workdir):
    # This test runs as some uid; allow only others (and keep it out of the
    # admins, who are always allowed).
    me = os.getuid()
    daemon = start_daemon(spawn, workdir, "--allow-uid", str(me + 4242),
                          "--admin-uid", str(me + 4243), "--log-level", "debug")
    daemon.wait_serving()
    with harness.channel_to(workdir / "packstore.sock") as channel:
        with pytest.raises(grpc.RpcError) as error:
            harness.health(channel, timeout=3)
        assert error.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED)
    daemon.wait_for_log(f"refused a connection from uid {me} gid {os.getgid()}")
    assert daemon.stop() == 0
    assert "0 connections accepted" in daemon.log()


def test_allowed_peer_reaches_admin_calls_as_the_daemons_own_user(spawn, workdir):
    """The service finds each call's peer by ServerContext::peer() ("fd:N"),
    which must match what the listener registered: an admin-only call from
    the daemon's own uid (an admin by default) succeeds."""
    daemon = start_daemon(spawn, workdir, "--allow-uid", str(os.getuid()))
    daemon.wait_serving()
    with harness.channel_to(workdir / "packstore.sock") as channel:
        harness.put_get_round_trip(channel, b"loose", mode=pb.PUT_MODE_LOOSE)
        stub = pb_grpc.ObjectStoreStub(channel)
        responses = list(stub.Pack(pb.PackRequest(), timeout=harness.RPC_TIMEOUT))
        assert responses and responses[-1].HasField("result")
    assert daemon.stop() == 0


# ---- logging ---------------------------------------------------------------------------


def test_journal_stream_gets_priority_prefixes(spawn, workdir):
    log_path = workdir / "journal.log"
    log_path.touch()
    st = os.stat(log_path)
    env = harness.clean_environment(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    daemon = spawn(harness.daemon_argv(workdir / "store", workdir / "packstore.sock"),
                   log_path, env)
    daemon.wait_serving()
    assert daemon.stop() == 0
    lines = [line for line in daemon.log().splitlines() if line]
    assert lines and all(line.startswith("<") for line in lines), lines
    assert f"<6>serving {workdir / 'store'}" in daemon.log()


def test_plain_stderr_gets_timestamps(spawn, workdir):
    daemon = start_daemon(spawn, workdir)
    daemon.wait_serving()
    assert daemon.stop() == 0
    first = daemon.log().splitlines()[0]
    assert first[:4].isdigit() and first[4] == "-", first
    assert " info " in first


# ---- (g) --help, options and the config file -----------------------------------------


def test_help_lists_the_flag_groups():
    result = subprocess.run([harness.DAEMON_BIN, "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    text = result.stdout
    groups = ["Store:", "Socket & access:", "Limits:", "Maintenance:", "Logging:"]
    positions = [text.index(group) for group in groups]
    assert positions == sorted(positions), "groups in this order"
    for flag in ["--config", "--store", "--init", "--socket", "--socket-mode", "--allow-uid",
                 "--allow-gid", "--admin-uid", "--admin-gid", "--log-level",
                 "--cache-max-mapped", "--max-object-size", "--max-message-size",
                 "--max-streams", "--max-streams-per-client", "--stream-idle-timeout",
                 "--free-disk-reserve", "--default-mode", "--auto-packed-max-size", "--workers",
                 "--auto-pack", "--pack-loose-objects", "--pack-loose-bytes", "--clean-after-pack",
                 "--maintenance-interval", "--checkpoint-interval", "--unmap-idle-interval",
                 "--shutdown-timeout"]:
        assert f"  {flag} " in text, flag
    # Defaults come from the service's own (ServiceOptions, Limits).
    assert "--max-message-size SIZE=16MiB" in text
    assert "--max-streams N=1024" in text
    assert "--pack-loose-bytes SIZE=1GiB" in text


def test_missing_default_config_is_fine_but_another_is_not(spawn, workdir):
    default = "/etc/packstore/packstored.conf"
    if os.path.exists(default):
        pytest.skip(f"{default} exists on this machine")
    daemon = start_daemon(spawn, workdir, "--config", default)
    daemon.wait_serving()
    assert daemon.stop() == 0
    result = subprocess.run(harness.daemon_argv(workdir / "store", workdir / "s.sock",
                                                "--config", workdir / "missing.conf"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "missing.conf" in result.stderr


def test_config_file_keys_are_the_flag_names(spawn, workdir):
    config = workdir / "packstored.conf"
    sock = workdir / "from-config.sock"
    write_config(config, **{"socket": f'"{sock}"', "socket-mode": "0640",
                            "log-level": "debug", "max-object-size": "64KiB",
                            "allow-uid": f"[{os.getuid()}, 4242]", "auto-pack": "false"})
    daemon = spawn(harness.daemon_argv(workdir / "store", None, "--config", config),
                   workdir / "packstored.log")
    daemon.wait_serving()
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o640
    with harness.channel_to(sock) as channel:
        stub = pb_grpc.ObjectStoreStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Put(pb.PutRequest(data=b"x" * (65 * 1024)), timeout=harness.RPC_TIMEOUT)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert daemon.stop() == 0

    config.write_text("max-object-sise = 1MiB\n")
    result = subprocess.run(harness.daemon_argv(workdir / "store", sock, "--config", config),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, "a typo in the config file is an error"
    assert "max-object-sise" in result.stderr


# ---- maintenance ------------------------------------------------------------------------


def test_auto_pack_packs_past_the_threshold(spawn, workdir, notify_socket):
    daemon = start_daemon(spawn, workdir, "--auto-pack", "true", "--pack-loose-objects", "5",
                          "--maintenance-interval", "1", "--checkpoint-interval", "1",
                          "--log-level", "debug",
                          env=harness.clean_environment(NOTIFY_SOCKET=notify_socket.address))
    notify_socket.wait_for("READY=1")
    with harness.channel_to(workdir / "packstore.sock") as channel:
        keys = [harness.put_get_round_trip(channel, f"loose object {i}".encode(),
                                           mode=pb.PUT_MODE_LOOSE) for i in range(6)]
    log = daemon.wait_for_log("auto-pack: packed 6 objects", timeout=15)
    assert "deleted 6 loose copies" in log
    daemon.wait_for_log("checkpoint:", timeout=10)
    with harness.channel_to(workdir / "packstore.sock") as channel:
        stub = pb_grpc.ObjectStoreStub(channel)
        answer = stub.Stat(pb.StatRequest(keys=keys), timeout=harness.RPC_TIMEOUT)
        assert [s.found and s.info.packed for s in answer.stats] == [True] * len(keys)
    # The backlog went back to zero: no second pack of nothing.
    time.sleep(2.5)
    assert daemon.log().count("auto-pack: packed") == 1
    notify_socket.wait_for("STATUS=auto-pack: packing 6 loose objects")
    notify_socket.wait_for(f"STATUS=serving {workdir / 'store'} on {workdir / 'packstore.sock'}",
                           count=2)
    assert daemon.stop() == 0


# ---- shutdown -----------------------------------------------------------------------------


def test_sigint_shuts_down_like_sigterm(spawn, workdir):
    daemon = start_daemon(spawn, workdir)
    daemon.wait_serving()
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit() == 0
    assert "SIGINT: shutting down" in daemon.log()
    assert not (workdir / "packstore.sock").exists()


def test_shutdown_timeout_cancels_a_call_that_never_ends(spawn, workdir):
    daemon = start_daemon(spawn, workdir, "--shutdown-timeout", "2")
    daemon.wait_serving()
    release = threading.Event()
    outcome = {}

    def upload_that_stalls():
        def requests():
            yield pb.PutStreamRequest(options=pb.PutOptions(mode=pb.PUT_MODE_PACKED),
                                      data=b"first chunk")
            release.wait(30)

        with harness.channel_to(workdir / "packstore.sock") as channel:
            try:
                pb_grpc.ObjectStoreStub(channel).PutStream(requests(), timeout=60)
                outcome["code"] = grpc.StatusCode.OK
            except grpc.RpcError as error:
                outcome["code"] = error.code()

    client = threading.Thread(target=upload_that_stalls)
    client.start()
    try:
        time.sleep(0.5)  # the call is under way
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        took = time.monotonic() - started
        assert 1.5 < took < 10, f"shutdown took {took:.1f}s with --shutdown-timeout 2"
    finally:
        release.set()
        client.join(30)
    assert outcome.get("code") not in (None, grpc.StatusCode.OK), outcome
