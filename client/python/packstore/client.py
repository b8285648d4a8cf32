"""packstore.Client: the calls of packstore.v1.ObjectStore as Python methods.

One Client holds one gRPC channel (one connection) to the daemon's Unix
socket. It is safe to share between threads; after os.fork(), make a new
one in the child.

Errors are exceptions from packstore.errors, never grpc.RpcError. Reads and
puts are retried on UNAVAILABLE (the daemon restarting) a few times with
backoff: keys are the content's SHA-256, so storing the same bytes twice
stores one object, and reads change nothing. Maintenance calls and delete
are never retried.

Reads (get, get_many, open) and put_file of a regular file go through the
daemon's local fast path when it offers it (fastpath.py: file descriptors
instead of bytes on a second connection to the same socket), and through
gRPC otherwise, with the same results.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import operator
import os
import threading
import time

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from . import fastpath
from .errors import _OTHER_SCHEMES, DeadlineExceeded, NotFound, PackstoreError, error_from_rpc
from .objectfile import ObjectFile
from .v1 import packstore_pb2 as pb
from .v1 import packstore_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "PutMode",
    "Compression",
    "ObjectInfo",
    "Progress",
    "PackResult",
    "RepackResult",
    "CleanResult",
    "ValidateIssue",
    "ValidateResult",
    "DEFAULT_SOCKET",
]

DEFAULT_SOCKET = "/run/packstore/packstore.sock"

KiB = 1024
MiB = 1024 * KiB

# PutStream chunk and the size above which put() streams instead of Put.
CHUNK_SIZE = 1 * MiB
PUT_MESSAGE_MAX = 4 * MiB
# put_many: objects up to SMALL_OBJECT_MAX go in PutMany messages of at most
# BATCH_BYTES and BATCH_OBJECTS; larger ones are put one by one.
SMALL_OBJECT_MAX = 1 * MiB
BATCH_BYTES = 2 * MiB
BATCH_OBJECTS = 10_000
# Keys per Stat, Has, GetMany or Delete request (docs/protocol.md: keep
# answers under gRPC's 4 MiB receive limit), and per fast-path LOCATE.
KEYS_PER_CALL = 10_000
# open(): the read-ahead buffer over gRPC ranges, and over a descriptor.
OPEN_BUFFER = 256 * KiB
OPEN_BUFFER_DESCRIPTOR = 64 * KiB

# Only keys that can be a store's (SHA-256 or SHA-1, lowercase hex) go
# through the fast path; any other string goes to gRPC, whose answer says
# what is wrong with it.
_HEX_DIGITS = b"0123456789abcdef"
# The words of PSFD1 PUT for each PutMode and Compression.
_FAST_MODES = {pb.PUT_MODE_UNSPECIFIED: "default", pb.PUT_MODE_AUTO: "auto",
               pb.PUT_MODE_LOOSE: "loose", pb.PUT_MODE_PACKED: "packed"}
_FAST_COMPRESSIONS = {pb.COMPRESSION_UNSPECIFIED: "default", pb.COMPRESSION_NO: "no",
                      pb.COMPRESSION_YES: "yes", pb.COMPRESSION_AUTO: "auto"}
# get_many through the fast path reads in this order (storage order).
_STORAGE_ORDER = operator.attrgetter("descriptor", "offset")

_CHANNEL_OPTIONS = [
    # Answers are bounded by the batch sizes above; leave headroom anyway.
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 16 * MiB),
    # Reconnect quickly after the daemon restarts, so that a retry reaches
    # the new one instead of failing during gRPC's own (1 s and more)
    # reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class PutMode(enum.IntEnum):
    """Where a new object goes (packstore.v1.PutMode)."""

    UNSPECIFIED = pb.PUT_MODE_UNSPECIFIED  # the daemon's --default-mode
    AUTO = pb.PUT_MODE_AUTO  # small objects packed, large ones loose
    LOOSE = pb.PUT_MODE_LOOSE  # one file per object
    PACKED = pb.PUT_MODE_PACKED  # straight into a pack


class Compression(enum.IntEnum):
    """How objects written to packs are stored (packstore.v1.Compression)."""

    UNSPECIFIED = pb.COMPRESSION_UNSPECIFIED  # none; repack: keep as stored
    NO = pb.COMPRESSION_NO
    YES = pb.COMPRESSION_YES
    AUTO = pb.COMPRESSION_AUTO  # when a sample compresses well


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its size (uncompressed) and where it is stored."""

    key: str
    size: int
    packed: bool
    compressed: bool
    stored_size: int  # bytes it takes in its pack; 0 when loose

    @classmethod
    def from_proto(cls, info):
        return cls(info.key, info.size, info.packed, info.compressed, info.stored_size)


@dataclasses.dataclass(frozen=True)
class Progress:
    """Progress of a maintenance operation: ``done`` of ``total`` units of
    ``phase`` (``total`` 0: unknown)."""

    phase: str
    done: int
    total: int


@dataclasses.dataclass(frozen=True)
class PackResult:
    packed: int
    already_packed: int
    bytes: int
    loose_deleted: int
    corrupt: list  # keys of loose objects whose content is not their key


@dataclasses.dataclass(frozen=True)
class RepackResult:
    packs_rewritten: int
    packs_removed: int
    objects_moved: int
    bytes_reclaimed: int


@dataclasses.dataclass(frozen=True)
class CleanResult:
    loose_deleted: int
    sandbox_deleted: int
    duplicates_resolved: int


@dataclasses.dataclass(frozen=True)
class ValidateIssue:
    """One problem validate() found: ``kind`` (corrupt_loose, corrupt_packed,
    size_mismatch, overlap, past_end_of_pack, missing_pack, orphan_pack,
    stray_file, corrupt_index), ``subject`` (the key or path) and ``detail``."""

    kind: str
    subject: str
    detail: str


@dataclasses.dataclass(frozen=True)
class ValidateResult:
    loose_checked: int
    packed_checked: int
    issues: list  # of ValidateIssue, in the order the daemon reported them

    @property
    def ok(self):
        """True when no issue was found."""
        return not self.issues


def _mode_value(mode):
    if mode is None:
        return pb.PUT_MODE_UNSPECIFIED
    if isinstance(mode, str):
        try:
            return PutMode[mode.upper()].value
        except KeyError:
            raise ValueError(f"unknown put mode {mode!r}: use auto, loose or packed") from None
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be a PutMode, a name or None, not {mode!r}")
    return int(mode)  # the daemon rejects values it does not know


def _compression_value(compression):
    if compression is None:
        return pb.COMPRESSION_UNSPECIFIED
    if isinstance(compression, bool):
        return pb.COMPRESSION_YES if compression else pb.COMPRESSION_NO
    if isinstance(compression, str):
        try:
            return Compression[compression.upper()].value
        except KeyError:
            raise ValueError(
                f"unknown compression {compression!r}: use no, yes or auto") from None
    if not isinstance(compression, int):
        raise TypeError(
            f"compression must be a Compression, a name, a bool or None, not {compression!r}")
    return int(compression)


def _as_bytes(data, what="data"):
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes, not str (encode it first)")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"{what} must be bytes-like, not {type(data).__name__}") from None


def _key_list(keys):
    """(list of keys, whether a single key was given)."""
    if isinstance(keys, str):
        return [keys], True
    if isinstance(keys, (bytes, bytearray)):
        raise TypeError("keys are str (64 lowercase hex characters), not bytes")
    keys = list(keys)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys are str, not {type(key).__name__}: {key!r}")
    return keys, False


def _all_key_shaped(keys):
    """Whether every key is 40 or 64 lowercase hex characters, checked with
    a few passes over all of them at once (a bulk read checks 10,000 keys
    per call)."""
    if not set(map(len, keys)) <= {40, 64}:
        return False
    try:
        joined = "".join(keys).encode("ascii")
    except UnicodeEncodeError:
        return False
    return not joined.translate(None, _HEX_DIGITS)


def _batches(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}


def _restore_ints(descriptor, value):
    """MessageToDict writes 64-bit integers as strings (the JSON mapping);
    turns them back into ints, in place."""
    for field in descriptor.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
        if field.type in _INT64_TYPES:
            value[field.name] = [int(v) for v in item] if repeated else int(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for element in (item if repeated else [item]):
                if isinstance(element, dict):
                    _restore_ints(field.message_type, element)


def _message_to_dict(message):
    try:
        value = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                          including_default_value_fields=True)
    except TypeError:  # protobuf 5 renamed the option
        value = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
    _restore_ints(message.DESCRIPTOR, value)
    return value


class _Deadline:
    """One deadline across the attempts (and calls) of one method call."""

    def __init__(self, timeout):
        self.end = None if timeout is None else time.monotonic() + timeout

    def remaining(self):
        if self.end is None:
            return None
        return max(0.0, self.end - time.monotonic())

    def allows(self, delay):
        return self.end is None or time.monotonic() + delay < self.end


class _RequestFeed:
    """Wraps a request generator that gRPC consumes on a thread of its own:
    an exception it raises (reading a file, a bad object) is kept and raised
    again in the caller instead of gRPC's generic CANCELLED."""

    def __init__(self, generator):
        self._generator = generator
        self.error = None

    def __iter__(self):
        try:
            yield from self._generator
        except Exception as error:  # noqa: BLE001 - re-raised in the caller
            self.error = error
            raise


class _ObjectBatcher:
    """Cuts an iterable of objects into PutMany batches; holds back the
    object that did not fit (and any large one, which put_many puts alone)."""

    def __init__(self, objects):
        self._objects = iter(objects)
        self._held = None
        self.exhausted = False

    def _next(self):
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if self.exhausted:
            return None
        try:
            return _as_bytes(next(self._objects), "every object")
        except StopIteration:
            self.exhausted = True
            return None

    def take_large(self):
        """The next object if it is too large for a batch, else None."""
        item = self._next()
        if item is not None and len(item) <= SMALL_OBJECT_MAX:
            self._held = item
            return None
        return item

    def next_batch(self):
        """The next batch of small objects; None at the end or before a large one."""
        batch, size = [], 0
        while len(batch) < BATCH_OBJECTS:
            item = self._next()
            if item is None:
                break
            if len(item) > SMALL_OBJECT_MAX or (batch and size + len(item) > BATCH_BYTES):
                self._held = item
                break
            batch.append(item)
            size += len(item)
        return batch or None

    def done(self):
        return self._held is None and self.exhausted


class Client:
    """A connection to packstored.

    ``socket``: the daemon's Unix socket path; None takes $PACKSTORE_SOCKET,
    else /run/packstore/packstore.sock. ``timeout``: the default deadline
    of every call in seconds (None: none); each method's ``timeout=``
    overrides it for that call and covers its retries. ``retries``: how many
    more times a read or put is tried after UNAVAILABLE, waiting
    ``backoff`` seconds, then twice that, and so on (at most 2 s).
    ``socket`` may also be a gRPC target of another scheme ("dns:",
    "ipv4:"...), e.g. a daemon's socket forwarded from another machine.

    ``fast_path``: use the daemon's local fast path (docs/protocol.md,
    "The local fast path") for get, get_many, open and put_file of regular
    files: the daemon passes open file descriptors of the stored files, read
    here with pread, or is handed the descriptor of a file to store. It
    needs no setting up: without it (a daemon started with --fast-path
    false or that does not offer it, a target that is not a Unix socket)
    the same calls go through gRPC with the same results. False: always
    gRPC.

    Connecting is lazy: a Client for a socket nobody serves is created
    without error, and its first call raises Unavailable naming the socket.
    Use it as a context manager, or call close().
    """

    def __init__(self, socket=None, timeout=None, retries=2, backoff=0.25, options=(),
                 fast_path=True):
        if socket is None:
            socket = os.environ.get("PACKSTORE_SOCKET") or DEFAULT_SOCKET
        self.socket = os.fspath(socket)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        if self.socket.startswith(("unix:",) + _OTHER_SCHEMES):
            target = self.socket
        else:
            target = "unix:" + self.socket
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS + list(options))
        self._stub = pb_grpc.ObjectStoreStub(self._channel)
        path = fastpath.unix_socket_path(self.socket) if fast_path else None
        self._fast = fastpath.FastPath(path, label=self.socket) if path else None
        self._closed = False

    # -- lifetime -----------------------------------------------------------------

    def close(self):
        """Closes the connection; calls running on it are cancelled. Files
        from open() that read through a descriptor go on working."""
        if not self._closed:
            self._closed = True
            if self._fast is not None:
                self._fast.close()
            self._channel.close()

    @property
    def fast_path(self):
        """Whether reads and put_file try the local fast path: True unless
        turned off (``fast_path=False``, a target that is not a Unix socket)
        or found unavailable (then False for this Client: for good after an
        answer that is not the protocol's, for 30 s after ERR UNAVAILABLE or
        no daemon on the socket)."""
        return self._fast is not None and not self._closed and self._fast.usable()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"packstore.Client(socket={self.socket!r})"

    # -- plumbing -----------------------------------------------------------------

    def _deadline(self, timeout):
        return _Deadline(self.timeout if timeout is None else timeout)

    def _error(self, error, method):
        return error_from_rpc(error, method=method, socket=self.socket)

    def _should_retry(self, error, attempt, deadline):
        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
            return False
        delay = min(2.0, self.backoff * (2 ** attempt))
        if not deadline.allows(delay):
            return False
        self._pause(delay)
        return True

    @staticmethod
    def _cut_while_paused(error, progressed):
        """Whether a read stream that delivered something was cancelled by
        the daemon's idle timeout (--stream-idle-timeout) while the caller
        paused between items: it is asked again for what is left."""
        return progressed and error.code() == grpc.StatusCode.CANCELLED

    def _pause(self, delay):
        """Waits `delay` seconds before a retry, or only until the channel
        reconnects if it was not connected. Watching the channel also has
        gRPC try to reconnect meanwhile: an idle grpcio channel otherwise
        retries its connection only every few seconds."""
        reconnected = threading.Event()
        states = []

        def watch(state):
            states.append(state)
            if state == grpc.ChannelConnectivity.READY and len(states) > 1:
                reconnected.set()

        self._channel.subscribe(watch, try_to_connect=True)
        try:
            reconnected.wait(delay)
        finally:
            self._channel.unsubscribe(watch)

    def _fast_for(self, keys):
        """The FastPath to try for a call on ``keys`` (str), or None: use
        gRPC (fast path off or unavailable, a key that cannot be one)."""
        fast = self._fast
        if fast is None or self._closed or not fast.usable():
            return None
        if not _all_key_shaped(keys):
            return None
        return fast

    def _check_deadline(self, deadline, method):
        """DeadlineExceeded once the deadline has passed (for work done
        here, not in a gRPC call)."""
        if deadline.end is not None and time.monotonic() >= deadline.end:
            raise DeadlineExceeded("Deadline Exceeded", method=method, socket=self.socket)

    def _unary(self, method, request, deadline, retry=True):
        attempt = 0
        while True:
            try:
                return getattr(self._stub, method)(request, timeout=deadline.remaining())
            except grpc.RpcError as error:
                if retry and self._should_retry(error, attempt, deadline):
                    attempt += 1
                    continue
                raise self._error(error, method) from None

    @staticmethod
    def _put_options(mode, compression):
        return pb.PutOptions(mode=_mode_value(mode), compression=_compression_value(compression))

    # -- writes -------------------------------------------------------------------

    def put(self, data, mode=None, compression=None, timeout=None):
        """Stores ``data`` (bytes-like) and returns its key.

        ``mode``: PutMode or "auto", "loose", "packed" (None: the daemon's
        default). ``compression``: Compression, "no", "yes", "auto" or a
        bool (None: none); it applies only to objects written to packs.
        Objects over 4 MiB are streamed (PutStream) rather than sent in one
        message.

        Raises InvalidArgument (unknown mode or compression),
        ResourceExhausted (object size limit, free-disk reserve),
        PermissionDenied, Unavailable (after the retries), DeadlineExceeded.
        """
        data = _as_bytes(data)
        options = self._put_options(mode, compression)
        deadline = self._deadline(timeout)
        if len(data) > PUT_MESSAGE_MAX:
            view = memoryview(data)
            return self._put_stream(
                lambda: (bytes(view[i:i + CHUNK_SIZE]) for i in range(0, len(view), CHUNK_SIZE)),
                options, deadline)
        request = pb.PutRequest(options=options, data=data)
        return self._unary("Put", request, deadline).object.key

    def put_file(self, file, mode=None, compression=None, timeout=None):
        """Stores the content of a file and returns its key.

        ``file`` is a path or a binary file object open for reading (read
        from its current position to its end). A regular file (a path, or
        a file object with a fileno() at position 0) goes through the fast
        path when the daemon offers it: the daemon is handed its descriptor
        and reads it itself, and the file object is left at the end of what
        was stored. Otherwise the content is streamed (PutStream) in 1 MiB
        chunks in constant memory, whatever its size. A retry after
        UNAVAILABLE reads the file again from where it started, so only
        paths and seekable file objects are retried.

        Raises what put() raises, plus OSError reading the file and
        TypeError for a file open in text mode. A failed or interrupted
        upload stores nothing.
        """
        if isinstance(file, (str, bytes, os.PathLike)):
            with open(file, "rb") as handle:
                return self.put_file(handle, mode, compression, timeout)

        file_mode = getattr(file, "mode", "b")
        if isinstance(file, io.TextIOBase) or (isinstance(file_mode, str)
                                               and "b" not in file_mode):
            raise TypeError("put_file needs a file open in binary mode ('rb')")
        start = None
        try:
            if file.seekable():
                start = file.tell()
        except (AttributeError, OSError):
            start = None

        options = self._put_options(mode, compression)
        deadline = self._deadline(timeout)
        key = self._fast_put_file(file, options, deadline)
        if key is not None:
            return key

        def rewound_chunks():
            if start is not None:
                file.seek(start)
            return _file_chunks(file)

        return self._put_stream(rewound_chunks, options, deadline,
                                retry=start is not None)

    def _fast_put_file(self, file, options, deadline):
        """put_file through the fast path: the key, or None to use gRPC."""
        fast = self._fast_for(())
        mode = _FAST_MODES.get(options.mode)
        compression = _FAST_COMPRESSIONS.get(options.compression)
        if fast is None or mode is None or compression is None:
            return None  # an unknown mode or compression: gRPC's answer says so
        fd = fastpath.file_descriptor_to_put(file)
        if fd is None:
            return None
        try:
            key, size = fast.put(fd, mode, compression, deadline, "PutStream")
        except fastpath.Unusable:
            return None
        try:
            file.seek(size)  # where reading what was stored would have left it
        except (AttributeError, OSError, ValueError):
            pass
        return key

    def _put_stream(self, make_chunks, options, deadline, retry=True):
        attempt = 0
        while True:
            def requests():
                first = True
                for chunk in make_chunks():
                    message = pb.PutStreamRequest(data=chunk)
                    if first:
                        message.options.CopyFrom(options)
                        first = False
                    yield message
                final = pb.PutStreamRequest(finish_write=True)
                if first:
                    final.options.CopyFrom(options)
                yield final

            feed = _RequestFeed(requests())
            try:
                return self._stub.PutStream(iter(feed), timeout=deadline.remaining()).object.key
            except grpc.RpcError as error:
                if feed.error is not None:
                    raise feed.error
                if retry and self._should_retry(error, attempt, deadline):
                    attempt += 1
                    continue
                raise self._error(error, "PutStream") from None

    def put_many(self, objects, mode=None, compression=None, timeout=None):
        """Stores many objects and returns their keys, in order.

        ``objects``: any iterable of bytes-like objects, consumed lazily.
        Objects up to 1 MiB travel in PutMany messages of at most 2 MiB
        (and 10,000 objects) each, written while the next are sent; larger
        ones are stored one by one with put(). Every key returned is
        durable. ``mode``, ``compression``: as for put().

        Raises what put() raises, and TypeError for an object that is not
        bytes-like. After an error some of the objects may be stored; the
        call may simply be repeated (puts are idempotent).
        """
        options = self._put_options(mode, compression)
        deadline = self._deadline(timeout)
        source = _ObjectBatcher(objects)
        keys = []
        while True:
            large = source.take_large()
            if large is not None:
                keys.append(self.put(large, mode, compression, timeout=deadline.remaining()))
                continue
            if source.done():
                return keys
            keys.extend(self._put_many_run(source, options, deadline))

    def _put_many_run(self, source, options, deadline):
        """One PutMany call (retried on UNAVAILABLE) for the batches up to the
        end of `source` or its next large object; their keys."""
        keys = []
        resend = collections.deque()
        attempt = 0
        while True:
            lock = threading.Lock()
            pending = collections.deque()  # batches sent and not yet answered
            call_open = [True]
            replay = resend

            def requests(pending=pending, call_open=call_open, replay=replay, lock=lock):
                first = True
                while True:
                    with lock:
                        if not call_open[0]:
                            return
                        batch = replay.popleft() if replay else source.next_batch()
                        if batch is None:
                            return
                        pending.append(batch)
                    message = pb.PutManyRequest(objects=batch)
                    if first:
                        message.options.CopyFrom(options)
                        first = False
                    yield message

            feed = _RequestFeed(requests())
            call = self._stub.PutMany(iter(feed), timeout=deadline.remaining())
            try:
                for response in call:
                    with lock:
                        batch = pending.popleft() if pending else None
                    if batch is None or len(response.objects) != len(batch):
                        call.cancel()
                        raise PackstoreError(
                            "the daemon answered a PutMany message with "
                            f"{len(response.objects)} keys for "
                            f"{'no' if batch is None else len(batch)} objects",
                            code=grpc.StatusCode.INTERNAL, method="PutMany", socket=self.socket)
                    keys.extend(ref.key for ref in response.objects)
                return keys
            except grpc.RpcError as error:
                with lock:
                    call_open[0] = False
                    # Unanswered batches first, then those not yet resent.
                    resend = collections.deque(pending)
                    resend.extend(replay)
                if feed.error is not None:
                    raise feed.error
                if self._should_retry(error, attempt, deadline):
                    attempt += 1
                    continue
                raise self._error(error, "PutMany") from None

    # -- reads --------------------------------------------------------------------

    def _read(self, key, offset, length, verify, deadline):
        """Get of a range; (ObjectInfo proto, bytes). Resumes after UNAVAILABLE
        from the offset reached (a verifying read starts over)."""
        if not isinstance(key, str):
            raise TypeError(f"a key is a str, not {type(key).__name__}")
        parts, received = [], 0
        info = start = total = None
        attempt = 0
        while True:
            request = pb.GetRequest(key=key, verify=verify)
            if info is None:
                request.offset = offset
                if length is not None:
                    request.length = length
            else:
                request.offset = start + received
                request.length = total - received
            call = self._stub.Get(request, timeout=deadline.remaining())
            try:
                first = True
                for message in call:
                    if first:
                        first = False
                        if info is None:
                            info, start, total = message.info, message.offset, message.length
                    if message.data:
                        parts.append(message.data)
                        received += len(message.data)
                if info is None:  # an answer without a first message: nothing to read
                    raise PackstoreError("Get answered no message", code=grpc.StatusCode.INTERNAL,
                                         method="Get", socket=self.socket)
                return info, b"".join(parts)
            except grpc.RpcError as error:
                if self._should_retry(error, attempt, deadline):
                    attempt += 1
                    if verify:
                        parts, received, info = [], 0, None
                    continue
                raise self._error(error, "Get") from None

    def get(self, key, offset=0, length=None, verify=False, timeout=None):
        """The bytes of the object ``key`` (or of its range ``offset``,
        ``length``; a range past the end is clamped, as a file read is).

        ``verify=True`` re-hashes the object (whole objects only): DataLoss
        instead of the bytes when they do not match the key. Through the
        fast path, the bytes are read (and hashed) here; over gRPC, the
        daemon hashes them while sending them.

        Raises NotFound (no such object), InvalidArgument (malformed key,
        verify with a range), DataLoss (corrupt stored bytes),
        PermissionDenied, Unavailable, DeadlineExceeded.
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        deadline = self._deadline(timeout)
        fast = self._fast_for([key]) if isinstance(key, str) else None
        if fast is not None:
            data = self._fast_get(fast, key, offset, length, verify, deadline)
            if data is not None:
                return data
        return self._read(key, offset, length, verify, deadline)[1]

    def _fast_get(self, fast, key, offset, length, verify, deadline):
        """get() through the fast path: the bytes, or None to use gRPC."""
        try:
            located = fast.locate([key], deadline, "Get")
        except fastpath.Unusable:
            return None
        with located:
            location = located.found.get(key)
            if location is None:
                raise NotFound(f"object {key} not found", method="Get", socket=self.socket)
            size = location.size
            if verify and (offset != 0 or (length is not None and length < size)):
                return None  # the daemon's answer says why not
            if not fastpath.can_decode(location.codec):
                return None
            start = min(offset, size)
            end = size if length is None else min(size, start + length)
            data = fast.read(location, start, end, "Get", verify=verify)
        self._check_deadline(deadline, "Get")
        return data

    def open(self, key, buffer_size=None, timeout=None):
        """A read-only, seekable binary file object (io.BufferedIOBase) over
        the object ``key``, for code that wants a file: zipfile, tarfile,
        h5py, shutil.copyfileobj...

        An uncompressed object opened through the fast path is read with
        pread on its file descriptor, which the file holds until closed:
        random access with no round trip to the daemon, and the object stays
        readable even if deleted meanwhile. Otherwise each read that the
        read-ahead buffer cannot serve is one Get of a byte range, and reads
        of ``buffer_size`` or more go straight to the daemon; ``timeout``
        applies to each of those reads. Random access is cheapest on
        uncompressed objects (a compressed one is decoded from its start up
        to the offset read). ``buffer_size``: bytes read ahead (None: 256
        KiB over gRPC, 64 KiB from a descriptor).

        Raises NotFound at once when there is no such object,
        InvalidArgument for a malformed key; its reads raise what get()
        raises (over gRPC: NotFound if the object was deleted meanwhile).
        """
        if not isinstance(key, str):
            raise TypeError(f"a key is a str, not {type(key).__name__}")
        info = self.stat(key, timeout=timeout)
        if info is None:
            raise NotFound(f"object {key} not found", method="Stat", socket=self.socket)
        if not info.compressed:
            fast = self._fast_for([key])
            if fast is not None:
                file = self._fast_open(fast, key, info, buffer_size, timeout)
                if file is not None:
                    return file

        def read_range(offset, length):
            return self._read(key, offset, length, False, self._deadline(timeout))[1]

        return ObjectFile(info, read_range,
                          buffer_size=OPEN_BUFFER if buffer_size is None else buffer_size)

    def _fast_open(self, fast, key, info, buffer_size, timeout):
        """An ObjectFile reading from the object's descriptor, or None to
        read through gRPC (fast path unavailable, a compressed object)."""
        try:
            located = fast.locate([key], self._deadline(timeout), "Get")
        except fastpath.Unusable:
            return None
        with located:
            location = located.found.get(key)
            if location is None:
                raise NotFound(f"object {key} not found", method="Get", socket=self.socket)
            if location.codec != "none":
                return None
            fd = located.keep(location.fd)
        size = location.size

        def read_range(offset, length):
            start = min(offset, size)
            return fast.read(location, start, min(size, start + length), "Get")

        def close():
            os.close(fd)

        try:
            return ObjectFile(info, read_range, on_close=close,
                              buffer_size=(OPEN_BUFFER_DESCRIPTOR if buffer_size is None
                                           else buffer_size))
        except BaseException:
            os.close(fd)
            raise

    def get_many(self, keys, timeout=None):
        """Reads many objects; yields (key, bytes), or (key, None) for a key
        the store does not hold, once per distinct key, in the daemon's
        storage order (not the order asked): objects up to 1 MiB first,
        then the larger ones, each reassembled from its pieces.

        Keys go to the daemon 10,000 at a time: the order is the storage
        order within each such batch. Memory holds one large object at a
        time. ``timeout`` covers the whole iteration. Through the fast path
        the keys missing come first, then the objects the daemon located,
        read in the order of their descriptors and offsets (up to 1 MiB
        first, then the larger ones); at most 250 files are open at a time,
        so an answer can cover part of a batch, and the next part follows.

        The returned iterator raises, while iterating, InvalidArgument (a
        malformed key, before anything is yielded), DataLoss (corrupt stored
        bytes), PermissionDenied, Unavailable, DeadlineExceeded. After
        UNAVAILABLE, or the daemon's idle timeout cutting the stream while
        the caller paused between objects, it asks again for the keys not
        yet yielded.
        """
        keys, _ = _key_list(keys)
        unique = list(dict.fromkeys(keys))
        deadline = self._deadline(timeout)
        return self._get_many(unique, deadline)

    def _get_many(self, keys, deadline):
        for batch in _batches(keys, KEYS_PER_CALL):
            fast = self._fast_for(batch)
            if fast is not None:
                yield from self._get_many_fast(fast, batch, deadline)
            else:
                yield from self._get_many_batch(batch, deadline)

    def _get_many_fast(self, fast, keys, deadline):
        """get_many of one batch through the fast path, falling back to
        gRPC for what it cannot read."""
        remaining, ask = keys, len(keys)
        while remaining:
            self._check_deadline(deadline, "GetMany")
            asked, rest = remaining[:ask], remaining[ask:]
            try:
                located = fast.locate(asked, deadline, "GetMany")
            except fastpath.Unusable:
                yield from self._get_many_batch(remaining, deadline)
                return
            if located.again:
                # The answer ran out of descriptors (one per loose object):
                # ask next about twice what it could serve, not all that is
                # left, which the daemon would mostly answer "again" again.
                answered = len(asked) - len(located.again)
                ask = min(KEYS_PER_CALL, max(2 * answered, 2 * fastpath.MAX_FDS))
            undecodable = []
            with located:
                for key in located.missing:
                    yield key, None
                # Storage order: small objects first, then the large ones,
                # each by descriptor and offset.
                small, large = [], []
                for location in located.found.values():
                    if not fastpath.can_decode(location.codec):
                        undecodable.append(location.key)
                    elif location.size <= SMALL_OBJECT_MAX:
                        small.append(location)
                    else:
                        large.append(location)
                small.sort(key=_STORAGE_ORDER)
                large.sort(key=_STORAGE_ORDER)
                for location, data in fast.read_whole(small + large, "GetMany"):
                    self._check_deadline(deadline, "GetMany")
                    yield location.key, data
                remaining = located.again + rest
            if undecodable:
                yield from self._get_many_batch(undecodable, deadline)

    def _get_many_batch(self, keys, deadline):
        remaining = list(keys)
        attempt = 0
        while remaining:
            done = set()
            call = self._stub.GetMany(pb.GetManyRequest(keys=remaining),
                                      timeout=deadline.remaining())
            try:
                current, parts, got = None, [], 0
                for message in call:
                    for piece in message.pieces:
                        if piece.missing:
                            done.add(piece.key)
                            yield piece.key, None
                            continue
                        if piece.key != current:
                            if current is not None or piece.offset != 0:
                                raise self._bad_piece(piece, current)
                            current, parts, got = piece.key, [], 0
                        elif piece.offset != got:
                            raise self._bad_piece(piece, current)
                        data = piece.data
                        if piece.offset != 0 or len(data) != piece.size:
                            parts.append(data)
                            got += len(data)
                            if got < piece.size:
                                continue
                            data = b"".join(parts)
                        done.add(current)
                        key, current, parts, got = current, None, [], 0
                        yield key, data
                if current is not None:
                    raise self._bad_piece(None, current)
                return
            except grpc.RpcError as error:
                if self._cut_while_paused(error, bool(done)):
                    remaining = [key for key in remaining if key not in done]
                    continue
                if self._should_retry(error, attempt, deadline):
                    attempt += 1
                    remaining = [key for key in remaining if key not in done]
                    continue
                raise self._error(error, "GetMany") from None
            finally:
                call.cancel()  # no-op once the stream has ended

    def _bad_piece(self, piece, current):
        what = "the stream ended" if piece is None else (
            f"a piece of {piece.key} at offset {piece.offset} came")
        return PackstoreError(f"GetMany: {what} while {current or 'no object'} was incomplete",
                              code=grpc.StatusCode.INTERNAL, method="GetMany",
                              socket=self.socket)

    def has(self, keys, timeout=None):
        """Whether the store holds each key: a bool for one key (a str), a
        list of bools, in order, for an iterable of keys.

        Raises InvalidArgument (any malformed key), PermissionDenied,
        Unavailable, DeadlineExceeded.
        """
        keys, single = _key_list(keys)
        deadline = self._deadline(timeout)
        present = []
        for batch in _batches(keys, KEYS_PER_CALL):
            present.extend(self._unary("Has", pb.HasRequest(keys=batch), deadline).present)
        return present[0] if single else present

    def stat(self, keys, timeout=None):
        """ObjectInfo (key, size, packed, compressed, stored_size) of each
        key, or None for one the store does not hold: one value for one key
        (a str), a list, in order, for an iterable of keys.

        Raises InvalidArgument (any malformed key), PermissionDenied,
        Unavailable, DeadlineExceeded.
        """
        keys, single = _key_list(keys)
        deadline = self._deadline(timeout)
        infos = []
        for batch in _batches(keys, KEYS_PER_CALL):
            stats = self._unary("Stat", pb.StatRequest(keys=batch), deadline).stats
            infos.extend(ObjectInfo.from_proto(s.info) if s.found else None for s in stats)
        return infos[0] if single else infos

    def status(self, timeout=None):
        """The daemon's Status as a dict, with the proto's field names
        (version, container_dir, config, counts, cache, rpcs,
        uptime_seconds, maintenance, free_bytes, free_bytes_reserve); every
        field is present and integers are ints.

        Raises PermissionDenied, Unavailable, DeadlineExceeded.
        """
        reply = self._unary("Status", pb.StatusRequest(), self._deadline(timeout))
        return _message_to_dict(reply)

    # -- maintenance (admins only, never retried) ---------------------------------

    def _maintenance(self, method, request, progress, timeout):
        issues, result = [], None
        call = getattr(self._stub, method)(request, timeout=self._deadline(timeout).remaining())
        try:
            for message in call:
                event = message.WhichOneof("event")
                if event == "progress":
                    if progress is not None:
                        p = message.progress
                        progress(Progress(p.phase, p.done, p.total))
                elif event == "issue":
                    i = message.issue
                    issues.append(ValidateIssue(i.kind, i.subject, i.detail))
                elif event == "result":
                    result = message.result
        except grpc.RpcError as error:
            raise self._error(error, method) from None
        finally:
            call.cancel()
        if result is None:
            raise PackstoreError(f"{method} ended without a result",
                                 code=grpc.StatusCode.INTERNAL, method=method, socket=self.socket)
        return issues, result

    def pack(self, compression=None, validate=True, progress=None, timeout=None):
        """Moves every loose object into packs; a PackResult (packed,
        already_packed, bytes, loose_deleted, corrupt).

        ``compression`` as for put(). ``validate=False`` skips re-hashing
        the loose objects. ``progress``: called with a Progress for each
        progress message (phase "pack").

        Raises InvalidArgument (unknown compression), PermissionDenied (not
        an admin), FailedPrecondition (another maintenance operation is
        running), Unavailable, DeadlineExceeded. Maintenance is never
        retried: it goes on in the daemon after a lost connection (see
        status()["maintenance"]).
        """
        request = pb.PackRequest(compression=_compression_value(compression),
                                 no_validate=not validate)
        _, r = self._maintenance("Pack", request, progress, timeout)
        return PackResult(r.packed, r.already_packed, r.bytes, r.loose_deleted, list(r.corrupt))

    def repack(self, compression=None, progress=None, timeout=None):
        """Rewrites packs with holes (every pack when ``compression`` asks to
        recompress: Compression.NO, YES or AUTO; None keeps each object as
        stored); a RepackResult (packs_rewritten, packs_removed,
        objects_moved, bytes_reclaimed). ``progress``: as for pack().

        Raises as pack() does.
        """
        request = pb.RepackRequest(compression=_compression_value(compression))
        _, r = self._maintenance("Repack", request, progress, timeout)
        return RepackResult(r.packs_rewritten, r.packs_removed, r.objects_moved, r.bytes_reclaimed)

    def clean(self, vacuum=False, progress=None, timeout=None):
        """Deletes loose copies of packed objects and stale temporary files,
        resolves duplicates, and with ``vacuum`` VACUUMs the index; a
        CleanResult (loose_deleted, sandbox_deleted, duplicates_resolved).

        Raises PermissionDenied, FailedPrecondition, Unavailable,
        DeadlineExceeded, as pack() does.
        """
        _, r = self._maintenance("Clean", pb.CleanRequest(vacuum=vacuum), progress, timeout)
        return CleanResult(r.loose_deleted, r.sandbox_deleted, r.duplicates_resolved)

    def delete(self, keys, progress=None, timeout=None):
        """Deletes objects (one key or an iterable of keys); returns how many
        of the distinct keys existed. Keys that do not exist are not an
        error; their pack bytes become holes, reclaimed by repack().

        Keys go 10,000 per Delete call. Raises InvalidArgument (a malformed
        key: nothing of that batch is deleted), PermissionDenied,
        FailedPrecondition, Unavailable, DeadlineExceeded.
        """
        keys, _ = _key_list(keys)
        deleted = 0
        for batch in _batches(list(dict.fromkeys(keys)), KEYS_PER_CALL):
            _, r = self._maintenance("Delete", pb.DeleteRequest(keys=batch), progress, timeout)
            deleted += r.deleted
        return deleted

    def validate(self, progress=None, timeout=None):
        """Re-hashes every object and checks sizes, overlaps and stray
        files; a ValidateResult (loose_checked, packed_checked, issues: the
        list of ValidateIssue, empty when all is well; .ok). Issues are not
        errors. ``progress``: as for pack().

        Raises PermissionDenied, FailedPrecondition, Unavailable,
        DeadlineExceeded, as pack() does.
        """
        issues, r = self._maintenance("Validate", pb.ValidateRequest(), progress, timeout)
        return ValidateResult(r.loose_checked, r.packed_checked, issues)

    # Defined last: inside the class body, the name ``list`` is this method
    # from here on.
    def list(self, after="", page_size=0, timeout=None):
        """Iterates over every key in the store, ascending, starting after
        ``after`` (a key or a prefix of lowercase hex; "" from the first).
        Pages of ``page_size`` keys (0: the daemon's default) are fetched
        as the iteration goes; the listing is not a snapshot (a key written
        or deleted meanwhile may or may not appear).

        The iterator raises, while iterating, InvalidArgument (a bad
        ``after``), PermissionDenied, Unavailable, DeadlineExceeded. After
        UNAVAILABLE, or the daemon's idle timeout cutting the stream while
        the caller paused, it resumes after the last key yielded.
        """
        if not isinstance(after, str):
            raise TypeError(f"after is a str, not {type(after).__name__}")
        return self._list(after, page_size, self._deadline(timeout))

    def _list(self, after, page_size, deadline):
        attempt = 0
        while True:
            call = self._stub.List(pb.ListRequest(after=after, page_size=page_size),
                                   timeout=deadline.remaining())
            listed = False
            try:
                for page in call:
                    for key in page.keys:
                        after, listed = key, True
                        yield key
                return
            except grpc.RpcError as error:
                if self._cut_while_paused(error, listed):
                    continue
                if self._should_retry(error, attempt, deadline):
                    attempt += 1
                    continue
                raise self._error(error, "List") from None
            finally:
                call.cancel()


def _file_chunks(handle):
    while True:
        chunk = handle.read(CHUNK_SIZE)
        if not chunk:
            return
        if isinstance(chunk, str):
            raise TypeError("put_file needs a file open in binary mode ('rb')")
        yield chunk if isinstance(chunk, bytes) else bytes(chunk)

