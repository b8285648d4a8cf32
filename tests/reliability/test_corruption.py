"""Damaged stores: with the daemon stopped, one kind of damage is done to a
store (docs/format.md says what each file holds), then the daemon is started
on it and must:

- start (or, for an index it cannot read, refuse with a message naming it),
- report the damage in Validate precisely: the issue kind
  (server/store/container.h, ValidateIssue) and the key or pack concerned,
  and nothing else,
- answer DATA_LOSS, never wrong bytes, to reads that verify (Get with
  verify, and the Python client's verifying get through the fast path),
  and to every read when the damage is one a read can see without hashing
  (a missing pack, bytes past the end of a pack, a stream that does not
  decode),
- go on reading every undamaged object correctly, over gRPC (Get, ranged
  Get, GetMany) and the fast path.
"""

import os
import sqlite3
import subprocess

import grpc
import pytest

import daemon_support as support
import reliability_support as rs
from daemon_support import KiB, MiB, key_of, pb, random_bytes, text_bytes
from reliability_support import FastPath

import packstore  # the Python client of <build>/python

T = support.RPC_TIMEOUT
PACK_TARGET = 256 * KiB  # several packs, so one can be lost alone
DATA_LOSS = grpc.StatusCode.DATA_LOSS


class Store:
    """A store with packed (plain and compressed, in several packs) and loose
    objects, made by a daemon that was then stopped."""

    def __init__(self, daemons, tmp_path):
        self.path = tmp_path / "store"
        subprocess.run([str(support.CLI_BIN), "--store", str(self.path), "init",
                        "--pack-size-target", str(PACK_TARGET)],
                       check=True, capture_output=True, timeout=60)
        maker = daemons(store=self.path, init=False, name="maker")
        stub = maker.stub
        self.contents = {}
        self.plain = self._put(stub, [random_bytes(40 * KiB + i, f"plain {i}") for i in range(12)],
                               "packed", "no")
        self.compressed = self._put(stub, [text_bytes(90 * KiB + i, f"zipped {i}")
                                           for i in range(6)], "packed", "yes")
        self.big = self._put(stub, [random_bytes(3 * MiB, "big packed")], "packed", "no")
        self.loose = self._put(stub, [random_bytes(200 * KiB + i, f"loose {i}")
                                      for i in range(4)], "loose")
        self.empty = self._put(stub, [b""], "packed")
        _, issues, result = support.maintenance(stub, "Validate")
        assert result.issues == 0, list(issues)
        assert maker.stop() == 0
        assert not (self.path / "packs.idx-wal").exists() or \
            (self.path / "packs.idx-wal").stat().st_size == 0
        self.rows = rs.index_rows(self.path)
        assert len({row[0] for row in self.rows.values()}) >= 3, "want several packs"
        self.daemons = daemons

    def _put(self, stub, datas, mode, compression="unspecified"):
        keys = []
        for data in datas:
            key = support.put(stub, data, mode, compression).key
            self.contents[key] = data
            keys.append(key)
        return keys

    def pack_of(self, key):
        return self.path / "packs" / str(self.rows[key][0])

    def keys_in_pack(self, pack_id):
        return [key for key, row in self.rows.items() if row[0] == pack_id]

    def start(self):
        return self.daemons(store=self.path, init=False, name="damaged")


def flip(path, offset, count=1):
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def validate_issues(daemon):
    _, issues, result = support.maintenance(daemon.stub, "Validate")
    assert result.issues == len(issues)
    return sorted((issue.kind, issue.subject) for issue in issues), list(issues)


def get_error(stub, key, **fields):
    return support.code_of(lambda: stub.Get(pb.GetRequest(key=key, **fields), timeout=T))


def verified_by_client(socket, key):
    """The Python client's verifying get (through the fast path when it can):
    ("OK", bytes) or (error class name, message)."""
    with packstore.Client(str(socket), timeout=T) as client:
        try:
            return "OK", client.get(key, verify=True)
        except packstore.PackstoreError as error:
            return type(error).__name__, str(error)


def assert_undamaged_read_back(daemon, store, damaged):
    """Every object not in `damaged` reads back right: verifying Get, a
    ranged Get, GetMany (in batches that avoid the damaged keys), the fast
    path's LOCATE and the Python client's verifying get."""
    stub = daemon.stub
    good = {key: data for key, data in store.contents.items() if key not in damaged}
    for key, data in good.items():
        assert support.get_bytes(stub, key, verify=True) == data, key
        if len(data) > 10:
            assert support.get_bytes(stub, key, offset=3, length=7) == data[3:10], key
    objects, missing, _, _ = support.assemble_pieces(support.get_many(stub, list(good)))
    assert missing == [] and objects == good
    with FastPath(daemon.socket) as client:
        first, entries = client.locate(list(good))
        assert first.startswith("OK "), first
        for entry in entries:
            assert entry.state == "found" and entry.read() == good[entry.key], entry.key
    for key, data in list(good.items())[::3]:
        assert verified_by_client(daemon.socket, key) == ("OK", data), key


# ---- packs ------------------------------------------------------------------------------


def test_flipped_bytes_in_a_pack(daemons, tmp_path):
    """Bytes flipped in a plain packed object and in a compressed one."""
    store = Store(daemons, tmp_path)
    plain, compressed = store.plain[4], store.compressed[2]
    for key, at in ((plain, 1000), (compressed, 20)):
        _, offset, length, _, _ = store.rows[key]
        flip(store.pack_of(key), offset + at, 4)
    daemon = store.start()
    issues, raw = validate_issues(daemon)
    assert issues == sorted([("corrupt_packed", plain), ("corrupt_packed", compressed)]), raw
    stub = daemon.stub
    hashing = ("the stored bytes of {} do not hash to its key: discard what was received and "
               "run Validate")
    assert get_error(stub, plain, verify=True) == ("DATA_LOSS", hashing.format(plain))
    assert verified_by_client(daemon.socket, plain)[0] == "DataLoss"
    # The compressed stream no longer decodes (or fails its checksum): every
    # whole read sees it, verifying or not, and so does GetMany.
    for fields in ({}, {"verify": True}):
        code, details = get_error(stub, compressed, **fields)
        assert code == "DATA_LOSS" and "zlib" in details, (fields, code, details)
    code, details = support.code_of(lambda: stub.GetMany(
        pb.GetManyRequest(keys=[compressed]), timeout=T))
    assert code == "DATA_LOSS", (code, details)
    assert verified_by_client(daemon.socket, compressed)[0] == "DataLoss"
    # A range cannot be verified: asked for, it is refused, not served unchecked.
    assert get_error(stub, plain, verify=True, offset=0, length=10) == (
        "INVALID_ARGUMENT", "verify needs the whole object: drop offset and length")
    # GetMany has no verify: a client that hashes what it gets sees exactly
    # the damaged plain object differ from its key.
    objects, _, _, _ = support.assemble_pieces(
        support.get_many(stub, [k for k in store.contents if k != compressed]))
    wrong = sorted(key for key, data in objects.items() if key_of(data) != key)
    assert wrong == [plain]
    assert_undamaged_read_back(daemon, store, {plain, compressed})


def test_data_loss_for_an_undecodable_object_names_it(daemons, tmp_path):
    """DATA_LOSS for a compressed object that no longer decodes must say which
    object and what to do, as the other DATA_LOSS messages do ("object <key>
    ...: run Validate"): a GetMany caller cannot otherwise tell which of its
    objects is damaged."""
    store = Store(daemons, tmp_path)
    compressed = store.compressed[2]
    _, offset, _, _, _ = store.rows[compressed]
    flip(store.pack_of(compressed), offset + 20, 4)
    daemon = store.start()
    stub = daemon.stub
    answers = {
        "Get": get_error(stub, compressed),
        "GetMany": support.code_of(lambda: stub.GetMany(
            pb.GetManyRequest(keys=[store.plain[0], compressed]), timeout=T)),
    }
    for name, (code, details) in answers.items():
        assert code == "DATA_LOSS", (name, code, details)
        assert compressed in details and "Validate" in details, f"{name}: {details!r}"


def test_deleted_pack_file(daemons, tmp_path):
    store = Store(daemons, tmp_path)
    pack_id = store.rows[store.plain[0]][0]
    lost = store.keys_in_pack(pack_id)
    os.unlink(store.path / "packs" / str(pack_id))
    daemon = store.start()
    issues, raw = validate_issues(daemon)
    assert issues == [("missing_pack", f"packs/{pack_id}")], raw
    assert raw[0].detail == f"{len(lost)} objects point into a missing file"
    stub = daemon.stub
    message = f"pack file packs/{pack_id} is missing but the index points at it"
    for key in lost:
        for fields in ({}, {"verify": True}, {"offset": 5, "length": 10}):
            assert get_error(stub, key, **fields) == ("DATA_LOSS", message), (key, fields)
        assert verified_by_client(daemon.socket, key)[0] == "DataLoss"
    assert support.code_of(lambda: stub.GetMany(
        pb.GetManyRequest(keys=[lost[0], store.loose[0]]), timeout=T)) == ("DATA_LOSS", message)
    with FastPath(daemon.socket) as client:
        client.send(f"PSFD1 LOCATE {store.loose[0]} {lost[0]}\n")
        assert client.readline() == f"ERR DATA_LOSS {message}"
        first, entries = client.locate([store.loose[0]])
        assert first == "OK 1" and entries[0].read() == store.contents[store.loose[0]]
    assert_undamaged_read_back(daemon, store, set(lost))


# ---- loose files ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_loose_file(daemons, tmp_path, damage):
    store = Store(daemons, tmp_path)
    key = store.loose[1]
    path = rs.loose_path(store.path, key)
    if damage == "truncated":
        os.truncate(path, 100 * KiB)
    else:
        flip(path, 150 * KiB, 3)
    daemon = store.start()
    issues, raw = validate_issues(daemon)
    assert issues == [("corrupt_loose", key)], raw
    on_disk = path.read_bytes()
    assert raw[0].detail == f"content hashes to {key_of(on_disk)}"
    hashing = (f"the stored bytes of {key} do not hash to its key: discard what was received "
               "and run Validate")
    assert get_error(daemon.stub, key, verify=True) == ("DATA_LOSS", hashing)
    assert verified_by_client(daemon.socket, key)[0] == "DataLoss"
    # A loose object's size is its file's: an unverified read sends what the
    # file holds, and what it holds does not hash to the key.
    data = support.get_bytes(daemon.stub, key)
    assert data == on_disk and key_of(data) != key
    assert_undamaged_read_back(daemon, store, {key})


# ---- the index --------------------------------------------------------------------------


def update_row(store, key, **columns):
    connection = sqlite3.connect(store.path / "packs.idx")
    try:
        sets = ", ".join(f'"{name}" = ?' for name in columns)
        connection.execute(f"UPDATE db_object SET {sets} WHERE hashkey = ?",
                           [*columns.values(), key])
        connection.commit()
    finally:
        connection.close()


def test_index_rows_pointing_past_the_end_of_their_pack(daemons, tmp_path):
    """Rows moved past their pack file's end (a plain and a compressed
    object): past_end_of_pack for each, DATA_LOSS for every read
    that reaches past the end, ranged ones included."""
    store = Store(daemons, tmp_path)
    plain, compressed = store.plain[7], store.compressed[4]
    ends = {}
    for i, key in enumerate((plain, compressed)):
        pack_id, offset, length, size, _ = store.rows[key]
        pack_size = os.path.getsize(store.path / "packs" / str(pack_id))
        # Beyond the end, so that it overlaps nothing.
        moved = pack_size + 100 + i * MiB
        update_row(store, key, offset=moved)
        ends[key] = (pack_id, moved + length, pack_size, size)
    daemon = store.start()
    issues, raw = validate_issues(daemon)
    assert issues == sorted([("past_end_of_pack", plain), ("past_end_of_pack", compressed)]), raw
    for issue in raw:
        pack_id, end, pack_size, _ = ends[issue.subject]
        assert issue.detail == f"ends at byte {end} of pack {pack_id}, which has {pack_size}"
    stub = daemon.stub
    for key in (plain, compressed):
        size = ends[key][3]
        for fields in ({}, {"verify": True}, {"offset": size - 200, "length": 100}):
            code, details = get_error(stub, key, **fields)
            assert code == "DATA_LOSS" and key in details, (key, fields, code, details)
        code, details = support.code_of(lambda: stub.GetMany(pb.GetManyRequest(keys=[key]),
                                                             timeout=T))
        assert code == "DATA_LOSS", (key, code, details)
        assert verified_by_client(daemon.socket, key)[0] == "DataLoss"
    assert_undamaged_read_back(daemon, store, {plain, compressed})


def index_page_size(path):
    with open(path, "rb") as f:
        header = f.read(100)
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def root_pages(path):
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT name, rootpage FROM sqlite_master"))
    finally:
        connection.close()


@pytest.mark.parametrize("which", ["db_object", "ix_db_object_hashkey"])
def test_garbage_page_in_the_index(daemons, tmp_path, which):
    """A page of packs.idx overwritten with garbage (the root page of the
    table, or of the key index). Whatever the daemon does, it must not
    answer wrong bytes or NOT_FOUND for stored objects, nor delete a pack
    file. A table it cannot read stops it from starting, naming packs.idx
    (it cannot know which objects it holds; Recovery would act on a partial
    view); a damaged key index, which opening does not read, leaves reads
    failing with DATA_LOSS and Validate reporting corrupt_index."""
    store = Store(daemons, tmp_path)
    index = store.path / "packs.idx"
    page_size = index_page_size(index)
    page = root_pages(index)[which]
    with open(index, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(random_bytes(page_size, "garbage page"))
    packs_before = sorted(os.listdir(store.path / "packs"))
    daemon = store.daemons(store=store.path, init=False, name="damaged", start=False)
    daemon.launch()
    try:
        daemon.wait_serving(timeout=20)
        served = True
    except AssertionError:
        served = False
    assert sorted(os.listdir(store.path / "packs")) == packs_before, "pack files were removed"
    if served:
        # It started: then no read may pretend an object is absent or answer
        # wrong bytes, and Validate must not call the store clean.
        stub = daemon.stub
        for key, data in store.contents.items():
            code, details = support.code_of(lambda: stub.Get(pb.GetRequest(key=key, verify=True),
                                                             timeout=T))
            if code == "OK":
                assert support.get_bytes(stub, key, verify=True) == data
            else:
                assert code == "DATA_LOSS" and "packs.idx" in details, (key, code, details)
        # Validate says so: the index itself is damaged (and checks no
        # pack against rows it cannot trust).
        _, issues, result = support.maintenance(stub, "Validate")
        assert [(i.kind, i.subject) for i in issues] == [("corrupt_index", "packs.idx")], issues
        assert "SQLite's check found" in issues[0].detail, issues[0].detail
        assert result.packed_checked == 0 and result.issues == 1, result
        return
    log = daemon.log(this_run_only=True)
    assert daemon.wait_exit() == 1, log
    last = log.strip().splitlines()[-1]
    assert f"cannot open store {store.path}: packs.idx: " in last, last
    assert "database disk image is malformed" in last, last
