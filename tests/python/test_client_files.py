"""Client.open(): a stored object as a seekable binary file, read in byte
ranges, good enough for zipfile and tarfile to read archives in place."""

import hashlib
import io
import random
import shutil
import tarfile
import zipfile

import pytest

import packstore
from daemon_support import KiB, MiB, key_of, random_bytes, text_bytes


def get_bytes_out(client):
    """Bytes the daemon has sent in answer to Get calls."""
    return next(e["bytes_out"] for e in client.status()["rpcs"] if e["method"] == "Get")


@pytest.mark.parametrize("mode,compression", [("loose", "no"), ("packed", "no"),
                                              ("packed", "yes")])
@pytest.mark.parametrize("buffer_size", [0, 4 * KiB, 256 * KiB])
def test_random_reads_and_seeks_match_bytesio(client, mode, compression, buffer_size):
    data = text_bytes(MiB + 3000, "file") + random_bytes(MiB + 77, "file")
    key = client.put(data, mode=mode, compression=compression)
    model = io.BytesIO(data)
    rng = random.Random(f"{mode}{compression}{buffer_size}")
    with client.open(key, buffer_size=buffer_size) as file:
        assert isinstance(file, io.BufferedIOBase) and isinstance(file, packstore.ObjectFile)
        assert (file.key, file.name, file.size, file.mode) == (key, key, len(data), "rb")
        assert file.info.size == len(data)
        assert file.readable() and file.seekable() and not file.writable()
        for _ in range(150):
            action = rng.random()
            if action < 0.3:
                where = rng.choice([rng.randrange(len(data) + 100), 0, len(data), len(data) - 1])
                assert file.seek(where) == model.seek(where)
            elif action < 0.4:
                delta = rng.randrange(-1000, 1000)
                if model.tell() + delta >= 0:
                    assert file.seek(delta, io.SEEK_CUR) == model.seek(delta, io.SEEK_CUR)
            elif action < 0.5:
                delta = -rng.randrange(0, 5000)
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
        file.seek(len(data) - 10)
        assert file.read() == data[-10:]
        assert file.read() == b"" and file.read(5) == b""
        file.seek(0)
        assert file.read() == data
        file.seek(100)
        ahead = file.peek()
        assert ahead and data[100:].startswith(ahead) and file.tell() == 100
        with pytest.raises(ValueError):
            file.seek(-1)
        with pytest.raises(io.UnsupportedOperation):
            file.write(b"no")
    assert file.closed
    with pytest.raises(ValueError):
        file.read(1)


def test_lines_and_copyfileobj(client):
    text = b"".join(f"line {i}\n".encode() for i in range(20_000))
    key = client.put(text, mode="packed", compression="auto")
    with client.open(key, buffer_size=16 * KiB) as file:
        assert file.readline() == b"line 0\n"
        assert sum(1 for _ in file) == 19_999
    with client.open(key) as file:
        copy = io.BytesIO()
        shutil.copyfileobj(file, copy, 100 * KiB)
        assert copy.getvalue() == text
    with client.open(key) as file, io.TextIOWrapper(file, encoding="ascii") as lines:
        assert lines.readline() == "line 0\n"


def make_zip():
    members = {
        "readme.txt": text_bytes(10 * KiB, "readme"),
        "data/random.bin": random_bytes(2 * MiB + 3, "zip random"),
        "data/text.csv": text_bytes(700 * KiB, "zip csv"),
        "empty": b"",
    }
    members.update({f"many/{i}.txt": f"member {i}\n".encode() * (i + 1) for i in range(50)})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for index, (name, data) in enumerate(members.items()):
            method = zipfile.ZIP_STORED if index % 2 else zipfile.ZIP_DEFLATED
            zf.writestr(name, data, compress_type=method)
    return archive.getvalue(), members


@pytest.mark.parametrize("mode", ["loose", "packed"])
def test_zipfile_reads_an_archive_in_place(client, mode):
    archive, members = make_zip()
    key = client.put(archive, mode=mode)
    before = get_bytes_out(client)
    with client.open(key) as file, zipfile.ZipFile(file) as zf:
        assert sorted(zf.namelist()) == sorted(members)
        # One small member, read from the end of the archive: only a small
        # part of the archive crosses the socket.
        assert zf.read("many/49.txt") == members["many/49.txt"]
        read_for_one = get_bytes_out(client) - before
        assert read_for_one < len(archive) // 4, (
            f"reading one member moved {read_for_one} of {len(archive)} bytes")
        for name, data in members.items():
            assert zf.read(name) == data, name
        with zf.open("data/random.bin") as member:
            member.seek(MiB)
            assert member.read(1000) == members["data/random.bin"][MiB:MiB + 1000]
        assert zf.testzip() is None


def test_tarfile_reads_an_archive_in_place(client):
    members = {f"file-{i}": random_bytes(i * 50 * KiB + i, f"tar {i}") for i in range(8)}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tf:
        for name, data in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tf.addfile(entry, io.BytesIO(data))
    key = client.put_file(io.BytesIO(archive.getvalue()), mode="packed")
    with client.open(key) as file, tarfile.open(fileobj=file, mode="r:") as tf:
        for name in reversed(list(members)):
            assert tf.extractfile(name).read() == members[name]


def test_open_a_missing_or_malformed_key(client):
    with pytest.raises(packstore.NotFound) as caught:
        client.open(key_of(b"never stored"))
    assert key_of(b"never stored") in str(caught.value)
    with pytest.raises(packstore.InvalidArgument):
        client.open("not a key")


def test_object_deleted_while_open_over_grpc(daemon):
    # Through gRPC, each read asks the daemon again. (Through the fast path
    # an open file holds the object's descriptor and reads on: see
    # test_client_fast_path.py.)
    client = packstore.Client(daemon.socket, timeout=60, fast_path=False)
    data = random_bytes(300 * KiB, "deleted while open")
    key = client.put(data, mode="loose")
    with client, client.open(key, buffer_size=4 * KiB) as file:
        assert file.read(10) == data[:10]
        assert client.delete(key) == 1
        assert file.read(10) == data[10:20], "the read-ahead buffer still serves"
        file.seek(200 * KiB)
        with pytest.raises(packstore.NotFound):
            file.read(10)


def test_empty_object(client):
    key = client.put(b"")
    with client.open(key) as file:
        assert file.size == 0 and file.read() == b"" and file.read(10) == b""
        assert file.readinto(bytearray(4)) == 0
        assert hashlib.sha256(file.read()).hexdigest() == key
