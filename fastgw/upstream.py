"""Upstream nodes, weighted balancing, and keep-alive connection pools.

One `UpstreamPool` per node (scheme, host, port, TLS settings), shared by every
service that points at that node and kept across configuration reloads. Idle
connections are a LIFO stack so the warmest socket is reused first; whether a
connection goes back to the pool is decided in exactly one place, `release`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from httptools import HttpResponseParser

from . import responses

if TYPE_CHECKING:
    from .relay import Exchange

# Write buffer limits for both sides of a relay: above HIGH the other side stops
# reading; below LOW it resumes (uvloop's own low-water default is 16 bytes).
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024


log = logging.getLogger("fastgw")


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to a node; leased to one Exchange at a time.

    Its `parser` checks every response that takes the fast path (relay.Exchange.
    upstream_data) and finds nothing else: it calls back nothing, so it costs no Python.
    `spoiled` is set when the connection must not be reused (bytes after a response)."""

    __slots__ = ("pool", "transport", "exchange", "parser", "requests", "idle_deadline",
                 "spoiled")

    def __init__(self, pool: "UpstreamPool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = HttpResponseParser(self)  # this class defines no parser callback
        self.requests = 0
        self.idle_deadline = 0.0
        self.spoiled = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)

    def data_received(self, data):
        ex = self.exchange
        if ex is None:  # bytes nobody asked for: the connection cannot be trusted
            self.transport.close()
            return
        try:
            ex.upstream_data(data)
        except Exception:
            log.exception("relaying a response failed")
            ex.fail(responses.INTERNAL_ERROR, retry=False)

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        self.pool.forget(self)
        ex = self.exchange
        if ex is not None:
            ex.upstream_lost()

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()


class UpstreamPool:
    """Keep-alive connections to one node."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 server_hostname: str | None):
        self.host, self.port = host, port
        self.ssl, self.server_hostname = ssl_context, server_hostname
        self.idle: list[UpstreamConnection] = []
        self.size = 320
        self.idle_timeout = 60.0
        self.max_requests = 1000
        self.opened = 0
        self.reused = 0
        self.head_end = b"\r\n"  # what ends a request head sent on its connections

    def configure(self, keepalive_pool: dict) -> None:
        self.size = keepalive_pool["size"]
        self.idle_timeout = keepalive_pool["idle_timeout"]
        self.max_requests = keepalive_pool["requests"]
        self.head_end = b"connection: close\r\n\r\n" if self.size == 0 else b"\r\n"

    def acquire(self) -> UpstreamConnection | None:
        """The most recently used idle connection that is still open, if any."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.transport.is_closing():
                self.reused += 1
                return conn
        return None

    def connect(self, loop: asyncio.AbstractEventLoop):
        self.opened += 1
        return loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port,
                                      ssl=self.ssl, server_hostname=self.server_hostname)

    def release(self, conn: UpstreamConnection, reusable: bool, now: float) -> None:
        """Back to the pool only if the exchange on it ended cleanly (`reusable`: response
        read in full, request sent in full, keep-alive allowed by the server) and the
        connection has requests left; otherwise closed."""
        conn.exchange = None
        if (reusable and not conn.spoiled and conn.requests < self.max_requests
                and len(self.idle) < self.size and not conn.transport.is_closing()):
            conn.idle_deadline = now + self.idle_timeout
            self.idle.append(conn)
        else:
            conn.transport.close()

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def expire(self, now: float) -> None:
        """Close idle connections past their idle timeout (the oldest are at the bottom)."""
        idle = self.idle
        while idle and idle[0].idle_deadline <= now:
            idle.pop(0).transport.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().transport.close()


class PoolRegistry:
    """Pools by node, and TLS contexts by settings; both outlive configurations."""

    def __init__(self):
        self.pools: dict[tuple, UpstreamPool] = {}
        self._contexts: dict[tuple, ssl.SSLContext] = {}

    def tls_context(self, verify: bool, ca_file: str | None) -> ssl.SSLContext:
        key = (verify, ca_file)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=ca_file)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[key] = ctx
        return ctx

    def pool(self, scheme: str, host: str, port: int, tls: dict) -> UpstreamPool:
        key = (scheme, host, port, tls["verify"], tls["ca_file"]) if scheme == "https" else (
            scheme, host, port)
        pool = self.pools.get(key)
        if pool is None:
            ctx = self.tls_context(tls["verify"], tls["ca_file"]) if scheme == "https" else None
            pool = self.pools[key] = UpstreamPool(host, port, ctx,
                                                  host if scheme == "https" else None)
        return pool

    def prune(self, in_use: set[UpstreamPool]) -> None:
        """Close and drop the pools of nodes no configuration refers to any more."""
        for key, pool in list(self.pools.items()):
            if pool not in in_use:
                pool.close()
                del self.pools[key]

    def expire(self, now: float) -> None:
        for pool in self.pools.values():
            if pool.idle:
                pool.expire(now)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


class Node:
    """A node as one service's upstream sees it. `fixed_host` is the Host it is sent,
    b"" when the client's is passed on (pass_host)."""

    __slots__ = ("host", "port", "weight", "pool", "host_header", "fixed_host")

    def __init__(self, host: str, port: int, weight: int, pool: UpstreamPool, default_port: int):
        self.host, self.port, self.weight, self.pool = host, port, weight, pool
        shown = f"[{host}]" if ":" in host else host
        self.host_header = (shown if port == default_port else f"{shown}:{port}").encode()
        self.fixed_host = b""


class Upstream:
    """A service's upstream, compiled: nodes with pools, balancing, and per-request facts."""

    __slots__ = ("nodes", "pass_host", "base_path", "connect_timeout", "send_timeout",
                 "read_timeout", "retries", "single", "_current", "_total")

    def __init__(self, conf: dict, pools: PoolRegistry):
        if conf["url"] is not None:
            parts = urlsplit(conf["url"])
            scheme = parts.scheme
            default_port = 443 if scheme == "https" else 80
            specs = [{"host": parts.hostname, "port": parts.port or default_port, "weight": 1}]
            self.base_path = parts.path.rstrip("/").encode()
        else:
            scheme = conf["scheme"]
            default_port = 443 if scheme == "https" else 80
            specs = conf["nodes"]
            self.base_path = b""
        self.nodes = [Node(n["host"], n["port"], n["weight"],
                           pools.pool(scheme, n["host"], n["port"], conf["tls"]), default_port)
                      for n in specs if n["weight"] > 0]
        for node in self.nodes:
            node.pool.configure(conf["keepalive_pool"])
        self.pass_host = conf["pass_host"]
        for node in self.nodes:
            if self.pass_host == "node":
                node.fixed_host = node.host_header
            elif self.pass_host == "rewrite":
                node.fixed_host = conf["upstream_host"].encode()
        timeout = conf["timeout"]
        self.connect_timeout = timeout["connect"]
        self.send_timeout = timeout["send"]
        self.read_timeout = timeout["read"]
        retries = conf["retries"]
        self.retries = len(self.nodes) - 1 if retries is None else retries
        self.single = self.nodes[0] if len(self.nodes) == 1 else None  # no balancing
        self._current = [0] * len(self.nodes)
        self._total = sum(n.weight for n in self.nodes)

    def pick(self) -> Node:
        """Smooth weighted round robin (as nginx): spreads heavy nodes between light ones."""
        current, nodes = self._current, self.nodes
        best = 0
        for i, node in enumerate(nodes):
            current[i] += node.weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return nodes[best]
