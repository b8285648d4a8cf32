"""A client process of the load suite and the bench scripts, using the
packstore Python package (load_support.py starts it):

  load_worker.py crash-writer ...   puts in every mode, recording each
                                    acknowledged key in its journal
  load_worker.py crash-maint ...    pack, repack, clean, and deletes of keys
                                    it put for deletion, recorded likewise
  load_worker.py soak ...           reads and writes for the soak, every
                                    read checked against its key

The crash roles run until the stop file exists, pause while the pause file
exists (recording "P <gen>" once per pause), and never stop for an error:
the daemon is killed under them, and each error is recorded and followed
by a new connection. Journal records are described in load_support.py.
"""

import argparse
import io
import json
import os
import random
import sys
import time

import load_support as ls
from load_support import KiB, MiB, Journal, key_of, now, packstore

MODES = ["auto", "loose", "packed", None]
COMPRESSIONS = [None, "no", "yes", "auto"]
# A few objects every writer stores (duplicates across clients and packs).
SHARED_OBJECTS = 12


def content(rng, size, tag):
    """Unique bytes of `size` (at least the tag's length): a tag, then
    incompressible or repetitive bytes."""
    head = f"{tag}\n".encode()
    rest = max(0, size - len(head))
    if rng.random() < 0.5:
        body = rng.randbytes(rest)
    else:
        unit = f"{tag} the quick brown fox jumps over the lazy dog\n".encode()
        body = (unit * (rest // len(unit) + 1))[:rest]
    return head + body


def small_size(rng):
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.6:
        return rng.randint(1, 4 * KiB)
    return rng.randint(4 * KiB, 96 * KiB)


class Worker:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(f"{args.seed}/{args.index}")
        self.journal = Journal(args.journal)
        self.tag = f"{args.seed}/{args.index}"
        self.seq = 0
        self.pause_gen = 0
        self.client = None
        self.abandoned = []
        self.connect()

    def connect(self):
        if self.client is not None:
            # Not closed: with python3-grpcio 1.51, closing a channel on which
            # a streaming call was cut by the daemon's death blocks the whole
            # process (the GIL held) for about 10 s. The old clients are kept
            # until the process ends with os._exit (no finalizers).
            self.abandoned.append(self.client)
        # retries=0: a call in flight when the daemon is killed fails at
        # once, and nothing reaches the restarted daemon before the checks.
        self.client = packstore.Client(self.args.socket, timeout=self.args.timeout, retries=0)

    def paused(self):
        """True while the pause file exists (recording each new pause)."""
        try:
            with open(self.args.pause) as pause:
                gen = int(pause.read().strip() or 0)
        except FileNotFoundError:
            return False
        except ValueError:
            return True  # being written
        if gen > self.pause_gen:
            self.pause_gen = gen
            self.journal.record("P", gen, f"{now():.6f}")
        return True

    def stopping(self):
        return os.path.exists(self.args.stop)

    def loop(self, choose):
        while not self.stopping():
            if self.paused():
                time.sleep(0.005)
                continue
            op, call, begin_extra = choose()
            self.seq += 1
            seq = self.seq
            self.journal.record("B", seq, f"{now():.6f}", op, *begin_extra)
            try:
                result = call()
            except packstore.PackstoreError as error:
                code = error.code.name if error.code is not None else "UNKNOWN"
                self.journal.record("E", seq, f"{now():.6f}", code, str(error)[:200])
                if code not in ("FAILED_PRECONDITION",):
                    began = now()
                    self.connect()
                    if now() - began > 0.5:
                        self.journal.record("S", f"{now():.6f}",
                                            f"reconnecting took {now() - began:.3f} s")
                    time.sleep(0.01)
                else:
                    time.sleep(0.02)
                continue
            self.journal.record("A", seq, f"{now():.6f}", *result)

    def acknowledged(self, datas, keys):
        """The journal fields of put keys, after checking each is its
        content's SHA-256."""
        if len(keys) != len(datas):
            self.problem(f"{len(keys)} keys answered for {len(datas)} objects")
        fields = []
        for data, key in zip(datas, keys):
            if key != key_of(data):
                self.problem(f"put answered {key} for content whose key is {key_of(data)}")
            fields += [key, len(data)]
        return fields

    def problem(self, message):
        self.journal.record("X", f"{now():.6f}", message)

    def next_tag(self, what):
        return f"{self.tag}/{self.seq + 1}/{what}"


class CrashWriter(Worker):
    """Puts of every kind: small and large, loose, packed and auto,
    compressed or not, put_many batches, put_file (the fast path: a file
    descriptor) and streamed puts (PutStream in 1 MiB chunks)."""

    def __init__(self, args):
        super().__init__(args)
        self.folder = args.tmp
        os.makedirs(self.folder, exist_ok=True)
        shared_rng = random.Random(f"{args.seed}/shared")
        self.shared = [content(shared_rng, small_size(shared_rng), f"shared/{args.seed}/{i}")
                       for i in range(SHARED_OBJECTS)]

    def choose(self):
        rng = self.rng
        mode, compression = rng.choice(MODES), rng.choice(COMPRESSIONS)
        name = f"{mode or 'default'}/{compression or 'default'}"
        kind = rng.choices(["put", "put_many", "put_large", "put_file", "put_stream"],
                           weights=[40, 25, 4, 15, 8])[0]
        if kind == "put":
            if rng.random() < 0.1:
                data = rng.choice(self.shared)
            else:
                data = content(rng, small_size(rng), self.next_tag("put"))
            return (f"put/{name}/{len(data)}",
                    lambda: self.acknowledged([data], [self.client.put(data, mode, compression)]),
                    [])
        if kind == "put_many":
            count = rng.randint(2, 60)
            datas = [content(rng, small_size(rng) // 4, self.next_tag(f"many{i}"))
                     for i in range(count)]
            if rng.random() < 0.3:
                datas.append(rng.choice(self.shared))
            return (f"put_many/{name}/{len(datas)}",
                    lambda: self.acknowledged(datas,
                                              self.client.put_many(datas, mode, compression)),
                    [])
        if kind == "put_large":
            data = content(rng, rng.randint(1 * MiB + 1, 6 * MiB), self.next_tag("large"))
            return (f"put_large/{name}/{len(data)}",
                    lambda: self.acknowledged([data], [self.client.put(data, mode, compression)]),
                    [])
        if kind == "put_file":
            size = rng.choice([rng.randint(0, 64 * KiB), rng.randint(64 * KiB, 2 * MiB)])
            data = content(rng, size, self.next_tag("file"))
            path = os.path.join(self.folder, f"put-{self.seq + 1}")
            with open(path, "wb") as handle:
                handle.write(data)

            def put_file():
                try:
                    return self.acknowledged([data], [self.client.put_file(path, mode,
                                                                           compression)])
                finally:
                    os.unlink(path)
            return f"put_file/{name}/{len(data)}", put_file, []
        # put_stream: a file object that is not a regular file goes through
        # PutStream in 1 MiB chunks, whatever its size.
        data = content(rng, rng.randint(64 * KiB, 3 * MiB), self.next_tag("stream"))
        return (f"put_stream/{name}/{len(data)}",
                lambda: self.acknowledged([data], [self.client.put_file(io.BytesIO(data), mode,
                                                                        compression)]),
                [])

    def run(self):
        self.loop(self.choose)


class CrashMaintenance(Worker):
    """Pack, repack, clean and delete, one after the other. It deletes only
    keys it put for deletion itself (content nobody else stores), after
    their put was acknowledged."""

    def __init__(self, args):
        super().__init__(args)
        self.pool = []  # acknowledged keys put for deletion, not yet asked to delete

    def hinted(self):
        """The kind the harness asks for next (the --hint file), if any: the
        harness kills during it. The file stays until that kind begins."""
        try:
            with open(self.args.hint) as hint:
                kind = hint.read().strip()
        except (FileNotFoundError, OSError):
            return None
        return kind if kind in ("pack", "repack", "clean", "delete") else None

    def choose(self):
        rng = self.rng
        hint = self.hinted()
        if len(self.pool) < 8 or (hint is None and rng.random() < 0.15):
            mode, compression = rng.choice(MODES), rng.choice(COMPRESSIONS)
            datas = [content(rng, small_size(rng) // 2, self.next_tag(f"del{i}"))
                     for i in range(rng.randint(4, 24))]
            if rng.random() < 0.2:
                datas.append(content(rng, rng.randint(1 * MiB + 1, 2 * MiB),
                                     self.next_tag("dellarge")))

            def put_for_delete():
                keys = self.client.put_many(datas, mode, compression)
                fields = self.acknowledged(datas, keys)
                self.pool.extend(keys)
                return fields
            return f"put_many/{mode or 'default'}/{compression or 'default'}/del", \
                put_for_delete, []
        kind = rng.choices(["pack", "repack", "clean", "delete"], weights=[3, 3, 2, 4])[0]
        if hint is not None:
            kind = hint
            try:
                os.unlink(self.args.hint)
            except FileNotFoundError:
                pass
        if kind == "pack":
            compression = rng.choice(COMPRESSIONS)
            return (f"pack/{compression or 'default'}",
                    lambda: self.client.pack(compression=compression, validate=rng.random() < 0.7)
                    and [], [])
        if kind == "repack":
            compression = rng.choices([None, "no", "yes", "auto"], weights=[6, 1, 1, 1])[0]
            return (f"repack/{compression or 'keep'}",
                    lambda: self.client.repack(compression=compression) and [], [])
        if kind == "clean":
            vacuum = rng.random() < 0.3
            return (f"clean/{'vacuum' if vacuum else 'plain'}",
                    lambda: self.client.clean(vacuum=vacuum) and [], [])
        rng.shuffle(self.pool)
        count = rng.randint(1, max(1, len(self.pool) // 2))
        keys, self.pool = self.pool[:count], self.pool[count:]
        return "delete", lambda: self.client.delete(keys) is not None and [], keys

    def run(self):
        self.loop(self.choose)


# ---- soak ----------------------------------------------------------------------


def seed_content(seed, index, size):
    """The bytes of the soak's seed object `index` (load_support.soak_seed
    stores them; every client can make them again to check what it reads)."""
    rng = random.Random(f"soak-seed/{seed}/{index}")
    return content(rng, size, f"soak-seed/{seed}/{index}")


class Soak(Worker):
    """Reads and writes until the stop file exists, every read checked:
    whole reads by the SHA-256 of the bytes, ranged reads (get with offset
    and length, open + seek + read) against the same range of the object's
    known bytes. Half the reads go through the fast path (file descriptors),
    half through gRPC (fast_path=False). Writes its counts as JSON to
    --summary at the end, and an empty --summary.ready once it is running."""

    CACHE_BYTES = 8 * MiB

    def __init__(self, args):
        self.seeds = []  # (key, size) of the seed objects
        with open(args.seeds) as seeds:
            for line in seeds:
                key, size = line.split()
                self.seeds.append((key, int(size)))
        super().__init__(args)
        self.counts = {}
        self.errors = []
        self.known = {}  # key -> bytes: objects whose bytes this process holds
        self.known_bytes = 0
        self.seed_cache = {}

    def connect(self):
        # No kills here: the client's default retries.
        self.fast = packstore.Client(self.args.socket, timeout=self.args.timeout)
        self.grpc = packstore.Client(self.args.socket, timeout=self.args.timeout,
                                     fast_path=False)

    def count(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def fail(self, message):
        self.errors.append(message)

    def remember(self, key, data):
        if len(data) > 1 * MiB:
            return
        while self.known and self.known_bytes + len(data) > self.CACHE_BYTES:
            old = self.known.pop(self.rng.choice(list(self.known)))
            self.known_bytes -= len(old)
        self.known[key] = data
        self.known_bytes += len(data)

    def pick(self):
        """(key, bytes) of an object known to be stored."""
        if self.known and self.rng.random() < 0.4:
            key = self.rng.choice(list(self.known))
            return key, self.known[key]
        index = self.rng.randrange(len(self.seeds))
        key, size = self.seeds[index]
        data = self.seed_cache.get(key)
        if data is None:
            data = seed_content(self.args.seed, index, size)
            if key_of(data) != key:
                raise AssertionError(f"seed object {index} is not {key}")
            if len(self.seed_cache) >= 6:
                self.seed_cache.pop(next(iter(self.seed_cache)))
            self.seed_cache[key] = data
        return key, data

    def check(self, key, data, expected, what):
        if data != expected:
            got = "nothing" if data is None else f"{len(data)} bytes, key {key_of(data)}"
            self.fail(f"{what}: {key}: read {got}, expected {len(expected)} bytes")

    OPS = ["get", "get_many", "get_range", "open_seek", "put", "put_many", "put_file", "has"]

    def one(self, op=None, path=None):
        rng = self.rng
        op = op or rng.choices(self.OPS, weights=[16, 8, 6, 8, 10, 4, 2, 2])[0]
        path = path or ("grpc" if rng.random() < 0.5 else "fast")
        client = self.grpc if path == "grpc" else self.fast
        if op == "get":
            key, data = self.pick()
            verify = rng.random() < 0.2
            self.check(key, client.get(key, verify=verify), data, op)
        elif op == "get_many":
            wanted = dict(self.pick() for _ in range(rng.randint(2, 24)))
            answered = 0
            for key, data in client.get_many(list(wanted)):
                answered += 1
                self.check(key, data, wanted.get(key), op)
            if answered != len(wanted):
                self.fail(f"get_many: {answered} answers for {len(wanted)} keys")
        elif op == "get_range":
            key, data = self.pick()
            offset = rng.randint(0, len(data))
            length = rng.randint(0, 300 * KiB)
            self.check(key, client.get(key, offset=offset, length=length),
                       data[offset:offset + length], op)
        elif op == "open_seek":
            key, data = self.pick()
            with client.open(key) as handle:
                for _ in range(rng.randint(1, 6)):
                    offset = rng.randint(0, len(data))
                    length = rng.randint(0, 200 * KiB)
                    handle.seek(offset)
                    if handle.tell() != offset:
                        self.fail(f"open_seek: {key}: tell {handle.tell()} after seek {offset}")
                    self.check(key, handle.read(length), data[offset:offset + length],
                               f"open_seek [{offset}, +{length})")
        elif op == "has":
            keys = [self.pick()[0] for _ in range(20)]
            if not all(client.has(keys)):
                self.fail("has: a stored key reported absent")
            path = "grpc"
        else:
            mode, compression = rng.choice(MODES), rng.choice(COMPRESSIONS)
            path = "grpc"
            if op == "put":
                size = small_size(rng) if rng.random() < 0.95 else rng.randint(MiB // 2, 2 * MiB)
                datas = [content(rng, size, self.next_tag("soak"))]
                keys = [self.fast.put(datas[0], mode, compression)]
            elif op == "put_many":
                datas = [content(rng, small_size(rng) // 4, self.next_tag(f"soak{i}"))
                         for i in range(rng.randint(2, 30))]
                keys = self.fast.put_many(datas, mode, compression)
            else:
                path = "fast"
                datas = [content(rng, rng.randint(0, 512 * KiB), self.next_tag("soakfile"))]
                file_path = os.path.join(self.args.tmp, "put")
                with open(file_path, "wb") as handle:
                    handle.write(datas[0])
                keys = [self.fast.put_file(file_path, mode, compression)]
            if len(keys) != len(datas):
                self.fail(f"{op}: {len(keys)} keys for {len(datas)} objects")
            for data, key in zip(datas, keys):
                if key != key_of(data):
                    self.fail(f"{op}: answered {key} for content whose key is {key_of(data)}")
                else:
                    self.remember(key, data)
        self.seq += 1
        self.count(f"{op} ({path})")

    def run(self):
        os.makedirs(self.args.tmp, exist_ok=True)
        ready = False
        # Every kind of call once first, on both paths, so that each client
        # has opened all its connections (gRPC, fast-path reads and puts)
        # before the start figures are taken.
        priming = [(op, path) for op in self.OPS for path in ("fast", "grpc")]
        while not self.stopping():
            try:
                if priming:
                    self.one(*priming.pop(0))
                    if priming:
                        continue
                else:
                    self.one()
            except Exception as error:  # noqa: BLE001 - counted, reported, not fatal
                self.fail(f"{type(error).__name__}: {error}")
                time.sleep(0.05)
            if not ready:
                open(self.args.summary + ".ready", "w").close()
                ready = True
        self.fast.close()
        self.grpc.close()
        with open(self.args.summary + ".tmp", "w") as out:
            json.dump({"counts": self.counts, "errors": self.errors[:20],
                       "error_count": len(self.errors)}, out)
        os.replace(self.args.summary + ".tmp", self.args.summary)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["crash-writer", "crash-maint", "soak"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--journal", default="/dev/null")
    parser.add_argument("--pause", default="/nonexistent")
    parser.add_argument("--hint", default="/nonexistent")
    parser.add_argument("--stop", required=True)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--tmp", default="")
    parser.add_argument("--timeout", type=float, default=ls.CALL_TIMEOUT)
    parser.add_argument("--seeds", default="")
    parser.add_argument("--summary", default="")
    args = parser.parse_args()
    worker = {"crash-writer": CrashWriter, "crash-maint": CrashMaintenance,
              "soak": Soak}[args.role](args)
    worker.run()
    sys.stdout.flush()
    sys.stderr.flush()
    # No finalizers: closing the abandoned clients' channels could block.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
