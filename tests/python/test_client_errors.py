"""How the client fails: each status code as its exception, with the
daemon's message; no daemon; retries on UNAVAILABLE for reads and puts only;
deadlines; maintenance by a non-admin and during another maintenance."""

import json
import os
import pickle
import threading
import time

import grpc
import pytest

import packstore
import python_support
from daemon_support import KiB, MiB, key_of, random_bytes

VALID = key_of(b"a valid key")
MALFORMED = ["", "abc", VALID.upper(), VALID[:63], VALID + "0", "g" * 64, "../" + VALID[3:]]


def key_calls(client, key):
    """Every client call that takes a key, as (name, thunk)."""
    return [
        ("get", lambda: client.get(key)),
        ("get verify", lambda: client.get(key, verify=True)),
        ("open", lambda: client.open(key)),
        ("has", lambda: client.has(key)),
        ("has list", lambda: client.has([VALID, key])),
        ("stat", lambda: client.stat([key])),
        ("get_many", lambda: list(client.get_many([VALID, key]))),
        ("delete", lambda: client.delete([VALID, key])),
    ]


def test_malformed_key_is_invalid_argument(client):
    for key in MALFORMED:
        for name, call in key_calls(client, key):
            with pytest.raises(packstore.InvalidArgument) as caught:
                call()
            error = caught.value
            assert isinstance(error, packstore.PackstoreError)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "key" in error.details and error.details in str(error), (name, error.details)
            if key and key.isprintable():
                assert key in error.details, (name, key, error.details)
    with pytest.raises(packstore.InvalidArgument, match="after"):
        list(client.list(after="XYZ"))
    with pytest.raises(TypeError):
        client.get(b"0" * 64)
    with pytest.raises(TypeError):
        client.has([VALID, 3])


def test_missing_key_is_not_found(client):
    missing = key_of(b"never stored")
    for call in (lambda: client.get(missing), lambda: client.get(missing, offset=5, length=3),
                 lambda: client.get(missing, verify=True), lambda: client.open(missing)):
        with pytest.raises(packstore.NotFound) as caught:
            call()
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert missing in caught.value.details
    assert client.has(missing) is False
    assert client.stat(missing) is None
    assert list(client.get_many([missing])) == [(missing, None)]
    assert client.delete(missing) == 0


def test_unknown_put_mode_or_compression_is_invalid_argument(client):
    for call in (lambda: client.put(b"x", mode=7), lambda: client.put(b"x", compression=9),
                 lambda: client.put_many([b"x"], mode=7),
                 lambda: client.put_file(__file__, compression=9),
                 lambda: client.pack(compression=9)):
        with pytest.raises(packstore.InvalidArgument) as caught:
            call()
        assert "mode" in caught.value.details or "compression" in caught.value.details


def test_no_daemon_is_unavailable_naming_the_socket(tmp_path):
    socket = tmp_path / "nobody.sock"
    with packstore.Client(socket, retries=0, timeout=30) as client:
        start = time.monotonic()
        with pytest.raises(packstore.Unavailable) as caught:
            client.put(b"nobody home")
        assert time.monotonic() - start < 10
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.method == "Put"
    assert str(socket) in str(error) and "packstored" in str(error)
    assert error.socket == str(socket)
    assert error.details, "gRPC's own message is kept"
    # Every kind of call says the same.
    with packstore.Client(socket, retries=0, timeout=30) as client:
        for call in (lambda: client.get(VALID), lambda: list(client.list()), client.status,
                     client.validate, lambda: list(client.get_many([VALID])),
                     lambda: client.put_file(__file__), lambda: client.put_many([b"a"])):
            with pytest.raises(packstore.Unavailable, match=str(socket)):
                call()


def test_socket_without_a_daemon_behind_it(daemons):
    daemon = daemons()
    daemon.kill()  # SIGKILL leaves the socket file behind
    assert daemon.socket.exists()
    with packstore.Client(daemon.socket, retries=0, timeout=30) as client:
        with pytest.raises(packstore.Unavailable) as caught:
            client.has(VALID)
    assert str(daemon.socket) in str(caught.value)


def test_reads_and_puts_retry_while_the_daemon_restarts(daemon):
    def across_a_restart(call, graceful=False):
        # SIGKILL mostly: a stop waits for the client's idle connection to
        # close, which an idle grpcio channel takes seconds to notice.
        if graceful:
            daemon.stop()
        else:
            daemon.kill()
        restarter = threading.Timer(0.3, daemon.start)
        restarter.start()
        try:
            return call()  # first meets no daemon, then the restarted one
        finally:
            restarter.join()

    data = random_bytes(2 * MiB, "across a restart")
    with packstore.Client(daemon.socket, timeout=60, retries=10, backoff=0.1) as client:
        key = client.put(data)
        assert across_a_restart(lambda: client.get(key), graceful=True) == data
        assert across_a_restart(lambda: client.has(key)) is True
        assert across_a_restart(lambda: list(client.list())) == [key]
        assert across_a_restart(lambda: dict(client.get_many([key]))) == {key: data}
        small, many = b"put after a restart", [b"put_many after a restart", b"and another"]
        assert across_a_restart(lambda: client.put(small)) == key_of(small)
        assert across_a_restart(lambda: client.put_many(many)) == [key_of(d) for d in many]
        assert across_a_restart(lambda: client.put(data + b"!")) == key_of(data + b"!")
        assert client.has([key_of(small)] + [key_of(d) for d in many]) == [True] * 3


def restart_soon(daemon, delay=0.3):
    """Kills the daemon now and starts it again after `delay` seconds."""
    daemon.kill()
    restarter = threading.Timer(delay, daemon.start)
    restarter.start()
    return restarter


def test_put_many_resends_unanswered_batches_after_a_restart(daemon):
    datas = [random_bytes(50 * KiB, f"resent {i}") for i in range(240)]  # 6 messages
    restarters = []

    def objects():
        for index, data in enumerate(datas):
            if index == 130:  # in the fourth message; some were answered
                restarters.append(restart_soon(daemon))
            yield data

    with packstore.Client(daemon.socket, timeout=60, retries=10, backoff=0.1) as client:
        try:
            keys = client.put_many(objects(), mode="packed")
        finally:
            for restarter in restarters:
                restarter.join()
        assert restarters, "the daemon was not restarted"
        assert keys == [key_of(data) for data in datas]
        assert all(client.has(keys))
        assert dict(client.get_many(keys)) == {key_of(data): data for data in datas}


def test_get_many_resumes_after_a_restart(daemon):
    datas = [random_bytes(2 * MiB + i, f"resumed {i}") for i in range(6)]
    datas += [random_bytes(1000 + i, f"resumed small {i}") for i in range(500)]
    with packstore.Client(daemon.socket, timeout=60, retries=10, backoff=0.1) as client:
        keys = client.put_many(datas, mode="packed")
        received, restarters = {}, []
        for index, (key, data) in enumerate(client.get_many(keys)):
            assert key not in received, f"{key} came twice"
            received[key] = data
            if index == 502:  # among the large objects
                restarters.append(restart_soon(daemon))
        restarters[0].join()
        assert received == {key_of(data): data for data in datas}


def test_maintenance_is_not_retried(daemon):
    with packstore.Client(daemon.socket, timeout=60, retries=1, backoff=2.0) as client:
        client.put(b"x")
        daemon.kill()
        for call in (client.pack, client.validate, client.clean, lambda: client.delete(VALID)):
            start = time.monotonic()
            with pytest.raises(packstore.Unavailable):
                call()
            assert time.monotonic() - start < 1.5, "a maintenance call was retried"
        start = time.monotonic()
        with pytest.raises(packstore.Unavailable):
            client.has(VALID)
        assert time.monotonic() - start > 2.0, "reads are retried with backoff"


def test_deadline_exceeded(client):
    data = random_bytes(8 * MiB, "deadline")
    key = client.put(data, mode="loose")
    with pytest.raises(packstore.DeadlineExceeded) as caught:
        client.get(key, timeout=0.000001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The client's own default applies when a call gives none.
    with packstore.Client(client.socket, timeout=0.000001) as hasty:
        with pytest.raises(packstore.DeadlineExceeded):
            hasty.get(key)
        assert hasty.get(key, timeout=30) == data


def test_object_size_limit_is_resource_exhausted(daemons, tmp_path):
    daemon = daemons(flags={"--max-object-size": "64KiB"})
    over = random_bytes(64 * KiB + 1, "over")
    big = random_bytes(3 * MiB, "far over")
    path = tmp_path / "over.bin"
    path.write_bytes(big)
    with packstore.Client(daemon.socket, timeout=60) as client:
        for call in (lambda: client.put(over), lambda: client.put(big, mode="loose"),
                     lambda: client.put_many([b"fits", over]), lambda: client.put_file(path)):
            with pytest.raises(packstore.ResourceExhausted) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-object-size" in caught.value.details
        assert client.has([key_of(over), key_of(big)]) == [False, False]


def test_corrupt_object_is_data_loss_and_validate_reports_it(client, daemon):
    good = random_bytes(2000, "healthy")
    bad = random_bytes(300 * KiB, "to be corrupted")
    client.put(good, mode="loose")
    key = client.put(bad, mode="loose")
    path = daemon.store / "loose" / key[:2] / key[2:]
    with open(path, "r+b") as file:
        file.seek(200 * KiB)
        file.write(b"\0corrupted\0")
    with pytest.raises(packstore.DataLoss) as caught:
        client.get(key, verify=True)
    assert caught.value.code == grpc.StatusCode.DATA_LOSS and key in caught.value.details
    assert client.get(key_of(good), verify=True) == good
    result = client.validate()
    assert not result.ok and result.loose_checked == 2
    assert [(i.kind, i.subject) for i in result.issues] == [("corrupt_loose", key)]
    assert result.issues[0].detail
    assert client.pack().corrupt == [key]


def test_maintenance_while_another_runs_is_failed_precondition(client):
    # Compressing incompressible data is slow: a pack that runs for a while.
    client.put_many((random_bytes(MiB - 100, f"slow {i}") for i in range(48)), mode="loose")
    seen = []

    def on_progress(progress):
        if not seen and progress.done < progress.total:
            with pytest.raises(packstore.FailedPrecondition) as caught:
                client.validate()
            seen.append(caught.value)
        seen.append(progress)

    result = client.pack(compression="yes", progress=on_progress)
    assert result.packed == 48
    assert seen and isinstance(seen[0], packstore.FailedPrecondition), seen
    assert "Pack" in seen[0].details and seen[0].method == "Validate"
    assert client.validate().ok


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_maintenance_by_a_non_admin_is_permission_denied(daemons, shared_tmp):
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666"})
    result = python_support.run_worker("calls", daemon.socket, user=(65534, 65534))
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    for name in ("put", "has", "status"):
        assert answers[name][0] == "OK", (name, answers[name])
    for name in ("pack", "repack", "clean", "delete", "validate"):
        kind, code, details = answers[name]
        assert (kind, code) == ("PermissionDenied", "PERMISSION_DENIED"), (name, answers[name])
        assert "admin" in details, details
    with packstore.Client(daemon.socket, timeout=30) as client:
        assert client.has(key_of(b"written by uid 65534"))


def test_errors_carry_code_details_and_survive_pickling():
    error = packstore.NotFound("object x not found", method="Get", socket="/s")
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert str(error) == "Get: NOT_FOUND: object x not found"
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is packstore.NotFound
    assert (back.code, back.details, back.method, back.socket) == (
        error.code, error.details, "Get", "/s")
    for cls in (packstore.NotFound, packstore.InvalidArgument, packstore.PermissionDenied,
                packstore.ResourceExhausted, packstore.DataLoss, packstore.FailedPrecondition,
                packstore.Unavailable, packstore.DeadlineExceeded):
        assert issubclass(cls, packstore.PackstoreError)
