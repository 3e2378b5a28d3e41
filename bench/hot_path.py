"""The Python cost of one proxied request, without sockets or an event loop turning.

wrk measures the whole process (system calls included) and varies by ±20 % on a
small VM; this drives the real `ClientConnection` and `Exchange` code with fake
transports, so the pure-Python part of the hot path is measured to a few percent:

    python bench/hot_path.py             # µs per request: no-auth, jwt hot
    python bench/hot_path.py --profile   # and a cProfile of the jwt case
    python bench/hot_path.py --bare      # the bare relay (bench/run.py's yardstick), the same way
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import os
import pstats
import sys
import time

import jwt as pyjwt
import uvloop

from fastgw.config.schema import validate
from fastgw.server import ClientConnection, Gateway
from fastgw.settings import Settings
from fastgw.upstream import UpstreamConnection
from fastgw.workers import snapshot_factory

SECRET = "hot-path-secret-0123456789abcdef0123456789"
TOKEN = pyjwt.encode({"key": "hs", "exp": int(time.time()) + 86400}, SECRET)
BODY = b'{"slideshow": {"author": "Yours Truly", "title": "Sample Slide Show"}}' * 6
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 29 Nov 2026 04:00:00 GMT\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % len(BODY)) + BODY


def request(path: bytes, token: str | None) -> bytes:
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n" if token else b""
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + auth + b"\r\n"


class FakeTransport:
    """Enough of an asyncio transport for the protocols; writes are counted, not sent."""

    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def writelines(self, parts):
        for part in parts:
            self.written += len(part)

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        raise AssertionError("a keep-alive connection was closed")

    abort = close


def setup():
    asyncio.set_event_loop(uvloop.new_event_loop())
    settings = Settings.load(environ={})
    gateway = Gateway(settings, snapshot_factory(settings))
    gateway.apply(_validated({"url": "http://127.0.0.1:9"}), 1)
    client = ClientConnection(gateway)
    client_transport = FakeTransport()
    client.connection_made(client_transport)
    pool = next(iter(gateway.pools.pools.values()))
    conn = UpstreamConnection(pool)
    conn.connection_made(FakeTransport())
    conn.requests = -10**9  # never rotated out by keepalive_pool.requests
    pool.idle.append(conn)
    return client, conn, client_transport


def _validated(upstream: dict) -> dict:
    return validate({"services": [
        {"name": "noauth", "path_prefix": "/noauth", "upstream": upstream,
         "routes": [{"name": "all", "paths": ["/*"]}]},
        {"name": "jwt", "path_prefix": "/jwt", "upstream": upstream,
         "routes": [{"name": "all", "paths": ["/*"], "plugins": {"jwt-auth": {}}}]},
    ], "consumers": [{"username": "hs", "credentials": [{"key": "hs", "secret": SECRET}]}]})


SCENARIOS = {"no-auth": (b"/noauth/json", None), "jwt hot": (b"/jwt/json", TOKEN)}

# The yardstick bench/run.py measures too, kept beside the repository (not in it).
BARE_RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                          "perf", "bare_relay.py")


def bare_setup(scenario: str):
    """The bare relay's client and one pooled upstream connection, on the same stand-ins;
    its token is signed with its own secret. Returns what `setup` does, and the request."""
    sys.argv[1:] = ["0"] if scenario == "jwt hot" else ["0", "nojwt"]  # read at its import
    spec = importlib.util.spec_from_file_location("bare_relay", BARE_RELAY)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    asyncio.set_event_loop(uvloop.new_event_loop())
    pool = bare.Pool(asyncio.get_event_loop())
    client, conn = bare.Client(pool), bare.Upstream(pool)
    client.connection_made(FakeTransport())
    conn.connection_made(FakeTransport())
    pool.idle.append(conn)
    token = pyjwt.encode({"exp": int(time.time()) + 86400}, bare.SECRET)
    return client, conn, request(b"/json", token if scenario == "jwt hot" else None)


def replay(client, conn, req: bytes, count: int) -> None:
    """`count` requests and responses, with the tick's metrics fold every 500 as in a
    worker (the finished exchanges wait in their route's list until then)."""
    receive_request, receive_response = client.data_received, conn.data_received
    gateway = getattr(client, "gateway", None)  # the bare relay has none, and no metrics
    fold = gateway.stats.fold if gateway is not None else lambda: None
    for done in range(1, count + 1):
        receive_request(req)
        receive_response(RESPONSE)
        if not done % 500:
            fold()


def run(client, conn, req: bytes, count: int) -> float:
    """µs per request: the request arrives, goes upstream, the response comes back."""
    start = time.perf_counter()
    replay(client, conn, req, count)
    return (time.perf_counter() - start) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--only", choices=SCENARIOS, metavar="SCENARIO",
                        help="run this scenario --count times and nothing else, untimed "
                             "(for bench/instructions.py)")
    parser.add_argument("--bare", action="store_true", help="the bare relay instead of fastgw")
    args = parser.parse_args()
    if args.bare:
        if args.only:
            client, conn, req = bare_setup(args.only)
            replay(client, conn, req, args.count)
            return 0
        for name in SCENARIOS:
            client, conn, req = bare_setup(name)
            run(client, conn, req, 2_000)
            best = min(run(client, conn, req, args.count) for _ in range(5))
            print(f"bare {name:8} {best:6.2f} µs per request (best of 5 x {args.count:,})")
        return 0
    client, conn, transport = setup()
    cases = {name: request(*args_) for name, args_ in SCENARIOS.items()}
    if args.only:
        replay(client, conn, cases[args.only], args.count)
        return 0
    for name, req in cases.items():
        run(client, conn, req, 2_000)  # warm the token cache and the allocator
        best = min(run(client, conn, req, args.count) for _ in range(5))
        print(f"{name:8} {best:6.2f} µs per request (best of 5 x {args.count:,})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, client, conn, cases["jwt hot"], args.count)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
