"""The client side: one `ClientConnection` per accepted socket, and the `Gateway` they share.

A connection parses requests with httptools, turns each parsed head into an
`Exchange` (routed, plugins run), and answers exchanges strictly in arrival
order: pipelined requests wait in `queue` and are started by the completion of
the one before. Time-outs are not one timer per connection: `Gateway.tick`
walks the connections a few times a second and compares deadlines with a
coarse clock, so the request path never creates or cancels a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import responses
from .config.compile import Snapshot
from .metrics import WorkerStats
from .relay import (CHUNKED_FRAMING, DONE, NO_BODY_FRAMINGS, QUEUED, RESPONDING, Exchange,
                    connection_tokens)
from .responses import Response
from .routing import HOST_NAMES, NEEDS_NORMALIZING, lenient_reading, normalize_path
from .settings import Settings
from .upstream import WRITE_HIGH, WRITE_LOW, PoolRegistry

log = logging.getLogger("fastgw")

TICK = 0.1  # seconds between deadline checks: the precision of every time-out

# libuv accepts one connection per event-loop iteration. A busy worker's iteration is long
# (a thousand events), so a burst of new clients would wait in the listen queue for
# seconds (1,000 clients at once under load: up to 20 s, measured). Each connection libuv
# accepts therefore takes up to this many more from the queue itself, as HAProxy's
# tune.maxaccept does; like HAProxy, divided by twice the number of workers sharing the
# queue, so that one worker does not take a whole burst.
ACCEPT_BATCH = 64

# What the parser is doing on a connection.
IDLE, HEAD, BODY, CLOSED = range(4)


class Refused(Exception):
    """Raised in a parser callback to stop parsing; `ClientConnection.fault` says why."""


class Gateway:
    """State shared by every connection of one process: settings, the configuration
    snapshot in force, upstream pools, the open connections and a coarse clock."""

    def __init__(self, settings: Settings, snapshot_factory, access_log=None):
        self.settings = settings
        self.loop = asyncio.get_event_loop()
        self.pools = PoolRegistry()
        self.connections: set[ClientConnection] = set()
        self.now = self.loop.time()
        self.snapshot: Snapshot | None = None
        self.stats = WorkerStats()
        self.access_log = access_log
        self._snapshot_factory = snapshot_factory
        self._ticker = None
        self.servers: list[asyncio.AbstractServer] = []
        self.listeners: list = []
        self.accept_batch = (ACCEPT_BATCH if settings.workers == 1
                             else max(1, ACCEPT_BATCH // (2 * settings.workers)))
        self._accepting: set[asyncio.Task] = set()

    def apply(self, conf: dict, revision: int) -> Snapshot:
        """Compile `conf` and put it in force; in-flight requests keep the old one."""
        old = self.snapshot
        new = self._snapshot_factory(conf, revision, self.pools, old)
        self.snapshot = new
        if old is not None:
            new.retire(old)
            self.pools.prune(new.pools_in_use)
        return new

    async def start(self, sockets: list, tls_sockets: list = (), tls=None) -> None:
        """Serve on listening sockets bound by the master (shared by every worker); on
        `tls_sockets` through `tls` (a tls.TLSTerminator, which does the handshakes)."""
        for sock in sockets:
            sock.setblocking(False)  # accept_waiting must never wait on an empty queue
            server = await self.loop.create_server(self._accepted, sock=sock, backlog=4096)
            self.servers.append(server)
        for sock in tls_sockets:
            self.servers.append(tls.listen(sock, lambda: ClientConnection(self), self.stats,
                                           self.accept_batch))
        self.listeners = list(sockets)
        self._ticker = self.loop.call_later(TICK, self.tick)

    def _accepted(self) -> ClientConnection:
        """The protocol for a connection libuv accepted; a turn to take more."""
        self.accept_waiting()
        return ClientConnection(self)

    def accept_waiting(self) -> None:
        """Take connections still waiting in the listen queues (see ACCEPT_BATCH)."""
        for listener in self.listeners:
            for _ in range(self.accept_batch):
                try:
                    sock, _ = listener.accept()
                except OSError:  # empty (EAGAIN), or out of descriptors: libuv's turn
                    break
                task = self.loop.create_task(self.loop.connect_accepted_socket(
                    lambda: ClientConnection(self), sock))
                self._accepting.add(task)
                task.add_done_callback(self._accepting.discard)

    def tick(self) -> None:
        now = self.now = self.loop.time()
        for conn in list(self.connections):
            if conn.deadline <= now:
                conn.on_deadline()
            ex = conn.active
            if ex is not None and ex.deadline <= now:
                ex.on_timeout()
        self.pools.expire(now)
        if self.access_log is not None:
            self.access_log.flush()
        self._ticker = self.loop.call_later(TICK, self.tick)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let in-flight exchanges finish."""
        self.listeners = []
        for server in self.servers:
            server.close()
        deadline = self.loop.time() + timeout
        while True:
            for conn in list(self.connections):
                if conn.active is None and not conn.queue:
                    conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(TICK)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        self.pools.close()
        if self.access_log is not None:
            self.access_log.flush()


class ClientConnection(asyncio.Protocol):
    # reasons to stop reading from the client, as bits
    PIPELINE, UPSTREAM, BODY_BUFFER = 1, 2, 4

    __slots__ = (
        # global
        "gateway", "loop", "settings",
        # per connection
        "transport", "parser", "ip", "forwarded", "queue", "active", "reading", "read_pauses",
        "write_paused", "deadline", "closing", "fault", "pending_head", "starting",
        # per request being parsed
        "url", "headers", "head_size", "current", "body_received",
    )

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.loop = gateway.loop
        self.settings = gateway.settings
        self.transport = None
        self.parser = HttpRequestParser(self)
        # Any d.d version is parsed, so that fastgw answers the ones it does not serve with
        # 505 rather than llhttp's generic error; on_headers_complete decides.
        self.parser.set_dangerous_leniencies(lenient_version=True)
        self.queue: deque[Exchange] = deque()
        self.active: Exchange | None = None
        self.reading = HEAD
        self.read_pauses = 0
        self.write_paused = False
        self.deadline = float("inf")
        self.closing = False
        self.fault: Response | None = None
        self.pending_head = 0
        self.starting = False
        self.url = b""
        self.headers: list = []
        self.head_size = 0
        self.current: Exchange | None = None
        self.body_received = 0

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        peer = transport.get_extra_info("peername")
        self.ip = (peer[0] if peer else "unknown").encode()
        scheme = b"https" if transport.get_extra_info("sslcontext") is not None else b"http"
        self.forwarded = b"x-real-ip: " + self.ip + b"\r\nx-forwarded-proto: " + scheme + b"\r\n"
        self.gateway.connections.add(self)
        self.deadline = self.gateway.now + self.settings.header_timeout

    def data_received(self, data: bytes) -> None:
        if self.reading == CLOSED:
            return
        if self.active is None and self.reading == IDLE:
            self.deadline = self.gateway.now + self.settings.header_timeout
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._upgraded()
        except HttpParserError:
            self._request_fault(self.fault or responses.BAD_REQUEST)
        else:
            if self.reading == HEAD:
                self.pending_head += len(data)
                if self.pending_head > 2 * self.settings.max_header_bytes + 65536:
                    self._request_fault(responses.HEADERS_TOO_LARGE)
        if self.active is None and self.queue:
            self._next()
        if self.queue:
            self.pause_reading(self.PIPELINE)

    def eof_received(self):
        # A half-close after a complete request still gets its answer (HTTP/1.0 style);
        # a request whose body was still coming can never be whole: its upstream side is
        # cut off and it is answered 400.
        if self.current is not None:
            self._request_fault(responses.BAD_REQUEST)
        self._stop_reading()
        if self.active is None and not self.queue:
            self.close()
        # A TLS transport shuts itself down after close_notify whatever this says (uvloop
        # logs a warning for True): only a plain one stays open for the answer.
        transport = self.transport
        return transport is not None and transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc):
        self.gateway.connections.discard(self)
        self.transport = None
        self.reading = CLOSED
        if self.active is not None:
            self.active.abandon()
            self.active = None
        self.queue.clear()

    def pause_writing(self):
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.transport.resume_reading()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self):
        self.reading = HEAD
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.pending_head = 0
        self.body_received = 0

    def on_url(self, url: bytes):
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.settings.max_header_bytes:
            self.fault = responses.HEADERS_TOO_LARGE
            raise Refused

    def on_header(self, name: bytes, value: bytes):
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.settings.max_header_bytes:
            self.fault = responses.HEADERS_TOO_LARGE
            raise Refused
        self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.reading = BODY
        parser = self.parser
        version = parser.get_http_version()
        http11 = version == "1.1"
        ex = Exchange(self, parser.get_method(), self.url, self.headers, http11,
                      parser.should_keep_alive())
        self.headers = _TRAILERS  # the message's trailers, if any, go nowhere
        self.current = ex
        self.queue.append(ex)
        if http11 or version == "1.0":
            self._dispatch(ex)
        else:
            # llhttp reads "GET /a\n..." (no version) as HTTP/0.9: a malformed request line
            ex.refuse(responses.BAD_REQUEST if version == "0.9" else _VERSION_NOT_SUPPORTED)

    def on_body(self, chunk: bytes):
        self.body_received += len(chunk)
        if self.body_received > self.settings.max_body_bytes:
            self.fault = responses.PAYLOAD_TOO_LARGE
            raise Refused
        self.current.request_body(chunk)

    def on_message_complete(self):
        self.reading = IDLE
        ex = self.current
        self.current = None
        ex.request_complete()

    # ------------------------------------------------------------ routing and plugins

    def _dispatch(self, ex: Exchange) -> None:
        """Decide what answers this request: a route's upstream, or the gateway itself."""
        host_header = None
        length = -1
        for name, value in ex.headers:
            if name in _SPECIAL_REQUEST_HEADERS:
                if name == b"host":
                    if host_header is not None:
                        ex.refuse(responses.BAD_REQUEST)  # RFC 9112 3.2: one Host only
                        return
                    host_header = value
                elif name == b"content-length":
                    length = int(value)  # llhttp has checked it: digits, and only one
                    ex.framing = b"content-length: %d\r\n" % length
                elif name == b"transfer-encoding":
                    fault = _transfer_coding_fault(ex, value)
                    if fault is not None:
                        self.fault = fault  # and parsing stops here: the body cannot be read
                        raise Refused
                    ex.framing = CHUNKED_FRAMING
                elif name == b"expect":
                    if value.rstrip(b" \t").lower() != b"100-continue":
                        ex.refuse(_EXPECTATION_FAILED)
                        return
                    ex.expect_continue = True
                elif name == b"x-forwarded-for":
                    ex.xff = value if ex.xff is None else ex.xff + b", " + value
                elif name == b"connection":
                    extra = connection_tokens(value)
                    if extra:
                        ex.skip = ex.skip | extra
        target = ex.target
        if target[:1] != b"/":
            parts = _absolute_form(target)
            if parts is None:
                ex.refuse(responses.BAD_REQUEST)
                return
            if host_header is None and ex.http11:
                ex.refuse(responses.BAD_REQUEST)  # RFC 9112 3.2: even with absolute-form
                return
            target, ex.host, host = parts
        elif host_header is None:
            if ex.http11:
                ex.refuse(responses.BAD_REQUEST)  # RFC 9112 3.2: HTTP/1.1 requires Host
                return
            host = b""
        else:
            parts = HOST_NAMES[host_header]
            if not parts:
                ex.refuse(responses.BAD_REQUEST)  # RFC 9112 3.2: not host[:port]
                return
            ex.host, host = parts
        if length > self.settings.max_body_bytes:
            ex.refuse(responses.PAYLOAD_TOO_LARGE)
            return
        path, sep, query = target.partition(b"?")
        router = self.gateway.snapshot.router
        if NEEDS_NORMALIZING(path):
            path = normalize_path(path)
            if path is None:
                ex.refuse(responses.BAD_REQUEST)  # a backslash
                return
            route = router.match(host, path, ex.method)
            if router.match(host, lenient_reading(path), ex.method) is not route:
                ex.refuse(responses.BAD_REQUEST)  # another route to some servers behind
                return
            target = path + sep + query
        else:
            route = router.match(host, path, ex.method)
        if route is None:
            ex.response = responses.NOT_FOUND
            return
        ex.route = route
        ex.target = route.upstream_target(target)
        for plugin in route.plugins:
            answer = plugin.access(ex)
            if answer is not None:
                ex.response = answer
                return

    def _upgraded(self) -> None:
        """llhttp stopped at a request that switches protocols (Connection: upgrade, or any
        CONNECT), right after its head: it hands over no body and parses nothing after it.
        fastgw relays HTTP/1.1 only, so such a request is served without the upgrade and
        the connection ends after it. A CONNECT, or one that declared a body, is refused:
        its upstream would wait for a body that never comes, or read the next request
        relayed on that connection as it."""
        self._stop_reading()
        ex = self.queue[-1]  # its head was parsed just now and nothing has started it yet
        ex.keep_alive = False
        if ex.response is None and (ex.method == b"CONNECT" or
                                    ex.framing not in NO_BODY_FRAMINGS):
            ex.refuse(_NOT_IMPLEMENTED)

    # ------------------------------------------------------------ answering, in order

    def _next(self) -> None:
        """Start the oldest waiting exchange; called when the connection has none active."""
        self.starting = True  # a loop, not recursion: a pipeline may hold thousands
        while self.queue and self.active is None and self.transport is not None:
            ex = self.active = self.queue.popleft()
            if not self.queue:
                self.resume_reading(self.PIPELINE)
            ex.start()  # may finish at once (a fixed answer), calling exchange_done
        self.starting = False

    def exchange_done(self, keep_alive: bool) -> None:
        ex = self.active
        if ex is not None:
            now = self.loop.time()
            gateway = self.gateway
            gateway.stats.observe(ex, now)
            if gateway.access_log is not None:
                gateway.access_log.record(ex, self.ip, now)
        self.active = None
        if not keep_alive:
            self.queue.clear()  # requests pipelined behind this one are not answered
            self.close()
            return
        if self.queue:
            if not self.starting:
                self._next()
        elif self.closing:
            self.close()
        elif self.reading == IDLE:
            self.deadline = self.gateway.now + self.settings.keepalive_timeout
        elif self.reading == HEAD:
            self.deadline = self.gateway.now + self.settings.header_timeout

    def answer(self, response: Response, keep_alive: bool) -> None:
        """Write a fixed response for the active exchange and finish it."""
        if self.transport is None:
            return
        ex = self.active
        # "connection: close" goes on the last answer only, not on one with more to follow
        open_after = keep_alive and (not self.closing or bool(self.queue))
        if ex is not None and ex.method == b"HEAD":  # the head only (RFC 9110 9.3.2)
            self.transport.write(response.head_keep_alive if open_after else response.head_close)
        else:
            self.transport.write(response.keep_alive if open_after else response.close)
        if ex is not None:
            ex.response = response
            ex.status = response.status
        self.exchange_done(keep_alive)

    def _request_fault(self, response: Response) -> None:
        """The client sent something unanswerable: answer in turn, then close."""
        self._stop_reading()
        ex = self.current
        if ex is not None and ex.state != DONE:
            ex.keep_alive = False
            if ex.state == RESPONDING:  # its answer is half sent: cut it off
                ex.abandon()
                self.abort()
            elif ex.state != QUEUED:  # already relaying: abandon it, answer now
                ex.abandon()
                self.active = None
                self.queue.clear()
                self.answer(response, False)
            else:
                ex.response = response
            return
        ex = Exchange(self, b"", b"", [], True, False)
        ex.response = response
        self.queue.append(ex)

    # ------------------------------------------------------------ flow control and closing

    def pause_reading(self, reason: int) -> None:
        if not self.read_pauses and self.transport is not None:
            self.transport.pause_reading()
        self.read_pauses |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_pauses & reason:
            self.read_pauses &= ~reason
            if not self.read_pauses and self.transport is not None and self.reading != CLOSED:
                self.transport.resume_reading()

    def _stop_reading(self) -> None:
        self.reading = CLOSED
        self.closing = True

    def on_deadline(self) -> None:
        self.deadline = float("inf")
        if self.active is not None or self.queue:
            return
        if self.reading == HEAD:
            self.answer(responses.REQUEST_TIMEOUT, False)
        else:
            self.close()

    def close(self) -> None:
        self.reading = CLOSED
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reading = CLOSED
        if self.transport is not None:
            self.transport.abort()


class _Trailers:
    """Where on_header puts a chunked request's trailers: nowhere. They are dropped, never
    merged into the head (RFC 9110 6.5.1), and never carried into the next request."""

    __slots__ = ()

    def append(self, field) -> None:
        pass


_TRAILERS = _Trailers()
_SPECIAL_REQUEST_HEADERS = frozenset((b"host", b"content-length", b"transfer-encoding", b"expect",
                                      b"x-forwarded-for", b"connection"))
_EXPECTATION_FAILED = responses.error(417)
_VERSION_NOT_SUPPORTED = responses.error(505)
_NOT_IMPLEMENTED = responses.error(501)


def _absolute_form(target: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(origin-form target, Host to forward, name to route on) of an absolute-form target
    ("http://host/path"), accepted as RFC 9112 3.2.2 requires: its authority, held to the
    same rule as Host, replaces the Host header. Anything else (authority-form, "*") is
    not for a gateway: None."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if at != -1 and at < end:
            end = at
    parts = HOST_NAMES[rest[:end]]
    if not parts:
        return None
    path = rest[end:]
    return (path if path[:1] == b"/" else b"/" + path), parts[0], parts[1]


def _transfer_coding_fault(ex: Exchange, value: bytes) -> Response | None:
    """What to answer a request's Transfer-Encoding with, or None for plain chunked.

    llhttp has already refused, while reading the fields, chunked followed by another
    coding and Transfer-Encoding with Content-Length (RFC 9112 6.3: 400). Any other coding
    ("gzip", "gzip, chunked", a second field) would have to be undone before the body can
    be relayed: 501 (RFC 9112 6.1), never dropped silently. HTTP/1.0 has no transfer
    codings, so the framing is faulty: 400, and the connection closed."""
    if not ex.http11:
        return responses.BAD_REQUEST
    if ex.framing is CHUNKED_FRAMING or value.strip(b" \t").lower() != b"chunked":
        return _NOT_IMPLEMENTED
    return None

