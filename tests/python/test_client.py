"""The packstore client against the real daemon: writes, reads, listing and
status, each checked against the content's own SHA-256."""

import hashlib
import io
import itertools
import os
import time
import tracemalloc

import pytest

import daemon_support as support
import packstore
from daemon_support import KiB, MiB, key_of, random_bytes, text_bytes
from packstore import Compression, PutMode

EMPTY_KEY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def rpc_calls(client, method):
    """How many `method` calls the daemon has counted."""
    return next(entry["calls"] for entry in client.status()["rpcs"] if entry["method"] == method)


# ---- the client itself ---------------------------------------------------------------------


def test_socket_from_argument_environment_or_default(monkeypatch, daemon):
    monkeypatch.delenv("PACKSTORE_SOCKET", raising=False)
    with packstore.Client() as client:
        assert client.socket == "/run/packstore/packstore.sock" == packstore.DEFAULT_SOCKET
    monkeypatch.setenv("PACKSTORE_SOCKET", str(daemon.socket))
    with packstore.Client(timeout=30) as client:
        assert client.socket == str(daemon.socket)
        assert client.put(b"through $PACKSTORE_SOCKET") == key_of(b"through $PACKSTORE_SOCKET")
    with packstore.Client(daemon.socket, timeout=30) as client:  # a Path will do
        assert client.has(key_of(b"through $PACKSTORE_SOCKET"))


def test_close_and_context_manager(daemon):
    client = packstore.Client(daemon.socket, timeout=30)
    with client as same:
        assert same is client
        assert same.put(b"before close") == key_of(b"before close")
    with pytest.raises(ValueError):  # a closed channel is a programming error
        client.has(key_of(b"before close"))
    client.close()  # twice is fine


# ---- put -----------------------------------------------------------------------------------


def test_put_every_mode_and_compression(client):
    modes = [None, "auto", "loose", "packed", PutMode.PACKED, PutMode.LOOSE, "AUTO"]
    compressions = [None, "no", "yes", "auto", Compression.YES, True, False]
    for index, (mode, compression) in enumerate(itertools.product(modes, compressions)):
        data = text_bytes(20 * KiB + index, f"mode {mode} compression {compression}")
        key = client.put(data, mode=mode, compression=compression)
        assert key == key_of(data)
        assert client.get(key) == data
        info = client.stat(key)
        assert info == packstore.ObjectInfo(key, len(data), info.packed, info.compressed,
                                            info.stored_size)
        name = mode.name.lower() if isinstance(mode, PutMode) else (mode or "auto").lower()
        assert info.packed == (name != "loose"), (mode, info)
        if name == "loose":
            assert not info.compressed and info.stored_size == 0
        elif compression in ("yes", Compression.YES, True):
            assert info.compressed and 0 < info.stored_size < len(data), (mode, compression, info)
        elif compression in (None, "no", False):
            assert not info.compressed and info.stored_size == len(data)


def test_put_takes_bytes_like_objects_only(client):
    data = b"bytes-like objects"
    assert client.put(bytearray(data)) == key_of(data)
    assert client.put(memoryview(data)) == key_of(data)
    assert client.put(b"") == EMPTY_KEY
    with pytest.raises(TypeError):
        client.put("a str")
    with pytest.raises(ValueError):
        client.put(data, mode="sideways")
    with pytest.raises(ValueError):
        client.put(data, compression="maybe")


def test_put_is_idempotent(client):
    data = random_bytes(3000, "twice")
    assert client.put(data, mode="packed") == client.put(data, mode="packed") == key_of(data)
    assert client.status()["counts"]["packed_objects"] == 1


def test_put_of_a_large_object_streams(client):
    data = random_bytes(9 * MiB + 17, "large put")
    streams = rpc_calls(client, "PutStream")
    assert client.put(data, mode="loose") == key_of(data)
    assert rpc_calls(client, "PutStream") == streams + 1
    assert client.get(key_of(data)) == data


def test_put_file_from_a_path_and_from_file_objects(client, tmp_path):
    data = random_bytes(5 * MiB + 123, "put_file")
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    for mode in ("auto", "loose", "packed"):
        assert client.put_file(path, mode=mode) == key_of(data)
        assert client.put_file(str(path), mode=mode) == key_of(data)
    assert client.get(key_of(data)) == data
    with open(path, "rb") as file:
        file.seek(1000)  # from the current position
        assert client.put_file(file) == key_of(data[1000:])
        assert file.read() == b"", "put_file leaves the file at its end"
    assert client.put_file(io.BytesIO(b"in memory")) == key_of(b"in memory")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert client.put_file(empty) == EMPTY_KEY
    assert client.get(EMPTY_KEY) == b""
    small = tmp_path / "small"
    small.write_bytes(b"small file")
    assert client.put_file(small, compression="yes", mode="packed") == key_of(b"small file")
    with open(small, "r") as text:
        with pytest.raises(TypeError):
            client.put_file(text)
    with pytest.raises(FileNotFoundError):
        client.put_file(tmp_path / "no such file")


class _FailingReader(io.RawIOBase):
    """A binary file that fails after a few reads."""

    def __init__(self):
        self.reads = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        self.reads += 1
        if self.reads > 3:
            raise OSError("the disk went away")
        buffer[:] = b"x" * len(buffer)
        return len(buffer)


def test_put_file_passes_on_the_file_error_and_stores_nothing(client):
    with pytest.raises(OSError, match="the disk went away"):
        client.put_file(io.BufferedReader(_FailingReader(), buffer_size=64 * KiB))
    assert list(client.list()) == []


def test_put_file_of_64_mib_runs_in_constant_memory(client, tmp_path):
    size = 64 * MiB
    path = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for i in range(size // MiB):
            chunk = random_bytes(MiB, f"large file {i}")
            digest.update(chunk)
            file.write(chunk)
    tracemalloc.start()
    try:
        key = client.put_file(path, mode="loose")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert key == digest.hexdigest()
    assert peak < 8 * MiB, f"put_file of {size} bytes peaked at {peak} bytes of Python memory"
    assert client.stat(key).size == size
    # And back, in constant memory too, through open().
    tracemalloc.start()
    try:
        back = hashlib.sha256()
        with client.open(key) as file:
            while chunk := file.read(MiB):
                back.update(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert back.hexdigest() == key
    assert peak < 8 * MiB, f"reading {size} bytes through open() peaked at {peak} bytes"


# ---- put_many ------------------------------------------------------------------------------


def test_put_many_keeps_order_through_batches_and_large_objects(client):
    datas = [random_bytes(i * 97 % (40 * KiB), f"many {i}") for i in range(300)]
    datas.insert(50, random_bytes(3 * MiB + 1, "large in the middle"))
    datas.insert(0, random_bytes(1 * MiB + 1, "large first"))
    datas.append(random_bytes(6 * MiB, "large last"))
    datas += [datas[10], b"", datas[10]]  # duplicates and the empty object
    calls_before = rpc_calls(client, "PutMany")
    keys = client.put_many(iter(datas))  # an iterator, consumed once
    assert keys == [key_of(data) for data in datas]
    # The small objects in PutMany calls, cut by the large ones (put alone).
    assert rpc_calls(client, "PutMany") - calls_before == 3
    assert all(client.has(keys))
    found = dict(client.get_many(keys))
    assert all(found[key_of(data)] == data for data in datas)


def test_put_many_batches_many_tiny_objects(client):
    datas = [f"tiny object {i}".encode() for i in range(25_000)]
    keys = client.put_many(datas, mode="packed")
    assert keys == [key_of(data) for data in datas]
    assert client.status()["counts"]["packed_objects"] == len(datas)
    assert client.put_many([]) == []


def test_put_many_modes(client):
    for mode, packed in (("loose", False), ("packed", True), ("auto", True)):
        datas = [text_bytes(5000 + i, f"put_many {mode} {i}") for i in range(5)]
        keys = client.put_many(datas, mode=mode, compression="yes")
        assert [info.packed for info in client.stat(keys)] == [packed] * 5


def test_put_many_passes_on_a_bad_object(client):
    def objects():
        yield b"one"
        yield b"two"
        yield "three"

    with pytest.raises(TypeError):
        client.put_many(objects())


# ---- get -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,compression", [("loose", "no"), ("packed", "no"),
                                              ("packed", "yes")])
def test_get_whole_ranges_and_verify(client, mode, compression):
    data = text_bytes(3 * MiB + 5, f"get {mode} {compression}")
    key = client.put(data, mode=mode, compression=compression)
    assert client.get(key) == data
    assert client.get(key, verify=True) == data
    size = len(data)
    for offset, length in ((0, 10), (1, 100), (MiB - 1, 2), (size - 5, None), (size - 5, 100),
                           (size, None), (size + 10, 5), (12345, 0), (0, size), (7, 2 * MiB)):
        expected = data[offset:] if length is None else data[offset:offset + length]
        assert client.get(key, offset=offset, length=length) == expected, (offset, length)
    with pytest.raises(packstore.InvalidArgument, match="verify"):
        client.get(key, offset=1, verify=True)
    with pytest.raises(ValueError):
        client.get(key, offset=-1)


# ---- get_many ------------------------------------------------------------------------------


def test_get_many_with_missing_keys_and_large_objects(client):
    small = [random_bytes(100 + i, f"gm small {i}") for i in range(40)]
    large = [random_bytes(2 * MiB + 77, "gm large packed"), random_bytes(3 * MiB + 1, "gm large")]
    client.put_many(small, mode="packed")
    keys_large = [client.put(large[0], mode="packed"), client.put_file(io.BytesIO(large[1]),
                                                                        mode="loose")]
    compressed = client.put(text_bytes(1500 * KiB, "gm compressed"), mode="packed",
                            compression="yes")
    empty = client.put(b"")
    missing = [key_of(b"missing one"), key_of(b"missing two")]
    asked = ([keys_large[1], missing[0]] + [key_of(d) for d in reversed(small)] + [empty]
             + [keys_large[0], compressed, missing[1], keys_large[1], key_of(small[3])])
    answers = list(client.get_many(asked))
    got = [key for key, _ in answers]
    assert sorted(got) == sorted(set(asked)), "every distinct key comes once"
    objects = dict(answers)
    for data in small + large + [b"", text_bytes(1500 * KiB, "gm compressed")]:
        assert objects[key_of(data)] == data
    assert objects[missing[0]] is None and objects[missing[1]] is None
    # Storage order: the small packed objects in the order they were
    # written, whatever the order asked; the large ones after them.
    small_order = [key for key in got if key in {key_of(d) for d in small}]
    assert small_order == [key_of(d) for d in small]
    positions = {key: i for i, key in enumerate(got)}
    assert max(positions[key_of(d)] for d in small) < min(positions[k] for k in keys_large)


def test_get_many_batches_and_can_be_abandoned(client):
    datas = [f"object {i}".encode() for i in range(12_000)]
    keys = client.put_many(datas, mode="packed")
    missing = [key_of(f"absent {i}".encode()) for i in range(3000)]
    calls = rpc_calls(client, "GetMany")
    objects = dict(client.get_many(keys + missing))
    # 15,000 keys, 10,000 per call over gRPC; none through the fast path.
    assert rpc_calls(client, "GetMany") == calls + (0 if client.fast_path else 2)
    assert len(objects) == 15_000
    assert all(objects[key_of(data)] == data for data in datas)
    assert all(objects[key] is None for key in missing)
    # Leaving the iteration early cancels the stream; the client goes on.
    iterator = client.get_many(keys)
    assert next(iterator)[1] is not None
    iterator.close()
    assert client.get(keys[0]) == datas[0]
    assert list(client.get_many([])) == []


def test_reads_go_on_after_the_idle_timeout_cut_a_paused_iteration(daemons):
    """A caller that pauses inside get_many or list for longer than the
    daemon's --stream-idle-timeout, once its gRPC buffers are full, gets
    the rest all the same: the daemon cancels the waiting stream (its log
    says so) and the client asks again for what is left."""
    daemon = daemons(flags={"--stream-idle-timeout": "1"})
    # Without BDP probing the client's receive window stays at gRPC's 64 KiB,
    # so the daemon soon waits on the paused loop whatever the machine.
    with packstore.Client(daemon.socket, timeout=60, fast_path=False,
                          options=[("grpc.http2.bdp_probe", 0)]) as client:
        datas = [random_bytes(MiB - 64, f"paused get_many {i}") for i in range(24)]
        keys = client.put_many(datas, mode="packed")
        got = {}
        for i, (key, data) in enumerate(client.get_many(keys)):
            got[key] = data
            if i == 0:
                time.sleep(3)
        assert got == dict(zip(keys, datas))

        names = [f"listed {i}".encode() for i in range(40_000)]
        stored = set(client.put_many(names, mode="packed")) | set(keys)
        listed = []
        for i, key in enumerate(client.list(page_size=1)):
            listed.append(key)
            if i == 0:
                time.sleep(3)
        assert listed == sorted(stored)
    log = daemon.log()
    for method in ("GetMany", "List"):
        assert f"{method} from pid {os.getpid()}: cancelled" in log, f"{method} was not cut"


# ---- has, stat, list, status ---------------------------------------------------------------


def test_has_and_stat_one_key_or_many(client):
    packed = text_bytes(4000, "stat packed")
    loose = random_bytes(5000, "stat loose")
    client.put(packed, mode="packed", compression="yes")
    client.put(loose, mode="loose")
    absent = key_of(b"absent")
    assert client.has(key_of(packed)) is True
    assert client.has(absent) is False
    assert client.has([absent, key_of(loose), key_of(packed)]) == [False, True, True]
    assert client.has(k for k in [key_of(loose)]) == [True]
    assert client.has([]) == []
    info = client.stat(key_of(loose))
    assert info == packstore.ObjectInfo(key_of(loose), 5000, False, False, 0)
    assert client.stat(absent) is None
    infos = client.stat([key_of(packed), absent, key_of(packed)])
    assert infos[1] is None and infos[0] == infos[2]
    assert infos[0].packed and infos[0].compressed and infos[0].size == 4000
    assert 0 < infos[0].stored_size < 4000
    # More keys than one request takes.
    many = [key_of(f"nothing {i}".encode()) for i in range(10_050)] + [key_of(loose)]
    assert client.has(many) == [False] * 10_050 + [True]
    assert client.stat(many)[-1] == info


def test_list_every_key_ascending_after_and_pages(client):
    datas = [random_bytes(50 + i, f"list {i}") for i in range(250)]
    client.put_many(datas[:200], mode="packed")
    for data in datas[200:]:
        client.put(data, mode="loose")
    client.put(datas[0], mode="loose")  # packed and loose: listed once
    keys = sorted(key_of(data) for data in datas)
    assert list(client.list()) == keys
    assert list(client.list(page_size=7)) == keys
    assert list(client.list(after=keys[99])) == keys[100:]
    assert list(client.list(after=keys[-1])) == []
    prefix = keys[120][:2]
    assert list(client.list(after=prefix)) == [k for k in keys if k > prefix]
    # Lazily: stop after a few, resume after the last one seen.
    iterator = client.list(page_size=10)
    head = list(itertools.islice(iterator, 25))
    iterator.close()
    assert head + list(client.list(after=head[-1])) == keys


def test_status_is_a_dict_of_the_proto_fields(client, daemon):
    client.put(b"status one", mode="packed")
    client.put(random_bytes(1000, "status loose"), mode="loose")
    status = client.status()
    assert status["version"].startswith("packstored")
    assert status["container_dir"] == str(daemon.store)
    assert status["config"]["hash_type"] == "sha256"
    assert status["config"]["loose_prefix_len"] == 2
    counts = status["counts"]
    assert counts["packed_objects"] == 1 and counts["packed_bytes"] == len(b"status one")
    assert counts["loose_objects"] == 1 and counts["loose_bytes"] == 1000
    assert isinstance(counts["pack_file_bytes"], int) and counts["hole_bytes"] == 0
    assert status["maintenance"] == ""
    assert isinstance(status["uptime_seconds"], int)
    assert status["free_bytes"] > 0 and status["free_bytes_reserve"] == 16 * MiB
    assert isinstance(status["cache"]["mapped_bytes_limit"], int)
    methods = [entry["method"] for entry in status["rpcs"]]
    assert methods[:3] == ["Put", "PutStream", "PutMany"] and "Validate" in methods
    put = status["rpcs"][0]
    assert put["calls"] == 2 and put["errors"] == 0 and put["bytes_in"] >= 1010
    # The same numbers as the raw message.
    raw = daemon.stub.Status(support.pb.StatusRequest(), timeout=support.RPC_TIMEOUT)
    assert status["counts"]["packed_objects"] == raw.counts.packed_objects
    assert status["config"]["container_id"] == raw.config.container_id

