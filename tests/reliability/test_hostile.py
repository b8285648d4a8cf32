"""Hostile input against the real daemon: every bad input gets its exact
answer (status code and a message that says what is wrong), and other
clients are still served afterwards and while the hostile client holds what
it took (stream slots, upload threads, fast-path connections).

What tests/daemon already proves is not repeated here; docs/reliability.md
has the table of every input and the test that proves its answer.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

import daemon_support as support
import reliability_support as rs
from daemon_support import KiB, MiB, key_of, pb, random_bytes, rpc_error, wait_for
from reliability_support import FastPath, assert_served, invalid_key_message

T = support.RPC_TIMEOUT
VALID = key_of(b"a valid key")
MISSING = "0" * 64

HOSTILE_KEYS = {
    "dot-dot-slash": "../" + VALID[3:],
    "slash": VALID[:30] + "/" + VALID[31:],
    "leading slash": "/" + VALID[1:],
    "backslash": VALID[:30] + "\\" + VALID[31:],
    "dots": "." * 64,
    "dot-dot": "..",
    "uppercase": VALID.upper(),
    "one uppercase": VALID[:5] + "F" + VALID[6:],
    "63": VALID[:63],
    "65": VALID + "a",
    "empty": "",
    "huge (1 MiB)": "a" * MiB,
    "non-hex": "g" * 64,
    "NUL inside": VALID[:32] + "\0" + VALID[33:],
    "sha1 length": VALID[:40],
    "UTF-8": "\u00e9" * 32,
}


def grpc_error(call):
    error = rpc_error(call)
    return error.code(), error.details() or ""


# ---- keys -------------------------------------------------------------------------------


def test_hostile_keys_get_invalid_argument_naming_the_key_everywhere(daemon):
    """Every call that takes a key, and LOCATE on the fast path, answers
    INVALID_ARGUMENT with the key quoted (escaped, cut at 80 bytes) and, for
    lists, its index; nothing is looked up or deleted; others are served."""
    stub = daemon.stub
    kept = b"kept beside hostile keys"
    support.put(stub, kept, "packed")
    good = key_of(kept)
    code = grpc.StatusCode.INVALID_ARGUMENT
    for name, bad in HOSTILE_KEYS.items():
        single = invalid_key_message(bad)
        second = invalid_key_message(bad, 1)
        calls = {
            "Get": (lambda: stub.Get(pb.GetRequest(key=bad), timeout=T), single),
            "Get range": (lambda: stub.Get(pb.GetRequest(key=bad, offset=3, length=9),
                                           timeout=T), single),
            "Get verify": (lambda: stub.Get(pb.GetRequest(key=bad, verify=True), timeout=T),
                           single),
            "Stat": (lambda: stub.Stat(pb.StatRequest(keys=[good, bad]), timeout=T), second),
            "Has": (lambda: stub.Has(pb.HasRequest(keys=[good, bad]), timeout=T), second),
            "GetMany": (lambda: stub.GetMany(pb.GetManyRequest(keys=[good, bad]), timeout=T),
                        second),
            "Delete": (lambda: stub.Delete(pb.DeleteRequest(keys=[good, bad]), timeout=T),
                       second),
        }
        for call_name, (call, expected) in calls.items():
            got = grpc_error(call)
            assert got == (code, expected), f"{call_name}({name}): {got}"
        locate_key = bad if len(bad) < 900 * KiB else "a" * (900 * KiB)
        with FastPath(daemon.socket) as client:
            if bad == "":
                client.send(f"PSFD1 LOCATE {good} \n")  # an empty second key
                expected = "ERR INVALID_ARGUMENT " + invalid_key_message("", 1)
            else:
                client.send(f"PSFD1 LOCATE {good} {locate_key}\n".encode())
                expected = "ERR INVALID_ARGUMENT " + invalid_key_message(locate_key, 1)
            assert client.readline() == expected, f"LOCATE({name})"
            first, entries = client.locate([good])
            assert first == "OK 1" and entries[0].read() == kept, f"after LOCATE({name})"
    # Nothing was deleted beside the malformed keys.
    assert list(stub.Has(pb.HasRequest(keys=[good]), timeout=T).present) == [True]
    assert_served(daemon, "hostile keys")


def test_list_after_with_path_characters(daemon):
    """List's `after` (a key prefix) with separators and dots: INVALID_ARGUMENT
    with the documented message (tests/daemon/test_errors.py covers more values)."""
    for after in ("..\\", "\\", "/", "a/..", VALID[:10] + "\0"):
        got = grpc_error(lambda: daemon.stub.List(pb.ListRequest(after=after), timeout=T))
        assert got == (grpc.StatusCode.INVALID_ARGUMENT,
                       "after must be a key or a prefix of one: at most 64 lowercase hex "
                       "characters"), (after, got)
    assert_served(daemon, "bad List after")


# ---- oversize messages -----------------------------------------------------------------


def test_messages_past_the_max_message_size(daemons):
    """Every kind of request past --max-message-size, key lists included, is
    RESOURCE_EXHAUSTED with gRPC's "Received message larger than max (N vs.
    LIMIT)"; the same connection and others go on being served."""
    limit = MiB
    daemon = daemons(flags={"--max-message-size": "1MiB"})
    stub = daemon.stub
    big = random_bytes(limit + 10 * KiB, "past the message size")
    many_keys = [key_of(str(i).encode()) for i in range(limit // 64 + 1000)]
    calls = {
        "Put": lambda: support.put(stub, big, "packed"),
        "PutStream chunk": lambda: support.put_stream(stub, big, "loose", chunk=len(big)),
        "PutMany message": lambda: support.put_many(stub, [[big[:limit // 2],
                                                            big[limit // 2:]]]),
        "Stat keys": lambda: stub.Stat(pb.StatRequest(keys=many_keys), timeout=T),
        "Has keys": lambda: stub.Has(pb.HasRequest(keys=many_keys), timeout=T),
        "GetMany keys": lambda: stub.GetMany(pb.GetManyRequest(keys=many_keys), timeout=T),
        "Delete keys": lambda: stub.Delete(pb.DeleteRequest(keys=many_keys), timeout=T),
        "Get key": lambda: stub.Get(pb.GetRequest(key="a" * (limit + 1)), timeout=T),
    }
    for name, call in calls.items():
        code, details = grpc_error(call)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{name}: {code.name}: {details}"
        match = re.fullmatch(r"Received message larger than max \((\d+) vs\. (\d+)\)", details)
        assert match, f"{name}: {details!r}"
        assert int(match.group(1)) > limit and int(match.group(2)) == limit, f"{name}: {details}"
        # The connection that sent it is still served.
        assert support.put(stub, f"after {name}".encode(), "packed").size > 0
    present = stub.Has(pb.HasRequest(keys=[key_of(big), key_of(big[:limit // 2])]), timeout=T)
    assert list(present.present) == [False, False]
    # The limit is per message: the same bytes stream in chunks.
    assert support.put_stream(stub, big, "loose", chunk=256 * KiB).key == key_of(big)
    assert_served(daemon, "oversize messages")


# ---- sizes: zero, declared, past the limits ----------------------------------------------


def test_zero_length_objects_every_way(daemon):
    stub = daemon.stub
    stored = []
    for mode in ("auto", "loose", "packed"):
        stored.append(support.put(stub, b"", mode, "yes"))
        only_finish = pb.PutStreamRequest(options=pb.PutOptions(mode=support.MODES[mode]),
                                          finish_write=True)
        stored.append(stub.PutStream(iter([only_finish]), timeout=T).object)
        empties = [pb.PutStreamRequest(options=pb.PutOptions(mode=support.MODES[mode]))]
        empties += [pb.PutStreamRequest(data=b"") for _ in range(5)]
        empties += [pb.PutStreamRequest(finish_write=True)]
        stored.append(stub.PutStream(iter(empties), timeout=T).object)
        stored += [ref for batch in support.put_many(stub, [[b"", b""], []], mode)
                   for ref in batch]
        with FastPath(daemon.socket) as client:
            assert client.put_bytes(b"", mode) == f"OK {rs.EMPTY_KEY} 0"
    assert {(ref.key, ref.size) for ref in stored} == {(rs.EMPTY_KEY, 0)}
    assert len(stored) == 3 * 5
    first, messages, data = support.get(stub, rs.EMPTY_KEY, verify=True)
    assert (data, first.info.size, first.length, len(messages)) == (b"", 0, 0, 1)
    objects, missing, _, _ = support.assemble_pieces(support.get_many(stub, [rs.EMPTY_KEY] * 3))
    assert objects == {rs.EMPTY_KEY: b""} and missing == []
    _, issues, result = support.maintenance(stub, "Validate")
    assert result.issues == 0, list(issues)
    assert_served(daemon, "empty objects")


def raw_put_stream(channel, messages, timeout=T):
    """PutStream with hand-encoded request messages (bytes)."""
    call = channel.stream_unary("/packstore.v1.ObjectStore/PutStream",
                                request_serializer=lambda raw: raw,
                                response_deserializer=pb.PutStreamResponse.FromString)
    return call(iter(messages), timeout=timeout)


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_declared_size(message, declared):
    """`message` serialized with an extra field 15 (varint) claiming a size:
    PutStreamRequest has no size field, so a daemon must ignore it."""
    return message.SerializeToString() + bytes([15 << 3]) + varint(declared)


def test_put_stream_declared_sizes_are_not_trusted(daemon):
    """PutStream carries no size: a header declaring one (an unknown field)
    far larger or smaller than what is sent changes nothing; what is stored
    is exactly what was sent before finish_write."""
    channel = support.connect(daemon.socket, own_connection=True)
    try:
        for mode in ("auto", "loose", "packed"):
            options = pb.PutOptions(mode=support.MODES[mode])
            small = f"ten bytes? {mode}".encode()
            # Declares 1 PiB, sends a few bytes.
            messages = [with_declared_size(pb.PutStreamRequest(options=options, data=small),
                                           1 << 50),
                        with_declared_size(pb.PutStreamRequest(finish_write=True), 1 << 50)]
            ref = raw_put_stream(channel, messages).object
            assert (ref.key, ref.size) == (key_of(small), len(small))
            # Declares 5 bytes, sends 3 MiB.
            large = random_bytes(3 * MiB, f"more than declared {mode}")
            chunks = [large[i:i + 256 * KiB] for i in range(0, len(large), 256 * KiB)]
            messages = [with_declared_size(pb.PutStreamRequest(options=options, data=chunks[0]), 5)]
            messages += [with_declared_size(pb.PutStreamRequest(data=c), 5) for c in chunks[1:]]
            messages.append(pb.PutStreamRequest(finish_write=True).SerializeToString())
            ref = raw_put_stream(channel, messages).object
            assert (ref.key, ref.size) == (key_of(large), len(large))
            assert support.get_bytes(daemon.stub, ref.key, verify=True) == large
    finally:
        channel.close()
    assert_served(daemon, "declared sizes")


def held_stream(data, mode, release, chunk=256 * KiB):
    """PutStream messages: `data` in chunks, then nothing until `release` is
    set (a client that went silent), then finish_write."""
    options = pb.PutOptions(mode=support.MODES[mode])
    for i in range(0, len(data), chunk):
        message = pb.PutStreamRequest(data=data[i:i + chunk])
        if i == 0:
            message.options.CopyFrom(options)
        yield message
    release.wait(timeout=120)
    yield pb.PutStreamRequest(finish_write=True)


def test_put_stream_past_the_max_object_size_is_refused_while_the_client_holds_on(daemons):
    """The size limit is checked as bytes arrive: a client that sends more than
    --max-object-size and then goes silent is refused at once, without the
    daemon waiting for the rest, and nothing is stored."""
    daemon = daemons(flags={"--max-object-size": "1MiB"})
    release = threading.Event()
    chunk = 256 * KiB
    futures = {}
    try:
        for mode in ("auto", "loose", "packed"):
            data = random_bytes(2 * MiB, f"over the limit {mode}")
            futures[mode] = (data, daemon.new_stub().PutStream.future(
                held_stream(data, mode, release, chunk), timeout=60))
        for mode, (data, future) in futures.items():
            error = future.exception(timeout=15)
            assert error is not None, f"{mode}: stored past the limit"
            details = error.details() or ""
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (mode, details)
            match = re.fullmatch(r"object of (\d+) bytes or more exceeds the 1 MiB limit "
                                 r"\(--max-object-size\)", details)
            assert match and MiB < int(match.group(1)) <= MiB + chunk, (mode, details)
        assert not release.is_set(), "the refusals came only after the clients finished"
        assert_served(daemon, "uploads past the size limit")
    finally:
        release.set()
    keys = [key_of(data[:n]) for data, _ in futures.values() for n in (MiB, 2 * MiB)]
    assert not any(daemon.stub.Has(pb.HasRequest(keys=keys), timeout=T).present)
    wait_for(lambda: not rs.sandbox_files(daemon.store), 10, "an empty sandbox/")


def test_huge_sparse_file_through_the_fast_path(daemons, tmp_path):
    """A fast-path PUT of a file whose size says more than the limit or the
    free space is refused at once (RESOURCE_EXHAUSTED), before reading it."""
    daemon = daemons(flags={"--max-object-size": "64TiB"})
    free = os.statvfs(daemon.store).f_bavail * os.statvfs(daemon.store).f_frsize
    for size, limit_flag in ((free + (1 << 40), "free-disk-reserve"),):
        path = tmp_path / "sparse.bin"
        with open(path, "wb") as f:
            f.truncate(size)
        with open(path, "rb") as f, FastPath(daemon.socket) as client:
            started = time.monotonic()
            for mode in ("loose", "auto", "packed"):
                answer = client.put_fd(f.fileno(), mode)
                assert answer.startswith("ERR RESOURCE_EXHAUSTED the store's file system has "), (
                    mode, answer)
                assert f"(--{limit_flag})" in answer, answer
            assert time.monotonic() - started < 10, "the daemon read the sparse file"
        path.unlink()
    assert rs.sandbox_files(daemon.store) == []
    # Past --max-object-size.
    small = daemons(flags={"--max-object-size": "1GiB"}, name="small-limit")
    path = tmp_path / "sparse-2g.bin"
    with open(path, "wb") as f:
        f.truncate(2 << 30)
    with open(path, "rb") as f, FastPath(small.socket) as client:
        for mode in ("loose", "auto", "packed"):
            assert client.put_fd(f.fileno(), mode) == (
                "ERR RESOURCE_EXHAUSTED object of 2147483648 bytes or more exceeds the 1 GiB "
                "limit (--max-object-size)"), mode
    assert_served(daemon, "huge sparse files")
    assert_served(small, "huge sparse files")


# ---- truncated and abandoned uploads ------------------------------------------------------


def test_cancelled_uploads_store_nothing_and_leave_no_sandbox_file(daemon):
    """A client that cancels mid-upload (RST_STREAM): CANCELLED on its side,
    nothing stored, nothing acknowledged, its sandbox file gone at once."""
    release = threading.Event()
    size = 3 * MiB
    calls = {}
    try:
        for mode in ("loose", "auto", "packed"):
            data = random_bytes(size, f"cancelled {mode}")
            calls[mode] = (data, daemon.new_stub().PutStream.future(
                held_stream(data, mode, release), timeout=60))
        # Every upload past 1 MiB streams into a sandbox file.
        wait_for(lambda: len(rs.sandbox_files(daemon.store)) == 3, 15,
                 "three uploads in sandbox/")
        assert_served(daemon, "uploads in progress")
        before = support.list_keys(daemon.stub)
        for mode, (data, future) in calls.items():
            assert future.cancel(), f"{mode}: the upload was over before it was cancelled"
        for mode, (data, future) in calls.items():
            assert future.cancelled()
            with pytest.raises(grpc.FutureCancelledError):
                future.result(timeout=5)
        wait_for(lambda: not rs.sandbox_files(daemon.store), 10,
                 "the cancelled uploads' files to leave sandbox/")
    finally:
        release.set()
    keys = [key_of(data[:n]) for data, _ in calls.values() for n in (MiB, 2 * MiB, size)]
    assert not any(daemon.stub.Has(pb.HasRequest(keys=keys), timeout=T).present)
    assert support.list_keys(daemon.stub) == before
    assert_served(daemon, "cancelled uploads")


def test_upload_cut_by_a_daemon_crash_leaves_nothing_after_restart(daemons):
    """The daemon killed (SIGKILL) with an upload in its sandbox: the next
    start removes the sandbox file (docs/format.md, Recovery) and stores
    nothing of it."""
    first = daemons(name="crashing")
    release = threading.Event()
    data = random_bytes(3 * MiB, "cut by a crash")
    future = first.new_stub().PutStream.future(held_stream(data, "loose", release), timeout=60)
    try:
        wait_for(lambda: rs.sandbox_files(first.store), 15, "the upload in sandbox/")
        first.process.send_signal(signal.SIGKILL)  # not first.kill(): it closes our channels
        first.process.wait(timeout=20)
        error = future.exception(timeout=15)
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
    finally:
        release.set()
    assert rs.sandbox_files(first.store), "nothing was left in sandbox/ to recover"
    second = daemons(store=first.store, init=False, name="restarted")
    assert rs.sandbox_files(second.store) == []
    keys = [key_of(data[:n]) for n in (MiB, 2 * MiB, len(data))]
    assert not any(second.stub.Has(pb.HasRequest(keys=keys), timeout=T).present)
    _, issues, result = support.maintenance(second.stub, "Validate")
    assert result.issues == 0, list(issues)
    assert_served(second, "an upload cut by a crash")


def test_abandoned_streams_hold_only_their_slots(daemons):
    """Clients that start streaming calls and go silent (no data, no reads,
    connection open), with the idle timeout off (test_idle_streams_are_
    cancelled_after_the_timeout has it on): each holds its stream slot until
    the client's deadline, a cancel, or shutdown. Meanwhile unary calls, the
    fast path and health are served, the next streaming call gets the
    stream-limit answer, and a slot comes back when a deadline expires.
    SIGTERM then ends the abandoned calls within --shutdown-timeout. (The
    calls all come from this process, whose share is here the whole limit:
    test_many_streams_never_read shows the share.)"""
    limit = 4
    daemon = daemons(flags={"--max-streams": str(limit), "--max-streams-per-client": str(limit),
                            "--stream-idle-timeout": "0", "--shutdown-timeout": "2"})
    big = random_bytes(16 * MiB, "read by nobody")
    big_key = support.put_stream(daemon.stub, big, "loose").key
    release = threading.Event()

    def silent_many():
        yield pb.PutManyRequest(objects=[b"a first batch"])
        release.wait(timeout=120)

    try:
        soon = daemon.new_stub().PutStream.future(
            held_stream(random_bytes(2 * MiB, "abandoned, short deadline"), "loose", release),
            timeout=4)
        started = time.monotonic()
        held = [
            daemon.new_stub().PutStream.future(
                held_stream(b"abandoned small upload", "auto", release), timeout=60),
            daemon.new_stub().PutMany(silent_many(), timeout=60),
            daemon.new_stub().Get(pb.GetRequest(key=big_key), timeout=60),
        ]
        wait_for(lambda: daemon.status().rpcs[1].active >= 1 and rs.sandbox_files(daemon.store),
                 10, "the abandoned calls to start")
        time.sleep(0.5)
        probe = daemon.new_stub()
        got = grpc_error(lambda: probe.List(pb.ListRequest(), timeout=T))
        assert got == (grpc.StatusCode.RESOURCE_EXHAUSTED, rs.STREAMS_FULL), got
        assert_served(daemon, "abandoned streams", streams=False)
        # The short deadline expires: its slot and its sandbox file come back.
        error = soon.exception(timeout=15)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
        assert time.monotonic() - started >= 3.5
        wait_for(lambda: support.code_of(lambda: probe.List(pb.ListRequest(), timeout=T))[0]
                 == "OK", 10, "a stream slot after the deadline expired")
        wait_for(lambda: not rs.sandbox_files(daemon.store), 10,
                 "the expired upload's file to leave sandbox/")
        # Still held by the others: a shutdown ends them within its timeout.
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 2 + 5, "shutdown waited for abandoned calls"
        for future in held[:2]:
            assert future.exception(timeout=10) is not None
        with pytest.raises(grpc.RpcError):
            for _ in held[2]:
                pass
    finally:
        release.set()
    restarted = daemons(store=daemon.store, init=False, name="after")
    present = restarted.stub.Has(pb.HasRequest(keys=[key_of(b"abandoned small upload")]),
                                 timeout=T).present
    assert list(present) == [False]
    assert rs.sandbox_files(restarted.store) == []


def test_idle_streams_are_cancelled_after_the_timeout(daemons):
    """Clients with no deadline of their own start streaming calls and go
    silent: an upload with 2 MiB sent, a PutMany after its first answer, a
    Get of 16 MiB never read. After --stream-idle-timeout each is cancelled
    (the client sees CANCELLED), the daemon logs it, the slots come back,
    the upload's sandbox file goes and nothing of it is stored; a client
    that sends a piece every 0.5 s, 4 s in all, is served meanwhile."""
    streams, idle = 4, 2  # room for the three silent calls and the slow one
    daemon = daemons(flags={"--max-streams": str(streams),
                            "--max-streams-per-client": str(streams),
                            "--stream-idle-timeout": str(idle)})
    big = random_bytes(16 * MiB, "never read")
    big_key = support.put_stream(daemon.stub, big, "loose", chunk=MiB).key
    upload = random_bytes(2 * MiB, "abandoned upload")
    release = threading.Event()
    first_answer = threading.Event()

    def silent_many():
        yield pb.PutManyRequest(objects=[b"answered, then silence"])
        first_answer.wait(timeout=30)
        release.wait(timeout=60)

    def pieces():
        for i in range(8):
            yield pb.PutStreamRequest(data=f"piece {i};".encode(), finish_write=i == 7)
            time.sleep(0.5)

    started = time.monotonic()
    try:
        silent_upload = daemon.new_stub().PutStream.future(held_stream(upload, "loose", release))
        many = daemon.new_stub().PutMany(silent_many())
        assert next(many).objects[0].key == key_of(b"answered, then silence")
        first_answer.set()
        unread = daemon.new_stub().Get(pb.GetRequest(key=big_key))
        wait_for(lambda: rs.sandbox_files(daemon.store), 10, "the upload to reach the sandbox")
        slow = daemon.new_stub().PutStream(pieces(), timeout=T)
        assert slow.object.key == key_of(b"".join(f"piece {i};".encode() for i in range(8)))
        error = silent_upload.exception(timeout=15)
        assert error is not None and error.code() == grpc.StatusCode.CANCELLED, error
        for call in (many, unread):
            with pytest.raises(grpc.RpcError) as raised:
                for _ in call:
                    pass
            assert raised.value.code() == grpc.StatusCode.CANCELLED, raised.value
        assert time.monotonic() - started >= idle
    finally:
        release.set()
    wait_for(lambda: sum(rpc.active for rpc in daemon.status().rpcs
                         if rpc.method in ("PutStream", "PutMany", "Get")) == 0, 10,
             "the cancelled calls to end")
    wait_for(lambda: not rs.sandbox_files(daemon.store), 10, "the sandbox file to go")
    log = daemon.log()
    for method in ("PutStream", "PutMany", "Get"):
        assert re.search(rf"{method} from pid {os.getpid()}: cancelled, its client took or sent "
                         rf"nothing for [0-9.]+ s \(--stream-idle-timeout\)", log), method
    present = daemon.stub.Has(pb.HasRequest(keys=[key_of(upload)]), timeout=T).present
    assert list(present) == [False]
    assert_served(daemon, "idle streams cancelled")


# ---- slow readers and readers that never read ----------------------------------------------


def read_slowly(call, stop, pause, counts, index):
    """Reads one message of a streaming call every `pause` seconds until `stop`."""
    try:
        for _ in call:
            counts[index] += 1
            if stop.wait(pause):
                break
    except grpc.RpcError:
        pass
    finally:
        call.cancel()


def test_slow_readers_leave_others_unaffected_and_memory_bounded(daemon):
    """Six clients read a 64 MiB object (Get, and GetMany of it) one 1 MiB
    message every 0.3 s: the daemon produces only as fast as they read, so its
    memory stays far below what buffering the object per reader would take,
    and a fast reader of the same object is not held back."""
    size = 64 * MiB
    big = random_bytes(size, "read slowly")
    key = support.put_stream(daemon.stub, big, "loose", chunk=MiB).key
    assert support.get_bytes(daemon.new_stub(), key, verify=True) == big  # warm up
    rss_before, anon_before = rs.memory(daemon)
    stop = threading.Event()
    calls = [daemon.new_stub().Get(pb.GetRequest(key=key), timeout=60) for _ in range(5)]
    calls.append(daemon.new_stub().GetMany(pb.GetManyRequest(keys=[key]), timeout=60))
    counts = [0] * len(calls)
    readers = [threading.Thread(target=read_slowly, args=(call, stop, 0.3, counts, i))
               for i, call in enumerate(calls)]
    for reader in readers:
        reader.start()
    peak_rss = peak_anon = 0
    try:
        time.sleep(1.0)
        started = time.monotonic()
        assert support.get_bytes(daemon.new_stub(), key, verify=True, timeout=30) == big
        fast = time.monotonic() - started
        assert_served(daemon, "slow readers")
        for _ in range(10):
            rss, anon = rs.memory(daemon)
            peak_rss, peak_anon = max(peak_rss, rss), max(peak_anon, anon)
            time.sleep(0.2)
        assert all(reader.is_alive() for reader in readers), "a slow reader ended early"
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
    slow_bytes = sum(counts) * MiB
    assert slow_bytes < len(calls) * size / 2, f"the slow readers read {counts} messages"
    assert fast < 20, f"a fast reader took {fast:.1f} s beside the slow ones"
    grown_rss, grown_anon = peak_rss - rss_before, peak_anon - anon_before
    # Buffering the object for each slow reader would take 6 x 64 MiB.
    assert grown_anon < 48 * MiB, f"RssAnon grew by {grown_anon / MiB:.0f} MiB"
    assert grown_rss < 64 * MiB, f"VmRSS grew by {grown_rss / MiB:.0f} MiB"
    assert_served(daemon, "slow readers gone")


def test_many_streams_never_read(daemons):
    """A client process opens --max-streams Gets of a 16 MiB object and never
    reads them: it gets its share (--max-streams-per-client, by default a
    quarter of --max-streams) and the rest are refused with the per-client
    answer naming its pid, on any of its connections. Another client process
    is served streaming calls meanwhile; unary calls and the fast path are
    served, memory stays bounded, and the slots come back when the client
    cancels. (test_errors.py::test_max_streams shows the limit of all
    clients together.)"""
    limit, share = 8, 2
    daemon = daemons(flags={"--max-streams": str(limit)})
    big = random_bytes(16 * MiB, "never read")
    key = support.put_stream(daemon.stub, big, "packed", chunk=MiB).key
    _, anon_before = rs.memory(daemon)
    hog = daemon.new_stub()
    calls = [hog.Get(pb.GetRequest(key=key), timeout=60) for _ in range(limit)]
    full = (grpc.StatusCode.RESOURCE_EXHAUSTED, rs.client_share_full(os.getpid(), share))
    try:
        wait_for(lambda: sum(call.done() for call in calls) == limit - share, 10,
                 "the Gets past the share to be refused")
        for call in calls:
            if call.done():
                assert (call.code(), call.details()) == full
        wait_for(lambda: daemon.status().rpcs[3].active == share, 10, "the unread Gets to run")
        time.sleep(1.0)
        other = daemon.new_stub()
        for name, call in {
            "Get": lambda: other.Get(pb.GetRequest(key=key), timeout=T),
            "GetMany": lambda: other.GetMany(pb.GetManyRequest(keys=[key]), timeout=T),
            "PutStream": lambda: support.put_stream(other, b"no slot", "loose"),
            "Get on the hog's connection": lambda: hog.Get(pb.GetRequest(key=key), timeout=T),
        }.items():
            got = grpc_error(call)
            assert got == full, (name, got)
        rs.assert_served_elsewhere(daemon, key, "streams never read")
        assert_served(daemon, "streams never read", streams=False)
        _, anon = rs.memory(daemon)
        assert anon - anon_before < 48 * MiB, f"RssAnon grew by {(anon - anon_before) / MiB:.0f} MiB"
    finally:
        for call in calls:
            call.cancel()
    wait_for(lambda: support.code_of(lambda: daemon.new_stub().Get(
        pb.GetRequest(key=key, verify=True), timeout=T))[0] == "OK", 10,
        "stream slots after the cancel")
    assert daemon.status().rpcs[3].active == 0
    assert_served(daemon, "streams cancelled")


# ---- the fast path ---------------------------------------------------------------------------


def test_fast_path_garbage_after_the_prefix(daemon):
    """Lines that start with "PSFD1 " and then say nothing sensible: each is
    ERR INVALID_ARGUMENT saying what is wrong, and the connection goes on
    serving (tests/daemon/test_fast_path.py has the plainer malformed lines,
    the 1 MiB line and the 10,001 keys)."""
    key = support.put(daemon.stub, b"served between garbage lines", "packed").key
    bad = [
        (b"PSFD1 locate " + key.encode() + b"\n", 'unknown request "locate": LOCATE or PUT'),
        (b"PSFD1  LOCATE " + key.encode() + b"\n", 'unknown request "": LOCATE or PUT'),
        (b"PSFD1 LOCATE " + key.encode() + b"\r\n", invalid_key_message(key + "\r", 0)),
        (b"PSFD1 LOCATE " + key.encode() + b" \n", invalid_key_message("", 1)),
        (b"PSFD1 LOCATE " + key.encode() + b"\x00\n", invalid_key_message(key + "\0", 0)),
        (b"PSFD1 " + b"X" * 5000 + b"\n", 'unknown request "' + "X" * 32 + '": LOCATE or PUT'),
        (("PSFD1 LOCATE " + " ".join([key] * 9999 + ["Z"]) + "\n").encode(),
         invalid_key_message("Z", 9999)),
    ]
    with FastPath(daemon.socket) as client:
        for line, expected in bad:
            client.send(line)
            assert client.readline() == "ERR INVALID_ARGUMENT " + expected, line[:40]
            first, entries = client.locate([key])
            assert first == "OK 1", f"after {line[:40]!r}: {first}"
        for line, gist in BINARY_GARBAGE:
            client.send(line)
            answer = client.readline_bytes()
            assert answer.startswith(b"ERR INVALID_ARGUMENT " + gist.encode()), (line, answer)
            first, entries = client.locate([key])
            assert first == "OK 1", f"after {line[:40]!r}: {first}"
    assert_served(daemon, "fast-path garbage")


BINARY_GARBAGE = [
    (b"PSFD1 \x00\x01\x02\n", "unknown request"),
    (b"PSFD1 \xff\xfe\xfd LOCATE\n", "unknown request"),
    (b"PSFD1 \x1b[2J\x1b[31mLOCATE\n", "unknown request"),
    (b"PSFD1 PUT loose no\x00\n", "unknown compression"),
    (b"PSFD1 PUT \xc3\xa9\x07 no\n", "unknown put mode"),
    (b"PSFD2\x00\x01\n", "a request line starts with"),
]


def test_fast_path_answers_to_binary_garbage_are_printable_ascii(daemon):
    """An answer is a line of ASCII for a person: bytes of the request that
    are echoed in an ERR line (an unknown verb, mode or compression) are
    escaped as keys are ("\\x00"), not sent back raw (NULs, terminal escape
    sequences, invalid UTF-8)."""
    with FastPath(daemon.socket) as client:
        for line, gist in BINARY_GARBAGE:
            client.send(line)
            answer = client.readline_bytes()
            assert answer.startswith(b"ERR INVALID_ARGUMENT " + gist.encode()), (line, answer)
            assert all(0x20 <= byte < 0x7F for byte in answer), (
                f"{line!r} is answered with raw bytes: {answer!r}")


def test_fast_path_put_of_special_descriptors(daemon, tmp_path):
    """PUT with descriptors that are no regular file open for reading (the
    pipe, socket, directory and write-only cases are in
    tests/daemon/test_fast_path.py): each refused with what it is; the
    daemon keeps no descriptor it was passed; a memfd (a regular file) is
    stored."""
    fds_before = rs.open_descriptors(daemon)
    path = tmp_path / "regular"
    path.write_bytes(b"opened with O_PATH")
    cases = [
        (lambda: os.open("/dev/zero", os.O_RDONLY),
         "PUT takes a regular file; the descriptor passed is a character device"),
        (lambda: os.open("/dev/null", os.O_RDONLY),
         "PUT takes a regular file; the descriptor passed is a character device"),
        (lambda: os.open(path, os.O_PATH),
         "the descriptor passed for PUT is not open for reading"),
        (lambda: os.open(tmp_path, os.O_PATH),
         "PUT takes a regular file; the descriptor passed is a directory"),
    ]
    if os.path.exists("/dev/loop0"):
        cases.append((lambda: os.open("/dev/loop0", os.O_RDONLY),
                      "PUT takes a regular file; the descriptor passed is a block device"))
    with FastPath(daemon.socket) as client:
        for opener, expected in cases:
            fd = opener()
            try:
                for mode in ("loose", "packed", "auto"):
                    assert client.put_fd(fd, mode) == "ERR INVALID_ARGUMENT " + expected, mode
            finally:
                os.close(fd)
        memfd = os.memfd_create("packstore-test")
        try:
            os.write(memfd, b"a memfd is a regular file")
            assert client.put_fd(memfd, "loose") == (
                f"OK {key_of(b'a memfd is a regular file')} 25")
        finally:
            os.close(memfd)
    wait_for(lambda: rs.open_descriptors(daemon) <= fds_before, 5,
             "the daemon to close the descriptors it was passed")
    assert_served(daemon, "special descriptors")


def mutate(path, stop, how, seed):
    """Changes the file at `path` until `stop`: overwrites random bytes in
    place ("rewrite"), or cuts it and grows it again ("resize")."""
    import random

    rng = random.Random(seed)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        while not stop.is_set():
            if how == "rewrite":
                os.pwrite(f.fileno(), rng.randbytes(4096), rng.randrange(size - 4096))
            else:
                cut = rng.randrange(size)
                os.ftruncate(f.fileno(), cut)
                os.pwrite(f.fileno(), rng.randbytes(size - cut), cut)


@pytest.mark.parametrize("how", ["rewrite", "resize"])
def test_fast_path_put_of_a_file_changing_while_read(daemon, tmp_path, how):
    """PUT of a file another process keeps changing: whatever the daemon read
    is what it stored, under the key of exactly those bytes (a verifying Get
    and Validate agree); its size as fstat said is not trusted."""
    stored = []
    for mode, size in (("loose", 8 * MiB), ("packed", 512 * KiB), ("packed", 4 * MiB),
                       ("auto", 3 * MiB)):
        path = tmp_path / f"changing-{mode}-{size}"
        path.write_bytes(random_bytes(size, f"changing {how} {mode}"))
        stop = threading.Event()
        mutator = threading.Thread(target=mutate, args=(path, stop, how, mode))
        mutator.start()
        try:
            with open(path, "rb") as f, FastPath(daemon.socket) as client:
                answers = [client.put_fd(f.fileno(), mode) for _ in range(3)]
        finally:
            stop.set()
            mutator.join()
        for answer in answers:
            match = re.fullmatch(r"OK ([0-9a-f]{64}) (\d+)", answer)
            assert match, f"{mode}: {answer}"
            stored.append((match.group(1), int(match.group(2))))
    for key, size in stored:
        data = support.get_bytes(daemon.stub, key, verify=True)
        assert len(data) == size and key_of(data) == key
    _, issues, result = support.maintenance(daemon.stub, "Validate")
    assert result.issues == 0, [(i.kind, i.subject, i.detail) for i in issues]
    assert rs.sandbox_files(daemon.store) == []
    assert_served(daemon, f"a file changing while read ({how})")


def test_fast_path_half_lines_and_silence(daemons):
    """Connections that send part of a line (with or without a descriptor)
    and go silent: the fast path has no idle timeout once a connection spoke
    PSFD1 (only the first bytes must come within 5 s), so they stay open,
    each holding its thread and its buffered bytes (at most 1 MiB), while
    everyone else is served; closing them frees everything; SIGTERM closes
    idle ones at once."""
    daemon = daemons(flags={"--shutdown-timeout": "5"})
    threads_before = rs.threads(daemon)
    _, anon_before = rs.memory(daemon)
    silent = []
    with tempfile.TemporaryFile() as f:
        for i in range(20):
            client = FastPath(daemon.socket)
            if i % 3 == 0:
                client.send(b"PSFD1 LOC")
            elif i % 3 == 1:
                client.send(b"PSFD1 PUT loose n", [f.fileno()])
            else:
                client.send(b"PSFD1 LOCATE " + b"a" * (MAX_LINE - 100))
            silent.append(client)
    try:
        wait_for(lambda: rs.threads(daemon) >= threads_before + 20, 10,
                 "a thread per fast-path connection")
        time.sleep(rs.FIRST_BYTES_TIMEOUT + 1)
        assert_served(daemon, "half lines")
        _, anon = rs.memory(daemon)
        # 7 connections hold almost 1 MiB each; the others a few KiB.
        assert anon - anon_before < 7 * MiB + 16 * MiB, f"{(anon - anon_before) / MiB:.0f} MiB"
        for client in silent[:10]:
            client.sock.settimeout(0.2)
            with pytest.raises(socket.timeout):
                client.fill()  # still open, no answer: the line is not complete
        for client in silent[:10]:
            client.close()
        wait_for(lambda: rs.threads(daemon) <= threads_before + 10, 10,
                 "the closed connections' threads to end")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 3, "shutdown waited for idle fast-path connections"
        for client in silent[10:]:
            client.sock.settimeout(5)
            assert client.at_eof()
    finally:
        for client in silent:
            client.close()


MAX_LINE = rs.MAX_LINE_BYTES


def test_fast_path_client_that_never_reads_its_answers(daemons):
    """A client pipelines thousands of LOCATE requests (each answered with a
    descriptor) and never reads: the daemon answers until the socket is full
    and then waits, holding one answer; no descriptors pile up in the
    daemon, others are served, and SIGTERM still ends within
    --shutdown-timeout."""
    daemon = daemons(flags={"--shutdown-timeout": "2"})
    key = support.put(daemon.stub, b"a loose object, one descriptor per answer", "loose").key
    fds_before = rs.open_descriptors(daemon)
    _, anon_before = rs.memory(daemon)
    hog = FastPath(daemon.socket, timeout=1.0)
    line = f"PSFD1 LOCATE {key} {key} {key}\n".encode()
    sent = 0
    try:
        try:
            while sent < 200000:
                hog.sock.sendall(line * 100)
                sent += 100
        except socket.timeout:
            pass  # the daemon stopped reading: its answers are not being read
        assert sent < 200000, "the daemon read every request without its answers being read"
        time.sleep(0.5)
        assert rs.open_descriptors(daemon) <= fds_before + 2
        _, anon = rs.memory(daemon)
        assert anon - anon_before < 16 * MiB, f"RssAnon grew by {(anon - anon_before) / MiB:.0f} MiB"
        assert_served(daemon, "a fast-path client that never reads")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 2 + 3, "shutdown waited for a client that never reads"
    finally:
        hog.close()


def test_fast_path_idle_timeout_closes_half_lines_and_unread_answers(daemons):
    """With --stream-idle-timeout 2: connections that sent part of a line
    (with or without a descriptor) and then nothing are answered ERR
    DEADLINE_EXCEEDED and closed; a client pipelining LOCATEs that never
    reads its answers is closed, its descriptors and thread given back; a
    connection idle between requests for longer stays open and is served."""
    idle = 2
    daemon = daemons(flags={"--stream-idle-timeout": str(idle)})
    key = support.put(daemon.stub, b"located after a pause", "loose").key
    threads_before = rs.threads(daemon)
    fds_before = rs.open_descriptors(daemon)
    between = FastPath(daemon.socket)
    half = [FastPath(daemon.socket) for _ in range(3)]
    hog = FastPath(daemon.socket, timeout=1.0)
    try:
        assert between.locate([key])[0] == "OK 1"
        with tempfile.TemporaryFile() as f:
            half[0].send(b"PSFD1 LOC")
            half[1].send(b"PSFD1 PUT loose n", [f.fileno()])
            half[2].send(b"PSFD1 LOCATE " + b"a" * (MAX_LINE - 100))
        line = f"PSFD1 LOCATE {key} {key} {key}\n".encode()
        # Until the daemon stops reading (or, late, closes the connection).
        with contextlib.suppress(socket.timeout, BrokenPipeError, ConnectionResetError):
            for _ in range(2000):
                hog.sock.sendall(line * 100)
        wait_for(lambda: rs.threads(daemon) >= threads_before + 5, 10,
                 "a thread per fast-path connection")
        peak = rs.threads(daemon)
        started = time.monotonic()
        for client in half:
            client.sock.settimeout(idle + 10)
            assert client.readline() == (f"ERR DEADLINE_EXCEEDED a request line was not completed "
                                         f"within {idle} s (--stream-idle-timeout)")
            assert client.at_eof()
        wait_for(lambda: rs.open_descriptors(daemon) <= fds_before + 2, idle + 10,
                 "the never-reading client's connection to close")
        assert time.monotonic() - started < idle + 10
        wait_for(lambda: rs.threads(daemon) <= peak - 4, 10,
                 "the closed connections' threads to end")
        time.sleep(idle + 1)  # idle between requests: no timeout
        first, entries = between.locate([key])
        assert first == "OK 1" and entries[0].read() == b"located after a pause"
        log = daemon.log()
        assert "part of a request line, then nothing for 2 s (--stream-idle-timeout)" in log
        assert "it took none of an answer for 2 s (--stream-idle-timeout)" in log
        assert_served(daemon, "idle fast-path connections closed")
    finally:
        for client in [between, hog] + half:
            client.close()


def test_fast_path_connection_limit(daemon):
    """1024 fast-path connections open at once; the next one is told so
    (ERR UNAVAILABLE, docs/protocol.md) and closed; gRPC is served; one
    closed makes room for a new one."""
    limit = rs.MAX_FAST_PATH_CONNECTIONS
    key = support.put(daemon.stub, b"located by a thousand connections", "packed").key
    clients = []
    try:
        for _ in range(limit):
            client = FastPath(daemon.socket)
            client.send(f"PSFD1 LOCATE {rs.EMPTY_KEY}\n")
            clients.append(client)
        for client in clients:
            assert client.readline() == "OK 0"
            assert client.readline() == f"{rs.EMPTY_KEY} missing"
        with FastPath(daemon.socket) as extra:
            extra.send(f"PSFD1 LOCATE {key}\n")
            assert extra.readline() == (
                "ERR UNAVAILABLE too many fast-path connections at once (1024); use gRPC, "
                "or retry when some have closed")
            assert extra.at_eof()
        stub = daemon.new_stub()
        data = b"gRPC while the fast path is full"
        assert support.put(stub, data, "packed").key == key_of(data)
        assert support.get_bytes(stub, key_of(data), verify=True) == data
        assert support.health_check(daemon.channel) == "SERVING"
        clients.pop().close()

        def admitted():
            with FastPath(daemon.socket) as probe:
                first, entries = probe.locate([key])
                return first == "OK 1" and entries[0].read() == b"located by a thousand connections"

        wait_for(admitted, 10, "room for a new fast-path connection")
    finally:
        for client in clients:
            client.close()
    assert_served(daemon, "a full fast path")


# ---- peers that are not allowed ---------------------------------------------------------------

FLOOD = r"""
import socket, sys
refused = 0
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    s.sendall(b"PSFD1 LOCATE " + b"0" * 64 + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        piece = s.recv(4096)
        if not piece:
            break
        answer += piece
    refused += answer.startswith(b"ERR PERMISSION_DENIED uid 65534 gid 65534 is not allowed")
    s.close()
print(refused)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_refused_peer_flooding_connections_blocks_no_one(daemons, shared_tmp):
    """A peer the allow lists refuse (tests/daemon/test_access.py and
    test_fast_path.py prove each refusal's answer) opening hundreds of
    connections: each refused, while an allowed client is served."""
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666", "--allow-uid": "0"})
    count = 300
    flood = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         FLOOD, str(daemon.socket), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        served = 0
        while flood.poll() is None and served < 50:
            assert_served(daemon, "a refused peer's flood")
            served += 1
        out, err = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert flood.returncode == 0, err
    assert int(out) == count, f"{out.strip()} of {count} connections refused: {err}"
    assert served >= 1
