"""Python bytecodes a gateway's serving process runs per request: a CPU cost without timing noise.

    python bench/bytecodes.py                          # fastgw: noauth, jwt-hot, jwt-miss
    python bench/bytecodes.py --top 25 --scenarios jwt-hot   # and where they go, by function
    python bench/bytecodes.py --cmd 'BARE_RELAY_UPSTREAM={upstream} .venv/bin/python \\
        ../shared/perf/bare_relay.py {port}'          # any gateway ({port}, {upstream} filled in)

It starts a small keep-alive upstream (a 429-byte JSON document, Content-Type, Content-Length,
Connection) and the gateway with bench/bytecode_hook/ on PYTHONPATH, finds the serving process
(the gateway's only child, followed down, else the gateway itself: fastgw's single worker),
warms it up with 2,000 requests, then counts the bytecodes its main thread runs while it serves
exactly --requests requests, round-robin over --conns keep-alive connections:

  noauth    GET /noauth/json                                      no plugin
  jwt-hot   GET /json, Authorization: Bearer <one HS256 token>    jwt-auth, verified-token cache hit
  jwt-miss  GET /json, a token never seen before on each request  jwt-auth, full verification

fastgw gets a configuration written here (routes /json with jwt-auth and /noauth/json, consumer
"perf" with an HS256 secret, the one the bare relay also verifies with); another gateway given
with --cmd must serve those paths on {port}. The process with the hook is for counting only:
its idle trace function slows it, so it is never the one timed. bench/run.py uses measure()
for its bytecodes/request column. Exit status 1 if any answer was not 200 with the body.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import jwt as pyjwt

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(HERE, "bytecode_hook")
SECRET = "perf-secret-0123456789abcdef-0123456789"
BODY = json.dumps({"slideshow": {"author": "Yours Truly", "date": "date of publication", "slides": [
    {"title": "Wake up to WonderWidgets!", "type": "all"},
    {"items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"],
     "title": "Overview", "type": "all"}], "title": "Sample Slide Show"}}, indent=2).encode()
WARM = 2000


def token(n: int = 0, secret: str = SECRET) -> str:
    claims = {"key": "perf", "exp": int(time.time()) + 365 * 86400}
    if n:
        claims["n"] = n
    return pyjwt.encode(claims, secret, algorithm="HS256")


def fastgw_config(upstream: int) -> str:
    return json.dumps({
        "services": [{"name": "bench", "upstream": {"url": f"http://127.0.0.1:{upstream}"},
                      "routes": [{"name": "json", "paths": ["/json"], "plugins": {"jwt-auth": {}}},
                                 {"name": "noauth", "paths": ["/noauth/json"]}]}],
        "consumers": [{"username": "perf", "credentials": [{"key": "perf", "secret": SECRET}]}]})


def serve_upstream(port: int) -> None:
    """Answers every request head with BODY (GETs only), in a process of its own."""
    import asyncio
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: keep-alive\r\n\r\n%s" % (len(BODY), BODY))

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                self.buf = self.buf[end + 4:]
                self.transport.write(response)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Upstream, "127.0.0.1", port, backlog=1024))
    loop.run_forever()


# ---------------------------------------------------------------- the client

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until something on `port` answers an HTTP request (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(5) == b"HTTP/":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One response with a Content-Length; what follows it stays in buf."""
    while (end := buf.find(b"\r\n\r\n")) < 0 or len(buf) < end + 4 + _length(buf[:end]):
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the gateway closed the connection")
        buf += data
    size = _length(buf[:end])
    status, body = int(buf[9:12]), bytes(buf[end + 4:end + 4 + size])
    del buf[:end + 4 + size]
    return status, body


def _length(head: bytes) -> int:
    for line in bytes(head).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"a response without Content-Length: {bytes(head)[:200]!r}")


def drive(port: int, path: str, tokens: list[str], n: int, conns: int, body: bytes) -> int:
    """n GETs, round-robin over `conns` keep-alive connections, each round answered before the
    next; returns how many were 200 with `body`."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    bufs = [bytearray() for _ in socks]
    good = sent = 0
    try:
        while sent < n:
            batch = range(min(conns, n - sent))
            for k in batch:
                auth = (f"Authorization: Bearer {tokens[(sent + k) % len(tokens)]}\r\n"
                        if tokens else "")
                socks[k].sendall(f"GET {path} HTTP/1.1\r\nHost: cloud.httpbin.org\r\n{auth}\r\n"
                                 .encode())
            for k in batch:
                status, got = read_response(socks[k], bufs[k])
                good += status == 200 and got == body
            sent += len(batch)
    finally:
        for s in socks:
            s.close()
    return good


# ---------------------------------------------------------------- counting

def serving_pid(pid: int) -> int:
    """The process that serves: single children followed down (shell, master, worker)."""
    while True:
        try:
            kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        except OSError:
            return pid
        if len(kids) > 1:
            raise RuntimeError(f"process {pid} has {len(kids)} children: run one worker")
        if not kids:
            return pid
        pid = int(kids[0])


def _signal_and_wait(pid: int, path: str, exists: bool) -> None:
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while os.path.exists(path) != exists:
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not answer SIGUSR2: is {HOOK} on its "
                               "PYTHONPATH, and BYTECODES_OUT in its environment?")
        time.sleep(0.01)


def measure(cmd: list[str] | str, env: dict, port: int, plans: dict, n: int = 3000,
            conns: int = 8, body: bytes = BODY, log: str = os.devnull) -> dict:
    """Starts `cmd` (argv, or a shell command) with the counting hook, then for each plan
    name -> (path, warm-up tokens, counted tokens): warms it up, counts, and returns
    name -> {"requests": n, "good": answered 200 with body, "bytecodes": total,
    "functions": {"file:line function": bytecodes}}. Stops the command."""
    out = tempfile.mkdtemp(prefix="bytecodes-")
    prefix = os.path.join(out, "count")
    env = dict(env, BYTECODES_OUT=prefix,
               PYTHONPATH=os.pathsep.join(filter(None, [HOOK, env.get("PYTHONPATH")])))
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), env=env, start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    results = {}
    try:
        wait_ready(port, proc)
        pid = serving_pid(proc.pid)
        for name, (path, warm, tokens) in plans.items():
            if drive(port, path, warm, WARM, conns, body) != WARM:
                raise RuntimeError(f"{name}: not 200 with the upstream's body while warming up")
            _signal_and_wait(pid, f"{prefix}.{pid}.on", True)
            good = drive(port, path, tokens, n, conns, body)
            time.sleep(0.05)  # the last exchange's bookkeeping after its answer went out
            _signal_and_wait(pid, f"{prefix}.{pid}.on", False)
            with open(f"{prefix}.{pid}") as f:
                functions = json.load(f)
            os.remove(f"{prefix}.{pid}")
            results[name] = {"requests": n, "good": good, "bytecodes": sum(functions.values()),
                             "functions": functions}
    finally:
        stop(proc)
    return results


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def top(functions: dict, n: int, requests: int) -> list[str]:
    """The n functions that ran the most bytecodes: per request, share, file:line function."""
    total = sum(functions.values()) or 1
    roots = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("stdlib"),
                    os.path.dirname(HERE)}, key=len, reverse=True)
    lines = []
    for key, count in sorted(functions.items(), key=lambda kv: -kv[1])[:n]:
        for root in roots:
            key = key.replace(root + os.sep, "")
        lines.append(f"  {count / requests:8.1f}  {100 * count / total:5.1f} %  {key}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fastgw", default=".venv/bin/fastgw", help="the fastgw to start")
    ap.add_argument("--cmd", help="another gateway: a shell command, {port} and {upstream} "
                                  "filled in")
    ap.add_argument("--port", type=int, default=0, help="the gateway's (default: a free one)")
    ap.add_argument("--upstream-port", type=int, default=0)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--scenarios", default="noauth,jwt-hot,jwt-miss")
    ap.add_argument("--top", type=int, default=0, metavar="N",
                    help="also print the N functions that run the most bytecodes")
    ap.add_argument("--json", help="write {scenario: bytecodes per request} to this file")
    a = ap.parse_args()
    port, up_port = a.port or free_port(), a.upstream_port or free_port()
    tmp = tempfile.mkdtemp(prefix="bytecodes-")
    upstream = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r});"
                                 f" import bytecodes; bytecodes.serve_upstream({up_port})"],
                                start_new_session=True)
    env = dict(os.environ)
    if a.cmd:
        cmd = a.cmd.format(port=port, upstream=up_port)
    else:
        config = os.path.join(tmp, "fastgw.json")
        with open(config, "w") as f:
            f.write(fastgw_config(up_port))
        env.update(FASTGW_CONFIG=config, FASTGW_LISTEN=f"127.0.0.1:{port}", FASTGW_WORKERS="1",
                   FASTGW_METRICS_LISTEN="off", FASTGW_ACCESS_LOG="off")
        env.pop("FASTGW_ADMIN_KEY", None)
        cmd = [a.fastgw, "serve"]
    miss = [token(i) for i in range(1, WARM + a.requests + 1)]
    plans = {"noauth": ("/noauth/json", [], []), "jwt-hot": ("/json", [token()], [token()]),
             "jwt-miss": ("/json", miss[:WARM], miss[WARM:])}
    plans = {name: plans[name] for name in a.scenarios.split(",")}
    log = os.path.join(tmp, "gateway.log")
    try:
        wait_ready(up_port, upstream)
        results = measure(cmd, env, port, plans, a.requests, a.conns, log=log)
    except RuntimeError as exc:
        print(open(log).read()[-2000:], file=sys.stderr)
        print(f"bytecodes: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(upstream)
    ok = True
    for name, r in results.items():
        print(f"{name}: {r['bytecodes'] / r['requests']:.0f} bytecodes per request "
              f"({r['good']}/{r['requests']} answered 200)")
        if a.top:
            print("\n".join(["  per req   share  function", *top(r["functions"], a.top,
                                                                   r["requests"])]))
        ok = ok and r["good"] == r["requests"]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: round(r["bytecodes"] / r["requests"]) for k, r in results.items()}, f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
