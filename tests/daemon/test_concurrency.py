"""Many client processes at once, with maintenance running beside them; a
client killed in the middle of an upload; the daemon killed in the middle of
group commits and restarted on the same store.

Client processes are client_tool.py subcommands. PACKSTORE_LOAD_OPS sets
how many operations each load process runs, PACKSTORE_DAEMON_KILL_ROUNDS how
many times the daemon is killed.
"""

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

import daemon_support as support
from daemon_support import KiB, MiB, key_of, pb, wait_for

LOAD_PROCESSES = 16
LOAD_OPS = int(os.environ.get("PACKSTORE_LOAD_OPS", "80"))
LOAD_TIMEOUT = 150
KILL_ROUNDS = int(os.environ.get("PACKSTORE_DAEMON_KILL_ROUNDS", "5"))
WRITERS = 4


class Clients:
    """client_tool.py processes; every one still running is killed at the end."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.processes = []

    def spawn(self, *args, stdout=None):
        name = f"client-{len(self.processes)}"
        env = dict(os.environ, PACKSTORE_BUILD_DIR=str(support.BUILD_DIR),
                   PYTHONDONTWRITEBYTECODE="1")
        with open(self.folder / f"{name}.out", "wb") as out, \
                open(self.folder / f"{name}.err", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(support.CLIENT_TOOL), *[str(arg) for arg in args]],
                stdout=stdout if stdout is not None else out, stderr=err, env=env,
            )
        process.name = name
        self.processes.append(process)
        return process

    def stderr(self, process):
        return (self.folder / f"{process.name}.err").read_text(errors="replace")

    def wait(self, process, timeout):
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{process.name} still running after {timeout} s:\n"
                                 f"{self.stderr(process)}") from None

    def kill_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def all_keys_present_with_their_bytes(stub, keys):
    keys = sorted(keys)
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        present = stub.Has(pb.HasRequest(keys=batch), timeout=support.RPC_TIMEOUT).present
        absent = [key for key, there in zip(batch, present) if not there]
        assert not absent, f"{len(absent)} acknowledged objects are gone, e.g. {absent[:3]}"
    for start in range(0, len(keys), 200):
        batch = keys[start : start + 200]
        objects, missing, _, _ = support.assemble_pieces(
            support.get_many(stub, batch, timeout=60))
        assert not missing, f"GetMany reports acknowledged keys missing: {missing[:3]}"
        wrong = [key for key, data in objects.items() if key_of(data) != key]
        assert not wrong, f"wrong bytes for {wrong[:3]}"
        assert set(objects) == set(batch)


def validate_clean(stub):
    _, issues, result = support.maintenance(stub, "Validate")
    shown = [(issue.kind, issue.subject, issue.detail) for issue in issues[:10]]
    assert result.issues == 0 and not issues, f"Validate found {result.issues} issues: {shown}"
    return result


def test_many_clients_with_maintenance(daemons, tmp_path):
    daemon = daemons()
    stub = daemon.stub
    clients = Clients(tmp_path / "clients")
    results_dir = tmp_path / "load"
    results_dir.mkdir()
    rng = random.Random("maintenance")
    try:
        loads = [clients.spawn("load", daemon.socket, index, results_dir, LOAD_OPS)
                 for index in range(LOAD_PROCESSES)]
        failures, steps, private = [], 0, 0
        deadline = time.monotonic() + LOAD_TIMEOUT
        while any(process.poll() is None for process in loads):
            assert time.monotonic() < deadline, f"the load ran longer than {LOAD_TIMEOUT} s"
            step = steps % 4
            steps += 1
            try:
                if step == 0:
                    compression = rng.choice([pb.COMPRESSION_UNSPECIFIED, pb.COMPRESSION_AUTO])
                    support.maintenance(stub, "Pack", pb.PackRequest(compression=compression))
                elif step == 1:
                    support.maintenance(stub, "Clean", pb.CleanRequest(vacuum=rng.random() < 0.3))
                elif step == 2:
                    compression = rng.choice([pb.COMPRESSION_UNSPECIFIED, pb.COMPRESSION_NO,
                                              pb.COMPRESSION_YES])
                    support.maintenance(stub, "Repack", pb.RepackRequest(compression=compression))
                else:
                    # Objects nobody else uses, put and deleted.
                    datas = []
                    for mode in ("loose", "packed", "auto"):
                        private += 1
                        datas.append(support.random_bytes(1000 + private, f"private {private}"))
                        support.put(stub, datas[-1], mode)
                    keys = [key_of(data) for data in datas]
                    _, _, result = support.maintenance(stub, "Delete", pb.DeleteRequest(keys=keys))
                    if result.deleted != len(keys):
                        failures.append(f"Delete: deleted {result.deleted} of {len(keys)}")
                    present = stub.Has(pb.HasRequest(keys=keys), timeout=support.RPC_TIMEOUT)
                    if any(present.present):
                        failures.append(f"Delete: still present {list(present.present)}")
            except grpc.RpcError as error:
                failures.append(f"step {step}: {error.code().name}: {error.details()}")
            time.sleep(0.05)
        for process in loads:
            code = clients.wait(process, 10)
            assert code == 0, f"{process.name} exited {code}:\n{clients.stderr(process)}"
    finally:
        clients.kill_all()

    assert not failures, f"maintenance beside the load failed: {failures[:10]}"
    assert steps >= 8, f"only {steps} maintenance steps ran during the load"
    acked, errors = set(), []
    for index in range(LOAD_PROCESSES):
        result = json.loads((results_dir / f"result-{index}.json").read_text())
        acked.update(result["acked"])
        errors += [f"load {index}: {error}" for error in result["errors"]]
    assert not errors, f"{len(errors)} client errors, e.g.:\n" + "\n".join(errors[:15])
    assert len(acked) > LOAD_PROCESSES * LOAD_OPS // 2
    print(f"{len(acked)} objects acknowledged to {LOAD_PROCESSES} processes beside "
          f"{steps} maintenance steps")

    all_keys_present_with_their_bytes(stub, acked)
    listed = [key for page in support.list_keys(stub, page_size=1000, timeout=60) for key in page]
    assert listed == sorted(acked), (
        f"List differs from the acknowledged keys: {len(set(listed) - acked)} extra, "
        f"{len(acked - set(listed))} missing")
    validate_clean(stub)
    support.maintenance(stub, "Pack")
    support.maintenance(stub, "Clean")
    all_keys_present_with_their_bytes(stub, acked)
    validate_clean(stub)


def read_line(process, timeout):
    """One line of a client's stdout, or AssertionError after `timeout` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output from the client in {timeout} s"
    return process.stdout.readline().decode().strip()


def test_client_killed_mid_put_stream(daemon, tmp_path):
    stub = daemon.stub
    support.put(stub, b"already here", "loose")
    support.put(stub, b"already here too", "packed")
    before = daemon.status().counts
    keys_before = support.list_keys(stub)
    clients = Clients(tmp_path / "clients")
    size = 3 * MiB + 5
    hung = {}
    try:
        for mode in ("loose", "auto", "packed"):
            hung[mode] = clients.spawn("hang-stream", daemon.socket, mode, size,
                                       stdout=subprocess.PIPE)
        for mode, process in hung.items():
            line = read_line(process, 30)
            assert line == "sent", f"{mode} client: {line!r}\n{clients.stderr(process)}"
        time.sleep(0.5)  # the daemon takes in what was sent
        for process in hung.values():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        clients.kill_all()

    sandbox = daemon.store / "sandbox"
    wait_for(lambda: not os.listdir(sandbox), 15,
             "the killed clients' files to leave sandbox/")
    partial = []
    for mode in hung:
        data = support.random_bytes(size, f"hang {mode} {size}")
        partial += [key_of(data), key_of(data[: 128 * KiB]), key_of(data[: 3 * MiB])]
    present = stub.Has(pb.HasRequest(keys=partial), timeout=support.RPC_TIMEOUT).present
    assert not any(present), "a killed client's partial upload was stored"
    after = daemon.status().counts
    assert (after.loose_objects, after.packed_objects) == (before.loose_objects,
                                                            before.packed_objects)
    assert support.list_keys(stub) == keys_before
    # The daemon goes on serving.
    data = support.random_bytes(2 * MiB, "after the killed clients")
    assert support.put_stream(stub, data, "loose").key == key_of(data)
    assert support.get_bytes(stub, key_of(data), verify=True) == data
    validate_clean(stub)


def acknowledged(folder):
    keys = set()
    for path in Path(folder).glob("*.txt"):
        keys.update(line for line in path.read_text().split("\n") if len(line) == 64)
    return keys


def test_daemon_killed_during_group_commits(daemons, tmp_path):
    daemon = daemons()
    clients = Clients(tmp_path / "clients")
    acks = tmp_path / "acks"
    acks.mkdir()
    rng = random.Random("kill rounds")
    try:
        for round_ in range(KILL_ROUNDS):
            known = len(acknowledged(acks))
            writers = [clients.spawn("writer", daemon.socket, acks / f"{round_}-{index}.txt",
                                     f"{round_}-{index}") for index in range(WRITERS)]
            wait_for(lambda: len(acknowledged(acks)) >= known + 100
                     or not any(w.poll() is None for w in writers),
                     30, f"round {round_}: writers acknowledged")
            time.sleep(rng.uniform(0, 0.4))
            assert all(w.poll() is None for w in writers), (
                "a writer stopped before the kill:\n"
                + "\n".join(clients.stderr(w) for w in writers if w.poll() is not None))
            daemon.kill()
            for writer in writers:
                clients.wait(writer, 20)
                said = clients.stderr(writer).strip()
                assert re.match(r"^(UNAVAILABLE|CANCELLED)\b", said), (
                    f"round {round_}: a writer ended with {said!r}")

            daemon.init = False
            daemon.start()
            keys = acknowledged(acks)
            assert len(keys) >= known + 100
            print(f"round {round_}: {len(keys) - known} objects acknowledged before the kill")
            all_keys_present_with_their_bytes(daemon.stub, keys)
            validate_clean(daemon.stub)
    finally:
        clients.kill_all()

    assert daemon.stop() == 0, daemon.log_tail()
    result = subprocess.run([str(support.CLI_BIN), "--store", str(daemon.store), "validate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"offline validate:\n{result.stdout}{result.stderr}"
