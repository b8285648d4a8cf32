"""Helpers of the reliability suite: a minimal PSFD1 client, what the daemon
process holds (memory, descriptors), the store's files, and the check every
hostile test ends with: other clients are still served.

Everything here talks to a daemon the tests/daemon fixtures started; nothing
here starts one.
"""

import hashlib
import os
import socket
import sqlite3
import tempfile
import time

import daemon_support as support
from daemon_support import key_of, pb

EMPTY_KEY = key_of(b"")
FIRST_BYTES_TIMEOUT = 5.0  # docs/protocol.md: the first bytes must tell the protocol within 5 s
MAX_LINE_BYTES = 1 << 20   # docs/protocol.md: a request line is at most 1 MiB with its '\n'
MAX_FAST_PATH_CONNECTIONS = 1024
STREAMS_FULL = ("too many streaming calls at once (the daemon's limit is --max-streams); "
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


# ---- a minimal PSFD1 client (docs/protocol.md, "The local fast path") -------------------


class Located:
    """One line of a LOCATE answer."""

    def __init__(self, line, fds):
        words = line.split(" ")
        self.key = words[0]
        self.state = "found"
        if len(words) == 2:
            self.state = words[1]
            assert self.state in ("missing", "again"), line
            return
        assert len(words) == 6, f"malformed answer line {line!r}"
        self.fd = fds[int(words[1])]
        self.offset, self.length, self.size = int(words[2]), int(words[3]), int(words[4])
        self.codec = words[5]

    def read(self):
        import zlib

        stored = os.pread(self.fd, self.length, self.offset)
        assert len(stored) == self.length, f"{self.key}: short read"
        if self.codec == "zlib":
            return zlib.decompress(stored)
        assert self.codec == "none", self.codec
        return stored


class FastPath:
    """One PSFD1 connection."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""
        self.fds = []
        self.held = []

    def close(self):
        for fd in self.fds + self.held:
            os.close(fd)
        self.fds, self.held = [], []
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, line, fds=()):
        data = line.encode() if isinstance(line, str) else line
        if fds:
            sent = socket.send_fds(self.sock, [data], list(fds))
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def fill(self):
        data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 256)
        self.fds += fds
        if not data:
            raise EOFError("the daemon closed the connection")
        self.buffer += data

    def readline_bytes(self):
        while b"\n" not in self.buffer:
            self.fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def readline(self):
        return self.readline_bytes().decode("utf-8", "replace")

    def at_eof(self):
        try:
            self.fill()
        except (EOFError, ConnectionResetError):
            return True
        return False

    def locate(self, keys):
        """(first line, [Located] in request order, or None after an ERR)."""
        self.send("PSFD1 LOCATE " + " ".join(keys) + "\n")
        first = self.readline()
        if not first.startswith("OK "):
            return first, None
        count = int(first.split(" ")[1])
        lines = [self.readline() for _ in keys]
        fds, self.fds = self.fds[:count], self.fds[count:]
        self.held += fds
        return first, [Located(line, fds) for line in lines]

    def put_fd(self, fd, mode="default", compression="default"):
        self.send(f"PSFD1 PUT {mode} {compression}\n", [fd])
        return self.readline()

    def put_bytes(self, data, mode="default", compression="default"):
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            return self.put_fd(f.fileno(), mode, compression)


def sha256(data):
    return hashlib.sha256(data).hexdigest()
