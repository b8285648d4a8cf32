"""Maintenance and import in daemon mode: pack, optimize, repack, clean,
validate (and its exit code), import from an offline container, and the
admin rights they need."""

import os
import re

import pytest

from cli_support import OTHER_UID
from daemon_support import KiB, MiB, key_of, random_bytes, text_bytes


def put_loose(tool, tmp_path, datas, name="loose"):
    folder = tmp_path / name
    folder.mkdir()
    for i, data in enumerate(datas):
        (folder / f"{i:04d}").write_bytes(data)
    tool.run("put", "--to", "loose", folder)
    return [key_of(data) for data in datas]


def test_pack_rm_repack_clean_validate(tool, tmp_path):
    datas = [text_bytes(2 * KiB + i, f"pack {i}") for i in range(40)] + [
        random_bytes(3 * MiB, "big")]
    keys = put_loose(tool, tmp_path, datas)
    out = tool.text("pack", "--compress", "auto")
    assert re.match(r"packed 41 objects \(\d+ bytes\), 0 were packed already, 41 loose copies "
                    r"deleted\n$", out), out
    stats = tool.stat(*keys)
    assert all(stat["location"] == "packed" for stat in stats.values())
    assert stats[keys[0]]["compressed"] == "1"  # text compresses
    assert stats[keys[-1]]["compressed"] == "0"  # random bytes do not

    tool.run("rm", *keys[:10])
    out = tool.text("repack")
    reclaimed = int(re.search(r"reclaimed (\d+) bytes", out).group(1))
    assert reclaimed > 0, out
    assert tool.text("clean", "--vacuum").startswith("deleted ")
    assert tool.text("validate") == "checked 0 loose and 31 packed objects: 0 issues\n"
    for key, data in zip(keys[10:], datas[10:]):
        assert tool.cat(key) == data


def test_optimize_packs_compresses_and_cleans(tool, tmp_path):
    datas = [text_bytes(4 * KiB + i, f"optimize {i}") for i in range(20)]
    keys = put_loose(tool, tmp_path, datas)
    lines = tool.text("optimize", "-n").splitlines()
    assert lines[0].startswith("packed 20 objects")
    assert lines[1].startswith("rewrote ")
    assert lines[2].startswith("deleted ")
    stats = tool.stat(*keys)
    assert {(s["location"], s["compressed"]) for s in stats.values()} == {("packed", "1")}
    tool.run("validate")


def test_validate_exit_code_and_issue_list(tool, daemon):
    good = tool.put("--to", "loose", "-", stdin=b"a good object")["-"]
    bad_key = key_of(b"what the name promises")
    folder = daemon.store / "loose" / bad_key[:2]
    folder.mkdir(exist_ok=True)
    (folder / bad_key[2:]).write_bytes(b"something else")
    result = tool.run("validate", expect_rc=1)
    assert result.stdout.decode() == "checked 2 loose and 0 packed objects: 1 issues\n"
    listed = tool.text("validate", "-v", expect_rc=1).splitlines()
    assert listed[1].startswith(f"corrupt_loose {bad_key}: ")
    assert good not in "\n".join(listed)


def test_pack_reports_corrupt_loose_objects(tool, daemon):
    bad_key = key_of(b"promised")
    folder = daemon.store / "loose" / bad_key[:2]
    folder.mkdir(exist_ok=True)
    (folder / bad_key[2:]).write_bytes(b"not that")
    result = tool.run("pack", expect_rc=1)
    assert bad_key in result.stderr
    assert "corrupt" in result.stderr


def test_keep_loose_is_for_folders_only(tool):
    result = tool.run("pack", "--keep-loose", expect_rc=2)
    assert "--store" in result.stderr


def make_offline_container(offline, folder, tmp_path):
    """A container written by the tool offline: loose, packed and big objects."""
    source = offline(folder)
    source.run("init")
    datas = {
        "loose": [f"loose {i}".encode() for i in range(30)],
        "packed": [text_bytes(1000 + i, f"packed {i}") for i in range(200)],
        "big": [random_bytes(3 * MiB + i, f"big {i}") for i in range(2)],
    }
    for kind, items in datas.items():
        inputs = tmp_path / f"inputs-{kind}"
        inputs.mkdir()
        for i, data in enumerate(items):
            (inputs / f"{i:04d}").write_bytes(data)
        source.run("put", "--to", "loose" if kind != "packed" else "packed", inputs)
    return source, [data for items in datas.values() for data in items]


def snapshot(folder):
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith("packs.idx-"):
                continue
            path = os.path.join(parent, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, folder)] = handle.read()
    return files


def test_import_from_an_offline_container(tool, offline, tmp_path):
    source_dir = tmp_path / "source"
    source, datas = make_offline_container(offline, source_dir, tmp_path)
    before = snapshot(source_dir)
    already = datas[0]
    tool.run("put", "-", stdin=already)

    out = tool.text("import", source_dir)
    total = sum(len(data) for data in datas[1:])
    assert out == f"imported {len(datas) - 1} objects ({total} bytes), 1 were present\n"
    assert snapshot(source_dir) == before, "import changed the source"
    assert tool.ls() == sorted(key_of(data) for data in datas)
    for data in datas[::20] + datas[-2:]:
        assert tool.cat(key_of(data)) == data
    again = tool.text("import", source_dir)
    assert again == f"imported 0 objects (0 bytes), {len(datas)} were present\n"
    tool.run("validate")


def test_import_refuses_a_corrupt_source_object(tool, offline, tmp_path):
    source_dir = tmp_path / "source"
    source = offline(source_dir)
    source.run("init")
    source.run("put", "-", stdin=b"fine")
    bad_key = key_of(b"the promise")
    folder = source_dir / "loose" / bad_key[:2]
    folder.mkdir(exist_ok=True)
    (folder / bad_key[2:]).write_bytes(b"a broken promise")
    result = tool.run("import", source_dir, expect_rc=2)
    assert bad_key in result.stderr and "corrupt" in result.stderr


def test_offline_import_keeps_working(offline, tmp_path):
    source_dir = tmp_path / "source"
    _, datas = make_offline_container(offline, source_dir, tmp_path)
    target = offline(tmp_path / "target")
    target.run("init")
    out = target.text("import", source_dir)
    assert out.startswith(f"imported {len(datas)} objects")
    assert target.ls() == sorted(key_of(data) for data in datas)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
@pytest.mark.parametrize("command", [["validate"], ["pack"], ["repack"], ["clean"],
                                     ["optimize"], ["rm", key_of(b"x")]])
def test_maintenance_needs_admin_rights(daemons, tool_for, shared_tmp, command):
    daemon = daemons(workdir=shared_tmp, flags={"--socket-mode": "0666"})
    tool = tool_for(daemon)
    result = tool.run(*command, as_other=True, expect_rc=2)
    assert "admin" in result.stderr, result.stderr
    assert str(OTHER_UID) in result.stderr
    # Reads and writes stay open to the same peer.
    assert tool.run("put", "-", stdin=b"by nobody", as_other=True).returncode == 0
