"""Where a proxied request's CPU time goes: fastgw next to HAProxy, under the same load.

    make profile                      # or: python bench/cpu_profile.py [--duration 5] [--rounds 2]

Starts the upstream, fastgw (one worker) and HAProxy exactly as bench/run.py does, drives
each with wrk (no-auth, then jwt with one hot token), and meanwhile samples the proxy's
processes with `perf record -e cpu-clock` (kernel and native code) and fastgw's worker with
py-spy (Python functions, native callees included). CPU time per request comes from /proc
as in the benchmark; the samples split it by where it was spent. Rounds are interleaved and
their samples added up.

Output: two Markdown tables on stdout (µs per request by component; the kernel functions
where fastgw spends most beyond HAProxy) and the Python functions of fastgw's worker by
own time.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from run import (Case, Proc, check, fastgw, free_port, gateway_config, haproxy, nginx_upstream,
                 run_wrk, signing_keys, write_tokens)

SAMPLE_HZ = 999
# py-spy comes with the bench extra, in the same environment as this interpreter.
TOOL_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# perf's shared-object names, grouped into what a reader knows them as.
COMPONENTS = [("kernel", "[kernel"), ("Python interpreter", "libpython"),
              ("httptools (C)", "parser.cpython"), ("uvloop (C)", "loop.cpython"),
              ("libc", "libc.so"), ("HAProxy", "haproxy")]


@dataclass
class Profiled:
    label: str
    case: Case
    cpu_s: float = 0.0
    requests: int = 0
    samples: collections.Counter = field(default_factory=collections.Counter)  # (dso, symbol)
    python: collections.Counter = field(default_factory=collections.Counter)  # function

    @property
    def us_per_request(self) -> float:
        return self.cpu_s * 1e6 / max(self.requests, 1)

    def us(self, count: int) -> float:
        """µs per request that `count` samples stand for."""
        return count / max(sum(self.samples.values()), 1) * self.us_per_request

    def by_component(self) -> dict[str, float]:
        totals = collections.Counter()
        for (dso, _), n in self.samples.items():
            name = next((c for c, prefix in COMPONENTS if dso.startswith(prefix)), "other")
            totals[name] += n
        return {name: self.us(totals[name]) for name, _ in COMPONENTS + [("other", "")]}

    def kernel_symbols(self) -> dict[str, float]:
        return {sym: self.us(n) for (dso, sym), n in self.samples.items()
                if dso.startswith("[kernel")}


def tree_pids(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                text=True).stdout.split()]
    return pids


def sample(p: Profiled, duration: float, workdir: Path, py_spy: bool) -> None:
    """One wrk run of p's case with perf (and py-spy on fastgw) sampling meanwhile."""
    pids = tree_pids(p.case.proc.pid)
    data = workdir / "perf.data"
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLE_HZ),
                             "-o", str(data), "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spy = None
    if py_spy and p.label.startswith("fastgw"):
        worker = pids[-1]  # the master's one worker
        spy = subprocess.Popen([shutil.which("py-spy", path=TOOL_PATH), "record", "--nonblocking", "--function", "-r", "200",
                                "-f", "raw",
                                "-d", str(int(duration)), "-p", str(worker),
                                "-o", str(workdir / "spy.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run_wrk(p.case, duration)
    perf.send_signal(signal.SIGINT)
    perf.wait(30)
    if spy is not None:
        spy.wait(duration + 30)
        for line in (workdir / "spy.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            p.python[stack.rsplit(";", 1)[-1]] += int(count)
    p.cpu_s += result["cpu_us_per_req"] * result["requests"] / 1e6
    p.requests += result["requests"]
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,sym",
                             "-F", "sample,dso,sym", "--field-separator=;"],
                            capture_output=True, text=True).stdout
    for line in report.splitlines():
        parts = [s.strip() for s in line.split(";")]
        if len(parts) == 3 and parts[0].isdigit():
            p.samples[(parts[1], parts[2][4:])] += int(parts[0])


def component_table(profiled: list[Profiled]) -> str:
    lines = ["| µs per request | " + " | ".join(p.label for p in profiled) + " |",
             "| --- |" + " ---: |" * len(profiled),
             "| **CPU time (/proc)** | " + " | ".join(f"**{p.us_per_request:.1f}**"
                                                    for p in profiled) + " |"]
    split = [p.by_component() for p in profiled]
    for name, _ in COMPONENTS + [("other", "")]:
        if any(s[name] >= 0.05 for s in split):
            lines.append(f"| {name} | " + " | ".join(f"{s[name]:.1f}" for s in split) + " |")
    return "\n".join(lines)


def kernel_table(ours: Profiled, theirs: Profiled, top: int = 10) -> str:
    a, b = ours.kernel_symbols(), theirs.kernel_symbols()
    extra = sorted(a, key=lambda s: b.get(s, 0.0) - a[s])[:top]
    lines = [f"| kernel function | {ours.label} µs | {theirs.label} µs |", "| --- | ---: | ---: |"]
    lines += [f"| `{s}` | {a[s]:.2f} | {b.get(s, 0.0):.2f} |" for s in extra]
    return "\n".join(lines)


def python_name(frame: str) -> str:
    if frame.startswith("Runner.run "):  # the outermost frame: uvloop's C loop is running
        return "uvloop's own loop, outside any callback: polling, reading (`Runner.run`)"
    return f"`{frame}`" if frame else "(no Python frame)"


def python_table(p: Profiled, top: int = 15) -> str:
    total = sum(p.python.values()) or 1
    lines = [f"| {p.label}: Python function (own time, native callees included) | share |",
             "| --- | ---: |"]
    lines += [f"| {python_name(f)} | {n / total:.1%} |" for f, n in p.python.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="fastgw CPU profile next to HAProxy")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "haproxy", "taskset", "perf", "py-spy"):
        if not shutil.which(tool, path=TOOL_PATH):
            print(f"profile: {tool} is missing (make profile installs it)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="fastgw-profile-"))
    keys = signing_keys()
    up_port = free_port()
    upstream = nginx_upstream(workdir, up_port)
    gw = fastgw(workdir, "fastgw", free_port(), gateway_config(up_port, keys))
    ha_port, ha_jwt_port = free_port(), free_port()
    ha = haproxy(workdir, ha_port, ha_jwt_port, up_port)
    ha_jwt = Proc("haproxy-jwt", [], ha_jwt_port)
    hot = write_tokens(workdir, "hot", 1, "HS256", keys)
    profiled = [Profiled("fastgw no-auth", Case("1", "fastgw", gw, "/noauth/json")),
                Profiled("haproxy", Case("1", "haproxy", ha, "/json")),
                Profiled("fastgw jwt hot", Case("2", "fastgw", gw, "/jwt/json", hot)),
                Profiled("haproxy+jwt_verify", Case("2", "haproxy", ha_jwt, "/jwt/json", hot))]
    procs = [upstream, gw, ha]
    try:
        for proc in procs:
            proc.start(workdir)
        ha_jwt.popen = ha.popen
        for p in profiled:
            check(p.case)
            run_wrk(p.case, 2.0, measure=False)  # warm-up
        for _ in range(args.rounds):
            for p in profiled:
                sample(p, args.duration, workdir, py_spy=True)
    finally:
        for proc in procs:
            proc.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"`python bench/cpu_profile.py {' '.join(sys.argv[1:])}`: {args.rounds} rounds of "
          f"{args.duration:g} s; perf cpu-clock at {SAMPLE_HZ} Hz, py-spy at 200 Hz.\n")
    print(component_table(profiled), end="\n\n")
    print(kernel_table(profiled[0], profiled[1]), end="\n\n")
    print(python_table(profiled[0]), end="\n\n")
    print(python_table(profiled[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
