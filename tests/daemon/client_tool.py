"""Client processes for the daemon suite, one subcommand per role:

  access SOCKET CALL...         run the named calls, print {call: [code, details]} as JSON
  load SOCKET INDEX DIR OPS     mixed puts, gets and lists, checking every byte; appends each
                                acknowledged key to DIR/acked-INDEX.txt and writes
                                DIR/result-INDEX.json at the end
  hang-stream SOCKET MODE SIZE  send SIZE bytes of a PutStream without finish_write, print
                                "sent" and wait to be killed
  writer SOCKET ACKFILE SEED    packed Put/PutMany in a loop, appending each acknowledged key
                                to ACKFILE, until the daemon goes away

Run with the Python interpreter that runs the suite (it needs grpcio);
PACKSTORE_BUILD_DIR finds the stubs.
"""

import json
import os
import random
import sys
import time
from pathlib import Path

import grpc

import daemon_support as support
from daemon_support import KiB, MiB, key_of, pb

CALL_TIMEOUT = 20.0


# ---- access ---------------------------------------------------------------------------


def access(socket, names):
    stub = support.stub_for(support.connect(socket))
    data = f"written by uid {os.getuid()}".encode()
    key = key_of(data)
    t = CALL_TIMEOUT
    calls = {
        "Health": lambda: support.health_check(support.connect(socket), timeout=t),
        "Put": lambda: support.put(stub, data, "packed", timeout=t),
        "PutStream": lambda: support.put_stream(stub, data + b" (stream)", "loose", timeout=t),
        "PutMany": lambda: support.put_many(stub, [[data + b" (many)"]], timeout=t),
        "Get": lambda: support.get(stub, key, timeout=t),
        "GetMany": lambda: support.get_many(stub, [key], timeout=t),
        "Stat": lambda: stub.Stat(pb.StatRequest(keys=[key]), timeout=t),
        "Has": lambda: stub.Has(pb.HasRequest(keys=[key]), timeout=t),
        "List": lambda: support.list_keys(stub, timeout=t),
        "Status": lambda: stub.Status(pb.StatusRequest(), timeout=t),
        "Pack": lambda: support.maintenance(stub, "Pack", timeout=t),
        "Repack": lambda: support.maintenance(stub, "Repack", timeout=t),
        "Clean": lambda: support.maintenance(stub, "Clean", timeout=t),
        "Validate": lambda: support.maintenance(stub, "Validate", timeout=t),
        "Delete": lambda: support.maintenance(stub, "Delete", pb.DeleteRequest(keys=[key]),
                                              timeout=t),
    }
    results = {}
    for name in names:
        try:
            calls[name]()
            results[name] = ["OK", ""]
        except grpc.RpcError as error:
            results[name] = [error.code().name, error.details() or ""]
    print(json.dumps(results))


# ---- load -----------------------------------------------------------------------------

MODES = ["unspecified", "auto", "loose", "packed"]
COMPRESSIONS = ["unspecified", "no", "yes", "auto"]
# Objects every load process puts too, in whatever mode it draws: the same
# content arriving loose and packed from many clients at once.
SHARED = [support.text_bytes(size, f"shared {size}") for size in
          (0, 1, 100, 5000, 70 * KiB, 300 * KiB, 1 * MiB + 3)]
SHARED += [support.random_bytes(size, f"shared {size}") for size in
           (10, 4000, 200 * KiB, 2 * MiB)]


def draw_size(rng):
    roll = rng.random()
    if roll < 0.5:
        return rng.randint(0, 4 * KiB)
    if roll < 0.8:
        return rng.randint(4 * KiB, 256 * KiB)
    if roll < 0.95:
        return rng.randint(256 * KiB, 1 * MiB)
    return rng.randint(1 * MiB, 2 * MiB)


def make_content(tag, size):
    if size % 2:
        return support.random_bytes(size, tag)
    return support.text_bytes(size, tag)


class Load:
    def __init__(self, socket, index, folder, ops):
        self.stub = support.stub_for(support.connect(socket))
        self.index = index
        self.folder = Path(folder)
        self.ops = ops
        self.rng = random.Random(f"load {index}")
        self.own = {}  # key -> (tag, size)
        self.acked = []
        self.errors = []
        self.ack_file = open(self.folder / f"acked-{index}.txt", "a")
        self.counter = 0

    def content(self, size):
        self.counter += 1
        tag = f"load {self.index}/{self.counter}"
        return tag, make_content(tag, size)

    def ack(self, ref, data, tag=None, what=""):
        if ref.key != key_of(data) or ref.size != len(data):
            raise AssertionError(f"{what}: answered {ref.key}/{ref.size} for {key_of(data)}/"
                                 f"{len(data)}")
        if tag is not None:
            self.own[ref.key] = (tag, len(data))
        self.acked.append(ref.key)
        self.ack_file.write(ref.key + "\n")
        self.ack_file.flush()

    def expected(self, key):
        tag, size = self.own[key]
        return make_content(tag, size)

    def others(self, count):
        keys = []
        for path in self.folder.glob("acked-*.txt"):
            if path.name != f"acked-{self.index}.txt":
                keys += [line for line in path.read_text().split("\n") if len(line) == 64]
        return self.rng.sample(keys, min(count, len(keys)))

    # One operation each.

    def op_put(self):
        tag, data = self.content(draw_size(self.rng))
        mode, compression = self.rng.choice(MODES), self.rng.choice(COMPRESSIONS)
        self.ack(support.put(self.stub, data, mode, compression), data, tag, "Put")

    def op_stream(self):
        tag, data = self.content(draw_size(self.rng))
        chunk = self.rng.choice([64 * KiB, 256 * KiB, 1 * MiB])
        mode, compression = self.rng.choice(MODES), self.rng.choice(COMPRESSIONS)
        ref = support.put_stream(self.stub, data, mode, compression, chunk=chunk)
        self.ack(ref, data, tag, "PutStream")

    def op_many(self):
        batches, tags = [], []
        for _ in range(self.rng.randint(1, 3)):
            batch, batch_tags = [], []
            for _ in range(self.rng.randint(1, 16)):
                if self.rng.random() < 0.15:
                    batch.append(self.rng.choice(SHARED[:5]))
                    batch_tags.append(None)
                else:
                    tag, data = self.content(self.rng.randint(0, 64 * KiB))
                    batch.append(data)
                    batch_tags.append(tag)
            if batch and self.rng.random() < 0.3:
                batch.append(batch[0])
                batch_tags.append(batch_tags[0])
            batches.append(batch)
            tags.append(batch_tags)
        mode, compression = self.rng.choice(MODES), self.rng.choice(COMPRESSIONS)
        answers = support.put_many(self.stub, batches, mode, compression)
        if len(answers) != len(batches):
            raise AssertionError(f"PutMany: {len(answers)} answers to {len(batches)} messages")
        for batch, batch_tags, answer in zip(batches, tags, answers):
            if len(answer) != len(batch):
                raise AssertionError(f"PutMany: {len(answer)} keys for {len(batch)} objects")
            for data, tag, ref in zip(batch, batch_tags, answer):
                self.ack(ref, data, tag, "PutMany")

    def op_shared(self):
        data = self.rng.choice(SHARED)
        mode = self.rng.choice(MODES)
        if len(data) > MiB and self.rng.random() < 0.5:
            ref = support.put_stream(self.stub, data, mode, "auto")
        else:
            ref = support.put(self.stub, data, mode, "auto")
        self.ack(ref, data, None, "shared Put")

    def op_get_own(self):
        if not self.own:
            return
        key = self.rng.choice(list(self.own))
        data = self.expected(key)
        if data and self.rng.random() < 0.4:
            offset = self.rng.randrange(len(data))
            length = self.rng.randint(0, len(data))
            got = support.get_bytes(self.stub, key, offset=offset, length=length)
            if got != data[offset : offset + length]:
                raise AssertionError(f"Get {key} [{offset}, +{length}): wrong bytes")
        else:
            got = support.get_bytes(self.stub, key, verify=self.rng.random() < 0.5)
            if got != data:
                raise AssertionError(f"Get {key}: wrong bytes ({len(got)} of {len(data)})")

    def op_get_others(self):
        for key in self.others(3):
            got = support.get_bytes(self.stub, key)
            if key_of(got) != key:
                raise AssertionError(f"Get {key} (another process's): wrong bytes")

    def op_get_many(self):
        own = self.rng.sample(list(self.own), min(10, len(self.own)))
        others = self.others(10)
        missing = key_of(f"missing {self.index} {self.counter}".encode())
        request = own + others + [missing] + own[:2]
        self.rng.shuffle(request)
        objects, reported, _, _ = support.assemble_pieces(support.get_many(self.stub, request))
        if reported != [missing]:
            raise AssertionError(f"GetMany reported {reported} missing, expected [{missing}]")
        if set(objects) != set(own + others):
            raise AssertionError("GetMany did not send every key it was asked for")
        for key, data in objects.items():
            if key_of(data) != key or (key in self.own and data != self.expected(key)):
                raise AssertionError(f"GetMany {key}: wrong bytes")

    def op_list(self):
        pages = support.list_keys(self.stub, page_size=self.rng.choice([0, 100, 1000]))
        keys = [key for page in pages for key in page]
        if keys != sorted(set(keys)):
            raise AssertionError("List is not strictly ascending")
        absent = set(self.acked) - set(keys)
        if absent:
            raise AssertionError(f"List misses {len(absent)} acknowledged keys, e.g. "
                                 f"{sorted(absent)[0]}")

    def op_stat(self):
        keys = self.rng.sample(list(self.own), min(20, len(self.own)))
        stats = self.stub.Stat(pb.StatRequest(keys=keys), timeout=support.RPC_TIMEOUT).stats
        for key, entry in zip(keys, stats):
            if not entry.found or entry.info.size != self.own[key][1]:
                raise AssertionError(f"Stat {key}: found={entry.found} size={entry.info.size}")

    def run(self):
        operations = [
            (self.op_put, 5), (self.op_stream, 3), (self.op_many, 4), (self.op_shared, 2),
            (self.op_get_own, 4), (self.op_get_others, 3), (self.op_get_many, 2),
            (self.op_list, 1), (self.op_stat, 1),
        ]
        functions = [function for function, _ in operations]
        weights = [weight for _, weight in operations]
        for _ in range(self.ops):
            function = self.rng.choices(functions, weights)[0]
            try:
                function()
            except grpc.RpcError as error:
                self.errors.append(f"{function.__name__}: {error.code().name}: {error.details()}")
            except AssertionError as error:
                self.errors.append(f"{function.__name__}: {error}")
        self.ack_file.close()
        result = {"acked": sorted(set(self.acked)), "errors": self.errors}
        (self.folder / f"result-{self.index}.json").write_text(json.dumps(result))


# ---- hang-stream ------------------------------------------------------------------------


def hang_stream(socket, mode, size):
    stub = support.stub_for(support.connect(socket))
    data = support.random_bytes(size, f"hang {mode} {size}")

    def requests():
        yield from support.stream_requests(data, mode, chunk=128 * KiB, finish=False)
        print("sent", flush=True)
        time.sleep(3600)

    stub.PutStream(requests(), timeout=3600)


# ---- writer -------------------------------------------------------------------------------


def writer(socket, ack_path, seed):
    stub = support.stub_for(support.connect(socket))
    rng = random.Random(seed)
    counter = 0
    with open(ack_path, "a") as acks:

        def ack(ref, data):
            if ref.key != key_of(data):
                raise AssertionError(f"answered {ref.key} for {key_of(data)}")
            acks.write(ref.key + "\n")
            acks.flush()

        def content():
            nonlocal counter
            counter += 1
            return make_content(f"writer {seed}/{counter}", rng.choice(
                [0, 1, rng.randint(2, 4 * KiB), rng.randint(4 * KiB, 64 * KiB)]))

        try:
            while True:
                compression = rng.choice(COMPRESSIONS)
                if rng.random() < 0.4:
                    data = content()
                    ack(support.put(stub, data, "packed", compression), data)
                    continue
                batches = [[content() for _ in range(rng.randint(1, 20))]
                           for _ in range(rng.randint(1, 3))]

                def requests():
                    for index, batch in enumerate(batches):
                        message = pb.PutManyRequest(objects=batch)
                        if index == 0:
                            message.options.mode = pb.PUT_MODE_PACKED
                            message.options.compression = support.COMPRESSIONS[compression]
                        yield message

                # Each answer is recorded as soon as it arrives.
                for batch, response in zip(batches, stub.PutMany(requests(), timeout=CALL_TIMEOUT)):
                    for data, ref in zip(batch, response.objects):
                        ack(ref, data)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr, flush=True)


def main(argv):
    command, socket = argv[1], argv[2]
    if command == "access":
        access(socket, argv[3:])
    elif command == "load":
        Load(socket, int(argv[3]), argv[4], int(argv[5])).run()
    elif command == "hang-stream":
        hang_stream(socket, argv[3], int(argv[4]))
    elif command == "writer":
        writer(socket, argv[3], argv[4])
    else:
        raise SystemExit(f"unknown command {command!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
