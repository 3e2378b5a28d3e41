"""The client side: one `ClientConnection` per accepted socket, and the `Gateway` they share.

A connection parses requests with httptools; its parser callbacks only record,
turning each parsed head into a QUEUED `Exchange` (relay.py). Exchanges are
started, strictly in arrival order, once the parser has returned: pipelined
requests wait in `queue` and are started by the completion of the one before.
Time-outs are not one timer per connection: `Gateway.tick` walks the connections
ten times a second and counts the ticks each (and its active exchange) spends
without progress, so the request path never reads a clock or touches a timer
for them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from itertools import chain

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import responses
from .config.compile import Snapshot
from .fields import READ_BY_GATEWAY
from .metrics import WorkerStats
from .relay import (CHUNKED_FRAMING, NO_BODY_FRAMINGS, PLAIN_CONNECTION, QUEUED, REQUEST_SKIP,
                    Exchange, connection_tokens)
from .responses import Fault, Response
from .routing import absolute_form
from .settings import Settings
from .tls import skip_close_notify
from .upstream import WRITE_HIGH, WRITE_LOW, PoolRegistry, parts_writer

log = logging.getLogger("fastgw")

TICK = 0.1  # seconds between deadline checks: the precision of every time-out
# Metrics and the access log are written out (`Gateway.fold`) every tick, and every
# FOLD_EVERY while requests finish at FOLD_BUSY a second or more. A fold costs about 0.2 µs
# a request, all at once: a tick's worth at 50,000 requests/s stalled the loop, and every
# request in flight with it, for a millisecond ten times a second (the p99 latency at 50
# connections: 2.6 ms folding every tick, 1.6 ms folding every 10 ms; the median 0.9 ms).
# Below FOLD_BUSY a tick's fold takes under 0.1 ms, and folding more often would only
# cost more.
FOLD_EVERY = 0.01
FOLD_BUSY = 5000

# libuv accepts one connection per listening handle and event-loop turn (libuv #3696). A
# busy worker's turn is long (a thousand events), so a burst of new clients would wait in the
# listen queue for seconds (1,000 clients at once under load: up to 20 s, measured). So, as
# HAProxy's tune.maxaccept does, a worker takes more a turn, two ways:
# - each listening socket is watched through LISTEN_HANDLES descriptors of its own (dup),
#   each taking one connection a turn, in C;
# - a connection accepted when none was for LONG_TURN (a long turn, or a quiet spell, when
#   the queue is most likely empty and trying costs one accept(2)) takes up to ACCEPT_BATCH
#   more from the queue itself, in Python: a socket object and a task each, about 13 us
#   more per connection than libuv's (wrk, a new connection for every request).
# The batch is divided by twice the number of workers sharing the queue, so that one worker
# does not take a whole burst, and there are never more handles than that. A connection
# wakes every handle, so more handles cost more when clients come one at a time (CPU per
# request against one handle and a batch at every accept, a new connection for every
# request: 4 handles, within noise with one client at a time, -12 to -18 % with 10 to 50;
# 8 handles: 14 % more than 4 with one client, the same with 50).
ACCEPT_BATCH = 64
LISTEN_HANDLES = 4
LONG_TURN = 0.0015  # seconds: the loop's clock moves by whole milliseconds, so 2 ms or more

# What the parser is doing on a connection: between requests or in a body (IDLE), in a head,
# or nothing more (CLOSED).
IDLE, HEAD, CLOSED = range(3)


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
        self._folding = None  # the next fold's timer while busy (fold)
        self.servers: list[asyncio.AbstractServer] = []
        self.listeners: list = []
        self.accept_batch = (ACCEPT_BATCH if settings.workers == 1
                             else max(1, ACCEPT_BATCH // (2 * settings.workers)))
        self.listen_handles = min(LISTEN_HANDLES, self.accept_batch)
        self._accepting: set[asyncio.Task] = set()
        self._last_accept = -LONG_TURN  # the loop's clock after libuv's last accept (and batch)
        # the fewest ticks without progress after which a connection may time out (tick)
        shortest = min(settings.header_timeout, settings.keepalive_timeout)
        quiet = math.ceil(shortest / TICK) + 1  # then as the tick's own arithmetic has it
        if quiet > 1 and (quiet - 2) * TICK >= shortest:
            quiet -= 1
        elif (quiet - 1) * TICK < shortest:
            quiet += 1
        self._quiet = quiet

    def apply(self, conf: dict, revision: int) -> Snapshot:
        """Compile `conf` and put it in force; in-flight requests keep the old one. If it
        fails to compile, the exception propagates and nothing has changed."""
        old = self.snapshot
        new = self._snapshot_factory(conf, revision, self.pools, old)
        new.configure_pools()
        self.stats.bind(new.router.routes)
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
            for handle in range(self.listen_handles):  # libuv closes each descriptor
                self.servers.append(await self.loop.create_server(
                    self._accepted, sock=sock.dup() if handle else sock, backlog=4096))
        for sock in tls_sockets:
            self.servers.append(tls.listen(sock, lambda: ClientConnection(self), self.stats,
                                           self.accept_batch))
        self.listeners = list(sockets)
        self._ticker = self.loop.call_later(TICK, self.tick)

    def _accepted(self) -> ClientConnection:
        """The protocol for a connection libuv accepted; after a long turn, a batch more."""
        now = self.loop.time()
        if now - self._last_accept >= LONG_TURN:
            self.accept_waiting()
            now = self.loop.time()  # uvloop's clock is read anew, and a batch takes time
        self._last_accept = now
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
        """Time-outs: each connection and its active exchange count the ticks they spend
        without progress (`stall`, set back to 0 by the request path, which so never
        reads a clock for them) against the time-out of the state they are in."""
        self._ticker = self.loop.call_later(TICK, self.tick)  # first: whatever fails below
        now = self.now = self.loop.time()
        quiet = self._quiet
        for conn in list(self.connections):
            stall = conn.stall = conn.stall + 1
            # never early: stall - 1 whole ticks; and not asked before the shortest
            # time-out a connection has could pass (10,000 idle ones: 1.18 ms a tick, 0.39)
            if stall >= quiet and (stall - 1) * TICK >= conn.timeout():
                conn.on_deadline()
            ex = conn.active
            if ex is not None:
                limit = ex.timeout()
                if limit < _NEVER:  # a state with a time-out sets `stall` as it starts
                    ex.stall += 1
                    if (ex.stall - 1) * TICK >= limit:
                        ex.on_timeout()
        self.pools.expire(now)
        if self._folding is None:  # else folded more often (fold)
            self.fold(TICK)

    def fold(self, since: float) -> None:
        """Count the requests finished in the last `since` seconds into the metrics and
        write their access log lines; again in FOLD_EVERY if they came at FOLD_BUSY a
        second or more."""
        self._folding = None  # so that the tick folds, whatever fails below
        busy = self.stats.fold() >= FOLD_BUSY * since
        if self.access_log is not None:
            self.access_log.flush()
        if busy:
            self._folding = self.loop.call_later(FOLD_EVERY, self.fold, FOLD_EVERY)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let in-flight exchanges finish: their
        answers say "connection: close" (keeps_open), and their connections close after;
        a TLS one with its close_notify, the client's not waited for."""
        self.listeners = []
        for server in self.servers:
            server.close()
        for conn in self.connections:
            conn.closing = True
        deadline = self.loop.time() + timeout
        while True:
            for conn in list(self.connections):
                if conn.active is None and not conn.queue:
                    conn.close()
                    if conn.transport is not None:  # (a TLS one would wait for the client)
                        skip_close_notify(conn.transport)
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(TICK)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._folding is not None:
            self._folding.cancel()
            self._folding = None
        self.pools.close()
        if self.access_log is not None:
            self.access_log.close()


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests into exchanges and answers them in order.

    Parser callbacks only record: the head becomes a QUEUED `Exchange`, body bytes go to
    it. Exchanges start (routing, plugins, upstream) after the parser returns, in
    `_next`, where an exception is logged and answered 500 instead of surfacing as a
    parser error."""

    # reasons to stop reading from the client, as bits
    PIPELINE, UPSTREAM, BODY_BUFFER = 1, 2, 4

    __slots__ = (
        # global
        "gateway", "loop", "settings", "max_head", "access_log",
        # per connection
        "transport", "writelines", "parser", "ip", "forwarded", "forwarded_no_xff", "queue",
        "active", "reading", "read_pauses", "write_paused", "unsent", "stall", "closing", "fault",
        "pending_head", "chunk_size", "starting",
        # per request being parsed
        "url", "headers", "current", "body_received",
    )

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.loop = gateway.loop
        self.settings = gateway.settings
        self.max_head = gateway.settings.max_header_bytes
        self.access_log = gateway.access_log
        self.transport = None
        self.writelines = None  # upstream.parts_writer(transport)
        # llhttp takes the versions 0.9, 1.0, 1.1 and 2.0, and refuses any other well-formed
        # d.d version with one error (answered 505, data_received); on_headers_complete
        # answers 0.9 (a malformed request line) and 2.0.
        self.parser = HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.active: Exchange | None = None
        self.reading = IDLE
        self.read_pauses = 0
        self.write_paused = False
        self.unsent = 0  # bytes in the write buffer when last looked at, while write_paused
        self.stall = 0  # ticks without progress (see timeout)
        self.closing = False
        self.fault: Response | None = None
        self.pending_head = 0  # bytes received while reading a head, before this read
        self.chunk_size = 0  # bytes in the read being parsed
        self.starting = False
        self.url = b""
        self.headers: list = []
        self.current: Exchange | None = None
        self.body_received = 0

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        peer = transport.get_extra_info("peername")
        ip = self.ip = (peer[0] if peer else "unknown").encode()
        scheme = b"https" if transport.get_extra_info("sslcontext") is not None else b"http"
        self.writelines = parts_writer(transport)
        # the forwarding fields, built once per connection; X-Forwarded-Host's value follows
        self.forwarded_no_xff = (b"x-real-ip: " + ip + b"\r\nx-forwarded-proto: " + scheme +
                                 b"\r\nx-forwarded-for: ")
        self.forwarded = self.forwarded_no_xff + ip + b"\r\nx-forwarded-host: "
        self.gateway.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.reading == CLOSED:
            return
        self.chunk_size = len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self._upgraded()
        except HttpParserError as error:
            self._request_fault(self.fault or (_VERSION_NOT_SUPPORTED if error.args == _BAD_VERSION
                                               else responses.BAD_REQUEST))
        else:
            if self.reading == HEAD:
                self.pending_head += len(data)
                if self.pending_head > 2 * self.max_head + 65536:
                    self._request_fault(responses.HEADERS_TOO_LARGE)
        queue = self.queue
        if queue:
            if self.active is None:
                self._next()
            if queue:
                self.pause_reading(self.PIPELINE)

    def eof_received(self):
        # A half-close after a complete request still gets its answer (HTTP/1.0 style);
        # a request whose body was still coming can never be whole: its upstream side is
        # cut off and it is answered 400.
        if self.current is not None:
            self._request_fault(responses.BAD_REQUEST)
        self._stop_reading()
        if self.active is None:
            if self.queue:
                self._next()
            else:
                self.close()
        # A TLS transport shuts itself down after close_notify whatever this says (uvloop
        # logs a warning for True): only a plain one stays open for the answer.
        transport = self.transport
        return transport is not None and transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc):
        self.gateway.connections.discard(self)
        self.transport = self.writelines = None  # both refer to the transport, which to self
        self.reading = CLOSED
        if self.active is not None:
            self.active.abandon()
            self.active = None
        self.queue.clear()

    def pause_writing(self):
        # The client is not reading its answers as fast as they come: the upstream is not
        # read meanwhile, and the client gets the keep-alive time-out to read some (timeout)
        self.write_paused = True
        self.unsent = self.transport.get_write_buffer_size()
        self.stall = 0
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        self.stall = 0
        ex = self.active
        if ex is not None:
            ex.stall = 0  # the upstream's time-out starts again
            if ex.conn is not None:
                ex.conn.transport.resume_reading()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self):
        self.reading = HEAD
        self.stall = 0  # the header time-out starts

    def on_url(self, url: bytes):
        self.url += url  # may come in pieces; its size is checked with the head's

    def on_header(self, name: bytes, value: bytes):
        self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.reading = IDLE  # a body, if any, is read while `current` is set
        headers = self.headers
        # the head cannot be larger than what was received while reading it
        if self.pending_head or self.chunk_size > self.max_head:
            self._check_head_size(headers)
        parser = self.parser
        fields = dict(headers)
        host = fields.pop(b"host", None)
        # plain (nearly every request): one Host, no name twice, no field that frames,
        # forwards or is forwarded otherwise (but "Connection: keep-alive", see
        # _plain_without_keep_alive), and HTTP/1.1 (with no Connection field, only 1.1 of the
        # versions llhttp takes keeps the connection open). It has no body, so it is whole
        # now; it is forwarded from `fields` as it is. (No Host and a name twice pass the
        # count too: routing answers that request 400, as HTTP/1.1 requires a Host.)
        plain = (len(fields) + 1 == len(headers) and parser.should_keep_alive()
                 and (_NOT_PLAIN.isdisjoint(fields)
                      or b"connection" in fields and _plain_without_keep_alive(fields, parser)))
        ex = Exchange(self, parser.get_method(), self.url, headers, fields if plain else None,
                      host, self.loop.time())
        self.url = b""
        self.queue.append(ex)
        if plain:
            self.headers = []
        else:
            self._read_fields(ex, fields)

    def _read_fields(self, ex: Exchange, fields: dict) -> None:
        """A request that is not plain: its version, keep-alive and the fields fastgw reads
        (`_usual_fields`, else `_special_fields`); its body, if any, is read while it is
        `current`."""
        self.current = ex
        self.headers = _TRAILERS  # the message's trailers, if any, go nowhere
        ex.req_done = False
        if self._usual_fields(ex, fields):
            return
        version = self.parser.get_http_version()
        ex.http11 = version == "1.1"
        ex.keep_alive = self.parser.should_keep_alive()
        self._special_fields(ex)
        if version != "1.1" and version != "1.0":
            # llhttp reads "GET /a\n..." (no version) as HTTP/0.9: a malformed request line
            ex.refuse(responses.BAD_REQUEST if version == "0.9" else _VERSION_NOT_SUPPORTED)

    def _usual_fields(self, ex: Exchange, fields: dict) -> bool:
        """Whether the request is plain (see on_headers_complete) but for a Content-Length,
        "Connection: keep-alive" or "close", and the forwarding fields a proxy in front
        adds (its X-Forwarded-For is extended, the others fastgw writes itself): then read
        here from `fields` (`dict(headers)` without Host), which keeps the rest to be
        forwarded as it is. Every other request is read field by field (_special_fields)."""
        if ex.host is None or len(fields) + 1 != len(ex.headers):
            return False  # no Host, or a name twice
        read = _NOT_PLAIN.intersection(fields)
        if not read <= READ_BY_GATEWAY:  # the rest of _NOT_PLAIN is read field by field
            return False
        parser = self.parser
        connection = fields.get(b"connection")
        if connection is None:
            if not parser.should_keep_alive():
                return False  # HTTP/1.0 (see on_headers_complete)
        elif connection not in PLAIN_CONNECTION or parser.get_http_version() != "1.1":
            return False
        else:
            ex.keep_alive = parser.should_keep_alive()
        length = fields.get(b"content-length")
        xff = fields.get(b"x-forwarded-for")
        # with either, the head is sent from `fields` by _send_filtered, which adds them
        if length is not None or xff is not None:
            ex._rare().xff = xff
        for name in read:
            del fields[name]
        ex.fields = fields
        self.stall = 0  # the body's time-out starts
        if length is not None:
            self.body_received = 0
            length = int(length)  # llhttp has checked it: digits, and only one
            ex.framing = b"content-length: %d\r\n" % length
            if length > self.settings.max_body_bytes:
                ex.refuse(responses.PAYLOAD_TOO_LARGE)
        return True

    def _check_head_size(self, headers: list) -> None:
        """A head received in more than one read, or in a large one: its exact size."""
        pending = self.pending_head
        self.pending_head = 0
        if pending + self.chunk_size > self.max_head and (
                len(self.url) + sum(map(len, chain.from_iterable(headers))) + 4 * len(headers)
                > self.max_head):
            self.fault = responses.HEADERS_TOO_LARGE
            raise Refused

    def on_body(self, chunk: bytes):
        self.body_received += len(chunk)
        if self.body_received > self.settings.max_body_bytes:
            self.fault = responses.PAYLOAD_TOO_LARGE
            raise Refused
        self.stall = 0  # the body's time-out runs between reads
        self.current.request_body(chunk)

    def on_message_complete(self):
        ex = self.current
        if ex is not None:  # a plain request was whole at its head: on_headers_complete
            self.current = None
            self.headers = []
            ex.req_done = True
            if ex.state is not QUEUED:  # under way upstream: the rest of its body is sent
                ex.request_complete()

    def _special_fields(self, ex: Exchange) -> None:
        """The fields that frame the body or shape what is forwarded, read with the RFC
        9112 rules (rare: most requests have none of them, and no field twice). Every
        request with a body is one of these (Content-Length or Transfer-Encoding)."""
        self.body_received = 0
        self.stall = 0  # the body's time-out starts
        host = None
        for name, value in ex.headers:
            if name not in _SPECIAL_REQUEST_HEADERS and name != b"host":
                continue
            if name == b"host":
                if host is not None:
                    ex.refuse(responses.BAD_REQUEST)  # RFC 9112 3.2: one Host only
                    return
                host = value
            elif name == b"content-length":
                length = int(value)  # llhttp has checked it: digits, and only one
                ex.framing = b"content-length: %d\r\n" % length
                if length > self.settings.max_body_bytes:
                    ex.refuse(responses.PAYLOAD_TOO_LARGE)
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
                if ex.http11:  # HTTP/1.0 has no 1xx: its expectation is ignored (RFC 9110 10.1.1)
                    ex._rare().expect_continue = True
            elif name == b"x-forwarded-for":
                rare = ex._rare()
                rare.xff = value if rare.xff is None else rare.xff + b", " + value
            elif name == b"connection":
                extra = connection_tokens(value)
                if extra:
                    rare = ex._rare()
                    rare.skip = rare.skip | extra
        ex.host = host

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
            # a target no route could take (CONNECT's authority-form) is malformed first
            routable = ex.url[:1] == b"/" or absolute_form(ex.url.partition(b"?")[0])
            ex.refuse(_NOT_IMPLEMENTED if routable else responses.BAD_REQUEST)

    # ------------------------------------------------------------ answering, in order

    def _next(self) -> None:
        """Start the oldest waiting exchange; called when the connection has none active.
        A fault or an exception in routing or a plugin is answered here."""
        self.starting = True  # a loop, not recursion: a pipeline may hold thousands
        queue = self.queue
        # (an answer that closes the connection empties the queue: exchange_done)
        while queue and self.active is None:
            ex = self.active = queue.popleft()
            if self.read_pauses and not queue:
                self.resume_reading(self.PIPELINE)
            try:
                ex.start()  # may finish at once (a fixed answer), calling exchange_done
            except Fault as fault:
                ex.keep_alive = False
                ex.fail(fault.response, retry=False)
            except Exception:
                log.exception("request %s %s failed", ex.method.decode("latin-1"),
                              ex.logged_path())
                ex.fail(responses.INTERNAL_ERROR, retry=False)
        self.starting = False

    def keeps_open(self, ex: Exchange) -> bool:
        """Whether the connection stays open after `ex`'s answer: the one place that
        decides it, when the answer's head is written. Its request must have been read
        whole, and "connection: close" goes on the last answer only, not on one with
        more pipelined behind it."""
        return ex.keep_alive and ex.req_done and (not self.closing or bool(self.queue))

    def exchange_done(self, keep_alive: bool) -> None:
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
        else:
            self.stall = 0  # the keep-alive (or header) time-out starts

    def _request_fault(self, response: Response) -> None:
        """The client sent something unanswerable: answer in turn, then close."""
        self._stop_reading()
        ex = self.current
        if ex is not None:  # the request being received
            self.current = None
            ex.keep_alive = False
            if ex.state == QUEUED:
                ex.response = response  # answered in its turn
            else:
                ex.fail(response, retry=False)
            return
        ex = Exchange(self, b"", b"", [], None, None, self.loop.time())  # bytes, no request
        ex.keep_alive = False
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
                self.stall = 0

    def _stop_reading(self) -> None:
        self.reading = CLOSED
        self.closing = True

    def timeout(self) -> float:
        """Seconds the client may go without progress in the connection's state (see
        Gateway.tick): answers not read (the write buffer full, as nginx's send_timeout),
        a request body between reads (unless fastgw stopped reading it), a head, or an idle
        keep-alive connection; no limit while an exchange is answered."""
        if self.write_paused:
            return self.settings.keepalive_timeout
        if self.current is not None:
            return _NEVER if self.read_pauses else self.settings.header_timeout
        if self.active is not None or self.queue or self.reading == CLOSED:
            return _NEVER
        if self.reading == HEAD:
            return self.settings.header_timeout
        return self.settings.keepalive_timeout

    def on_deadline(self) -> None:
        self.stall = 0
        if self.write_paused:
            unsent = self.transport.get_write_buffer_size()
            if unsent >= self.unsent:  # it has read nothing for the whole time-out
                self.abort()
            self.unsent = unsent  # else it reads, however slowly: it gets the time-out again
            return
        if self.current is not None or self.reading == HEAD:  # a body or a head, stalled
            self._request_fault(responses.REQUEST_TIMEOUT)
            if self.active is None:
                self._next()
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
_NEVER = float("inf")
# Fields read while parsing (besides Host): framing, forwarding, connection options.
_SPECIAL_REQUEST_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"expect",
                                      b"x-forwarded-for", b"connection"))
# A request with none of these (and with one Host, and no name twice) is forwarded with
# its fields as they are: no field read while parsing, none that fastgw writes itself.
_NOT_PLAIN = _SPECIAL_REQUEST_HEADERS | (REQUEST_SKIP - {b"host"})
_CONNECTION = {b"connection"}
_KEEP_ALIVE_VALUES = frozenset((b"keep-alive", b"Keep-Alive"))
_EXPECTATION_FAILED = responses.error(417)
_VERSION_NOT_SUPPORTED = responses.error(505)
_BAD_VERSION = ("Invalid HTTP version",)  # llhttp's error for a d.d version it does not take
_NOT_IMPLEMENTED = responses.error(501)


def _plain_without_keep_alive(fields: dict, parser: HttpRequestParser) -> bool:
    """For an HTTP/1.1 request with "Connection: keep-alive" (as browsers and most HTTP
    libraries send it), which says what HTTP/1.1 means anyway: drops that field from
    `fields` (it is hop-by-hop) and says whether the request is plain without it. Any other
    Connection value or spelling, and HTTP/1.0, are read as RFC 9110 7.6.1 says
    (_special_fields)."""
    if (fields.get(b"connection") not in _KEEP_ALIVE_VALUES
            or parser.get_http_version() != "1.1"):
        return False
    if _NOT_PLAIN.isdisjoint(fields.keys() - _CONNECTION):
        del fields[b"connection"]
        return True
    return False  # `fields` as it was, for _usual_fields


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

