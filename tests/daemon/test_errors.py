"""Error codes and limits: malformed keys and requests, missing objects, the
size, message, stream and free-disk limits, and maintenance while another
maintenance runs. Each error must carry a message a person can act on."""

import os
import re
import subprocess
import threading
import time

import grpc
import pytest

import daemon_support as support
from daemon_support import (KiB, MiB, expect_code, key_of, pb, random_bytes, rpc_error,
                            text_bytes, wait_for)

VALID = key_of(b"a valid key")

MALFORMED_KEYS = [
    "",
    "abc",
    VALID[:63],
    VALID + "0",
    VALID.upper(),
    VALID[:10] + "A" + VALID[11:],
    "g" * 64,
    "../" + VALID[3:],
    VALID[:30] + "/" + VALID[31:],
    "." * 64,
    "..",
    ".",
    " " + VALID[1:],
    VALID[:63] + "\n",
    "\u00e9" * 32,  # 64 bytes of UTF-8, 32 characters
    "0x" + VALID[2:],
]


def assert_names_key(details, key):
    printable = key and key.isascii() and key.isprintable()
    if printable:
        assert key in details, f"the message does not name the key {key!r}: {details!r}"
    else:
        assert "key" in details.lower(), f"the message does not mention the key: {details!r}"


def mentions_size(details, size):
    """Whether `details` names `size` bytes in some human spelling."""
    spellings = {str(size), f"{size:,}"}
    for unit, name in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if size % unit == 0:
            spellings.add(f"{size // unit}{name}")
            spellings.add(f"{size // unit} {name}")
            spellings.add(f"{size // unit}.0 {name}")
            spellings.add(f"{size // unit}.0{name}")
    return any(spelling in details for spelling in spellings)


def sandbox_files(store):
    return sorted(os.listdir(store / "sandbox"))


def present(stub, *datas):
    keys = [key_of(data) for data in datas]
    return list(stub.Has(pb.HasRequest(keys=keys), timeout=support.RPC_TIMEOUT).present)


# ---- malformed keys ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", MALFORMED_KEYS, ids=lambda key: repr(key)[:24])
def test_malformed_key_is_invalid_argument(daemon, bad):
    stub = daemon.stub
    kept = b"kept despite a malformed key beside it"
    support.put(stub, kept, "packed")
    timeout = support.RPC_TIMEOUT
    calls = {
        "Get": lambda: stub.Get(pb.GetRequest(key=bad), timeout=timeout),
        "Get range": lambda: stub.Get(pb.GetRequest(key=bad, offset=1, length=2), timeout=timeout),
        "Stat": lambda: stub.Stat(pb.StatRequest(keys=[key_of(kept), bad]), timeout=timeout),
        "Has": lambda: stub.Has(pb.HasRequest(keys=[bad, key_of(kept)]), timeout=timeout),
        "GetMany": lambda: stub.GetMany(pb.GetManyRequest(keys=[key_of(kept), bad]),
                                        timeout=timeout),
        "Delete": lambda: stub.Delete(pb.DeleteRequest(keys=[key_of(kept), bad]),
                                      timeout=timeout),
    }
    for name, call in calls.items():
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"{name}({bad!r}): {error.code().name}: {error.details()}"
        )
        assert_names_key(error.details() or "", bad)
    # Nothing was looked up: the valid key beside the malformed one was not deleted.
    assert present(stub, kept) == [True]


@pytest.mark.parametrize("after", ["G", "8g", "A", "ABCDEF", "../", "ab/cd", ".", VALID + "0",
                                   "\u00e9", "-1"], ids=lambda after: repr(after)[:24])
def test_list_with_malformed_after(daemon, after):
    details = expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                          lambda: daemon.stub.List(pb.ListRequest(after=after),
                                                   timeout=support.RPC_TIMEOUT))
    assert after in details or "after" in details, (
        f"the message names neither the field nor its value {after!r}: {details!r}")


def test_unknown_put_mode_is_invalid_argument(daemon):
    data = b"an object with a mode from the future"
    request = pb.PutRequest(data=data)
    request.options.mode = 42
    details = expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                          lambda: daemon.stub.Put(request, timeout=support.RPC_TIMEOUT))
    assert "mode" in details.lower(), details
    assert present(daemon.stub, data) == [False]


# ---- missing objects --------------------------------------------------------------------


def test_missing_key_is_not_found(daemon):
    stub = daemon.stub
    missing = key_of(b"never stored")
    for fields in ({}, {"offset": 10, "length": 5}, {"verify": True}):
        details = expect_code(grpc.StatusCode.NOT_FOUND,
                              lambda: stub.Get(pb.GetRequest(key=missing, **fields),
                                               timeout=support.RPC_TIMEOUT))
        assert missing in details, f"NOT_FOUND does not name the key: {details!r}"
    # Not an error for the calls that report presence.
    (entry,) = stub.Stat(pb.StatRequest(keys=[missing]), timeout=support.RPC_TIMEOUT).stats
    assert not entry.found
    assert present(stub, b"never stored") == [False]
    _, _, result = support.maintenance(stub, "Delete", pb.DeleteRequest(keys=[missing]))
    assert result.deleted == 0


# ---- limits -----------------------------------------------------------------------------


def test_max_object_size(daemons):
    limit = 64 * KiB
    daemon = daemons(flags={"--max-object-size": "64KiB"})
    stub = daemon.stub
    for mode in ("auto", "loose", "packed"):
        at_limit = random_bytes(limit, f"at limit {mode}")
        assert support.put(stub, at_limit, mode).key == key_of(at_limit)
        assert support.put_stream(stub, at_limit, mode, chunk=10 * KiB).size == limit
    before = daemon.status().counts
    for mode in ("auto", "loose", "packed"):
        over = random_bytes(limit + 1, f"over limit {mode}")
        details = expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              lambda: support.put(stub, over, mode))
        assert mentions_size(details, limit), (
            f"Put: the message does not name the limit: {details!r}")
        big = random_bytes(3 * MiB, f"stream over limit {mode}")
        details = expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              lambda: support.put_stream(stub, big, mode, chunk=16 * KiB))
        assert mentions_size(details, limit), (
            f"PutStream: the message does not name the limit: {details!r}")
        details = expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              lambda: support.put_many(stub, [[over]], mode))
        assert mentions_size(details, limit), (
            f"PutMany: the message does not name the limit: {details!r}")
        assert present(stub, over, big, big[:limit], big[: limit + 16 * KiB]) == [False] * 4
    wait_for(lambda: not sandbox_files(daemon.store), 10, "an empty sandbox/")
    after = daemon.status().counts
    assert (after.loose_objects, after.packed_objects) == (before.loose_objects,
                                                            before.packed_objects)


def test_max_message_size(daemons):
    daemon = daemons(flags={"--max-message-size": "64KiB"})
    stub = daemon.stub
    small = random_bytes(60 * KiB, "fits in a message")
    assert support.put(stub, small, "packed").key == key_of(small)
    too_big = random_bytes(100 * KiB, "too big for a message")
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: support.put(stub, too_big, "packed"))
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: support.put_stream(stub, too_big, "loose", chunk=100 * KiB))
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED,
                lambda: support.put_many(stub, [[too_big[:40 * KiB], too_big[40 * KiB:]]]))
    assert present(stub, too_big, too_big[:40 * KiB], too_big[40 * KiB:]) == [False] * 3
    # The limit is per message, not per object: a big object streams in small chunks.
    big = random_bytes(2 * MiB, "streamed past the message limit")
    assert support.put_stream(stub, big, "loose", chunk=32 * KiB).key == key_of(big)
    assert support.get_bytes(stub, key_of(big)) == big


@pytest.mark.parametrize("connections", ["separate", "shared"])
def test_max_streams(daemons, connections):
    """Streaming calls past --max-streams get RESOURCE_EXHAUSTED, whether the
    clients have a connection each or share one (gRPC's usual way: one
    channel, many calls); unary calls are not streams and go on."""
    limit = 3
    # The calls all come from this process: its share is the whole limit
    # (the reliability suite's test_many_streams_never_read shows the share).
    daemon = daemons(flags={"--max-streams": str(limit), "--max-streams-per-client": str(limit)})
    stored = random_bytes(2 * MiB, "for reads")
    support.put(daemon.stub, stored, "packed")
    release = threading.Event()

    def held_open(index):
        data = f"held stream {index}".encode()
        yield pb.PutStreamRequest(options=pb.PutOptions(mode=pb.PUT_MODE_LOOSE), data=data)
        release.wait(timeout=60)
        yield pb.PutStreamRequest(data=b"!", finish_write=True)

    if connections == "separate":
        stubs = [daemon.new_stub() for _ in range(limit + 1)]
    else:
        stubs = [daemon.stub] * (limit + 1)
    held = [stub.PutStream.future(held_open(index), timeout=60)
            for index, stub in enumerate(stubs[:limit])]
    try:
        time.sleep(1.0)  # the calls reach the daemon
        for future in held:
            assert not future.done(), f"a held stream ended early: {future.exception()}"
        stub = stubs[limit]
        timeout = 10
        extra = {
            "List": lambda: stub.List(pb.ListRequest(), timeout=timeout),
            "Get": lambda: stub.Get(pb.GetRequest(key=key_of(stored)), timeout=timeout),
            "GetMany": lambda: stub.GetMany(pb.GetManyRequest(keys=[key_of(stored)]),
                                            timeout=timeout),
            "PutStream": lambda: support.put_stream(stub, b"one too many", "packed",
                                                    timeout=timeout),
            "PutMany": lambda: support.put_many(stub, [[b"one too many"]], "packed",
                                                timeout=timeout),
        }
        for name, call in extra.items():
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{name} beyond --max-streams {limit}: {error.code().name}: {error.details()}"
            )
            assert re.search(rf"\b{limit}\b|max-streams", error.details() or ""), (
                f"{name}: the message does not name the limit: {error.details()!r}")
        # Unary calls are not streams.
        assert present(stub, stored) == [True]
        ref = support.put(stub, b"unary put while streams are full", "packed", timeout=timeout)
        assert ref.size > 0
    finally:
        release.set()
    for index, future in enumerate(held):
        ref = future.result(timeout=30).object
        assert ref.key == key_of(f"held stream {index}!".encode())
    # Once they ended, streams are accepted again.
    assert support.get_bytes(daemon.stub, key_of(stored)) == stored
    assert support.put_stream(daemon.stub, b"streams again", "packed").size > 0


def test_free_disk_reserve(daemons, tmp_path):
    store = tmp_path / "full-store"
    loose_file = tmp_path / "loose.bin"
    packed_file = tmp_path / "packed.bin"
    loose_data = random_bytes(5000, "reserve loose")
    packed_data = random_bytes(300 * KiB, "reserve packed")
    loose_file.write_bytes(loose_data)
    packed_file.write_bytes(packed_data)
    cli = [str(support.CLI_BIN), "--store", str(store)]
    for args in (["init"], ["put", str(loose_file)], ["put", "--to", "pack", str(packed_file)]):
        subprocess.run(cli + args, check=True, capture_output=True, timeout=60)

    stat = os.statvfs(tmp_path)
    reserve = stat.f_bavail * stat.f_frsize + (1 << 40)
    daemon = daemons(store=store, init=False, flags={"--free-disk-reserve": str(reserve)})
    stub = daemon.stub
    assert daemon.status().free_bytes_reserve == reserve
    new = random_bytes(1000, "refused for want of disk")
    refusals = {
        "Put loose": lambda: support.put(stub, new, "loose"),
        "Put packed": lambda: support.put(stub, new, "packed"),
        "PutStream": lambda: support.put_stream(stub, new, "auto"),
        "PutMany": lambda: support.put_many(stub, [[new]], "packed"),
    }
    for name, call in refusals.items():
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
            f"{name}: {error.code().name}: {error.details()}")
        assert re.search(r"free|reserve|disk|space", error.details() or "", re.I), (
            f"{name}: the message does not say what ran out: {error.details()!r}")
    assert present(stub, new) == [False]
    # Reads still work.
    assert support.get_bytes(stub, key_of(loose_data), verify=True) == loose_data
    assert support.get_bytes(stub, key_of(packed_data), offset=5, length=10) == packed_data[5:15]
    objects, missing, _, _ = support.assemble_pieces(
        support.get_many(stub, [key_of(loose_data), key_of(packed_data)]))
    assert objects == {key_of(loose_data): loose_data, key_of(packed_data): packed_data}
    assert present(stub, loose_data, packed_data) == [True, True]
    keys = [key for page in support.list_keys(stub) for key in page]
    assert keys == sorted([key_of(loose_data), key_of(packed_data)])


# ---- maintenance one at a time ----------------------------------------------------------


def write_loose_objects(store, datas):
    """Writes loose objects by hand (the format of docs/format.md), while no daemon runs."""
    for data in datas:
        key = key_of(data)
        folder = store / "loose" / key[:2]
        folder.mkdir(exist_ok=True)
        (folder / key[2:]).write_bytes(data)


def test_second_maintenance_while_one_runs(daemons, tmp_path):
    store = tmp_path / "busy-store"
    subprocess.run([str(support.CLI_BIN), "--store", str(store), "init"], check=True,
                   capture_output=True, timeout=60)
    # Compressing incompressible data is slow (zlib: tens of MB/s): a pack
    # that runs for seconds.
    datas = [random_bytes(1 * MiB, f"slow pack {i}") for i in range(64)]
    datas += [random_bytes(100 + i, f"many small {i}") for i in range(3000)]
    write_loose_objects(store, datas)
    daemon = daemons(store=store, init=False)
    kept = text_bytes(10 * KiB, "read during maintenance")
    support.put(daemon.stub, kept, "packed")

    outcome = {}

    def first_pack():
        try:
            outcome["result"] = support.maintenance(
                daemon.new_stub(), "Pack", pb.PackRequest(compression=pb.COMPRESSION_YES))[2]
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    runner = threading.Thread(target=first_pack, daemon=True)
    runner.start()
    running = wait_for(lambda: daemon.status().maintenance or not runner.is_alive(), 20,
                       "Status.maintenance to name the running pack")
    assert runner.is_alive(), f"the pack ended before it was seen running: {outcome}"
    assert "pack" in running.lower(), f"Status.maintenance is {running!r} during a pack"

    stub = daemon.stub
    timeout = support.RPC_TIMEOUT
    second = {
        "Pack": lambda: stub.Pack(pb.PackRequest(), timeout=timeout),
        "Validate": lambda: stub.Validate(pb.ValidateRequest(), timeout=timeout),
        "Clean": lambda: stub.Clean(pb.CleanRequest(), timeout=timeout),
        "Repack": lambda: stub.Repack(pb.RepackRequest(), timeout=timeout),
        "Delete": lambda: stub.Delete(pb.DeleteRequest(keys=[key_of(kept)]), timeout=timeout),
    }
    for name, call in second.items():
        alive = runner.is_alive()
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (
            f"{name} during a pack (running: {alive}): {error.code().name}: {error.details()}")
        assert "pack" in (error.details() or "").lower(), (
            f"{name}: the message does not name the running operation: {error.details()!r}")
    # Reads go on meanwhile, and the refused Delete deleted nothing.
    assert support.get_bytes(stub, key_of(kept)) == kept
    assert present(stub, kept, datas[0]) == [True, True]
    assert runner.is_alive(), "the pack ended during the checks: make it longer"

    runner.join(timeout=120)
    assert not runner.is_alive(), "the first pack did not end"
    assert "error" not in outcome, f"the first pack failed: {outcome.get('error')}"
    assert outcome["result"].packed == len(datas)
    assert daemon.status().maintenance == ""
    _, issues, result = support.maintenance(stub, "Validate")
    assert result.issues == 0 and result.packed_checked == len(datas) + 1, issues
