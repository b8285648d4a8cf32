"""Crash harness: packstored is killed with SIGKILL at random instants under
mixed load from several client processes, restarted on the same store, and
held to its durability contract (docs/protocol.md, "Durability"; docs/
operations.md, "Recovery after a crash"):

- every object whose put was acknowledged is present and reads back with
  its bytes (SHA-256 equal to its key, the acknowledged size);
- every acknowledged delete is absent;
- Validate reports no issue, the daemon restarts and serves, stops cleanly
  on SIGTERM, and the store opens and validates offline (packstore tool).

PACKSTORE_CRASH_POINTS (default 100) sets the number of kill points,
PACKSTORE_CRASH_SEED the seed (default: drawn, and printed), and
PACKSTORE_CRASH_FIRST_CYCLE the first cycle (to replay a failure from the
cycle it names). A failure names the seed, the cycle and the kill point.
bench/crash_loop.py runs the same harness for 1000 points.
"""

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

import load_support as ls

POINTS = int(os.environ.get("PACKSTORE_CRASH_POINTS", "100"))
KILLS_PER_CYCLE = int(os.environ.get("PACKSTORE_CRASH_KILLS_PER_CYCLE", "10"))
WRITERS = int(os.environ.get("PACKSTORE_CRASH_WRITERS", "4"))


def test_the_checks_catch_a_lost_object_an_undeleted_key_and_a_bad_journal():
    """The checks are not vacuous: a journal that claims a key the store
    never got, a delete that did not happen, and a client's own complaint
    are each reported."""
    folder = Path(tempfile.mkdtemp(prefix="pscrash-check-"))
    daemon = ls.DaemonProcess(folder / "store", folder / "sock", folder / "packstored.log",
                              {"--auto-pack": "false", "--free-disk-reserve": "16MiB"})
    try:
        daemon.start()
        with ls.packstore.Client(daemon.socket, timeout=ls.CALL_TIMEOUT) as client:
            stored = client.put(b"stored and acknowledged", mode="packed")
            kept = client.put(b"deleted in the journal only", mode="loose")
        never = ls.key_of(b"acknowledged in the journal, never stored")
        journal = ls.Journal(folder / "fake.journal")
        journal.record("B", 1, f"{ls.now():.6f}", "put/packed/default/23")
        journal.record("A", 1, f"{ls.now():.6f}", stored, 23)
        journal.record("B", 2, f"{ls.now():.6f}", "put/loose/default/41")
        journal.record("A", 2, f"{ls.now():.6f}", never, 41)
        journal.record("B", 3, f"{ls.now():.6f}", "delete", kept)
        journal.record("A", 3, f"{ls.now():.6f}")
        journal.record("X", f"{ls.now():.6f}", "a client's own complaint")
        journal.close()
        state = ls.JournalState()
        state.add_journal("fake", folder / "fake.journal")
        state.read()
        assert state.must_be_present() == {stored: 23, never: 41}
        assert state.deleted == {kept}
        failures, figures = ls.check_store(daemon.socket, state)
        assert figures["lost"] == 1 and figures["not_deleted"] == 1, (failures, figures)
        assert any(never in failure for failure in failures), failures
        assert any("acknowledged deletes still present" in failure for failure in failures)
        assert state.problems == ["fake: a client's own complaint"]
        # And a store that is sound passes.
        state = ls.JournalState()
        state.acked = {stored: 23}
        assert ls.check_store(daemon.socket, state) == (
            [], {"checked": 1, "deletes_checked": 0, "issues": 0, "bytes": 23, "lost": 0,
                 "not_deleted": 0, "validated": 2})
    finally:
        daemon.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_acknowledged_objects_and_deletes_survive_sigkill_at_random_instants():
    seed = int(os.environ.get("PACKSTORE_CRASH_SEED") or random.SystemRandom().randrange(10**9))
    first_cycle = int(os.environ.get("PACKSTORE_CRASH_FIRST_CYCLE", "0"))
    print(f"crash harness: seed {seed}, {POINTS} kill points from cycle {first_cycle}, "
          f"{KILLS_PER_CYCLE} per cycle, {WRITERS} writers")
    run = ls.CrashRun(POINTS, seed, kills_per_cycle=KILLS_PER_CYCLE, writers=WRITERS)
    try:
        summary = run.run(first_cycle)
    except ls.CrashCheckFailed as failure:
        pytest.fail(f"crash harness failed (seed {seed}):\n{failure}", pytrace=False)
    print(ls.crash_table(summary))

    assert summary["kill_points"] == POINTS
    assert summary["objects_lost"] == 0
    assert summary["validate_issues"] == 0
    assert summary["acknowledged_objects_checked"] > 0
    assert summary["deletes_checked"] > 0
    # The kills landed where they are meant to: during puts of each kind,
    # group commits and each maintenance operation (about one kill point in
    # six targets each; require a third of that).
    in_flight = summary["in_flight"]
    wanted = ["put", "put_many", "put_file", "put_stream", "group commit (>= 2 packed puts)",
              "pack", "repack", "clean", "delete"]
    floor = max(1, POINTS // 18)
    thin = {name: in_flight.get(name, 0) for name in wanted if in_flight.get(name, 0) < floor}
    assert not thin, (f"kill points with these in flight are too few (< {floor}): {thin}; "
                      f"seed {seed}\n{ls.crash_table(summary)}")
