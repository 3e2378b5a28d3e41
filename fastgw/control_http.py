"""A small HTTP/1.1 server for the master's own endpoints (admin API, metrics).

Requests are answered strictly in the order they came, one at a time per connection, by an
async handler: `handler(method, target, headers, body) -> (status, content_type, body
bytes)`, or with a fourth item: more header lines, as bytes ending in CRLF (the console's
security headers). Pipelined requests wait in `queue` (PIPELINE_DEPTH of them at most
before reading pauses); one with "Connection: close" is the last one read.

`admit(method, target, headers)`, if given, sees each request as soon as its head is
parsed and may answer it at once (the admin API's key check): its body, if any, is then
read and dropped, never held. A request admitted with "Expect: 100-continue" gets its
`100 Continue` then, when no answer is owed before it.

Time-outs, as on the proxy port: a head must be whole within FASTGW_HEADER_TIMEOUT of its
first byte, a body may go that long between reads (both answered 408), and an idle
connection is closed after FASTGW_KEEPALIVE_TIMEOUT. A head over FASTGW_MAX_HEADER_BYTES
is answered 431.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import httptools

from .responses import SERVER, status_line

log = logging.getLogger("fastgw")

MAX_BODY = 16 << 20
PIPELINE_DEPTH = 16  # requests read ahead of the one being answered
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_JSON = b"application/json"
BAD_REQUEST = (400, _JSON, b'{"error_msg": "bad request"}')
TIMED_OUT = (408, _JSON, b'{"error_msg": "request timed out"}')
TOO_LARGE = (413, _JSON, b'{"error_msg": "request body too large"}')
HEAD_TOO_LARGE = (431, _JSON, b'{"error_msg": "request header fields too large"}')
NOT_IMPLEMENTED = (501, _JSON, b'{"error_msg": "not implemented"}')
ERROR = (500, _JSON, b'{"error_msg": "error"}')


class _Request:
    """One request read from the connection, waiting for its answer."""

    __slots__ = ("method", "target", "headers", "body", "keep_alive", "answer", "complete")

    def __init__(self, method: str, target: str, headers: dict, keep_alive: bool):
        self.method, self.target, self.headers = method, target, headers
        self.body: list[bytes] = []
        self.keep_alive = keep_alive
        self.answer: tuple | None = None  # an answer decided before the handler (admit, fault)
        self.complete = False  # the whole request has been read


class _Stop(Exception):
    """Raised in a parser callback to stop the parser (after the last request, or for
    `fault`)."""


class ControlProtocol(asyncio.Protocol):
    def __init__(self, handler, settings, admit=None, max_body: int = MAX_BODY):
        self.handler = handler
        self.admit = admit
        self.max_body = max_body
        self.header_timeout = settings.header_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.max_head = settings.max_header_bytes
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.queue: deque[_Request] = deque()
        self.current: _Request | None = None  # the request being read, once its head is
        self.answering: asyncio.Task | None = None
        self.reading = True  # False once nothing more is read (a close, a fault)
        self.paused = False
        self.in_head = False
        self.head_size = 0
        self.body_size = 0
        self.fault: tuple | None = None  # why a parser callback stopped the parser
        self.ended = False  # the last request was read ("Connection: close")
        self.timer: asyncio.TimerHandle | None = None
        self.url, self.headers = b"", {}

    def connection_made(self, transport):
        self.transport = transport
        self._arm(self.keepalive_timeout)

    def connection_lost(self, exc):
        self.transport = None
        self.reading = False
        self._disarm()

    def data_received(self, data):
        if not self.reading:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops right after the head of a request that switches protocols
            # (Upgrade, CONNECT): none is served here
            self.current = None
            request = self.queue[-1]
            request.answer = request.answer or NOT_IMPLEMENTED
            request.keep_alive = self.reading = False
        except httptools.HttpParserError:  # (which wraps _Stop)
            if not self.ended:
                self._refuse(self.fault or BAD_REQUEST)
        else:
            if self.current is not None and not self.in_head:
                self._arm(self.header_timeout)  # a body may go that long between reads
        if len(self.queue) > PIPELINE_DEPTH and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._kick()

    # Parser callbacks

    def on_message_begin(self):
        self.url, self.headers = b"", {}
        self.in_head = True
        self.head_size = 0
        self.body_size = 0
        if self.answering is None and not self.queue:
            self._arm(self.header_timeout)  # a head must be whole in this time

    def on_url(self, url):
        self.url += url
        self._count_head(len(url))

    def on_header(self, name, value):
        self.headers[name.lower()] = value
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.max_head:
            self.fault = HEAD_TOO_LARGE
            raise _Stop

    def on_headers_complete(self):
        self.in_head = False
        parser = self.parser
        request = self.current = _Request(parser.get_method().decode(),
                                          self.url.decode("latin-1"), self.headers,
                                          parser.should_keep_alive())
        self.queue.append(request)
        if self.admit is not None:
            request.answer = self.admit(request.method, request.target, request.headers)
        if (request.answer is None and parser.get_http_version() != "1.0"
                and self.headers.get(b"expect", b"").lower() == b"100-continue"
                and len(self.queue) == 1 and self.answering is None):
            self.transport.write(CONTINUE)

    def on_body(self, chunk):
        self.body_size += len(chunk)
        if self.body_size > self.max_body:
            self.fault = TOO_LARGE
            raise _Stop
        if self.current.answer is None:  # else answered already: the body is dropped
            self.current.body.append(chunk)

    def on_message_complete(self):
        request, self.current = self.current, None
        request.complete = True
        if not request.keep_alive:  # the last request read from this connection
            self.reading = False
            self.ended = True
            raise _Stop

    # Answering, in order

    def _refuse(self, answer: tuple) -> None:
        """Answer the request being read (or one that could not be) with `answer`, after
        those before it, and read nothing more."""
        self.reading = False
        request, self.current = self.current, None
        if request is None:  # bytes that are no request, or a head cut short
            request = _Request("", "", {}, False)
            self.queue.append(request)
        request.answer, request.keep_alive = answer, False

    def _kick(self) -> None:
        """Start answering when the oldest request can be answered and none is."""
        queue = self.queue
        if self.answering is None and queue and (queue[0].complete or queue[0].answer):
            self._disarm()  # no time-out while the handler answers
            self.answering = self.loop.create_task(self._answer_in_turn())
        elif self.answering is None and not queue and not self.reading:
            if self.transport is not None:
                self.transport.close()

    async def _answer_in_turn(self) -> None:
        queue = self.queue
        while queue and (queue[0].complete or queue[0].answer):
            request = queue[0]
            answer = request.answer or await self._handle(request)
            if self.transport is None:  # the client went away meanwhile
                break
            if not request.complete:  # answered before its body came: that body is not read
                request.keep_alive = False
            queue.popleft()
            self._send(answer, request.keep_alive)
            if not request.keep_alive:
                queue.clear()
                self.reading = False
                break
        self.answering = None
        if self.transport is None:
            return
        if not self.reading:
            if not queue:
                self.transport.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        self._arm(self.header_timeout if self.current is not None or self.in_head
                  else self.keepalive_timeout)

    async def _handle(self, request: _Request) -> tuple:
        try:
            return await self.handler(request.method, request.target, request.headers,
                                      b"".join(request.body))
        except Exception:  # a bug must not take the endpoint down with it
            log.exception("error answering %s %s", request.method,
                          request.target.split("?")[0])
            return ERROR

    def _send(self, answer: tuple, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, content_type, body, *extra = answer
        self.transport.write(b"".join((
            status_line(status), SERVER, b"content-type: ", content_type, b"\r\n", *extra,
            b"content-length: %d\r\n" % len(body),
            b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body)))
        if not keep_alive:
            self.transport.close()

    # Time-outs

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None or self.answering is not None:
            return
        if self.current is not None or self.in_head:  # a head or a body, stalled
            self._refuse(TIMED_OUT)
            self._kick()
        else:  # idle
            self.reading = False
            self.transport.close()
