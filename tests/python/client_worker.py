"""Client processes for the Python client suite, one subcommand per role:

  exchange SOCKET INDEX COUNT DIR  store this worker's objects (put, put_many,
                                   put_file), publish their keys in
                                   DIR/keys-INDEX.json, wait for the other COUNT-1
                                   workers' keys and read all their objects back
                                   (get, get_many, open), checking every byte;
                                   prints a JSON summary
  calls SOCKET                     try a read, a write and every maintenance call;
                                   prints {call: [exception class or "OK", code]}

Run with the interpreter that runs the suite, with python_support.client_env().
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import python_support
from daemon_support import KiB, MiB, key_of, random_bytes

import packstore

EXCHANGE_WAIT = 120.0


def worker_objects(index):
    """What worker `index` stores, by how: {"put": [...], "many": [...], "file": [...]}.
    Every worker also stores the same few shared objects."""
    many = [random_bytes(37 * i % (48 * KiB), f"w{index}-many-{i}") for i in range(60)]
    many.append(random_bytes(1 * MiB + 5, f"w{index}-many-large"))  # put alone inside put_many
    many += [random_bytes(100 + i, f"shared-{i}") for i in range(5)]
    puts = [random_bytes(200 * i + 1, f"w{index}-put-{i}") for i in range(8)]
    puts.append(random_bytes(2 * MiB + 3, f"w{index}-put-large"))
    puts.append(b"")
    files = [random_bytes(3 * MiB + 11, f"w{index}-file")]
    return {"put": puts, "many": many, "file": files}


def all_objects(index):
    objects = worker_objects(index)
    return objects["put"] + objects["many"] + objects["file"]


def exchange(socket, index, count, folder):
    index, count, folder = int(index), int(count), Path(folder)
    objects = worker_objects(index)
    modes = [None, "auto", "loose", "packed"]
    with packstore.Client(socket, timeout=python_support.CALL_TIMEOUT) as client:
        keys = []
        for i, data in enumerate(objects["put"]):
            keys.append(client.put(data, mode=modes[(index + i) % 4],
                                   compression=["no", "auto"][i % 2]))
        keys += client.put_many(iter(objects["many"]), mode=modes[index % 4])
        with tempfile.TemporaryDirectory() as tmp:
            for i, data in enumerate(objects["file"]):
                path = Path(tmp) / f"file-{i}"
                path.write_bytes(data)
                keys.append(client.put_file(path, mode="loose" if index % 2 else "packed"))
        expected = [key_of(data) for data in all_objects(index)]
        if keys != expected:
            fail(f"worker {index}: the keys answered are not the contents' SHA-256")
        publish = folder / f"keys-{index}.json"
        temporary = publish.with_suffix(".tmp")
        temporary.write_text(json.dumps(keys))
        temporary.rename(publish)

        others = [other for other in range(count) if other != index]
        deadline = time.monotonic() + EXCHANGE_WAIT
        checked_bytes = checked_objects = 0
        for other in others:
            path = folder / f"keys-{other}.json"
            while not path.exists():
                if time.monotonic() > deadline:
                    fail(f"worker {index}: worker {other} published no keys")
                time.sleep(0.05)
            their_keys = json.loads(path.read_text())
            contents = {key_of(data): data for data in all_objects(other)}
            if sorted(contents) != sorted(set(their_keys)):
                fail(f"worker {index}: worker {other} published keys of other contents")
            if not all(client.has(their_keys)):
                fail(f"worker {index}: some of worker {other}'s objects are missing")
            # Every object through get_many, every byte compared.
            seen = {}
            for key, data in client.get_many(their_keys):
                if key in seen:
                    fail(f"worker {index}: get_many sent {key} twice")
                if data != contents.get(key):
                    fail(f"worker {index}: get_many of {key} (worker {other}) differs")
                seen[key] = True
                checked_bytes += len(data)
            if set(seen) != set(contents):
                fail(f"worker {index}: get_many skipped some of worker {other}'s objects")
            # Again through get, and the largest through open() in pieces.
            for key, data in contents.items():
                if client.get(key) != data:
                    fail(f"worker {index}: get of {key} (worker {other}) differs")
                checked_bytes += len(data)
            largest = max(contents.values(), key=len)
            digest = hashlib.sha256()
            with client.open(key_of(largest), buffer_size=64 * KiB) as file:
                file.seek(len(largest) // 2)
                if file.read(1000) != largest[len(largest) // 2:len(largest) // 2 + 1000]:
                    fail(f"worker {index}: open/seek/read of worker {other}'s object differs")
                file.seek(0)
                while chunk := file.read(100 * KiB + 7):
                    digest.update(chunk)
            if digest.hexdigest() != key_of(largest):
                fail(f"worker {index}: open() of worker {other}'s object read other bytes")
            checked_objects += len(contents)
    print(json.dumps({"index": index, "stored": len(keys), "checked_objects": checked_objects,
                      "checked_bytes": checked_bytes}))


def calls(socket):
    key = key_of(b"x")
    with packstore.Client(socket, timeout=python_support.CALL_TIMEOUT, retries=0) as client:
        attempts = {
            "put": lambda: client.put(f"written by uid {os.getuid()}".encode()),
            "has": lambda: client.has(key),
            "status": client.status,
            "pack": client.pack,
            "repack": client.repack,
            "clean": client.clean,
            "delete": lambda: client.delete([key]),
            "validate": client.validate,
        }
        answers = {}
        for name, call in attempts.items():
            try:
                call()
                answers[name] = ["OK", "OK", ""]
            except packstore.PackstoreError as error:
                answers[name] = [type(error).__name__, error.code.name, error.details]
    print(json.dumps(answers))


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main(argv):
    roles = {"exchange": exchange, "calls": calls}
    if len(argv) < 2 or argv[1] not in roles:
        fail(__doc__)
    roles[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
