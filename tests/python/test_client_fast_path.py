"""The client's local fast path (docs/protocol.md, "The local fast path
(PSFD1)"): reads through file descriptors the daemon passes and put_file
through a descriptor handed to it, used transparently, with the same
results as gRPC.

The first part holds the client's side of the protocol to scripted answers
of a fake daemon (FakeDaemon: every answer the protocol allows, and some it
does not); the rest runs against the real packstored, with the fast path on
and off, during maintenance, from several processes, and counts the
daemon's gRPC calls to see which path was taken."""

import gc
import gzip
import hashlib
import io
import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import grpc
import pytest

import daemon_support as support
import packstore
import python_support
from daemon_support import KiB, MiB, key_of, random_bytes, text_bytes
from packstore import fastpath

CALL_TIMEOUT = python_support.CALL_TIMEOUT
EMPTY_KEY = key_of(b"")


def open_fds():
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def fds_back_to(count, timeout=5.0):
    """True once this process has `count` descriptors open again. A server
    thread of the test (the fake daemon, gRPC's) may close its end of a
    connection a moment after the client closed its own."""
    deadline = time.monotonic() + timeout
    while open_fds() != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return open_fds() == count


# ---- a fake daemon ---------------------------------------------------------------------------


class FakeDaemon:
    """Speaks the fast path on a Unix socket from a table of objects:
    {key: (path, offset, length, size, codec)}. LOCATE is answered with at
    most ``files_per_answer`` descriptors (the rest `again`); PUT with the
    SHA-256 of what the passed descriptor holds. ``script``, when set, is
    called with each request line first and may return the raw bytes to
    answer instead (or None to close the connection without answering).
    Any connection that does not start with ``PSFD1 `` (gRPC's) is closed."""

    def __init__(self, path, objects=None, files_per_answer=250):
        self.path = str(path)
        self.objects = dict(objects or {})
        self.files_per_answer = files_per_answer
        self.script = None
        self.requests = []
        self.connections = 0
        self.put_fds_seen = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._open = []
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self):
        self._stopping = True
        try:
            socket.socket(socket.AF_UNIX).connect(self.path)  # wakes accept()
        except OSError:
            pass
        self._thread.join(5)
        self._listener.close()
        for conn in self._open:
            try:
                conn.close()
            except OSError:
                pass

    def drop_connections(self):
        """Closes every connection open now (as a daemon that restarts)."""
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self):
        while True:
            conn, _ = self._listener.accept()
            if self._stopping:
                conn.close()
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buffer = b""
        try:
            while True:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 4)
                if not data:
                    return
                buffer += data
                if not buffer.startswith(b"PSFD1 "[:len(buffer)]):
                    return
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self.requests.append(line.decode())
                    try:
                        answer = self._answer(line.decode(), fds)
                    finally:
                        for fd in fds:
                            os.close(fd)
                        fds = []
                    if answer is None:
                        return
                    data, send = answer
                    try:
                        if send:
                            socket.send_fds(conn, [data], send)
                        else:
                            conn.sendall(data)
                    finally:
                        for fd in send:
                            os.close(fd)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, line, fds):
        if self.script is not None:
            scripted = self.script(line)
            return None if scripted is None else (scripted, [])
        words = line.split(" ")
        if words[1] == "PUT":
            self.put_fds_seen += len(fds)
            size = os.fstat(fds[0]).st_size
            data = os.pread(fds[0], size, 0)
            return f"OK {key_of(data)} {len(data)}\n".encode(), []
        files, lines = [], []
        for key in words[2:]:
            if key not in self.objects:
                lines.append(f"{key} missing")
                continue
            path, offset, length, size, codec = self.objects[key]
            if path not in files:
                if len(files) == self.files_per_answer:
                    lines.append(f"{key} again")
                    continue
                files.append(path)
            lines.append(f"{key} {files.index(path)} {offset} {length} {size} {codec}")
        send = [os.open(path, os.O_RDONLY) for path in files]
        return ("\n".join([f"OK {len(send)}"] + lines) + "\n").encode(), send


def fake_store(folder):
    """Objects in a fake pack (some zlib-compressed) and loose files:
    {key: data}, {key: location} for FakeDaemon."""
    datas = [text_bytes(5000, "fake packed"), random_bytes(3000, "fake packed random"),
             text_bytes(3 * MiB + 17, "fake compressed large"), text_bytes(7000, "fake small z"),
             b"", random_bytes(2 * MiB + 5, "fake packed large")]
    codecs = ["none", "none", "zlib", "zlib", "none", "none"]
    pack = folder / "pack-0"
    objects, locations, offset = {}, {}, 11
    with open(pack, "wb") as file:
        file.write(b"x" * offset)  # objects need not start at 0
        for data, codec in zip(datas, codecs):
            stored = zlib.compress(data, 1) if codec == "zlib" else data
            file.write(stored)
            objects[key_of(data)] = data
            locations[key_of(data)] = (str(pack), offset, len(stored), len(data), codec)
            offset += len(stored)
        file.write(b"trailing bytes of the pack")
    for i in range(5):
        data = random_bytes(1000 + i, f"fake loose {i}")
        path = folder / f"loose-{i}"
        path.write_bytes(data)
        objects[key_of(data)] = data
        locations[key_of(data)] = (str(path), 0, len(data), len(data), "none")
    return objects, locations


@pytest.fixture
def fake(tmp_path):
    objects, locations = fake_store(tmp_path)
    server = FakeDaemon(tmp_path / "fake.sock", locations)
    server.datas = objects
    yield server
    server.close()


def fake_client(server, **kwargs):
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("retries", 0)
    return packstore.Client(server.path, **kwargs)


def test_fake_every_read_and_answer_kind(fake):
    missing = key_of(b"not in the fake")
    with fake_client(fake) as client:
        for key, data in fake.datas.items():
            assert client.get(key) == data
            assert client.get(key, verify=True) == data
            for offset, length in ((0, 1), (3, 100), (len(data) // 2, None), (len(data), 5),
                                   (len(data) + 9, None), (1, 0)):
                expected = data[offset:] if length is None else data[offset:offset + length]
                assert client.get(key, offset=offset, length=length) == expected
        with pytest.raises(packstore.NotFound, match=missing):
            client.get(missing)
        answers = list(client.get_many(list(fake.datas) + [missing]))
        assert dict(answers) == dict(fake.datas, **{missing: None})
        assert len(answers) == len(fake.datas) + 1
        assert client.fast_path
    assert all(line.startswith("PSFD1 LOCATE ") for line in fake.requests)
    assert fake.connections == 1, "one connection for every call"


def test_fake_get_many_storage_order(fake):
    with fake_client(fake) as client:
        keys = list(fake.datas)
        random.Random(5).shuffle(keys)
        got = [key for key, _ in client.get_many(keys)]
    # Small objects before large ones, each group by descriptor and offset.
    locations = fake.objects
    sizes = [locations[key][3] for key in got]
    assert sizes == sorted(sizes, key=lambda size: size > MiB)
    small = [key for key in got if locations[key][3] <= MiB]
    in_pack = [key for key in small if "pack" in locations[key][0]]
    assert [locations[key][1] for key in in_pack] == sorted(locations[key][1] for key in in_pack)


def test_fake_again_is_asked_again_with_few_descriptors_each_time(fake):
    fake.files_per_answer = 2
    before = open_fds()
    with fake_client(fake) as client:
        assert dict(client.get_many(list(fake.datas))) == fake.datas
    locates = [line for line in fake.requests if "LOCATE" in line]
    assert len(locates) == 3, "6 files, 2 per answer"
    assert len(locates[1].split()) < len(locates[0].split())
    assert fds_back_to(before), f"{open_fds()} descriptors open, {before} before"


def test_fake_after_again_asks_about_what_an_answer_can_serve(fake, tmp_path):
    datas = {}
    for i in range(2000):
        data = f"fake loose object {i}".encode()
        path = tmp_path / f"many-{i}"
        path.write_bytes(data)
        datas[key_of(data)] = data
        fake.objects[key_of(data)] = (str(path), 0, len(data), len(data), "none")
    with fake_client(fake) as client:
        assert dict(client.get_many(list(datas))) == datas
    asked = [len(line.split()) - 2 for line in fake.requests]
    assert asked[0] == 2000 and max(asked[1:]) <= 500, asked
    assert len(asked) == 8, "250 descriptors an answer"


def test_fake_locate_asks_at_most_10000_keys_at_once(fake):
    keys = [key_of(f"absent {i}".encode()) for i in range(10_001)] + list(fake.datas)
    with fake_client(fake) as client:
        answers = dict(client.get_many(keys))
    assert len(answers) == len(keys)
    assert [len(line.split()) - 2 for line in fake.requests] == [10_000, len(fake.datas) + 1]


def test_fake_errors_map_to_the_package_exceptions(fake):
    key = next(iter(fake.datas))
    cases = {
        "INVALID_ARGUMENT": packstore.InvalidArgument,
        "PERMISSION_DENIED": packstore.PermissionDenied,
        "RESOURCE_EXHAUSTED": packstore.ResourceExhausted,
        "INTERNAL": packstore.PackstoreError,
        "DATA_LOSS": packstore.DataLoss,
    }
    with fake_client(fake) as client:
        for code, cls in cases.items():
            fake.script = lambda line, code=code: f"ERR {code} what the daemon says\n".encode()
            with pytest.raises(cls) as caught:
                client.get(key)
            error = caught.value
            assert type(error) is cls and error.code == getattr(grpc.StatusCode, code)
            assert error.details == "what the daemon says" and error.method == "Get"
            assert error.socket == fake.path
            with pytest.raises(cls):
                list(client.get_many([key]))
            assert client.fast_path, "an error that is not about availability keeps it"
        fake.script = None
        assert client.get(key) == fake.datas[key]


def test_fake_resource_exhausted_as_a_first_answer_goes_to_grpc(fake):
    # A daemon with too many fast-path connections refuses a new one with
    # RESOURCE_EXHAUSTED before reading its request: gRPC answers that call.
    key = next(iter(fake.datas))
    fake.script = lambda line: b"ERR RESOURCE_EXHAUSTED too many connections\n"
    with fake_client(fake) as client:
        with pytest.raises(packstore.Unavailable):  # gRPC, which the fake does not speak
            client.get(key)
        assert client.fast_path, "not remembered: the next call tries again"
        fake.script = None
        assert client.get(key) == fake.datas[key]
        fake.script = lambda line: b"ERR RESOURCE_EXHAUSTED out of descriptors\n"
        with pytest.raises(packstore.ResourceExhausted, match="out of descriptors"):
            client.get(key)


@pytest.mark.parametrize("answer", [
    b"\x00\x00\x1e\x04\x00\x00\x00\x00\x00",  # an HTTP/2 server's SETTINGS (a daemon without it)
    b"HELLO\n",
    b"OK 1\n",  # a descriptor announced, none attached, and no lines
    b"OK 0\nsomething else\n",
    b"ERR NOT_A_CODE the code is unknown\n",
    None,  # closes without answering
])
def test_fake_broken_answers_fall_back_to_grpc(fake, answer):
    key = next(iter(fake.datas))
    fake.script = lambda line: answer
    before = open_fds()
    with fake_client(fake) as client:
        # The fake speaks no gRPC: the fallback fails as a client without a
        # daemon does.
        with pytest.raises(packstore.Unavailable):
            client.get(key)
        assert not client.fast_path
        requests = len(fake.requests)
        with pytest.raises(packstore.Unavailable):
            list(client.get_many([key]))
        assert len(fake.requests) == requests, "remembered: not tried again"
        if answer is not None:
            assert client._fast._off_until == math.inf, "for good after a broken answer"
    assert fds_back_to(before), f"{open_fds()} descriptors open, {before} before"


def test_fake_unavailable_falls_back_and_is_tried_again_later(fake, monkeypatch):
    key = next(iter(fake.datas))
    fake.script = lambda line: b"ERR UNAVAILABLE the fast path is turned off (--fast-path)\n"
    with fake_client(fake) as client:
        with pytest.raises(packstore.Unavailable):
            client.get(key)
        assert not client.fast_path
        fake.script = None
        monkeypatch.setattr(fastpath.time, "monotonic",
                            lambda real=time.monotonic: real() + fastpath.RETRY_AFTER + 1)
        assert client.fast_path
        assert client.get(key) == fake.datas[key]


def test_fake_reconnects_once_after_the_daemon_closed_a_kept_connection(fake):
    key = next(iter(fake.datas))
    with fake_client(fake) as client:
        assert client.get(key) == fake.datas[key]
        fake.drop_connections()
        time.sleep(0.1)
        assert client.get(key) == fake.datas[key]
        assert client.fast_path and fake.connections == 2


def test_fake_descriptor_count_mismatch_and_stray_descriptors(fake, tmp_path):
    key = next(iter(fake.datas))
    path, offset, length, size, codec = fake.objects[key]
    stray = tmp_path / "stray"
    stray.write_bytes(b"stray")
    real_answer = fake._answer

    def two_descriptors_announced_one(line, fds):
        data, send = real_answer(line, fds)
        return data.replace(b"OK 1\n", b"OK 2\n", 1), send

    def one_announced_two_sent(line, fds):
        data, send = real_answer(line, fds)
        return data, send + [os.open(stray, os.O_RDONLY)]

    for answer in (two_descriptors_announced_one, one_announced_two_sent):
        fake._answer = answer
        before = open_fds()
        with fake_client(fake) as client:
            with pytest.raises(packstore.Unavailable):
                client.get(key)
            assert not client.fast_path
        gc.collect()
        assert fds_back_to(before), answer.__name__


def test_fake_corrupt_stored_bytes_are_data_loss(fake, tmp_path):
    data = text_bytes(200 * KiB, "to corrupt")
    stored = bytearray(zlib.compress(data))
    stored[len(stored) // 2] ^= 0xFF
    bad_zlib = tmp_path / "bad-zlib"
    bad_zlib.write_bytes(bytes(stored))
    short = tmp_path / "short"
    short.write_bytes(data[:1000])
    wrong = random_bytes(5000, "not what the key says")
    wrong_path = tmp_path / "wrong"
    wrong_path.write_bytes(wrong)
    long_zlib = tmp_path / "long-zlib"
    long_zlib.write_bytes(zlib.compress(data + b"more than its size"))
    keys = [key_of(data + bytes([i])) for i in range(4)]
    fake.objects.update({
        keys[0]: (str(bad_zlib), 0, len(stored), len(data), "zlib"),
        keys[1]: (str(short), 0, len(data), len(data), "none"),
        keys[2]: (str(wrong_path), 0, len(wrong), len(wrong), "none"),
        keys[3]: (str(long_zlib), 0, long_zlib.stat().st_size, len(data), "zlib"),
    })
    with fake_client(fake) as client:
        with pytest.raises(packstore.DataLoss, match=keys[0]):
            client.get(keys[0])
        with pytest.raises(packstore.DataLoss, match=f"{keys[1]} ended"):
            client.get(keys[1])
        assert client.get(keys[2]) == wrong, "without verify the bytes are what is stored"
        with pytest.raises(packstore.DataLoss, match="do not hash to its key") as caught:
            client.get(keys[2], verify=True)
        assert caught.value.method == "Get"
        with pytest.raises(packstore.DataLoss, match="more than"):
            client.get(keys[3])
        with pytest.raises(packstore.DataLoss):
            list(client.get_many([keys[0]]))
        assert client.fast_path


def test_fake_put_file_sends_the_descriptor(fake, tmp_path):
    data = random_bytes(300 * KiB, "fake put")
    path = tmp_path / "put.bin"
    path.write_bytes(data)
    with fake_client(fake) as client:
        assert client.put_file(path, mode="packed", compression="auto") == key_of(data)
        with open(path, "rb") as file:
            assert client.put_file(file, mode=packstore.PutMode.LOOSE) == key_of(data)
            assert file.tell() == len(data) and file.read() == b""
        with open(path, "w+b") as file:  # written through the file object, not flushed yet
            file.write(b"written just now")
            file.seek(0)
            assert client.put_file(file) == key_of(b"written just now")
    assert fake.requests == ["PSFD1 PUT packed auto", "PSFD1 PUT loose default",
                             "PSFD1 PUT default default"]
    assert fake.put_fds_seen == 3


def test_fake_reads_do_not_wait_behind_an_upload(fake, tmp_path):
    path = tmp_path / "slow upload"
    path.write_bytes(b"stored slowly")
    release = threading.Event()
    real_answer = fake._answer

    def slow_puts(line, fds):
        if " PUT " in line:
            release.wait(20)
        return real_answer(line, fds)

    fake._answer = slow_puts
    key = next(iter(fake.datas))
    with fake_client(fake) as client:
        results = []
        upload = threading.Thread(target=lambda: results.append(client.put_file(path)))
        upload.start()
        try:
            support.wait_for(lambda: any(" PUT " in line for line in fake.requests), 10,
                             "the upload to reach the daemon")
            start = time.monotonic()
            assert client.get(key) == fake.datas[key]
            assert dict(client.get_many([key])) == {key: fake.datas[key]}
            assert time.monotonic() - start < 5 and upload.is_alive()
        finally:
            release.set()
            upload.join(20)
        assert results == [key_of(b"stored slowly")]


def test_fake_close_cuts_a_running_request_short(fake, tmp_path):
    path = tmp_path / "never answered"
    path.write_bytes(b"never answered")
    release = threading.Event()
    real_answer = fake._answer
    fake._answer = lambda line, fds: (release.wait(20), real_answer(line, fds))[1]
    client = fake_client(fake, timeout=None)
    outcome = []

    def upload():
        try:
            outcome.append(client.put_file(path))
        except Exception as error:  # noqa: BLE001 - what the call raised is checked
            outcome.append(error)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        support.wait_for(lambda: fake.requests, 10, "the upload to reach the daemon")
        start = time.monotonic()
        client.close()
        assert time.monotonic() - start < 2
        thread.join(10)
        assert not thread.is_alive() and isinstance(outcome[0], Exception), outcome
    finally:
        release.set()
        thread.join(10)


def test_fake_keys_that_cannot_be_keys_never_reach_the_line(fake):
    with fake_client(fake) as client:
        for key in ("a b", "x\nPSFD1 PUT auto auto", "", "G" * 64):
            with pytest.raises(packstore.Unavailable):  # gRPC, which the fake does not speak
                client.get(key)
        assert fake.requests == []
        assert client.fast_path


def zstd_compress(data):
    """A zstd frame of ``data`` from whichever zstd module is installed."""
    try:
        from compression import zstd
        return zstd.compress(data)
    except ImportError:
        pass
    try:
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    except ImportError:
        import pyzstd
        return pyzstd.compress(data)


@pytest.mark.skipif(not fastpath.can_decode("zstd"), reason="no zstd module to decode with")
def test_fake_zstd_objects_are_decoded_here(fake, tmp_path):
    data = text_bytes(5 * MiB + 3, "fake zstd")
    frame = zstd_compress(data)
    paths = {name: tmp_path / name for name in ("good", "short", "corrupt", "long")}
    paths["good"].write_bytes(frame)
    paths["short"].write_bytes(frame[:len(frame) // 2])
    corrupt = bytearray(frame)
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 16] = b"\xff" * 16
    paths["corrupt"].write_bytes(bytes(corrupt))
    paths["long"].write_bytes(zstd_compress(data + b"and more"))
    keys = {name: key_of(data + name.encode()) for name in paths}
    for name, path in paths.items():
        fake.objects[keys[name]] = (str(path), 0, path.stat().st_size, len(data), "zstd")
    with fake_client(fake) as client:
        assert client.get(keys["good"]) == data
        assert client.get(keys["good"], offset=3 * MiB, length=10) == data[3 * MiB:3 * MiB + 10]
        assert dict(client.get_many([keys["good"]])) == {keys["good"]: data}
        for name in ("short", "corrupt", "long"):
            with pytest.raises(packstore.DataLoss, match=keys[name]):
                client.get(keys[name])


def test_fast_path_is_off_for_targets_that_are_not_unix_sockets(tmp_path):
    assert fastpath.unix_socket_path("/run/x.sock") == "/run/x.sock"
    assert fastpath.unix_socket_path("unix:/run/x.sock") == "/run/x.sock"
    assert fastpath.unix_socket_path("unix:///run/x.sock") == "/run/x.sock"
    assert fastpath.unix_socket_path("unix:rel/x.sock") == "rel/x.sock"
    for target in ("dns:///localhost:50051", "ipv4:127.0.0.1:1", "unix-abstract:packstore"):
        assert fastpath.unix_socket_path(target) is None
        with packstore.Client(target, retries=0, timeout=5) as client:
            assert not client.fast_path
            with pytest.raises(packstore.Unavailable, match="is unavailable"):
                client.get(EMPTY_KEY)
    with packstore.Client(tmp_path / "x.sock", fast_path=False) as client:
        assert not client.fast_path


# ---- the real daemon -------------------------------------------------------------------------


def grpc_calls(client):
    """How many calls of each ObjectStore method the daemon has counted."""
    return {entry["method"]: entry["calls"] for entry in client.status()["rpcs"]}


def calls_since(client, before, *methods):
    now = grpc_calls(client)
    return {method: now[method] - before[method] for method in methods}


@pytest.fixture
def clients(daemon):
    """(a Client with the fast path, one without) on the `daemon` fixture."""
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as fast, \
            packstore.Client(daemon.socket, timeout=CALL_TIMEOUT, fast_path=False) as plain:
        yield fast, plain


def store_objects(client):
    """{name: (key, data, compressed)} of objects stored every way."""
    specs = {
        "packed": (text_bytes(5000, "fp packed"), "packed", "no"),
        "packed random": (random_bytes(70 * KiB + 3, "fp packed random"), "packed", "no"),
        "compressed": (text_bytes(300 * KiB + 1, "fp compressed"), "packed", "yes"),
        "compressed 3 MiB": (text_bytes(3 * MiB + 5, "fp compressed large"), "packed", "yes"),
        "loose": (random_bytes(300 * KiB, "fp loose"), "loose", "no"),
        "loose small": (b"a small loose object", "loose", "no"),
        "empty": (b"", None, None),
        "large loose": (random_bytes(20 * MiB, "fp large loose"), "loose", "no"),
        "large packed": (random_bytes(20 * MiB + 1, "fp large packed"), "packed", "no"),
        "large compressed": (text_bytes(20 * MiB + 2, "fp large compressed"), "packed", "yes"),
    }
    objects = {}
    for name, (data, mode, compression) in specs.items():
        key = client.put(data, mode=mode, compression=compression)
        assert key == key_of(data)
        objects[name] = (key, data, compression == "yes")
    infos = dict(zip(objects, client.stat([key for key, _, _ in objects.values()])))
    for name, (_, _, compressed) in objects.items():
        assert infos[name].compressed == compressed, (name, infos[name])
    return objects


def ranges_of(size):
    return [(0, 10), (1, 100), (MiB - 1, 2), (max(0, size - 5), None), (max(0, size - 5), 100),
            (size, None), (size + 10, 5), (12345, 0), (0, size), (7, 2 * MiB),
            (size // 2, None), (size // 3, 3 * MiB + 1)]


def read_everything(client, objects, missing):
    """What each read path answers, for comparison between clients."""
    got = {}
    for name, (key, data, _) in objects.items():
        got[name, "get"] = client.get(key)
        got[name, "verify"] = client.get(key, verify=True)
        got[name, "ranges"] = [client.get(key, offset=offset, length=length)
                               for offset, length in ranges_of(len(data))]
    with pytest.raises(packstore.NotFound, match=missing):
        client.get(missing)
    with pytest.raises(packstore.NotFound, match=missing):
        client.get(missing, offset=3, length=4)
    keys = [key for key, _, _ in objects.values()]
    got["get_many"] = list(client.get_many(keys + [missing] + keys[:3]))
    return got


def expected_reads(objects):
    want = {}
    for name, (key, data, _) in objects.items():
        want[name, "get"] = want[name, "verify"] = data
        want[name, "ranges"] = [data[o:] if n is None else data[o:o + n]
                                for o, n in ranges_of(len(data))]
    return want


def check_open(client, key, data):
    """Random reads and seeks through open(), compared with BytesIO."""
    model = io.BytesIO(data)
    rng = random.Random(key)
    with client.open(key) as file:
        assert (file.key, file.size) == (key, len(data))
        for _ in range(60):
            action = rng.random()
            if action < 0.3:
                where = rng.choice([rng.randrange(len(data) + 100), 0, len(data)])
                assert file.seek(where) == model.seek(where)
            elif action < 0.4:
                delta = -rng.randrange(0, min(5000, len(data)) + 1)
                assert file.seek(delta, io.SEEK_END) == model.seek(delta, io.SEEK_END)
            elif action < 0.8:
                size = rng.choice([1, 7, 100, 4096, 65536, 300 * KiB, 2 * MiB])
                assert file.read(size) == model.read(size)
            else:
                buffer = bytearray(rng.choice([10, 5000, 500 * KiB]))
                expected = model.read(len(buffer))
                assert file.readinto(buffer) == len(expected)
                assert buffer[:len(expected)] == expected
            assert file.tell() == model.tell()
        file.seek(0)
        assert hashlib.sha256(file.read()).hexdigest() == key


def test_every_read_is_the_same_with_and_without_the_fast_path(clients):
    fast, plain = clients
    objects = store_objects(plain)
    missing = key_of(b"never stored")
    before = grpc_calls(fast)
    through_fast = read_everything(fast, objects, missing)
    for name, (key, data, compressed) in objects.items():
        if not compressed:
            check_open(fast, key, data)
    assert calls_since(fast, before, "Get", "GetMany") == {"Get": 0, "GetMany": 0}, (
        "every read went through the fast path")
    assert calls_since(fast, before, "FastPath.LOCATE")["FastPath.LOCATE"] > 0
    assert fast.fast_path
    # Compressed objects are opened over gRPC ranges, as without it.
    for name, (key, data, compressed) in objects.items():
        if compressed:
            check_open(fast, key, data)
    assert calls_since(fast, before, "Get")["Get"] > 0

    before = grpc_calls(plain)
    through_grpc = read_everything(plain, objects, missing)
    assert calls_since(plain, before, "GetMany")["GetMany"] == 1
    want = expected_reads(objects)
    for item, value in want.items():
        assert through_fast[item] == value, item
        assert through_grpc[item] == value, item
    # get_many: each distinct key once, missing as None, the same pairs.
    assert sorted(through_fast["get_many"], key=lambda p: p[0]) == sorted(
        through_grpc["get_many"], key=lambda p: p[0])
    assert dict(through_fast["get_many"]) == dict(
        {key: data for key, data, _ in objects.values()}, **{missing: None})
    assert len(through_fast["get_many"]) == len(objects) + 1


def test_get_many_across_many_files_and_batches(clients):
    fast, plain = clients
    loose = [random_bytes(100 + i, f"fp many loose {i}") for i in range(600)]  # > 250 files
    packed = [f"fp packed {i}".encode() * (i % 7 + 1) for i in range(12_000)]
    plain.put_many(loose, mode="loose")
    plain.put_many(packed, mode="packed")
    large = [plain.put(random_bytes(2 * MiB + 1, "fp gm large"), mode="packed"),
             plain.put(random_bytes(3 * MiB, "fp gm large loose"), mode="loose")]
    missing = [key_of(f"fp absent {i}".encode()) for i in range(2000)]
    keys = [key_of(d) for d in loose] + [key_of(d) for d in packed] + large + missing
    random.Random(7).shuffle(keys)
    before = grpc_calls(fast)
    answers = list(fast.get_many(keys))
    assert calls_since(fast, before, "GetMany") == {"GetMany": 0}
    expected = dict(plain.get_many(keys))
    assert len(answers) == len(keys) == len(expected)
    assert dict(answers) == expected
    assert all(expected[key] is None for key in missing)
    # Storage order within each answer: the small packed objects of one
    # answer by offset (the order they were written), the large after them.
    got = [key for key, _ in answers]
    position = {key: i for i, key in enumerate(got)}
    first_batch = set(keys[:10_000])
    in_pack = [key_of(d) for d in packed if key_of(d) in first_batch]
    assert sorted(in_pack, key=position.get) == in_pack
    # Abandoned half-way: its descriptors are closed, the client goes on.
    fds = open_fds()
    iterator = fast.get_many(keys)
    assert next(iterator)
    iterator.close()
    assert fds_back_to(fds), f"{open_fds()} descriptors open, {fds} before"
    assert list(fast.get_many([])) == []


def test_put_file_hands_the_descriptor_to_the_daemon(clients, tmp_path):
    fast, plain = clients
    data = random_bytes(5 * MiB + 123, "fp put_file")
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    before = grpc_calls(fast)
    for mode, packed in (("auto", False), ("loose", False), ("packed", True)):
        assert fast.put_file(path, mode=mode) == key_of(data)
        assert fast.stat(key_of(data)).packed or not packed
    with open(path, "rb") as file:
        assert fast.put_file(file) == key_of(data)
        assert file.read() == b"", "put_file leaves the file at its end"
    small = tmp_path / "small"
    small.write_bytes(text_bytes(50 * KiB, "fp small file"))
    assert fast.put_file(small, mode="packed", compression="yes") == key_of(small.read_bytes())
    info = fast.stat(key_of(small.read_bytes()))
    assert info.packed and info.compressed
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert fast.put_file(empty) == EMPTY_KEY
    large = tmp_path / "large"
    with open(large, "wb") as file:
        for i in range(20):
            file.write(random_bytes(MiB, f"fp large file {i}"))
    large_key = fast.put_file(large, mode="loose")
    with tempfile.NamedTemporaryFile(dir=tmp_path) as named, tempfile.TemporaryFile() as unnamed:
        for temporary in (named, unnamed):
            temporary.write(b"a temporary file")
            temporary.seek(0)
            assert fast.put_file(temporary) == key_of(b"a temporary file")
    assert calls_since(fast, before, "PutStream", "Put", "PutMany") == {
        "PutStream": 0, "Put": 0, "PutMany": 0}, "no bytes went through gRPC"
    # The daemon counts the fast path's PUTs (9 above) and what they stored.
    assert calls_since(fast, before, "FastPath.PUT") == {"FastPath.PUT": 9}
    put_stats = next(e for e in fast.status()["rpcs"] if e["method"] == "FastPath.PUT")
    assert put_stats["errors"] == 0 and put_stats["active"] == 0
    assert put_stats["bytes_in"] >= 4 * len(data) + 20 * MiB
    assert fast.get(large_key, verify=True) == large.read_bytes()
    assert plain.get(key_of(data)) == data and plain.get(EMPTY_KEY) == b""
    # What the daemon cannot take whole from offset 0 goes through gRPC.
    before = grpc_calls(fast)
    with open(path, "rb") as file:
        file.seek(1000)
        assert fast.put_file(file) == key_of(data[1000:])
        assert file.read() == b""
    assert fast.put_file(io.BytesIO(b"in memory")) == key_of(b"in memory")
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        with os.fdopen(write_end, "wb") as writer:
            writer.write(b"through a pipe")
        assert fast.put_file(pipe) == key_of(b"through a pipe")
    # A file object whose fileno() is not what it reads: the content is what it reads.
    packed = tmp_path / "content.gz"
    with gzip.open(packed, "wb") as writer:
        writer.write(text_bytes(100 * KiB, "fp gzip"))
    with gzip.open(packed, "rb") as reader:
        assert reader.fileno() >= 0 and reader.tell() == 0
        assert fast.put_file(reader) == key_of(text_bytes(100 * KiB, "fp gzip"))
    assert calls_since(fast, before, "PutStream") == {"PutStream": 4}
    assert fast.fast_path


def test_a_daemon_without_the_fast_path_gives_the_same_results(daemons, tmp_path):
    daemon = daemons(flags={"--fast-path": "false"})
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as client:
        objects = store_objects(client)
        missing = key_of(b"never stored")
        before = grpc_calls(client)
        got = read_everything(client, objects, missing)
        assert not client.fast_path, "found unavailable"
        for name, (key, data, _) in list(objects.items())[:6]:
            check_open(client, key, data)
        path = tmp_path / "file"
        path.write_bytes(random_bytes(2 * MiB, "fp fallback file"))
        assert client.put_file(path) == key_of(path.read_bytes())
        counts = calls_since(client, before, "Get", "GetMany", "PutStream")
        assert counts["GetMany"] == 1 and counts["Get"] > 0 and counts["PutStream"] == 1
    for item, value in expected_reads(objects).items():
        assert got[item] == value, item
    assert dict(got["get_many"]) == dict(
        {key: data for key, data, _ in objects.values()}, **{missing: None})


def test_fast_path_false_always_uses_grpc(daemon):
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT, fast_path=False) as client:
        assert not client.fast_path
        key = client.put(b"through gRPC")
        before = grpc_calls(client)
        assert client.get(key) == b"through gRPC"
        assert dict(client.get_many([key])) == {key: b"through gRPC"}
        assert calls_since(client, before, "Get", "GetMany") == {"Get": 1, "GetMany": 1}
    # unix:///path names the same socket, fast path included.
    with packstore.Client("unix://" + str(daemon.socket), timeout=CALL_TIMEOUT) as client:
        before = grpc_calls(client)
        assert client.get(key) == b"through gRPC"
        assert calls_since(client, before, "Get") == {"Get": 0}


def test_errors_through_the_fast_path(daemons, tmp_path):
    daemon = daemons(flags={"--max-object-size": "64KiB"})
    over = tmp_path / "over"
    over.write_bytes(random_bytes(3 * MiB, "fp over the limit"))
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as fast, \
            packstore.Client(daemon.socket, timeout=CALL_TIMEOUT, fast_path=False) as plain:
        for client in (fast, plain):
            with pytest.raises(packstore.ResourceExhausted, match="--max-object-size"):
                client.put_file(over)
        fits = tmp_path / "fits"
        fits.write_bytes(b"fits")
        key = fast.put_file(fits)  # the connection for puts is open from here on
        assert fast.get(key) == b"fits"  # and the one for reads
        before = grpc_calls(fast)
        with pytest.raises(packstore.ResourceExhausted, match="--max-object-size") as caught:
            fast.put_file(over)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert calls_since(fast, before, "PutStream") == {"PutStream": 0}
        assert not fast.has(key_of(over.read_bytes()))
        # A key of the wrong hash type (SHA-1 shaped, on a SHA-256 store).
        sha1_shaped = hashlib.sha1(b"x").hexdigest()
        for client in (fast, plain):
            for call in (lambda: client.get(sha1_shaped),
                         lambda: list(client.get_many([key, sha1_shaped]))):
                with pytest.raises(packstore.InvalidArgument) as caught:
                    call()
                assert sha1_shaped in caught.value.details
            if client is fast:
                assert calls_since(fast, before, "Get", "GetMany") == {"Get": 0, "GetMany": 0}
        assert fast.get(key) == b"fits" and fast.fast_path


def test_corrupt_objects_are_data_loss_through_the_fast_path(clients, daemon):
    fast, plain = clients
    loose = random_bytes(300 * KiB, "fp to corrupt loose")
    key = plain.put(loose, mode="loose")
    path = daemon.store / "loose" / key[:2] / key[2:]
    with open(path, "r+b") as file:
        file.seek(200 * KiB)
        file.write(b"\0corrupted\0")
    for client in (fast, plain):
        with pytest.raises(packstore.DataLoss) as caught:
            client.get(key, verify=True)
        assert key in caught.value.details and caught.value.method == "Get"
    assert fast.get(key) == plain.get(key) != loose, "without verify: the bytes as stored"
    # A compressed object whose stored bytes no longer decode.
    text = text_bytes(2 * MiB, "fp to corrupt compressed")
    bad = plain.put(text, mode="packed", compression="yes")
    located = fast._fast.locate([bad], fast._deadline(None), "Get")
    with located:
        where = located.found[bad]
        assert where.codec == "zlib" and where.size == len(text)
        pack = os.readlink(f"/proc/self/fd/{where.fd}")
    with open(pack, "r+b") as file:
        file.seek(where.offset + where.length // 2)
        file.write(b"\xff" * 64)
    for client in (fast, plain):
        with pytest.raises(packstore.DataLoss):
            client.get(bad)
        with pytest.raises(packstore.DataLoss):
            dict(client.get_many([bad]))
    assert fast.fast_path


def test_an_open_file_keeps_reading_through_delete_repack_and_restart(daemon):
    datas = [random_bytes(400 * KiB + i, f"fp held {i}") for i in range(6)]
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as client:
        keys = [client.put(d, mode="loose" if i % 2 else "packed") for i, d in enumerate(datas)]
        files = [client.open(key) for key in keys]
        assert client.delete(keys) == len(keys)
        client.repack()
        client.clean()
        assert not any(client.has(keys))
        daemon.stop()
        for file, data in zip(files, datas):
            file.seek(1000)
            assert file.read(5000) == data[1000:6000]
            file.seek(0)
            assert file.read() == data
            file.close()
        daemon.start()
        # The kept connection is gone with the old daemon: a new one.
        key = client.put(b"after the restart")
        before = grpc_calls(client)
        assert client.get(key) == b"after the restart"
        assert calls_since(client, before, "Get") == {"Get": 0} and client.fast_path


def test_reads_stay_right_while_maintenance_runs(daemon):
    loose = [random_bytes(30 * KiB + i, f"fp m loose {i}") for i in range(120)]
    packed = [text_bytes(20 * KiB + i, f"fp m packed {i}") for i in range(120)]
    doomed = [random_bytes(10 * KiB + i, f"fp m doomed {i}") for i in range(40)]
    big = random_bytes(6 * MiB, "fp m big")
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as reader, \
            packstore.Client(daemon.socket, timeout=120) as admin:
        reader.put_many(loose, mode="loose")
        reader.put_many(packed + doomed, mode="packed")
        reader.put(big, mode="loose")
        expected = {key_of(d): d for d in loose + packed + [big]}
        held = {key_of(d): reader.open(key_of(d)) for d in doomed[:5] + loose[:5]}
        errors, steps = [], []

        def maintain():
            try:
                for step in ("pack", "delete", "repack yes", "clean", "repack no", "pack",
                             "clean vacuum", "repack yes"):
                    if step == "pack":
                        admin.pack()
                    elif step == "delete":
                        admin.delete([key_of(d) for d in doomed])
                    elif step.startswith("repack"):
                        admin.repack(compression=step.split()[1])
                    else:
                        admin.clean(vacuum=step.endswith("vacuum"))
                    steps.append(step)
                    reader.put(random_bytes(5000, f"fp m new {step} {len(steps)}"),
                               mode="loose")
            except Exception as error:  # noqa: BLE001 - reported by the test
                errors.append(error)

        thread = threading.Thread(target=maintain)
        thread.start()
        rounds = overlapped = 0
        keys = list(expected)
        try:
            while thread.is_alive() or rounds < 2:
                rounds += 1
                overlapped += thread.is_alive()
                rng = random.Random(rounds)
                for key in rng.sample(keys, 40):
                    assert reader.get(key) == expected[key]
                assert dict(reader.get_many(keys)) == expected
                for key in rng.sample(keys, 5):
                    with reader.open(key) as file:
                        file.seek(len(expected[key]) // 3)
                        assert file.read(3000) == expected[key][len(expected[key]) // 3:][:3000]
                assert reader.get(key_of(big), offset=MiB, length=MiB) == big[MiB:2 * MiB]
        finally:
            thread.join()
        assert not errors, errors
        assert len(steps) == 8 and overlapped >= 2, (steps, rounds, overlapped)
        for key, file in held.items():
            file.seek(0)
            assert hashlib.sha256(file.read()).hexdigest() == key
            file.close()
        assert reader.fast_path
        assert admin.validate().ok


def test_no_descriptor_leaks(clients, tmp_path):
    fast, plain = clients
    objects = store_objects(plain)
    loose = [random_bytes(200 + i, f"fp leak loose {i}") for i in range(300)]
    plain.put_many(loose, mode="loose")
    keys = [key for key, _, _ in objects.values()] + [key_of(d) for d in loose]
    path = tmp_path / "put"
    path.write_bytes(random_bytes(100 * KiB, "fp leak put"))
    missing = key_of(b"fp leak missing")
    fast.get(keys[0])  # the connections are open from here on
    fast.put_file(path)
    before = open_fds()
    for round in range(20):
        for key, data, compressed in objects.values():
            if len(data) < MiB or round % 10 == 0:
                assert fast.get(key) == data
                assert fast.get(key, offset=3, length=1000) == data[3:1003]
            with fast.open(key) as file:
                file.seek(len(data) // 2)
                file.read(100)
        dropped = fast.open(keys[1])  # never closed: closed when collected
        dropped.read(10)
        del dropped
        with pytest.raises(packstore.NotFound):
            fast.get(missing)
        with pytest.raises(packstore.NotFound):
            fast.open(missing)
        assert len(dict(fast.get_many(keys[len(objects):]))) == len(loose)
        abandoned = fast.get_many(keys)
        next(abandoned)
        del abandoned
        assert fast.put_file(path) == key_of(path.read_bytes())
    gc.collect()
    assert fds_back_to(before), f"{open_fds()} descriptors open, {before} before"
    assert fast.fast_path


def test_a_process_short_of_descriptors_falls_back_to_grpc(clients):
    fast, plain = clients
    datas = [random_bytes(100 + i, f"fp short of fds {i}") for i in range(300)]
    keys = plain.put_many(datas, mode="loose")
    assert fast.get(keys[0]) == datas[0] and fast.has(keys[0])  # connections open
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = grpc_calls(plain)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 30, hard))
    try:
        # The kernel drops the descriptors past the limit (MSG_CTRUNC).
        assert dict(fast.get_many(keys)) == dict(zip(keys, datas))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert calls_since(plain, before, "GetMany")["GetMany"] >= 1
    assert fast.fast_path, "not remembered: the next call tries again"
    before = grpc_calls(plain)
    assert dict(fast.get_many(keys)) == dict(zip(keys, datas))
    assert calls_since(plain, before, "GetMany") == {"GetMany": 0}


def test_threads_share_one_client(clients):
    fast, plain = clients
    datas = [random_bytes(5000 + 97 * i, f"fp thread {i}") for i in range(200)]
    plain.put_many(datas[:100], mode="packed")
    plain.put_many(datas[100:], mode="loose")
    before = grpc_calls(fast)
    failures = []

    def work(index):
        try:
            rng = random.Random(index)
            for _ in range(10):
                picked = rng.sample(datas, 30)
                for data in picked[:10]:
                    if fast.get(key_of(data)) != data:
                        failures.append(("get", index))
                got = dict(fast.get_many([key_of(d) for d in picked]))
                if got != {key_of(d): d for d in picked}:
                    failures.append(("get_many", index))
        except Exception as error:  # noqa: BLE001 - reported by the test
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert calls_since(fast, before, "Get", "GetMany") == {"Get": 0, "GetMany": 0}


READER_ROUNDS = 12
READER = r"""
import hashlib, json, os, sys
import packstore

socket, keys_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = json.load(open(keys_path))
fds = None
checked = 0
with packstore.Client(socket, timeout=60) as client:
    for round in range(rounds):
        for key, data in client.get_many(keys):
            assert hashlib.sha256(data).hexdigest() == key, key
            checked += 1
        for key in keys[round::7]:
            assert hashlib.sha256(client.get(key)).hexdigest() == key, key
            with client.open(key) as file:
                digest = hashlib.sha256()
                while chunk := file.read(100 * 1024 + 7):
                    digest.update(chunk)
                assert digest.hexdigest() == key, key
            checked += 1
        if fds is None:
            fds = len(os.listdir("/proc/self/fd"))
    print(json.dumps({"checked": checked, "fast_path": client.fast_path,
                      "fds_grew": len(os.listdir("/proc/self/fd")) - fds}))
"""


def test_several_processes_read_through_the_fast_path_at_once(daemon, tmp_path):
    datas = [random_bytes(1000 + 131 * i, f"fp proc {i}") for i in range(150)]
    datas += [random_bytes(2 * MiB + i, f"fp proc large {i}") for i in range(3)]
    with packstore.Client(daemon.socket, timeout=120) as client:
        keys = client.put_many(datas[:100], mode="packed") + client.put_many(datas[100:],
                                                                               mode="loose")
        keys_path = tmp_path / "keys.json"
        keys_path.write_text(json.dumps(keys))
        before = grpc_calls(client)
        readers = [subprocess.Popen([sys.executable, "-c", READER, str(daemon.socket),
                                     str(keys_path), str(READER_ROUNDS)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=python_support.client_env(), cwd="/")
                   for _ in range(4)]
        outcomes, cycles = [], 0
        try:
            # Maintenance meanwhile, from this process, for as long as they
            # read: every repack moves every object to a new pack.
            while any(reader.poll() is None for reader in readers) and cycles < 50:
                client.pack()
                client.repack(compression="yes" if cycles % 2 else "no")
                client.clean()
                cycles += 1
            for reader in readers:
                out, err = reader.communicate(timeout=python_support.WORKER_TIMEOUT)
                outcomes.append((reader.returncode, out, err))
        finally:
            for reader in readers:
                if reader.poll() is None:
                    reader.kill()
                    reader.wait()
        failures = [(code, err) for code, _, err in outcomes if code != 0]
        assert not failures, failures
        assert cycles >= 2, "maintenance ran while they read"
        for _, out, _ in outcomes:
            summary = json.loads(out)
            assert summary["checked"] == READER_ROUNDS * len(keys) + sum(
                len(keys[r::7]) for r in range(READER_ROUNDS))
            assert summary["fast_path"] and summary["fds_grew"] == 0, summary
        assert calls_since(client, before, "GetMany") == {"GetMany": 0}


def init_store(folder, *args):
    subprocess.run([str(support.CLI_BIN), "init", *args, str(folder)], check=True,
                   capture_output=True, text=True, timeout=60)


def test_a_zstd_store(daemons, tmp_path):
    store = tmp_path / "zstd-store"
    init_store(store, "--compression", "zstd+3", "--allow-incompatible")
    daemon = daemons(store=store)
    datas = [text_bytes(100 * KiB + i, f"fp zstd {i}") for i in range(5)]
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as client:
        assert client.status()["config"]["compression_algorithm"].startswith("zstd")
        keys = [client.put(d, mode="packed", compression="yes") for d in datas]
        plain_key = client.put(b"not compressed", mode="packed")
        assert all(info.compressed for info in client.stat(keys))
        before = grpc_calls(client)
        for key, data in zip(keys, datas):
            assert client.get(key) == data
            assert client.get(key, offset=5000, length=10) == data[5000:5010]
        assert dict(client.get_many(keys + [plain_key])) == dict(
            zip(keys, datas), **{plain_key: b"not compressed"})
        assert client.get(plain_key) == b"not compressed"
        counts = calls_since(client, before, "Get", "GetMany")
        if fastpath.can_decode("zstd"):
            assert counts == {"Get": 0, "GetMany": 0}
        else:  # no zstd module here: those objects through gRPC, the rest not
            assert counts == {"Get": 2 * len(keys), "GetMany": 1}
        assert client.fast_path


def test_a_sha1_store(daemons, tmp_path):
    store = tmp_path / "sha1-store"
    init_store(store, "--hash-type", "sha1")
    daemon = daemons(store=store)
    datas = [random_bytes(3000 + i, f"fp sha1 {i}") for i in range(5)] + [b""]
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as client:
        keys = [client.put(d, mode="packed" if i % 2 else "loose") for i, d in enumerate(datas)]
        assert keys == [hashlib.sha1(d).hexdigest() for d in datas]
        before = grpc_calls(client)
        assert [client.get(key, verify=True) for key in keys] == datas
        assert dict(client.get_many(keys)) == dict(zip(keys, datas))
        assert calls_since(client, before, "Get", "GetMany") == {"Get": 0, "GetMany": 0}


PEER = r"""
import json, sys
import packstore

with packstore.Client(sys.argv[1], timeout=30, retries=0) as client:
    try:
        client.get(sys.argv[2])
        print(json.dumps(["OK", ""]))
    except packstore.PackstoreError as error:
        print(json.dumps([type(error).__name__, error.details]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_a_peer_not_allowed_is_permission_denied(daemons, shared_tmp):
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666", "--allow-uid": "0"})
    with packstore.Client(daemon.socket, timeout=CALL_TIMEOUT) as client:
        key = client.put(b"for allowed peers only")
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
            "-c", PEER, str(daemon.socket), key]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env=python_support.client_env(), cwd="/")
    assert result.returncode == 0, result.stderr
    kind, details = json.loads(result.stdout)
    assert kind == "PermissionDenied" and "not allowed" in details, (kind, details)
