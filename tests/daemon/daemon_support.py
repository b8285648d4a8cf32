"""Shared by the daemon suite and the client processes it starts.

Where the build is (PACKSTORE_BUILD_DIR, default build/dev under the
repository root), the generated Python stubs, and small helpers that speak
packstore.v1.ObjectStore: keys, test content, health checks and calls that
collect a streamed answer. Nothing here starts a daemon (conftest.py does).
"""

import hashlib
import importlib.util
import os
import contextlib
import random
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_build = Path(os.environ.get("PACKSTORE_BUILD_DIR", "build/dev"))
BUILD_DIR = _build if _build.is_absolute() else REPO_ROOT / _build
PROTO_PYTHON_DIR = BUILD_DIR / "python"
DAEMON_BIN = BUILD_DIR / "server" / "daemon" / "packstored"
CLI_BIN = BUILD_DIR / "client" / "packstore"
TESTS_DIR = Path(__file__).resolve().parent
CLIENT_TOOL = TESTS_DIR / "client_tool.py"

if str(PROTO_PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PROTO_PYTHON_DIR))

import grpc  # noqa: E402

try:
    from packstore.v1 import packstore_pb2 as pb  # noqa: E402
    from packstore.v1 import packstore_pb2_grpc as pb_grpc  # noqa: E402
except ImportError as error:  # pragma: no cover - a build problem, said plainly
    raise ImportError(
        f"packstore's generated Python stubs are missing from {PROTO_PYTHON_DIR} "
        f"({error}); build the tree (cmake -S . -B build/dev -G Ninja && ninja -C build/dev) "
        "or point PACKSTORE_BUILD_DIR at a build folder"
    ) from error

KiB = 1024
MiB = 1024 * 1024

# Every call carries a deadline, so a daemon that hangs fails a test
# instead of blocking the suite.
RPC_TIMEOUT = 30.0

MODES = {
    "unspecified": pb.PUT_MODE_UNSPECIFIED,
    "auto": pb.PUT_MODE_AUTO,
    "loose": pb.PUT_MODE_LOOSE,
    "packed": pb.PUT_MODE_PACKED,
}
COMPRESSIONS = {
    "unspecified": pb.COMPRESSION_UNSPECIFIED,
    "no": pb.COMPRESSION_NO,
    "yes": pb.COMPRESSION_YES,
    "auto": pb.COMPRESSION_AUTO,
}


@contextlib.contextmanager
def deadline_alarm(seconds, what):
    """Raises TimeoutError in the main thread (SIGALRM) if the body runs
    longer than ``seconds``: a test that hangs fails instead of blocking
    the suite."""

    def expired(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def key_of(data):
    """The key the store must compute for `data`."""
    return hashlib.sha256(data).hexdigest()


def random_bytes(size, seed):
    """Incompressible bytes, the same for the same (size, seed)."""
    return random.Random(f"{seed}/{size}").randbytes(size)


def text_bytes(size, seed):
    """Compressible bytes (repeated text), the same for the same (size, seed)."""
    unit = f"packstore test object {seed}: the quick brown fox jumps over the lazy dog.\n"
    unit = unit.encode()
    return (unit * (size // len(unit) + 1))[:size]


def connect(socket_path, own_connection=False):
    """A channel to the daemon. Channels to the same address share one
    connection unless `own_connection`."""
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    return grpc.insecure_channel("unix:" + str(socket_path), options=options)


def stub_for(channel):
    return pb_grpc.ObjectStoreStub(channel)


def _decode_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def decode_fields(data):
    """A protobuf message as a list of (field number, wire type, value)."""
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = _decode_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _decode_varint(data, pos)
        elif wire == 2:
            length, pos = _decode_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} in {data!r}")
        fields.append((number, wire, value))
    return fields


def encode_string_field(number, text):
    raw = text.encode()
    assert len(raw) < 128
    return bytes([(number << 3) | 2, len(raw)]) + raw


HEALTH_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_check(channel, service="", timeout=2.0):
    """grpc.health.v1.Health/Check, called generically; the status as a name."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda name: encode_string_field(1, name) if name else b"",
        response_deserializer=lambda raw: raw,
    )
    raw = check(service, timeout=timeout)
    status = 0
    for number, wire, value in decode_fields(raw):
        if number == 1 and wire == 0:
            status = value
    return HEALTH_STATUS_NAMES.get(status, str(status))


# ---- calls --------------------------------------------------------------------


def put(stub, data, mode="auto", compression="unspecified", timeout=RPC_TIMEOUT):
    """Put; the ObjectRef answered."""
    request = pb.PutRequest(
        options=pb.PutOptions(mode=MODES[mode], compression=COMPRESSIONS[compression]), data=data
    )
    return stub.Put(request, timeout=timeout).object


def stream_requests(data, mode="auto", compression="unspecified", chunk=256 * KiB, finish=True):
    """The PutStream messages for `data`: options first, finish_write last."""
    options = pb.PutOptions(mode=MODES[mode], compression=COMPRESSIONS[compression])
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for index, piece in enumerate(pieces):
        message = pb.PutStreamRequest(data=piece)
        if index == 0:
            message.options.CopyFrom(options)
        if finish and index == len(pieces) - 1:
            message.finish_write = True
        yield message


def put_stream(stub, data, mode="auto", compression="unspecified", chunk=256 * KiB,
               timeout=RPC_TIMEOUT):
    """PutStream of `data` in `chunk`-sized messages; the ObjectRef answered."""
    return stub.PutStream(
        stream_requests(data, mode, compression, chunk), timeout=timeout
    ).object


def put_many(stub, batches, mode="auto", compression="unspecified", timeout=RPC_TIMEOUT):
    """PutMany with one request message per batch; the answers as lists of ObjectRefs."""

    def requests():
        for index, batch in enumerate(batches):
            message = pb.PutManyRequest(objects=batch)
            if index == 0:
                message.options.mode = MODES[mode]
                message.options.compression = COMPRESSIONS[compression]
            yield message

    return [list(response.objects) for response in stub.PutMany(requests(), timeout=timeout)]


def get(stub, key, timeout=RPC_TIMEOUT, **fields):
    """Get; (the first message, every message, the bytes sent)."""
    messages = list(stub.Get(pb.GetRequest(key=key, **fields), timeout=timeout))
    assert messages, f"Get({key}) answered no message at all"
    return messages[0], messages, b"".join(message.data for message in messages)


def get_bytes(stub, key, timeout=RPC_TIMEOUT, **fields):
    return get(stub, key, timeout=timeout, **fields)[2]


def get_many(stub, keys, timeout=RPC_TIMEOUT):
    """GetMany; the response messages."""
    return list(stub.GetMany(pb.GetManyRequest(keys=keys), timeout=timeout))


def assemble_pieces(messages):
    """Reassembles a GetMany answer; checks each object's pieces are in order
    and contiguous and that no key is sent twice.

    Returns (objects {key: bytes}, missing [keys], order [keys as they first
    appear], pieces per key {key: count}).
    """
    objects, sizes, missing, order, pieces = {}, {}, [], [], {}
    complete = set()
    for message in messages:
        for piece in message.pieces:
            key = piece.key
            if piece.missing:
                assert not piece.data, f"missing key {key} came with data"
                assert key not in missing and key not in objects, f"{key} reported twice"
                missing.append(key)
                order.append(key)
                continue
            assert key not in complete, f"{key} sent again after it was complete"
            assert key not in missing, f"{key} both missing and sent"
            if key not in objects:
                assert piece.offset == 0, f"first piece of {key} at offset {piece.offset}"
                objects[key] = bytearray()
                sizes[key] = piece.size
                order.append(key)
                pieces[key] = 0
            assert piece.size == sizes[key], f"{key}: size changed between pieces"
            assert piece.offset == len(objects[key]), (
                f"{key}: piece at offset {piece.offset}, expected {len(objects[key])}"
            )
            objects[key] += piece.data
            pieces[key] += 1
            assert len(objects[key]) <= sizes[key], f"{key}: more bytes than its size"
            if len(objects[key]) == sizes[key]:
                complete.add(key)
    incomplete = [key for key in objects if key not in complete]
    assert not incomplete, f"objects sent incompletely: {incomplete}"
    return {key: bytes(data) for key, data in objects.items()}, missing, order, pieces


def list_keys(stub, after="", page_size=0, timeout=RPC_TIMEOUT):
    """List; the pages (lists of keys)."""
    request = pb.ListRequest(after=after, page_size=page_size)
    return [list(message.keys) for message in stub.List(request, timeout=timeout)]


def maintenance(stub, method, request=None, timeout=120.0):
    """Runs one maintenance call and checks the stream's shape: progress (and,
    for Validate, issues) then exactly one result, last.

    Returns (progress messages, issues, the result).
    """
    request_types = {
        "Pack": pb.PackRequest,
        "Repack": pb.RepackRequest,
        "Clean": pb.CleanRequest,
        "Delete": pb.DeleteRequest,
        "Validate": pb.ValidateRequest,
    }
    if request is None:
        request = request_types[method]()
    progress, issues, results = [], [], []
    for message in getattr(stub, method)(request, timeout=timeout):
        event = message.WhichOneof("event")
        assert event is not None, f"{method} sent a message with no event"
        assert not results, f"{method} sent {event} after its result"
        if event == "progress":
            progress.append(message.progress)
        elif event == "issue":
            issues.append(message.issue)
        else:
            assert event == "result", f"{method} sent an unexpected {event}"
            results.append(message.result)
    assert len(results) == 1, f"{method} ended with {len(results)} results"
    return progress, issues, results[0]


def rpc_error(call):
    """Runs `call` (draining the stream it returns); the grpc.RpcError it
    raised. AssertionError when it succeeds."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            for _ in result:
                pass
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def expect_code(code, call):
    """Runs `call`, which must fail with `code`; the error's details."""
    error = rpc_error(call)
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    return error.details() or ""


def code_of(call):
    """The status code name of a call made with `call()` ("OK" when it succeeds)."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            for _ in result:
                pass
        return "OK", ""
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls `predicate` until it returns a true value, which it returns;
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def export_daemon_fixtures(namespace, module_name):
    """Gives another suite's conftest.py (`namespace`: its globals()) this
    suite's fixtures: daemon, daemons, shared_tmp, the per-test deadline and
    the daemon logs shown with a failure. tests/daemon/conftest.py is loaded
    under `module_name`, so nothing is copied."""
    spec = importlib.util.spec_from_file_location(module_name, TESTS_DIR / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("daemon", "daemons", "shared_tmp", "_test_deadline", "pytest_runtest_makereport"):
        namespace[name] = getattr(module, name)
