#!/usr/bin/env python3
"""Soak: many client processes (the Python client) read and write against
one real packstored for a while, with maintenance running (the daemon's own
auto-pack, checkpoints and idle unmapping on short timers, and pack,
repack, clean admin calls on a timer). Reads are get, get_many, ranged get
and open + seek + read, half through the local fast path and half through
gRPC; every read is checked against its key.

Reports the errors (must be 0), the operations done per kind, and the
daemon's VmRSS, open descriptors and mapped bytes (the region cache's, from
Status, and the pack-file mappings in /proc/PID/smaps) after the warm-up
and at the end. Exits 1 unless those stay flat:

  own RSS end   <= 1.25 x start + 32 MiB (VmRSS less the resident pages of
                  mapped pack windows, which the cache budget bounds)
  open fds end  <= start + 24, not counting the pack files the region cache
                  holds open (Status: cache.open_files; its own limit bounds them)
  mapped bytes  <= the cache's budget (--cache-max-mapped) at every sample

  PACKSTORE_BUILD_DIR=build/dev /usr/bin/python3 bench/soak.py --seconds 120
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "load"))

import load_support as ls  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="load time measured after the warm-up (default 120)")
    parser.add_argument("--clients", type=int, default=64, help="client processes (default 64)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before the start figures (default 10)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="also print the report as JSON")
    args = parser.parse_args()
    report = ls.run_soak(args.seconds, clients=args.clients, warmup=args.warmup,
                         seed=args.seed, log=lambda line: print(line, flush=True))
    print(ls.soak_table(report))
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
