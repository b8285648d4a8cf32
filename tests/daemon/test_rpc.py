"""Every RPC of packstore.v1.ObjectStore against a real daemon, as the wire
contract (proto/packstore/v1/packstore.proto) describes it."""

import contextlib
import json
import queue
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import grpc
import pytest

import daemon_support as support
from daemon_support import (KiB, MiB, expect_code, get, key_of, pb, random_bytes, text_bytes,
                            wait_for)

CHUNK_MIN = 256 * KiB
CHUNK_MAX = 1 * MiB
# No single message near gRPC's 4 MiB default receive limit (DESIGN.md).
MESSAGE_MAX = 2 * MiB


# ---- helpers ----------------------------------------------------------------------


def loose_path(store, key):
    """Where a loose object lives with the default loose_prefix_len of 2."""
    return Path(store) / "loose" / key[:2] / key[2:]


def sandbox_files(store):
    return sorted(path.name for path in (Path(store) / "sandbox").iterdir())


def loose_files(store):
    return sorted(
        f"{path.parent.name}{path.name}" for path in (Path(store) / "loose").rglob("*")
        if path.is_file()
    )


def index_rows(store):
    """{key: (pack_id, offset)} read from the store's SQLite index."""
    uri = f"file:{Path(store) / 'packs.idx'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as connection:
        rows = connection.execute('SELECT hashkey, pack_id, "offset" FROM db_object').fetchall()
    return {key: (pack_id, offset) for key, pack_id, offset in rows}


def counts(daemon):
    return daemon.status().counts


def wait_counts(daemon, timeout=10.0, **expected):
    """Waits until Status counts have the expected values (counts that need a
    scan may be computed in the background); the StoreCounts."""
    seen = {}

    def matches():
        current = counts(daemon)
        seen["counts"] = current
        return all(getattr(current, name) == value for name, value in expected.items())

    try:
        wait_for(matches, timeout, f"Status counts {expected}")
    except AssertionError:
        actual = {name: getattr(seen["counts"], name) for name in expected}
        raise AssertionError(f"Status counts are {actual}, expected {expected}") from None
    return seen["counts"]


def stat_one(stub, key):
    (entry,) = stub.Stat(pb.StatRequest(keys=[key]), timeout=support.RPC_TIMEOUT).stats
    return entry


def check_chunks(messages, size):
    """Get's chunks: 256 KiB to 1 MiB each, only the last may be shorter."""
    chunks = [len(message.data) for message in messages if message.data]
    assert all(0 < chunk <= CHUNK_MAX for chunk in chunks), f"chunk sizes {chunks}"
    assert all(chunk >= CHUNK_MIN for chunk in chunks[:-1]), (
        f"short chunk before the last: {chunks}")
    assert sum(chunks) == size
    for message in messages[1:]:
        assert not message.HasField("info"), "info sent again after the first message"


# ---- health and reflection --------------------------------------------------------


def test_health_check_serving(daemon):
    assert support.health_check(daemon.channel) == "SERVING"


def test_reflection_lists_the_object_store(daemon):
    info = daemon.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    # ServerReflectionRequest{list_services: "*"} (field 7).
    responses = list(info(iter([support.encode_string_field(7, "*")]), timeout=10))
    assert len(responses) == 1
    names = []
    for number, _, value in support.decode_fields(responses[0]):
        if number == 6:  # list_services_response
            for service_number, _, service in support.decode_fields(value):
                if service_number == 1:
                    for name_number, _, name in support.decode_fields(service):
                        if name_number == 1:
                            names.append(name.decode())
    assert "packstore.v1.ObjectStore" in names, f"reflection lists {names}"


# ---- Put ----------------------------------------------------------------------------


def test_put_every_mode_and_compression(daemon):
    stub = daemon.stub
    seen = set()
    for mode in ("unspecified", "auto", "loose", "packed"):
        for compression in ("unspecified", "no", "yes", "auto"):
            data = text_bytes(48 * KiB + 5, f"{mode}-{compression}")
            ref = support.put(stub, data, mode, compression)
            assert ref.key == key_of(data), (mode, compression)
            assert ref.size == len(data)
            assert ref.key not in seen
            seen.add(ref.key)
            entry = stat_one(stub, ref.key)
            assert entry.found
            info = entry.info
            assert (info.key, info.size) == (ref.key, len(data))
            where = f"mode {mode}, compression {compression}"
            if mode == "loose":
                assert not info.packed, where
                assert not info.compressed, f"{where}: loose objects are never compressed"
                assert info.stored_size == 0, where
            else:
                # Small objects go to packs in auto mode (the default mode).
                assert info.packed, where
                compressed = compression in ("yes", "auto")
                assert info.compressed == compressed, where
                if compressed:
                    assert 0 < info.stored_size < len(data), where
                else:
                    assert info.stored_size == len(data), where
            assert support.get_bytes(stub, ref.key) == data, where
    # Auto compression leaves incompressible objects as they are.
    data = random_bytes(48 * KiB, "incompressible")
    ref = support.put(stub, data, "packed", "auto")
    info = stat_one(stub, ref.key).info
    assert info.packed and not info.compressed and info.stored_size == len(data)
    wait_counts(daemon, loose_objects=4, packed_objects=13)


def test_put_is_idempotent(daemon):
    stub = daemon.stub
    objects = {
        mode: text_bytes(10 * KiB, f"idempotent-{mode}") for mode in ("loose", "packed", "auto")
    }
    for mode, data in objects.items():
        assert support.put(stub, data, mode).key == key_of(data)
    before = wait_counts(daemon, loose_objects=1, packed_objects=2)
    for _ in range(2):
        for mode, data in objects.items():
            ref = support.put(stub, data, mode)
            assert (ref.key, ref.size) == (key_of(data), len(data))
            ref = support.put_stream(stub, data, mode, chunk=4 * KiB)
            assert (ref.key, ref.size) == (key_of(data), len(data))
    after = wait_counts(daemon, loose_objects=1, packed_objects=2)
    assert after.packed_bytes == before.packed_bytes
    keys = [key for page in support.list_keys(stub) for key in page]
    assert sorted(keys) == sorted(key_of(data) for data in objects.values())


def test_default_mode_flag(daemons):
    loose = daemons(flags={"--default-mode": "loose"}, name="default-loose")
    ref = support.put(loose.stub, b"default mode loose", "unspecified")
    assert not stat_one(loose.stub, ref.key).info.packed
    packed = daemons(flags={"--default-mode": "packed", "--auto-packed-max-size": "4KiB"},
                     name="default-packed")
    data = random_bytes(64 * KiB, "default packed")
    assert stat_one(packed.stub, support.put(packed.stub, data, "unspecified").key).info.packed
    ref = support.put_stream(packed.stub, data + b"!", "unspecified")
    assert stat_one(packed.stub, ref.key).info.packed


def test_auto_mode_splits_at_auto_packed_max_size(daemons):
    daemon = daemons(flags={"--auto-packed-max-size": "64KiB"})
    stub = daemon.stub
    cases = [
        # (how, size, mode, expected packed)
        ("put", 64 * KiB, "auto", True),  # "up to this size" go to packs
        ("put", 64 * KiB + 1, "auto", False),
        ("put", 64 * KiB + 1, "unspecified", False),
        ("put", 200 * KiB, "packed", True),
        ("stream", 1 * KiB, "auto", True),
        ("stream", 200 * KiB, "auto", False),
        ("stream", 200 * KiB, "unspecified", False),
        ("stream", 200 * KiB, "packed", True),
        ("stream", 200 * KiB, "loose", False),
        ("stream", 1 * KiB, "loose", False),
    ]
    for index, (how, size, mode, expect_packed) in enumerate(cases):
        data = random_bytes(size, f"auto split {index}")
        if how == "put":
            ref = support.put(stub, data, mode)
        else:
            ref = support.put_stream(stub, data, mode, chunk=50 * KiB)
        assert ref.key == key_of(data)
        info = stat_one(stub, ref.key).info
        assert info.packed == expect_packed, f"{how} of {size} bytes in mode {mode}"
        assert support.get_bytes(stub, ref.key) == data


# ---- PutStream ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "loose", "packed"])
def test_put_stream_sizes(daemon, mode):
    stub = daemon.stub
    # The empty object: one message, options and finish_write, no data.
    ref = stub.PutStream(
        iter([pb.PutStreamRequest(options=pb.PutOptions(mode=support.MODES[mode]),
                                  finish_write=True)]),
        timeout=support.RPC_TIMEOUT,
    ).object
    assert (ref.key, ref.size) == (key_of(b""), 0)
    first, _, data = get(stub, ref.key)
    assert data == b"" and first.info.size == 0 and first.length == 0
    cases = [
        (b"x", 1),
        (random_bytes(37 * (33 * KiB + 7), f"odd chunks {mode}"), 33 * KiB + 7),
        (random_bytes(5 * MiB + 3, f"big {mode}"), 1 * MiB),
        (text_bytes(3 * MiB, f"compressible {mode}"), 256 * KiB),
    ]
    for data, chunk in cases:
        ref = support.put_stream(stub, data, mode, "yes", chunk=chunk)
        assert (ref.key, ref.size) == (key_of(data), len(data))
        assert support.get_bytes(stub, ref.key) == data
        info = stat_one(stub, ref.key).info
        if mode == "packed":
            assert info.packed
        if mode == "loose":
            assert not info.packed and not info.compressed


def test_put_stream_without_finish_write_stores_nothing(daemon):
    stub = daemon.stub
    before = counts(daemon)
    for mode in ("auto", "loose", "packed"):
        data = random_bytes(3 * MiB, f"unfinished {mode}")
        requests = support.stream_requests(data, mode, chunk=256 * KiB, finish=False)
        code, details = support.code_of(
            lambda: stub.PutStream(requests, timeout=support.RPC_TIMEOUT))
        assert code != "OK", f"a {mode} PutStream without finish_write was answered OK"
        present = stub.Has(pb.HasRequest(keys=[key_of(data), key_of(data[: 256 * KiB])]),
                           timeout=support.RPC_TIMEOUT).present
        assert list(present) == [False, False], f"mode {mode}: {code} {details}"
    wait_for(lambda: not sandbox_files(daemon.store), 10, "an empty sandbox/")
    after = counts(daemon)
    assert (after.loose_objects, after.packed_objects) == (before.loose_objects,
                                                            before.packed_objects)
    assert support.list_keys(daemon.stub) in ([], [[]])


# ---- PutMany ------------------------------------------------------------------------


def test_put_many_answers_each_message_in_order(daemon):
    stub = daemon.stub
    outbox = queue.Queue()

    def requests():
        while True:
            message = outbox.get(timeout=support.RPC_TIMEOUT)
            if message is None:
                return
            yield message

    call = stub.PutMany(requests(), timeout=15)
    batches = [
        [b"first", b"", text_bytes(100 * KiB, "b0")],
        [random_bytes(700 * KiB, "b1"), b"first", b"x"],
        [text_bytes(n, f"b2-{n}") for n in range(1, 40)],
    ]
    for index, batch in enumerate(batches):
        message = pb.PutManyRequest(objects=batch)
        if index == 0:
            message.options.mode = pb.PUT_MODE_PACKED
        outbox.put(message)
        # Each message is answered before the next one is sent.
        response = next(call)
        assert [ref.key for ref in response.objects] == [key_of(data) for data in batch]
        assert [ref.size for ref in response.objects] == [len(data) for data in batch]
        present = stub.Has(pb.HasRequest(keys=[key_of(data) for data in batch]),
                           timeout=support.RPC_TIMEOUT).present
        assert all(present), f"message {index} answered before its objects were stored"
    outbox.put(None)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("mode,compression", [("packed", "auto"), ("loose", "no"),
                                              ("auto", "yes")])
def test_put_many_mixed_sizes_and_duplicates(daemon, mode, compression):
    stub = daemon.stub
    sizes = [0, 1, 100, 4 * KiB, 64 * KiB, 300 * KiB, 1 * MiB + 1]
    batches = [
        [random_bytes(size, f"many-{mode}-{size}") for size in sizes],
        [text_bytes(size, f"many-{mode}-{size}") for size in sizes],
    ]
    # Duplicates within a message and across messages.
    batches.append([batches[0][2], batches[0][2], batches[1][3], b""])
    batches.append([batches[0][5]])
    answers = support.put_many(stub, batches, mode, compression)
    assert len(answers) == len(batches)
    for batch, answer in zip(batches, answers):
        assert [(ref.key, ref.size) for ref in answer] == [(key_of(d), len(d)) for d in batch]
    distinct = {key_of(data): data for batch in batches for data in batch}
    for key, data in distinct.items():
        assert support.get_bytes(stub, key) == data
        info = stat_one(stub, key).info
        if mode == "loose":
            assert not info.packed
        if mode == "packed":
            assert info.packed
    keys = [key for page in support.list_keys(stub) for key in page]
    assert keys == sorted(distinct)


@pytest.mark.parametrize("mode", ["packed", "loose", "auto"])
def test_put_many_answers_an_empty_message(daemon, mode):
    # "every request message is answered by one response message": one
    # without objects gets an answer without keys.
    batches = [[b"before the empty one"], [], [b"after the empty one"]]
    answers = support.put_many(daemon.stub, batches, mode, timeout=10)
    assert [[ref.key for ref in answer] for answer in answers] == [
        [key_of(data) for data in batch] for batch in batches]


# ---- Get ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode,compression", [("loose", "no"), ("packed", "no"),
                                              ("packed", "yes")])
def test_get_whole_object(daemon, mode, compression):
    stub = daemon.stub
    for size in (0, 1, 1000, 256 * KiB, 1 * MiB, 3 * MiB + 123):
        data = text_bytes(size, f"get {size}") if compression == "yes" else random_bytes(
            size, f"get {size}")
        ref = support.put_stream(stub, data, mode, compression)
        first, messages, received = get(stub, ref.key)
        assert received == data, f"{size} bytes, {mode}/{compression}"
        assert first.HasField("info")
        info = first.info
        assert (info.key, info.size) == (ref.key, size)
        assert info.packed == (mode == "packed")
        assert (first.offset, first.length) == (0, size)
        check_chunks(messages, size)
        if mode == "packed" and compression == "yes" and size >= 1000:
            assert info.compressed and 0 < info.stored_size < size
        if mode == "loose":
            assert not info.compressed and info.stored_size == 0


@pytest.mark.parametrize("mode,compression", [("loose", "no"), ("packed", "no"),
                                              ("packed", "yes")])
def test_get_byte_ranges(daemon, mode, compression):
    stub = daemon.stub
    size = 3 * MiB + 4321
    data = text_bytes(size, "ranges") if compression == "yes" else random_bytes(size, "ranges")
    key = support.put_stream(stub, data, mode, compression).key
    cases = [
        # (offset, length or None, expected offset, expected length)
        (0, None, 0, size),
        (0, 0, 0, 0),
        (1, 1, 1, 1),
        (1000, 700_000, 1000, 700_000),
        (size - 1, None, size - 1, 1),
        (2 * MiB + 7, None, 2 * MiB + 7, size - 2 * MiB - 7),
        (10, 10 * size, 10, size - 10),  # a length past the end: to the end
        (size, None, size, 0),
        (size, 5, size, 0),
    ]
    for offset, length, expect_offset, expect_length in cases:
        fields = {"offset": offset}
        if length is not None:
            fields["length"] = length
        first, messages, received = get(stub, key, **fields)
        where = f"offset {offset}, length {length}"
        assert (first.offset, first.length) == (expect_offset, expect_length), where
        assert received == data[expect_offset : expect_offset + expect_length], where
        assert first.info.size == size, where
        check_chunks(messages, expect_length)


def test_get_offset_past_the_end_is_clamped(daemon):
    # "the range being sent, after clamping to the object": an empty range
    # at the object's end, not an error.
    data = random_bytes(1000, "past the end")
    key = support.put(daemon.stub, data, "packed").key
    for offset, length in ((1001, None), (5000, None), (5000, 10)):
        fields = {"offset": offset}
        if length is not None:
            fields["length"] = length
        first, messages, received = get(daemon.stub, key, **fields)
        assert (first.offset, first.length, received) == (1000, 0, b""), fields
        assert first.info.size == 1000


def test_get_verify(daemon):
    stub = daemon.stub
    for mode, compression in (("loose", "no"), ("packed", "no"), ("packed", "yes")):
        data = text_bytes(2 * MiB + 17, f"verify {mode} {compression}")
        key = support.put_stream(stub, data, mode, compression).key
        first, messages, received = get(stub, key, verify=True)
        assert received == data
        check_chunks(messages, len(data))


# ---- GetMany ------------------------------------------------------------------------


def test_get_many(daemon):
    stub = daemon.stub
    objects = {}

    def store(data, how, mode, compression="no"):
        ref = how(stub, data, mode, compression)
        assert ref.key == key_of(data)
        objects[ref.key] = data
        return ref.key

    # Packed objects written in several calls, so storage order is not the
    # order of any one request below.
    small_packed = []
    for batch in range(4):
        datas = [random_bytes(100 + 997 * i, f"gm-{batch}-{i}") for i in range(12)]
        for data, ref in zip(datas, support.put_many(stub, [datas], "packed")[0]):
            assert ref.key == key_of(data)
            objects[ref.key] = data
            small_packed.append(ref.key)
    big_packed = store(random_bytes(3 * MiB + 5, "gm-big-packed"), support.put_stream, "packed")
    compressed = store(text_bytes(2 * MiB, "gm-compressed"), support.put_stream, "packed", "yes")
    big_loose = store(random_bytes(2 * MiB + 9, "gm-big-loose"), support.put_stream, "loose")
    small_loose = [store(random_bytes(50 + i, f"gm-loose-{i}"), support.put, "loose")
                   for i in range(5)]
    empty = store(b"", support.put, "packed")
    missing = [key_of(f"never stored {i}".encode()) for i in range(3)]

    request = (list(reversed(small_packed)) + [missing[0], big_loose, big_packed]
               + small_loose + [compressed, missing[1], empty]
               + small_packed[:5] + [big_packed, missing[0], missing[2]])
    messages = support.get_many(stub, request)
    for message in messages:
        assert message.ByteSize() <= MESSAGE_MAX, f"a {message.ByteSize()} byte message"
        for piece in message.pieces:
            assert len(piece.data) <= CHUNK_MAX
    received, reported_missing, order, pieces = support.assemble_pieces(messages)

    # Every requested key exactly once: found ones with their exact bytes,
    # missing ones flagged.
    assert sorted(reported_missing) == sorted(missing)
    assert set(received) == set(objects)
    for key, data in objects.items():
        assert received[key] == data, f"wrong bytes for {key}"
    # Small objects come whole in one piece, and one message carries many.
    for key in small_packed + small_loose + [empty]:
        assert pieces[key] == 1, f"small object {key} came in {pieces[key]} pieces"
    assert pieces[big_packed] > 1 and pieces[big_loose] > 1
    assert len(messages) < len(small_packed), "one message per small object"
    # Storage order: objects up to 1 MiB stream whole in (pack, offset)
    # order, loose ones after the packed ones; larger objects follow them
    # all, in pieces.
    rows = index_rows(daemon.store)
    order = [key for key in order if key in objects]
    whole = [key for key in order if len(objects[key]) <= MiB]
    packed_whole = [key for key in whole if key in rows]
    storage_order = sorted(packed_whole, key=lambda key: rows[key])
    out_of_place = [
        f"{key[:12]} ({len(objects[key])} bytes, pack {rows[key][0]} offset {rows[key][1]}): "
        f"sent #{packed_whole.index(key)}, stored #{storage_order.index(key)}"
        for key in packed_whole if packed_whole.index(key) != storage_order.index(key)]
    assert packed_whole == storage_order, (
        "GetMany did not stream packed objects in storage order:\n" + "\n".join(out_of_place[:8]))
    assert whole == packed_whole + [key for key in whole if key not in rows], (
        "loose objects must follow the packed ones")
    large = [key for key in order if len(objects[key]) > MiB]
    assert order == whole + large, "objects over 1 MiB must follow the whole ones"
    assert messages and support.get_many(stub, []) in ([], [pb.GetManyResponse()])


def test_get_many_only_missing(daemon):
    missing = [key_of(b"nothing here"), key_of(b"nor here")]
    received, reported, _, _ = support.assemble_pieces(support.get_many(daemon.stub, missing))
    assert received == {} and sorted(reported) == sorted(missing)


# ---- Stat, Has, List ----------------------------------------------------------------


def test_stat_and_has(daemon):
    stub = daemon.stub
    loose = text_bytes(5000, "stat loose")
    packed = text_bytes(5000, "stat packed")
    support.put(stub, loose, "loose")
    support.put(stub, packed, "packed", "yes")
    absent = key_of(b"stat absent")
    keys = [absent, key_of(packed), key_of(loose), key_of(packed), absent]
    stats = stub.Stat(pb.StatRequest(keys=keys), timeout=support.RPC_TIMEOUT).stats
    assert [entry.found for entry in stats] == [False, True, True, True, False]
    assert stats[1].info.key == key_of(packed) and stats[1].info.size == 5000
    assert stats[1].info.packed and stats[1].info.compressed
    assert 0 < stats[1].info.stored_size < 5000
    assert stats[2].info.key == key_of(loose) and not stats[2].info.packed
    assert stats[2].info.stored_size == 0
    assert stats[3] == stats[1]
    present = stub.Has(pb.HasRequest(keys=keys), timeout=support.RPC_TIMEOUT).present
    assert list(present) == [False, True, True, True, False]
    assert list(stub.Has(pb.HasRequest(), timeout=support.RPC_TIMEOUT).present) == []
    assert list(stub.Stat(pb.StatRequest(), timeout=support.RPC_TIMEOUT).stats) == []


def test_list(daemon):
    stub = daemon.stub
    datas = [random_bytes(20 + i % 50, f"list {i}") for i in range(300)]
    support.put_many(stub, [datas[:150], datas[150:250]], "packed")
    for data in datas[250:]:
        support.put(stub, data, "loose")
    # An object both packed and loose is listed once.
    support.put(stub, datas[0], "loose")
    expected = sorted({key_of(data) for data in datas})

    pages = support.list_keys(stub)
    assert [key for page in pages for key in page] == expected
    pages = support.list_keys(stub, page_size=7)
    assert [key for page in pages for key in page] == expected
    assert all(len(page) == 7 for page in pages[:-1]), [len(page) for page in pages]
    assert 1 <= len(pages[-1]) <= 7
    # Resumable after any key.
    for index in (0, 1, 99, 298, 299):
        keys = [key for page in support.list_keys(stub, after=expected[index], page_size=50)
                for key in page]
        assert keys == expected[index + 1 :], f"after key #{index}"
    # After a key that is not stored, and after a prefix: every key above it.
    absent = key_of(b"list absent")
    keys = [key for page in support.list_keys(stub, after=absent) for key in page]
    assert keys == [key for key in expected if key > absent]
    keys = [key for page in support.list_keys(stub, after="8") for key in page]
    assert not [key for key in keys if key < "8"]
    assert [key for key in keys if key >= "9"] == [key for key in expected if key >= "9"]
    assert keys == sorted(keys)
    assert [key for page in support.list_keys(stub, after="f" * 64) for key in page] == []


# ---- Status -------------------------------------------------------------------------


def test_status(daemon):
    stub = daemon.stub
    status = daemon.status()
    assert status.version, "Status.version is empty"
    assert Path(status.container_dir).resolve() == daemon.store.resolve()
    config = json.loads((daemon.store / "config.json").read_text())
    assert status.config.container_id == config["container_id"]
    assert status.config.container_version == config["container_version"] == 1
    assert status.config.loose_prefix_len == config["loose_prefix_len"]
    assert status.config.pack_size_target == config["pack_size_target"]
    assert status.config.hash_type == "sha256"
    assert status.config.compression_algorithm == config["compression_algorithm"]
    assert status.free_bytes_reserve == 16 * MiB
    assert status.free_bytes > status.free_bytes_reserve
    assert status.maintenance == ""
    wait_counts(daemon, loose_objects=0, packed_objects=0, pack_files=0, hole_bytes=0)

    loose = [random_bytes(1000 + i, f"status loose {i}") for i in range(3)]
    for data in loose:
        support.put(stub, data, "loose")
    packed = [text_bytes(20_000 + i, f"status packed {i}") for i in range(4)]
    support.put_many(stub, [packed[:2], packed[2:]], "packed", "yes")
    now = wait_counts(daemon, loose_objects=3, loose_bytes=sum(map(len, loose)),
                      packed_objects=4, packed_bytes=sum(map(len, packed)))
    assert 0 < now.packed_stored_bytes < now.packed_bytes
    assert now.pack_files >= 1 and now.pack_file_bytes >= now.packed_stored_bytes
    assert now.index_bytes > 0

    support.maintenance(stub, "Pack")
    support.maintenance(stub, "Clean")
    wait_counts(daemon, loose_objects=0, loose_bytes=0, packed_objects=7,
                packed_bytes=sum(map(len, loose + packed)))

    status = daemon.status()
    calls = {re.split(r"[/.]", method.method)[-1]: method for method in status.rpcs}
    assert "Put" in calls and calls["Put"].calls >= 3, [m.method for m in status.rpcs]
    assert calls["Put"].bytes_in >= sum(map(len, loose))
    assert "PutMany" in calls and calls["PutMany"].calls >= 1
    assert "Pack" in calls and calls["Pack"].calls >= 1


# ---- maintenance --------------------------------------------------------------------


def check_progress(progress):
    for event in progress:
        assert event.phase, "a progress message without a phase"
        if event.total:
            assert event.done <= event.total, f"progress {event.done}/{event.total}"


def test_pack_and_clean(daemon):
    stub = daemon.stub
    datas = [random_bytes(3000 + i, f"pack {i}") for i in range(20)]
    datas.append(random_bytes(3 * MiB, "pack big"))
    for data in datas:
        support.put_stream(stub, data, "loose")
    support.put(stub, text_bytes(500, "already packed"), "packed")
    wait_counts(daemon, loose_objects=len(datas), packed_objects=1)

    progress, _, result = support.maintenance(stub, "Pack", pb.PackRequest())
    check_progress(progress)
    assert result.packed == len(datas), result
    assert not result.corrupt
    for data in datas:
        info = stat_one(stub, key_of(data)).info
        assert info.packed
        assert support.get_bytes(stub, key_of(data)) == data
    wait_counts(daemon, packed_objects=len(datas) + 1)

    progress, _, cleaned = support.maintenance(stub, "Clean", pb.CleanRequest(vacuum=True))
    check_progress(progress)
    assert result.loose_deleted + cleaned.loose_deleted == len(datas)
    assert loose_files(daemon.store) == []
    wait_counts(daemon, loose_objects=0, packed_objects=len(datas) + 1)
    for data in datas:
        assert support.get_bytes(stub, key_of(data), verify=True) == data

    # Nothing left to do.
    _, _, again = support.maintenance(stub, "Pack")
    assert again.packed == 0 and again.loose_deleted == 0
    _, _, again = support.maintenance(stub, "Clean")
    assert again.loose_deleted == 0


def test_pack_with_compression(daemon):
    stub = daemon.stub
    text = text_bytes(200 * KiB, "pack compress")
    noise = random_bytes(200 * KiB, "pack noise")
    for data in (text, noise):
        support.put(stub, data, "loose")
    _, _, result = support.maintenance(
        stub, "Pack", pb.PackRequest(compression=pb.COMPRESSION_AUTO))
    assert result.packed == 2
    assert stat_one(stub, key_of(text)).info.compressed
    assert not stat_one(stub, key_of(noise)).info.compressed
    assert support.get_bytes(stub, key_of(text)) == text


def test_delete(daemon):
    stub = daemon.stub
    packed = [random_bytes(4000 + i, f"delete packed {i}") for i in range(6)]
    support.put_many(stub, [packed], "packed")
    loose = [random_bytes(300 + i, f"delete loose {i}") for i in range(3)]
    for data in loose:
        support.put(stub, data, "loose")
    doomed = [key_of(packed[0]), key_of(packed[3]), key_of(loose[1])]
    absent = key_of(b"delete absent")
    progress, _, result = support.maintenance(
        stub, "Delete", pb.DeleteRequest(keys=doomed + [absent]))
    check_progress(progress)
    assert result.deleted == 3, result
    for key in doomed:
        message = expect_code(grpc.StatusCode.NOT_FOUND, lambda: support.get(stub, key))
        assert key in message, f"NOT_FOUND message does not name the key: {message!r}"
        assert not stat_one(stub, key).found
    assert not any(stub.Has(pb.HasRequest(keys=doomed), timeout=support.RPC_TIMEOUT).present)
    assert not loose_path(daemon.store, key_of(loose[1])).exists()
    kept = [data for data in packed + loose if key_of(data) not in doomed]
    listed = [key for page in support.list_keys(stub) for key in page]
    assert listed == sorted(key_of(data) for data in kept)
    for data in kept:
        assert support.get_bytes(stub, key_of(data)) == data
    wait_counts(daemon, packed_objects=4, loose_objects=2)
    assert counts(daemon).hole_bytes >= len(packed[0]) + len(packed[3])
    # Deleted objects can be stored again.
    assert support.put(stub, packed[0], "packed").key == doomed[0]
    assert support.get_bytes(stub, doomed[0]) == packed[0]


def test_repack_reclaims_holes(daemon):
    stub = daemon.stub
    datas = [random_bytes(50 * KiB + i, f"repack {i}") for i in range(10)]
    texts = [text_bytes(80 * KiB + i, f"repack text {i}") for i in range(4)]
    support.put_many(stub, [datas[:5], datas[5:]], "packed")
    support.put_many(stub, [texts], "packed", "yes")
    deleted = datas[::2]
    _, _, result = support.maintenance(
        stub, "Delete", pb.DeleteRequest(keys=[key_of(data) for data in deleted]))
    assert result.deleted == len(deleted)
    holes = counts(daemon).hole_bytes
    assert holes >= sum(map(len, deleted))

    progress, _, repacked = support.maintenance(stub, "Repack", pb.RepackRequest())
    check_progress(progress)
    assert repacked.bytes_reclaimed == holes, repacked
    assert repacked.packs_rewritten + repacked.packs_removed >= 1
    now = wait_counts(daemon, hole_bytes=0, packed_objects=len(datas) - len(deleted) + len(texts))
    assert now.pack_file_bytes == now.packed_stored_bytes
    for data in datas[1::2] + texts:
        assert support.get_bytes(stub, key_of(data), verify=True) == data
    for data in texts:
        assert stat_one(stub, key_of(data)).info.compressed, "repack kept compression"
    _, _, validated = support.maintenance(stub, "Validate")
    assert validated.issues == 0


def test_validate_healthy_store(daemon):
    stub = daemon.stub
    for i in range(5):
        support.put(stub, random_bytes(1000 + i, f"validate loose {i}"), "loose")
    support.put_many(stub, [[text_bytes(2000 + i, f"validate packed {i}") for i in range(7)]],
                     "packed", "auto")
    progress, issues, result = support.maintenance(stub, "Validate")
    check_progress(progress)
    assert list(issues) == [] and result.issues == 0, issues
    assert (result.loose_checked, result.packed_checked) == (5, 7)


def test_validate_and_get_report_a_corrupt_loose_object(daemon):
    stub = daemon.stub
    good = random_bytes(2000, "healthy loose")
    bad = random_bytes(300 * KiB, "corrupt loose")
    support.put(stub, good, "loose")
    key = support.put_stream(stub, bad, "loose").key
    path = loose_path(daemon.store, key)
    assert path.is_file(), f"no loose file at {path}"
    with open(path, "r+b") as file:
        file.seek(200 * KiB)
        file.write(b"\0corrupted\0")

    _, issues, result = support.maintenance(stub, "Validate")
    assert result.issues >= 1 and len(issues) == result.issues
    corrupt = [issue for issue in issues if issue.kind == "corrupt_loose"]
    assert [issue.subject for issue in corrupt] == [key], issues
    assert result.loose_checked == 2

    message = expect_code(grpc.StatusCode.DATA_LOSS,
                           lambda: stub.Get(pb.GetRequest(key=key, verify=True),
                                            timeout=support.RPC_TIMEOUT))
    assert key in message, f"DATA_LOSS message does not name the key: {message!r}"
    assert support.get_bytes(stub, key_of(good), verify=True) == good
    # Packing leaves the corrupt object loose and reports it.
    _, _, packed = support.maintenance(stub, "Pack")
    assert list(packed.corrupt) == [key]
    assert not stat_one(stub, key).info.packed


def test_validate_and_get_report_a_corrupt_packed_object(daemon):
    stub = daemon.stub
    datas = [random_bytes(64 * KiB, f"packed {i}") for i in range(3)]
    support.put_many(stub, [datas], "packed")
    rows = index_rows(daemon.store)
    victim = key_of(datas[1])
    pack_id, offset = rows[victim]
    with open(daemon.store / "packs" / str(pack_id), "r+b") as pack:
        pack.seek(offset + 1000)
        byte = pack.read(1)
        pack.seek(offset + 1000)
        pack.write(bytes([byte[0] ^ 0xFF]))

    _, issues, result = support.maintenance(stub, "Validate")
    assert [(issue.kind, issue.subject) for issue in issues] == [("corrupt_packed", victim)]
    assert result.issues == 1 and result.packed_checked == 3
    message = expect_code(grpc.StatusCode.DATA_LOSS,
                           lambda: stub.Get(pb.GetRequest(key=victim, verify=True),
                                            timeout=support.RPC_TIMEOUT))
    assert victim in message, f"DATA_LOSS message does not name the key: {message!r}"
    for data in (datas[0], datas[2]):
        assert support.get_bytes(stub, key_of(data), verify=True) == data


def test_validate_reports_stray_files(daemon):
    stub = daemon.stub
    support.put(stub, b"a loose object", "loose")
    support.put(stub, b"a packed object", "packed")
    (daemon.store / "packs" / "notes.txt").write_bytes(b"not a pack")
    (daemon.store / "loose" / "ab").mkdir(exist_ok=True)
    (daemon.store / "loose" / "ab" / "not-a-key").write_bytes(b"not an object")
    _, issues, result = support.maintenance(stub, "Validate")
    stray = sorted(issue.subject for issue in issues if issue.kind == "stray_file")
    assert len(stray) == 2 and result.issues == len(issues) == 2, [
        (issue.kind, issue.subject) for issue in issues]
    assert "notes.txt" in stray[0] + stray[1] and "not-a-key" in stray[0] + stray[1], stray


# ---- life cycle ---------------------------------------------------------------------


def test_sigterm_then_restart_keeps_every_object(daemons):
    daemon = daemons()
    stub = daemon.stub
    datas = [random_bytes(100 + 5000 * i, f"restart {i}") for i in range(8)]
    support.put_many(stub, [datas[:4]], "packed")
    for data in datas[4:]:
        support.put(stub, data, "loose")
    assert daemon.stop() == 0, f"exit code after SIGTERM:\n{daemon.log_tail()}"
    assert not daemon.socket.exists(), "the daemon left the socket it bound behind"
    daemon.init = False
    daemon.start()
    for data in datas:
        assert support.get_bytes(daemon.stub, key_of(data), verify=True) == data
    _, _, result = support.maintenance(daemon.stub, "Validate")
    assert result.issues == 0


def test_sigterm_with_calls_in_flight_exits_within_the_shutdown_timeout(daemons):
    daemon = daemons(flags={"--shutdown-timeout": "2"})
    stub = daemon.stub
    big = random_bytes(8 * MiB, "unread")
    support.put_stream(stub, big, "packed")
    release = threading.Event()

    def held_stream():
        yield pb.PutStreamRequest(options=pb.PutOptions(mode=pb.PUT_MODE_LOOSE), data=b"held")
        release.wait(timeout=60)

    def held_many():
        yield pb.PutManyRequest(options=pb.PutOptions(mode=pb.PUT_MODE_PACKED), objects=[b"m"])
        release.wait(timeout=60)

    try:
        in_flight = [
            daemon.new_stub().PutStream.future(held_stream(), timeout=60),
            daemon.new_stub().PutMany(held_many(), timeout=60),
            daemon.new_stub().Get(pb.GetRequest(key=key_of(big)), timeout=60),  # never read
        ]
        time.sleep(1.0)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.wait_exit(timeout=20)
        took = time.monotonic() - started
    finally:
        release.set()
    assert code == 0, f"exit code {code} after SIGTERM:\n{daemon.log_tail()}"
    assert took < 2 + 8, f"took {took:.1f} s to stop with --shutdown-timeout 2"
    for call in in_flight:
        call.cancel()


def test_auto_pack_past_the_loose_threshold(daemons):
    daemon = daemons(flags={"--auto-pack": "true", "--pack-loose-objects": "5",
                            "--maintenance-interval": "1", "--clean-after-pack": "true"})
    stub = daemon.stub
    datas = [random_bytes(2000 + i, f"auto pack {i}") for i in range(6)]
    for data in datas:
        support.put(stub, data, "loose")
    keys = [key_of(data) for data in datas]

    def all_packed():
        stats = stub.Stat(pb.StatRequest(keys=keys), timeout=support.RPC_TIMEOUT).stats
        return all(entry.info.packed for entry in stats)

    wait_for(all_packed, 15, "the daemon to pack 6 loose objects past --pack-loose-objects 5")
    wait_for(lambda: not loose_files(daemon.store), 15, "the packed loose copies to be cleaned")
    for data in datas:
        assert support.get_bytes(stub, key_of(data), verify=True) == data


def test_sighup_rereads_the_config_file(daemons, tmp_path):
    config = tmp_path / "packstored.conf"
    config.write_text("max-object-size = 1MiB\n")
    daemon = daemons(flags={"--config": str(config)})
    data = random_bytes(100 * KiB, "reloaded limit")
    assert support.put(daemon.stub, data, "packed").key == key_of(data)
    config.write_text("max-object-size = 64KiB\n")
    daemon.process.send_signal(signal.SIGHUP)
    bigger = random_bytes(100 * KiB, "refused after the reload")

    def refused():
        code, _ = support.code_of(lambda: support.put(daemon.stub, bigger, "packed"))
        return code == "RESOURCE_EXHAUSTED"

    wait_for(refused, 10, "SIGHUP to apply max-object-size = 64KiB")
    assert support.health_check(daemon.channel) == "SERVING"
    # A file that does not parse leaves the running configuration as it is.
    config.write_text("max-object-size = 1MiB\nno-such-setting = 1\n")
    daemon.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert daemon.running(), f"a bad config file on SIGHUP stopped the daemon:\n{daemon.log_tail()}"
    assert support.code_of(lambda: support.put(daemon.stub, bigger, "packed"))[0] == (
        "RESOURCE_EXHAUSTED")


def test_second_sigterm_exits_at_once(daemons):
    daemon = daemons(flags={"--shutdown-timeout": "60"})
    release = threading.Event()

    def held_stream():
        yield pb.PutStreamRequest(options=pb.PutOptions(mode=pb.PUT_MODE_LOOSE), data=b"held")
        release.wait(timeout=60)

    call = daemon.new_stub().PutStream.future(held_stream(), timeout=60)
    try:
        time.sleep(1.0)
        daemon.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert daemon.running(), "the daemon did not wait for the call in flight"
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=10) == 1
    finally:
        release.set()
        call.cancel()


def test_start_without_init_needs_a_store(daemons, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    daemon = daemons(store=empty, init=False, start=False)
    daemon.launch()
    assert daemon.wait_exit(timeout=20) == 1
    assert "--init" in daemon.log(), (
        f"the daemon did not say how to create a store:\n{daemon.log()}")
    assert not (empty / "config.json").exists()


@pytest.mark.parametrize("flags,config", [
    ({"--socket-mode": "9999"}, None),
    ({"--default-mode": "fast"}, None),
    ({"--max-object-size": "lots"}, None),
    ({"--config": "{missing}"}, None),
    ({"--config": "{config}"}, "no-such-setting = 1\n"),
], ids=["socket-mode", "default-mode", "size", "missing-config", "unknown-config-key"])
def test_bad_flag_or_config_exits_2(daemons, tmp_path, flags, config):
    config_path = tmp_path / "packstored.conf"
    if config is not None:
        config_path.write_text(config)
    flags = {flag: value.format(missing=tmp_path / "missing.conf", config=config_path)
             for flag, value in flags.items()}
    daemon = daemons(flags=flags, start=False)
    daemon.launch()
    assert daemon.wait_exit(timeout=20) == 2, daemon.log()
    assert not daemon.socket.exists()
