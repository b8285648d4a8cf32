"""What disk-objectstore (v1) does on disk, written in standard-library Python.

The conformance tests use this module in two roles:

* ``ReferenceReader`` reads a container the way the Python library does and
  checks every rule of docs/format.md on the way (exact config.json text, exact
  index schema, WAL mode, loose layout, pack naming, zlib streams, hashes,
  sizes, overlaps). ``verify()`` raises ``FormatError`` naming the first
  broken rule, or returns every object's content.
* ``ReferenceWriter`` creates and changes a container the way the Python
  library does (init, loose writes through sandbox/ and a rename, appends to
  packs under packs/N.lock with rows inserted per pack, deletes that leave
  holes, and the steps of an interrupted repack through pack -1).

Neither role needs packstore, so the two can be checked against each other.
"""

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import uuid
import zlib

# The SQL text SQLAlchemy's create_all() emits for the library's model, as
# SQLite keeps it in sqlite_master. SQLAlchemy separates column definitions
# with ", \n", so every column line but the last ends in a space; docs that
# show the schema as a code block lose those spaces, the file keeps them.
CREATE_TABLE_SQL = (
    "CREATE TABLE db_object (\n"
    "\tid INTEGER NOT NULL, \n"
    "\thashkey VARCHAR NOT NULL, \n"
    "\tcompressed BOOLEAN NOT NULL, \n"
    "\tsize INTEGER NOT NULL, \n"
    '\t"offset" INTEGER NOT NULL, \n'
    "\tlength INTEGER NOT NULL, \n"
    "\tpack_id INTEGER NOT NULL, \n"
    "\tPRIMARY KEY (id)\n"
    ")"
)
CREATE_INDEX_SQL = "CREATE UNIQUE INDEX ix_db_object_hashkey ON db_object (hashkey)"

# sqlite_master rows (type, name, tbl_name, sql) of a library-made index.
LIBRARY_SCHEMA = (
    ("table", "db_object", "db_object", CREATE_TABLE_SQL),
    ("index", "ix_db_object_hashkey", "db_object", CREATE_INDEX_SQL),
)

CONFIG_KEYS = (
    "container_version",
    "loose_prefix_len",
    "pack_size_target",
    "hash_type",
    "container_id",
    "compression_algorithm",
)
DEFAULT_PACK_SIZE_TARGET = 4 * 1024 * 1024 * 1024
REPACK_PACK_ID = -1
CONTAINER_FOLDERS = ("packs", "loose", "duplicates", "sandbox")
HASH_HEX_LEN = {"sha256": 64, "sha1": 40}

_HEX_RE = re.compile(r"[0-9a-f]+\Z")
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{32}\Z")
_ZLIB_ALGORITHM_RE = re.compile(r"zlib\+([1-9])\Z")


class FormatError(AssertionError):
    """A container breaks a rule of the disk-objectstore v1 format."""


def hash_hex(hash_type, data):
    """The object key of ``data``: the lowercase hex digest for ``hash_type``."""
    return hashlib.new(hash_type, data).hexdigest()


def loose_relpath(key, prefix_len):
    """Where a loose object lives, relative to the container folder."""
    if prefix_len:
        return os.path.join("loose", key[:prefix_len], key[prefix_len:])
    return os.path.join("loose", key)


def zlib_level(compression_algorithm):
    """The zlib level of a "zlib+N" algorithm; FormatError for anything else."""
    match = _ZLIB_ALGORITHM_RE.match(compression_algorithm)
    if not match:
        raise FormatError(
            f"compression_algorithm {compression_algorithm!r} is not one the "
            "Python library reads (zlib+1 .. zlib+9)"
        )
    return int(match.group(1))


def config_text(loose_prefix_len, pack_size_target, hash_type, container_id, compression_algorithm):
    """config.json exactly as the library's json.dump writes it (no newline)."""
    return (
        '{"container_version": 1, '
        f'"loose_prefix_len": {loose_prefix_len}, '
        f'"pack_size_target": {pack_size_target}, '
        f'"hash_type": "{hash_type}", '
        f'"container_id": "{container_id}", '
        f'"compression_algorithm": "{compression_algorithm}"}}'
    )


def is_pack_id(name):
    """True for a file name the library takes as a pack: a decimal id, no leading zeros."""
    return name.isdigit() and str(int(name)) == name


def check_zlib_stream(data, level):
    """Decompress one whole RFC 1950 stream written at ``level``.

    FormatError unless ``data`` starts with a valid zlib header whose level
    flags match what zlib writes for ``level``, decodes without error, ends in
    its Adler-32 and has no bytes after the stream.
    """
    if len(data) < 6:
        raise FormatError(f"compressed object of {len(data)} bytes is shorter than any zlib stream")
    cmf, flg = data[0], data[1]
    if cmf & 0x0F != 8 or cmf >> 4 > 7:
        raise FormatError(f"zlib header {data[:2].hex()}: not deflate with a window <= 32 KiB")
    if (cmf * 256 + flg) % 31 != 0:
        raise FormatError(f"zlib header {data[:2].hex()}: FCHECK wrong (raw deflate or gzip?)")
    if flg & 0x20:
        raise FormatError(f"zlib header {data[:2].hex()}: preset dictionary set")
    expected_header = zlib.compress(b"", level)[:2]
    if data[:2] != expected_header:
        raise FormatError(
            f"zlib header {data[:2].hex()} is not the one zlib writes at level {level} "
            f"({expected_header.hex()})"
        )
    decompressor = zlib.decompressobj()
    try:
        content = decompressor.decompress(data) + decompressor.flush()
    except zlib.error as exc:
        raise FormatError(f"compressed object does not decode: {exc}") from exc
    if not decompressor.eof:
        raise FormatError("compressed object ends before its zlib stream does")
    if decompressor.unused_data:
        raise FormatError(f"{len(decompressor.unused_data)} bytes follow the zlib stream")
    return content


@dataclasses.dataclass(frozen=True)
class Row:
    """One db_object row."""

    id: int
    hashkey: str
    compressed: int
    size: int
    offset: int
    length: int
    pack_id: int


def connect_index(root):
    """Open packs.idx read-write with the library's 5 s busy timeout.

    Fails instead of creating the file when it is missing. Unlike the library
    it does not send PRAGMA journal_mode=wal, so that opening the index never
    turns a rollback-journal database into a WAL one behind a check's back.
    """
    path = os.path.join(root, "packs.idx")
    return sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5, isolation_level=None)


class ReferenceReader:
    """Reads a container the way disk-objectstore does, checking the format."""

    def __init__(self, root):
        self.root = str(root)
        self.config_raw = self._read("config.json")
        try:
            self.config = json.loads(self.config_raw)
        except ValueError as exc:
            raise FormatError(f"config.json is not JSON: {exc}") from exc
        self.prefix_len = self.config["loose_prefix_len"]
        self.hash_type = self.config["hash_type"]
        self.level = zlib_level(self.config["compression_algorithm"])

    def _read(self, relpath):
        with open(os.path.join(self.root, relpath), "rb") as handle:
            return handle.read()

    def path(self, *parts):
        """An absolute path inside the container."""
        return os.path.join(self.root, *parts)

    # Index ----------------------------------------------------------------

    def rows(self):
        """Every db_object row, ordered by pack and offset."""
        connection = connect_index(self.root)
        try:
            result = connection.execute(
                'SELECT id, hashkey, compressed, size, "offset", length, pack_id '
                'FROM db_object ORDER BY pack_id, "offset", id'
            ).fetchall()
        finally:
            connection.close()
        return [Row(*values) for values in result]

    def schema(self):
        """sqlite_master as (type, name, tbl_name, sql) tuples, sorted."""
        connection = connect_index(self.root)
        try:
            return sorted(
                connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
            )
        finally:
            connection.close()

    def journal_mode(self):
        """The journal mode recorded in the database header and reported by SQLite."""
        header = self._read("packs.idx")[:100]
        if header[18:20] == b"\x02\x02":
            header_mode = "wal"
        else:
            header_mode = f"rollback(write={header[18]},read={header[19]})"
        connection = connect_index(self.root)
        try:
            pragma_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            connection.close()
        return header_mode, pragma_mode

    # Objects --------------------------------------------------------------

    def pack_ids(self):
        """Ids of the files in packs/ that the library takes as packs."""
        return sorted(int(name) for name in os.listdir(self.path("packs")) if is_pack_id(name))

    def read_row(self, row):
        """The content a row points at, checked like the library's validate."""
        pack_path = self.path("packs", str(row.pack_id))
        if not os.path.isfile(pack_path):
            raise FormatError(f"{row.hashkey}: pack {row.pack_id} does not exist")
        if row.offset < 0 or row.length < 0:
            raise FormatError(f"{row.hashkey}: negative offset or length")
        if row.offset + row.length > os.path.getsize(pack_path):
            raise FormatError(f"{row.hashkey}: extends past the end of pack {row.pack_id}")
        with open(pack_path, "rb") as handle:
            handle.seek(row.offset)
            stored = handle.read(row.length)
        if row.compressed not in (0, 1):
            raise FormatError(f"{row.hashkey}: compressed is {row.compressed!r}, not 0 or 1")
        if row.compressed:
            content = check_zlib_stream(stored, self.level)
        else:
            if row.length != row.size:
                raise FormatError(f"{row.hashkey}: uncompressed but length {row.length} != size {row.size}")
            content = stored
        if len(content) != row.size:
            raise FormatError(f"{row.hashkey}: size {row.size} but content has {len(content)} bytes")
        if hash_hex(self.hash_type, content) != row.hashkey:
            raise FormatError(f"{row.hashkey}: packed content hashes to something else")
        return content

    def loose_keys(self):
        """Keys of the loose objects; FormatError for a file that is not one."""
        hex_len = HASH_HEX_LEN[self.hash_type]
        loose = self.path("loose")
        keys = []
        for name in os.listdir(loose):
            full = os.path.join(loose, name)
            if self.prefix_len == 0:
                if not (os.path.isfile(full) and len(name) == hex_len and _HEX_RE.match(name)):
                    raise FormatError(f"loose/{name} is not a loose object of a prefix-0 container")
                keys.append(name)
                continue
            if not (os.path.isdir(full) and len(name) == self.prefix_len and _HEX_RE.match(name)):
                raise FormatError(f"loose/{name} is not a prefix folder of length {self.prefix_len}")
            for rest in os.listdir(full):
                if not (
                    os.path.isfile(os.path.join(full, rest))
                    and len(rest) == hex_len - self.prefix_len
                    and _HEX_RE.match(rest)
                ):
                    raise FormatError(f"loose/{name}/{rest} is not a loose object")
                keys.append(name + rest)
        return sorted(keys)

    def read_loose(self, key):
        """A loose object's bytes, checked against its key."""
        content = self._read(loose_relpath(key, self.prefix_len))
        if hash_hex(self.hash_type, content) != key:
            raise FormatError(f"loose object {key} hashes to something else")
        return content

    def get(self, key):
        """An object's content as the library finds it: packed first, then loose; None if missing."""
        connection = connect_index(self.root)
        try:
            values = connection.execute(
                'SELECT id, hashkey, compressed, size, "offset", length, pack_id '
                "FROM db_object WHERE hashkey = ?",
                (key,),
            ).fetchone()
        finally:
            connection.close()
        if values is not None:
            return self.read_row(Row(*values))
        if os.path.isfile(self.path(loose_relpath(key, self.prefix_len))):
            return self.read_loose(key)
        return None

    def keys(self):
        """Every key in the container, packed or loose, sorted."""
        return sorted({row.hashkey for row in self.rows()} | set(self.loose_keys()))

    # Whole-container check ------------------------------------------------

    def verify(self):
        """Check every format rule; return {key: content} for every object.

        Raises FormatError naming the first rule the container breaks.
        """
        self.verify_config()
        for folder in CONTAINER_FOLDERS:
            if not os.path.isdir(self.path(folder)):
                raise FormatError(f"folder {folder}/ is missing")
        header_mode, pragma_mode = self.journal_mode()
        if (header_mode, pragma_mode) != ("wal", "wal"):
            raise FormatError(f"packs.idx journal mode is {header_mode}/{pragma_mode}, not wal")
        self.verify_schema()

        for name in os.listdir(self.path("packs")):
            if not is_pack_id(name):
                raise FormatError(f"packs/{name} is left over: not a pack id")
        contents = {}
        rows = self.rows()
        if len({row.hashkey for row in rows}) != len(rows):
            raise FormatError("a hashkey has more than one row")
        previous = None
        for row in rows:
            if previous is not None and previous.pack_id == row.pack_id:
                if row.offset < previous.offset + previous.length:
                    raise FormatError(
                        f"{previous.hashkey} [{previous.offset}, +{previous.length}) and "
                        f"{row.hashkey} [{row.offset}, +{row.length}) overlap in pack {row.pack_id}"
                    )
            contents[row.hashkey] = self.read_row(row)
            previous = row
        for key in self.loose_keys():
            content = self.read_loose(key)
            contents.setdefault(key, content)
        return contents

    def verify_config(self):
        """config.json: one line, library key order and separators, valid values."""
        if list(self.config) != list(CONFIG_KEYS):
            raise FormatError(f"config.json keys {list(self.config)} differ from {list(CONFIG_KEYS)}")
        if self.config["container_version"] != 1:
            raise FormatError("container_version is not 1")
        container_id = self.config["container_id"]
        if not isinstance(container_id, str) or not _CONTAINER_ID_RE.match(container_id):
            raise FormatError(f"container_id {container_id!r} is not 32 lowercase hex digits")
        if self.config["hash_type"] not in HASH_HEX_LEN:
            raise FormatError(f"hash_type {self.config['hash_type']!r} unknown")
        if not isinstance(self.prefix_len, int) or self.prefix_len < 0:
            raise FormatError(f"loose_prefix_len {self.prefix_len!r} is not an integer >= 0")
        target = self.config["pack_size_target"]
        if not isinstance(target, int) or target <= 0:
            raise FormatError(f"pack_size_target {target!r} is not a positive integer")
        expected = config_text(
            self.prefix_len, target, self.hash_type, container_id, self.config["compression_algorithm"]
        ).encode()
        if self.config_raw != expected:
            raise FormatError(f"config.json is {self.config_raw!r}, the library writes {expected!r}")

    def verify_schema(self):
        """db_object and its index exactly as the library creates them.

        Extra tables are allowed; an extra index or trigger on db_object is not.
        """
        schema = self.schema()
        for entry in LIBRARY_SCHEMA:
            if entry not in schema:
                actual = [row for row in schema if row[1] == entry[1]]
                raise FormatError(f"sqlite_master lacks {entry!r}; has {actual!r}")
        extra = [row for row in schema if row[2] == "db_object" and row not in LIBRARY_SCHEMA]
        extra = [row for row in extra if row[3] is not None]
        if extra:
            raise FormatError(f"extra schema objects on db_object: {extra!r}")


class ReferenceWriter:
    """Creates and changes a container the way disk-objectstore does."""

    def __init__(self, root):
        self.root = str(root)
        with open(os.path.join(self.root, "config.json"), encoding="utf-8") as handle:
            self.config = json.load(handle)
        self.prefix_len = self.config["loose_prefix_len"]
        self.hash_type = self.config["hash_type"]
        self.pack_size_target = self.config["pack_size_target"]
        self.level = zlib_level(self.config["compression_algorithm"])
        self._current_pack_id = 0

    @classmethod
    def init(
        cls,
        root,
        loose_prefix_len=2,
        pack_size_target=DEFAULT_PACK_SIZE_TARGET,
        hash_type="sha256",
        compression_algorithm="zlib+1",
    ):
        """init_container(): config.json, the four folders, and packs.idx."""
        root = str(root)
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise FileExistsError(f"{root} is not empty")
        zlib_level(compression_algorithm)
        with open(os.path.join(root, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "container_version": 1,
                    "loose_prefix_len": loose_prefix_len,
                    "pack_size_target": pack_size_target,
                    "hash_type": hash_type,
                    "container_id": uuid.uuid4().hex,
                    "compression_algorithm": compression_algorithm,
                },
                handle,
            )
        for folder in CONTAINER_FOLDERS:
            os.makedirs(os.path.join(root, folder))
        connection = sqlite3.connect(os.path.join(root, "packs.idx"), isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=wal;")
            connection.execute("BEGIN")
            # What SQLAlchemy sends; SQLite keeps the text from CREATE to ")".
            connection.execute("\n" + CREATE_TABLE_SQL + "\n\n")
            connection.execute(CREATE_INDEX_SQL)
            connection.execute("COMMIT")
        finally:
            connection.close()
        return cls(root)

    def path(self, *parts):
        """An absolute path inside the container."""
        return os.path.join(self.root, *parts)

    def add_loose(self, content):
        """Write a loose object through sandbox/ and a rename; return its key."""
        key = hash_hex(self.hash_type, content)
        sandbox_path = self.path("sandbox", uuid.uuid4().hex)
        with open(sandbox_path, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        destination = self.path(loose_relpath(key, self.prefix_len))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if os.path.exists(destination):
            os.remove(sandbox_path)
        else:
            os.rename(sandbox_path, destination)
        return key

    def _pack_id_to_write_to(self):
        pack_id = self._current_pack_id
        while True:
            pack_path = self.path("packs", str(pack_id))
            if not os.path.exists(pack_path) or os.path.getsize(pack_path) < self.pack_size_target:
                break
            pack_id += 1
        self._current_pack_id = pack_id
        return pack_id

    def _append(self, pack_id, stored):
        """Append bytes to a pack under its lock; return the offset written at."""
        lock_path = self.path("packs", f"{pack_id}.lock")
        lock_fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with open(self.path("packs", str(pack_id)), "ab") as handle:
                handle.seek(0, os.SEEK_END)
                offset = handle.tell()
                handle.write(stored)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            os.close(lock_fd)
            os.remove(lock_path)
        return offset

    def _encode(self, content, compress):
        if compress:
            compressor = zlib.compressobj(self.level)
            return compressor.compress(content) + compressor.flush()
        return content

    def add_to_packs(self, contents, compress):
        """add_objects_to_pack(): append each object, rows committed per pack.

        Content already packed is written again and gets no row, leaving a
        hole, as the library does by default. Returns the keys in order.
        """
        keys = []
        pending = []
        pending_pack = None
        connection = connect_index(self.root)
        try:
            for content in contents:
                key = hash_hex(self.hash_type, content)
                keys.append(key)
                pack_id = self._pack_id_to_write_to()
                if pending_pack is not None and pack_id != pending_pack:
                    self._insert(connection, pending)
                    pending = []
                pending_pack = pack_id
                stored = self._encode(content, compress)
                offset = self._append(pack_id, stored)
                pending.append((key, int(compress), len(content), offset, len(stored), pack_id))
            self._insert(connection, pending)
        finally:
            connection.close()
        return keys

    @staticmethod
    def _insert(connection, pending):
        connection.execute("BEGIN")
        for values in pending:
            exists = connection.execute("SELECT 1 FROM db_object WHERE hashkey = ?", (values[0],)).fetchone()
            if not exists:
                connection.execute(
                    'INSERT INTO db_object (hashkey, compressed, size, "offset", length, pack_id) '
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    values,
                )
        connection.execute("COMMIT")

    def pack_loose(self, keys, compress):
        """pack_all_loose() for ``keys``: copy them into packs, keep the loose files."""
        contents = []
        for key in keys:
            with open(self.path(loose_relpath(key, self.prefix_len)), "rb") as handle:
                contents.append(handle.read())
        return self.add_to_packs(contents, compress)

    def delete_packed(self, keys):
        """delete_objects() for packed objects: drop the rows; the bytes stay as holes."""
        connection = connect_index(self.root)
        try:
            connection.execute("BEGIN")
            connection.executemany("DELETE FROM db_object WHERE hashkey = ?", [(key,) for key in keys])
            connection.execute("COMMIT")
        finally:
            connection.close()

    # The steps of repack_pack(), so a test can stop after any of them, as a
    # crash would.
    REPACK_STAGES = ("rows_moved", "old_pack_removed", "hard_linked", "rows_restored")

    def interrupted_repack(self, pack_id, stage):
        """Repack ``pack_id`` as the library does and stop after ``stage``.

        rows_moved: live objects copied to packs/-1 in offset order and their
          rows pointed at pack -1 (one transaction); packs/<id> still there.
        old_pack_removed: ... and packs/<id> deleted.
        hard_linked: ... and packs/<id> recreated as a hard link to packs/-1.
        rows_restored: ... and the rows pointed back at <id>; packs/-1 left.
        """
        stage_index = self.REPACK_STAGES.index(stage)
        repack_path = self.path("packs", str(REPACK_PACK_ID))
        old_path = self.path("packs", str(pack_id))
        connection = connect_index(self.root)
        try:
            rows = connection.execute(
                'SELECT id, "offset", length FROM db_object WHERE pack_id = ? ORDER BY "offset"',
                (pack_id,),
            ).fetchall()
            updates = []
            with open(old_path, "rb") as source, open(repack_path, "ab") as target:
                for row_id, offset, length in rows:
                    source.seek(offset)
                    new_offset = target.tell()
                    target.write(source.read(length))
                    updates.append((REPACK_PACK_ID, new_offset, row_id))
                target.flush()
                os.fsync(target.fileno())
            connection.execute("BEGIN")
            connection.executemany('UPDATE db_object SET pack_id = ?, "offset" = ? WHERE id = ?', updates)
            connection.execute("COMMIT")
            if stage_index >= 1:
                os.remove(old_path)
            if stage_index >= 2:
                os.link(repack_path, old_path)
            if stage_index >= 3:
                connection.execute(
                    "UPDATE db_object SET pack_id = ? WHERE pack_id = ?", (pack_id, REPACK_PACK_ID)
                )
        finally:
            connection.close()
