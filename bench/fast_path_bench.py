"""The Python client's part of fast_path_bench (run by it, not by hand):

  fast_path_bench.py SOCKET BIG_KEY PACK BIG_SIZE KEYFILE INPUT ROUNDS

For each round, prints lines "<measurement> <baseline rate> <store rate>":
  get_pread  MiB/s: os.preadv of PACK's first BIG_SIZE bytes into a 1 MiB
             buffer vs open(BIG_KEY).readinto of the same buffer through the
             fast path
  get_grpc   MiB/s: get(BIG_KEY), the gRPC stream (fast_path=False), vs the
             same fast-path read
  get_many   obj/s: get_many(KEYFILE's keys) with fast_path=False vs through
             the fast path
  put_file   MiB/s: hashlib.sha256 of INPUT vs put_file(INPUT) through the
             fast path
Every answer is checked; "error <what>" and exit 1 when one is wrong.
"""

import hashlib
import os
import sys
import time

import packstore

CHUNK = 1 << 20


def touch(data):
    # One word per 64 bytes, as the C++ side does: reads every cache line.
    return sum(memoryview(data)[::64])


def pread_all(path, size, buffer):
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        for offset in range(0, size, CHUNK):
            n = os.preadv(fd, [memoryview(buffer)[:min(CHUNK, size - offset)]], offset)
            total += touch(memoryview(buffer)[:n])
        return total
    finally:
        os.close(fd)


def read_object(client, key, buffer):
    total = 0
    with client.open(key) as f:
        while n := f.readinto(buffer):
            total += touch(memoryview(buffer)[:n])
    return total


def timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def fail(what):
    print("error", what, flush=True)
    sys.exit(1)


def main(socket, big_key, pack, big_size, keyfile, input_path, rounds):
    big_size, rounds = int(big_size), int(rounds)
    with open(keyfile) as f:
        keys = f.read().split()
    fast = packstore.Client(socket, timeout=600)
    slow = packstore.Client(socket, timeout=600, fast_path=False)
    mib = big_size / (1 << 20)
    buffer = bytearray(CHUNK)
    expected = pread_all(pack, big_size, buffer)  # warms the page cache
    for round_number in range(rounds):
        pread_s, _ = timed(lambda: pread_all(pack, big_size, buffer))
        fast_s, got = timed(lambda: read_object(fast, big_key, buffer))
        if got != expected:
            fail("reading through the fast path answered wrong bytes")
        print("get_pread", mib / pread_s, mib / fast_s, flush=True)
        grpc_s, data = timed(lambda: slow.get(big_key))
        if len(data) != big_size or touch(data) != expected:
            fail("get through gRPC answered wrong bytes")
        del data
        print("get_grpc", mib / grpc_s, mib / fast_s, flush=True)

        def read_many(client):
            count = 0
            for key, data in client.get_many(keys):
                if data is None or len(data) != 1024:
                    fail(f"get_many answered wrong bytes for {key}")
                count += 1
            if count != len(keys):
                fail("get_many missed objects")
        grpc_s, _ = timed(lambda: read_many(slow))
        fast_s, _ = timed(lambda: read_many(fast))
        print("get_many", len(keys) / grpc_s, len(keys) / fast_s, flush=True)

        def sha():
            h = hashlib.sha256()
            with open(input_path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            return h.hexdigest()
        # A different object each round: a second put of the same bytes
        # could be cheaper than the first.
        fd = os.open(input_path, os.O_WRONLY)
        os.pwrite(fd, round_number.to_bytes(8, "little"), 0)
        os.close(fd)
        hash_s, digest = timed(sha)
        os.sync()
        put_s, key = timed(lambda: fast.put_file(input_path))
        if key != digest:
            fail("put_file answered a wrong key")
        print("put_file", mib / hash_s, mib / put_s, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
