"""The local fast path (docs/protocol.md, "The local fast path (PSFD1)").

Besides gRPC, packstored's socket answers "where is this object" with open,
read-only file descriptors (SCM_RIGHTS) instead of bytes, and stores a file
whose descriptor it is handed instead of its bytes. Client uses this module
on its own: reads then go from the page cache with os.pread, and put_file()
of a regular file sends no bytes at all.

One FastPath per Client holds one plain AF_UNIX connection to the daemon
for LOCATE requests, opened on first use, next to the Client's gRPC
channel (and a second one for PUT, so that reads never wait behind an
upload); the requests of a connection go one after the other under its
lock, so a FastPath may be shared between threads. The descriptors an
answer brings belong to the caller (a Located closes them), and stay valid
however long they are kept: packs are never rewritten in place, and
deleted or repacked files only lose their names.

When the fast path cannot be used, its methods raise Unusable and the
caller goes through gRPC instead: no daemon on the socket, the daemon
answering ERR UNAVAILABLE (turned off with --fast-path false, or shutting
down), a daemon that does not speak the protocol, or any answer that breaks
it. The FastPath remembers this: for good after a broken answer, for
RETRY_AFTER seconds otherwise. Errors of the daemon that are not about
availability (a malformed key, permissions, limits) are raised as the
package's exceptions, with the daemon's message.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import math
import os
import re
import socket
import stat
import tempfile
import threading
import time
import typing
import zlib

import grpc

from .errors import _OTHER_SCHEMES, DataLoss, DeadlineExceeded, error_from_code

__all__ = [
    "FastPath",
    "Location",
    "Located",
    "Unusable",
    "unix_socket_path",
    "can_decode",
    "file_descriptor_to_put",
]

_log = logging.getLogger("packstore.fastpath")

KiB = 1024
MiB = 1024 * KiB

# The protocol's limits: keys per LOCATE, descriptors per answer.
MAX_KEYS = 10_000
MAX_FDS = 250
# How long a connection that has answered nothing yet may keep a LOCATE
# waiting before it counts as not speaking the protocol.
PROBE_TIMEOUT = 10.0
# After the fast path turned out unavailable (no daemon, ERR UNAVAILABLE),
# how long gRPC is used before it is tried again.
RETRY_AFTER = 30.0
# Bytes asked of each recvmsg: small for the first (most answers are one
# key's), larger for the rest of a long answer.
_FIRST_RECV = 64 * KiB
_NEXT_RECV = 256 * KiB
# The longest first line (an ERR's message is meant for a person), and
# more than any line about one key can take.
_MAX_FIRST_LINE = 64 * KiB
_MAX_LINE = 512
# Chunks read and decoded at a time.
_READ_CHUNK = 1 * MiB
_DECODE_CHUNK = 4 * MiB
# get_many: small objects close to each other in one file are read with
# one pread of at most _SPAN_MAX bytes, across gaps of at most _SPAN_GAP.
_SPAN_OBJECT_MAX = 1 * MiB
_SPAN_MAX = 4 * MiB
_SPAN_GAP = 64 * KiB
# os.pread reads at most this much in one call (Linux caps a read there).
_PREAD_MAX = 0x7FFFF000

_HEX = frozenset(b"0123456789abcdef")
_CODECS = frozenset(("none", "zlib", "zstd"))
# The lines of a LOCATE answer, each the key and then where its stored
# bytes are (descriptor, offset, length, size, codec), or "missing", or
# "again". A match is always one whole line.
_ANSWER_LINE = re.compile(
    r"^(\S{1,128}) (?:(\d{1,20}) (\d{1,20}) (\d{1,20}) (\d{1,20}) ([a-z0-9]{1,32})"
    r"|(missing|again))$", re.MULTILINE | re.ASCII)


class Unusable(Exception):
    """The fast path cannot serve this call: use gRPC instead."""


class _ProtocolError(Exception):
    """The daemon's answer broke the protocol."""


class _Lost(Exception):
    """The connection closed before any byte of the answer came."""


class _DescriptorsLost(Exception):
    """Descriptors of an answer were dropped on the way in (this process
    has too many open)."""


class _Corrupt(Exception):
    """The stored bytes of an object are not what the answer said."""


def unix_socket_path(target):
    """The filesystem path of a Client's socket (a path, ``unix:path`` or
    ``unix:///path``), or None for a target that is not a Unix socket path
    (another gRPC scheme: a remote daemon)."""
    if target.startswith("unix://"):
        return target[len("unix://"):] or None
    if target.startswith("unix:"):
        return target[len("unix:"):] or None
    if _has_other_scheme(target):
        return None
    return target or None


def _has_other_scheme(target):
    return target.startswith(_OTHER_SCHEMES)


def _zstd_reader():
    """A function making a file-like zstd decoder over a raw reader, from
    whichever zstd module is installed; None without one."""
    try:  # Python 3.14
        from compression import zstd
        return lambda raw: zstd.ZstdFile(raw, mode="rb")
    except ImportError:
        pass
    try:  # python3-zstandard
        import zstandard
        return lambda raw: zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
    except ImportError:
        pass
    try:
        import pyzstd
        return lambda raw: pyzstd.ZstdFile(raw, mode="rb")
    except ImportError:
        return None


_ZSTD_READER = _zstd_reader()


def can_decode(codec):
    """Whether this process can read objects stored with ``codec``."""
    return codec in ("none", "zlib") or (codec == "zstd" and _ZSTD_READER is not None)


def file_descriptor_to_put(file):
    """The descriptor of ``file`` if the daemon can store it whole through
    the fast path: a plain binary file (io.FileIO, or a buffered reader over
    one) on a regular file open for reading, at position 0 (the daemon reads
    from offset 0 to the end); else None. File objects that transform what
    they read (gzip.GzipFile, whose fileno() is the compressed file...) are
    not plain files."""
    plain = file
    if isinstance(plain, _TEMPORARY_FILE_WRAPPER):
        plain = plain.file
    if isinstance(plain, (io.BufferedReader, io.BufferedRandom)):
        if not isinstance(plain.raw, io.FileIO):
            return None
    elif not isinstance(plain, io.FileIO):
        return None
    try:
        fd = plain.fileno()
        if plain.tell() != 0:
            return None
        if plain.writable():
            plain.flush()  # what the file object holds back is part of the file
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except (OSError, ValueError):
        return None
    if access not in (os.O_RDONLY, os.O_RDWR):
        return None
    return fd


# NamedTemporaryFile's object, which wraps a plain file.
_TEMPORARY_FILE_WRAPPER = getattr(tempfile, "_TemporaryFileWrapper", ())


class Location(typing.NamedTuple):
    """Where one object's stored bytes are: ``[offset, offset + length)``
    of the open file ``fd``, the answer's descriptor number ``descriptor``;
    ``size`` is the object's uncompressed size, ``codec`` "none", "zlib" or
    "zstd"."""

    key: str
    fd: int
    descriptor: int
    offset: int
    length: int
    size: int
    codec: str


class Located:
    """One LOCATE answer: ``found`` (key -> Location, in request order),
    ``missing`` and ``again`` (keys), and the descriptors it brought, which
    close() closes (all but those handed over with keep()). A context
    manager; closes them when collected, too."""

    def __init__(self, fds, found, missing, again):
        self._fds = list(fds)
        self.found = found
        self.missing = missing
        self.again = again

    def keep(self, fd):
        """Hands ``fd`` over to the caller, who closes it; returns it."""
        self._fds.remove(fd)
        return fd

    def close(self):
        fds, self._fds = self._fds, []
        _close_all(fds)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Connection:
    """One connection to the daemon, opened on first use, and the lock that
    has its requests go one after the other."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sock = None
        self.pid = None
        self.fresh = False  # it has answered nothing yet

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class FastPath:
    """The fast path of one Client: ``path`` is the daemon's socket,
    ``label`` what errors name as the socket (the Client's).

    LOCATE requests go on one connection; PUT requests on a second one,
    opened when first needed, so that reads never wait behind an upload."""

    def __init__(self, path, label=None):
        self.path = path
        self.label = label if label is not None else path
        self._reads = _Connection()
        self._puts = _Connection()
        self._off_until = 0.0  # monotonic time before which it is not tried
        self._closed = False

    # -- state --------------------------------------------------------------------

    def usable(self):
        """Whether calls should try the fast path now (no I/O)."""
        return not self._closed and time.monotonic() >= self._off_until

    def close(self):
        """Closes the connections. A request running in another thread is
        cut short (it then fails as if the daemon had gone) rather than
        waited for."""
        self._closed = True
        for connection in (self._reads, self._puts):
            if connection.lock.acquire(blocking=False):
                try:
                    connection.close()
                finally:
                    connection.lock.release()
            else:
                sock = connection.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def _turn_off(self, why, for_good, connection=None):
        """Remembers that the fast path is unavailable (closing
        ``connection``, whose lock the caller holds); the Unusable to raise."""
        self._off_until = math.inf if for_good else time.monotonic() + RETRY_AFTER
        if connection is not None:
            connection.close()
        _log.debug("packstore fast path on %s not used%s: %s", self.label,
                   "" if for_good else f" for {RETRY_AFTER:.0f} s", why)
        return Unusable(why)

    def _connect(self, connection):
        """The connection's socket, opened if needed; whether it is new."""
        if connection.sock is not None and connection.pid != os.getpid():
            # Inherited through fork(): the parent's connection, not ours
            # (closing this copy leaves the parent's open).
            connection.close()
        if connection.sock is not None:
            return connection.sock, connection.fresh
        if self._closed:
            raise Unusable("the client is closed")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as error:
            sock.close()
            # No daemon (yet), no permission on the socket, a path too long:
            # gRPC meets the same and says so.
            raise self._turn_off(f"connect: {error}", for_good=False) from None
        connection.sock, connection.pid, connection.fresh = sock, os.getpid(), True
        return sock, True

    # -- requests -----------------------------------------------------------------

    def _request(self, connection, line, fd, lines_after_ok, deadline, method, probe):
        """Sends one request line (with ``fd`` attached unless None) on
        ``connection`` and reads its answer: (the first line's words after
        OK, the bytes of the lines that follow it, the descriptors that
        came). Raises Unusable, DeadlineExceeded or the daemon's error."""
        with connection.lock:
            if not self.usable():
                raise Unusable("unavailable")
            for attempt in range(2):
                sock, fresh = self._connect(connection)
                try:
                    return self._exchange(connection, sock, fresh, line, fd, lines_after_ok,
                                          deadline, method, probe)
                except _Lost:
                    connection.close()
                    if fresh or attempt:
                        raise self._turn_off("the daemon closed the connection without an answer",
                                             for_good=False) from None
                    # A connection kept from earlier calls that the daemon
                    # has closed since (a restart): once more on a new one.
                except _ProtocolError as error:
                    raise self._turn_off(f"unexpected answer: {error}", for_good=True,
                                         connection=connection) from None
            raise AssertionError("unreachable")

    def _exchange(self, connection, sock, fresh, line, fd, lines_after_ok, deadline, method,
                  probe):
        remaining = deadline.remaining()
        timeout = remaining
        if fresh and probe:
            timeout = PROBE_TIMEOUT if remaining is None else min(remaining, PROBE_TIMEOUT)
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("Deadline Exceeded", method=method, socket=self.label)
        fds = []
        try:
            sock.settimeout(timeout)
            # A daemon that refuses the connection answers and closes it
            # without reading: the request may not go out, but the answer is
            # there to read.
            sent = self._send(sock, line, fd)
            try:
                words, body = self._receive(sock, lines_after_ok, fds)
            except ConnectionResetError:
                raise _Lost() from None
            if not sent and words[0] != "ERR":
                raise _ProtocolError("an answer to a request that did not arrive")
        except socket.timeout:
            _close_all(fds)
            connection.close()
            if deadline.remaining() == 0:
                raise DeadlineExceeded("Deadline Exceeded", method=method,
                                       socket=self.label) from None
            raise self._turn_off("no answer", for_good=False) from None
        except (_Lost, _ProtocolError):
            _close_all(fds)
            raise
        except _DescriptorsLost:
            # Most likely this process is out of descriptors: gRPC for this
            # call; the next one tries again.
            _close_all(fds)
            connection.close()
            raise Unusable("descriptors of the answer were dropped") from None
        except OSError as error:
            _close_all(fds)
            raise self._turn_off(f"{error}", for_good=False, connection=connection) from None
        except BaseException:
            _close_all(fds)
            connection.close()
            raise
        connection.fresh = False
        if words[0] != "ERR":
            return words[1:], body, fds
        _close_all(fds)
        code, message = words[1], words[2]
        if code == "UNAVAILABLE":
            # Turned off, or the daemon is shutting down.
            raise self._turn_off(f"ERR UNAVAILABLE {message}", for_good=False,
                                 connection=connection)
        status = getattr(grpc.StatusCode, code, None)
        if not isinstance(status, grpc.StatusCode) or status == grpc.StatusCode.OK:
            raise self._turn_off(f"ERR with an unknown code {code!r}", for_good=True,
                                 connection=connection)
        if status == grpc.StatusCode.RESOURCE_EXHAUSTED and fresh:
            # The first answer on a connection: the daemon may be refusing
            # the connection itself (too many open), which gRPC is not
            # subject to. gRPC answers this call, and has the last word on a
            # limit the request itself passed.
            connection.close()
            raise Unusable(f"ERR {code} {message}")
        if not sent:
            connection.close()
        # The daemon may close the connection after an ERR: a next request
        # that finds it closed opens another.
        raise error_from_code(status, message, method=method, socket=self.label)

    @staticmethod
    def _send(sock, line, fd):
        """Sends a request; False if the daemon had closed the connection."""
        try:
            if fd is None:
                sock.sendall(line, socket.MSG_NOSIGNAL)
                return True
            sent = socket.send_fds(sock, [line], [fd], socket.MSG_NOSIGNAL)
            if sent < len(line):
                sock.sendall(line[sent:], socket.MSG_NOSIGNAL)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    @staticmethod
    def _receive(sock, lines_after_ok, fds):
        """Reads one answer. ``lines_after_ok``: how many lines follow an OK
        line. (the first line's words, the bytes of the lines after it); the
        descriptors that came are appended to ``fds``."""
        buffer = bytearray()
        newlines = 0
        expected = None  # lines in the whole answer, once the first is read
        words = None
        size = _FIRST_RECV
        while True:
            data, got, flags, _ = socket.recv_fds(sock, size, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
            fds.extend(got)
            if flags & socket.MSG_CTRUNC:
                raise _DescriptorsLost()
            if not data:
                if not buffer:
                    raise _Lost()
                raise _ProtocolError("the connection closed in the middle of an answer")
            buffer += data
            newlines += data.count(b"\n")
            size = _NEXT_RECV
            if len(buffer) > _MAX_FIRST_LINE + _MAX_LINE * lines_after_ok:
                raise _ProtocolError(f"an answer of more than {len(buffer)} bytes")
            if words is None:
                if not (buffer[:3] == b"OK "[:len(buffer)] or buffer[:4] == b"ERR "[:len(buffer)]):
                    raise _ProtocolError(f"{bytes(buffer[:16])!r}...")
                if not newlines:
                    if len(buffer) > _MAX_FIRST_LINE:
                        raise _ProtocolError("a first line without an end")
                    continue
                end = buffer.index(b"\n")
                words = _first_line(bytes(buffer[:end]))
                expected = 1 if words[0] == "ERR" else 1 + lines_after_ok
                if words[0] == "OK" and lines_after_ok:
                    # A LOCATE: its descriptors came with its first line.
                    if len(words) != 2 or not _is_count(words[1]) or int(words[1]) != len(fds):
                        raise _ProtocolError(f"{' '.join(words)[:80]} with {len(fds)} "
                                             "descriptors attached")
            if newlines >= expected:
                if newlines > expected or buffer[-1:] != b"\n":
                    raise _ProtocolError("more than one answer to one request")
                break
        return words, bytes(buffer[buffer.index(b"\n") + 1:])

    # -- LOCATE -------------------------------------------------------------------

    def locate(self, keys, deadline, method):
        """One LOCATE of up to MAX_KEYS distinct ``keys`` (str, well-formed):
        a Located. Keys the daemon did not answer (``again``) are in its
        ``again``, to ask in another request; at least one key is answered."""
        if not keys or len(keys) > MAX_KEYS:
            raise ValueError(f"LOCATE takes 1 to {MAX_KEYS} keys, not {len(keys)}")
        line = ("PSFD1 LOCATE " + " ".join(keys) + "\n").encode("ascii")
        words, body, fds = self._request(self._reads, line, None, len(keys), deadline, method,
                                         probe=True)
        try:
            return self._located(keys, words, body, fds)
        except _ProtocolError as error:
            _close_all(fds)
            with self._reads.lock:
                raise self._turn_off(f"unexpected answer to LOCATE: {error}", for_good=True,
                                     connection=self._reads) from None

    @staticmethod
    def _located(keys, words, body, fds):
        if len(words) != 1 or not _is_count(words[0]):
            raise _ProtocolError(f"OK {' '.join(words)}")
        count = int(words[0])
        if count != len(fds):
            raise _ProtocolError(f"OK {count} with {len(fds)} descriptors")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise _ProtocolError("an answer that is not ASCII") from None
        found = _all_found(keys, text, fds)
        if found is not None:
            return Located(fds, found, [], [])
        rows = _ANSWER_LINE.findall(text)
        if len(rows) != len(keys):  # each match is one whole line: some did not match
            raise _ProtocolError("lines that are not the protocol's")
        found, missing, again = {}, [], []
        for key, (answered, index, offset, length, size, codec, word) in zip(keys, rows):
            if answered != key:
                raise _ProtocolError(f"an answer for {answered[:80]!r} in place of {key}")
            if index:
                number = int(index)
                if number >= count:
                    raise _ProtocolError(f"descriptor {number} of {count}")
                location = Location(key, fds[number], number, int(offset), int(length),
                                    int(size), codec)
                if codec == "none" and location.length != location.size:
                    raise _ProtocolError(f"{key}: {length} stored bytes for {size}")
                found[key] = location
            elif word == "missing":
                missing.append(key)
            else:
                again.append(key)
        if len(again) == len(keys):
            raise _ProtocolError("every key answered 'again'")
        return Located(fds, found, missing, again)

    # -- PUT ----------------------------------------------------------------------

    def put(self, fd, mode, compression, deadline, method):
        """Stores the regular file open on ``fd`` (read by the daemon from
        offset 0 to its end); (key, size). ``mode``: default, auto, loose or
        packed; ``compression``: default, no, yes or auto."""
        line = f"PSFD1 PUT {mode} {compression}\n".encode("ascii")
        words, _, fds = self._request(self._puts, line, fd, 0, deadline, method, probe=False)
        _close_all(fds)
        if (len(words) != 2 or not _is_key(words[0].encode("ascii", "replace"))
                or not _is_count(words[1])):
            with self._puts.lock:
                raise self._turn_off(f"unexpected answer to PUT: OK {' '.join(words)}",
                                     for_good=True, connection=self._puts)
        return words[0], int(words[1])

    # -- reading ------------------------------------------------------------------

    def read(self, location, start, end, method, verify=False):
        """Bytes ``[start, end)`` of the uncompressed content at
        ``location`` (0 <= start <= end <= size). With ``verify`` (the whole
        object only) the content is hashed and must match the key. Raises
        DataLoss for stored bytes that are short or do not decode."""
        try:
            if location.codec == "none":
                data = _pread_exactly(location.fd, end - start, location.offset + start,
                                      location.key)
            else:
                data = _decode(location, start, end)
        except _Corrupt as error:
            raise DataLoss(f"{error}: run Validate", method=method, socket=self.label) from None
        except OSError as error:
            raise self._os_error(location, error, method) from None
        if verify and _digest(location.key, data) != location.key:
            raise DataLoss(f"the stored bytes of {location.key} do not hash to its key: "
                           "discard what was received and run Validate",
                           method=method, socket=self.label)
        return data

    def read_whole(self, locations, method):
        """(location, content) for each of ``locations`` (objects this
        process can decode), in their order. Neighbouring small objects of
        one file are read together, with one pread. Raises as read() does."""
        count, i = len(locations), 0
        while i < count:
            first = locations[i]
            j, end = i + 1, first.offset + first.length
            if first.size <= _SPAN_OBJECT_MAX and first.codec != "zstd":
                while j < count:
                    after = locations[j]
                    if (after.fd != first.fd or after.codec == "zstd"
                            or after.size > _SPAN_OBJECT_MAX or after.offset < end
                            or after.offset - end > _SPAN_GAP
                            or after.offset + after.length - first.offset > _SPAN_MAX):
                        break
                    end = after.offset + after.length
                    j += 1
            run = locations[i:j]
            i = j
            if len(run) == 1:
                yield first, self.read(first, 0, first.size, method)
                continue
            try:
                span = memoryview(_pread_exactly(first.fd, end - first.offset, first.offset,
                                                 first.key))
            except _Corrupt:  # cut short: each object alone says which is
                for location in run:
                    yield location, self.read(location, 0, location.size, method)
                continue
            except OSError as error:
                raise self._os_error(first, error, method) from None
            for location in run:
                start = location.offset - first.offset
                stored = span[start:start + location.length]
                if location.codec == "none":
                    yield location, bytes(stored)
                    continue
                try:
                    yield location, _inflate(location, stored)
                except _Corrupt as error:
                    raise DataLoss(f"{error}: run Validate", method=method,
                                   socket=self.label) from None

    def _os_error(self, location, error, method):
        return error_from_code(_status_of_errno(error.errno),
                               f"pread of {location.key}: {error.strerror}",
                               method=method, socket=self.label)


def _inflate(location, stored):
    """The content of a small zlib-compressed object from its stored bytes."""
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(stored, location.size + 1)
    except zlib.error as error:
        raise _Corrupt(f"the stored bytes of {location.key} do not decode ({error})") from None
    if len(data) > location.size:
        raise _Corrupt(f"object {location.key} decodes to more than {location.size} bytes")
    if not inflate.eof:
        raise _Corrupt(f"the stored bytes of {location.key} do not decode "
                       "(its zlib stream ends early)")
    if inflate.unused_data:
        raise _Corrupt(f"the stored bytes of {location.key} do not decode "
                       "(its stored bytes go on past the end of the zlib stream)")
    if len(data) != location.size:
        raise _Corrupt(f"object {location.key} decodes to {len(data)} bytes, "
                       f"not {location.size}")
    return data


def _all_found(keys, text, fds):
    """The Locations of a LOCATE answer (``text``, one line per key) that
    found every key, read a column at a time: a bulk read's answer has
    10,000 lines, which _located's line-by-line reading takes several times
    longer over. None for any other answer (a key missing or to ask again,
    an unknown codec, or lines that are not the protocol's), which the
    line-by-line reading then judges."""
    count = len(keys)
    words = text.split()
    if len(words) != 6 * count or text.count(" ") != 5 * count or words[0::6] != keys:
        return None
    codecs = words[5::6]
    numbers = words[1::6] + words[2::6] + words[3::6] + words[4::6]
    if not set(codecs) <= _CODECS or not "".join(numbers).isdigit():
        return None
    numbers = list(map(int, numbers))
    indexes, offsets = numbers[:count], numbers[count:2 * count]
    lengths, sizes = numbers[2 * count:3 * count], numbers[3 * count:]
    if max(indexes) >= len(fds):
        return None
    if codecs.count("none") == count:
        if lengths != sizes:
            return None
    elif any(codec == "none" and length != size
             for codec, length, size in zip(codecs, lengths, sizes)):
        return None
    return dict(zip(keys, map(Location._make, zip(
        keys, map(fds.__getitem__, indexes), indexes, offsets, lengths, sizes, codecs))))


def _first_line(line):
    """The words of a first line: ["OK", ...] or ["ERR", code, message]."""
    text = line.decode("utf-8", "replace")
    if text.startswith("ERR "):
        parts = text.split(" ", 2)
        if len(parts) < 2 or not parts[1]:
            raise _ProtocolError(f"{text[:200]!r}")
        return ["ERR", parts[1], parts[2] if len(parts) > 2 else ""]
    if not text.startswith("OK "):
        raise _ProtocolError(f"{text[:200]!r}")
    return text.split(" ")


def _is_count(field):
    return 0 < len(field) <= 20 and field.isdigit() and field.isascii()


def _is_key(field):
    return len(field) in (40, 64) and _HEX.issuperset(field)


def _status_of_errno(number):
    if number in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if number in (errno.EACCES, errno.EPERM):
        return grpc.StatusCode.PERMISSION_DENIED
    if number in (errno.EINTR, errno.EAGAIN, errno.EBUSY):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _digest(key, data):
    return (hashlib.sha1 if len(key) == 40 else hashlib.sha256)(data).hexdigest()


def _pread_exactly(fd, length, offset, key):
    if length <= 0:
        return b""
    data = os.pread(fd, min(length, _PREAD_MAX), offset)
    if len(data) == length:
        return data
    parts, got = [data], len(data)
    while got < length:
        piece = os.pread(fd, min(length - got, _PREAD_MAX), offset + got)
        if not piece:
            raise _Corrupt(f"object {key} ended {length - got} bytes early")
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


class _StoredBytes(io.RawIOBase):
    """The stored bytes of one object as a raw, read-only stream over its
    descriptor (pread: the descriptor's offset is never moved)."""

    def __init__(self, location):
        super().__init__()
        self._fd = location.fd
        self._position = location.offset
        self._end = location.offset + location.length
        self._key = location.key

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self._end - self._position)
        if count <= 0:
            return 0
        data = os.pread(self._fd, min(count, _PREAD_MAX), self._position)
        if not data:
            raise _Corrupt(f"object {self._key} ended "
                           f"{self._end - self._position} bytes early")
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)

    def read_chunk(self):
        """The next stored bytes, up to _READ_CHUNK; b"" at the end."""
        count = min(_READ_CHUNK, self._end - self._position)
        if count <= 0:
            return b""
        data = _pread_exactly(self._fd, count, self._position, self._key)
        self._position += count
        return data


class _ZlibReader:
    """Decodes a zlib stream from a _StoredBytes, at most ``n`` bytes a
    read (bounded memory whatever the stored bytes say)."""

    def __init__(self, raw):
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._tail = b""

    def read(self, n):
        while True:
            if self._inflate.eof:
                if self._inflate.unused_data or self._tail or self._raw.read_chunk():
                    raise _Corrupt("its stored bytes go on past the end of the zlib stream")
                return b""
            data = self._tail or self._raw.read_chunk()
            out = self._inflate.decompress(data, n)
            self._tail = self._inflate.unconsumed_tail
            if out:
                return out
            if not data:
                raise _Corrupt("its zlib stream ends early")

    def close(self):
        pass


def _decode(location, start, end):
    """Bytes [start, end) of a compressed object, decoded from its start."""
    raw = _StoredBytes(location)
    whole = start == 0 and end == location.size
    try:
        if location.codec == "zlib":
            reader = _ZlibReader(raw)
        elif location.codec == "zstd" and _ZSTD_READER is not None:
            reader = _ZSTD_READER(raw)
        else:
            raise ValueError(f"cannot decode codec {location.codec!r}")
        try:
            position, parts = 0, []
            while position < end:
                want = min(end - position, _DECODE_CHUNK)
                if position < start:
                    want = min(want, start - position)
                piece = reader.read(want)
                if not piece:
                    raise _Corrupt(f"object {location.key} decodes to {position} bytes, "
                                   f"not {location.size}")
                if len(piece) > want:
                    raise _Corrupt(f"object {location.key} decodes past what was asked")
                if position >= start:
                    parts.append(piece)
                position += len(piece)
            if whole and reader.read(1):
                raise _Corrupt(f"object {location.key} decodes to more than {location.size} bytes")
        finally:
            reader.close()
    except _Corrupt as error:
        message = str(error)
        if not message.startswith("object "):
            message = f"the stored bytes of {location.key} do not decode ({message})"
        raise _Corrupt(message) from None
    except (zlib.error, EOFError) as error:
        raise _Corrupt(f"the stored bytes of {location.key} do not decode ({error})") from None
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - a zstd module's own error type
        if location.codec != "zstd":
            raise
        raise _Corrupt(f"the stored bytes of {location.key} do not decode ({error})") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)
