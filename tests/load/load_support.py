"""Shared by the load suite (tests/load) and the bench scripts
(bench/crash_loop.py, bench/soak.py): a packstored process, client
processes (load_worker.py), their journals, the crash harness and the soak.

Where the build is comes from tests/daemon/daemon_support.py
(PACKSTORE_BUILD_DIR, default build/dev under the repository root), which
also puts <build>/python, the assembled packstore package, on sys.path.

Nothing here needs pytest: the bench scripts import it as a plain module.
"""

import collections
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD_DIR = Path(__file__).resolve().parent
DAEMON_TESTS_DIR = LOAD_DIR.parent / "daemon"
for _path in (str(DAEMON_TESTS_DIR), str(LOAD_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import daemon_support as support  # noqa: E402 - puts <build>/python on sys.path


def import_packstore():
    """The packstore package of <build>/python (not the bare stubs some
    other suite may have imported as a namespace package first)."""
    import packstore

    if getattr(packstore, "__file__", None) is None:
        for name in [n for n in sys.modules if n == "packstore" or n.startswith("packstore.")]:
            del sys.modules[name]
        import packstore
    packstore.Client  # noqa: B018 - fails on a package without the client
    return packstore


packstore = import_packstore()

WORKER = LOAD_DIR / "load_worker.py"
KiB = 1024
MiB = 1024 * KiB

# Every call carries a deadline: a hang fails instead of blocking.
CALL_TIMEOUT = 30.0
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def now():
    """CLOCK_MONOTONIC, the same clock in every process of the machine: the
    journals' timestamps are compared across processes with it."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def key_of(data):
    return hashlib.sha256(data).hexdigest()


def client_env():
    """The environment of a client process: the package and the helpers on
    its path, no bytecode written into the build or the tree."""
    path = [str(support.PROTO_PYTHON_DIR), str(LOAD_DIR), str(DAEMON_TESTS_DIR)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1",
                PACKSTORE_BUILD_DIR=str(support.BUILD_DIR))


def start_worker(role, args, log_path):
    """Starts load_worker.py `role` with `args` (a dict of --name value);
    its stdout and stderr go to `log_path`."""
    argv = [sys.executable, str(WORKER), role]
    for name, value in args.items():
        argv += [f"--{name}", str(value)]
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=client_env(), cwd="/")
    finally:
        log.close()


def stop_processes(processes, timeout=STOP_TIMEOUT):
    """Waits for `processes` to exit; kills (each by its own pid) those
    still running after `timeout`. The exit codes."""
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait(timeout=STOP_TIMEOUT))
    return codes


def tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])


# ---- the daemon ----------------------------------------------------------------


class DaemonProcess:
    """One packstored on `store` and `socket`, its log appended to `log_path`
    across restarts. (A small copy of tests/daemon/conftest.py's Daemon,
    without pytest, for the bench scripts.)"""

    def __init__(self, store, socket, log_path, flags=None):
        self.store = Path(store)
        self.socket = Path(socket)
        self.log_path = Path(log_path)
        self.flags = dict(flags or {})
        self.process = None
        self.starts = 0

    def argv(self):
        if not support.DAEMON_BIN.exists():
            raise FileNotFoundError(
                f"packstored is not built: {support.DAEMON_BIN} is missing "
                "(build the tree, or set PACKSTORE_BUILD_DIR)")
        argv = [str(support.DAEMON_BIN), "--store", str(self.store), "--socket",
                str(self.socket), "--init"]
        for flag, value in self.flags.items():
            argv += [flag, str(value)]
        return argv

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self, timeout=STARTUP_TIMEOUT):
        """Starts it and waits until grpc.health says SERVING; the seconds
        that took."""
        assert not self.running(), "already running"
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"==== start {self.starts}: {' '.join(self.argv())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = began + timeout
        last = "the socket did not appear"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"packstored exited {self.process.returncode} before "
                                   f"serving:\n{tail(self.log_path)}")
            if self.socket.exists():
                channel = support.connect(self.socket, own_connection=True)
                try:
                    last = support.health_check(channel, timeout=1.0)
                    if last == "SERVING":
                        return time.monotonic() - began
                except support.grpc.RpcError as error:
                    last = f"{error.code().name}: {error.details()}"
                finally:
                    channel.close()
            time.sleep(0.01)
        raise RuntimeError(f"packstored not SERVING after {timeout:.0f} s ({last}):\n"
                           f"{tail(self.log_path)}")

    def kill(self):
        """SIGKILL, then reap. The monotonic time the signal was sent."""
        at = now()
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT)
        return at

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait (SIGKILL after `timeout`); the exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
                raise RuntimeError(f"packstored ignored SIGTERM for {timeout:.0f} s")
        return None if self.process is None else self.process.returncode

    # -- /proc figures ----------------------------------------------------------

    def rss_bytes(self):
        return self.proc_status("VmRSS") * 1024

    def threads(self):
        return self.proc_status("Threads")

    def proc_status(self, field):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def open_fds(self):
        """(all open descriptors, those that are sockets, a Counter of what
        they are: socket, pack, loose, sandbox, index, other...)."""
        folder = f"/proc/{self.pid}/fd"
        store = str(self.store) + "/"
        kinds = collections.Counter()
        for name in os.listdir(folder):
            try:
                target = os.readlink(f"{folder}/{name}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:"):
                kind = "socket"
            elif target.startswith(store):
                rest = target[len(store):]
                kind = ("index" if rest.startswith("packs.idx") else
                        rest.split("/", 1)[0] + (" (deleted)" if target.endswith(" (deleted)")
                                                 else ""))
            else:
                kind = target.split(":", 1)[0] if ":" in target else "other"
            kinds[kind] += 1
        total = sum(kinds.values())
        return total, kinds["socket"], kinds

    def pack_mappings(self):
        """(bytes mapped, bytes resident) of the mappings of files in the
        store's packs/ folder (/proc/PID/smaps: the region cache's windows)."""
        packs = str(self.store / "packs") + "/"
        size = resident = 0
        current = False
        with open(f"/proc/{self.pid}/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if not fields:
                    continue
                if not fields[0].endswith(":"):
                    current = len(fields) >= 6 and fields[5].startswith(packs)
                    if current:
                        start, end = (int(x, 16) for x in fields[0].split("-"))
                        size += end - start
                elif current and fields[0] == "Rss:":
                    resident += int(fields[1]) * 1024
        return size, resident


# ---- journals ------------------------------------------------------------------
#
# One file per client process, one line per record, written with one
# os.write each (in the kernel as soon as the call returns: only the daemon
# is killed, so nothing needs an fsync). Fields are separated by spaces:
#
#   B <seq> <t> <op> [key ...]      an operation begins (delete: the keys asked)
#   A <seq> <t> [key size ...]      it ended OK; for puts, every key acknowledged
#   E <seq> <t> <code> <message>    it ended with an error
#   P <gen> <t>                     paused (the harness's pause number gen)
#   S <t> <message>                 a note: reconnecting after an error was slow
#   X <t> <message>                 the client found something wrong (a key
#                                   that is not the content's SHA-256, bytes
#                                   read that are not the key's...)
#
# <t> is CLOCK_MONOTONIC in seconds.


class Journal:
    def __init__(self, path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, *fields):
        line = " ".join(str(field) for field in fields).replace("\n", " ") + "\n"
        os.write(self._fd, line.encode())

    def close(self):
        os.close(self._fd)


class JournalReader:
    """Reads a journal incrementally: only complete lines, from where the
    previous read stopped."""

    def __init__(self, path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def new_lines(self):
        try:
            with open(self.path, "rb") as journal:
                journal.seek(self._offset)
                data = journal.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line.decode() for line in lines if line]


class Operation:
    __slots__ = ("client", "seq", "op", "begin", "end", "outcome", "keys")

    def __init__(self, client, seq, op, begin, keys):
        self.client, self.seq, self.op, self.begin = client, seq, op, begin
        self.end = None
        self.outcome = None  # "ok", or the error code name
        self.keys = keys  # delete: the keys asked

    def in_flight_at(self, t):
        return self.begin <= t and (self.end is None or self.end >= t)


class JournalState:
    """Everything the journals of one store say: acknowledged keys (with
    sizes), keys a delete was asked for, deletes acknowledged, operations
    with their times, and what the clients found wrong."""

    def __init__(self):
        self.acked = {}  # key -> size
        self.delete_asked = set()
        self.deleted = set()
        self.operations = []
        self.open = {}  # (client, seq) -> Operation not yet ended
        self.paused = collections.defaultdict(int)  # client -> highest pause gen
        self.problems = []
        self.slow = []  # notes of slow reconnections (not failures)
        self.errors = collections.Counter()
        self.readers = {}

    def add_journal(self, client, path):
        self.readers[client] = JournalReader(path)

    def read(self):
        for client, reader in self.readers.items():
            for line in reader.new_lines():
                self._apply(client, line)

    def _apply(self, client, line):
        fields = line.split(" ")
        kind = fields[0]
        if kind == "B":
            seq, t, op = int(fields[1]), float(fields[2]), fields[3]
            operation = Operation(client, seq, op, t, fields[4:])
            if op == "delete":
                self.delete_asked.update(fields[4:])
            self.operations.append(operation)
            self.open[(client, seq)] = operation
        elif kind in ("A", "E"):
            seq, t = int(fields[1]), float(fields[2])
            operation = self.open.pop((client, seq), None)
            if operation is None:
                self.problems.append(f"{client}: an end with no begin: {line}")
                return
            operation.end = t
            if kind == "A":
                operation.outcome = "ok"
                if operation.op == "delete":
                    self.deleted.update(operation.keys)
                else:
                    rest = fields[3:]
                    for key, size in zip(rest[0::2], rest[1::2]):
                        self.acked[key] = int(size)
            else:
                operation.outcome = fields[3]
                self.errors[(operation.op, fields[3])] += 1
        elif kind == "P":
            self.paused[client] = max(self.paused[client], int(fields[1]))
        elif kind == "S":
            self.slow.append(f"{client}: {' '.join(fields[2:])}")
        elif kind == "X":
            self.problems.append(f"{client}: {' '.join(fields[2:])}")

    def must_be_present(self):
        """Acknowledged keys no delete was asked for (a delete that was not
        acknowledged may or may not have happened)."""
        return {key: size for key, size in self.acked.items() if key not in self.delete_asked}


# ---- checks --------------------------------------------------------------------


# Validate issue kinds a crash may legitimately leave behind, with the
# format rule that allows it. Empty: after a restart, recovery removes
# every leftover the format describes (docs/format.md, "Recovery": stale
# lock files, pack files no row points to, packs/-1, sandbox files), and
# holes past the last committed row are legal pack bytes that Validate
# does not report. So every issue is reported as a failure.
EXPECTED_AFTER_CRASH = {}


def check_store(socket, state, timeout=CALL_TIMEOUT, sample_verify=16, rng=None):
    """Checks the daemon on `socket` against the journals' `state`:

    - every acknowledged key not asked to be deleted is present, and its
      bytes, read back through the fast path (get_many), hash to the key and
      have the acknowledged size; a sample is also read over gRPC with
      verify=True (the daemon re-hashes it);
    - every acknowledged delete is absent;
    - Validate reports no issue.

    Returns (a list of failures, figures)."""
    failures = []
    present = state.must_be_present()
    keys = sorted(present)
    figures = {"checked": len(keys), "deletes_checked": len(state.deleted),
               "issues": 0, "bytes": 0, "lost": 0, "not_deleted": 0}
    lost = set()
    with packstore.Client(socket, timeout=timeout, retries=0) as client:
        if keys:
            found = client.has(keys)
            missing = [key for key, there in zip(keys, found) if not there]
            lost.update(missing)
            if missing:
                failures.append(f"{len(missing)} acknowledged objects missing, e.g. "
                                f"{missing[:5]}")
            seen = set()
            for key, data in client.get_many(keys):
                seen.add(key)
                if data is None:
                    if key not in missing:
                        failures.append(f"{key}: missing from get_many but has() says present")
                    continue
                figures["bytes"] += len(data)
                if len(data) != present[key] or key_of(data) != key:
                    lost.add(key)
                if len(data) != present[key]:
                    failures.append(f"{key}: read {len(data)} bytes, acknowledged {present[key]}")
                elif key_of(data) != key:
                    failures.append(f"{key}: the bytes read hash to {key_of(data)}")
            if seen != set(keys):
                lost.update(set(keys) - seen)
                failures.append(f"get_many answered {len(seen)} of {len(keys)} keys")
            rng = rng or random.Random(0)
            big = sorted(keys, key=lambda k: -present[k])[:4]
            for key in set(big + rng.sample(keys, min(sample_verify, len(keys)))):
                try:
                    data = client.get(key, verify=True)
                    if len(data) != present[key] or key_of(data) != key:
                        lost.add(key)
                        failures.append(f"{key}: gRPC verified read returned wrong bytes")
                except packstore.PackstoreError as error:
                    lost.add(key)
                    failures.append(f"{key}: get(verify=True) failed: {error}")
        deleted = sorted(state.deleted)
        if deleted:
            there = [key for key, p in zip(deleted, client.has(deleted)) if p]
            figures["not_deleted"] = len(there)
            if there:
                failures.append(f"{len(there)} acknowledged deletes still present, e.g. "
                                f"{there[:5]}")
        result = validate_when_free(client, timeout)
        figures["issues"] = len(result.issues)
        for issue in result.issues:
            rule = EXPECTED_AFTER_CRASH.get(issue.kind)
            failures.append(f"validate: {issue.kind} {issue.subject}: {issue.detail}"
                            + (f" (allowed by: {rule})" if rule else ""))
        figures["validated"] = result.loose_checked + result.packed_checked
    figures["lost"] = len(lost)
    return failures, figures


def validate_when_free(client, timeout):
    """Validate, waiting for a maintenance operation of the daemon's own (an
    auto-pack) to end first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.validate(timeout=max(1.0, deadline - time.monotonic()))
        except packstore.FailedPrecondition:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---- the crash harness ---------------------------------------------------------

# The daemon of the crash harness: its own maintenance on short timers
# (auto-pack after 100 loose objects, checked every second; a WAL
# checkpoint and idle unmapping every second), so that kills land during
# those too.
CRASH_FLAGS = {
    "--auto-pack": "true",
    "--pack-loose-objects": "100",
    "--maintenance-interval": "1",
    "--checkpoint-interval": "1",
    "--unmap-idle-interval": "1",
    "--free-disk-reserve": "16MiB",
    "--log-level": "info",
}
# Small packs: appends move to new packs, and repack has several to rewrite.
CRASH_PACK_SIZE_TARGET = 4 * MiB

# Kill targets. "put" and "group_commit" kill after a random delay of load;
# the maintenance ones wait for the maintenance client to begin that
# operation, then kill after a random part of its usual duration.
MAINTENANCE_TARGETS = ("pack", "repack", "clean", "delete")
TARGETS = ("put", "group_commit") + MAINTENANCE_TARGETS
PAUSE_TIMEOUT = 30.0


def op_kind(op):
    """The kind of a journal operation name: put/packed/yes/123 -> put."""
    return op.split("/", 1)[0]


def uses_pack_writer(op):
    """Whether a put goes through the group commit (a packed write): packed
    mode, or auto (and the default mode, auto) for objects up to 1 MiB."""
    parts = op.split("/")
    kind, mode = parts[0], parts[1] if len(parts) > 1 else ""
    if kind not in ("put", "put_many", "put_file", "put_stream", "put_large"):
        return False
    if mode == "packed":
        return True
    if mode in ("auto", "default"):
        if kind == "put_many":
            return True
        size = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
        return size <= MiB
    return False


def in_flight_kinds(operations):
    """The coverage categories of the operations in flight at a kill."""
    kinds = set()
    packed = 0
    for operation in operations:
        kind = op_kind(operation.op)
        if kind.startswith("put"):
            kinds.add(kind)
            mode = operation.op.split("/")[1]
            kinds.add(f"put ({mode} mode)")
            if uses_pack_writer(operation.op):
                packed += 1
        else:
            kinds.add(kind)
    if packed >= 2:
        kinds.add("group commit (>= 2 packed puts)")
    return kinds


class CrashCheckFailed(AssertionError):
    pass


class CrashRun:
    """Runs `points` kill points: cycles of `kills_per_cycle` kills, each
    cycle on a new store with new client processes (`writers` put clients
    and one maintenance client).

    Each kill point: load for a drawn time (or, for a maintenance target,
    until the maintenance client, asked through a hint file, begins that
    operation, then a random part of its usual duration), SIGKILL the daemon,
    pause the clients (they record it once their call in flight has
    failed), restart the daemon on the same store, read the journals, check
    (check_store), resume. At the end of a cycle the clients stop, the
    daemon is stopped with SIGTERM (exit 0 expected) and the store is opened
    and validated offline by the packstore tool.
    """

    def __init__(self, points, seed, workdir=None, kills_per_cycle=10, writers=4, log=print,
                 keep_failed=True, kills_log=None):
        self.kills_log = kills_log  # a file: one JSON line per kill point
        self.points = points
        self.seed = seed
        self.kills_per_cycle = kills_per_cycle
        self.writers = writers
        self.log = log
        self.keep_failed = keep_failed
        # Sockets need short paths (108 bytes): a folder of its own in /tmp.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pscrash-"))
        self.coverage = collections.Counter()  # category -> kill points it was in flight at
        self.targets = collections.Counter()
        self.target_hit = collections.Counter()
        self.totals = collections.Counter()
        self.errors = collections.Counter()
        self.restart_seconds = []
        self.check_seconds = []
        self.pause_seconds = []  # per kill: until every client had paused
        self.kills = []  # per kill point: a dict
        self.leftovers = collections.Counter()  # what kills left for recovery
        self.current = None  # (cycle, kill point) being run

    # -- helpers ----------------------------------------------------------------

    def replay_hint(self, cycle, point):
        return (f"seed {self.seed}, cycle {cycle}, kill point {point} (replay: "
                f"PACKSTORE_CRASH_SEED={self.seed} PACKSTORE_CRASH_FIRST_CYCLE={cycle}, "
                f"kills per cycle {self.kills_per_cycle}, writers {self.writers})")

    def run(self, first_cycle=0):
        began = time.monotonic()
        point, cycle = first_cycle * self.kills_per_cycle, first_cycle
        end = point + self.points
        try:
            while point < end:
                count = min(self.kills_per_cycle, end - point)
                self.current = (cycle, point)
                try:
                    self.run_cycle(cycle, point, count)
                except CrashCheckFailed:
                    raise
                except Exception as error:
                    raise CrashCheckFailed(f"{type(error).__name__}: {error}\n"
                                           + self.replay_hint(*self.current)) from error
                point += count
                cycle += 1
                self.log(f"cycle {cycle - 1} done: {len(self.kills)} kill points, "
                         f"{self.totals['checked']} objects checked, lost "
                         f"{self.totals['lost']}, validate issues {self.totals['issues']}, "
                         f"{time.monotonic() - began:.0f} s")
        finally:
            self.wall_seconds = time.monotonic() - began
        if not os.environ.get("PACKSTORE_CRASH_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.summary()

    def summary(self):
        return {
            "seed": self.seed,
            "kill_points": len(self.kills),
            "acknowledged_objects_checked": self.totals["checked"],
            "distinct_acknowledged_objects": self.totals["acked"],
            "deletes_checked": self.totals["deletes_checked"],
            "distinct_acknowledged_deletes": self.totals["deleted"],
            "objects_lost": self.totals["lost"],
            "validate_issues": self.totals["issues"],
            "offline_validations": self.totals["offline_validations"],
            "in_flight": dict(self.coverage),
            "leftovers": dict(self.leftovers),
            "targets": dict(self.targets),
            "target_hit": dict(self.target_hit),
            "client_errors": {f"{op} {code}": n for (op, code), n in self.errors.items()},
            "restart_seconds_median": statistics.median(self.restart_seconds or [0]),
            "check_seconds_median": statistics.median(self.check_seconds or [0]),
            "pause_seconds_max": max(self.pause_seconds or [0]),
            "wall_seconds": getattr(self, "wall_seconds", 0.0),
        }

    # -- one cycle --------------------------------------------------------------

    def run_cycle(self, cycle, first_point, count):
        rng = random.Random(f"{self.seed}/cycle/{cycle}")
        folder = self.workdir / f"c{cycle}"
        folder.mkdir(parents=True)
        store, socket = folder / "store", folder / "sock"
        subprocess.run([str(support.CLI_BIN), "init", str(store), "--pack-size-target",
                        str(CRASH_PACK_SIZE_TARGET)], check=True, capture_output=True,
                       timeout=CALL_TIMEOUT)
        daemon = DaemonProcess(store, socket, folder / "packstored.log", CRASH_FLAGS)
        pause, stop = folder / "pause", folder / "stop"
        state = JournalState()
        maint_tail = JournalReader(folder / "maint.journal")
        workers = []
        ok = False
        try:
            daemon.start()
            for index in range(self.writers + 1):
                role = "crash-maint" if index == self.writers else "crash-writer"
                name = "maint" if index == self.writers else f"w{index}"
                journal = folder / f"{name}.journal"
                state.add_journal(name, journal)
                workers.append(start_worker(role, {
                    "socket": socket, "journal": journal, "pause": pause, "stop": stop,
                    "hint": folder / "hint",
                    "seed": f"{self.seed}.{cycle}", "index": index, "tmp": folder / f"{name}.tmp",
                    "timeout": CALL_TIMEOUT}, folder / f"{name}.log"))
            durations = collections.defaultdict(list)  # maintenance kind -> seconds
            for point in range(first_point, first_point + count):
                target = rng.choice(TARGETS)
                self.kill_point(cycle, point, target, rng, daemon, state, maint_tail,
                                durations, pause, workers, folder)
            # The end of the cycle: one more kill under load, the clients
            # stopped, then the store opened and validated offline by the
            # packstore tool (which recovers it as the daemon would), then
            # the daemon restarted for the full checks, and stopped with
            # SIGTERM (exit 0).
            last = first_point + count - 1
            pause.unlink(missing_ok=True)
            time.sleep(rng.uniform(0.05, 0.5))
            daemon.kill()
            self.count_leftovers(daemon.store)
            stop.write_text("stop")
            codes = stop_processes(workers)
            state.read()
            if any(codes):
                raise CrashCheckFailed(
                    f"client processes exited {codes} (logs in {folder}):\n"
                    + "\n".join(tail(folder / f"{n}.log", 10) for n in state.readers)
                    + "\n" + self.replay_hint(cycle, last))
            offline = subprocess.run([str(support.CLI_BIN), "--store", str(store), "validate",
                                      "-v"], capture_output=True, text=True, timeout=120)
            self.totals["offline_validations"] += 1
            if offline.returncode != 0:
                raise CrashCheckFailed(
                    f"offline validate of the store after the cycle's last kill exited "
                    f"{offline.returncode}: {offline.stdout}{offline.stderr}\n"
                    + self.replay_hint(cycle, last))
            daemon.start()
            failures, figures = check_store(daemon.socket, state, rng=rng)
            failures += state.problems
            self.totals["checked"] += figures["checked"]
            self.totals["deletes_checked"] += figures["deletes_checked"]
            self.totals["issues"] += figures["issues"]
            self.totals["lost"] += figures["lost"]
            if failures:
                raise CrashCheckFailed(
                    "after the cycle's last kill and the offline validate: "
                    + "\n  ".join(failures[:30]) + "\n" + self.replay_hint(cycle, last))
            code = daemon.stop()
            if code != 0:
                raise CrashCheckFailed(f"packstored exited {code} on SIGTERM:\n"
                                       f"{tail(daemon.log_path)}\n"
                                       + self.replay_hint(cycle, last))
            for (op, code_name), n in state.errors.items():
                self.errors[(op_kind(op), code_name)] += n
            self.totals["acked"] += len(state.acked)
            self.totals["deleted"] += len(state.deleted)
            ok = True
        finally:
            if not ok:
                stop.write_text("stop")
                pause.unlink(missing_ok=True)
                daemon.kill()
                stop_processes(workers, timeout=5)
                if self.keep_failed:
                    kept = Path(tempfile.mkdtemp(prefix="pscrash-failed-"))
                    shutil.move(str(folder), str(kept / folder.name))
                    self.log(f"the failed cycle's store, journals and logs: {kept}")
            else:
                daemon.kill()
            if os.environ.get("PACKSTORE_CRASH_KEEP"):
                self.log(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)

    def kill_point(self, cycle, point, target, rng, daemon, state, maint_tail, durations,
                   pause, workers, folder):
        self.current = (cycle, point)
        hint = folder / "hint"
        hint.unlink(missing_ok=True)
        if target in MAINTENANCE_TARGETS:
            # Ask the maintenance client to run the target next (it still
            # draws everything else); the kill lands at a random instant of it.
            hint.with_suffix(".tmp").write_text(target)
            os.replace(hint.with_suffix(".tmp"), hint)
        # Resume the clients (they were paused for the previous check).
        pause.unlink(missing_ok=True)
        resumed = now()
        maint_tail.new_lines()  # skip what happened before the resume
        if target in MAINTENANCE_TARGETS:
            delay = self.wait_for_maintenance(target, maint_tail, durations, rng, resumed)
        else:
            delay = rng.uniform(0.05, 0.5)
            time.sleep(delay)
        for worker in workers:
            if worker.poll() is not None:
                raise CrashCheckFailed(f"a client process exited {worker.returncode} before "
                                       f"kill point {point}: {self.replay_hint(cycle, point)}")
        killed_at = daemon.kill()
        self.count_leftovers(daemon.store)
        # Pause the clients and wait until each has seen it (its call in
        # flight has failed or returned, and is in its journal).
        gen = point + 1
        tmp = pause.with_suffix(".tmp")
        tmp.write_text(str(gen))
        os.replace(tmp, pause)
        deadline = time.monotonic() + PAUSE_TIMEOUT
        pause_began = time.monotonic()
        while True:
            state.read()
            if all(state.paused[name] >= gen for name in state.readers):
                pause_wait = time.monotonic() - pause_began
                break
            if time.monotonic() > deadline:
                late = [n for n in state.readers if state.paused[n] < gen]
                raise CrashCheckFailed(f"clients {late} did not pause within "
                                       f"{PAUSE_TIMEOUT:.0f} s after the kill: "
                                       f"{self.replay_hint(cycle, point)}")
            time.sleep(0.005)
        in_flight = [op for op in state.operations if op.in_flight_at(killed_at)]
        for operation in state.operations:
            if operation.end is not None and operation.op.split("/")[0] in MAINTENANCE_TARGETS \
                    and operation.outcome == "ok":
                durations[op_kind(operation.op)].append(operation.end - operation.begin)
        # Keep only operations that may still matter (not ended yet).
        state.operations = [op for op in state.operations if op.end is None]
        kinds = in_flight_kinds(in_flight)
        self.coverage.update(kinds)
        self.targets[target] += 1
        if (target == "put" and any(k.startswith("put") for k in kinds)) or \
                (target == "group_commit" and "group commit (>= 2 packed puts)" in kinds) or \
                target in kinds:
            self.target_hit[target] += 1
        restart = daemon.start()
        self.restart_seconds.append(restart)
        check_began = time.monotonic()
        failures, figures = check_store(daemon.socket, state, rng=rng)
        self.check_seconds.append(time.monotonic() - check_began)
        failures += state.problems
        unexpected = {k: n for k, n in state.errors.items()
                      if k[1] not in ("UNAVAILABLE", "CANCELLED")
                      and not (k[1] == "FAILED_PRECONDITION"
                               and op_kind(k[0]) in MAINTENANCE_TARGETS)}
        if unexpected:
            failures.append(f"client errors that a kill does not explain: {unexpected}")
        self.totals["checked"] += figures["checked"]
        self.totals["deletes_checked"] += figures["deletes_checked"]
        self.totals["issues"] += figures["issues"]
        self.totals["lost"] += figures["lost"]
        self.totals["not_deleted"] += figures["not_deleted"]
        description = ", ".join(sorted(f"{o.client}:{o.op}" for o in in_flight))
        self.pause_seconds.append(pause_wait)
        record = {"cycle": cycle, "point": point, "target": target, "delay": round(delay, 5),
                  "pause_wait": round(pause_wait, 4),
                  "in_flight": sorted(f"{o.client}:{o.op}" for o in in_flight),
                  "kinds": sorted(kinds), "checked": figures["checked"],
                  "deletes_checked": figures["deletes_checked"], "failures": len(failures)}
        self.kills.append(record)
        if self.kills_log:
            with open(self.kills_log, "a") as out:
                out.write(json.dumps(record) + "\n")
        if failures:
            raise CrashCheckFailed(
                "after kill point {p}: {n} failure(s):\n  ".format(p=point, n=len(failures))
                + "\n  ".join(failures[:30])
                + f"\nkill target {target}, delay {delay:.4f} s after the resume/begin; "
                f"in flight at the kill: {description}\n" + self.replay_hint(cycle, point)
                + f"\ndaemon log:\n{tail(daemon.log_path, 30)}")

    def count_leftovers(self, store):
        """What the kill left for recovery (counted before the restart):
        pack lock files, sandbox files, a WAL not checkpointed."""
        packs = os.listdir(store / "packs")
        if any(name.endswith(".lock") for name in packs):
            self.leftovers["pack lock file"] += 1
        if os.listdir(store / "sandbox"):
            self.leftovers["sandbox file"] += 1
        try:
            if os.path.getsize(store / "packs.idx-wal") > 0:
                self.leftovers["non-empty WAL"] += 1
        except FileNotFoundError:
            pass

    def wait_for_maintenance(self, target, maint_tail, durations, rng, resumed):
        """Waits until the maintenance client begins `target` (at most 2 s),
        then for a random part of that operation's usual duration; the delay
        drawn."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            began = [line for line in maint_tail.new_lines()
                     if line.startswith("B ") and line.split(" ")[3].split("/")[0] == target]
            if began:
                break
            time.sleep(0.001)
        known = durations.get(target)
        usual = statistics.median(known[-20:]) if known else 0.02
        delay = rng.uniform(0.0, usual)
        time.sleep(delay)
        return delay


def crash_table(summary):
    """The crash harness's summary as a plain-text table."""
    rows = [
        ("seed", summary["seed"]),
        ("kill points", summary["kill_points"]),
        ("acknowledged objects checked (sum over kill points)",
         summary["acknowledged_objects_checked"]),
        ("distinct acknowledged objects", summary["distinct_acknowledged_objects"]),
        ("deletes checked (sum over kill points)", summary["deletes_checked"]),
        ("distinct acknowledged deletes", summary["distinct_acknowledged_deletes"]),
        ("objects lost (must be 0)", summary["objects_lost"]),
        ("validate issues (must be 0)", summary["validate_issues"]),
        ("offline opens + validates after a cycle's last kill (all exit 0)",
         summary["offline_validations"]),
        ("restart to SERVING, median s", f"{summary['restart_seconds_median']:.3f}"),
        ("checks per kill point, median s", f"{summary['check_seconds_median']:.3f}"),
        ("longest wait for the clients to pause after a kill, s",
         f"{summary['pause_seconds_max']:.3f}"),
        ("wall time s", f"{summary['wall_seconds']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append("in flight at the kill (kill points; an operation counts when it had begun")
    lines.append("and not yet returned to its client when SIGKILL was sent):")
    for name, count in sorted(summary["in_flight"].items(), key=lambda item: -item[1]):
        lines.append(f"  {name:<40} {count}")
    lines.append("kill targets drawn (hit: the target was in flight at the kill):")
    for name in TARGETS:
        lines.append(f"  {name:<40} {summary['targets'].get(name, 0)} "
                     f"(hit {summary['target_hit'].get(name, 0)})")
    lines.append("left for recovery (of all kills: the kill points and each cycle's last kill):")
    for name, count in sorted(summary["leftovers"].items()):
        lines.append(f"  {name:<40} {count}")
    lines.append("client errors (UNAVAILABLE: calls cut by a kill; FAILED_PRECONDITION: a")
    lines.append("maintenance call refused while the daemon's own auto-pack ran):")
    for name, count in sorted(summary["client_errors"].items()):
        lines.append(f"  {name:<40} {count}")
    return "\n".join(lines)


# ---- the soak ------------------------------------------------------------------

# The soak's daemon: its own maintenance on short timers (auto-pack after
# 500 loose objects, checked every 2 s, with clean after pack; checkpoints
# and idle unmapping every 5 s) and a region cache budget small enough to
# be reached, so that windows are evicted and unmapped all along.
SOAK_CACHE_MAX_MAPPED = 128 * MiB
SOAK_FLAGS = {
    "--auto-pack": "true",
    "--pack-loose-objects": "500",
    "--maintenance-interval": "2",
    "--checkpoint-interval": "5",
    "--unmap-idle-interval": "5",
    "--cache-max-mapped": f"{SOAK_CACHE_MAX_MAPPED // MiB}MiB",
    "--free-disk-reserve": "16MiB",
    "--log-level": "info",
}
SOAK_PACK_SIZE_TARGET = 32 * MiB
SOAK_SEED_OBJECTS = 240
# Admin maintenance calls on a timer, besides the daemon's own: one of
# pack, repack, clean every SOAK_MAINTENANCE_PERIOD seconds.
SOAK_MAINTENANCE_PERIOD = 3.0


def rss_bound(start, budget):
    """The end VmRSS the soak accepts. The daemon's RSS is its own memory
    (heap, stacks, its binary's pages) plus the resident pages of the pack
    windows the region cache maps, which the cache's budget bounds
    separately. So: its own memory (VmRSS less the resident pack pages) may
    grow to 1.25 times the start plus 32 MiB, the pack pages to the budget:
    VmRSS end <= 1.25 x (VmRSS - pack pages resident) at the start + 32 MiB
    + the budget."""
    return own_rss_bound(start) + budget


def own_rss_bound(start_own):
    """The end bound of the daemon's own memory (VmRSS less the resident
    pack pages): 1.25 times the start, plus 32 MiB."""
    return int(1.25 * start_own) + 32 * MiB


def fds_bound(start_other):
    """The end count of the daemon's descriptors other than the pack files
    the region cache holds open (those grow with the number of packs, up to
    the cache's max_open_files, RLIMIT_NOFILE / 4, and Status reports them):
    the start plus 24 (a few connections and loose files coming and going,
    and SQLite read connections, one per daemon thread that has read the
    index, opened as more threads of the gRPC pool serve reads)."""
    return start_other + 24


def soak_seed(client, seed, count=SOAK_SEED_OBJECTS):
    """Stores the seed objects every soak client reads (load_worker.seed_content):
    small, medium and a few large ones, in every mode, compressed or not; most
    are then packed, a few stored loose afterwards. [(key, size)]."""
    import load_worker

    rng = random.Random(f"soak-seed/{seed}")
    objects = []
    for index in range(count):
        r = rng.random()
        size = (rng.randint(0, 96 * KiB) if r < 0.7 else
                rng.randint(96 * KiB, MiB) if r < 0.93 else rng.randint(MiB, 4 * MiB))
        data = load_worker.seed_content(seed, index, size)
        mode = rng.choice(["packed", "loose", "auto"])
        compression = rng.choice([None, "yes", "auto"])
        key = client.put(data, mode=mode, compression=compression)
        assert key == key_of(data), (key, key_of(data))
        objects.append((key, len(data)))
        if index == int(count * 0.8):
            while True:
                try:
                    client.pack(compression="auto")
                    break
                except packstore.FailedPrecondition:  # the daemon's own auto-pack
                    time.sleep(0.05)
    return objects


def daemon_figures(daemon, client):
    status = client.status()
    cache = status["cache"]
    rss = daemon.rss_bytes()
    mapped, resident = daemon.pack_mappings()
    fds, sockets, kinds = daemon.open_fds()
    return {
        "rss": rss,
        "own_rss": rss - resident,
        "pack_resident": resident,
        "fds": fds,
        "threads": daemon.threads(),
        "socket_fds": sockets,
        "file_fds": fds - sockets,
        "fd_kinds": dict(kinds),
        "mapped": cache["mapped_bytes"],
        "mapped_limit": cache["mapped_bytes_limit"],
        "windows": cache["windows"],
        "smaps_pack_bytes": mapped,
        "cache_open_files": cache["open_files"],
        "other_fds": fds - cache["open_files"],
        "evictions": cache["evictions"],
        "fallbacks": cache["fallbacks"],
    }


def run_soak(seconds, clients=64, warmup=10.0, seed=None, log=print):
    """The soak: `clients` load_worker.py soak processes for `warmup` then
    `seconds` seconds against one daemon, with admin maintenance calls on a
    timer. The report (a dict; report["ok"] says whether every bound held)."""
    import threading

    seed = seed if seed is not None else random.SystemRandom().randrange(10**9)
    folder = Path(tempfile.mkdtemp(prefix="pssoak-"))
    store, socket = folder / "store", folder / "sock"
    subprocess.run([str(support.CLI_BIN), "init", str(store), "--pack-size-target",
                    str(SOAK_PACK_SIZE_TARGET)], check=True, capture_output=True,
                   timeout=CALL_TIMEOUT)
    daemon = DaemonProcess(store, socket, folder / "packstored.log", SOAK_FLAGS)
    stop = folder / "stop"
    workers = []
    report = {"seed": seed, "clients": clients, "seconds": seconds, "warmup": warmup,
              "failures": []}
    failures = report["failures"]
    maintenance = collections.Counter()
    maintenance_errors = []
    halt = threading.Event()
    began = time.monotonic()
    try:
        daemon.start()
        admin = packstore.Client(socket, timeout=120)
        seeds = soak_seed(admin, seed)
        seeds_path = folder / "seeds"
        seeds_path.write_text("".join(f"{key} {size}\n" for key, size in seeds))
        log(f"soak: seed {seed}, {len(seeds)} seed objects stored; starting {clients} clients")
        for index in range(clients):
            workers.append(start_worker("soak", {
                "socket": socket, "stop": stop, "seed": seed, "index": index,
                "seeds": seeds_path, "tmp": folder / f"tmp{index}",
                "summary": folder / f"summary{index}.json", "timeout": 60},
                folder / f"client{index}.log"))
        deadline = time.monotonic() + 180
        while not all((folder / f"summary{i}.json.ready").exists() for i in range(clients)):
            dead = [i for i, w in enumerate(workers) if w.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"soak clients {dead or 'some'} did not start:\n"
                                   + tail(folder / f"client{(dead or [0])[0]}.log"))
            time.sleep(0.1)
        log(f"soak: {clients} clients running after {time.monotonic() - began:.1f} s")

        def maintain():
            kinds = ["pack", "repack", "clean"]
            turn = 0
            with packstore.Client(socket, timeout=120) as client:
                while not halt.wait(SOAK_MAINTENANCE_PERIOD):
                    kind = kinds[turn % len(kinds)]
                    turn += 1
                    try:
                        if kind == "pack":
                            client.pack(compression="auto")
                        elif kind == "repack":
                            client.repack()
                        else:
                            client.clean(vacuum=turn % 2 == 0)
                        maintenance[kind] += 1
                    except packstore.FailedPrecondition:
                        maintenance[f"{kind} skipped (auto-pack running)"] += 1
                    except Exception as error:  # noqa: BLE001 - reported
                        maintenance_errors.append(f"{kind}: {type(error).__name__}: {error}")

        thread = threading.Thread(target=maintain, daemon=True)
        thread.start()
        time.sleep(warmup)
        start = daemon_figures(daemon, admin)
        samples = [start]
        log(f"soak: start figures (after {warmup:.0f} s of warm-up): {start}")
        end_at = time.monotonic() + seconds
        while time.monotonic() < end_at:
            time.sleep(min(2.0, max(0.0, end_at - time.monotonic())))
            samples.append(daemon_figures(daemon, admin))
            dead = [i for i, w in enumerate(workers) if w.poll() is not None]
            if dead:
                failures.append(f"soak clients {dead} exited early:\n"
                                + tail(folder / f"client{dead[0]}.log"))
                break
        end = daemon_figures(daemon, admin)
        samples.append(end)
        log(f"soak: end figures: {end}")
        halt.set()
        stop.write_text("stop")
        codes = stop_processes(workers, timeout=60)
        thread.join(timeout=130)
        counts, errors, error_count = collections.Counter(), [], 0
        for index in range(clients):
            try:
                summary = json.loads((folder / f"summary{index}.json").read_text())
            except (FileNotFoundError, ValueError):
                failures.append(f"client {index} left no summary (exit {codes[index]}):\n"
                                + tail(folder / f"client{index}.log"))
                continue
            counts.update(summary["counts"])
            error_count += summary["error_count"]
            errors += [f"client {index}: {e}" for e in summary["errors"][:3]]
        if any(codes):
            failures.append(f"client exit codes: {sorted(set(codes))}")
        validate = validate_when_free(admin, 120)
        final_status = admin.status()
        admin.close()
        code = daemon.stop()
        if code != 0:
            failures.append(f"packstored exited {code} on SIGTERM")

        report.update({
            "operations": dict(sorted(counts.items())),
            "operations_total": sum(counts.values()),
            "errors": error_count + len(maintenance_errors),
            "error_examples": (errors + maintenance_errors)[:10],
            "maintenance_calls": dict(maintenance),
            "auto_packs": read_log_count(daemon.log_path, "auto-pack: packed"),
            "validate_issues": [f"{i.kind} {i.subject}: {i.detail}" for i in validate.issues],
            "validated_objects": validate.loose_checked + validate.packed_checked,
            "start": start, "end": end,
            "peak": {name: max(s[name] for s in samples) for name in start
                     if name != "fd_kinds"},
            "final_counts": final_status["counts"],
            "bounds": {"rss_end_max": rss_bound(start["own_rss"], start["mapped_limit"]),
                       "own_rss_end_max": own_rss_bound(start["own_rss"]),
                       "other_fds_end_max": fds_bound(start["other_fds"]),
                       "mapped_max": start["mapped_limit"]},
        })
        if report["errors"]:
            failures.append(f"{report['errors']} errors, e.g. {report['error_examples']}")
        if report["validate_issues"]:
            failures.append(f"validate issues: {report['validate_issues'][:10]}")
        bounds = report["bounds"]
        if end["rss"] > bounds["rss_end_max"]:
            failures.append(f"VmRSS grew from {start['rss']} to {end['rss']} bytes "
                            f"(bound {bounds['rss_end_max']})")
        if end["own_rss"] > bounds["own_rss_end_max"]:
            failures.append(f"the daemon's own memory (VmRSS less resident pack pages) grew "
                            f"from {start['own_rss']} to {end['own_rss']} bytes "
                            f"(bound {bounds['own_rss_end_max']})")
        if end["other_fds"] > bounds["other_fds_end_max"]:
            failures.append(f"open descriptors other than the cache's pack files grew from "
                            f"{start['other_fds']} to {end['other_fds']} "
                            f"(bound {bounds['other_fds_end_max']})")
        over = [s for s in samples if s["mapped"] > s["mapped_limit"]
                or s["smaps_pack_bytes"] > s["mapped_limit"]
                or s["pack_resident"] > s["mapped_limit"]]
        if over:
            failures.append(f"mapped bytes over the cache's budget: {over[:3]}")
        reads = sum(n for name, n in counts.items() if not name.startswith(("put", "has")))
        writes = sum(n for name, n in counts.items() if name.startswith("put"))
        if not reads or not writes:
            failures.append(f"the soak did {reads} reads and {writes} writes")
    except Exception as error:  # noqa: BLE001 - reported as a failure of the soak
        failures.append(f"{type(error).__name__}: {error}\n{tail(daemon.log_path, 20)}")
    finally:
        halt.set()
        stop.write_text("stop")
        stop_processes(workers, timeout=30)
        daemon.kill()
        report["wall_seconds"] = time.monotonic() - began
        if failures:
            kept = folder.with_name(folder.name + "-failed")
            shutil.move(str(folder), str(kept))
            report["kept"] = str(kept)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    report["ok"] = not failures
    return report


def read_log_count(path, word):
    try:
        return sum(1 for line in Path(path).read_text(errors="replace").splitlines()
                   if word in line)
    except FileNotFoundError:
        return 0


def soak_table(report):
    """The soak's report as plain text."""
    mib = lambda n: f"{n / MiB:.1f} MiB"  # noqa: E731
    lines = [f"soak: {report['clients']} client processes, {report['seconds']:.0f} s after "
             f"{report['warmup']:.0f} s of warm-up, seed {report['seed']}, wall "
             f"{report['wall_seconds']:.0f} s"]
    if "operations" in report:
        lines.append(f"errors: {report['errors']} (every read checked against its key)")
        lines.append(f"operations: {report['operations_total']}")
        for name, count in report["operations"].items():
            lines.append(f"  {name:<24} {count}")
        lines.append(f"maintenance calls: {report['maintenance_calls']}; "
                     f"the daemon's own auto-packs (log lines): {report['auto_packs']}")
        lines.append(f"validate at the end: {report['validated_objects']} objects, issues "
                     f"{len(report['validate_issues'])}")
        s, e, p, b = report["start"], report["end"], report["peak"], report["bounds"]
        lines.append(f"{'daemon':<28}{'start':>14}{'end':>14}{'peak':>14}  bound (end)")
        lines.append(f"{'VmRSS':<28}{mib(s['rss']):>14}{mib(e['rss']):>14}{mib(p['rss']):>14}"
                     f"  <= own bound + budget = {mib(b['rss_end_max'])}")
        lines.append(f"{'  own (less pack pages)':<28}{mib(s['own_rss']):>14}"
                     f"{mib(e['own_rss']):>14}{mib(p['own_rss']):>14}"
                     f"  <= 1.25 x start + 32 MiB = {mib(b['own_rss_end_max'])}")
        lines.append(f"{'  pack pages resident':<28}{mib(s['pack_resident']):>14}"
                     f"{mib(e['pack_resident']):>14}{mib(p['pack_resident']):>14}"
                     f"  <= budget {mib(b['mapped_max'])}, every sample")
        lines.append(f"{'open fds':<28}{s['fds']:>14}{e['fds']:>14}{p['fds']:>14}")
        lines.append(f"{'  cache pack files (Status)':<28}{s['cache_open_files']:>14}"
                     f"{e['cache_open_files']:>14}{p['cache_open_files']:>14}"
                     f"  (bounded by the cache's max_open_files)")
        lines.append(f"{'  all others':<28}{s['other_fds']:>14}{e['other_fds']:>14}"
                     f"{p['other_fds']:>14}  <= start + 24 = {b['other_fds_end_max']}")
        lines.append(f"{'  sockets':<28}{s['socket_fds']:>14}{e['socket_fds']:>14}"
                     f"{p['socket_fds']:>14}")
        lines.append(f"{'  files':<28}{s['file_fds']:>14}{e['file_fds']:>14}"
                     f"{p['file_fds']:>14}")
        lines.append(f"{'  by kind, start':<28}{s['fd_kinds']}")
        lines.append(f"{'  by kind, end':<28}{e['fd_kinds']}")
        lines.append(f"{'threads':<28}{s['threads']:>14}{e['threads']:>14}{p['threads']:>14}")
        lines.append(f"{'cache mapped (Status)':<28}{mib(s['mapped']):>14}{mib(e['mapped']):>14}"
                     f"{mib(p['mapped']):>14}  <= budget {mib(b['mapped_max'])}, every sample")
        lines.append(f"{'pack mappings (smaps)':<28}{mib(s['smaps_pack_bytes']):>14}"
                     f"{mib(e['smaps_pack_bytes']):>14}{mib(p['smaps_pack_bytes']):>14}"
                     f"  <= budget {mib(b['mapped_max'])}, every sample")
        lines.append(f"{'cache windows':<28}{s['windows']:>14}{e['windows']:>14}"
                     f"{p['windows']:>14}")
        lines.append(f"{'cache evictions (total)':<28}{s['evictions']:>14}{e['evictions']:>14}")
        c = report["final_counts"]
        lines.append(f"store at the end: {c['packed_objects']} packed objects in "
                     f"{c['pack_files']} packs ({mib(c['pack_file_bytes'])}), "
                     f"{c['loose_objects']} loose")
    lines.append("result: " + ("ok" if report["ok"] else "FAILED:\n  "
                                + "\n  ".join(report["failures"])))
    if report.get("kept"):
        lines.append(f"store, logs and summaries kept in {report['kept']}")
    return "\n".join(lines)
