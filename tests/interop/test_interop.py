"""C++ clients, the packstore tool and Python processes write and read one
store at once while the daemon packs, cleans and repacks it: every object
each of them wrote is read back intact by all the others."""

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import daemon_support as support

TESTS_DIR = Path(__file__).resolve().parent
CPP_WORKER = support.BUILD_DIR / "tests" / "client" / "client_worker"
PY_WORKER = TESTS_DIR / "python_worker.py"
WORKER_TIMEOUT = 300


def python_env(socket):
    path = [str(support.PROTO_PYTHON_DIR)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1",
                PACKSTORE_SOCKET=str(socket))


def cli_binary():
    return Path(os.environ.get("PACKSTORE_CLI") or support.CLI_BIN)


class Workers:
    """Client processes of every kind, started together and waited for."""

    def __init__(self, daemon, folder):
        self.daemon = daemon
        self.folder = Path(folder)
        self.running = []

    def start(self, name, argv, env=None):
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
        self.running.append((name, process))

    def cpp_write(self, seed):
        keyfile = self.folder / f"cpp-{seed}.keys"
        self.start(f"C++ writer {seed}",
                   [str(CPP_WORKER), "write", str(self.daemon.socket), str(seed), str(keyfile)])
        return keyfile

    def python_write(self, seed):
        keyfile = self.folder / f"python-{seed}.keys"
        self.start(f"Python writer {seed}",
                   [sys.executable, str(PY_WORKER), "write", str(self.daemon.socket), str(seed),
                    str(keyfile)], env=python_env(self.daemon.socket))
        return keyfile

    def cli_write(self, seed):
        """Files written here, stored with `packstore put`; its keys checked
        and written to a key file when it has finished (see wait)."""
        inputs = self.folder / f"cli-input-{seed}"
        inputs.mkdir()
        for i in range(30):
            (inputs / f"file-{i}").write_bytes(support.random_bytes(700 * i + 1, f"cli-{seed}-{i}"))
        (inputs / "big").write_bytes(support.random_bytes(3 * support.MiB + 1, f"cli-{seed}-big"))
        keyfile = self.folder / f"cli-{seed}.keys"
        files = sorted(inputs.iterdir())
        self.start(f"CLI writer {seed}", [str(cli_binary()), "put", *map(str, files)],
                   env=dict(os.environ, PACKSTORE_SOCKET=str(self.daemon.socket)))
        self.running[-1] += ((keyfile, files),)
        return keyfile

    def cpp_read(self, keyfiles):
        self.start("C++ reader", [str(CPP_WORKER), "read", str(self.daemon.socket),
                                  *map(str, keyfiles)])

    def python_read(self, keyfiles):
        self.start("Python reader", [sys.executable, str(PY_WORKER), "read",
                                     str(self.daemon.socket), *map(str, keyfiles)],
                   env=python_env(self.daemon.socket))

    def cli_read(self, keyfiles):
        """`packstore cat` of every listed object, checked here."""
        env = dict(os.environ, PACKSTORE_SOCKET=str(self.daemon.socket))
        for keyfile in keyfiles:
            for line in keyfile.read_text().splitlines():
                key, size = line.split()
                out = subprocess.run([str(cli_binary()), "cat", key], capture_output=True,
                                     env=env, timeout=WORKER_TIMEOUT)
                assert out.returncode == 0, f"packstore cat {key}: {out.stderr.decode()}"
                assert len(out.stdout) == int(size) and support.key_of(out.stdout) == key, \
                    f"packstore cat {key}: wrong bytes"

    def wait(self):
        for entry in self.running:
            name, process = entry[0], entry[1]
            out, err = process.communicate(timeout=WORKER_TIMEOUT)
            assert process.returncode == 0, f"{name} failed ({process.returncode}): {err}"
            if len(entry) == 3:  # a CLI writer: check its keys, then publish them
                keyfile, files = entry[2]
                lines = [line.split("  ", 1) for line in out.splitlines()]
                assert [Path(path) for _, path in lines] == files
                with open(keyfile, "w") as f:
                    for (key, _), path in zip(lines, files):
                        data = path.read_bytes()
                        assert key == hashlib.sha256(data).hexdigest(), f"put {path}: wrong key"
                        f.write(f"{key} {len(data)}\n")
        self.running = []


def keep_maintaining(daemon, stop, errors):
    """Pack, clean and repack in a loop until `stop` is set."""
    stub = daemon.new_stub()
    calls = [("Pack", None), ("Clean", None), ("Repack", None)]
    i = 0
    while not stop.is_set():
        method, request = calls[i % len(calls)]
        i += 1
        try:
            support.maintenance(stub, method, request)
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(f"{method}: {error}")
            return


def test_every_client_reads_what_every_other_wrote_while_the_store_packs(daemon, tmp_path):
    for binary, target in [(CPP_WORKER, "client_worker"), (cli_binary(), "packstore")]:
        if not binary.exists():
            pytest.fail(f"{binary} is not built (build the {target} target)", pytrace=False)
    workers = Workers(daemon, tmp_path)
    stop, errors = threading.Event(), []
    maintainer = threading.Thread(target=keep_maintaining, args=(daemon, stop, errors))
    maintainer.start()
    try:
        # Round 1: writers of every kind at once.
        first = [workers.cpp_write(1), workers.python_write(1), workers.cli_write(1),
                 workers.cpp_write(2), workers.python_write(2)]
        workers.wait()
        # Round 2: new writers while readers of every kind read round 1.
        second = [workers.cpp_write(3), workers.python_write(3), workers.cli_write(3)]
        workers.cpp_read(first)
        workers.python_read(first)
        workers.cli_read(first[:3])
        workers.wait()
        # Round 3: everything, by every kind of reader.
        workers.cpp_read(first + second)
        workers.python_read(first + second)
        workers.cli_read(second)
        workers.wait()
    finally:
        stop.set()
        maintainer.join(timeout=300)
    assert not errors, errors
    # Nothing was lost or damaged by all that packing.
    keys = {line.split()[0] for keyfile in first + second
            for line in keyfile.read_text().splitlines()}
    counts = daemon.status().counts
    assert counts.packed_objects + counts.loose_objects == len(keys)
    _, issues, result = support.maintenance(daemon.new_stub(), "Validate")
    assert not issues and result.issues == 0
