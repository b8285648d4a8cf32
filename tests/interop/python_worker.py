"""A Python client process of the cross-language suite, using the packstore
package:

  python_worker.py write SOCKET SEED KEYFILE   store objects made from SEED (put,
                                               put_many, put_file) and write
                                               "<key> <size>" lines to KEYFILE
  python_worker.py read SOCKET KEYFILE...      read every listed object back (get,
                                               get_many, open with a seek) and
                                               check its size and digest

Exit code 0 when everything matched; what went wrong on stderr otherwise.
"""

import hashlib
import os
import random
import sys
import tempfile

import packstore


def objects(seed):
    rng = random.Random(f"python-{seed}")
    small = [rng.randbytes(50 + 613 * i) for i in range(20)]
    many = [rng.randbytes(1024 + i) for i in range(200)]
    big = rng.randbytes(3 * 1024 * 1024 + 3)
    return small, many, big


def write(socket, seed, keyfile):
    small, many, big = objects(seed)
    stored = []
    with packstore.Client(socket, timeout=120) as client:
        for i, data in enumerate(small):
            stored.append((client.put(data, mode="loose" if i % 3 == 0 else "packed"), data))
        stored += zip(client.put_many(many, mode="packed"), many)
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(keyfile)) as f:
            f.write(big)
            f.flush()
            stored.append((client.put_file(f.name), big))
    for key, data in stored:
        if key != hashlib.sha256(data).hexdigest():
            sys.exit(f"python_worker: the daemon answered a wrong key {key}")
    with open(keyfile + ".tmp", "w") as out:
        out.writelines(f"{key} {len(data)}\n" for key, data in stored)
    os.rename(keyfile + ".tmp", keyfile)
    print(len(stored))


def read(socket, keyfiles):
    expected = {}
    for name in keyfiles:
        with open(name) as f:
            for line in f:
                key, size = line.split()
                expected[key] = int(size)
    with packstore.Client(socket, timeout=120) as client:
        for key, size in expected.items():
            data = client.get(key)
            if len(data) != size or hashlib.sha256(data).hexdigest() != key:
                sys.exit(f"python_worker: get {key}: wrong bytes")
        seen = set()
        for key, data in client.get_many(list(expected)):
            if data is None or hashlib.sha256(data).hexdigest() != key:
                sys.exit(f"python_worker: get_many {key}: missing or wrong bytes")
            seen.add(key)
        if seen != set(expected):
            sys.exit("python_worker: get_many did not deliver every key")
        key = max(expected, key=expected.get)
        with client.open(key) as f:
            f.seek(expected[key] // 2)
            if f.read() != client.get(key)[expected[key] // 2:]:
                sys.exit(f"python_worker: open {key}: wrong bytes after a seek")
    print(len(expected))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        read(sys.argv[2], sys.argv[3:])
