"""One request's journey upstream and back: `Exchange`.

An exchange is created when a request's head has been parsed, answered by the
gateway itself (`response` set: 404, 401, 413, ...) or relayed. A relayed
exchange goes through these states; every fault is answered in the state it
hits, in one place (`_fail`):

    QUEUED -> CONNECTING -> SENDING -> RESPONDING -> DONE
              no byte sent   request head   response head
                             sent           sent to the client

Request bodies flow to the upstream as they arrive and responses flow to the
client as they arrive; when one side's write buffer is full the other side stops
reading (`upstream_write_paused`, `ClientConnection.pause_writing`).
The exchange is the upstream response parser's protocol object, so the parser
and its callbacks live and die with one response.
"""

from __future__ import annotations

import asyncio

from httptools import HttpParserError, HttpResponseParser

from . import plugins, responses
from .responses import SERVER, Response, status_line
from .spelling import header_names

QUEUED, CONNECTING, SENDING, RESPONDING, DONE = range(5)

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authenticate",
                        b"proxy-authorization"))
# Request fields the gateway writes itself (framing, Host, forwarding, and what plugins set),
# so a client's copy, under any spelling, never reaches the upstream.
REQUEST_SKIP = header_names(HOP_BY_HOP | plugins.UPSTREAM_HEADERS | {
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-real-ip"})
RESPONSE_SKIP = HOP_BY_HOP | {b"server", b"content-length"}
# Methods whose request may be sent again on another connection (RFC 9110 9.2.2).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

# How the response body is framed towards the client.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)

BODY_BUFFER_LIMIT = 64 * 1024  # request body held while connecting; reading pauses above it
CHUNK_END = b"0\r\n\r\n"
CHUNKED_FRAMING = b"transfer-encoding: chunked\r\n"
NO_BODY_FRAMINGS = (b"", b"content-length: 0\r\n")  # `framing` of a request without a body
_SKIP_ALSO: dict[frozenset[bytes], frozenset[bytes]] = {}  # names -> REQUEST_SKIP | names


_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close"))


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a Connection field besides close/keep-alive (RFC 9110 7.6.1)."""
    if value in _PLAIN_CONNECTION:  # nearly always: no set to build
        return set()
    return {t.strip().lower() for t in value.split(b",") if t.strip()} - {b"close", b"keep-alive"}


class Exchange:
    __slots__ = (
        # the request, as parsed and as it will be sent
        "client", "method", "url", "target", "headers", "http11", "keep_alive", "host", "skip",
        "xff", "framing", "expect_continue", "route", "response", "consumer",
        # request body
        "req_done", "body", "body_size",
        # upstream side
        "state", "node", "conn", "parser", "connecting", "tries", "reused", "deadline",
        # response
        "resp_headers", "resp_mode", "until_close", "resp_close", "resp_done", "status", "out",
        # timing, for the metrics: head parsed, request sent upstream, response head back
        "t0", "t_sent", "t_head", "bytes_out",
    )

    def __init__(self, client, method: bytes, target: bytes, headers: list, http11: bool,
                 keep_alive: bool):
        self.client = client
        self.method = method
        self.url = target  # as the client sent it
        self.target = target  # as it goes upstream
        self.headers = headers
        self.http11 = http11
        self.keep_alive = keep_alive
        self.host = b""
        self.skip = REQUEST_SKIP
        self.xff = None
        # the body's framing header as fastgw decided it (never copied): b"", a
        # content-length line, or CHUNKED_FRAMING (the body is then re-chunked as it goes)
        self.framing = b""
        self.expect_continue = False
        self.route = None
        self.response: Response | None = None
        self.consumer = None  # who a plugin found the client to be: .username, .head
        self.req_done = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.state = QUEUED
        self.node = None
        self.conn = None
        self.parser = None
        self.connecting = None
        self.tries = 0
        self.reused = False
        self.deadline = float("inf")
        self.resp_headers: list = []
        self.resp_mode = NO_BODY
        self.until_close = False  # the upstream delimits the body by closing
        self.resp_close = False  # the upstream connection cannot be reused
        self.resp_done = False
        self.status = 0
        self.out: list[bytes] = []  # bytes for the client from one upstream read, sent at once
        self.t0 = client.loop.time()  # the head is parsed
        self.t_sent = self.t_head = 0.0
        self.bytes_out = 0

    # ------------------------------------------------------------ for plugins

    def drop_header(self, names: frozenset[bytes]) -> None:
        """Do not forward the request headers `names` (lower-case). The usual result, the
        fields fastgw writes plus one plugin's, is built once and kept."""
        if self.skip is REQUEST_SKIP:
            skip = _SKIP_ALSO.get(names)
            if skip is None:
                skip = _SKIP_ALSO[names] = REQUEST_SKIP | names
            self.skip = skip
        else:
            self.skip = self.skip | names

    def refuse(self, response: Response) -> None:
        """Answer with `response` and close the connection after it."""
        self.response = response
        self.keep_alive = False

    # ------------------------------------------------------------ request side (client)

    def request_body(self, chunk: bytes) -> None:
        if self.state == SENDING or self.state == RESPONDING:
            if self.conn is not None:
                if self.framing is CHUNKED_FRAMING:
                    self.conn.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    self.conn.transport.write(chunk)
            return
        if self.response is not None or self.state == DONE:
            return  # answered already; the body is not needed
        self.body.append(chunk)
        self.body_size += len(chunk)
        if self.body_size > BODY_BUFFER_LIMIT:
            self.client.pause_reading(self.client.BODY_BUFFER)

    def request_complete(self) -> None:
        self.req_done = True
        if self.state == SENDING or self.state == RESPONDING:
            if self.framing is CHUNKED_FRAMING and self.conn is not None:
                self.conn.transport.write(CHUNK_END)
            if self.state == SENDING:
                self.deadline = self.client.gateway.now + self.route.upstream.read_timeout

    # ------------------------------------------------------------ starting

    def start(self) -> None:
        """This exchange's turn on the client connection has come."""
        if self.response is not None:
            self.client.answer(self.response, self.keep_alive and self.req_done)
            self.state = DONE
            return
        if self.expect_continue and not self.req_done and self.http11:
            self.client.transport.write(responses.CONTINUE)
        self._connect()

    def _connect(self) -> None:
        node = self.node = self.route.upstream.pick()
        conn = node.pool.acquire()
        if conn is not None:
            self.reused = True
            self._attach(conn)
            return
        self.reused = False
        self.state = CONNECTING
        self.deadline = self.client.gateway.now + self.route.upstream.connect_timeout
        task = self.connecting = asyncio.ensure_future(node.pool.connect(self.client.loop))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return  # timed out or abandoned; whoever cancelled has answered
        self.connecting = None
        exc = task.exception()
        if exc is not None:
            if self.state == CONNECTING:
                self._fail(responses.BAD_GATEWAY)
            return
        _, conn = task.result()
        if self.state != CONNECTING:  # the client left meanwhile: keep the fresh connection
            conn.requests = 0
            self.node.pool.release(conn, True, self.client.gateway.now)
            return
        self._attach(conn)

    def _attach(self, conn) -> None:
        self.conn = conn
        conn.exchange = self
        conn.requests += 1
        self.parser = HttpResponseParser(self)
        self.state = SENDING
        self.t_sent = self.client.loop.time()
        head = self._upstream_head()
        if self.body:
            chunks = self.body
            if self.framing is CHUNKED_FRAMING:
                chunks = [p for c in chunks for p in (b"%x\r\n" % len(c), c, b"\r\n")]
            conn.transport.writelines([head, *chunks])
            self.body = []
            self.client.resume_reading(self.client.BODY_BUFFER)
        else:
            conn.transport.write(head)
        if self.req_done:
            if self.framing is CHUNKED_FRAMING:
                conn.transport.write(CHUNK_END)
            self.deadline = self.client.gateway.now + self.route.upstream.read_timeout
        else:
            self.deadline = float("inf")
        if self.client.write_paused:
            conn.transport.pause_reading()

    def _upstream_head(self) -> bytes:
        upstream = self.route.upstream
        client = self.client
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\nhost: ",
                 upstream.host_header(self.node, self.host), b"\r\n"]
        skip = self.skip
        for name, value in self.headers:
            if name not in skip:
                parts += (name, b": ", value, b"\r\n")
        parts.append(client.forwarded)
        parts += (b"x-forwarded-for: ", client.ip if self.xff is None else
                  self.xff + b", " + client.ip, b"\r\nx-forwarded-host: ", self.host, b"\r\n")
        parts.append(self.framing)
        if self.node.pool.size == 0:
            parts.append(b"connection: close\r\n")
        if self.consumer is not None:
            parts.append(self.consumer.head)
        parts.append(b"\r\n")
        return b"".join(parts)

    # ------------------------------------------------------------ upstream side

    def upstream_data(self, data: bytes) -> None:
        self.deadline = self.client.gateway.now + self.route.upstream.read_timeout
        out = self.out
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            if not self.resp_done:
                self._fail(responses.BAD_GATEWAY)
                return
            self.resp_close = True  # garbage after a whole response: finish, do not reuse
        if out:  # one write (one gather syscall) for the head and body parsed just now
            self.client.transport.writelines(out)
            self.bytes_out += sum(map(len, out))
            out.clear()
        if self.resp_done:
            self._finish()

    def upstream_lost(self, exc) -> None:
        """The upstream connection closed under this exchange."""
        self.conn = None
        if self.state == RESPONDING and self.until_close:
            if self.resp_mode == CHUNKED:
                self.client.transport.write(CHUNK_END)
            self.resp_done = True  # read-until-close: the close is the end of the body
            self._finish()
        elif self.state != DONE:
            self._fail(responses.BAD_GATEWAY)

    def upstream_write_paused(self) -> None:
        self.client.pause_reading(self.client.UPSTREAM)
        self.deadline = self.client.gateway.now + self.route.upstream.send_timeout

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading(self.client.UPSTREAM)
        if self.state == SENDING and not self.req_done:
            self.deadline = float("inf")

    # Parser callbacks (upstream response), in the order httptools calls them

    def on_message_begin(self) -> None:
        if self.resp_done:  # a second response nobody asked for
            self.resp_close = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.resp_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.resp_done:
            return
        parser = self.parser
        status = self.status = parser.get_status_code()
        if status < 200:
            self._interim_response(status)
            return
        self.state = RESPONDING
        self.t_head = self.client.loop.time()
        parts = [status_line(status), SERVER]
        length = -1
        tokens = None
        upstream_chunked = False
        for name, value in self.resp_headers:
            lname = name.lower()
            if lname in RESPONSE_SKIP:
                if lname == b"content-length":
                    length = int(value)  # llhttp has checked it is digits, and only one
                elif lname == b"transfer-encoding":
                    upstream_chunked = True  # llhttp refuses anything but chunked last
                elif lname == b"connection":
                    tokens = connection_tokens(value)
                continue
            parts += (name, b": ", value, b"\r\n")
        if tokens:
            parts = self._without(parts, tokens)
        self.resp_headers = None
        client_keeps = self.keep_alive and self.req_done
        if self.method == b"HEAD" or status == 204 or status == 304:
            mode = NO_BODY
            if length >= 0:
                parts.append(b"content-length: %d\r\n" % length)
            self.resp_done = True  # llhttp waits for a HEAD body that never comes
        elif length >= 0:
            mode = LENGTH
            parts.append(b"content-length: %d\r\n" % length)
        elif self.http11:
            mode = CHUNKED
            parts.append(CHUNKED_FRAMING)
        else:
            mode = UNTIL_CLOSE
            client_keeps = False
        if mode != NO_BODY and length < 0 and not upstream_chunked:
            self.until_close = self.resp_close = True
        if not parser.should_keep_alive():  # asked here: llhttp resets it after the body
            self.resp_close = True
        self.resp_mode = mode
        if not client_keeps:
            self.keep_alive = False
            parts.append(b"connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))

    def on_body(self, chunk: bytes) -> None:
        if self.resp_done:
            return
        if self.resp_mode == CHUNKED:
            self.out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self.out.append(chunk)

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.status = 0
            self.resp_headers = []
            return
        if self.resp_done:
            return
        if self.resp_mode == CHUNKED:
            self.out.append(CHUNK_END)
        self.resp_done = True

    # ------------------------------------------------------------ endings

    def _finish(self) -> None:
        """The response went out whole: hand the connection back or close it."""
        self.state = DONE
        conn = self.conn
        if conn is not None:
            self.conn = None
            reusable = self.req_done and not self.resp_close
            self.node.pool.release(conn, reusable, self.client.gateway.now)
        self.parser = None
        self.client.exchange_done(self.keep_alive and self.req_done)

    def _fail(self, response: Response) -> None:
        """A fault on the upstream side; answered according to how far we got."""
        state = self.state
        self._drop_upstream()
        if state == RESPONDING:
            self.state = DONE
            self.client.abort()  # never a truncated response passed off as whole
            return
        retry = self.tries < self.route.upstream.retries and (
            # sent again only if nothing of it can have reached the upstream but its head:
            # a body streamed there is gone, and its length alone would frame the next request
            state == CONNECTING or (self.reused and self.req_done and self.framing in
                                    NO_BODY_FRAMINGS and self.method in IDEMPOTENT))
        if retry and self.client.transport is not None:
            self.tries += 1
            self.resp_headers = []
            self.status = 0
            self._connect()
            return
        self.state = DONE
        self.client.answer(response, self.keep_alive and self.req_done)

    def on_timeout(self) -> None:
        """The deadline of the current state passed (connect, send or read timeout)."""
        self._fail(responses.GATEWAY_TIMEOUT)

    def _drop_upstream(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.exchange = None
            conn.transport.abort()
        self.parser = None
        self.deadline = float("inf")

    def abandon(self) -> None:
        """The client went away: nothing more is sent either way."""
        self._drop_upstream()
        self.state = DONE

    # ------------------------------------------------------------ rare paths

    def _interim_response(self, status: int) -> None:
        """1xx: forwarded to HTTP/1.1 clients (103 Early Hints, ...); the final one follows."""
        if status == 101:
            raise HttpParserError("101 Switching Protocols without an Upgrade request")
        if self.http11:
            parts = [status_line(status)]
            for name, value in self.resp_headers:
                if name.lower() not in HOP_BY_HOP:
                    parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            self.out.append(b"".join(parts))

    @staticmethod
    def _without(parts: list, tokens: set[bytes]) -> list:
        """Drop the header lines named in the Connection header (RFC 9110 7.6.1)."""
        kept = parts[:2]
        for i in range(2, len(parts), 4):
            if parts[i].lower() not in tokens:
                kept += parts[i:i + 4]
        return kept
