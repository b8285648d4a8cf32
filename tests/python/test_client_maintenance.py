"""Maintenance through the client: pack, repack, clean, delete and validate,
their progress callbacks and results."""

import pytest

import packstore
from daemon_support import KiB, key_of, random_bytes, text_bytes, wait_for


def test_pack_with_progress_and_compression(client):
    loose = [text_bytes(50 * KiB + i, f"pack {i}") for i in range(30)]
    client.put_many(loose, mode="loose")
    assert not any(info.packed for info in client.stat([key_of(d) for d in loose]))
    progress = []
    result = client.pack(compression="yes", progress=progress.append)
    assert isinstance(result, packstore.PackResult)
    assert (result.packed, result.already_packed, result.loose_deleted) == (30, 0, 30)
    assert result.bytes == sum(map(len, loose)) and result.corrupt == []
    assert progress and all(isinstance(p, packstore.Progress) for p in progress)
    assert {p.phase for p in progress} == {"pack"}
    assert progress[-1].done == progress[-1].total == 30
    infos = client.stat([key_of(d) for d in loose])
    assert all(info.packed and info.compressed for info in infos)
    assert all(client.get(key_of(d)) == d for d in loose)
    assert client.pack(validate=False).packed == 0  # nothing left loose
    assert client.status()["counts"]["loose_objects"] == 0


def test_delete_repack_and_clean(client):
    datas = [random_bytes(20 * KiB + i, f"repack {i}") for i in range(20)]
    keys = client.put_many(datas, mode="packed")
    doomed = keys[::2]
    progress = []
    assert client.delete(doomed + [key_of(b"never stored")] + doomed[:2],
                         progress=progress.append) == len(doomed)
    assert progress and progress[-1].phase == "delete"
    assert client.has(keys) == [i % 2 == 1 for i in range(20)]
    assert client.delete(keys[1]) == 1  # one key
    assert client.delete([]) == 0
    holes = client.status()["counts"]["hole_bytes"]
    assert holes >= sum(len(d) for d in datas[::2])
    result = client.repack(progress=progress.append)
    assert isinstance(result, packstore.RepackResult)
    assert result.packs_rewritten >= 1 and result.bytes_reclaimed >= holes
    assert client.status()["counts"]["hole_bytes"] == 0
    kept = [d for i, d in enumerate(datas) if i % 2 == 1 and i != 1]
    assert dict(client.get_many([key_of(d) for d in kept])) == {key_of(d): d for d in kept}
    # Clean, with and without the index VACUUM.
    client.put(datas[3], mode="loose")  # a loose copy of a packed object
    phases = []
    cleaned = client.clean(vacuum=True, progress=lambda p: phases.append(p.phase))
    assert isinstance(cleaned, packstore.CleanResult) and cleaned.loose_deleted == 1
    assert "vacuum" in phases
    assert client.clean() == packstore.CleanResult(0, 0, 0)
    assert client.repack(compression="yes").objects_moved == len(kept)
    assert all(info.compressed for info in client.stat([key_of(d) for d in kept]))
    assert all(client.get(key_of(d), verify=True) == d for d in kept)


def test_validate_a_healthy_store(client):
    client.put_many([random_bytes(1000 + i, f"validate {i}") for i in range(10)], mode="packed")
    client.put(random_bytes(5000, "validate loose"), mode="loose")
    progress = []
    result = client.validate(progress=progress.append)
    assert isinstance(result, packstore.ValidateResult)
    assert result.ok and result.issues == []
    assert (result.loose_checked, result.packed_checked) == (1, 10)
    assert progress and any(p.phase.startswith("validate") for p in progress)


def test_a_failing_progress_callback_ends_the_call(client):
    client.put_many([random_bytes(100 + i, f"callback {i}") for i in range(5)], mode="loose")

    def fail(progress):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        client.pack(progress=fail)
    # The pack itself goes on to its end in the daemon.
    wait_for(lambda: client.status()["maintenance"] == "", 30, "the pack to end")
    keys = [key_of(random_bytes(100 + i, f"callback {i}")) for i in range(5)]
    assert all(info.packed for info in client.stat(keys))
