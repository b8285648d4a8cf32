"""Several client processes at once on one daemon: each stores its own
objects (and some every one of them stores), then reads back everybody
else's, every byte compared."""

import json
import subprocess

import packstore
import python_support
from client_worker import all_objects
from daemon_support import key_of

WORKERS = 8


def test_eight_processes_store_and_read_back_each_others_objects(daemon, tmp_path):
    workers = [subprocess.Popen(python_support.worker_argv("exchange", daemon.socket, index,
                                                           WORKERS, tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=python_support.client_env(), cwd="/")
               for index in range(WORKERS)]
    outcomes = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=python_support.WORKER_TIMEOUT)
            outcomes.append((worker.returncode, out, err))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    failures = [(i, code, err) for i, (code, _, err) in enumerate(outcomes) if code != 0]
    assert not failures, failures
    summaries = [json.loads(out) for _, out, _ in outcomes]
    expected = {index: all_objects(index) for index in range(WORKERS)}
    for summary in summaries:
        index = summary["index"]
        others = [d for other, datas in expected.items() if other != index for d in datas]
        assert summary["stored"] == len(expected[index])
        assert summary["checked_objects"] == sum(
            len({key_of(d) for d in datas}) for other, datas in expected.items()
            if other != index)
        assert summary["checked_bytes"] >= sum(len(d) for d in others)
    # Everything is there once, whoever stored it, and the store is sound.
    distinct = {key_of(d): d for datas in expected.values() for d in datas}
    with packstore.Client(daemon.socket, timeout=python_support.CALL_TIMEOUT) as client:
        assert sorted(client.list()) == sorted(distinct)
        assert dict(client.get_many(list(distinct))) == distinct
        result = client.validate()
        assert result.ok, result.issues
