"""A minimal PSFD1 client (docs/protocol.md, "The local fast path"), written
from the protocol's page so that the tests do not trust packstore's own
clients: raw socket, SCM_RIGHTS both ways, every answer checked against the
rules. Shared by tests/daemon/test_fast_path.py and tests/reliability.
"""

import os
import socket
import tempfile
import zlib


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
        self.index = int(words[1])
        assert 0 <= self.index < len(fds), f"{line!r}: descriptor {self.index} of {len(fds)}"
        self.fd = fds[self.index]
        self.offset, self.length, self.size = int(words[2]), int(words[3]), int(words[4])
        self.codec = words[5]
        assert self.codec in ("none", "zlib", "zstd"), line
        if self.codec == "none":
            assert self.length == self.size, line

    def read(self):
        """The object's content, read the way the protocol says."""
        stored = os.pread(self.fd, self.length, self.offset)
        assert len(stored) == self.length, f"{self.key}: short read"
        if self.codec == "zlib":
            return zlib.decompress(stored)
        assert self.codec == "none", "zstd is not used by these tests"
        return stored


class FastPath:
    """One PSFD1 connection."""

    def __init__(self, path, timeout=30.0, connect=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if connect:
            self.sock.connect(str(path))
        self.buffer = b""
        self.fds = []
        self.held = []  # descriptors of answers, closed with the client

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
        """The next line, without its newline, as the daemon sent it."""
        while b"\n" not in self.buffer:
            self.fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def readline(self):
        return self.readline_bytes().decode()

    def at_eof(self):
        """True when the daemon has closed the connection (after what was sent)."""
        try:
            self.fill()
        except (EOFError, ConnectionResetError):
            return True
        return False

    def locate(self, keys):
        """(first line, {key: Located} in order as a list); the answer's descriptors
        are held until close()."""
        self.send("PSFD1 LOCATE " + " ".join(keys) + "\n")
        first = self.readline()
        if not first.startswith("OK "):
            return first, None
        count = int(first.split(" ")[1])
        lines = [self.readline() for _ in keys]
        assert len(self.fds) >= count, f"{first}: only {len(self.fds)} descriptors arrived"
        fds, self.fds = self.fds[:count], self.fds[count:]
        assert not self.fds, "descriptors beyond the count the answer gave"
        self.held += fds
        entries = [Located(line, fds) for line in lines]
        assert [entry.key for entry in entries] == list(keys), "answer lines out of order"
        assert {entry.index for entry in entries if entry.state == "found"} == set(range(count)), (
            "descriptors attached that no line uses, or lines that use missing ones")
        return first, entries

    def put_fd(self, fd, mode="default", compression="default"):
        self.send(f"PSFD1 PUT {mode} {compression}\n", [fd])
        return self.readline()

    def put_bytes(self, data, mode="default", compression="default"):
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            return self.put_fd(f.fileno(), mode, compression)
