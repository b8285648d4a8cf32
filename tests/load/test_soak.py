"""A short soak (bench/soak.py runs the long one): 64 client processes read
and write against the real packstored for PACKSTORE_SOAK_SECONDS (default
20) after a warm-up, while maintenance runs; no error (every read checked
against its key), and the daemon's RSS, descriptors and mapped bytes stay
within the bounds load_support states (own_rss_bound, rss_bound,
fds_bound, the cache's budget)."""

import os

import pytest

import load_support as ls

SECONDS = float(os.environ.get("PACKSTORE_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("PACKSTORE_SOAK_CLIENTS", "64"))


def test_sixty_four_clients_with_maintenance_no_errors_and_flat_resources():
    report = ls.run_soak(SECONDS, clients=CLIENTS, warmup=10.0)
    table = ls.soak_table(report)
    print(table)
    if not report["ok"]:
        pytest.fail(table, pytrace=False)
    assert report["errors"] == 0
    assert not report["validate_issues"]
    operations = report["operations"]
    # Both read paths and every read kind were exercised, and writes.
    for kind in ("get", "get_many", "get_range", "open_seek"):
        for path in ("fast", "grpc"):
            assert operations.get(f"{kind} ({path})", 0) > 0, (kind, path, operations)
    assert operations.get("put (grpc)", 0) > 0 and operations.get("put_file (fast)", 0) > 0
    assert sum(n for k, n in report["maintenance_calls"].items() if "skipped" not in k) > 0
    start, end = report["start"], report["end"]
    assert end["own_rss"] <= ls.own_rss_bound(start["own_rss"])
    assert end["rss"] <= ls.rss_bound(start["own_rss"], start["mapped_limit"])
    assert end["other_fds"] <= ls.fds_bound(start["other_fds"])
    assert report["peak"]["mapped"] <= report["start"]["mapped_limit"]
