"""A real full disk: the store on a small file system of its own (a
loop-mounted ext4 image, or else a tmpfs with size=), the daemon running,
filled with puts of every mode until refused.

- With a free-disk reserve, the refusal comes once the reserve is reached
  (RESOURCE_EXHAUSTED naming --free-disk-reserve); reads go on; Validate is
  clean; every acknowledged object reads back.
- With the reserve at 0 the file system itself runs out in the middle of
  writes (ENOSPC): callers get RESOURCE_EXHAUSTED saying so, nothing
  acknowledged is lost, and after space is freed (Delete, Clean, Repack)
  Validate is clean and puts work again.

Mounting needs root or CAP_SYS_ADMIN; without it the tests are skipped with
that reason.
"""

import itertools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

import daemon_support as support
import reliability_support as rs
from daemon_support import KiB, MiB, key_of, pb, random_bytes
from reliability_support import FastPath

T = support.RPC_TIMEOUT
FS_SIZE = 64 * MiB
RESERVE_MESSAGE = re.compile(
    r"the store's file system has [0-9.]+ [KMG]?i?B free; writes stop 8 MiB before it fills "
    r"\(--free-disk-reserve\): free some space, or lower the reserve")
ENOSPC_MESSAGE = re.compile(r"No space left on device|database or disk is full")


def _run(argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")


@pytest.fixture
def small_fs():
    """A mounted file system of FS_SIZE bytes; (its path, "ext4" or "tmpfs").
    Unmounted in a finalizer."""
    folder = Path(tempfile.mkdtemp(prefix="packstore-full-disk-"))
    mount_point = folder / "mnt"
    mount_point.mkdir()
    image = folder / "fs.img"
    reasons = []
    kind = None
    try:
        with open(image, "wb") as f:
            f.truncate(FS_SIZE)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(image)])
        _run(["mount", "-o", "loop", str(image), str(mount_point)])
        kind = "ext4"
    except (OSError, subprocess.TimeoutExpired) as error:
        reasons.append(f"loop-mounted ext4: {error}")
        try:
            _run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount_point)])
            kind = "tmpfs"
        except (OSError, subprocess.TimeoutExpired) as error2:
            reasons.append(f"tmpfs: {error2}")
    if kind is None:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip("needs root or CAP_SYS_ADMIN to mount a small file system for the store "
                    "(mkfs.ext4 + mount -o loop, or mount -t tmpfs -o size=); "
                    + "; ".join(reasons))
    try:
        yield mount_point, kind
    finally:
        result = subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=60)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# ---- puts of every mode ----------------------------------------------------------------


def put_fast_path(daemon, data, mode):
    with FastPath(daemon.socket) as client:
        answer = client.put_bytes(data, mode)
    if answer.startswith("OK "):
        key, size = answer[3:].split(" ")
        return key, int(size), None
    match = re.fullmatch(r"ERR ([A-Z_]+) (.*)", answer)
    assert match, answer
    return None, None, (match.group(1), match.group(2))


def put_every_way(daemon):
    """{way: put(data) -> (key, size, None) or (None, None, (code, message))}."""
    stub = daemon.stub

    def grpc_way(call):
        def put(data):
            try:
                ref = call(data)
                return ref.key, ref.size, None
            except grpc.RpcError as error:
                return None, None, (error.code().name, error.details() or "")
        return put

    ways = {}
    for mode in ("loose", "packed", "auto"):
        ways[f"Put {mode}"] = grpc_way(lambda d, m=mode: support.put(stub, d, m))
        ways[f"PutStream {mode}"] = grpc_way(
            lambda d, m=mode: support.put_stream(stub, d, m, chunk=256 * KiB))
        ways[f"PutMany {mode}"] = grpc_way(
            lambda d, m=mode: support.put_many(stub, [[d[:len(d) // 2], d[len(d) // 2:]]],
                                               m)[0][0])
        ways[f"fast path {mode}"] = lambda d, m=mode: put_fast_path(daemon, d, m)
    return ways


def fill(daemon, acked, seed, sizes, rounds=400):
    """Puts objects every way, round robin, until every way has been refused
    at least once (or `rounds` puts). Acknowledged objects go into `acked`
    ({key: data}; PutMany's second half too). {way: [(code, message)]}."""
    ways = put_every_way(daemon)
    refusals = {way: [] for way in ways}
    names = itertools.cycle(ways)
    for i in range(rounds):
        way = next(names)
        data = random_bytes(sizes[i % len(sizes)], f"{seed} {i}")
        key, size, error = ways[way](data)
        if error is None:
            if way.startswith("PutMany"):
                half = len(data) // 2
                assert key == key_of(data[:half]) and size == half, way
                acked[key_of(data[:half])] = data[:half]
                acked[key_of(data[half:])] = data[half:]
            else:
                assert (key, size) == (key_of(data), len(data)), way
                acked[key] = data
        else:
            refusals[way].append(error)
        if all(refusals.values()):
            break
    return refusals


def assert_everything_reads_back(daemon, acked):
    stub = daemon.stub
    for key, data in acked.items():
        assert support.get_bytes(stub, key, verify=True) == data, key
    keys = list(acked)
    for i in range(0, len(keys), 50):
        objects, missing, _, _ = support.assemble_pieces(support.get_many(stub, keys[i:i + 50]))
        assert missing == [] and objects == {k: acked[k] for k in keys[i:i + 50]}
    with FastPath(daemon.socket) as client:
        first, entries = client.locate(keys[:200])
        assert first.startswith("OK "), first
        for entry in entries:
            if entry.state == "found":
                assert entry.read() == acked[entry.key]


def validate_clean(daemon):
    _, issues, result = support.maintenance(daemon.stub, "Validate")
    assert result.issues == 0, [(i.kind, i.subject, i.detail) for i in issues]
    return result


# ---- the tests -------------------------------------------------------------------------------


def test_full_disk_stops_at_the_reserve(daemons, tmp_path, small_fs):
    mount_point, kind = small_fs
    daemon = daemons(store=mount_point / "store", flags={"--free-disk-reserve": "8MiB"})
    acked = {}
    refusals = fill(daemon, acked, "reserve", [700 * KiB, 300 * KiB, 2 * MiB + 5])
    assert all(refusals.values()), {w: r for w, r in refusals.items() if not r}
    for way, errors in refusals.items():
        for code, message in errors:
            assert code == "RESOURCE_EXHAUSTED", (way, code, message)
            assert RESERVE_MESSAGE.fullmatch(message), (way, message)
    status = daemon.status()
    assert status.free_bytes_reserve == 8 * MiB
    assert status.free_bytes >= 1 * MiB, f"the reserve did not keep the {kind} from filling"
    assert len(acked) > 20, f"only {len(acked)} objects before the reserve ({kind})"
    assert_everything_reads_back(daemon, acked)
    result = validate_clean(daemon)
    # A packed-mode PutStream past 1 MiB leaves its loose copy until a Pack or Clean.
    assert result.loose_checked + result.packed_checked >= len(acked)
    assert rs.sandbox_files(daemon.store) == []
    # A restart on the full store reads everything back too.
    assert daemon.stop() == 0
    again = daemons(store=daemon.store, init=False, flags={"--free-disk-reserve": "8MiB"},
                    name="restarted")
    assert_everything_reads_back(again, acked)


def test_file_system_full_mid_write(daemons, tmp_path, small_fs):
    mount_point, kind = small_fs
    daemon = daemons(store=mount_point / "store", flags={"--free-disk-reserve": "0"})
    acked = {}
    refusals = fill(daemon, acked, "enospc", [900 * KiB, 3 * MiB + 7, 200 * KiB])
    failed = {way: errors for way, errors in refusals.items() if errors}
    assert failed, f"the {kind} never filled"
    for way, errors in failed.items():
        for code, message in errors:
            assert code == "RESOURCE_EXHAUSTED", (way, code, message)
            assert ENOSPC_MESSAGE.search(message), (way, message)
    assert all(refusals.values()), {w: r for w, r in refusals.items() if not r}
    assert support.health_check(daemon.channel) == "SERVING"
    # Nothing acknowledged is lost, full as the disk is.
    assert_everything_reads_back(daemon, acked)
    # Free space: delete half of what is stored, clean, repack.
    victims = list(acked)[::2]
    support.maintenance(daemon.stub, "Delete", pb.DeleteRequest(keys=victims))
    for key in victims:
        del acked[key]
    support.maintenance(daemon.stub, "Clean", pb.CleanRequest())
    support.maintenance(daemon.stub, "Repack", pb.RepackRequest())
    assert daemon.status().free_bytes > 10 * MiB
    validate_clean(daemon)
    assert rs.sandbox_files(daemon.store) == []
    assert_everything_reads_back(daemon, acked)
    # Puts work again, every way.
    for way, put in put_every_way(daemon).items():
        data = random_bytes(300 * KiB, f"after freeing, {way}")
        key, size, error = put(data)
        assert error is None, (way, error)
        if not way.startswith("PutMany"):
            assert (key, size) == (key_of(data), len(data))
            acked[key] = data
    assert_everything_reads_back(daemon, acked)
    # And a restart finds the store whole.
    assert daemon.stop() == 0
    again = daemons(store=daemon.store, init=False, flags={"--free-disk-reserve": "0"},
                    name="restarted")
    validate_clean(again)
    assert_everything_reads_back(again, acked)
