"""One request's journey, from its parsed head to the end of its answer: `Exchange`.

An exchange goes through these states:

    QUEUED ──> PENDING ──> CONNECTING ──> SENDING ──> RESPONDING ──> DONE
      │          a plugin   no byte sent   request     the answer's
      │          waits      upstream yet   head sent   head sent
      └──────────────── answered by the gateway (404, 401, 502, ...) ───> DONE

A pooled connection skips CONNECTING (QUEUED or PENDING to SENDING); a retry goes back
from SENDING to CONNECTING; any state but RESPONDING can be answered by the gateway,
and any state ends in DONE. Each event is taken only in the states it belongs to
(`resume` in PENDING, `_connected` in CONNECTING, response bytes from the connection
the exchange holds), so no step outside these happens.

QUEUED: parsed, waiting for its turn on the client connection. Its turn starts it
(`start`): routing, then the route's plugins in priority order, then the upstream.
Every fault, on either side, is a `Fault` carrying its answer, or a call to `fail`,
which answers it according to the state: before RESPONDING the client gets the
fault's answer; after, the client connection is cut (never a truncated response
passed off as whole). Every ending goes through `_finish`: the upstream connection
released or closed, the metrics and the access log, then the client connection told
whether it stays open (decided once, when the answer's head is written, by
`ClientConnection.keeps_open`).

What few requests need (a buffered body, 100-continue, a retry, a response that must
be re-framed) lives in `Rare`, created only for them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket

from httptools import HttpParserError, HttpResponseParser

from . import responses
from .fields import SAID_BY_PROXY
from .plugins import PENDING, UPSTREAM_HEADERS
from .responses import SERVER, Fault, Response, status_line
from .spelling import header_names
from .upstream import PoolWait

log = logging.getLogger("fastgw")

QUEUED, PENDING_STATE, CONNECTING, SENDING, RESPONDING, DONE = (
    "QUEUED", "PENDING", "CONNECTING", "SENDING", "RESPONDING", "DONE")


# RFC 9110 section 7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authenticate",
                        b"proxy-authorization"))
# Request fields the gateway writes itself (framing, Host, forwarding, and what plugins
# set), so a client's copy, under any spelling, never reaches the upstream; and the other
# fields that frameworks read as what a proxy in front saw or routed (RFC 7239 Forwarded,
# which some prefer to X-Forwarded-*; the URL IIS and Symfony route by instead of the
# request's), which no client may claim.
REQUEST_SKIP = header_names(HOP_BY_HOP | UPSTREAM_HEADERS | {
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-real-ip", *SAID_BY_PROXY})
RESPONSE_SKIP = HOP_BY_HOP | {b"server", b"content-length"}
# Methods whose request may be sent again on another connection (RFC 9110 9.2.2).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

BODY_BUFFER_LIMIT = 64 * 1024  # request body held while connecting; reading pauses above it
CHUNK_END = b"0\r\n\r\n"
CHUNKED_FRAMING = b"transfer-encoding: chunked\r\n"
NO_BODY_FRAMINGS = (b"", b"content-length: 0\r\n")  # `framing` of a request without a body
_SKIP_ALSO: dict[frozenset[bytes], frozenset[bytes]] = {}  # names -> REQUEST_SKIP | names
_NEVER = float("inf")
PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close"))

# The usual response is forwarded as the upstream wrote it but for three kinds of line,
# found and dropped by C code (re): an HTTP/1.1 status other than 1xx, 204 and 304, a
# Content-Length, and no field that changes the framing or the connection. Any other
# response takes the slow path, `SlowResponse`, which rebuilds its head field by field.
# (One expression matching the whole head instead cost a third more instructions.)
_FAST_STATUS = {b"HTTP/1.1 %d" % code: code for code in range(200, 600) if code not in (204, 304)}
# What follows the code on a status line forwarded as it is: a reason phrase (RFC 9112 4;
# llhttp takes control characters in it too, which the slow path's own line leaves out).
_REASON = re.compile(rb"(?: [\t\x20-\x7e\x80-\xff]*)?(?:\r|$)").match
# (A line starts after "\n": llhttp takes no "\n" in a head but after "\r". One literal
# first lets re skip to each line; the look-ahead on the first letter skips most lines.)
_SLOW_FIELD = re.compile(
    rb"\n(?=[CcPpTtUu])(?:(?:t(?:ransfer-encoding|e|railer)|upgrade|proxy-[^:\r]*):"
    rb"|connection:(?![ \t]*keep-alive[ \t]*(?:\r|$)))", re.I).search
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*(?:\r|$)", re.I).search
_DROPPED_LINES = re.compile(rb"\r\n(?:server|connection|keep-alive):[^\r]*", re.I).sub
# What ends a forwarded head: fastgw's Server field, and Connection as the client needs it.
_END_KEEP = b"\r\n" + SERVER + b"\r\n"
_END_KEEP_10 = b"\r\n" + SERVER + b"connection: keep-alive\r\n\r\n"
_END_CLOSE = b"\r\n" + SERVER + b"connection: close\r\n\r\n"
_FIELD_LINE = b"%s: %s\r\n".__mod__  # (name, value) -> its line
# `b"?" in url` first tries to read b"?" as an integer, and raises and clears a TypeError
# (about 1,900 instructions); looking for the byte's value is a memchr.
_QUESTION_MARK = ord("?")


# Response heads checked, and what the fast path makes of them (fast_head); an upstream
# sends the same head again and again but for its Date, so most responses are one look-up
# of their head's exact bytes instead of three regular-expression passes and llhttp's check
# (24,000 instructions). Bounded: cleared when full; heads over _CHECKED_HEAD are not kept.
_CHECKED: dict[bytes, tuple] = {}
_CHECKED_SIZE = 256
_CHECKED_HEAD = 2048


def fast_head(head: bytes) -> tuple:
    """(status, Content-Length, the head as forwarded without its last CRLF) for a response
    head the fast path takes (see _FAST_STATUS) and llhttp accepts, else (): remembered in
    _CHECKED. The body the fast path forwards is then only counted: llhttp checks nothing
    in a body framed by Content-Length, so no parser reads a response that takes it."""
    checked = _CHECKED.get(head)
    if checked is not None:  # (): remembered for the slow path (a chunked one, say)
        return checked
    status = _FAST_STATUS.get(head[:12]) if _REASON(head, 12) else None
    length = None if status is None or _SLOW_FIELD(head) is not None else _CONTENT_LENGTH(head)
    checked = (() if length is None or not _HeadCheck.accepts(head)
               else (status, int(length[1]), _DROPPED_LINES(b"", head)))
    if len(head) <= _CHECKED_HEAD:
        if len(_CHECKED) >= _CHECKED_SIZE:
            _CHECKED.clear()
        _CHECKED[head] = checked
    return checked


class _HeadCheck:
    """llhttp's verdict on a response head alone: its own parser, at a message's start
    (where a connection's parser is whenever a response head comes), so the verdict
    depends on the head's bytes only."""

    __slots__ = ("whole",)

    @classmethod
    def accepts(cls, head: bytes) -> bool:
        check = cls()
        check.whole = False
        try:
            HttpResponseParser(check).feed_data(head + b"\r\n\r\n")
        except HttpParserError:
            return False
        return check.whole

    def on_headers_complete(self) -> None:
        self.whole = True


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a Connection field besides close/keep-alive (RFC 9110 7.6.1)."""
    if value in PLAIN_CONNECTION:  # nearly always: no set to build
        return set()
    return {t.strip().lower() for t in value.split(b",") if t.strip()} - {b"close", b"keep-alive"}


class Rare:
    """The state of an exchange that only some requests need."""

    __slots__ = ("body", "body_size", "expect_continue", "xff", "skip", "extra", "resume_at",
                 "tries", "tried", "stale_retried", "connecting", "slow", "upstream_paused",
                 "early_socket")

    def __init__(self):
        self.body: list[bytes] = []  # request body received before the upstream was ready
        self.body_size = 0
        self.expect_continue = False
        self.xff: bytes | None = None  # the client's X-Forwarded-For, extended
        self.skip = REQUEST_SKIP  # request fields not forwarded
        self.extra: list[bytes] = []  # header lines plugins add
        self.resume_at = 0  # the plugin to run after a pending one
        self.tries = 0  # retries counted against the upstream's `retries`
        self.tried: list = []  # the nodes it was sent to or connected to, before this one
        self.stale_retried = False  # sent again once after a pooled connection died unread
        # the connect under way, or the place in a full pool's queue (upstream.PoolWait)
        self.connecting: asyncio.Future | None = None
        self.slow: SlowResponse | None = None
        self.upstream_paused = False  # the upstream's write buffer is full
        # while a body streams upstream: a duplicate of its socket (Exchange._early_answer)
        self.early_socket: socket.socket | None = None

    def drop_early_socket(self) -> None:
        """Close it (before the upstream connection: it would keep the socket open)."""
        if self.early_socket is not None:
            self.early_socket.close()
            self.early_socket = None


class Exchange:
    """One request and its answer.

    Every slot a request may read before it is written is set when the exchange is
    created; the others are written first by the step that needs them (`target` by
    `start`, `node` by `_connect`, `t_sent` by `_send`, `stall` by each state that has a
    time-out as it starts, `status`, `bytes_out`, `remaining` and `t_head` by a response
    that takes more than one read; the one-read response and the gateway's own answers
    hand theirs to `_finish`). Slots, not class
    attributes as defaults: on CPython 3.11 reading an attribute that falls through to
    the class is a generic look-up, several hundred instructions each time
    (bench/instructions.py)."""

    __slots__ = (
        # the request, as parsed and as it goes upstream
        "client", "method", "url", "headers", "fields", "host", "http11", "keep_alive",
        "target", "framing", "req_done", "route", "node", "consumer", "rare",
        # its progress
        "state", "stall", "conn", "remaining", "response", "status", "bytes_out",
        # timing, for the metrics: head parsed, request sent upstream, response head back
        "t0", "t_sent", "t_head",
    )

    def __init__(self, client, method: bytes, url: bytes, headers: list, fields: dict | None,
                 host: bytes | None, t0: float):
        self.client = client
        self.method = method
        self.url = url  # as the client sent it; `target` is what goes upstream
        # (lower-case name, value) as received; `fields` the same as a dict, without Host
        # and fields.READ_BY_GATEWAY, when every name is there once and each field left is
        # forwarded as it is (else None: the fields are filtered through REQUEST_SKIP when
        # sent)
        self.headers = headers
        self.fields = fields
        self.host = host  # the Host field as received; then the Host to forward
        self.t0 = t0
        # What a plain request (ClientConnection.on_headers_complete) is; any other has
        # these set by the connection as it reads the fields.
        self.http11 = True
        self.keep_alive = True  # the client's wish; then the decision (keeps_open)
        self.req_done = True  # the whole request has been read
        # the body's framing header as fastgw decided it (never copied): b"", a
        # content-length line, or CHUNKED_FRAMING (the body is then re-chunked as it goes)
        self.framing = b""
        self.route = None
        self.consumer = None  # an identity a plugin set: .username, .head
        self.rare: Rare | None = None
        self.state = QUEUED
        self.conn = None  # the upstream connection it holds
        self.response: Response | None = None  # the gateway's own answer, if any

    def _rare(self) -> Rare:
        rare = self.rare
        if rare is None:
            rare = self.rare = Rare()
        return rare

    # ------------------------------------------------------------ for plugins

    def drop_header(self, names: frozenset[bytes]) -> None:
        """Do not forward the request headers `names` (lower-case). The usual result, the
        fields fastgw writes plus one plugin's, is built once and kept."""
        self.fields = None  # filtered when sent
        rare = self._rare()
        if rare.skip is REQUEST_SKIP:
            skip = _SKIP_ALSO.get(names)
            if skip is None:
                skip = _SKIP_ALSO[names] = REQUEST_SKIP | names
            rare.skip = skip
        else:
            rare.skip = rare.skip | names

    def edit_headers(self) -> list:
        """`headers`, for a plugin to change what is forwarded (delete or replace entries)."""
        self.fields = None  # forwarded from `headers`, filtered, from now on
        return self.headers

    def add_header(self, line: bytes) -> None:
        """Send the header line `line` ("name: value\\r\\n", built once) upstream."""
        self._rare().extra.append(line)

    def refuse(self, response: Response) -> None:
        """Answer with `response` (when this exchange's turn comes) and close after it."""
        self.response = response
        self.keep_alive = False

    def resume(self, answer: Response | None) -> None:
        """A pending plugin is done: None goes on with the next plugin, a Response answers."""
        if self.state != PENDING_STATE:
            return  # the client went away meanwhile
        try:
            if answer is not None:
                self.answer(answer)
            else:
                self._run_plugins(self.route.plugins[self.rare.resume_at:])
        except Fault as fault:
            self.fail(fault.response)
        except Exception:
            log.exception("plugin failed while resuming %s %s", self.method.decode("latin-1"),
                          self.logged_path())
            self.fail(responses.INTERNAL_ERROR, retry=False)

    def logged_path(self) -> str:
        """The path for a log line: never the query, which may carry a credential."""
        return self.url.partition(b"?")[0][:200].decode("latin-1")

    # ------------------------------------------------------------ request side (client)

    def request_body(self, chunk: bytes) -> None:
        state = self.state
        if state == SENDING or state == RESPONDING:
            if self.framing is CHUNKED_FRAMING:
                self.conn.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                self.conn.transport.write(chunk)
            return
        if self.response is not None or state == DONE:
            return  # answered already; the body is not needed
        rare = self._rare()
        rare.body.append(chunk)
        rare.body_size += len(chunk)
        if rare.body_size > BODY_BUFFER_LIMIT:
            self.client.pause_reading(self.client.BODY_BUFFER)

    def request_complete(self) -> None:
        """The rest of the request was read (`req_done`) while under way upstream."""
        state = self.state
        if state == SENDING or state == RESPONDING:
            if self.framing is CHUNKED_FRAMING:
                self.conn.transport.write(CHUNK_END)
            if state == SENDING:
                self.stall = 0  # the read time-out starts

    # ------------------------------------------------------------ starting

    def start(self) -> None:
        """This exchange's turn on the client connection has come: route it, run its
        plugins, send it upstream. A Fault or an exception raised here is answered by
        the caller (ClientConnection._next)."""
        if self.response is not None:  # refused while its head was parsed
            self.answer(self.response)
            return
        url = self.url
        path = url.partition(b"?")[0] if _QUESTION_MARK in url else url
        snapshot = self.client.gateway.snapshot
        route, target, self.host = (snapshot.routes.get((self.host, path, self.method))
                                    or snapshot.resolve(self.host, path, self.method,
                                                        self.http11))
        if route is None:
            self.answer(target)  # a Response: 404
            return
        self.route = route
        self.target = target if path is url else target + url[len(path):]
        if route.plugins:
            self._run_plugins(route.plugins)
        else:
            self._connect()

    def _run_plugins(self, plugins: tuple) -> None:
        """The route's `plugins` (or those after a pending one), in order."""
        for plugin in plugins:
            answer = plugin.access(self)
            if answer is not None:
                if answer is PENDING:
                    self.state = PENDING_STATE
                    self._rare().resume_at = self.route.plugins.index(plugin) + 1
                else:
                    self.answer(answer)
                return
        self._connect()

    def _connect(self, node=None) -> None:
        """Send on `node` (a retry's), else on the node the balancer picks."""
        upstream = self.route.upstream
        node = self.node = node or upstream.single or upstream.pick()
        if self.rare is not None and self.rare.expect_continue:
            self.rare.expect_continue = False  # once, even if retried
            if not self.req_done:
                self.client.transport.write(responses.CONTINUE)
        idle = node.pool.idle  # open connections only, the most recently used last
        if idle:
            self._send(idle.pop())
            return
        pool = node.pool
        rare = self._rare()
        self.state = CONNECTING
        if pool.has_room():
            self._open()
            return
        # the node is at max_connections: the pool calls pool_ready or pool_timeout;
        # `connecting` is this exchange's place in its queue (cancelled like a connect)
        # the loop clock, not the tick's (up to 0.1 s old): the wait is never cut short
        rare.connecting = pool.wait(self, self.client.loop.time() + upstream.connect_timeout)

    def _open(self) -> None:
        self.stall = 0
        task = self.rare.connecting = self.node.pool.connect(self.client.loop)
        task.add_done_callback(self._connected)

    def pool_ready(self, conn) -> None:
        """From the pool whose queue this exchange waited in: `conn` to use, or None:
        open a connection."""
        self.rare.connecting = None
        try:
            if conn is not None:
                self._send(conn)
            else:
                self._open()
        except Exception:
            log.exception("sending a request upstream failed")
            self.fail(responses.INTERNAL_ERROR, retry=False)

    def pool_timeout(self) -> None:
        """From the pool: its node stayed full for the whole connect time-out."""
        self.rare.connecting = None
        self.fail(responses.SERVICE_UNAVAILABLE)

    def _connected(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return  # timed out or abandoned; whoever cancelled has answered
        self.rare.connecting = None
        exc = task.exception()
        if exc is not None:
            if self.state == CONNECTING:
                self.fail(responses.BAD_GATEWAY)
            return
        _, conn = task.result()
        if self.state != CONNECTING:  # the client left meanwhile: keep the fresh connection
            conn.requests = 0
            self.node.pool.release(conn, True, self.client.gateway.now)
            return
        try:
            self._send(conn)
        except Exception:
            log.exception("sending a request upstream failed")
            self.fail(responses.INTERNAL_ERROR, retry=False)

    def _send(self, conn) -> None:
        """Write the request head (and any body received so far) on `conn`."""
        self.conn = conn
        conn.exchange = self
        conn.requests += 1
        self.state = SENDING
        self.stall = 0  # the read time-out starts when the request is whole (timeout)
        client = self.client
        self.t_sent = client.loop.time()
        fields = self.fields
        transport = conn.transport
        if fields is not None and self.rare is None:  # nearly always: joined in C
            node = self.node
            consumer = self.consumer
            transport.write(b"".join((
                self.method, b" ", self.target, b" HTTP/1.1\r\nhost: ",
                node.fixed_host or self.host or node.host_header, b"\r\n",
                *map(_FIELD_LINE, fields.items()), client.forwarded, self.host, b"\r\n",
                b"" if consumer is None else consumer.head, node.pool.head_end)))
        else:
            self._send_filtered(transport)
        if client.write_paused:
            transport.pause_reading()

    def _send_filtered(self, transport) -> None:
        """The request head from `headers` without the fields fastgw writes itself or a
        plugin dropped, with what plugins add; then any body buffered meanwhile."""
        client = self.client
        node = self.node
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\nhost: ",
                 node.fixed_host or self.host or node.host_header, b"\r\n"]
        rare = self.rare
        fields = self.fields
        if fields is not None:  # each name once, none that fastgw writes (_usual_fields)
            parts += map(_FIELD_LINE, fields.items())
        else:
            skip = REQUEST_SKIP if rare is None else rare.skip
            for name, value in self.headers:
                if name not in skip:
                    parts += (name, b": ", value, b"\r\n")
        if rare is None or rare.xff is None:
            parts += (client.forwarded_no_xff, client.ip, b"\r\n")
        else:
            parts += (client.forwarded_no_xff, rare.xff, b", ", client.ip, b"\r\n")
        if self.host:  # none from an HTTP/1.0 client that sent no Host
            parts += (b"x-forwarded-host: ", self.host, b"\r\n")
        parts.append(self.framing)
        consumer = self.consumer
        if consumer is not None:
            parts.append(consumer.head)
        if rare is not None:
            parts += rare.extra
        parts.append(node.pool.head_end)
        if rare is not None and rare.body:
            chunks = rare.body
            if self.framing is CHUNKED_FRAMING:
                chunks = [p for c in chunks for p in (b"%x\r\n" % len(c), c, b"\r\n")]
            self.conn.writelines([b"".join(parts), *chunks])
            rare.body = []
            client.resume_reading(client.BODY_BUFFER)
        else:
            transport.write(b"".join(parts))
        if self.req_done:
            if self.framing is CHUNKED_FRAMING:
                transport.write(CHUNK_END)
        elif node.pool.ssl is None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self._rare().early_socket = sock.dup()

    # ------------------------------------------------------------ upstream side

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the upstream: the answer's head (fast or slow path), then its body."""
        rare = self.rare
        if self.state is not SENDING or rare is not None and rare.slow is not None:
            self._response_rest(data)
            return
        # (partition: one pass and no argument parsing; find and two slices cost 1,300
        # instructions more)
        head, end, body = data.partition(b"\r\n\r\n")
        if (not end or self.method == b"HEAD"
                or not (checked := _CHECKED.get(head) or fast_head(head))):
            self._slow_response(data)
            return
        status, length, forwarded = checked
        sent = len(data)
        remaining = length - len(body)
        if remaining < 0:  # bytes after the response: nobody asked for them
            body = body[:length]
            sent += remaining
            remaining = 0
            self.conn.spoil()
        client = self.client
        keep = client.keeps_open(self)
        client.writelines((
            forwarded, (_END_KEEP if self.http11 else _END_KEEP_10) if keep else _END_CLOSE,
            body))
        now = client.loop.time()
        if not remaining:  # nearly always: the whole response in one read
            self._finish(keep, status, sent, now, now - self.t_sent)
            return
        self.state = RESPONDING
        self.stall = 0
        self.keep_alive = keep
        self.status = status
        self.bytes_out = sent
        self.remaining = remaining
        self.t_head = now

    def _response_rest(self, data: bytes) -> None:
        """More of a body framed by Content-Length, as it comes; or the slow path's."""
        rare = self.rare
        if rare is not None and rare.slow is not None:
            rare.slow.feed(data)
            return
        self.stall = 0
        remaining = self.remaining
        n = len(data)
        if n > remaining:  # bytes after the response: nobody asked for them
            data = data[:remaining]
            n = remaining
            self.conn.spoil()
        self.client.transport.write(data)
        self.bytes_out += n
        self.remaining = remaining = remaining - n
        if not remaining:
            self._finish(self.keep_alive, self.status, self.bytes_out, self.client.loop.time(),
                         self.t_head - self.t_sent)

    def _slow_response(self, data: bytes) -> None:
        slow = self._rare().slow = SlowResponse(self)
        slow.feed(data)

    def upstream_lost(self, clean: bool) -> None:
        """The upstream connection closed under this exchange (`clean`: a FIN, not a reset
        or an error, which never ends a body)."""
        rare = self.rare
        if rare is not None and rare.early_socket is not None:
            self._early_answer(rare)
            if self.state == DONE:
                return
        if clean and rare is not None and rare.slow is not None and rare.slow.until_close:
            self.conn = None
            rare.slow.closed()
        elif self.state != DONE:  # (in SENDING, no byte of the answer came: else `slow`)
            self.fail(responses.BAD_GATEWAY,
                      lost=self.state == SENDING and (rare is None or rare.slow is None))

    def _early_answer(self, rare: Rare) -> None:
        """The upstream connection was lost while the request body streamed: most often the
        upstream answered early (413, 401) and closed without reading the rest, and writing
        more of the body then failed on its reset. libuv reports that before reading what
        came first, so it is read here from the socket's duplicate (the kernel keeps what
        arrived before a reset) and relayed as the answer."""
        early, rare.early_socket = rare.early_socket, None
        received = []
        try:
            while len(received) < 16:  # what the socket holds; enough for an answer's head
                data = early.recv(65536)
                if not data:
                    break
                received.append(data)
        except OSError:  # nothing more (EAGAIN), or the reset itself
            pass
        early.close()
        if received and self.conn is not None:
            self.conn.spoil()
            try:  # as UpstreamConnection.data_received does: a fault is a logged 500
                for data in received:
                    if self.state != DONE:
                        self.upstream_data(data)
            except Exception:
                log.exception("relaying a response failed")
                self.fail(responses.INTERNAL_ERROR, retry=False)

    def upstream_write_paused(self) -> None:
        self.client.pause_reading(self.client.UPSTREAM)
        self._rare().upstream_paused = True
        self.stall = 0  # the send time-out starts

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading(self.client.UPSTREAM)
        self._rare().upstream_paused = False
        self.stall = 0

    def timeout(self) -> float:
        """Seconds this exchange may go without progress in its state; Gateway.tick
        counts them in `stall`, which every step of progress sets back to 0."""
        state = self.state
        rare = self.rare
        if state == SENDING or state == RESPONDING:
            upstream = self.route.upstream
            if rare is not None and rare.upstream_paused:
                return upstream.send_timeout
            if self.client.write_paused:
                return _NEVER  # the upstream is not read while the client reads nothing:
                # the client's time-out runs (ClientConnection.timeout)
            if state == RESPONDING or self.req_done:
                return upstream.read_timeout
        elif state == CONNECTING and type(rare.connecting) is not PoolWait:
            return self.route.upstream.connect_timeout  # a full pool times its queue out
        return _NEVER

    # ------------------------------------------------------------ endings

    def answer(self, response: Response) -> None:
        """The gateway answers this exchange itself, with `response`."""
        client = self.client
        keep = self.keep_alive = client.keeps_open(self)
        if self.method == b"HEAD":  # the head only (RFC 9110 9.3.2)
            data = response.head_keep_alive if keep else response.head_close
        else:
            data = response.keep_alive if keep else response.close
        if client.transport is not None:
            client.transport.write(data)
        self.response = response
        if response.reason is not None:
            client.gateway.stats.auth_failed(response.reason)
        self._finish(keep, response.status, len(data), client.loop.time(), None)

    def fail(self, response: Response, retry: bool = True, lost: bool = False) -> None:
        """A fault: answered with `response` if the client has had nothing of an answer
        yet (after a retry, when `retry` and the rules allow one), else the client
        connection is cut. `lost`: the upstream connection closed before a byte of the
        answer came."""
        state = self.state
        if state == DONE:
            return
        retry = (retry and (state == CONNECTING or state == SENDING)
                 and self.client.transport is not None and self._may_retry(state, lost))
        self._drop_upstream()
        if state == RESPONDING:
            self.client.abort()  # never a truncated response passed off as whole
            # (no upstream answer to time)
            self._finish(False, self.status, self.bytes_out, self.client.loop.time(), None)
            return
        if retry:
            tried = self.rare.tried
            tried.append(self.node)
            upstream = self.route.upstream
            self.state = CONNECTING
            self._connect(upstream.single or upstream.pick(tried))
            return
        self.answer(response)

    def _may_retry(self, state: str, lost: bool) -> bool:
        """Sent again only if nothing of it was sent upstream (SPEC: `retries` apply
        before any byte was), counted against the upstream's `retries`; or if it went on a
        pooled connection the upstream had closed meanwhile (it closes idle ones when it
        likes, and the close may cross the request), without a body (one streamed there
        is gone) and idempotent: then once whatever `retries` says, as nginx does for a
        cached connection, and again against `retries`. A request that reached a live
        upstream (a time-out, a bad answer) is never sent to another node as well."""
        rare = self._rare()
        if state == SENDING:  # the request reached the upstream: sent again only if the
            conn = self.conn  # pooled connection it went on had died meanwhile, unread
            if not (lost and conn is not None and conn.requests > 1 and self.req_done
                    and self.framing in NO_BODY_FRAMINGS and self.method in IDEMPOTENT):
                return False
            if not rare.stale_retried:
                rare.stale_retried = True
                return True
        if rare.tries >= self.route.upstream.retries:
            return False
        rare.tries += 1
        return True

    def on_timeout(self) -> None:
        """The deadline of the current state passed (connect, send or read time-out)."""
        self.fail(responses.GATEWAY_TIMEOUT)

    def abandon(self) -> None:
        """The client went away: nothing more is sent either way."""
        self._drop_upstream()
        self.state = DONE

    def _drop_upstream(self) -> None:
        rare = self.rare
        if rare is not None:
            rare.drop_early_socket()
            if rare.connecting is not None:
                rare.connecting.cancel()
                rare.connecting = None
            rare.slow = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.exchange = None
            conn.transport.abort()

    def _finish(self, keep: bool, status: int, sent: int, now: float,
                latency: float | None) -> None:
        """The one way an exchange ends: the upstream connection handed back (when the
        exchange on it ended cleanly) or closed, the metrics and the access log (`status`,
        `sent` bytes, seconds from the request sent upstream to the answer's head: None
        for the gateway's own answers), then the client connection goes on (`keep`) or
        closes."""
        self.state = DONE
        client = self.client
        conn = self.conn
        if self.rare is not None:
            self.rare.drop_early_socket()
        if conn is not None:
            self.conn = None
            if client.write_paused:  # it stopped reading for this client (pause_writing)
                conn.transport.resume_reading()
            self.node.pool.release(conn, self.req_done, now)
        if client.read_pauses:  # one may be for the upstream's full write buffer, done with
            client.resume_reading(client.UPSTREAM)
        route = self.route
        (client.gateway.stats.unrouted if route is None else route.stats).append(
            (status, now - self.t0, latency))
        if client.access_log is not None:
            client.access_log.record(self, client.ip, status, sent, now, latency)
        client.exchange_done(keep)


class SlowResponse:
    """A response whose head must be rebuilt field by field (1xx first, HEAD, 204/304,
    chunked or read-until-close framing, HTTP/1.0, Connection options), or whose head
    did not come in one read: parsed with a parser of its own, with every callback."""

    __slots__ = ("ex", "parser", "headers", "out", "chunked", "until_close", "close", "done",
                 "head_sent")

    def __init__(self, ex: Exchange):
        self.ex = ex
        self.parser = HttpResponseParser(self)
        self.headers: list = []
        self.out: list[bytes] = []  # bytes for the client from one upstream read, sent at once
        self.chunked = False  # re-chunked towards the client
        self.until_close = False  # the upstream delimits the body by closing
        self.close = False  # the upstream connection cannot be reused
        self.done = False
        self.head_sent = False
        ex.bytes_out = 0

    def feed(self, data: bytes) -> None:
        ex = self.ex
        ex.stall = 0
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            if not self.done:
                ex.fail(responses.BAD_GATEWAY)
                return
            self.close = True  # garbage after a whole response: finish, do not reuse
        out = self.out
        if out:  # one write (one gather syscall) for the head and body parsed just now
            ex.client.writelines(out)
            ex.bytes_out += sum(map(len, out))
            out.clear()
        if self.done:
            self._end()

    def closed(self) -> None:
        """Read-until-close: the upstream's close is the end of the body."""
        if self.chunked:
            self.ex.client.transport.write(CHUNK_END)
        self.done = True
        self._end()

    def _end(self) -> None:
        ex = self.ex
        ex.rare.slow = None
        if self.close and ex.conn is not None:
            ex.conn.spoil()
        ex._finish(ex.keep_alive, ex.status, ex.bytes_out, ex.client.loop.time(),
                   ex.t_head - ex.t_sent)

    # Parser callbacks, in the order httptools calls them

    def on_message_begin(self) -> None:
        if self.done:  # a second response nobody asked for
            self.close = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        ex = self.ex
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            self._interim_response(status)
            return
        parts = [status_line(status), SERVER]
        length = -1
        tokens: set[bytes] = set()
        upstream_chunked = False
        has_body = not (ex.method == b"HEAD" or status == 204 or status == 304)
        for name, value in self.headers:
            lname = name.lower()
            if lname in RESPONSE_SKIP:
                if lname == b"content-length":
                    length = int(value)  # llhttp has checked it is digits, and only one
                elif lname == b"transfer-encoding":
                    # llhttp takes codings before chunked (and reads a body that does not
                    # end in chunked until the close); the body is re-framed here, so any
                    # other coding would reach the client dropped: a fault, as nginx has it
                    # (an answer without a body only says what a GET's would be framed by)
                    if has_body and (upstream_chunked
                                     or value.strip(b" \t").lower() != b"chunked"):
                        raise HttpParserError("a transfer coding other than chunked")
                    upstream_chunked = True
                elif lname == b"connection":
                    tokens |= connection_tokens(value)
                continue
            parts += (name, b": ", value, b"\r\n")
        ex.status = status  # a head fastgw can forward: the answer starts
        ex.state = RESPONDING
        ex.t_head = ex.client.loop.time()
        self.head_sent = True
        if tokens:
            parts = _without(parts, tokens)
        self.headers = []
        if not has_body:
            if length >= 0 and status != 204:  # never on a 204 (RFC 9110 8.6)
                parts.append(b"content-length: %d\r\n" % length)
            self.done = True  # llhttp waits for a HEAD body that never comes
        elif length >= 0:
            parts.append(b"content-length: %d\r\n" % length)
        elif ex.http11:
            self.chunked = True
            parts.append(CHUNKED_FRAMING)
        else:
            ex.keep_alive = False  # an HTTP/1.0 client reads this body until the close
        if has_body and length < 0 and not upstream_chunked:
            self.until_close = self.close = True
        if not parser.should_keep_alive():  # asked here: llhttp resets it after the body
            self.close = True
        keep = ex.keep_alive = ex.keep_alive and ex.client.keeps_open(ex)
        if not keep:
            parts.append(b"connection: close\r\n\r\n")
        elif not ex.http11:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))

    def on_body(self, chunk: bytes) -> None:
        if self.done:
            return
        if self.chunked:
            self.out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self.out.append(chunk)

    def on_message_complete(self) -> None:
        if not self.head_sent:  # the end of a 1xx
            self.headers = []
            return
        if self.done:
            return
        if self.chunked:
            self.out.append(CHUNK_END)
        self.done = True

    def _interim_response(self, status: int) -> None:
        """1xx: forwarded to HTTP/1.1 clients (103 Early Hints, ...); the final one follows."""
        if status == 101:
            raise HttpParserError("101 Switching Protocols without an Upgrade request")
        if self.ex.http11:
            parts = [status_line(status)]
            for name, value in self.headers:
                if name.lower() not in HOP_BY_HOP:
                    parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            self.out.append(b"".join(parts))


def _without(parts: list, tokens: set[bytes]) -> list:
    """Drop the header lines named in the Connection header (RFC 9110 7.6.1)."""
    kept = parts[:2]
    for i in range(2, len(parts), 4):
        if parts[i].lower() not in tokens:
            kept += parts[i:i + 4]
    return kept
