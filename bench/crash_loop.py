#!/usr/bin/env python3
"""The crash harness of tests/load/test_crash.py, for many kill points:
packstored is killed with SIGKILL at random instants under mixed load from
several client processes (puts in every mode, put_many group commits,
put_file, streamed puts; pack, repack, clean, delete), restarted on the same
store, and checked after every kill: every acknowledged object present with
its bytes, every acknowledged delete absent, Validate without issue. Prints
a summary table; exits 1 when a check fails (naming the seed and the kill
point) or an object was lost.

  PACKSTORE_BUILD_DIR=build/dev /usr/bin/python3 bench/crash_loop.py --points 1000

The build folder is found as the test suites find it (PACKSTORE_BUILD_DIR,
default build/dev under the repository root).
"""

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "load"))

import load_support as ls  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1000, help="kill points (default 1000)")
    parser.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    parser.add_argument("--kills-per-cycle", type=int, default=10,
                        help="kill points per store and set of client processes (default 10)")
    parser.add_argument("--writers", type=int, default=4,
                        help="put client processes besides the maintenance one (default 4)")
    parser.add_argument("--first-cycle", type=int, default=0,
                        help="start at this cycle (to replay a failure)")
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")
    parser.add_argument("--kills-log", default=None,
                        help="write one JSON line per kill point (what was in flight) here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    print(f"crash_loop: seed {seed}, {args.points} kill points, {args.kills_per_cycle} per "
          f"cycle, {args.writers} writers + 1 maintenance client", flush=True)
    run = ls.CrashRun(args.points, seed, kills_per_cycle=args.kills_per_cycle,
                      writers=args.writers, log=lambda line: print(line, flush=True),
                      kills_log=args.kills_log)
    try:
        summary = run.run(args.first_cycle)
    except ls.CrashCheckFailed as failure:
        print(f"FAILED (seed {seed}):\n{failure}", flush=True)
        print(ls.crash_table(run.summary()))
        return 1
    print(ls.crash_table(summary))
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    bad = summary["objects_lost"] or summary["validate_issues"]
    print("result:", "FAILED" if bad else "ok (no acknowledged object lost, no validate issue)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
