"""Machine instructions per request on fastgw's hot path: the CPU cost, C included, without
timing noise.

    python bench/instructions.py            # no-auth and jwt hot
    python bench/instructions.py --only no-auth
    python bench/instructions.py --bare     # and the bare relay, replayed the same way

Bytecodes (bench/bytecodes.py) count only the Python that runs; a C call such as a regular
expression, a bytes format or a dict built from a list costs no bytecode and can cost more
than the Python around it. This counts everything: bench/hot_path.py's request and response
(the real ClientConnection, Exchange and pool code, with stand-in transports, so no system
call and no event loop turn is counted) replayed under valgrind's callgrind, once with
--small and once with --large requests; the difference divided by the difference in
requests is the cost of one, start-up and warm-up cancelled out. The same code gives the
same count on a busy machine (each run takes about a minute: valgrind is slow).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hot_path import BARE_RELAY, SCENARIOS  # noqa: E402


def collected(scenario: str, count: int, bare: bool = False) -> int:
    """Instructions callgrind counted for a whole run of `count` requests."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.join(HERE, "hot_path.py"), "--only", scenario, "--count", str(count),
         *(["--bare"] if bare else [])],
        capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", out)[1])


def per_request(scenario: str, small: int, large: int, bare: bool = False) -> int:
    return round((collected(scenario, large, bare) - collected(scenario, small, bare))
                 / (large - small))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCENARIOS, metavar="SCENARIO")
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=6000)
    parser.add_argument("--bare", action="store_true",
                        help="also the bare relay (../shared/perf/bare_relay.py), when it is there")
    args = parser.parse_args()
    for scenario in [args.only] if args.only else SCENARIOS:
        print(f"{scenario:8} {per_request(scenario, args.small, args.large):8,} instructions "
              "per request")
        if args.bare and os.path.exists(BARE_RELAY):
            print(f"{'  bare':8} {per_request(scenario, args.small, args.large, True):8,} "
                  "instructions per request (the bare relay)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
