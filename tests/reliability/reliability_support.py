"""Helpers of the reliability suite: a minimal PSFD1 client, what the daemon
process holds (memory, descriptors), the store's files, and the check every
hostile test ends with: other clients are still served.

Everything here talks to a daemon the tests/daemon fixtures started; nothing
here starts one.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import daemon_support as support
from daemon_support import key_of, pb
from fast_path_client import FastPath  # noqa: F401 (the suite's tests take it from here)

EMPTY_KEY = key_of(b"")
FIRST_BYTES_TIMEOUT = 5.0  # docs/protocol.md: the first bytes must tell the protocol within 5 s
MAX_LINE_BYTES = 1 << 20   # docs/protocol.md: a request line is at most 1 MiB with its '\n'
MAX_FAST_PATH_CONNECTIONS = 1024
STREAMS_FULL = ("too many streaming calls at once (the daemon's limit is --max-streams); "
                "retry when some have finished")


def client_share_full(pid, running):
    """The refusal of a streaming call from process `pid` that runs
    `running` of them, its whole --max-streams-per-client share."""
    return (f"too many streaming calls at once from this client (pid {pid} runs {running}; "
            "the daemon's limit per client is --max-streams-per-client); "
            "retry when some have finished")


# ---- keys and messages ------------------------------------------------------------------


def quote_key(key):
    """The daemon's quoting of a key in a message (absl::CHexEscape of its
    first 80 bytes, then the length when longer)."""
    raw = key.encode() if isinstance(key, str) else key
    escapes = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"',
               ord("'"): "\\'", ord("\\"): "\\\\"}
    out, last_was_hex = [], False
    for byte in raw[:80]:
        hex_digit = chr(byte) in "0123456789abcdefABCDEF"
        if byte in escapes:
            out.append(escapes[byte])
            last_was_hex = False
        elif 0x20 <= byte < 0x7F and not (last_was_hex and hex_digit):
            out.append(chr(byte))
            last_was_hex = False
        else:
            # A hex digit right after a \x escape is escaped too, as absl does.
            out.append(f"\\x{byte:02x}")
            last_was_hex = True
    quoted = '"' + "".join(out) + '"'
    if len(raw) > 80:
        quoted += f"... ({len(raw)} bytes)"
    return quoted


def invalid_key_message(key, index=None):
    """The INVALID_ARGUMENT message for a malformed sha256 key (docs/protocol.md, Keys)."""
    message = f"invalid sha256 key {quote_key(key)}: expected 64 lowercase hex characters"
    return message if index is None else f"keys[{index}]: {message}"


# ---- the daemon process -----------------------------------------------------------------


def proc_status(pid):
    """/proc/<pid>/status as {field: value in bytes for the kB fields}."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            words = value.split()
            if len(words) == 2 and words[1] == "kB":
                fields[name] = int(words[0]) * 1024
            else:
                fields[name] = value.strip()
    return fields


def memory(daemon):
    """(VmRSS, RssAnon) of the daemon, in bytes."""
    status = proc_status(daemon.process.pid)
    return status["VmRSS"], status["RssAnon"]


def open_descriptors(daemon):
    return len(os.listdir(f"/proc/{daemon.process.pid}/fd"))


def threads(daemon):
    return int(proc_status(daemon.process.pid)["Threads"])


# ---- the store's files ------------------------------------------------------------------


def sandbox_files(store):
    return sorted(os.listdir(store / "sandbox"))


def loose_path(store, key):
    return store / "loose" / key[:2] / key[2:]


def index_rows(store):
    """{key: (pack_id, offset, length, size, compressed)} from packs.idx (daemon stopped,
    or read-only while it runs: WAL readers see committed rows)."""
    connection = sqlite3.connect(f"file:{store / 'packs.idx'}?mode=ro", uri=True)
    try:
        return {row[0]: tuple(row[1:]) for row in connection.execute(
            'SELECT hashkey, pack_id, "offset", length, size, compressed FROM db_object')}
    finally:
        connection.close()


# ---- served? ----------------------------------------------------------------------------


def assert_served(daemon, what, streams=True, timeout=10.0):
    """Another client, on a connection of its own, is served: health says
    SERVING, a packed Put is acknowledged and reads back (a verifying Get
    over gRPC, or, with `streams` False because the hostile client holds
    every stream slot, Has and a fast-path LOCATE, which take no slot)."""
    data = f"served despite {what} ({time.monotonic_ns()})".encode()
    channel = support.connect(daemon.socket, own_connection=True)
    try:
        assert support.health_check(channel, timeout=timeout) == "SERVING", what
        stub = support.stub_for(channel)
        ref = support.put(stub, data, "packed", timeout=timeout)
        assert (ref.key, ref.size) == (key_of(data), len(data)), what
        if streams:
            assert support.get_bytes(stub, ref.key, timeout=timeout, verify=True) == data, what
        else:
            present = stub.Has(pb.HasRequest(keys=[ref.key]), timeout=timeout).present
            assert list(present) == [True], what
        with FastPath(daemon.socket, timeout=timeout) as client:
            first, entries = client.locate([ref.key])
            assert first == "OK 1", f"{what}: LOCATE answered {first!r}"
            assert entries[0].read() == data, what
    finally:
        channel.close()


# Run by assert_served_elsewhere in a process of its own: a verifying Get of
# the key given (its SHA-256 printed), and a PutStream whose key it checks.
_OTHER_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
import daemon_support as support
channel = support.connect(sys.argv[2])
stub = support.stub_for(channel)
data = support.get_bytes(stub, sys.argv[3], timeout=float(sys.argv[4]), verify=True)
ref = support.put_stream(stub, b"streamed by another process", "auto",
                         timeout=float(sys.argv[4]))
assert ref.key == support.key_of(b"streamed by another process"), ref
print(support.key_of(data))
"""


def assert_served_elsewhere(daemon, key, what, timeout=10.0):
    """Another client process is served streaming calls (a verifying Get of
    `key`, a PutStream) while this one holds its share of stream slots."""
    daemon_dir = Path(support.__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(daemon_dir), str(daemon.socket), key,
         str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30)
    assert result.returncode == 0, f"{what}: another process was not served: {result.stderr}"
    assert result.stdout.strip() == key, f"{what}: {result.stdout!r}"


def sha256(data):
    return hashlib.sha256(data).hexdigest()
