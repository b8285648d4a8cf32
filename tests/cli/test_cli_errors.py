"""What the tool says when it cannot work: no daemon, a stale socket, bad
usage; and its progress bars, drawn on a terminal only."""

import os
import pty
import re
import socket as socketlib

import pytest

from daemon_support import KiB, MiB, random_bytes, text_bytes


def assert_no_daemon_advice(stderr, socket):
    assert str(socket) in stderr, stderr
    assert "PACKSTORE_SOCKET" in stderr and "--socket" in stderr, stderr
    assert "--store" in stderr, stderr


@pytest.mark.parametrize("command", [["status"], ["ls"], ["put", "-"], ["validate"],
                                     ["backup", "/nonexistent/dest"]])
def test_no_daemon_names_the_socket(tool_on_socket, tmp_path, command):
    socket = tmp_path / "nobody-here.sock"
    result = tool_on_socket(socket).run(*command, stdin=b"x", expect_rc=2)
    assert "not running" in result.stderr
    assert_no_daemon_advice(result.stderr, socket)
    assert result.stdout == b""


def test_no_daemon_through_the_socket_flag(tool_binary, tmp_path):
    from cli_support import Tool
    socket = tmp_path / "flag.sock"
    result = Tool(tool_binary).run("--socket", socket, "ls", expect_rc=2)
    assert_no_daemon_advice(result.stderr, socket)


def test_stale_socket(tool_on_socket, tmp_path):
    path = tmp_path / "stale.sock"
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    listener.bind(str(path))  # bound, never listening: connections are refused
    try:
        result = tool_on_socket(path).run("status", expect_rc=2)
    finally:
        listener.close()
    assert "nothing listens" in result.stderr
    assert_no_daemon_advice(result.stderr, path)


def test_daemon_that_went_away(daemon, tool):
    tool.run("status")
    daemon.stop()
    result = tool.run("ls", expect_rc=2)
    assert_no_daemon_advice(result.stderr, daemon.socket)


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["put"], ["has"], ["put", "--to", "nowhere",
                                  "-"], ["pack", "--compress", "maybe"], ["backup"],
                                  ["backup", "dest", "--keep", "0"], ["get", "a", "b"]])
def test_usage_errors_exit_2(tool, args):
    result = tool.run(*args, expect_rc=2)
    assert result.stderr.strip()


def test_missing_files_and_folders_are_errors_not_negative_answers(tool, tmp_path):
    missing = tmp_path / "no-such-file"
    result = tool.run("put", missing, expect_rc=2)
    assert str(missing) in result.stderr
    tool.run("import", tmp_path / "no-such-store", expect_rc=2)
    tool.run("get", "0" * 64, "-o", tmp_path / "no-such-folder" / "out", expect_rc=2)


def test_help_documents_the_exit_codes(tool):
    out = tool.text("--help")
    assert "Exit codes:" in out
    assert "PACKSTORE_SOCKET" in out
    for command in ("init", "status", "put, add-files", "get", "cat", "ls", "stat", "has", "rm",
                    "pack", "optimize", "repack", "clean", "validate", "backup", "import"):
        assert command in out, command


def test_init_needs_a_folder(tool, tmp_path):
    result = tool.run("init", expect_rc=2)
    assert "--store" in result.stderr
    tool.run("init", tmp_path / "new-store")
    assert (tmp_path / "new-store" / "config.json").exists()


def busy_store(tool, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:04d}").write_bytes(text_bytes(KiB + i, f"bar {i}"))
    return folder


def test_piped_output_has_no_progress_bar(tool, tmp_path):
    folder = busy_store(tool, tmp_path)
    put = tool.run("add-files", "--to", "loose", folder)
    assert put.stderr == ""
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+", line)
               for line in put.stdout.decode().splitlines())
    for command in (["pack"], ["validate"], ["repack"], ["backup", tmp_path / "bk"]):
        result = tool.run(*command)
        assert result.stderr == "", (command, result.stderr)
        assert "\r" not in result.stdout.decode()


def run_on_terminal(tool, *args):
    """Runs with stderr on a pseudo-terminal; (result, what the terminal showed)."""
    master, slave = pty.openpty()
    try:
        result = tool.run(*args, stderr=slave)
    finally:
        os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return result, shown.decode("utf-8", "replace")


def test_progress_bars_on_a_terminal(tool, tmp_path):
    folder = busy_store(tool, tmp_path)
    result, shown = run_on_terminal(tool, "add-files", "--to", "loose", folder)
    assert len(result.stdout.decode().splitlines()) == 400, "stdout is still one line a file"
    assert "add-files" in shown and "400/400" in shown, shown[-500:]
    _, shown = run_on_terminal(tool, "validate")
    assert re.search(r"validate.*\d+/\d+", shown), shown[-500:]
    _, shown = run_on_terminal(tool, "pack")
    assert re.search(r"pack .*400/400", shown), shown[-500:]
    big = random_bytes(80 * MiB, "big transfer")
    (tmp_path / "big").write_bytes(big)
    key = tool.put(tmp_path / "big")[str(tmp_path / "big")]
    result, shown = run_on_terminal(tool, "get", key, "-o", tmp_path / "big.out")
    assert "MiB" in shown and "get" in shown, shown[-500:]
    assert (tmp_path / "big.out").read_bytes() == big
