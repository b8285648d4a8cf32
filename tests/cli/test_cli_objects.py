"""The object commands in daemon mode: put / add-files, get, cat, ls, stat,
has, rm and status, byte for byte against the real daemon."""

import json
import os

import pytest

from daemon_support import KiB, MiB, key_of, random_bytes, text_bytes

SIZES = [0, 1, 1000, 1 * MiB, 1 * MiB + 1, 5 * MiB + 3]


def rpc_calls(tool, method):
    """How many calls of `method` the daemon has served (status --json)."""
    status = json.loads(tool.text("status", "--json"))
    for entry in status["rpcs"]:
        if entry["method"] == method:
            return int(entry["calls"])
    raise AssertionError(f"no {method} in the daemon's rpcs")


@pytest.mark.parametrize("mode", ["loose", "packed", "auto"])
@pytest.mark.parametrize("compress", ["no", "yes", "auto"])
def test_put_then_get_and_cat_byte_for_byte(tool, tmp_path, mode, compress):
    contents = {f"obj-{size}": random_bytes(size, f"{mode} {compress}") for size in SIZES}
    contents["text"] = text_bytes(300 * KiB, "text")
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in contents]
    printed = tool.put("--to", mode, "--compress", compress, *paths)
    assert list(printed) == paths
    for name, data in contents.items():
        key = printed[str(tmp_path / name)]
        assert key == key_of(data)
        assert tool.run("get", key).stdout == data
        assert tool.run("get", "--verify", key).stdout == data
        out = tmp_path / f"{name}.out"
        tool.run("get", key, "-o", out)
        assert out.read_bytes() == data
    keys = [printed[p] for p in paths]
    assert tool.cat(*keys) == b"".join(contents.values())
    stats = tool.stat(*keys)
    for name, data in contents.items():
        stat = stats[key_of(data)]
        assert int(stat["size"]) == len(data)
        if mode == "loose":
            assert stat["location"] == "loose"
        if mode == "packed":
            assert stat["location"] == "packed"
    if mode == "packed" and compress == "yes":
        assert stats[key_of(contents["text"])]["compressed"] == "1"
    if mode == "packed" and compress == "no":
        assert all(stats[k]["compressed"] == "0" for k in keys)


def test_get_replaces_the_output_file_only_when_complete(tool, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    data = random_bytes(3 * MiB, "replace")
    (folder / "in").write_bytes(data)
    key = tool.put(folder / "in")[str(folder / "in")]
    out = folder / "out"
    out.write_bytes(b"previous content")
    missing = "0" * 64
    tool.run("get", missing, "-o", out, expect_rc=1)
    assert out.read_bytes() == b"previous content"
    tool.run("get", key, "-o", out)
    assert out.read_bytes() == data
    assert sorted(os.listdir(folder)) == ["in", "out"]


def test_add_files_stores_a_tree_small_files_in_batches(tool, tmp_path):
    tree = tmp_path / "tree"
    expected = {}
    for i in range(300):
        sub = tree / f"d{i % 7}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        data = text_bytes(100 + i * 37, f"small {i}")
        (sub / f"f{i:03d}.txt").write_bytes(data)
        expected[str(sub / f"f{i:03d}.txt")] = data
    (tree / "empty").write_bytes(b"")
    expected[str(tree / "empty")] = b""
    for i in range(3):
        data = random_bytes(2 * MiB + i, f"large {i}")
        (tree / f"large{i}.bin").write_bytes(data)
        expected[str(tree / f"large{i}.bin")] = data
    os.symlink(tree / "large0.bin", tree / "link-to-large0")
    expected[str(tree / "link-to-large0")] = expected[str(tree / "large0.bin")]
    os.symlink(tree / "d0", tree / "link-to-d0")  # not followed

    put_many_before = rpc_calls(tool, "PutMany")
    put_stream_before = rpc_calls(tool, "PutStream")
    result = tool.run("add-files", tree)
    lines = result.stdout.decode().splitlines()
    printed = [line.split("  ", 1) for line in lines]
    assert [path for _, path in printed] == sorted(expected), "not one line per file in name order"
    for key, path in printed:
        assert key == key_of(expected[path]), path
    assert "link-to-d0" in result.stderr
    # 301 small files in one PutMany call; the 4 large ones one by one, each
    # handed to the daemon as a descriptor (the fast path): none streamed.
    assert rpc_calls(tool, "PutMany") - put_many_before <= 2
    assert rpc_calls(tool, "PutStream") - put_stream_before == 0

    keys = sorted({key_of(data) for data in expected.values()})
    assert tool.ls() == keys
    assert all(tool.has(*keys).values())
    for path, data in list(expected.items())[::25]:
        assert tool.run("cat", key_of(data)).stdout == data


def test_put_from_stdin(tool):
    data = random_bytes(3 * MiB + 17, "stdin")
    out = tool.text("put", "-", stdin=data)
    assert out == f"{key_of(data)}  -\n"
    assert tool.cat(key_of(data)) == data
    assert tool.text("put", "-", stdin=b"") == f"{key_of(b'')}  -\n"
    assert tool.cat(key_of(b"")) == b""
    small = b"a small object from stdin"
    assert tool.put("--to", "packed", "-", stdin=small) == {"-": key_of(small)}
    assert tool.stat(key_of(small))[key_of(small)]["location"] == "packed"


def test_has_exit_codes(tool):
    data = b"present"
    key = tool.put("-", stdin=data)["-"]
    absent = key_of(b"absent")
    assert tool.run("has", key).stdout.decode() == f"{key} yes\n"
    result = tool.run("has", key, absent, expect_rc=1)
    assert result.stdout.decode() == f"{key} yes\n{absent} no\n"
    tool.run("has", absent, expect_rc=1)
    bad = tool.run("has", "not-a-key", expect_rc=2)
    assert "not-a-key" in bad.stderr


def test_stat_reports_and_exits_1_for_missing(tool):
    loose = b"loose object"
    packed = text_bytes(64 * KiB, "packed")
    key_loose = tool.put("--to", "loose", "-", stdin=loose)["-"]
    key_packed = tool.put("--to", "packed", "--compress", "yes", "-", stdin=packed)["-"]
    stats = tool.stat(key_loose, key_packed)
    assert stats[key_loose] == {"size": str(len(loose)), "location": "loose"}
    assert stats[key_packed]["location"] == "packed"
    assert stats[key_packed]["compressed"] == "1"
    assert int(stats[key_packed]["length"]) < len(packed)
    missing = key_of(b"never stored")
    result = tool.run("stat", key_loose, missing, expect_rc=1)
    assert result.stdout.decode().splitlines()[1] == f"{missing} missing"


def test_rm_exit_codes(tool):
    keys = [tool.put("-", stdin=data)["-"] for data in (b"one", b"two")]
    assert tool.text("rm", *keys) == "deleted 2 of 2 objects\n"
    assert tool.has(*keys, expect_rc=1) == {key: False for key in keys}
    assert tool.text("rm", keys[0], expect_rc=1) == "deleted 0 of 1 objects\n"
    tool.run("rm", "XYZ", expect_rc=2)


def test_missing_object(tool):
    missing = key_of(b"nothing")
    for command in (["get", missing], ["cat", missing]):
        result = tool.run(*command, expect_rc=1)
        assert result.stdout == b""
        assert "not found" in result.stderr
    tool.run("get", "not-hex", expect_rc=2)


def test_ls_lists_every_key_ascending(tool, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    datas = [f"object {i}".encode() for i in range(2500)]
    for i, data in enumerate(datas):
        (folder / f"{i:05d}").write_bytes(data)
    tool.run("put", "--to", "packed", folder)
    loose = [f"loose {i}".encode() for i in range(5)]
    for data in loose:
        tool.run("put", "--to", "loose", "-", stdin=data)
    keys = tool.ls()
    assert keys == sorted(key_of(data) for data in datas + loose)
    after = keys[len(keys) // 2]
    assert tool.text("ls", "--after", after).split() == [k for k in keys if k > after]


def test_socket_flag_and_default(tool_binary, daemon):
    from cli_support import Tool
    bare = Tool(tool_binary)  # neither PACKSTORE_SOCKET nor PACKSTORE_STORE set
    assert str(daemon.socket) in bare.text("--socket", daemon.socket, "status")
    assert str(daemon.socket) in bare.text("status", "--socket", daemon.socket)
    result = bare.run("status", expect_rc=None)
    if result.returncode != 0:  # no system daemon here: the default socket is named
        assert "/run/packstore/packstore.sock" in result.stderr


def test_status_for_people_and_as_json(tool, daemon):
    tool.run("put", "-", stdin=b"status")
    human = tool.text("status")
    assert str(daemon.socket) in human
    assert str(daemon.store) in human
    assert "packed objects" in human
    status = json.loads(tool.text("status", "--json"))
    assert status["container_dir"] == str(daemon.store)
    assert status["config"]["hash_type"] == "sha256"
    counts = status["counts"]
    assert int(counts["packed_objects"]) + int(counts["loose_objects"]) == 1
