"""packstore keeps the on-disk format of disk-objectstore v1, both ways round.

1. Containers packstore writes read back, rule by rule, the way the Python
   library reads them (dos_reference.ReferenceReader).
2. Containers written the way the Python library writes them
   (dos_reference.ReferenceWriter) open, read and validate in packstore, and
   stay readable by the library after packstore packs, deletes, repacks and
   cleans them.
3. Containers packstore must not open, and folders it must not initialise,
   are refused with a message that names the problem.
4. The states an interrupted repack of the Python library leaves behind
   (rows pointing at pack -1) are recovered when packstore opens them.

The engine is driven through the packstore command-line tool (PACKSTORE_CLI).
"""

import dataclasses
import os
import random
import sqlite3
import zlib

import pytest

from dos_reference import (
    CONTAINER_FOLDERS,
    CREATE_INDEX_SQL,
    CREATE_TABLE_SQL,
    DEFAULT_PACK_SIZE_TARGET,
    REPACK_PACK_ID,
    FormatError,
    ReferenceReader,
    ReferenceWriter,
    config_text,
    connect_index,
    hash_hex,
    loose_relpath,
)

KIB = 1024
MIB = 1024 * KIB


# Test data -----------------------------------------------------------------


def random_bytes(seed, size):
    """Incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def text_bytes(tag, lines=3000):
    """Compressible text (about 80 bytes a line), distinct per tag."""
    return "".join(
        f"{tag} line {number:05d}: the quick brown fox jumps over the lazy dog\n" for number in range(lines)
    ).encode()


def write_inputs(folder, contents):
    """Write each content to its own file in ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, content in enumerate(contents):
        path = folder / f"input-{number:04d}"
        path.write_bytes(content)
        paths.append(path)
    return paths


@dataclasses.dataclass(frozen=True)
class Layout:
    """Container settings for one parametrization."""

    name: str
    loose_prefix_len: int = 2
    hash_type: str = "sha256"
    compression: str = "zlib+1"
    pack_size_target: int = DEFAULT_PACK_SIZE_TARGET

    def init_options(self):
        """packstore init options; defaults are left to the engine."""
        options = []
        if self.loose_prefix_len != 2:
            options += ["--loose-prefix-len", self.loose_prefix_len]
        if self.hash_type != "sha256":
            options += ["--hash-type", self.hash_type]
        if self.compression != "zlib+1":
            options += ["--compression", self.compression]
        if self.pack_size_target != DEFAULT_PACK_SIZE_TARGET:
            options += ["--pack-size-target", self.pack_size_target]
        return options

    @property
    def level(self):
        """zlib level of the container."""
        return int(self.compression.split("+")[1])


ENGINE_LAYOUTS = [
    Layout("default"),
    Layout("prefix0", loose_prefix_len=0),
    Layout("prefix3", loose_prefix_len=3),
    Layout("sha1", hash_type="sha1"),
    Layout("zlib9", compression="zlib+9"),
]

REFERENCE_LAYOUTS = [
    Layout("prefix0", loose_prefix_len=0, pack_size_target=64 * KIB),
    Layout("prefix2", pack_size_target=64 * KIB),
    Layout("prefix3", loose_prefix_len=3, pack_size_target=64 * KIB),
    Layout("sha1", hash_type="sha1", pack_size_target=64 * KIB),
    Layout("zlib9", compression="zlib+9", pack_size_target=64 * KIB),
]


def schema_of(root):
    """sqlite_master of a container's index."""
    return ReferenceReader(root).schema()


def pack_sizes(root):
    """{pack id: file size} of the pack files."""
    reader = ReferenceReader(root)
    return {pack_id: os.path.getsize(reader.path("packs", str(pack_id))) for pack_id in reader.pack_ids()}


# 1. packstore writes, disk-objectstore reads --------------------------------


@dataclasses.dataclass
class Put:
    """One object put through the engine and what the test expects of it."""

    content: bytes
    to: str  # "loose" or "pack"
    compressed: object  # 0, 1, or None where the engine may choose


@dataclasses.dataclass
class EngineContainer:
    """A container the engine wrote, and every object put into it."""

    layout: Layout
    root: str
    engine: object
    printed_keys: list  # (printed key, content) for every path put
    objects: dict  # key -> Put


def put_batch(engine, folder, contents, *options):
    """Put ``contents`` in one `put` call; return the printed keys."""
    return engine.put(write_inputs(folder, contents), *options)


@pytest.fixture(scope="module", params=ENGINE_LAYOUTS, ids=lambda layout: layout.name)
def engine_container(request, tmp_path_factory, make_engine):
    """An engine-written container: objects put loose, and to packs with compress no/yes/auto.

    Every batch holds a 1-byte object, compressible text, a few MiB of
    random bytes and the text again (the same content twice); the
    compress=yes batch also holds the empty object.
    """
    layout = request.param
    base = tmp_path_factory.mktemp(f"engine-{layout.name}")
    engine = make_engine(base / "store")
    engine.init(*layout.init_options())

    batches = [
        ("loose", ["--to", "loose"], [b"L", text_bytes("loose"), random_bytes(1, 3 * MIB + 7)]),
        ("no", ["--to", "pack", "--compress", "no"], [b"N", text_bytes("no"), random_bytes(2, 3 * MIB + 11)]),
        (
            "yes",
            ["--to", "pack", "--compress", "yes"],
            [b"", b"Y", text_bytes("yes"), random_bytes(3, 2 * MIB + 13)],
        ),
        (
            "auto",
            ["--to", "pack", "--compress", "auto"],
            [b"A", text_bytes("auto"), random_bytes(4, 2 * MIB + 17)],
        ),
    ]
    printed = []
    objects = {}
    for mode, options, contents in batches:
        contents = contents + [contents[-2]]  # the text again
        keys = put_batch(engine, base / f"in-{mode}", contents, *options)
        printed += list(zip(keys, contents))
        for content in contents:
            if mode == "loose":
                expected = Put(content, "loose", 0)
            elif mode in ("no", "yes"):
                expected = Put(content, "pack", int(mode == "yes"))
            elif len(content) > 1000:
                expected = Put(content, "pack", 1 if content.startswith(b"auto") else 0)
            else:
                expected = Put(content, "pack", None)
            objects[hash_hex(layout.hash_type, content)] = expected
    return EngineContainer(layout, str(base / "store"), engine, printed, objects)


def test_put_prints_the_hash_of_the_content(engine_container):
    """The key the engine prints is the hex digest of the content, for the container's hash type."""
    for printed_key, content in engine_container.printed_keys:
        assert printed_key == hash_hex(engine_container.layout.hash_type, content)


def test_config_json_is_byte_exact(engine_container):
    """config.json is the library's json.dump output: one line, key order, separators, no newline."""
    layout = engine_container.layout
    reader = ReferenceReader(engine_container.root)
    container_id = reader.config.get("container_id", "")
    assert len(container_id) == 32 and all(char in "0123456789abcdef" for char in container_id)
    expected = config_text(
        layout.loose_prefix_len, layout.pack_size_target, layout.hash_type, container_id, layout.compression
    )
    assert reader.config_raw == expected.encode()


def test_container_folders_exist_and_temporaries_are_gone(engine_container):
    """The four folders exist; sandbox/ and duplicates/ are empty and no pack lock is left.

    The engine has exited, so nothing it wrote may still be in flight.
    """
    root = engine_container.root
    for folder in CONTAINER_FOLDERS:
        assert os.path.isdir(os.path.join(root, folder)), folder
    assert os.listdir(os.path.join(root, "sandbox")) == []
    assert os.listdir(os.path.join(root, "duplicates")) == []
    assert [name for name in os.listdir(os.path.join(root, "packs")) if name.endswith(".lock")] == []


def test_index_schema_is_the_library_schema_in_wal_mode(engine_container):
    """The index is in WAL mode and holds db_object and its index with the library's exact SQL text.

    Tabs, the space after each comma and the quoted "offset" included.
    """
    reader = ReferenceReader(engine_container.root)
    assert reader.journal_mode() == ("wal", "wal")
    schema = {(kind, name): sql for kind, name, _, sql in reader.schema()}
    assert schema.get(("table", "db_object")) == CREATE_TABLE_SQL
    assert schema.get(("index", "ix_db_object_hashkey")) == CREATE_INDEX_SQL
    reader.verify_schema()


def test_loose_objects_sit_at_their_prefix_path(engine_container):
    """Each loose object is an uncompressed file at loose/<key[:P]>/<key[P:]>, and nothing else is in loose/.

    With loose_prefix_len 0 the file is loose/<key>.
    """
    reader = ReferenceReader(engine_container.root)
    expected = {key: put for key, put in engine_container.objects.items() if put.to == "loose"}
    assert reader.loose_keys() == sorted(expected)
    prefix_len = engine_container.layout.loose_prefix_len
    for key, put in expected.items():
        with open(os.path.join(engine_container.root, loose_relpath(key, prefix_len)), "rb") as handle:
            assert handle.read() == put.content
    if prefix_len:
        assert {len(name) for name in os.listdir(reader.path("loose"))} == {prefix_len}


def test_pack_files_are_named_0_1_2(engine_container):
    """packs/ holds only files named 0, 1, 2, ..., and every row points at one of them."""
    reader = ReferenceReader(engine_container.root)
    names = sorted(os.listdir(reader.path("packs")), key=lambda name: (len(name), name))
    assert names == [str(pack_id) for pack_id in range(len(names))]
    assert {row.pack_id for row in reader.rows()} <= set(range(len(names)))


def test_every_row_reads_back_as_the_library_reads_it(engine_container):
    """Every db_object row reads back as the library reads it and re-hashes to its key.

    Compressed rows are whole RFC 1950 streams at the container's level;
    uncompressed rows have length == size; rows do not overlap.
    """
    reader = ReferenceReader(engine_container.root)
    contents = reader.verify()
    packed = {key for key, put in engine_container.objects.items() if put.to == "pack"}
    assert {row.hashkey for row in reader.rows()} == packed
    for key, put in engine_container.objects.items():
        assert contents[key] == put.content


def test_no_two_packed_objects_overlap(engine_container):
    """Within a pack, every object's byte range ends before the next one starts and inside the file."""
    reader = ReferenceReader(engine_container.root)
    sizes = pack_sizes(engine_container.root)
    end_of = {}
    for row in reader.rows():
        assert row.offset >= end_of.get(row.pack_id, 0), row
        end_of[row.pack_id] = row.offset + row.length
        assert end_of[row.pack_id] <= sizes[row.pack_id], row


def test_compression_follows_the_requested_mode(engine_container):
    """compress=no stores raw bytes, yes stores zlib at the container's level.

    auto compresses text but not random bytes.
    """
    reader = ReferenceReader(engine_container.root)
    level = engine_container.layout.level
    for row in reader.rows():
        put = engine_container.objects[row.hashkey]
        if put.compressed is not None:
            assert row.compressed == put.compressed, (row, put.content[:20])
        if row.compressed:
            with open(reader.path("packs", str(row.pack_id)), "rb") as handle:
                handle.seek(row.offset)
                assert handle.read(2) == zlib.compress(b"", level)[:2], row


def test_library_lookup_finds_every_object(engine_container):
    """Looking each key up as the library does (index first, then loose/) returns exactly the content put."""
    reader = ReferenceReader(engine_container.root)
    for key, put in engine_container.objects.items():
        assert reader.get(key) == put.content, key
    missing = hash_hex(engine_container.layout.hash_type, b"never stored")
    assert reader.get(missing) is None


def test_engine_reports_what_the_files_hold(engine_container):
    """ls, has, stat and status --json agree with the index rows and loose files on disk."""
    engine = engine_container.engine
    reader = ReferenceReader(engine_container.root)
    rows = {row.hashkey: row for row in reader.rows()}
    loose = reader.loose_keys()
    assert engine.ls() == sorted(engine_container.objects)
    missing = hash_hex(engine_container.layout.hash_type, b"never stored")
    assert engine.has(*engine_container.objects, missing) == {
        **{key: True for key in engine_container.objects},
        missing: False,
    }
    stats = engine.stat(*engine_container.objects)
    for key, put in engine_container.objects.items():
        stat = stats[key]
        assert stat["size"] == len(put.content)
        if key in rows:
            row = rows[key]
            assert stat["location"] == "packed"
            assert (stat["pack"], stat["offset"], stat["length"], stat["compressed"]) == (
                row.pack_id,
                row.offset,
                row.length,
                row.compressed,
            )
        else:
            assert stat["location"] == "loose"
    status = engine.status()
    assert status["packed_count"] == len(rows)
    assert status["loose_count"] == len(loose)
    pack_files = status["pack_files"]
    assert (len(pack_files) if isinstance(pack_files, list) else pack_files) == len(reader.pack_ids())
    assert {name: status["config"].get(name) for name in reader.config} == reader.config
    engine.run("validate")


@pytest.mark.parametrize(
    "compression, compress, stored",
    [
        ("zlib+1", "no", b""),
        ("zlib+1", "yes", bytes.fromhex("7801030000000001")),
        ("zlib+9", "yes", bytes.fromhex("78da030000000001")),
    ],
    ids=["uncompressed", "zlib1", "zlib9"],
)
def test_empty_object_in_a_pack(engine, tmp_path, compression, compress, stored):
    """The empty object is stored as zero bytes, or compressed as exactly the 8-byte zlib stream of b''."""
    engine.init("--compression", compression)
    before, after = random_bytes(5, 100), random_bytes(6, 100)
    keys = put_batch(engine, tmp_path / "in", [before, b"", after], "--to", "pack", "--compress", compress)
    reader = ReferenceReader(engine.store)
    row = {row.hashkey: row for row in reader.rows()}[keys[1]]
    assert (row.size, row.compressed, row.length) == (0, int(compress == "yes"), len(stored))
    with open(reader.path("packs", str(row.pack_id)), "rb") as handle:
        handle.seek(row.offset)
        assert handle.read(row.length) == stored
    assert reader.verify()[keys[1]] == b""
    assert engine.cat(keys[1]) == b""


@pytest.mark.parametrize("compress", ["no", "yes"])
def test_pack_rollover_at_pack_size_target(engine, tmp_path, compress):
    """With pack_size_target 8192, 256 distinct 1 KiB objects fill exactly packs 0..31.

    Each pack ends at most one object past the target.

    The objects are put in two calls that split a pack, so the rule is also
    kept across engine invocations.
    """
    engine.init("--pack-size-target", 8192)
    contents = [random_bytes(1000 + number, KIB) for number in range(256)]
    put_batch(engine, tmp_path / "first", contents[:100], "--to", "pack", "--compress", compress)
    put_batch(engine, tmp_path / "second", contents[100:], "--to", "pack", "--compress", compress)
    reader = ReferenceReader(engine.store)
    assert sorted(os.listdir(reader.path("packs"))) == sorted(str(pack_id) for pack_id in range(32))
    rows = reader.rows()
    sizes = pack_sizes(engine.store)
    for pack_id, size in sizes.items():
        in_pack = [row for row in rows if row.pack_id == pack_id]
        assert len(in_pack) == 8, pack_id
        last = max(in_pack, key=lambda row: row.offset)
        assert size == last.offset + last.length
        assert size >= 8192 and size - last.length < 8192, (pack_id, size)
    contents_read = reader.verify()
    assert sorted(contents_read) == sorted(hash_hex("sha256", content) for content in contents)


@pytest.mark.parametrize("layout", [ENGINE_LAYOUTS[0], ENGINE_LAYOUTS[1]], ids=lambda layout: layout.name)
def test_pack_keep_loose_then_clean(engine, tmp_path, layout):
    """pack --keep-loose leaves objects both loose and packed; clean then deletes only those loose copies.

    While an object is in both places, stat reports the packed copy. An
    object that is only loose survives clean, and prefix folders are never
    removed (a library writer may be about to rename into one).
    """
    engine.init(*layout.init_options())
    contents = [b"k", text_bytes("keep"), random_bytes(7, 300 * KIB)]
    keys = put_batch(engine, tmp_path / "in", contents, "--to", "loose")
    engine.run("pack", "--keep-loose")
    late_content = text_bytes("late", lines=20)
    [late_key] = put_batch(engine, tmp_path / "late", [late_content], "--to", "loose")
    reader = ReferenceReader(engine.store)
    assert reader.loose_keys() == sorted(keys + [late_key])
    assert sorted(row.hashkey for row in reader.rows()) == sorted(keys)
    assert {stat["location"] for stat in engine.stat(*keys).values()} == {"packed"}
    assert engine.stat(late_key)[late_key]["location"] == "loose"
    reader.verify()
    folders_before = sorted(os.listdir(reader.path("loose"))) if layout.loose_prefix_len else []

    engine.run("clean")
    assert reader.loose_keys() == [late_key]
    if layout.loose_prefix_len:
        assert sorted(os.listdir(reader.path("loose"))) == folders_before
    for key, content in zip(keys + [late_key], contents + [late_content]):
        assert reader.get(key) == content
        assert engine.cat(key) == content
    engine.run("clean", "--vacuum")
    assert reader.verify() == dict(zip(keys + [late_key], contents + [late_content]))
    engine.run("validate")


def test_pack_moves_loose_objects_into_packs(engine, tmp_path):
    """pack moves every loose object into a pack with a row, and the library reads each from there."""
    engine.init("--loose-prefix-len", 3)
    contents = [b"", b"m", text_bytes("move"), random_bytes(8, MIB + 3)]
    keys = put_batch(engine, tmp_path / "in", contents, "--to", "loose")
    reader = ReferenceReader(engine.store)
    assert reader.loose_keys() == sorted(keys)
    engine.run("pack")
    assert reader.loose_keys() == []
    assert sorted(row.hashkey for row in reader.rows()) == sorted(keys)
    assert reader.verify() == dict(zip(keys, contents))


def test_put_from_stdin_and_get_to_file(engine, tmp_path):
    """put - stores standard input under its hash; get -o writes the same bytes to a file."""
    engine.init()
    content = text_bytes("stdin", lines=50)
    out = engine.text("put", "-", stdin=content)
    key = hash_hex("sha256", content)
    assert out == f"{key}  -\n"
    target = tmp_path / "copy"
    engine.run("get", key, "-o", target)
    assert target.read_bytes() == content
    assert ReferenceReader(engine.store).get(key) == content


# 2. disk-objectstore writes, packstore reads ---------------------------------


@dataclasses.dataclass
class ReferenceContainer:
    """A container written the library's way, and what it holds."""

    root: str
    writer: ReferenceWriter
    expected: dict  # key -> content of every live object
    loose_only: list
    packed_only: list
    both: list
    deleted: list


def build_reference_container(root, layout):
    """Write a container as the library does, with everything the format allows.

    Loose-only objects; packed objects over several packs (64 KiB target),
    uncompressed and zlib-compressed (the empty object among them); holes
    from deleted rows and from writing already-packed content again; and
    objects that are both loose and packed (pack_all_loose before clean).
    """
    writer = ReferenceWriter.init(
        root,
        loose_prefix_len=layout.loose_prefix_len,
        pack_size_target=layout.pack_size_target,
        hash_type=layout.hash_type,
        compression_algorithm=layout.compression,
    )
    loose_contents = [b"x", text_bytes("ref loose", lines=200), random_bytes(11, 200 * KIB)]
    loose_only = [writer.add_loose(content) for content in loose_contents]

    plain = [b"p", text_bytes("ref plain"), random_bytes(12, 100 * KIB), random_bytes(13, KIB)]
    victims = [random_bytes(14, 5000), text_bytes("ref victim", lines=100)]
    compressed = [b"", text_bytes("ref zlib"), random_bytes(15, 70 * KIB), b"z"]
    packed_only = writer.add_to_packs(plain[:2], compress=False)
    deleted = writer.add_to_packs(victims, compress=True)
    packed_only += writer.add_to_packs(plain[2:], compress=False)
    packed_only += writer.add_to_packs(compressed, compress=True)
    writer.add_to_packs([plain[1]], compress=False)  # already packed: a hole, no row
    writer.delete_packed(deleted)

    both_contents = [text_bytes("ref both", lines=500), b"both"]
    both = [writer.add_loose(content) for content in both_contents]
    writer.pack_loose(both[:1], compress=True)
    writer.pack_loose(both[1:], compress=False)

    expected = {}
    for key, content in zip(
        loose_only + packed_only + both, loose_contents + plain + compressed + both_contents
    ):
        expected[key] = content
    return ReferenceContainer(str(root), writer, expected, loose_only, packed_only, both, deleted)


@pytest.mark.parametrize("layout", REFERENCE_LAYOUTS, ids=lambda layout: layout.name)
def test_reference_writer_output_passes_reference_reader(tmp_path, layout):
    """The stdlib writer and reader agree with each other.

    A library-style container with holes verifies and holds exactly the
    live objects, over several packs.
    """
    container = build_reference_container(tmp_path / "store", layout)
    reader = ReferenceReader(container.root)
    assert reader.verify() == container.expected
    assert reader.schema() == sorted(
        [
            ("index", "ix_db_object_hashkey", "db_object", CREATE_INDEX_SQL),
            ("table", "db_object", "db_object", CREATE_TABLE_SQL),
        ]
    )
    assert len(reader.pack_ids()) >= 3
    live = sum(row.length for row in reader.rows())
    assert sum(pack_sizes(container.root).values()) > live  # holes exist


@pytest.mark.parametrize("layout", REFERENCE_LAYOUTS, ids=lambda layout: layout.name)
def test_engine_reads_library_container(make_engine, tmp_path, layout):
    """packstore reads a library-written container exactly.

    It lists exactly its objects, returns identical bytes, reports the
    packed copy of an object that is both loose and packed, validates it
    clean, and changes neither config.json nor the schema by reading.
    """
    container = build_reference_container(tmp_path / "store", layout)
    config_before = ReferenceReader(container.root).config_raw
    schema_before = schema_of(container.root)
    rows = {row.hashkey: row for row in ReferenceReader(container.root).rows()}
    engine = make_engine(container.root)

    assert engine.ls() == sorted(container.expected)
    for key, content in container.expected.items():
        assert engine.cat(key) == content, key
    assert engine.has(*container.deleted) == {key: False for key in container.deleted}
    stats = engine.stat(*container.expected)
    for key in container.loose_only:
        assert stats[key]["location"] == "loose"
        assert stats[key]["size"] == len(container.expected[key])
    for key in container.packed_only + container.both:
        row = rows[key]
        assert stats[key]["location"] == "packed", key
        assert (stats[key]["pack"], stats[key]["offset"], stats[key]["length"]) == (
            row.pack_id,
            row.offset,
            row.length,
        )
        assert (stats[key]["size"], stats[key]["compressed"]) == (row.size, row.compressed)
    engine.run("validate")

    missing = engine.run("cat", container.deleted[0], expect_rc=1)
    assert "not found" in missing.stderr.lower()
    assert missing.stdout == b""
    engine.run("cat", "not-a-hex-key", expect_rc=2)

    assert ReferenceReader(container.root).config_raw == config_before
    assert schema_of(container.root) == schema_before


@pytest.mark.parametrize("layout", REFERENCE_LAYOUTS, ids=lambda layout: layout.name)
def test_engine_maintenance_keeps_library_container_readable(make_engine, tmp_path, layout):
    """A library container stays a library container through packstore's maintenance.

    After pack, rm, repack and clean --vacuum the library reads every live
    object, repack has left no holes, and config.json and the schema are
    unchanged.
    """
    container = build_reference_container(tmp_path / "store", layout)
    reader = ReferenceReader(container.root)
    config_before = reader.config_raw
    schema_before = reader.schema()
    engine = make_engine(container.root)
    expected = dict(container.expected)

    engine.run("pack")
    assert {row.hashkey for row in reader.rows()} == set(expected)
    assert reader.verify() == expected

    removed = container.packed_only[2]
    sizes_before_rm = pack_sizes(container.root)
    engine.run("rm", removed)
    del expected[removed]
    assert pack_sizes(container.root) == sizes_before_rm  # delete leaves a hole
    assert reader.get(removed) is None
    assert engine.ls() == sorted(expected)

    engine.run("repack")
    assert reader.verify() == expected
    rows = reader.rows()
    for pack_id, size in pack_sizes(container.root).items():
        in_pack = sorted((row for row in rows if row.pack_id == pack_id), key=lambda row: row.offset)
        position = 0
        for row in in_pack:
            assert row.offset == position, (pack_id, row)
            position += row.length
        assert size == position, f"pack {pack_id} keeps {size - position} bytes of holes after repack"

    engine.run("clean", "--vacuum")
    assert reader.loose_keys() == []
    assert reader.verify() == expected
    assert ReferenceReader(container.root).config_raw == config_before
    assert reader.schema() == schema_before
    assert reader.journal_mode() == ("wal", "wal")
    engine.run("validate")


def _corrupt_packed_object(root, reader):
    row = reader.rows()[0]
    with open(reader.path("packs", str(row.pack_id)), "r+b") as handle:
        handle.seek(row.offset + row.length - 1)
        last = handle.read(1)
        handle.seek(row.offset + row.length - 1)
        handle.write(bytes([last[0] ^ 0x01]))
    return row.hashkey


def _corrupt_loose_object(root, reader):
    key = reader.loose_keys()[0]
    with open(reader.path(loose_relpath(key, reader.prefix_len)), "ab") as handle:
        handle.write(b"!")
    return key


def _overlap_two_rows(root, reader):
    rows = [row for row in reader.rows() if row.length > 0]
    first, second = rows[0], rows[1]
    assert first.pack_id == second.pack_id
    connection = connect_index(root)
    try:
        connection.execute(
            'UPDATE db_object SET "offset" = ? WHERE id = ?', (second.offset - 1, second.id)
        )
    finally:
        connection.close()
    return second.hashkey


@pytest.mark.parametrize(
    "damage",
    [_corrupt_packed_object, _corrupt_loose_object, _overlap_two_rows],
    ids=["packed-byte", "loose-byte", "overlap"],
)
def test_engine_validate_reports_damage(make_engine, tmp_path, damage):
    """validate's clean verdict means something: a damaged library container makes it exit 1.

    A flipped byte in a packed object, a loose file that no longer matches
    its name, and two overlapping rows are each found, and -v names the
    object concerned.
    """
    container = build_reference_container(tmp_path / "store", REFERENCE_LAYOUTS[1])
    engine = make_engine(container.root)
    engine.run("validate")
    key = damage(container.root, ReferenceReader(container.root))
    result = engine.run("validate", "-v", expect_rc=1)
    assert key in result.stdout.decode() + result.stderr


# 3. Containers and folders packstore must refuse -----------------------------


def library_container_with_object(root):
    """A small library-written container holding one loose and one packed object."""
    writer = ReferenceWriter.init(root)
    writer.add_loose(b"loose object")
    writer.add_to_packs([b"packed object"], compress=True)
    return writer


def _truncate_config(raw):
    return raw[: len(raw) // 2]


def _unknown_compression(raw):
    return raw.replace(b'"zlib+1"', b'"lzma+1"')


def _container_version_2(raw):
    return raw.replace(b'"container_version": 1', b'"container_version": 2')


@pytest.mark.parametrize(
    "break_config, named",
    [
        (_truncate_config, ["config.json"]),
        (_unknown_compression, ["compression", "lzma"]),
        (_container_version_2, ["version"]),
    ],
    ids=["corrupt-json", "unknown-compression", "container-version-2"],
)
@pytest.mark.parametrize(
    "command",
    [["ls"], ["validate"], ["cat", hash_hex("sha256", b"loose object")]],
    ids=["ls", "validate", "cat"],
)
def test_engine_refuses_bad_config(make_engine, tmp_path, break_config, named, command):
    """A container packstore cannot read correctly is refused, not guessed at.

    A corrupt config.json, an unknown compression_algorithm or
    container_version 2 makes the command exit non-zero with a message
    naming the problem, and config.json stays as it was.
    """
    root = tmp_path / "store"
    library_container_with_object(root)
    config_path = root / "config.json"
    broken = break_config(config_path.read_bytes())
    assert broken != config_path.read_bytes()
    config_path.write_bytes(broken)

    result = make_engine(root).run(*command, expect_rc=None)
    assert result.returncode > 0, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert any(word in result.stderr.lower() for word in named), result.stderr
    assert config_path.read_bytes() == broken


def folder_snapshot(root):
    """{relative path: bytes or None for folders} of everything under root."""
    snapshot = {}
    for parent, folders, files in os.walk(root):
        for name in folders:
            snapshot[os.path.relpath(os.path.join(parent, name), root)] = None
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as handle:
                snapshot[os.path.relpath(path, root)] = handle.read()
    return snapshot


@pytest.mark.parametrize("occupant", ["stray-file", "initialised"])
def test_init_refuses_an_occupied_folder(engine, occupant):
    """init refuses a folder that already holds a file or a container, and changes nothing in it."""
    root = engine.store
    if occupant == "stray-file":
        os.makedirs(root)
        with open(os.path.join(root, "notes.txt"), "w", encoding="utf-8") as handle:
            handle.write("keep me")
    else:
        engine.init()
    before = folder_snapshot(root)

    result = engine.run("init", expect_rc=None)
    assert result.returncode > 0, result.stderr
    assert result.stderr.strip()
    after = folder_snapshot(root)
    after.pop("packs.idx-wal", None)
    after.pop("packs.idx-shm", None)
    assert after == before


def test_zstd_needs_explicit_opt_in(engine):
    """zstd, which the library cannot read, needs --allow-incompatible.

    Without it init fails and creates no config.json; with it config.json
    names "zstd+3".
    """
    result = engine.run("init", "--compression", "zstd+3", expect_rc=None)
    assert result.returncode > 0
    assert not os.path.exists(os.path.join(engine.store, "config.json"))
    engine.run("init", "--compression", "zstd+3", "--allow-incompatible")
    with open(os.path.join(engine.store, "config.json"), "rb") as handle:
        raw = handle.read()
    assert raw.endswith(b'"compression_algorithm": "zstd+3"}')
    assert raw.startswith(
        b'{"container_version": 1, "loose_prefix_len": 2, "pack_size_target": 4294967296, '
        b'"hash_type": "sha256", "container_id": "'
    )


# 4. Recovery from an interrupted library repack ------------------------------


@pytest.mark.parametrize("stage", ReferenceWriter.REPACK_STAGES)
def test_engine_recovers_interrupted_library_repack(make_engine, tmp_path, stage):
    """packstore recovers every state a crashed library repack leaves behind.

    The stages: rows moved to pack -1 with packs/<id> still there, with it
    deleted, with it hard-linked to packs/-1, and rows moved back with
    packs/-1 left over. Opening the container with packstore recovers it:
    every object reads back, validate is clean, no row is at pack -1, and
    packs/-1 is gone (the library's next repack refuses to start while it
    exists).
    """
    root = tmp_path / "store"
    writer = ReferenceWriter.init(root, pack_size_target=16 * KIB)
    contents = [random_bytes(20 + number, 5 * KIB) for number in range(9)] + [text_bytes("repack", lines=100)]
    keys = writer.add_to_packs(contents[:6], compress=False)
    keys += writer.add_to_packs(contents[6:], compress=True)
    expected = dict(zip(keys, contents))
    reader = ReferenceReader(root)
    victim_pack = 1
    victims = [row.hashkey for row in reader.rows() if row.pack_id == victim_pack][:2]
    writer.delete_packed(victims)
    for key in victims:
        del expected[key]
    writer.interrupted_repack(victim_pack, stage)
    stuck = [row for row in reader.rows() if row.pack_id == REPACK_PACK_ID]
    assert bool(stuck) == (stage != "rows_restored")
    assert os.path.exists(reader.path("packs", str(REPACK_PACK_ID)))

    engine = make_engine(root)
    assert engine.ls() == sorted(expected)
    for key, content in expected.items():
        assert engine.cat(key) == content, key
    engine.run("validate")

    assert [row for row in reader.rows() if row.pack_id == REPACK_PACK_ID] == []
    assert not os.path.exists(reader.path("packs", str(REPACK_PACK_ID)))
    assert reader.verify() == expected


# The reference reader must catch what it is there to catch -----------------


def _flip_last_packed_byte(root):
    row = ReferenceReader(root).rows()[0]
    path = os.path.join(root, "packs", str(row.pack_id))
    with open(path, "r+b") as handle:
        handle.seek(row.offset + row.length - 1)
        byte = handle.read(1)
        handle.seek(row.offset + row.length - 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _config_with_newline(root):
    with open(os.path.join(root, "config.json"), "ab") as handle:
        handle.write(b"\n")


def _schema_without_trailing_spaces(root):
    connection = connect_index(str(root))
    try:
        connection.execute("DROP INDEX ix_db_object_hashkey")
        connection.execute("ALTER TABLE db_object RENAME TO old_object")
        connection.execute(CREATE_TABLE_SQL.replace(", \n", ",\n"))
        connection.execute("INSERT INTO db_object SELECT * FROM old_object")
        connection.execute("DROP TABLE old_object")
        connection.execute(CREATE_INDEX_SQL)
    finally:
        connection.close()


def _overlapping_rows(root):
    rows = ReferenceReader(root).rows()
    connection = connect_index(str(root))
    try:
        connection.execute('UPDATE db_object SET "offset" = ? WHERE id = ?', (rows[0].offset, rows[1].id))
    finally:
        connection.close()


def _rollback_journal(root):
    connection = sqlite3.connect(os.path.join(root, "packs.idx"), isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=delete")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_last_packed_byte, "does not decode"),
        (_config_with_newline, "config.json is"),
        (_schema_without_trailing_spaces, "lacks"),
        (_overlapping_rows, "overlap"),
        (_rollback_journal, "not wal"),
    ],
    ids=["pack-byte", "config-newline", "schema-text", "overlap", "journal-mode"],
)
def test_reference_reader_rejects_damage(tmp_path, damage, message):
    """The stdlib reader is strict: each kind of damage makes verify() fail, naming it."""
    root = tmp_path / "store"
    writer = ReferenceWriter.init(root, pack_size_target=DEFAULT_PACK_SIZE_TARGET)
    contents = [text_bytes("damage one", lines=10), text_bytes("damage two", lines=10)]
    writer.add_to_packs(contents, compress=True)
    ReferenceReader(root).verify()
    damage(str(root))
    with pytest.raises(FormatError, match=message):
        ReferenceReader(root).verify()
