"""Upstream nodes, weighted balancing, and keep-alive connection pools.

One `UpstreamPool` per node (scheme, host, port, TLS settings: `node_key`), shared by
every service that points at that node (the schema refuses services that configure
one node's pool differently) and kept across configuration reloads. A pool owns its
connections from the connect on: it counts them (open plus connecting), keeps the
idle ones, hands them out, and closes what it cannot keep.

The interface an `Exchange` uses, in the order of a request:

    pool.idle.pop()                 the most recently used idle connection (a stack:
                                    the warmest socket first); every connection on it
                                    is open (one the upstream closes leaves it at once)
    pool.has_room() -> bool         a new connection may be opened now: the node is
                                    under `max_connections` and nobody waits before us
    pool.connect(loop) -> Task      opens one; it counts against `max_connections` from
                                    now until the connect fails or the socket closes
    pool.wait(exchange, deadline)   joins the node's queue (FIFO) when it is full; the
                                    result's `cancel()` leaves the queue (the client
                                    went away, or the exchange failed)
    pool.release(conn, reusable, now)
                                    the one place that decides release or close

and the two calls a waiting exchange gets back, exactly one of them, once:

    exchange.pool_ready(conn)       `conn`: a released connection, handed over directly;
                                    None: a connection closed, open one (`connect`)
    exchange.pool_timeout()         `deadline` passed first (the upstream's connect
                                    time-out): answer 503

A waiter's deadline is checked by the pool sweep (`PoolRegistry.expire`, run by the
gateway's tick with idle expiry), so no task or timer exists per waiter.

A reload that no longer names a node retires its pool (`PoolRegistry.prune`): idle
connections are closed at once, exchanges still in flight finish on theirs, and what
they release is closed. Retired pools are swept until their last connection and waiter
are gone. The counters the metrics show (`ConnectionCounts`) belong to the registry, so
they only go up whatever pools come and go.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import responses

if TYPE_CHECKING:
    from .relay import Exchange

# Write buffer limits for both sides of a relay: above HIGH the other side stops
# reading; below LOW it resumes (uvloop's own low-water default is 16 bytes).
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024


def parts_writer(transport: asyncio.Transport) -> Callable[[Iterable[bytes]], None]:
    """How to write several parts at once on either side of a relay: the transport's
    writelines (one gather system call), but over TLS one write of the parts joined, since
    uvloop's TLS transport makes a TLS record of each part that writelines gets (three for
    an answer's head and body; one record: 6 to 14 % less CPU per HTTPS request)."""
    if transport.get_extra_info("sslcontext") is None:
        return transport.writelines
    return lambda parts: transport.write(b"".join(parts))

# The settings of a node's pool, which every service using that node must agree on.
POOL_SETTINGS = ("keepalive_pool", "max_connections")


def upstream_nodes(conf: dict) -> tuple[str, int, list[dict], bytes]:
    """An upstream's scheme, default port, node specs (weight > 0: the ones that get a
    pool) and base path, from `url` or `nodes`."""
    if conf["url"] is not None:
        parts = urlsplit(conf["url"])
        scheme = parts.scheme
        default_port = 443 if scheme == "https" else 80
        specs = [{"host": parts.hostname, "port": parts.port or default_port, "weight": 1}]
        return scheme, default_port, specs, parts.path.rstrip("/").encode()
    scheme = conf["scheme"]
    default_port = 443 if scheme == "https" else 80
    return scheme, default_port, [n for n in conf["nodes"] if n["weight"] > 0], b""


def node_key(scheme: str, host: str, port: int, tls: dict) -> tuple:
    """What makes two nodes one pool: TLS settings count only for https. A name is one
    node however it is spelled (DNS names are case-insensitive; a trailing dot is the root)."""
    host = host.lower().rstrip(".")
    if scheme == "https":
        return scheme, host, port, tls["verify"], tls["ca_file"]
    return scheme, host, port


class ConnectionCounts:
    """Connections opened and reused, over every pool a worker ever had. A reuse is a
    request sent on a connection after its first; those of closed connections are
    added up here when they close, the open ones' when asked (`PoolRegistry.reused`),
    so that the request path only counts its connection's requests."""

    __slots__ = ("opened", "reused_closed", "queued", "queue_timeouts")

    def __init__(self):
        self.opened = 0
        self.reused_closed = 0
        self.queued = 0  # exchanges that waited for a node at max_connections
        self.queue_timeouts = 0  # ... and were answered 503 for it


log = logging.getLogger("fastgw")


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to a node; leased to one Exchange at a time.

    `limit` is how many requests it may carry: its pool's `max_requests`, 0 once it must
    not be reused (`spoil`: bytes after a response; its pool retired)."""

    __slots__ = ("pool", "transport", "writelines", "exchange", "requests", "limit",
                 "idle_since")

    def __init__(self, pool: "UpstreamPool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.writelines = None  # parts_writer(transport)
        self.exchange: Exchange | None = None
        self.requests = 0
        self.limit = pool.max_requests
        self.idle_since = 0.0

    def connection_made(self, transport):
        self.transport = transport
        self.writelines = parts_writer(transport)
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self.pool.track(self)

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
        # The upstream closed its side: this connection is done, even if idle (its pool's
        # idle stack holds open connections only). It closes itself (False) right after.
        self.limit = 0
        self.pool.forget(self)
        return False

    def connection_lost(self, exc):
        self.writelines = None  # it refers to the transport, which refers to self
        self.pool.forget(self)
        ex = self.exchange
        if ex is not None:
            ex.upstream_lost(exc is None)

    def spoil(self) -> None:
        """Never reuse this connection: close it when its exchange ends."""
        self.limit = 0

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()


class PoolWait:
    """An exchange's place in a full node's queue."""

    __slots__ = ("pool", "exchange", "deadline")

    def __init__(self, pool: "UpstreamPool", exchange: "Exchange", deadline: float):
        self.pool, self.exchange, self.deadline = pool, exchange, deadline

    def cancel(self) -> None:
        self.pool.waiters.remove(self)  # still in it: once served, nothing cancels it


class UpstreamPool:
    """The connections to one node: counted, kept idle, handed out, closed."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 server_hostname: str | None, counts: ConnectionCounts):
        self.host, self.port = host, port
        self.ssl, self.server_hostname = ssl_context, server_hostname
        self.counts = counts
        self.idle: list[UpstreamConnection] = []
        self.open: set[UpstreamConnection] = set()  # connected, not closed by either side
        self.connecting = 0  # connects under way
        self.waiters: deque[PoolWait] = deque()
        self.size = 320
        self.idle_timeout = 60.0
        self.max_requests = 1000
        self.max_connections: int | None = None  # None: no limit
        self.retired = False
        self.head_end = b"\r\n"  # what ends a request head sent on its connections

    def configure(self, keepalive_pool: dict, max_connections: int | None) -> None:
        self.size = keepalive_pool["size"]
        self.idle_timeout = keepalive_pool["idle_timeout"]
        # a pool that keeps none sends "connection: close" (head_end): one request each,
        # so that no waiter is handed a connection the upstream is closing
        self.max_requests = keepalive_pool["requests"] if self.size else 1
        for conn in self.open:
            if conn.limit:  # not spoiled
                conn.limit = self.max_requests
        self.max_connections = max_connections
        self.head_end = b"connection: close\r\n\r\n" if self.size == 0 else b"\r\n"
        self._serve_waiters()  # a higher limit (or none) lets those already waiting in

    # ------------------------------------------------------------ for exchanges

    def has_room(self) -> bool:
        """May a connection be opened now? Not while others wait: they come first."""
        return not self.waiters and self._under_limit()

    def _under_limit(self) -> bool:
        limit = self.max_connections
        return limit is None or len(self.open) + self.connecting < limit

    def connect(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        self.connecting += 1
        task = loop.create_task(loop.create_connection(
            lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl,
            server_hostname=self.server_hostname))
        task.add_done_callback(self._connect_done)  # before the exchange's own callback
        return task

    def _connect_done(self, task: asyncio.Task) -> None:
        # connected, failed or cancelled: the connection (if any) is in `open` now
        self.connecting -= 1
        self._serve_waiters()

    def wait(self, exchange: "Exchange", deadline: float) -> PoolWait:
        """Queue `exchange` for the next connection this node can give it."""
        self.counts.queued += 1
        wait = PoolWait(self, exchange, deadline)
        self.waiters.append(wait)
        return wait

    def release(self, conn: UpstreamConnection, reusable: bool, now: float) -> None:
        """The one decision whether a connection is kept: only if the exchange on it ended
        cleanly (`reusable`: response read in full, request sent in full, keep-alive
        allowed by the server), it has requests left and its pool is not retired. A kept
        connection goes to the first waiter, else to the idle stack if there is room in
        it; any other is closed, which lets the first waiter open one."""
        conn.exchange = None
        if reusable and conn.requests < conn.limit:  # not spoiled, not retired, requests left
            if self.waiters:
                self.waiters.popleft().exchange.pool_ready(conn)
                return
            if len(self.idle) < self.size:
                conn.idle_since = now
                self.idle.append(conn)
                return
        self._close(conn)

    # ------------------------------------------------------------ bookkeeping

    def track(self, conn: UpstreamConnection) -> None:
        """`conn` is connected (and its TLS handshake done)."""
        self.counts.opened += 1
        self.open.add(conn)
        if self.retired:  # connected after its pool was retired: one request only
            conn.spoil()

    def forget(self, conn: UpstreamConnection) -> None:
        """`conn` is closed by either side (connection_lost); it may have been idle."""
        if conn in self.open:  # not closed by _close already
            self._closed(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            self._serve_waiters()

    def _close(self, conn: UpstreamConnection) -> None:
        """Close `conn`, which is not on the idle stack: it no longer counts, though its
        close completes later."""
        conn.transport.close()
        if conn in self.open:
            self._closed(conn)
            self._serve_waiters()

    def _closed(self, conn: UpstreamConnection) -> None:
        self.open.discard(conn)
        if conn.requests > 1:
            self.counts.reused_closed += conn.requests - 1

    def reused(self) -> int:
        """Requests sent on this pool's open connections after their first."""
        return sum(c.requests - 1 for c in self.open if c.requests > 1)

    def _serve_waiters(self) -> None:
        """Room was made: the first waiters open connections, as many as the limit allows."""
        waiters = self.waiters
        while waiters and self._under_limit():
            waiters.popleft().exchange.pool_ready(None)

    def expire(self, now: float) -> None:
        """Close idle connections past their idle time-out (the oldest are at the bottom);
        answer waiters past their deadline."""
        idle = self.idle
        oldest = now - self.idle_timeout
        while idle and idle[0].idle_since <= oldest:
            self._close(idle.pop(0))
        if self.waiters:
            late = [w for w in self.waiters if w.deadline <= now]
            for wait in late:
                self.waiters.remove(wait)
                self.counts.queue_timeouts += 1
                wait.exchange.pool_timeout()

    def retire(self) -> None:
        """No configuration names this node any more: keep nothing from now on."""
        self.retired = True
        for conn in self.open:
            conn.spoil()
        self.close()

    def drained(self) -> bool:
        return not self.open and not self.connecting and not self.waiters

    def close(self) -> None:
        """Close the idle connections (at shutdown, or when retired)."""
        while self.idle:
            self._close(self.idle.pop())


class PoolRegistry:
    """Pools by node, and TLS contexts by settings; both outlive configurations."""

    def __init__(self):
        self.pools: dict[tuple, UpstreamPool] = {}
        self.retired: list[UpstreamPool] = []  # pruned, with connections or waiters left
        self.counts = ConnectionCounts()
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
        key = node_key(scheme, host, port, tls)
        pool = self.pools.get(key)
        if pool is None:
            ctx = self.tls_context(tls["verify"], tls["ca_file"]) if scheme == "https" else None
            pool = self.pools[key] = UpstreamPool(host, port, ctx,
                                                  host if scheme == "https" else None,
                                                  self.counts)
        return pool

    def prune(self, in_use: set[UpstreamPool]) -> None:
        """Retire and drop the pools of nodes no configuration refers to any more."""
        for key, pool in list(self.pools.items()):
            if pool not in in_use:
                pool.retire()
                del self.pools[key]
                if not pool.drained():
                    self.retired.append(pool)

    def reused(self) -> int:
        """Requests sent on a connection after its first, over every pool ever had."""
        return self.counts.reused_closed + sum(
            pool.reused() for pool in (*self.pools.values(), *self.retired))

    def expire(self, now: float) -> None:
        for pool in self.pools.values():
            if pool.idle or pool.waiters:
                pool.expire(now)
        if self.retired:
            for pool in self.retired:
                pool.expire(now)
            self.retired = [p for p in self.retired if not p.drained()]

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

    __slots__ = ("nodes", "base_path", "connect_timeout", "send_timeout",
                 "read_timeout", "retries", "single", "_current")

    def __init__(self, conf: dict, pools: PoolRegistry):
        scheme, default_port, specs, self.base_path = upstream_nodes(conf)
        self.nodes = [Node(n["host"], n["port"], n["weight"],
                           pools.pool(scheme, n["host"], n["port"], conf["tls"]), default_port)
                      for n in specs]
        pass_host = conf["pass_host"]
        for node in self.nodes:
            if pass_host == "node":
                node.fixed_host = node.host_header
            elif pass_host == "rewrite":
                node.fixed_host = conf["upstream_host"].encode()
        timeout = conf["timeout"]
        self.connect_timeout = timeout["connect"]
        self.send_timeout = timeout["send"]
        self.read_timeout = timeout["read"]
        retries = conf["retries"]
        self.retries = len(self.nodes) - 1 if retries is None else retries
        self.single = self.nodes[0] if len(self.nodes) == 1 else None  # no balancing
        self._current = [0] * len(self.nodes)

    def pick(self, tried: list | tuple = ()) -> Node:
        """Smooth weighted round robin (as nginx): spreads heavy nodes between light ones.
        A retry passes the nodes `tried`, which are left out while any other is left."""
        current, nodes = self._current, self.nodes
        best, total = -1, 0
        for i, node in enumerate(nodes):
            if tried and node in tried:
                continue
            current[i] += node.weight
            total += node.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:  # every node tried: any may be tried again
            return self.pick()
        current[best] -= total
        return nodes[best]
