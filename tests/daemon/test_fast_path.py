"""The local fast path (docs/protocol.md, "The local fast path (PSFD1)"),
spoken by a minimal raw-socket client written here: LOCATE answered with
descriptors (SCM_RIGHTS) that read the right bytes, also while the daemon
repacks and cleans; PUT of a file by its descriptor through the normal write
path; errors, the --fast-path switch, allow lists, the first-bytes timeout,
and gRPC on the same socket at the same time.

Run as a script, this file is also the client processes the suite starts:

  reader SOCKET KEYS_FILE SECONDS   LOCATE every key and check every byte read,
                                    in a loop; prints {"located", "wrong", "errors"}
  access SOCKET                     LOCATE a key and PUT a file of its own;
                                    prints {"locate": line, "put": line}
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import daemon_support as support
from daemon_support import KiB, MiB, key_of, pb, wait_for
from fast_path_client import FastPath

FIRST_BYTES_TIMEOUT = 5.0  # Listener::kFirstBytesTimeout
MAX_DESCRIPTORS = 250
MISSING_KEY = "0" * 64
OTHER_UID = 65534
OTHER_GID = 65534
CLIENT_TIMEOUT = 90
TURNED_OFF = "ERR UNAVAILABLE the fast path is turned off (--fast-path)"


def check_content(entries, contents):
    for entry in entries:
        assert entry.state == "found", f"{entry.key}: {entry.state}"
        assert entry.read() == contents[entry.key], f"{entry.key}: wrong bytes"


def put_all(stub, contents_list, mode, compression="unspecified"):
    return {support.put(stub, data, mode, compression).key: data for data in contents_list}


def run_self(*args, uid=None, gid=None, timeout=CLIENT_TIMEOUT):
    """This file as a client process (see the module docstring); its JSON output."""
    argv = [sys.executable, str(Path(__file__).resolve()), *[str(a) for a in args]]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    env = dict(os.environ, PACKSTORE_BUILD_DIR=str(support.BUILD_DIR), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    assert result.returncode == 0, f"the client failed:\n{result.stderr}"
    return json.loads(result.stdout)


# ---- LOCATE -----------------------------------------------------------------------------


def test_locate_packed_compressed_loose_and_missing(daemon):
    packed = put_all(daemon.stub, [support.random_bytes(5000, s) for s in range(3)], "packed")
    compressed = put_all(daemon.stub, [support.text_bytes(200 * KiB, s) for s in range(2)],
                         "packed", "yes")
    loose = put_all(daemon.stub, [support.random_bytes(70 * KiB, s) for s in range(3)] + [b""],
                    "loose")
    contents = {**packed, **compressed, **loose}
    keys = list(packed) + [MISSING_KEY] + list(compressed) + list(loose)
    with FastPath(daemon.socket) as client:
        first, entries = client.locate(keys)
        assert first == f"OK {1 + len(loose)}", first
        by_key = {entry.key: entry for entry in entries}
        assert by_key[MISSING_KEY].state == "missing"
        check_content([by_key[k] for k in contents], contents)
        pack_fds = {by_key[k].index for k in list(packed) + list(compressed)}
        assert len(pack_fds) == 1, "objects of one pack must share one descriptor"
        for key in compressed:
            assert by_key[key].codec == "zlib" and by_key[key].length < by_key[key].size
        for key in packed:
            assert by_key[key].codec == "none"
        for key in loose:
            entry = by_key[key]
            assert (entry.offset, entry.length, entry.codec) == (0, len(loose[key]), "none")
            assert entry.index not in pack_fds
            assert os.fstat(entry.fd).st_size == len(loose[key])
        # Read-only descriptors: the client cannot change the store through them.
        fd = by_key[next(iter(packed))].fd
        with pytest.raises(OSError):
            os.write(fd, b"x")
        # The connection carries more requests.
        first, again = client.locate([MISSING_KEY, next(iter(loose))])
        assert first == "OK 1" and again[0].state == "missing"
        assert again[1].read() == loose[next(iter(loose))]


def test_many_keys_of_one_pack_share_one_descriptor(daemon):
    objects = [support.random_bytes(1 * KiB, f"many-{i}") for i in range(2000)]
    keys = [ref.key for batch in support.put_many(daemon.stub, [objects[:1000], objects[1000:]],
                                                  "packed") for ref in batch]
    contents = dict(zip(keys, objects))
    with FastPath(daemon.socket) as client:
        first, entries = client.locate(keys)
        assert first == "OK 1"
        assert {entry.index for entry in entries} == {0}
        check_content(entries, contents)


def test_more_than_250_loose_objects_are_answered_again(daemon):
    objects = [f"loose object {i}".encode() for i in range(300)]
    contents = put_all(daemon.stub, objects, "loose")
    keys = list(contents)
    with FastPath(daemon.socket) as client:
        first, entries = client.locate(keys)
        assert first == f"OK {MAX_DESCRIPTORS}"
        found = [entry for entry in entries if entry.state == "found"]
        deferred = [entry.key for entry in entries if entry.state == "again"]
        assert len(found) == MAX_DESCRIPTORS and len(deferred) == len(keys) - MAX_DESCRIPTORS
        check_content(found, contents)
        first, rest = client.locate(deferred)
        assert first == f"OK {len(deferred)}"
        check_content(rest, contents)


def test_the_largest_request_is_answered(daemon):
    data = b"one object, asked for 10,000 times"
    key = support.put(daemon.stub, data, "packed").key
    with FastPath(daemon.socket) as client:
        first, entries = client.locate([key] * 10000)
        assert first == "OK 1"
        assert all(entry.index == 0 and entry.read() == data for entry in entries[::997])


# ---- errors -------------------------------------------------------------------------------


def test_malformed_lines_and_keys_are_invalid_argument(daemon):
    key = support.put(daemon.stub, b"still served after errors", "packed").key
    bad = [
        ("PSFD1 LOCATE\n", "LOCATE needs 1 to 10000 keys"),
        ("PSFD1 LOCATE ABC\n", 'keys[0]: invalid sha256 key "ABC"'),
        (f"PSFD1 LOCATE {key} {key.upper()}\n", "keys[1]: invalid sha256 key"),
        (f"PSFD1 LOCATE {key}  {key}\n", "keys[1]: invalid sha256 key"),
        (f"PSFD1 LOCATE ../../{key[:58]}\n", "keys[0]: invalid sha256 key"),
        ("PSFD1 LOCATE " + " ".join([key] * 10001) + "\n", "at most 10000 keys; 10001"),
        ("PSFD1 FETCH x\n", 'unknown request "FETCH"'),
        ("PSFD1 \n", 'unknown request ""'),
        ("PSFD2 LOCATE x\n", 'starts with "PSFD1 "'),
        ("PSFD1 PUT loose\n", "PUT takes a mode and a compression"),
        ("PSFD1 PUT loose no extra\n", "PUT takes a mode and a compression"),
        ("PSFD1 PUT sideways no\n", 'unknown put mode "sideways"'),
        ("PSFD1 PUT loose maybe\n", 'unknown compression "maybe"'),
        ("PSFD1 PUT loose no\n", "PUT needs the descriptor"),
    ]
    with FastPath(daemon.socket) as client:
        for line, expected in bad:
            client.send(line)
            answer = client.readline()
            assert answer.startswith("ERR INVALID_ARGUMENT "), f"{line[:60]!r}: {answer}"
            assert expected in answer, f"{line[:60]!r}: {answer}"
        # Descriptors where none belong, or too many.
        with tempfile.TemporaryFile() as f:
            client.send(f"PSFD1 LOCATE {key}\n", [f.fileno()])
            assert client.readline() == (
                "ERR INVALID_ARGUMENT LOCATE takes no descriptors; 1 was attached")
            client.send("PSFD1 PUT loose no\n", [f.fileno(), f.fileno()])
            assert client.readline() == (
                "ERR INVALID_ARGUMENT PUT takes one descriptor; 2 were attached")
        # After all that, the connection still serves.
        first, entries = client.locate([key])
        assert first == "OK 1" and entries[0].read() == b"still served after errors"
        # 1 MiB without a newline is answered and the connection closed.
        client.send(b"PSFD1 LOCATE " + b"a" * (MiB - len("PSFD1 LOCATE ")))
        answer = client.readline()
        assert answer.startswith("ERR INVALID_ARGUMENT a request line is at most 1048576 bytes")
        assert client.at_eof()


def test_descriptors_beyond_what_a_request_may_carry(daemon):
    with tempfile.TemporaryFile() as f, FastPath(daemon.socket) as client:
        # More in one message than the daemon takes: the rest are lost, and
        # the request is refused rather than served with a guess.
        client.send("PSFD1 PUT loose no\n", [f.fileno()] * 10)
        answer = client.readline()
        assert answer.startswith("ERR INVALID_ARGUMENT descriptors attached to the request were "
                                 "lost"), answer
        assert client.put_bytes(b"served after that", "loose").startswith("OK ")
        # Descriptors trickling in with a line that never ends are not hoarded.
        for _ in range(3):
            client.send("P", [f.fileno()] * 4)
            time.sleep(0.05)
        assert client.readline() == (
            "ERR INVALID_ARGUMENT more than 8 descriptors came with one request line")
        assert client.at_eof()


def test_other_first_bytes_are_closed_without_an_answer(daemon):
    for first in [b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/1.1\r\n", b"psfd1 LOCATE x\n"]:
        with FastPath(daemon.socket, timeout=FIRST_BYTES_TIMEOUT / 2) as client:
            client.send(first)
            assert client.at_eof(), f"{first!r} was not closed at once"
            assert client.buffer == b""
    assert support.health_check(daemon.channel) == "SERVING"


# ---- PUT ------------------------------------------------------------------------------------


def stat_of(daemon, key):
    stats = daemon.stub.Stat(pb.StatRequest(keys=[key]), timeout=support.RPC_TIMEOUT).stats
    assert stats[0].found, f"{key} is not stored"
    return stats[0].info


@pytest.mark.parametrize("mode,compression,size,packed,compressed", [
    ("packed", "no", 10 * KiB, True, False),
    ("packed", "yes", 300 * KiB, True, True),
    ("packed", "auto", 3 * MiB, True, True),     # past auto-packed-max-size: loose, then packed
    ("loose", "default", 200 * KiB, False, False),
    ("auto", "default", 10 * KiB, True, False),
    ("auto", "default", 2 * MiB, False, False),
    ("default", "yes", 64 * KiB, True, True),    # --default-mode is auto
    ("packed", "default", 0, True, False),
])
def test_put_file(daemon, mode, compression, size, packed, compressed):
    data = support.text_bytes(size, f"{mode}-{compression}-{size}") if compressed else \
        support.random_bytes(size, f"{mode}-{compression}-{size}")
    with FastPath(daemon.socket) as client:
        answer = client.put_bytes(data, mode, compression)
        assert answer == f"OK {key_of(data)} {len(data)}", answer
        first, entries = client.locate([key_of(data)])
        assert entries[0].read() == data
    info = stat_of(daemon, key_of(data))
    assert (info.packed, info.compressed) == (packed, compressed), info
    assert support.get_bytes(daemon.stub, key_of(data)) == data


def test_put_reads_from_offset_0_to_the_end_whatever_the_descriptor_says(daemon):
    data = support.random_bytes(100 * KiB, "offsets")
    with tempfile.TemporaryFile() as f, FastPath(daemon.socket) as client:
        f.write(data)
        f.flush()
        os.lseek(f.fileno(), 12345, os.SEEK_SET)  # its own offset is not used
        assert client.put_fd(f.fileno(), "loose") == f"OK {key_of(data)} {len(data)}"
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 12345, "the daemon moved the offset"
        # The same descriptor, grown: stored as it is now.
        os.pwrite(f.fileno(), b"more", len(data))
        grown = data + b"more"
        assert client.put_fd(f.fileno(), "packed") == f"OK {key_of(grown)} {len(grown)}"
    assert support.get_bytes(daemon.stub, key_of(grown)) == grown


def test_put_of_what_is_not_a_readable_regular_file_is_refused(daemon, tmp_path):
    with FastPath(daemon.socket) as client:
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, b"bytes in a pipe")
            answer = client.put_fd(read_end, "loose")
            assert answer == ("ERR INVALID_ARGUMENT PUT takes a regular file; the descriptor "
                              "passed is a pipe"), answer
        finally:
            os.close(read_end)
            os.close(write_end)
        directory = os.open(tmp_path, os.O_RDONLY)
        try:
            assert "is a directory" in client.put_fd(directory, "loose")
        finally:
            os.close(directory)
        path = tmp_path / "write-only"
        path.write_bytes(b"cannot be read")
        write_only = os.open(path, os.O_WRONLY)
        try:
            answer = client.put_fd(write_only, "packed")
            assert answer == "ERR INVALID_ARGUMENT the descriptor passed for PUT is not open for reading"
        finally:
            os.close(write_only)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            assert "is a socket" in client.put_fd(other.fileno(), "loose")
        assert client.put_bytes(b"a regular file", "loose").startswith("OK ")
    present = daemon.stub.Has(pb.HasRequest(keys=[key_of(b"bytes in a pipe"),
                                                  key_of(b"cannot be read")]),
                              timeout=support.RPC_TIMEOUT).present
    assert list(present) == [False, False]


@pytest.mark.parametrize("mode", ["packed", "loose", "auto"])
def test_put_larger_than_max_object_size_is_refused(daemons, mode):
    daemon = daemons(flags={"--max-object-size": "1MiB"})
    at_limit = support.random_bytes(MiB, "at the limit")
    too_big = support.random_bytes(MiB + 1, "too big")
    with FastPath(daemon.socket) as client:
        answer = client.put_bytes(too_big, mode)
        assert answer.startswith("ERR RESOURCE_EXHAUSTED object of 1048577 bytes or more exceeds "
                                 "the 1 MiB limit (--max-object-size)"), answer
        assert client.put_bytes(at_limit, mode) == f"OK {key_of(at_limit)} {MiB}"
    present = daemon.stub.Has(pb.HasRequest(keys=[key_of(too_big), key_of(at_limit)]),
                              timeout=support.RPC_TIMEOUT).present
    assert list(present) == [False, True]


def test_put_respects_the_free_disk_reserve(daemons):
    daemon = daemons(flags={"--free-disk-reserve": "1000TiB"})
    with FastPath(daemon.socket) as client:
        for mode in ("packed", "loose"):
            answer = client.put_bytes(b"no room for this", mode)
            assert answer.startswith("ERR RESOURCE_EXHAUSTED the store's file system has "), answer
            assert "(--free-disk-reserve)" in answer


def test_packed_puts_from_many_connections_share_group_commits(daemon):
    objects = [support.random_bytes(4 * KiB, f"group-{i}") for i in range(64)]
    answers = [None] * len(objects)

    def put(i):
        with FastPath(daemon.socket) as client:
            answers[i] = client.put_bytes(objects[i], "packed")

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(objects))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for data, answer in zip(objects, answers):
        assert answer == f"OK {key_of(data)} {len(data)}"
    status = daemon.status()
    assert status.counts.packed_objects == len(objects) and status.counts.loose_objects == 0


# ---- the switch, the allow lists, the socket's other users --------------------------------


def test_fast_path_turned_off(daemons):
    daemon = daemons(flags={"--fast-path": "false"})
    with FastPath(daemon.socket) as client:
        client.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        assert client.readline() == TURNED_OFF
        assert client.at_eof()
    # gRPC is not affected.
    assert support.put(daemon.stub, b"gRPC still works").key == key_of(b"gRPC still works")


def test_fast_path_switch_is_reloaded_on_sighup(daemons, tmp_path):
    config = tmp_path / "packstored.conf"
    config.write_text("fast-path = false\n")
    daemon = daemons(flags={"--config": str(config)})
    with FastPath(daemon.socket) as client:
        client.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        assert client.readline() == TURNED_OFF

    def reload(text):
        config.write_text(text)
        lines = daemon.log().count("reloaded the configuration")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count("reloaded the configuration") > lines, 20,
                 "the reload")

    reload("fast-path = true\n")
    assert "fast-path false -> true" in daemon.log()
    with FastPath(daemon.socket) as open_connection:
        first, entries = open_connection.locate([MISSING_KEY])
        assert first == "OK 0" and entries[0].state == "missing"
        # Turned off again: the next request of a connection already open is refused.
        reload("fast-path = false\n")
        open_connection.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        assert open_connection.readline() == TURNED_OFF
        assert open_connection.at_eof()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_peer_not_allowed_is_refused_and_allowed_peer_is_served(daemons, shared_tmp):
    refusing = daemons(workdir=shared_tmp, name="refusing",
                       flags={"--socket-mode": "0666", "--allow-uid": "0"})
    answers = run_self("access", refusing.socket, uid=OTHER_UID, gid=OTHER_GID)
    expected = f"ERR PERMISSION_DENIED uid {OTHER_UID} gid {OTHER_GID} is not allowed to use this store"
    assert answers["locate"] == expected, answers
    assert re.search(rf"refused a connection from uid {OTHER_UID} .*\(fast path\)", refusing.log())

    allowing = daemons(workdir=shared_tmp, name="allowing",
                       flags={"--socket-mode": "0666", "--allow-uid": ["0", str(OTHER_UID)]})
    answers = run_self("access", allowing.socket, uid=OTHER_UID, gid=OTHER_GID)
    data = access_data(OTHER_UID)
    assert answers["locate"] == "OK 0", answers
    assert answers["put"] == f"OK {key_of(data)} {len(data)}", answers
    assert support.get_bytes(allowing.stub, key_of(data)) == data


def test_allow_lists_changed_by_sighup_apply_to_open_connections(daemons, tmp_path):
    config = tmp_path / "packstored.conf"
    # Root is no admin here, so the allow lists decide for it as for anyone.
    config.write_text("admin-uid = [12345]\nallow-uid = [0]\n")
    daemon = daemons(flags={"--config": str(config)})
    with FastPath(daemon.socket) as client:
        assert client.put_bytes(b"allowed at first", "packed").startswith("OK ")
        config.write_text("admin-uid = [12345]\nallow-uid = [12345]\n")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "allow-uid [0] -> [12345]" in daemon.log(), 20, "the reload")
        denied = "ERR PERMISSION_DENIED uid 0 gid 0 is not allowed to use this store"
        assert client.put_bytes(b"refused now", "packed") == denied
        client.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        assert client.readline() == denied
    # A new connection is refused at once.
    with FastPath(daemon.socket) as client:
        client.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        assert client.readline() == denied
        assert client.at_eof()


def test_grpc_and_fast_path_on_the_same_socket_at_once(daemon):
    stop = threading.Event()
    errors = []
    counts = {"grpc": 0, "fast": 0}

    def grpc_loop():
        stub = daemon.new_stub()
        i = 0
        while not stop.is_set():
            data = f"gRPC object {i}".encode()
            try:
                assert support.put(stub, data, "packed").key == key_of(data)
                assert support.get_bytes(stub, key_of(data)) == data
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(f"gRPC: {error!r}")
                return
            counts["grpc"] += 1
            i += 1

    def fast_loop(index):
        with FastPath(daemon.socket) as client:
            i = 0
            while not stop.is_set():
                data = f"fast-path object {index}/{i}".encode()
                try:
                    assert client.put_bytes(data, "auto") == f"OK {key_of(data)} {len(data)}"
                    first, entries = client.locate([key_of(data)])
                    assert entries[0].read() == data
                    for fd in client.held:
                        os.close(fd)
                    client.held = []
                except Exception as error:  # noqa: BLE001 - reported below
                    errors.append(f"fast path: {error!r}")
                    return
                counts["fast"] += 1
                i += 1

    threads = [threading.Thread(target=grpc_loop) for _ in range(2)]
    threads += [threading.Thread(target=fast_loop, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert counts["grpc"] > 10 and counts["fast"] > 10, counts
    assert support.health_check(daemon.channel) == "SERVING"


# ---- correctness while the daemon repacks and cleans ------------------------------------


def test_held_descriptors_read_the_right_bytes_after_delete_repack_clean_and_pack(daemon):
    stub = daemon.stub
    packed = put_all(stub, [support.random_bytes(10 * KiB + i, f"held-p{i}") for i in range(20)],
                     "packed")
    compressed = put_all(stub, [support.text_bytes(50 * KiB + i, f"held-c{i}") for i in range(5)],
                         "packed", "yes")
    loose = put_all(stub, [support.random_bytes(30 * KiB + i, f"held-l{i}") for i in range(5)],
                    "loose")
    contents = {**packed, **compressed, **loose}
    keys = list(contents)
    with FastPath(daemon.socket) as client:
        first, held = client.locate(keys)
        assert first == f"OK {1 + len(loose)}"
        pack_inode = os.fstat(held[0].fd).st_ino
        deleted = keys[::4]
        support.maintenance(stub, "Delete", pb.DeleteRequest(keys=deleted))
        support.maintenance(stub, "Repack", pb.RepackRequest())
        support.maintenance(stub, "Pack", pb.PackRequest(compression=pb.COMPRESSION_YES))
        support.maintenance(stub, "Clean", pb.CleanRequest())
        put_all(stub, [b"a new object in a reused pack id"], "packed")
        support.maintenance(stub, "Repack", pb.RepackRequest(compression=pb.COMPRESSION_NO))
        # Every descriptor still reads what it read, deleted objects included.
        check_content(held, contents)
        assert not any(os.path.exists(p) for p in store_loose_paths(daemon, loose))

        first, fresh = client.locate(keys)
        by_key = {entry.key: entry for entry in fresh}
        for key in deleted:
            assert by_key[key].state == "missing"
        alive = [by_key[key] for key in keys if key not in deleted]
        check_content(alive, contents)
        assert os.fstat(alive[0].fd).st_ino != pack_inode


def store_loose_paths(daemon, keys):
    return [daemon.store / "loose" / key[:2] / key[2:] for key in keys]


def test_locating_processes_read_no_wrong_byte_while_maintenance_runs(daemon, tmp_path):
    stub = daemon.stub
    contents = {}
    contents.update(put_all(stub, [support.random_bytes(3 * KiB + i, f"m-p{i}") for i in range(120)],
                            "packed"))
    contents.update(put_all(stub, [support.text_bytes(20 * KiB + i, f"m-c{i}") for i in range(40)],
                            "packed", "yes"))
    contents.update(put_all(stub, [support.random_bytes(8 * KiB + i, f"m-l{i}") for i in range(40)],
                            "loose"))
    keys = list(contents)
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("\n".join(keys))
    seconds = 12
    env = dict(os.environ, PACKSTORE_BUILD_DIR=str(support.BUILD_DIR), PYTHONDONTWRITEBYTECODE="1")
    readers = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "reader",
                                 str(daemon.socket), str(keys_file), str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(4)]
    try:
        rounds = 0
        deadline = time.monotonic() + seconds - 1
        while time.monotonic() < deadline:
            victims = keys[rounds % 7::17][:5]
            support.maintenance(stub, "Delete", pb.DeleteRequest(keys=victims))
            support.maintenance(stub, "Repack", pb.RepackRequest(
                compression=[pb.COMPRESSION_UNSPECIFIED, pb.COMPRESSION_YES,
                             pb.COMPRESSION_NO][rounds % 3]))
            for key in victims:  # back, loose, to be packed again
                support.put(stub, contents[key], "loose")
            support.maintenance(stub, "Pack", pb.PackRequest(
                compression=pb.COMPRESSION_AUTO if rounds % 2 else pb.COMPRESSION_NO))
            support.maintenance(stub, "Clean", pb.CleanRequest())
            rounds += 1
        results = []
        for reader in readers:
            out, err = reader.communicate(timeout=CLIENT_TIMEOUT)
            assert reader.returncode == 0, f"a reader failed:\n{err}"
            results.append(json.loads(out))
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
    assert rounds >= 3, f"only {rounds} maintenance rounds"
    for result in results:
        assert result["wrong"] == [], result["wrong"][:5]
        assert result["errors"] == [], result["errors"][:5]
        assert result["located"] > len(keys), result


# ---- connections that say little or nothing ----------------------------------------------


def test_silent_client_is_closed_after_the_timeout_and_blocks_no_one(daemon):
    key = support.put(daemon.stub, b"served while others are silent", "packed").key
    silent = [FastPath(daemon.socket, timeout=4 * FIRST_BYTES_TIMEOUT) for _ in range(20)]
    partial = FastPath(daemon.socket, timeout=4 * FIRST_BYTES_TIMEOUT)
    partial.send(b"PSF")
    started = time.monotonic()
    try:
        # Others are served at once meanwhile, on both protocols.
        with FastPath(daemon.socket) as client:
            first, entries = client.locate([key])
            assert entries[0].read() == b"served while others are silent"
        assert support.get_bytes(daemon.new_stub(), key) == b"served while others are silent"
        assert time.monotonic() - started < FIRST_BYTES_TIMEOUT / 2
        # A client that sends its first bytes piecemeal is understood.
        slow = FastPath(daemon.socket)
        slow.send(b"PS")
        time.sleep(0.3)
        slow.send(b"FD1 LOCA")
        time.sleep(0.3)
        slow.send(f"TE {key}\n".encode())
        assert slow.readline() == "OK 1"
        slow.close()
        for connection in silent + [partial]:
            assert connection.at_eof()
        waited = time.monotonic() - started
        assert FIRST_BYTES_TIMEOUT - 0.5 <= waited <= FIRST_BYTES_TIMEOUT + 5, waited
    finally:
        for connection in silent + [partial]:
            connection.close()
    assert support.health_check(daemon.channel) == "SERVING"


def test_idle_fast_path_connections_do_not_hold_up_shutdown(daemon):
    key = support.put(daemon.stub, b"before shutdown", "packed").key
    idle = FastPath(daemon.socket)
    first, _ = idle.locate([key])
    assert first == "OK 1"
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert idle.at_eof()
    idle.close()


# ---- client processes --------------------------------------------------------------------


def access_data(uid):
    return f"a file written through the fast path by uid {uid}".encode()


def main_access(socket_path):
    answers = {}
    with FastPath(socket_path) as client:
        client.send(f"PSFD1 LOCATE {MISSING_KEY}\n")
        answers["locate"] = client.readline()
        if answers["locate"].startswith("OK"):
            client.readline()
            answers["put"] = client.put_bytes(access_data(os.getuid()), "packed")
    print(json.dumps(answers))


def main_reader(socket_path, keys_file, seconds):
    keys = Path(keys_file).read_text().split("\n")
    deadline = time.monotonic() + float(seconds)
    located, wrong, errors = 0, [], []
    with FastPath(socket_path) as client:
        while time.monotonic() < deadline and not wrong:
            first, entries = client.locate(keys)
            if entries is None:
                errors.append(first)
                break
            for entry in entries:
                if entry.state != "found":
                    continue  # deleted this round, or deferred
                content = entry.read()
                if hashlib.sha256(content).hexdigest() != entry.key:
                    wrong.append(entry.key)
                located += 1
            for fd in client.held:
                os.close(fd)
            client.held = []
    print(json.dumps({"located": located, "wrong": wrong, "errors": errors}))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"access": main_access, "reader": main_reader}[command](*arguments)
